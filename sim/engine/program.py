"""Programs: the kernel-level input of the engine.

A :class:`Program` is what a host thread would issue to one GPU: a list of streams and a
list of kernel launches in host (program) order. Each :class:`Launch` says which stream it
goes to, its launch configuration (grid, threads, registers, shared memory), how long one of
its blocks runs when nothing slows it (``block_time_s``), what share of its SM's throughput
one block uses meanwhile (``sm_throughput``, per execution resource; none: a block that only
waits), how many bytes the whole kernel moves to and from DRAM, and which other kernels it
must wait for (``after``: a cross-stream event, or a no-op within one stream since a stream
is FIFO anyway).

Programs are validated on construction: every error names the stream or kernel at fault
(unknown stream, unknown or duplicate kernel, an ``after`` that names a kernel launched
later, a block that can never fit an SM, an SM id the GPU does not have, a grid beyond
CUDA's limits, a DRAM demand that is not finite). As in CUDA, a kernel can only wait for a
kernel launched before it: ``cudaStreamWaitEvent`` on an event not yet recorded is a no-op,
so a program whose ``after`` names a later kernel is rejected rather than silently run
without that dependency. Duplicate names in ``after`` are dropped (first occurrence kept).
Errors on a program loaded from JSON name the JSON key and show the value as written
(``block_time_us``, ``smem``, ``launch_overhead_us``), and those of a program file start
with the file's name. A program holds at most :data:`MAX_PROGRAM_KERNELS` kernels.

A stream may be confined to a subset of the SMs (``sms``: an SM partition, as CUDA green
contexts give; in JSON a list of ids or a range text such as ``"0-65"`` or ``"0-3,8"``).
The JSON form, with times in microseconds, is the ``gpusim run`` input::

    {"gpu": "h100",
     "streams": [{"name": "a", "priority": 0}, {"name": "b", "sms": "0-65"}],
     "kernels": [{"name": "k0", "stream": "a", "grid": 2112, "threads": 256, "regs": 32,
                  "smem": 0, "block_time_us": 10.0, "dram_bytes": 0, "after": [],
                  "sm_throughput": 0.125},
                 {"name": "k1", "stream": "b", "grid": 528, "threads": 256, "regs": 32,
                  "work": {"flop": 2e9, "dram_bytes": 1e8, "math": "fp32"}}]}

A kernel gives either ``block_time_us`` (and optionally ``dram_bytes`` and
``sm_throughput``: a number in [0, 1], the share of the SM's FP32/SIMT throughput, or a
mapping ``{"simt": x, "tensor": y}``; absent means 0, pure latency, as a sleep kernel) or
``work`` (the whole kernel's FLOPs, DRAM bytes and math precision: ``fp32`` on the CUDA
cores, ``tf32``/``fp16``/``bf16`` on tensor cores), which the cost model prices into block
time, demands and bytes (:func:`load_program`'s ``cost_model``; a ``kind`` naming a
:class:`~gpu_models.kernel.KernelKind` picks its efficiencies, any other kind is priced as
``micro``: the program states its own work).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_models.cost import DEFAULT_COST_MODEL, resolve_cost_model
from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from gpu_models.kernel import (
    CostModel,
    KernelCost,
    KernelKind,
    KernelSpec,
    check_sm_throughput,
)
from gpu_models.occupancy import launch_failure
from gpu_models.presets import list_presets, load_gpu, spec_from_mapping
from gpu_models.spec import PRECISIONS, GPUSpec
from gpu_models.units import US_PER_S

#: CUDA's grid limits: ``gridDim.x`` up to 2^31 - 1, ``gridDim.y`` and ``gridDim.z`` up to 65535.
MAX_GRID_DIMS: tuple[int, int, int] = (2**31 - 1, 65_535, 65_535)
#: Most blocks one kernel may have here (a guard: more would take the engine forever).
MAX_GRID_BLOCKS = 2**31
#: SM ids must be below this (a sanity bound checked before a range text is expanded).
MAX_SM_IDS = 1 << 16
#: Most kernel launches one program may hold. The engine keeps a few kilobytes per kernel
#: (its per-SM block counts among them) and simulates about 10,000 kernels a second: 500,000
#: kernels are a couple of gigabytes and over a minute; more would exhaust a laptop.
MAX_PROGRAM_KERNELS = 500_000


@dataclass(frozen=True)
class StreamDef:
    """A CUDA stream. Lower ``priority`` numbers are served first, as in CUDA.

    ``sms``: the SM ids the stream's kernels may use (an SM partition, as a CUDA green
    context or an MPS client's SM share gives), or ``None`` for every SM. Kept as a sorted
    tuple of distinct ids; :class:`Program` checks them against the GPU's SM count.
    """

    name: str
    priority: int = 0
    sms: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GpusimError(f"stream name must be a non-empty string (got {self.name!r})")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise GpusimError(f"stream {self.name!r}: priority must be an integer "
                              f"(got {self.priority!r})")
        if self.sms is not None:
            who = f"stream {self.name!r}"
            sms = self.sms
            if isinstance(sms, str):
                sms = parse_sm_ids(sms, who)
            if isinstance(sms, (str, bytes)) or not isinstance(sms, (list, tuple, range)):
                raise GpusimError(f"{who}: sms must be a list of SM ids, a range text such as "
                                  f"'0-65', or None for every SM (got {self.sms!r})")
            if not all(_is_int(i) and 0 <= i < MAX_SM_IDS for i in sms):
                raise GpusimError(f"{who}: sms must hold SM ids >= 0 and < {MAX_SM_IDS} "
                                  f"(got {list(sms)!r})")
            ids = sorted(int(i) for i in sms)
            if not ids:
                raise GpusimError(f"{who}: sms is empty; a stream needs at least one SM "
                                  f"(None means every SM)")
            duplicates = sorted({a for a, b in itertools.pairwise(ids) if a == b})
            if duplicates:
                raise GpusimError(f"{who}: sms names SM(s) {duplicates} more than once")
            object.__setattr__(self, "sms", tuple(ids))


def parse_sm_ids(text: str, who: str = "sms") -> tuple[int, ...]:
    """SM ids from a range text: ``"0-65"``, ``"0-3,8,10-11"`` (ranges inclusive)."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise GpusimError(f"{who}: sms {text!r} is not a list of SM ids or ranges such "
                              f"as '0-65' or '0-3,8'") from None
        if lo < 0 or hi < lo:
            raise GpusimError(f"{who}: sms range {part!r} must be 'first-last' with "
                              f"0 <= first <= last")
        if hi >= MAX_SM_IDS:
            raise GpusimError(f"{who}: sms range {part!r} names SM {hi}; SM ids must be "
                              f"below {MAX_SM_IDS} (and below the GPU's SM count)")
        ids.extend(range(lo, hi + 1))
    return tuple(ids)


@dataclass(frozen=True)
class Launch:
    """One kernel launch. Times in seconds, sizes in bytes."""

    name: str
    stream: str
    #: Blocks in the grid: a count or an (x[, y[, z]]) shape.
    grid: int | tuple[int, ...]
    threads: int
    regs_per_thread: int
    smem_per_block_B: int
    #: Duration of one block when nothing slows it.
    block_time_s: float
    #: Total DRAM traffic of the kernel, spread evenly over its blocks and their duration.
    dram_bytes: float = 0.0
    #: Kernels whose completion this one waits for.
    after: tuple[str, ...] = ()
    kind: str = ""
    layer: str = ""
    #: Share of its SM's throughput one block uses when it runs unimpeded, per execution
    #: resource (:data:`gpu_models.kernel.SM_RESOURCES`); none: the block only waits.
    sm_throughput: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: Bytes one block keeps in flight to DRAM beyond its warps' streaming rate (§6.7).
    bytes_in_flight_B: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GpusimError(f"kernel name must be a non-empty string (got {self.name!r})")
        who = f"kernel {self.name!r}"
        if not isinstance(self.stream, str) or not self.stream:
            raise GpusimError(f"{who}: stream must be a stream name (got {self.stream!r})")
        grid = self.grid
        if isinstance(grid, (list, tuple)):
            grid = tuple(grid)
            if not 1 <= len(grid) <= 3 or not all(_is_int(g) and g >= 1 for g in grid):
                raise GpusimError(f"{who}: grid must be a positive integer or 1-3 positive "
                                  f"integers [x, y, z] (got {list(grid)!r})")
            for axis, size, limit in zip("xyz", grid, MAX_GRID_DIMS, strict=False):
                if size > limit:
                    raise GpusimError(f"{who}: grid {axis} is {size}; CUDA allows at most "
                                      f"{limit} (x <= 2^31-1, y and z <= 65535)")
            object.__setattr__(self, "grid", tuple(int(g) for g in grid))
        elif not _is_int(grid) or grid < 1:
            raise GpusimError(f"{who}: grid must be a positive integer (got {grid!r})")
        elif grid > MAX_GRID_DIMS[0]:
            raise GpusimError(f"{who}: grid is {grid} blocks; CUDA allows at most "
                              f"{MAX_GRID_DIMS[0]} (2^31-1) in x")
        else:
            object.__setattr__(self, "grid", int(grid))
        if self.blocks > MAX_GRID_BLOCKS:
            raise GpusimError(f"{who}: grid has {self.blocks} blocks; at most "
                              f"{MAX_GRID_BLOCKS} (2^31) blocks per kernel are supported")
        # Plain ints and floats inside (numpy scalars from lowering code are accepted).
        for field_name, low in (("threads", 1), ("regs_per_thread", 0), ("smem_per_block_B", 0)):
            value = getattr(self, field_name)
            if not _is_int(value) or value < low:
                raise GpusimError(f"{who}: {field_name} must be an integer >= {low} "
                                  f"(got {value!r})")
            object.__setattr__(self, field_name, int(value))
        if not _is_number(self.block_time_s) or not 0 < self.block_time_s < math.inf:
            raise GpusimError(f"{who}: block_time_s must be a finite number > 0 "
                              f"(got {self.block_time_s!r})")
        if not _is_number(self.dram_bytes) or not 0 <= self.dram_bytes < math.inf:
            raise GpusimError(f"{who}: dram_bytes must be a finite number >= 0 "
                              f"(got {self.dram_bytes!r})")
        object.__setattr__(self, "block_time_s", float(self.block_time_s))
        object.__setattr__(self, "dram_bytes", float(self.dram_bytes))
        try:
            demand = self.dram_demand_Bps
        except (OverflowError, ZeroDivisionError):
            demand = math.inf
        if not math.isfinite(demand):
            raise GpusimError(f"{who}: DRAM demand per block (dram_bytes / blocks / block "
                              f"time) is not finite: the block time "
                              f"{self.block_time_s!r} s is too small for dram_bytes "
                              f"{self.dram_bytes!r}")
        object.__setattr__(self, "sm_throughput",
                           check_sm_throughput(self.sm_throughput, f"{who}: sm_throughput"))
        if (not _is_number(self.bytes_in_flight_B)
                or not 0 <= self.bytes_in_flight_B < math.inf):
            raise GpusimError(f"{who}: bytes_in_flight_B must be a finite number >= 0 "
                              f"(got {self.bytes_in_flight_B!r})")
        object.__setattr__(self, "bytes_in_flight_B", float(self.bytes_in_flight_B))
        after = tuple(self.after) if isinstance(self.after, (list, tuple)) else self.after
        if not isinstance(after, tuple) or not all(isinstance(a, str) for a in after):
            raise GpusimError(f"{who}: after must be a list of kernel names (got {self.after!r})")
        if self.name in after:
            raise GpusimError(f"{who}: after names the kernel itself")
        # Waiting twice on one event is the same as waiting once: drop repeats.
        object.__setattr__(self, "after", tuple(dict.fromkeys(after)))

    @property
    def blocks(self) -> int:
        """Number of thread blocks in the grid."""
        return math.prod(self.grid) if isinstance(self.grid, tuple) else self.grid

    @property
    def dram_demand_Bps(self) -> float:
        """DRAM bandwidth one running block asks for when nothing slows it."""
        return self.dram_bytes / self.blocks / self.block_time_s

    @classmethod
    def from_kernel(cls, kernel: KernelSpec, cost: KernelCost, *, stream: str,
                    name: str | None = None, after: Sequence[str] = (),
                    grid: int | tuple[int, ...] | None = None,
                    block_time_s: float | None = None) -> Launch:
        """The launch of a lowered kernel priced by a cost model: the one conversion from
        :class:`~gpu_models.kernel.KernelSpec` + :class:`~gpu_models.kernel.KernelCost`.

        ``grid`` and ``block_time_s`` replace the kernel's own (a capped grid of longer
        blocks: :func:`sim.scheduling.base.capped_launch`, whose blocks use their SMs at
        the same rate); ``name`` defaults to the kernel's. What a block uses
        (``sm_throughput``, ``bytes_in_flight_B``) is the cost model's.
        """
        return cls(
            name=kernel.name if name is None else name, stream=stream,
            grid=kernel.grid if grid is None else grid, threads=kernel.threads,
            regs_per_thread=kernel.regs_per_thread, smem_per_block_B=kernel.smem_per_block_B,
            block_time_s=cost.block_time_s if block_time_s is None else block_time_s,
            dram_bytes=cost.dram_bytes, after=tuple(after), kind=kernel.kind.value,
            layer=kernel.layer, sm_throughput=cost.sm_throughput,
            bytes_in_flight_B=cost.bytes_in_flight_B,
        )


@dataclass(frozen=True)
class Program:
    """Streams and kernel launches (in host order) for one GPU, validated on construction.

    ``launch_overhead_s`` / ``event_overhead_s`` of ``None`` take the GPU spec's values.
    """

    gpu: GPUSpec
    streams: tuple[StreamDef, ...]
    kernels: tuple[Launch, ...]
    launch_overhead_s: float | None = None
    event_overhead_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.gpu, GPUSpec):
            raise GpusimError(f"program gpu must be a GPUSpec (got {type(self.gpu).__name__})")
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        if len(self.kernels) > MAX_PROGRAM_KERNELS:
            raise GpusimError(f"program has {len(self.kernels):,} kernels; at most "
                              f"{MAX_PROGRAM_KERNELS:,} are supported")
        for field_name in ("launch_overhead_s", "event_overhead_s"):
            value = getattr(self, field_name)
            if value is not None and (not _is_number(value) or not 0 <= value < math.inf):
                raise GpusimError(f"program {field_name} must be a finite number >= 0 "
                                  f"(got {value!r})")
        _validate(self)

    @property
    def launch_overhead(self) -> float:
        """Host seconds per kernel launch (the program's, else the GPU spec's)."""
        if self.launch_overhead_s is None:
            return self.gpu.launch_overhead_s
        return self.launch_overhead_s

    @property
    def event_overhead(self) -> float:
        """Host seconds per cross-stream wait (the program's, else the GPU spec's)."""
        if self.event_overhead_s is None:
            return self.gpu.event_overhead_s
        return self.event_overhead_s

    def timing_key(self) -> tuple[Any, ...]:
        """Everything the simulated timing depends on, names replaced by positions: two
        programs with equal keys have bit-identical timelines kernel for kernel (the
        engine reads a name only to find a stream or a kernel; kind and layer are labels).
        Searching policies use it to simulate a candidate seen before only once."""
        stream_at = {s.name: i for i, s in enumerate(self.streams)}
        kernel_at = {k.name: i for i, k in enumerate(self.kernels)}
        return (
            self.gpu, self.launch_overhead, self.event_overhead,
            tuple((s.priority, s.sms) for s in self.streams),
            tuple((stream_at[k.stream], k.grid, k.threads, k.regs_per_thread,
                   k.smem_per_block_B, k.block_time_s, k.dram_bytes,
                   tuple(kernel_at[a] for a in k.after), tuple(sorted(k.sm_throughput.items())),
                   k.bytes_in_flight_B) for k in self.kernels),
        )

    def stream(self, name: str) -> StreamDef:
        """The stream called ``name``."""
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise GpusimError(f"unknown stream {name!r}")

    def kernel(self, name: str) -> Launch:
        """The launch called ``name``."""
        for launch in self.kernels:
            if launch.name == name:
                return launch
        raise GpusimError(f"unknown kernel {name!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None,
                  cost_model: str | CostModel = DEFAULT_COST_MODEL,
                  origin: str | GPUSpec | None = None) -> Program:
        """Build a program from its JSON form (times in us). ``base_dir`` resolves a
        relative GPU spec path (``load_program`` passes the program file's folder);
        ``cost_model`` (a name or a model; ``origin`` for ``scaled``) prices the kernels
        given as ``work``."""
        return _from_dict(data, base_dir, cost_model, origin)


def load_program(path: str | Path, *, cost_model: str | CostModel = DEFAULT_COST_MODEL,
                 origin: str | GPUSpec | None = None) -> Program:
    """Read a JSON program file; ``cost_model`` prices the kernels given as ``work``
    (errors start with the file's name)."""
    path = Path(path)
    data = read_data_file(path, "program file")
    try:
        return Program.from_dict(data, base_dir=path.parent, cost_model=cost_model,
                                 origin=origin)
    except GpusimError as exc:
        raise GpusimError(f"program file {str(path)!r}: {exc}") from None


# ---------------------------------------------------------------------- validation
def _validate(program: Program) -> None:
    streams: dict[str, StreamDef] = {}
    for stream in program.streams:
        if not isinstance(stream, StreamDef):
            raise GpusimError(f"program streams must be StreamDef (got {stream!r})")
        if stream.name in streams:
            raise GpusimError(f"duplicate stream {stream.name!r}")
        if stream.sms is not None and stream.sms[-1] >= program.gpu.sm_count:
            raise GpusimError(f"stream {stream.name!r}: sms names SM {stream.sms[-1]} but "
                              f"{program.gpu.name} has {program.gpu.sm_count} SMs "
                              f"(ids 0-{program.gpu.sm_count - 1})")
        streams[stream.name] = stream
    names: set[str] = {k.name for k in program.kernels if isinstance(k, Launch)}
    launched: set[str] = set()
    for launch in program.kernels:
        if not isinstance(launch, Launch):
            raise GpusimError(f"program kernels must be Launch (got {launch!r})")
        if launch.name in launched:
            raise GpusimError(f"duplicate kernel name {launch.name!r}")
        for dep in launch.after:
            if dep not in names:
                raise GpusimError(f"kernel {launch.name!r}: after names unknown kernel {dep!r}")
            if dep not in launched:
                raise GpusimError(
                    f"kernel {launch.name!r}: after names kernel {dep!r}, which is launched "
                    f"later; a kernel can only wait for one launched before it (in CUDA a "
                    f"wait on an event not yet recorded is a no-op): launch {dep!r} before "
                    f"{launch.name!r}")
        launched.add(launch.name)
        if launch.stream not in streams:
            raise GpusimError(f"kernel {launch.name!r}: unknown stream {launch.stream!r}; "
                              f"streams: {', '.join(streams) or '(none)'}")
        why = launch_failure(program.gpu, launch.threads, launch.regs_per_thread,
                             launch.smem_per_block_B)
        if why is not None:
            raise GpusimError(f"kernel {launch.name!r} can never fit an SM of "
                              f"{program.gpu.name}: {why}")
    # With every wait on an earlier kernel no cycle can form; kept as a cheap safeguard.
    _check_acyclic(program)


def _check_acyclic(program: Program) -> None:
    """Reject cycles among ``after`` edges and the stream FIFO order (which a wait on a
    later kernel of the same stream would close)."""
    deps: dict[str, list[str]] = {k.name: list(k.after) for k in program.kernels}
    last_in_stream: dict[str, str] = {}
    for launch in program.kernels:
        if launch.stream in last_in_stream:
            deps[launch.name].append(last_in_stream[launch.stream])
        last_in_stream[launch.stream] = launch.name
    # Iterative DFS with colours; the grey path is the cycle when a back edge appears.
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path = [root]
        stack = [iter(deps[root])]
        colour[root] = grey
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                colour[path.pop()] = black
                stack.pop()
            elif colour[dep] == grey:
                cycle = [*path[path.index(dep):], dep]
                raise GpusimError("cyclic dependency between kernels (after / stream order): "
                                  + " -> waits for -> ".join(repr(n) for n in cycle))
            elif colour[dep] == white:
                colour[dep] = grey
                path.append(dep)
                stack.append(iter(deps[dep]))


# ---------------------------------------------------------------------- JSON form
_TOP_KEYS = {"gpu", "launch_overhead_us", "event_overhead_us", "streams", "kernels"}
_STREAM_KEYS = {"name", "priority", "sms"}
_KERNEL_KEYS = {"name", "stream", "grid", "threads", "regs", "smem", "block_time_us",
                "dram_bytes", "after", "kind", "layer", "sm_throughput", "work"}
_KERNEL_REQUIRED = ("name", "stream", "grid", "threads", "regs")
_WORK_KEYS = {"flop", "dram_bytes", "math"}


def _from_dict(data: Mapping[str, Any], base_dir: Path | None, cost_model: str | CostModel,
               origin: str | GPUSpec | None) -> Program:
    if not isinstance(data, Mapping):
        raise GpusimError("a program must be a JSON object with 'gpu', 'streams' and 'kernels'")
    _no_unknown_keys(data, _TOP_KEYS, "program")
    for key in ("gpu", "streams", "kernels"):
        if key not in data:
            raise GpusimError(f"program: missing key {key!r}")
    gpu = _gpu_from(data["gpu"], base_dir)
    if not isinstance(data["streams"], list):
        raise GpusimError("program: 'streams' must be a list of {name, priority, sms} objects")
    if not isinstance(data["kernels"], list):
        raise GpusimError("program: 'kernels' must be a list of kernel objects")
    if len(data["kernels"]) > MAX_PROGRAM_KERNELS:
        raise GpusimError(f"program: 'kernels' lists {len(data['kernels']):,} kernels; at most "
                          f"{MAX_PROGRAM_KERNELS:,} are supported")
    streams = tuple(_stream_from(i, s) for i, s in enumerate(data["streams"]))
    model: CostModel | None = None
    if any(isinstance(k, Mapping) and "work" in k for k in data["kernels"]):
        model = resolve_cost_model(cost_model, gpu, origin=origin)
    kernels = tuple(_kernel_from(i, k, gpu, model) for i, k in enumerate(data["kernels"]))
    return Program(
        gpu=gpu,
        streams=streams,
        kernels=kernels,
        launch_overhead_s=_us_or_none(data, "launch_overhead_us", "program"),
        event_overhead_s=_us_or_none(data, "event_overhead_us", "program"),
    )


def _gpu_from(value: Any, base_dir: Path | None) -> GPUSpec:
    if isinstance(value, str):
        if value not in list_presets() and base_dir is not None:
            local = base_dir / value
            if local.exists():
                return load_gpu(local)
        return load_gpu(value)
    if isinstance(value, Mapping):
        return spec_from_mapping(dict(value), origin="program gpu")
    raise GpusimError(f"program: 'gpu' must be a preset name, a spec file path or an object "
                      f"{{'base': ..., FIELD: VALUE}} (got {value!r})")


def _stream_from(index: int, value: Any) -> StreamDef:
    if not isinstance(value, Mapping):
        raise GpusimError(f"program: streams[{index}] must be an object (got {value!r})")
    who = f"stream {value.get('name', index)!r}"
    _no_unknown_keys(value, _STREAM_KEYS, who)
    if "name" not in value:
        raise GpusimError(f"program: streams[{index}] has no 'name'")
    return StreamDef(name=value["name"], priority=value.get("priority", 0),
                     sms=value.get("sms"))


def _kernel_from(index: int, value: Any, gpu: GPUSpec, model: CostModel | None) -> Launch:
    if not isinstance(value, Mapping):
        raise GpusimError(f"program: kernels[{index}] must be an object (got {value!r})")
    who = f"kernel {value.get('name', f'#{index}')!r}"
    _no_unknown_keys(value, _KERNEL_KEYS, who)
    missing = [k for k in _KERNEL_REQUIRED if k not in value]
    if "work" in value:
        given = [k for k in ("block_time_us", "dram_bytes", "sm_throughput") if k in value]
        if given:
            raise GpusimError(f"{who}: give either work (priced by the cost model) or "
                              f"block_time_us with dram_bytes and sm_throughput, not both "
                              f"(also has {', '.join(given)})")
    elif "block_time_us" not in value:
        missing.append("block_time_us (or work)")
    if missing:
        raise GpusimError(f"{who}: missing key(s) {', '.join(missing)}")
    after = value.get("after", [])
    if not isinstance(after, list):
        raise GpusimError(f"{who}: after must be a list of kernel names (got {after!r})")
    if "work" in value:
        assert model is not None
        return _priced_kernel(value, who, gpu, model, tuple(after))
    block_time = value["block_time_us"]
    if not _is_number(block_time):
        raise GpusimError(f"{who}: block_time_us must be a number (got {block_time!r})")
    if not 0 < block_time < math.inf or not block_time / US_PER_S > 0:
        raise GpusimError(f"{who}: block_time_us must be a finite number > 0 "
                          f"(got {block_time!r})")
    smem = value.get("smem", 0)
    if not _is_int(smem) or smem < 0:
        raise GpusimError(f"{who}: smem must be an integer >= 0 (got {smem!r})")
    dram = value.get("dram_bytes", 0.0)
    grid = value["grid"]
    try:
        blocks = math.prod(grid) if isinstance(grid, list) else grid
        demand = dram / blocks / (block_time / US_PER_S) if dram else 0.0
    except (TypeError, ZeroDivisionError, OverflowError):
        demand = 0.0  # a bad grid or dram_bytes: Launch names it
    if isinstance(demand, float) and not math.isfinite(demand):
        raise GpusimError(f"{who}: DRAM demand per block (dram_bytes / blocks / "
                          f"block_time_us) is not finite: block_time_us {block_time!r} is too "
                          f"small for dram_bytes {dram!r}")
    return Launch(
        name=value["name"],
        stream=value["stream"],
        grid=value["grid"],
        threads=value["threads"],
        regs_per_thread=value["regs"],
        smem_per_block_B=smem,
        block_time_s=block_time / US_PER_S,
        dram_bytes=value.get("dram_bytes", 0.0),
        after=tuple(after),
        kind=_text(value, "kind", who),
        layer=_text(value, "layer", who),
        sm_throughput=_sm_throughput(value, who),
    )


def _sm_throughput(value: Mapping[str, Any], who: str) -> Mapping[str, float]:
    """``sm_throughput`` as written: a number (the SIMT share) or a resource mapping."""
    shares = value.get("sm_throughput", {})
    if _is_number(shares):
        if not 0 <= shares <= 1:
            raise GpusimError(f"{who}: sm_throughput must be a number in [0, 1] or a mapping "
                              f"resource -> share (got {shares!r})")
        return {"simt": float(shares)}
    if not isinstance(shares, Mapping):
        raise GpusimError(f"{who}: sm_throughput must be a number in [0, 1] or a mapping "
                          f"resource -> share such as {{\"simt\": 0.5}} (got {shares!r})")
    return check_sm_throughput(shares, f"{who}: sm_throughput")


def _priced_kernel(value: Mapping[str, Any], who: str, gpu: GPUSpec, model: CostModel,
                   after: tuple[str, ...]) -> Launch:
    """A kernel given as ``work``, priced by ``model`` on ``gpu``."""
    work = value["work"]
    if not isinstance(work, Mapping):
        raise GpusimError(f"{who}: work must be an object {{\"flop\": F, \"dram_bytes\": B, "
                          f"\"math\": \"fp32\"}} (got {work!r})")
    _no_unknown_keys(work, _WORK_KEYS, f"{who}: work")
    if "flop" not in work:
        raise GpusimError(f"{who}: work needs 'flop' (the whole kernel's FLOPs)")
    for key in ("flop", "dram_bytes"):
        number = work.get(key, 0.0)
        if not _is_number(number) or not 0 <= number < math.inf:
            raise GpusimError(f"{who}: work.{key} must be a finite number >= 0 "
                              f"(got {number!r})")
    math_name = work.get("math", "fp32")
    if math_name not in PRECISIONS:
        raise GpusimError(f"{who}: work.math must be one of {', '.join(PRECISIONS)} "
                          f"(got {math_name!r})")
    tensor = math_name != "fp32"
    if tensor and getattr(gpu, f"peak_{math_name}_tensor_flop_per_s") <= 0:
        raise GpusimError(f"{who}: work.math {math_name!r} runs on tensor cores, which "
                          f"{gpu.name} lacks for {math_name} "
                          f"(peak_{math_name}_tensor_flop_per_s = 0)")
    kind = _text(value, "kind", who)
    smem = value.get("smem", 0)
    grid = value["grid"]
    for key, number, low in (("threads", value["threads"], 1), ("regs", value["regs"], 0),
                             ("smem", smem, 0)):
        if not _is_int(number) or number < low:
            raise GpusimError(f"{who}: {key} must be an integer >= {low} (got {number!r})")
    shape = grid if isinstance(grid, list) else [grid]
    if not 1 <= len(shape) <= 3 or not all(_is_int(g) and g >= 1 for g in shape):
        raise GpusimError(f"{who}: grid must be a positive integer or 1-3 positive integers "
                          f"[x, y, z] (got {grid!r})")
    x, y, z = (*(int(g) for g in shape), 1, 1)[:3]
    why = launch_failure(gpu, value["threads"], value["regs"], smem)
    if why is not None:
        raise GpusimError(f"kernel {value['name']!r} can never fit an SM of {gpu.name}: {why}")
    spec = KernelSpec(
        name=str(value["name"]),
        kind=KernelKind(kind) if kind in {k.value for k in KernelKind} else KernelKind.MICRO,
        grid=(x, y, z), threads=value["threads"],
        regs_per_thread=value["regs"], smem_per_block_B=smem, flops=float(work["flop"]),
        dram_bytes=float(work.get("dram_bytes", 0.0)), dtype=math_name, tensor_cores=tensor,
        layer=_text(value, "layer", who))
    try:
        cost = model(spec, gpu)
    except GpusimError as exc:
        raise GpusimError(f"{who}: work cannot be priced: {exc}") from None
    launch = Launch.from_kernel(spec, cost, stream=value["stream"], after=after,
                                grid=grid if isinstance(grid, int) else tuple(grid))
    # Keep the program's own label (priced as micro when it names no KernelKind).
    return dataclasses.replace(launch, kind=kind)


def _no_unknown_keys(value: Mapping[str, Any], allowed: set[str], who: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise GpusimError(f"{who}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(sorted(allowed))}")


def _us_or_none(data: Mapping[str, Any], key: str, who: str) -> float | None:
    if key not in data:
        return None
    value = data[key]
    if not _is_number(value) or not 0 <= value < math.inf:
        raise GpusimError(f"{who}: {key} must be a finite number >= 0 (got {value!r})")
    return value / US_PER_S


def _text(value: Mapping[str, Any], key: str, who: str) -> str:
    text = value.get(key, "")
    if not isinstance(text, str):
        raise GpusimError(f"{who}: {key} must be a string (got {text!r})")
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and not math.isnan(value))
