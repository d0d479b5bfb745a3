"""GPU specifications: the hardware parameters every other part of gpusim reads.

A :class:`GPUSpec` is a frozen dataclass holding what the execution model needs to know about
a GPU: how many SMs it has, what one SM can hold (threads, warps, registers, shared memory,
block slots) and with which allocation rules, how fast it computes and moves bytes, how
many hardware work queues and resident grids it supports, and what a kernel launch costs the
host. Presets for real GPUs live in data files (see :mod:`gpu_models.presets`); hypothetical
GPUs are made by overriding fields::

    h100 = load_gpu("h100")
    big = h100.replace(sm_count=264)            # re-validated
    tiny = h100.with_overrides(["smem_per_sm_B=65536", "connections=32"])

Every spec is validated on construction: a bad value raises :class:`GpusimError` naming the
field and the limit it breaks. When an override breaks a field that follows it (a tiny
``smem_per_sm_B`` makes ``max_smem_per_block_B`` negative), the error names the override
the user gave, not the derived field. Units are SI inside: seconds, bytes, FLOP/s, Hz.

Fields that size the simulator's state have upper bounds (:data:`UPPER_BOUNDS`), far above
any GPU built so far but low enough that a typo cannot exhaust memory or run for hours:
the engine keeps per-SM arrays (time and memory grow with ``sm_count``: ``sm_count=1e7``
would need gigabytes per kernel), per-SM x per-block-slot placement arrays, one hardware
queue object per connection, and int64 resource counters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_models.errors import GpusimError

#: Precisions a cost model can ask a peak rate for.
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16")

#: Largest value of each field that sizes the simulator's state (see the module docstring),
#: with today's largest real value for scale: ``field: (bound, today)``.
UPPER_BOUNDS: Mapping[str, tuple[int, int]] = {
    "sm_count": (4096, 144),
    "max_threads_per_sm": (65_536, 2048),
    "max_warps_per_sm": (2048, 64),
    "max_blocks_per_sm": (1024, 32),
    "max_threads_per_block": (65_536, 1024),
    "warp_size": (1024, 32),
    "regs_per_sm": (1 << 24, 65_536),
    "regs_per_block": (1 << 24, 65_536),
    "max_regs_per_thread": (65_536, 255),
    "reg_alloc_unit": (65_536, 256),
    "sub_partitions": (64, 4),
    "smem_per_sm_B": (1 << 30, 233_472),
    "max_smem_per_block_B": (1 << 30, 232_448),
    "smem_alloc_unit_B": (1 << 30, 256),
    "smem_reserved_per_block_B": (1 << 30, 1024),
    "l2_B": (1 << 50, 126 << 20),
    "dram_B": (1 << 50, 192 << 30),
    "connections": (1024, 32),
    "max_connections": (1024, 32),
    "max_resident_grids": (1 << 20, 128),
    "stream_priority_levels": (1024, 6),
}
#: Most entries ``smem_carveouts_B`` may list (real GPUs have at most 9).
MAX_CARVEOUTS = 64


class SpecFieldError(GpusimError):
    """A GPUSpec field breaks a rule: ``field`` is the field, ``rule`` what it must be."""

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class _ReadOnlyDict(dict[str, str]):
    """A dict that refuses changes but still pickles and deep-copies (process pools need it;
    ``types.MappingProxyType`` does not pickle)."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("GPUSpec.sources is read-only; use GPUSpec.replace()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple[dict[str, str]]]:
        return (_ReadOnlyDict, (dict(self),))


@dataclass(frozen=True)
class GPUSpec:
    """One GPU, real or hypothetical. All sizes in bytes, rates per second, times in seconds."""

    name: str
    display_name: str
    compute_capability: tuple[int, int]
    sm_count: int
    clock_hz: float

    # What one SM can hold (the occupancy limits).
    max_threads_per_sm: int
    max_warps_per_sm: int
    max_blocks_per_sm: int
    max_threads_per_block: int
    warp_size: int
    regs_per_sm: int
    regs_per_block: int
    max_regs_per_thread: int
    #: Registers are allocated per warp in multiples of this many registers.
    reg_alloc_unit: int
    #: Each SM has this many sub-partitions (warp schedulers), each owning 1/n of the
    #: register file; a warp's registers come from one sub-partition.
    sub_partitions: int
    smem_per_sm_B: int
    #: Supported shared-memory carveouts (unified L1/shared split), ascending, in bytes.
    smem_carveouts_B: tuple[int, ...]
    #: Largest dynamic shared memory one block may opt into.
    max_smem_per_block_B: int
    smem_alloc_unit_B: int
    #: Shared memory the system reserves for every resident block (cc >= 8.0: 1 KiB).
    smem_reserved_per_block_B: int

    # Memory system and peak rates.
    l2_B: int
    dram_B: int
    dram_bw_Bps: float
    peak_fp32_flop_per_s: float
    #: Tensor-core dense peaks; 0 where the GPU has no tensor cores for that precision.
    peak_tf32_tensor_flop_per_s: float
    peak_fp16_tensor_flop_per_s: float
    peak_bf16_tensor_flop_per_s: float

    # Host, queues and streams.
    #: Hardware work queues used by default (CUDA_DEVICE_MAX_CONNECTIONS, default 8).
    connections: int = 8
    #: Largest value CUDA_DEVICE_MAX_CONNECTIONS accepts.
    max_connections: int = 32
    max_resident_grids: int = 128
    #: Number of distinct stream priority levels (cudaDeviceGetStreamPriorityRange).
    stream_priority_levels: int = 6
    #: Host time per kernel launch (framework + driver), used when a program gives none.
    launch_overhead_s: float = 5e-6
    #: Host time of one cross-stream dependency (cudaEventRecord + cudaStreamWaitEvent).
    event_overhead_s: float = 2e-6

    #: Where each value came from: field name -> source. Not part of equality.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)
    #: The built-in preset this spec was made from ("" for a spec built from scratch). It
    #: survives overrides, so measured data of the real GPU (calibration files, keyed by
    #: preset) stay reachable from a hypothetical variant of it. Not part of equality.
    preset: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Normalise containers given as lists (from TOML/JSON) so the spec stays hashable,
        # after checking their shapes (a string where a list belongs is a user error).
        for name in ("compute_capability", "smem_carveouts_B"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise GpusimError(f"GPUSpec {self.name!r}: {name} must be a list of integers "
                                  f"(got {value!r})")
        object.__setattr__(self, "compute_capability", tuple(self.compute_capability))
        object.__setattr__(self, "smem_carveouts_B", tuple(self.smem_carveouts_B))
        if not isinstance(self.sources, Mapping):
            raise GpusimError(f"GPUSpec {self.name!r}: sources must be a table of field -> "
                              f"source (got {self.sources!r})")
        # Read-only: presets are cached and shared, so nobody may edit one in place.
        object.__setattr__(self, "sources", _ReadOnlyDict(self.sources))
        _validate(self)

    # ------------------------------------------------------------------ derived values
    @property
    def cc(self) -> float:
        """Compute capability as a number, e.g. 9.0."""
        major, minor = self.compute_capability
        return major + minor / 10

    @property
    def arch(self) -> str:
        """Architecture tag used by lowering tables, e.g. ``sm90``."""
        major, minor = self.compute_capability
        return f"sm{major}{minor}"

    def peak_flop_per_s(self, precision: str, *, tensor_cores: bool = True) -> float:
        """Peak rate for ``precision``; falls back to CUDA cores where tensor cores lack it."""
        if precision not in PRECISIONS:
            raise GpusimError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        if precision == "fp32" or not tensor_cores:
            return self.peak_fp32_flop_per_s
        tensor = {
            "tf32": self.peak_tf32_tensor_flop_per_s,
            "fp16": self.peak_fp16_tensor_flop_per_s,
            "bf16": self.peak_bf16_tensor_flop_per_s,
        }[precision]
        return tensor if tensor > 0 else self.peak_fp32_flop_per_s

    def math_fallback(self, precision: str) -> str:
        """``""`` when ``precision`` math runs as asked on this GPU; otherwise what runs
        instead, in words (tf32/fp16/bf16 without tensor cores for it run on CUDA cores at
        the FP32 rate: see :meth:`peak_flop_per_s`)."""
        if precision == "fp32" or self.peak_flop_per_s(precision) != self.peak_fp32_flop_per_s:
            return ""
        tensor = {"tf32": self.peak_tf32_tensor_flop_per_s,
                  "fp16": self.peak_fp16_tensor_flop_per_s,
                  "bf16": self.peak_bf16_tensor_flop_per_s}[precision]
        if tensor > 0:
            return ""  # tensor cores exactly as fast as CUDA cores: nothing falls back
        return (f"{self.name} has no {precision} tensor cores: {precision} math runs on CUDA "
                "cores at the FP32 rate")

    # ------------------------------------------------------------------ overrides
    def replace(self, **changes: Any) -> GPUSpec:
        """A new, re-validated spec with ``changes`` applied.

        Fields that depend on a changed one follow it unless also given:

        * ``sm_count`` or ``clock_hz`` scale every peak FLOP/s figure (the peaks are whole-GPU
          totals: SMs x clock x FLOP per clock per SM), so "twice the SMs" computes twice as
          fast;
        * ``smem_per_sm_B`` clips the carveouts and the per-block opt-in limit to it;
        * ``max_threads_per_sm`` sets ``max_warps_per_sm`` to match, and the other way round;
        * ``regs_per_sm`` caps ``regs_per_block``.

        Changing ``compute_capability`` does not reload that architecture's per-SM limits:
        start from a preset of that architecture instead. Unknown field names raise
        :class:`GpusimError` listing the valid ones.
        """
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise GpusimError(
                f"unknown GPUSpec field(s) {', '.join(unknown)}; valid fields: "
                + ", ".join(field_names())
            )
        for key, value in changes.items():
            if key in _INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
                raise GpusimError(f"GPUSpec {self.name!r}: {key} must be an integer "
                                  f"(got {value!r})")
            if key in _FLOAT_FIELDS and (isinstance(value, bool)
                                         or not isinstance(value, (int, float))):
                raise GpusimError(f"GPUSpec {self.name!r}: {key} must be a number "
                                  f"(got {value!r})")
        given = dict(changes)
        changes = dict(changes)
        # Derived field -> the given field it follows (for errors that blame the latter).
        derived: dict[str, str] = {}

        def derive(name: str, value: Any, source: str) -> None:
            if name not in changes:
                changes[name] = value
                derived[name] = source

        scale = (changes.get("sm_count", self.sm_count) * changes.get("clock_hz", self.clock_hz)
                 / (self.sm_count * self.clock_hz))
        if scale != 1:
            source = "sm_count" if "sm_count" in given else "clock_hz"
            for peak in _PEAK_FIELDS:
                derive(peak, getattr(self, peak) * scale, source)
        if "smem_per_sm_B" in changes:
            smem = int(changes["smem_per_sm_B"])
            kept = [c for c in self.smem_carveouts_B if c < smem]
            derive("smem_carveouts_B", (*kept, smem), "smem_per_sm_B")
            reserved = changes.get("smem_reserved_per_block_B", self.smem_reserved_per_block_B)
            derive("max_smem_per_block_B", min(self.max_smem_per_block_B, smem - reserved),
                   "smem_per_sm_B")
        warp = changes.get("warp_size", self.warp_size)
        # (A warp size below 1 derives nothing: validation below names it.)
        if "max_threads_per_sm" in changes and "max_warps_per_sm" not in changes and warp > 0:
            derive("max_warps_per_sm", int(changes["max_threads_per_sm"]) // warp,
                   "max_threads_per_sm")
        elif "max_warps_per_sm" in changes and "max_threads_per_sm" not in changes:
            derive("max_threads_per_sm", int(changes["max_warps_per_sm"]) * warp,
                   "max_warps_per_sm")
            derive("max_threads_per_block",
                   min(self.max_threads_per_block, changes["max_threads_per_sm"]),
                   "max_warps_per_sm")
        if "regs_per_sm" in changes:
            derive("regs_per_block", min(self.regs_per_block, int(changes["regs_per_sm"])),
                   "regs_per_sm")
        if "name" not in changes:
            changes["name"] = self.name if not changes else f"{self.name}*"
        sources = dict(self.sources)
        for key in changes:
            if key != "name":
                sources[key] = "override" if key in given else "derived from an override"
        try:
            return dataclasses.replace(self, sources=sources, **changes)
        except SpecFieldError as exc:
            if exc.field not in derived:
                raise
            source = derived[exc.field]
            raise SpecFieldError(
                f"GPUSpec {changes['name']!r}: {source} = {given[source]!r} is invalid: "
                f"{exc.field} follows it and becomes {changes[exc.field]!r}, but "
                f"{exc.field} {exc.rule}", field=source, rule=exc.rule) from None

    def with_overrides(self, assignments: Iterable[str]) -> GPUSpec:
        """Apply ``FIELD=VALUE`` strings (the CLI's ``--set``), parsed by field type."""
        changes: dict[str, Any] = {}
        for text in assignments:
            key, sep, value = text.partition("=")
            key = key.strip()
            if not sep or not key:
                raise GpusimError(f"--set expects FIELD=VALUE, got {text!r}")
            changes[key] = parse_field_value(key, value.strip())
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict keyed by field name (JSON-friendly; ``sources`` left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in _META_FIELDS}
        out["compute_capability"] = list(self.compute_capability)
        out["smem_carveouts_B"] = list(self.smem_carveouts_B)
        return out


#: Bookkeeping fields, not hardware parameters: never set by users, never in to_dict().
_META_FIELDS = frozenset({"sources", "preset"})

#: Whole-GPU peak rates, which scale with SM count and clock.
_PEAK_FIELDS: tuple[str, ...] = (
    "peak_fp32_flop_per_s", "peak_tf32_tensor_flop_per_s", "peak_fp16_tensor_flop_per_s",
    "peak_bf16_tensor_flop_per_s",
)


def field_names() -> tuple[str, ...]:
    """Names of the GPUSpec fields a user may set (``sources`` and ``preset`` excluded)."""
    return tuple(f.name for f in dataclasses.fields(GPUSpec) if f.name not in _META_FIELDS)


_INT_FIELDS = frozenset(
    f.name for f in dataclasses.fields(GPUSpec) if f.type in ("int", int)
)
_FLOAT_FIELDS = frozenset(
    f.name for f in dataclasses.fields(GPUSpec) if f.type in ("float", float)
)


def parse_field_value(key: str, text: str) -> Any:
    """Parse the string ``text`` as a value of GPUSpec field ``key``."""
    if key not in field_names():
        raise GpusimError(
            f"unknown GPUSpec field {key!r}; valid fields: " + ", ".join(field_names())
        )
    try:
        if key in _INT_FIELDS:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if key in _FLOAT_FIELDS:
            return float(text)
        if key == "compute_capability":
            major, minor = text.split(".")
            return (int(major), int(minor))
        if key == "smem_carveouts_B":
            return tuple(int(v) for v in text.split(":"))
    except ValueError:
        raise GpusimError(f"bad value for {key}: {text!r}") from None
    return text


def _validate(spec: GPUSpec) -> None:
    def fail(field_name: str, message: str) -> None:
        value = getattr(spec, field_name)
        raise SpecFieldError(f"GPUSpec {spec.name!r}: {field_name} {message} (got {value!r})",
                             field=field_name, rule=message)

    if not spec.name:
        fail("name", "must not be empty")
    if len(spec.compute_capability) != 2 or spec.compute_capability[0] < 1:
        fail("compute_capability", "must be (major, minor) with major >= 1")
    for name in (f.name for f in dataclasses.fields(spec)):
        value = getattr(spec, name)
        if name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                fail(name, "must be an integer")
        elif name in _FLOAT_FIELDS and (isinstance(value, bool) or not isinstance(
                value, (int, float)) or not math.isfinite(value)):
            fail(name, "must be a finite number")
    positive = (
        "sm_count", "clock_hz", "max_threads_per_sm", "max_warps_per_sm", "max_blocks_per_sm",
        "max_threads_per_block", "warp_size", "regs_per_sm", "regs_per_block",
        "max_regs_per_thread", "reg_alloc_unit", "sub_partitions", "smem_per_sm_B",
        "max_smem_per_block_B", "smem_alloc_unit_B", "l2_B", "dram_B", "dram_bw_Bps",
        "peak_fp32_flop_per_s", "connections", "max_connections", "max_resident_grids",
        "stream_priority_levels",
    )
    for name in positive:
        if not getattr(spec, name) > 0:
            fail(name, "must be > 0")
    for name, (bound, today) in UPPER_BOUNDS.items():
        if getattr(spec, name) > bound:
            fail(name, f"must be <= {bound:,} (gpusim's bound, so that the simulator's state "
                 f"stays small; real GPUs have up to {today:,})")
    if len(spec.smem_carveouts_B) > MAX_CARVEOUTS:
        fail("smem_carveouts_B", f"may list at most {MAX_CARVEOUTS} sizes")
    for name in (
        "smem_reserved_per_block_B", "peak_tf32_tensor_flop_per_s",
        "peak_fp16_tensor_flop_per_s", "peak_bf16_tensor_flop_per_s", "launch_overhead_s",
        "event_overhead_s",
    ):
        if getattr(spec, name) < 0:
            fail(name, "must be >= 0")
    if spec.max_threads_per_sm > spec.max_warps_per_sm * spec.warp_size:
        fail("max_threads_per_sm", f"exceeds max_warps_per_sm x warp_size = "
             f"{spec.max_warps_per_sm * spec.warp_size}")
    if spec.max_threads_per_block > spec.max_threads_per_sm:
        fail("max_threads_per_block", f"exceeds max_threads_per_sm = {spec.max_threads_per_sm}")
    if spec.max_threads_per_block % spec.warp_size:
        fail("max_threads_per_block", f"must be a multiple of warp_size = {spec.warp_size}")
    if spec.regs_per_block > spec.regs_per_sm:
        fail("regs_per_block", f"exceeds regs_per_sm = {spec.regs_per_sm}")
    if spec.regs_per_sm % spec.sub_partitions:
        fail("regs_per_sm", f"must divide evenly into {spec.sub_partitions} sub-partitions")
    if spec.max_regs_per_thread * spec.warp_size > spec.regs_per_sm // spec.sub_partitions:
        fail("max_regs_per_thread", "lets one warp exceed a sub-partition's register file")
    carveouts = spec.smem_carveouts_B
    if not carveouts or list(carveouts) != sorted(set(carveouts)) or carveouts[0] < 0:
        fail("smem_carveouts_B", "must be a non-empty ascending list of distinct sizes >= 0")
    if carveouts[-1] != spec.smem_per_sm_B:
        fail("smem_carveouts_B", f"must end at smem_per_sm_B = {spec.smem_per_sm_B}")
    if spec.max_smem_per_block_B + spec.smem_reserved_per_block_B > spec.smem_per_sm_B:
        fail("max_smem_per_block_B", f"plus the per-block reservation exceeds smem_per_sm_B = "
             f"{spec.smem_per_sm_B}")
    if spec.connections > spec.max_connections:
        fail("connections", f"exceeds max_connections = {spec.max_connections}")
