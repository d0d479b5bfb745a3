"""GPU presets and user spec files.

Presets are data, not code: ``data/arch.toml`` holds the per-SM limits of each compute
capability (one source of truth for every GPU of that architecture) and ``data/gpus/*.toml``
one file per GPU with its datasheet or measured figures, each with its source. A user spec
file (TOML or JSON) either lists every field or starts from a preset::

    base = "h100"          # optional: start from this preset
    sm_count = 264         # then override fields

:func:`load_gpu` takes a preset name or a path and returns a validated :class:`GPUSpec`;
:func:`resolve_gpu` also takes a spec as it is and applies ``--set`` style overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec, SpecFieldError, field_names

#: The GPU every command uses unless told otherwise.
DEFAULT_GPU = "h100"

_DEFAULT_SOURCES = {
    "connections": "CUDA default CUDA_DEVICE_MAX_CONNECTIONS = 8 (CUDA Programming Guide)",
    "max_connections": "CUDA_DEVICE_MAX_CONNECTIONS upper limit 32 (CUDA docs)",
    "max_resident_grids": "CUDA Programming Guide: max resident grids per device = 128",
}


def _data_dir() -> Any:
    return resources.files("gpu_models") / "data"


def _arch_table() -> dict[str, dict[str, Any]]:
    # Read afresh each time (it is small): a cached dict would be shared and mutable.
    return tomllib.loads((_data_dir() / "arch.toml").read_text(encoding="utf-8"))


def list_presets() -> tuple[str, ...]:
    """Names of the built-in GPU presets, sorted."""
    names = [p.name.removesuffix(".toml") for p in (_data_dir() / "gpus").iterdir()
             if p.name.endswith(".toml")]
    return tuple(sorted(names))


@functools.cache
def load_preset(name: str) -> GPUSpec:
    """The built-in preset ``name`` (e.g. ``"h100"``)."""
    path = _data_dir() / "gpus" / f"{name}.toml"
    if not path.is_file():
        raise GpusimError(f"unknown GPU {name!r}; presets: {', '.join(list_presets())} "
                          "(or give a path to a .toml/.json spec file)")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return spec_from_mapping(data, origin=f"preset {name}", preset=name)


def load_gpu(name_or_path: str | Path) -> GPUSpec:
    """A preset by name, or a spec file (``.toml`` / ``.json``) by path."""
    text = str(name_or_path)
    if text in list_presets():
        return load_preset(text)
    path = Path(text)
    if path.suffix.lower() in (".toml", ".json") or path.exists():
        return load_spec_file(path)
    return load_preset(text)  # raises the "unknown GPU" error listing presets


def resolve_gpu(gpu: str | Path | GPUSpec, overrides: Sequence[str] = ()) -> GPUSpec:
    """The GPU a run uses: a spec as given, else a preset name or spec-file path loaded;
    then ``overrides`` (``FIELD=VALUE`` texts, as ``--set`` takes them) applied."""
    spec = gpu if isinstance(gpu, GPUSpec) else load_gpu(gpu)
    return spec.with_overrides(overrides) if overrides else spec


def load_spec_file(path: str | Path) -> GPUSpec:
    """Read a user spec file; it may start from a preset with ``base = "NAME"``."""
    path = Path(path)
    data = read_data_file(path, "GPU spec file",
                          fmt="json" if path.suffix.lower() == ".json" else "toml")
    if not isinstance(data, dict):
        raise GpusimError(f"GPU spec file {str(path)!r} must hold a table/object of fields")
    return spec_from_mapping(data, origin=f"GPU spec file {str(path)!r}")


def spec_from_mapping(data: dict[str, Any], *, origin: str = "spec",
                      preset: str = "") -> GPUSpec:
    """Build a spec from a mapping: ``base`` preset + fields, or arch defaults + fields.

    Keys: any GPUSpec field, ``base`` (a preset to start from), and ``source`` (a table of
    field -> where the value came from). Every error starts with ``origin`` (the file), and
    a rule broken by a field the mapping did not set says where that field's value came
    from.
    """
    try:
        return _spec_from_mapping(data, origin, preset)
    except GpusimError as exc:
        message = str(exc)
        if isinstance(exc, SpecFieldError) and exc.field not in data \
                and exc.field in field_names():
            message += (f" ({exc.field} is not set in {origin}: it comes from "
                        f"{'the base preset' if 'base' in data else 'the architecture defaults'}"
                        "; set it too)")
        if message.startswith(f"{origin}:"):
            raise
        raise GpusimError(f"{origin}: {message}") from None


def _spec_from_mapping(data: dict[str, Any], origin: str, preset: str) -> GPUSpec:
    data = dict(data)
    sources = data.pop("source", {}) or {}
    if not isinstance(sources, dict):
        raise GpusimError(f"{origin}: 'source' must be a table of field -> source")
    base = data.pop("base", None)
    unknown = sorted(set(data) - set(field_names()))
    if unknown:
        raise GpusimError(f"{origin}: unknown GPUSpec field(s) {', '.join(unknown)}; "
                          f"valid fields: {', '.join(field_names())}")
    if base is not None:
        if not isinstance(base, str):
            raise GpusimError(f"{origin}: base must be a preset name (got {base!r})")
        spec = load_preset(base)
        if "name" not in data:
            data["name"] = f"{spec.name}*" if data else spec.name
        return spec.replace(**data)
    cc = data.get("compute_capability")
    if cc is None:
        raise GpusimError(f"{origin}: give 'base' (a preset) or 'compute_capability'")
    if not isinstance(cc, (list, tuple)) or len(cc) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in cc):
        raise GpusimError(f"{origin}: compute_capability must be [major, minor] "
                          f"(got {cc!r})")
    arch_key = f"{int(cc[0])}.{int(cc[1])}"
    arch = dict(_arch_table().get(arch_key, {}))
    arch_source = arch.pop("source", None)
    merged: dict[str, Any] = {**arch, **data}
    merged.setdefault("display_name", merged.get("name", ""))
    all_sources = {k: str(arch_source) for k in arch if arch_source}
    all_sources.update({k: v for k, v in _DEFAULT_SOURCES.items() if k not in data})
    all_sources.update({k: str(v) for k, v in sources.items()})
    missing = [f for f in field_names() if f not in merged and not _has_default(f)]
    if missing:
        hint = "" if arch else f" (no per-SM defaults for compute capability {arch_key})"
        raise GpusimError(f"{origin}: missing GPUSpec field(s) {', '.join(missing)}{hint}")
    try:
        return GPUSpec(**merged, sources=all_sources, preset=preset)
    except TypeError as exc:  # wrong value shapes that dataclass construction rejects
        raise GpusimError(f"{origin}: {exc}") from None


def _has_default(name: str) -> bool:
    fields = {f.name: f for f in dataclasses.fields(GPUSpec)}
    f = fields[name]
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
