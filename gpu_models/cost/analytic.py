"""The latency-aware analytic cost model (``analytic``, the default): per block, the slowest
of its math, its K loop and its memory traffic, with parameters fitted per architecture.

A block of a kernel is held back by whichever of three things takes longest
(docs/model.md §4.5):

* **compute**: its FLOPs at its share of the peak of the units its math runs on (tensor
  cores or CUDA cores, :func:`~gpu_models.cost.waves.sm_resource`), times the fraction of
  that peak its kind reaches (``compute_efficiency``, per kind and unit; for a kernel of a
  family with its own, :attr:`~gpu_models.kernel.KernelSpec.family`, the family's
  ``family_efficiency`` instead) and a *tile-shape
  efficiency* ``1 / (1 + tile_overhead x (1/bm + 1/bn))`` for a tiled GEMM main loop (a
  ``bm x bn`` tile loads ``bm + bn`` operand values from shared memory per ``bm x bn``
  MACs, so small tiles spend more of their time feeding the math);
* **K loop**: ``mainloop_iterations x iteration_latency_s``: each iteration of a tiled main
  loop waits for its stage's loads and synchronises the block, so a block with a long K
  loop and little math per iteration (a small tile, a skinny GEMM) is latency-bound;
* **memory**: its share of the kernel's DRAM bytes over its share of the bandwidth the
  kernel's resident blocks can draw: the single-kernel curve of :mod:`gpu_models.memory`
  (Little's law with a loaded latency, fitted to the microbenchmarks) at the bytes those
  blocks keep in flight (their warps', or what their tiles load ahead,
  :func:`~gpu_models.cost.roofline.block_bytes_in_flight_B`), times the fraction of it the
  kind reaches (``memory_efficiency``).

A kernel never takes less than ``kernel_floor_s`` (launch, grid set-up and tear-down: the
shortest real kernels take 2 us). The engine runs a lone kernel wave after wave of
``block_time_s`` each, so the floor is spread over its waves: ``block_time_s = max(compute,
loop, memory, kernel_floor_s / waves)``.

What the block uses, consistent with its own time (so that a lone kernel in the engine takes
exactly what the model says; tested): ``sm_throughput`` is its FLOPs over its block time
over its SM's peak (:func:`~gpu_models.cost.waves.block_sm_demand`); ``dram_bytes`` are
*bandwidth-equivalent* bytes (:meth:`gpu_models.memory.MemorySystem.equivalent_bytes` of
the bytes over the kind's memory efficiency), so a kernel streaming at its kind's full
rate asks the whole bandwidth; ``bytes_in_flight_B`` is what its demand needs at its
occupancy (:func:`~gpu_models.cost.waves.implied_bytes_in_flight_B`): the memory time is
already in the block time, and the engine must not slow the kernel alone a second time.

Parameters (:class:`AnalyticParams`) are per architecture (compute capability), in
``gpu_models/data/analytic.toml``, written by ``gpusim calibrate fit --model analytic``
from the committed DeepBench timings and trace digests (``sim.measure.analytic_fit``) with
each entry's source and fit residual. An architecture without measurements takes the entry
of the nearest measured one of its generation (:meth:`ParameterTable.entry_key`: a V100 the
Turing entry), or, with none (Hopper), the ``default`` entry, fitted to every measured GPU
together.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gpu_models.cost.roofline import block_bytes_in_flight_B
from gpu_models.cost.waves import (
    block_share_flop_per_s,
    block_sm_demand,
    implied_bytes_in_flight_B,
    sm_resource,
    wave_size,
    waves,
)
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelCost, KernelKind, KernelSpec
from gpu_models.memory import MemorySystem, curve_Bps
from gpu_models.occupancy import block_footprint
from gpu_models.spec import GPUSpec

DATA_FILE = "analytic.toml"
#: The entry an architecture without measurements, nor any of its generation, takes.
DEFAULT_ENTRY = "default"
#: The SM execution resources a kind's compute efficiency is kept for.
RESOURCES: tuple[str, ...] = ("simt", "tensor")
#: Kernel families (:attr:`KernelSpec.family`) with a compute efficiency of their own, which
#: replaces their kind's: ``wgrad_engine``, cuDNN 7's non-GEMM weight-gradient kernels
#: (wgrad_alg0_engine / wgrad_alg1_engine, CUDA cores), far slower per FLOP than the tiled
#: GEMM kernels of the same kind.
FAMILIES: tuple[str, ...] = ("wgrad_engine",)


def compute_key(kind: KernelKind | str, resource: str) -> str:
    """Key of a compute efficiency in :attr:`AnalyticParams.compute_efficiency`."""
    return f"{KernelKind(kind).value}.{resource}"


@dataclass(frozen=True)
class AnalyticParams:
    """The analytic model's parameters for one architecture (module docstring)."""

    #: ``"<kind>.<simt|tensor>"`` -> fraction of the peak the kind's math reaches.
    compute_efficiency: Mapping[str, float] = field(hash=False)
    #: kind -> fraction of the streaming bandwidth the kind's traffic reaches.
    memory_efficiency: Mapping[str, float] = field(hash=False)
    #: Latency of one main-loop iteration of a tiled kernel.
    iteration_latency_s: float
    #: Shortest time of any kernel.
    kernel_floor_s: float
    #: ``a`` of the tile-shape efficiency ``1 / (1 + a (1/bm + 1/bn))``, in elements.
    tile_overhead: float
    #: Where the values come from (a fit, with its data and command, or another entry's).
    source: str = ""
    #: family (:data:`FAMILIES`) -> fraction of the peak its math reaches, in place of its
    #: kind's compute efficiency; a family without a value is priced by its kind's.
    family_efficiency: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        compute = {compute_key(*k.split(".", 1)) if "." in k else k: float(v)
                   for k, v in self.compute_efficiency.items()}
        memory = {KernelKind(k).value: float(v) for k, v in self.memory_efficiency.items()}
        wanted_c = {compute_key(k, r) for k in KernelKind for r in RESOURCES}
        for what, table, wanted in (("compute_efficiency", compute, wanted_c),
                                    ("memory_efficiency", memory,
                                     {k.value for k in KernelKind})):
            missing = sorted(wanted - set(table))
            extra = sorted(set(table) - wanted)
            if missing or extra:
                raise GpusimError(f"analytic parameters: {what} "
                                  + (f"lacks {', '.join(missing)}" if missing else "")
                                  + (f"; unknown {', '.join(extra)}" if extra else ""))
            for key, value in table.items():
                if not 0 < value <= 1:
                    raise GpusimError(f"analytic parameters: {what}[{key}] must be in (0, 1] "
                                      f"(got {value!r})")
        family = {str(k): float(v) for k, v in self.family_efficiency.items()}
        unknown = sorted(set(family) - set(FAMILIES))
        if unknown:
            raise GpusimError(f"analytic parameters: family_efficiency: unknown "
                              f"{', '.join(unknown)} (families: {', '.join(FAMILIES)})")
        for key, value in family.items():
            if not 0 < value <= 1:
                raise GpusimError(f"analytic parameters: family_efficiency[{key}] must be in "
                                  f"(0, 1] (got {value!r})")
        object.__setattr__(self, "family_efficiency", MappingProxyType(family))
        object.__setattr__(self, "compute_efficiency", MappingProxyType(compute))
        object.__setattr__(self, "memory_efficiency", MappingProxyType(memory))
        for name in ("iteration_latency_s", "kernel_floor_s", "tile_overhead"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise GpusimError(f"analytic parameters: {name} must be a finite number >= 0 "
                                  f"(got {value!r})")
        if self.kernel_floor_s <= 0:
            raise GpusimError(f"analytic parameters: kernel_floor_s must be > 0 "
                              f"(got {self.kernel_floor_s!r})")

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], source: str = "") -> AnalyticParams:
        """Parameters from one entry of the data file."""
        try:
            return cls(compute_efficiency=dict(entry["compute_efficiency"]),
                       memory_efficiency=dict(entry["memory_efficiency"]),
                       iteration_latency_s=float(entry["iteration_latency_s"]),
                       kernel_floor_s=float(entry["kernel_floor_s"]),
                       tile_overhead=float(entry["tile_overhead"]),
                       source=source or str(entry.get("source", "")),
                       family_efficiency=dict(entry.get("family_efficiency", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise GpusimError(f"analytic parameters: bad entry ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """The data file's form of the entry (without its source)."""
        return {"iteration_latency_s": self.iteration_latency_s,
                "kernel_floor_s": self.kernel_floor_s, "tile_overhead": self.tile_overhead,
                "compute_efficiency": dict(self.compute_efficiency),
                "memory_efficiency": dict(self.memory_efficiency),
                **({"family_efficiency": dict(self.family_efficiency)}
                   if self.family_efficiency else {})}

    def compute_efficiency_of(self, kind: KernelKind | str, resource: str,
                              family: str = "") -> float:
        """The compute efficiency a kernel is priced with: its family's, else its kind's on
        its unit."""
        if family and family in self.family_efficiency:
            return self.family_efficiency[family]
        return self.compute_efficiency[compute_key(kind, resource)]


@dataclass(frozen=True)
class KernelTerms:
    """What the model's time of a kernel is made of, before its parameters: the time terms
    of one block at 100% efficiency (the fit evaluates the model from these)."""

    #: One block's FLOPs at its share of the peak.
    compute_s: float
    #: ``1/bm + 1/bn`` of a tiled main loop, else 0.
    tile_factor: float
    #: Main-loop iterations per block.
    iterations: int
    #: One block's bytes at its share of the bandwidth its kernel's resident blocks draw.
    memory_s: float
    #: Waves of the kernel alone.
    waves: int
    kind: KernelKind
    resource: str
    #: The kernel's family (:attr:`KernelSpec.family`), "" for none.
    family: str = ""


def kernel_terms(kernel: KernelSpec, spec: GPUSpec,
                 memory: MemorySystem | None = None) -> KernelTerms:
    """The parameter-free terms of ``kernel`` on ``spec`` (module docstring)."""
    memory = MemorySystem.for_gpu(spec) if memory is None else memory
    blocks = kernel.blocks
    compute_s = (kernel.flops / blocks / block_share_flop_per_s(kernel, spec)
                 if kernel.flops > 0 else 0.0)
    tile_factor = (1 / kernel.tile_mn[0] + 1 / kernel.tile_mn[1]
                   if kernel.tile_mn is not None else 0.0)
    memory_s = 0.0
    if kernel.dram_bytes > 0:
        resident = min(blocks, wave_size(kernel, spec))
        fp = block_footprint(spec, kernel.threads, kernel.regs_per_thread,
                             kernel.smem_per_block_B)
        in_flight = memory.block_in_flight_B(fp.warps, block_bytes_in_flight_B(kernel))
        rate = min(curve_Bps(memory.unloaded_Bps(resident * in_flight), memory.plateau_Bps,
                             memory.params.knee), memory.full_rate_Bps)
        memory_s = kernel.dram_bytes / blocks / (rate / resident)
    return KernelTerms(compute_s=compute_s, tile_factor=tile_factor,
                       iterations=kernel.mainloop_iterations, memory_s=memory_s,
                       waves=waves(kernel, spec), kind=kernel.kind,
                       resource=sm_resource(kernel, spec), family=kernel.family)


def block_time_s(terms: KernelTerms, params: AnalyticParams) -> float:
    """One block's time: ``max(compute, loop, memory, floor / waves)`` (module docstring)."""
    compute = (terms.compute_s * (1 + params.tile_overhead * terms.tile_factor)
               / params.compute_efficiency_of(terms.kind, terms.resource, terms.family))
    loop = terms.iterations * params.iteration_latency_s
    memory = terms.memory_s / params.memory_efficiency[terms.kind.value]
    return max(compute, loop, memory, params.kernel_floor_s / terms.waves)


@dataclass(frozen=True)
class ParameterTable:
    """Every entry of a parameter file: per compute capability, and the default."""

    entries: Mapping[str, AnalyticParams] = field(hash=False)
    #: The file's provenance table (command, data, date, residuals).
    provenance: Mapping[str, Any] = field(default_factory=dict, hash=False)
    path: str = ""

    def __post_init__(self) -> None:
        if DEFAULT_ENTRY not in self.entries:
            raise GpusimError(f"analytic parameters {self.path or ''}: no "
                              f"{DEFAULT_ENTRY!r} entry".replace("  ", " "))

    def entry_key(self, compute_capability: str) -> str:
        """The entry a compute capability (``"major.minor"``) is priced with: its own; else
        the nearest measured one of the same generation (major version; the lower minor on
        a tie), whose SM design and library kernels it shares (a V100, 7.0, takes the
        Turing entry, 7.5); else the default."""
        if compute_capability in self.entries:
            return compute_capability
        major, _, minor = compute_capability.partition(".")
        same = [k for k in self.entries
                if k != DEFAULT_ENTRY and k.partition(".")[0] == major]
        if not same:
            return DEFAULT_ENTRY
        return min(same, key=lambda k: (abs(int(k.partition(".")[2]) - int(minor)), k))

    def for_gpu(self, spec: GPUSpec) -> AnalyticParams:
        """The entry ``spec`` is priced with (:meth:`entry_key`)."""
        cc = f"{spec.compute_capability[0]}.{spec.compute_capability[1]}"
        return self.entries[self.entry_key(cc)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "") -> ParameterTable:
        """A table from the data file's parsed form."""
        where = f"analytic parameters {path}".strip()
        if not isinstance(data.get(DEFAULT_ENTRY), Mapping):
            raise GpusimError(f"{where}: no [{DEFAULT_ENTRY}] table")
        entries = {DEFAULT_ENTRY: AnalyticParams.from_dict(data[DEFAULT_ENTRY])}
        arch = data.get("arch", {})
        if not isinstance(arch, Mapping):
            raise GpusimError(f"{where}: [arch] must be a table of compute capabilities")
        for cc, entry in arch.items():
            entries[str(cc)] = AnalyticParams.from_dict(entry)
        return cls(entries=entries, provenance=dict(data.get("provenance", {})), path=path)


@functools.cache
def default_table() -> ParameterTable:
    """The committed parameters (``gpu_models/data/analytic.toml``)."""
    text = (resources.files("gpu_models") / "data" / DATA_FILE).read_text(encoding="utf-8")
    return ParameterTable.from_dict(tomllib.loads(text), path=f"gpu_models/data/{DATA_FILE}")


def load_table(path: str | Path) -> ParameterTable:
    """A parameter file (as ``gpusim calibrate fit --model analytic`` writes it)."""
    from gpu_models.datafile import read_data_file

    data = read_data_file(path, "analytic parameter file")
    if not isinstance(data, Mapping):
        raise GpusimError(f"analytic parameter file {path}: expected a table")
    return ParameterTable.from_dict(data, path=str(path))


@dataclass(frozen=True)
class AnalyticModel:
    """The latency-aware analytic cost model over a :class:`ParameterTable`."""

    table: ParameterTable = field(default_factory=default_table)

    def params_for(self, spec: GPUSpec) -> AnalyticParams:
        """The parameters ``spec`` is priced with."""
        return self.table.for_gpu(spec)

    def __call__(self, kernel: KernelSpec, spec: GPUSpec) -> KernelCost:
        params = self.params_for(spec)
        memory = MemorySystem.for_gpu(spec)
        time_s = block_time_s(kernel_terms(kernel, spec, memory), params)
        dram_bytes = memory.equivalent_bytes(
            kernel.dram_bytes / params.memory_efficiency[kernel.kind.value])
        return KernelCost(
            block_time_s=time_s, dram_bytes=dram_bytes,
            sm_throughput=block_sm_demand(kernel, spec, time_s),
            bytes_in_flight_B=(implied_bytes_in_flight_B(kernel, spec, time_s, dram_bytes)
                               if dram_bytes > 0 else 0.0))


def analytic_model(*, params: str | Path | ParameterTable | None = None) -> AnalyticModel:
    """An :class:`AnalyticModel`: the committed parameters, or those of a parameter file
    (``params``: a path, or a :class:`ParameterTable`)."""
    if params is None:
        return AnalyticModel()
    table = params if isinstance(params, ParameterTable) else load_table(params)
    return AnalyticModel(table)


__all__ = ["DEFAULT_ENTRY", "FAMILIES", "AnalyticModel", "AnalyticParams", "KernelTerms",
           "ParameterTable", "analytic_model", "block_time_s", "compute_key", "default_table",
           "kernel_terms", "load_table"]
