"""The result files of the device campaign's block-level parts: names, layout and a check.

One experiment run on one GPU gives one JSON file, committed as
``sim/measure/data/micro/<gpu>/<experiment>.json`` where ``<gpu>`` is the preset name of
the measured GPU (:func:`sim.measure.micro.provenance.gpu_key`). Every file holds::

    {"format": "gpusim-micro/1", "experiment": "waves", "gpu_key": "h100",
     "provenance": {...},   # GPU, driver, CUDA/CuPy versions, date, script, arguments, props
     "parameters": {...},   # what the experiment was asked to do, and kernel builds
     "truncated": false,    # true when the time budget cut the case list short
     "cases": [...]}

*Timeline* experiments (contention, waves, concurrency, queues, bandwidth) share one case
layout: the streams and launches as run (with the registers and shared memory the kernels
really had, and each kernel's work per block by construction: FLOPs, ILP, bytes), the
mechanism the case tests, scalars of every repeat, the block-level summary of the repeat
with the median makespan (``detail``, see :mod:`sim.measure.micro.blocklog`) and, for cases
of several kernels, how their blocks shared SMs in that repeat (``co_residency``). A kernel
of a pair names the cases where it ran alone (``reference``, ``unimpeded``): the replay's
inputs. :func:`check_result` checks a document against this layout and raises
:class:`GpusimError` naming the first bad field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from gpu_models.errors import GpusimError
from gpu_models.units import NS_PER_S
from sim.measure.micro.blocklog import describe, representative, run_scalars
from sim.measure.micro.plans import KERNEL_KINDS, MECHANISMS

FORMAT = "gpusim-micro/2"
#: Every block-level experiment of the device campaign, in run order: most valuable first,
#: so a run cut short still leaves the data that matter most.
EXPERIMENTS: tuple[str, ...] = (
    "contention", "waves", "concurrency", "queues", "bandwidth", "occupancy",
    "launch_overhead",
)
#: Experiments whose cases are timelines of kernels (replayable in the engine).
TIMELINE_EXPERIMENTS: tuple[str, ...] = ("contention", "waves", "concurrency", "queues",
                                         "bandwidth")

PROVENANCE_KEYS: tuple[str, ...] = (
    "gpu_name", "driver_version", "cuda_driver_api_version", "cuda_runtime_version",
    "cupy_version", "nvrtc_version", "date_utc", "script", "argv", "env", "device_properties",
)
_SUMMARY_KEYS: tuple[str, ...] = (
    "blocks", "first_start_s", "last_start_s", "first_end_s", "last_end_s", "block_time_s",
    "sms_used", "blocks_per_sm", "max_resident_per_sm", "max_resident", "wave_starts_s",
    "wave_sizes",
)
_KERNEL_KEYS: tuple[str, ...] = (
    "name", "stream", "kernel", "function", "grid", "threads", "variant", "regs",
    "smem_static_B", "smem_dynamic_B", "spin_ns", "elems_per_block", "ilp", "iters",
    "flop_per_block", "dram_bytes_per_block", "dram_bytes", "reference", "unimpeded",
)
_CASE_KEYS: tuple[str, ...] = (
    "name", "mechanism", "streams", "kernels", "gate_ns", "connections", "host_launch_s",
    "runs", "representative_run", "detail", "co_residency",
)


def default_data_dir() -> Path:
    """Where committed measurements live: ``sim/measure/data/micro``."""
    return Path(str(resources.files("sim.measure") / "data" / "micro"))


def result_path(root: Path, gpu: str, experiment: str) -> Path:
    """``root/<gpu>/<experiment>.json``."""
    if experiment not in EXPERIMENTS:
        raise GpusimError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    return root / gpu / f"{experiment}.json"


def timeline_case(*, name: str, note: str, gate: Mapping[str, Any] | None,
                  connections: int | None, streams: list[dict[str, Any]],
                  kernels: list[dict[str, Any]], host_launch_s: Mapping[str, Any],
                  host_enqueue_s: Sequence[float], runs: Sequence[Mapping[str, Any]],
                  mechanism: str = "", co_residency: Mapping[str, Any] | None = None,
                  ) -> dict[str, Any]:
    """One timeline case as committed: ``runs`` are full run summaries
    (:func:`sim.measure.micro.blocklog.summarize_run`); all but the median one are cut down
    to their scalars. ``gate`` is the gate kernel's record (``None`` without a gate);
    ``co_residency`` is :func:`sim.measure.micro.blocklog.co_residency` of the median run."""
    rep = representative(runs)
    gate_ns = int(gate["spin_ns"]) if gate else 0
    return {
        "name": name,
        "note": note,
        "mechanism": mechanism,
        "gate_ns": gate_ns,
        "gate": dict(gate) if gate else None,
        # The gate held when the host enqueued everything before it could have ended.
        "gate_held": all(e < gate_ns / NS_PER_S for e in host_enqueue_s) if gate else None,
        "connections": connections,
        "streams": streams,
        "kernels": kernels,
        "host_launch_s": dict(host_launch_s),
        "host_enqueue_s": describe(host_enqueue_s),
        "runs": [run_scalars(r) for r in runs],
        "representative_run": rep,
        "detail": runs[rep],
        "co_residency": dict(co_residency) if co_residency is not None else None,
    }


def _need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise GpusimError(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise GpusimError(f"{where}.{key}: expected {_kind_name(kind)}, got {value!r:.80}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


_NUM = (int, float)


def _check_summary(summary: Any, where: str) -> None:
    for key in _SUMMARY_KEYS:
        _need(summary, key, where, (int, float, dict, list))
    for key in ("first_start_s", "last_start_s", "first_end_s", "last_end_s"):
        _need(summary, key, where, _NUM)
    if summary["last_end_s"] < summary["first_start_s"]:
        raise GpusimError(f"{where}: last_end_s before first_start_s")
    for key in ("median", "min", "max"):
        _need(summary["block_time_s"], key, f"{where}.block_time_s", _NUM)
    pairs = _need(summary, "blocks_per_sm", where, list)
    if sum(int(c) for _, c in pairs) != summary["blocks"]:
        raise GpusimError(f"{where}.blocks_per_sm: counts do not add up to blocks")


def _check_timeline_case(case: Any, where: str) -> None:
    for key in _CASE_KEYS:
        if not isinstance(case, Mapping) or key not in case:
            raise GpusimError(f"{where}: missing {key!r}")
    _need(case, "name", where, str)
    streams = _need(case, "streams", where, list)
    names = set()
    for i, s in enumerate(streams):
        names.add(_need(s, "name", f"{where}.streams[{i}]", str))
        _need(s, "cuda_priority", f"{where}.streams[{i}]", int)
    kernels = _need(case, "kernels", where, list)
    if not kernels:
        raise GpusimError(f"{where}.kernels: empty")
    for i, k in enumerate(kernels):
        kw = f"{where}.kernels[{i}]"
        for key in _KERNEL_KEYS:
            _need(k, key, kw, (str, int, float))
        if k["stream"] not in names:
            raise GpusimError(f"{kw}: unknown stream {k['stream']!r}")
        if k["kernel"] not in KERNEL_KINDS:
            raise GpusimError(f"{kw}.kernel: unknown kernel {k['kernel']!r}")
    mechanism = _need(case, "mechanism", where, str)
    if mechanism and mechanism not in MECHANISMS:
        raise GpusimError(f"{where}.mechanism: unknown {mechanism!r}")
    runs = _need(case, "runs", where, list)
    if not runs:
        raise GpusimError(f"{where}.runs: empty")
    for i, run in enumerate(runs):
        _need(run, "makespan_s", f"{where}.runs[{i}]", _NUM)
    rep = _need(case, "representative_run", where, int)
    if not 0 <= rep < len(runs):
        raise GpusimError(f"{where}.representative_run: {rep} out of range")
    detail = _need(case, "detail", where, dict)
    _need(detail, "makespan_s", f"{where}.detail", _NUM)
    summaries = _need(detail, "kernels", f"{where}.detail", dict)
    for k in kernels:
        if k["name"] not in summaries:
            raise GpusimError(f"{where}.detail.kernels: no summary for {k['name']!r}")
    for name, summary in summaries.items():
        _check_summary(summary, f"{where}.detail.kernels.{name}")


def check_result(doc: Any, where: str = "result") -> None:
    """Raise :class:`GpusimError` unless ``doc`` has the layout of a campaign result."""
    if _need(doc, "format", where, str) != FORMAT:
        raise GpusimError(f"{where}.format: expected {FORMAT!r}, got {doc['format']!r}")
    experiment = _need(doc, "experiment", where, str)
    if experiment not in EXPERIMENTS:
        raise GpusimError(f"{where}.experiment: unknown {experiment!r}")
    _need(doc, "gpu_key", where, str)
    prov = _need(doc, "provenance", where, dict)
    for key in PROVENANCE_KEYS:
        if key not in prov:
            raise GpusimError(f"{where}.provenance: missing {key!r}")
    _need(doc, "parameters", where, dict)
    _need(doc, "truncated", where, bool)
    cases = _need(doc, "cases", where, list)
    for i, case in enumerate(cases):
        cw = f"{where}.cases[{i}]"
        if experiment in TIMELINE_EXPERIMENTS:
            _check_timeline_case(case, cw)
        else:
            _need(case, "name", cw, str)
