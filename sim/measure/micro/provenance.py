"""Provenance of measured data: which GPU, driver, software, date, script and arguments.

docs/model.md §9 asks every committed measurement to say where it came from. The pure
functions here shape that record (and name the GPU's data folder); :func:`collect` reads
the live values through CuPy and ``nvidia-smi`` and is the only part that needs a GPU.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

#: Device properties worth keeping (cudaDeviceProp names); the rest is noise or identifying.
DEVICE_PROPERTY_KEYS: tuple[str, ...] = (
    "name", "major", "minor", "multiProcessorCount", "clockRate", "memoryClockRate",
    "memoryBusWidth", "totalGlobalMem", "l2CacheSize", "persistingL2CacheMaxSize",
    "sharedMemPerBlock", "sharedMemPerBlockOptin", "sharedMemPerMultiprocessor",
    "reservedSharedMemPerBlock", "regsPerBlock", "regsPerMultiprocessor", "warpSize",
    "maxThreadsPerBlock", "maxThreadsPerMultiProcessor", "maxBlocksPerMultiProcessor",
    "concurrentKernels", "asyncEngineCount", "ECCEnabled", "pciBusID",
)
#: Properties CUDA 13 dropped from cudaDeviceProp, read as device attributes instead
#: (cudaDeviceAttr values from driver_types.h, a stable ABI): clock rates in kHz, bus in bits.
DEVICE_ATTRIBUTES: dict[str, int] = {"clockRate": 13, "concurrentKernels": 31,
                                     "memoryClockRate": 36, "memoryBusWidth": 37}
#: Environment variables that change what is measured.
ENV_KEYS: tuple[str, ...] = ("CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_VISIBLE_DEVICES",
                             "CUDA_LAUNCH_BLOCKING", "CUPY_CACHE_DIR")

# Marketing name fragments -> preset names (gpu_models/data/gpus), most specific first.
_PRESET_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100"),
    (r"h200", "h200"),
    (r"a100", "a100"),
    (r"v100", "v100"),
    (r"titan\s*xp", "titan-xp"),
)


def gpu_key(gpu_name: str) -> str:
    """Data-folder name of a GPU: its preset name where one matches, else a slug.

    ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``, ``"NVIDIA H100 PCIe"`` -> ``"h100-pcie"``,
    an unknown ``"NVIDIA L4"`` -> ``"nvidia-l4"``.
    """
    lowered = gpu_name.lower()
    for pattern, key in _PRESET_PATTERNS:
        if re.search(pattern, lowered):
            return key
    slug = re.sub(r"[^a-z0-9]+", "-", lowered).strip("-")
    return slug or "unknown-gpu"


def _plain(value: Any) -> Any:
    """JSON-friendly copy of a property value (bytes -> str, numpy scalars -> Python)."""
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        return value.item()
    return value


def with_attributes(props: Mapping[str, Any], runtime: Any, device: int = 0) -> dict[str, Any]:
    """``props`` completed with :data:`DEVICE_ATTRIBUTES` it lacks, read through
    ``runtime.deviceGetAttribute`` (CuPy's runtime module); a value that cannot be read
    stays absent."""
    out = dict(props)
    for name, attribute in DEVICE_ATTRIBUTES.items():
        if name not in out:
            try:
                out[name] = int(runtime.deviceGetAttribute(attribute, device))
            except Exception:  # an older or stand-in runtime without the call
                continue
    return out


def device_properties(props: Mapping[str, Any]) -> dict[str, Any]:
    """The kept subset of a ``cudaGetDeviceProperties`` mapping, JSON-friendly."""
    return {k: _plain(props[k]) for k in DEVICE_PROPERTY_KEYS if k in props}


def build(*, gpu_name: str, driver_version: str, cuda_driver_api_version: int,
          cuda_runtime_version: int, cupy_version: str, nvrtc_version: Sequence[int],
          props: Mapping[str, Any], argv: Sequence[str], script: str,
          env: Mapping[str, str], date_utc: str,
          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of one result file."""
    record: dict[str, Any] = {
        "gpu_name": gpu_name,
        "driver_version": driver_version,
        "cuda_driver_api_version": int(cuda_driver_api_version),
        "cuda_runtime_version": int(cuda_runtime_version),
        "cupy_version": cupy_version,
        "nvrtc_version": ".".join(str(v) for v in nvrtc_version) or "unknown",
        "date_utc": date_utc,
        "script": script,
        "argv": list(argv),
        "env": {k: env[k] for k in ENV_KEYS if k in env},
        "device_properties": device_properties(props),
        "python": sys.version.split()[0],
    }
    if extra:
        record.update(extra)
    return record


def now_utc() -> str:
    """Current time, ISO 8601 in UTC, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def nvidia_smi(fields: Sequence[str]) -> dict[str, str]:
    """Values of ``nvidia-smi --query-gpu`` fields for GPU 0 ({} where it cannot run)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader", "-i", "0"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.strip().splitlines()[0].split(",")] if out.strip() else []
    return dict(zip(fields, values, strict=True)) if len(values) == len(fields) else {}


def _nvrtc_version() -> tuple[int, ...]:
    """NVRTC's (major, minor) through CuPy; () where this CuPy build does not expose it."""
    try:
        from cupy.cuda import nvrtc
    except ImportError:
        return ()
    get_version = getattr(nvrtc, "getVersion", None)
    return tuple(get_version()) if get_version else ()


def collect(argv: Sequence[str], script: str) -> dict[str, Any]:
    """Provenance of the current process's GPU 0, read through CuPy (needs a GPU)."""
    import cupy

    runtime = cupy.cuda.runtime
    props = with_attributes(runtime.getDeviceProperties(0), runtime)
    smi = nvidia_smi(["driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem",
                      "power.limit", "temperature.gpu", "compute_mode"])
    return build(
        gpu_name=_plain(props["name"]),
        driver_version=smi.get("driver_version", ""),
        cuda_driver_api_version=runtime.driverGetVersion(),
        cuda_runtime_version=runtime.runtimeGetVersion(),
        cupy_version=cupy.__version__,
        nvrtc_version=_nvrtc_version(),
        props=props,
        argv=argv,
        script=script,
        env=os.environ,
        date_utc=now_utc(),
        extra={"nvidia_smi_at_start": {k: v for k, v in smi.items() if k != "driver_version"}},
    )
