"""Kernel descriptions: what lowering produces and cost models price.

A :class:`KernelSpec` is one GPU kernel launch as a library would issue it: its launch
configuration (grid, threads per block, registers per thread, shared memory per block) and
its work (FLOPs and DRAM bytes), with the layer it came from. A *cost model* is a pure
function ``(KernelSpec, GPUSpec) -> KernelCost`` giving the duration of one block when
nothing slows it, what one block uses while it runs (its share of its SM's execution
resources, the bytes it keeps in flight to DRAM) and the kernel's DRAM traffic; the engine
turns those into a timeline (docs/model.md §4.1, §6.7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gpu_models.errors import GpusimError
from gpu_models.spec import PRECISIONS, GPUSpec

#: Execution resources of an SM that co-resident blocks share (docs/model.md §6.7): the
#: FP32/SIMT pipes of the CUDA cores and the tensor cores. Each has capacity 1 per SM.
SM_RESOURCES: tuple[str, ...] = ("simt", "tensor")


class KernelKind(StrEnum):
    """What a kernel does; cost models keep per-kind efficiencies."""

    CONV_FWD = "conv_fwd"
    CONV_DGRAD = "conv_dgrad"
    CONV_WGRAD = "conv_wgrad"
    GEMM = "gemm"
    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    POOLING = "pooling"
    NORMALIZATION = "normalization"
    SOFTMAX_LOSS = "softmax_loss"
    CONCAT_COPY = "concat_copy"
    OPTIMIZER = "optimizer"
    #: Microbenchmark kernels (spin, stream, empty) of the device campaigns.
    MICRO = "micro"


@dataclass(frozen=True)
class KernelSpec:
    """One kernel launch. Sizes in bytes, work in FLOP, times in seconds."""

    name: str
    kind: KernelKind
    grid: tuple[int, int, int]
    threads: int
    regs_per_thread: int
    smem_per_block_B: int
    flops: float
    dram_bytes: float
    #: Math precision: fp32, tf32 (fp32 storage, TF32 tensor-core math), fp16, bf16.
    dtype: str = "fp32"
    #: Whether the kernel's math runs on tensor cores.
    tensor_cores: bool = False
    #: Name of the layer (graph node) this kernel implements; "" for free-standing kernels.
    layer: str = ""
    #: Duration measured on a real GPU, where calibration data hold one.
    measured_time_s: float | None = None
    #: The library's kernel name (from a real trace or the lowering tables).
    library_name: str = ""
    #: Output tile ``(bm, bn)`` of one block of a tiled GEMM main loop (lowering knows it
    #: from its tile tables); ``None`` where the kernel has no such loop or it is unknown.
    tile_mn: tuple[int, int] | None = None
    #: Main-loop (K-loop) iterations one block runs, each loading one ``bk`` stage of its
    #: operand tiles; 0 where the kernel has no tiled main loop or it is unknown.
    mainloop_iterations: int = 0
    #: Kernel family the analytic cost model keeps its own compute efficiency for
    #: (:data:`gpu_models.cost.analytic.FAMILIES`, e.g. ``"wgrad_engine"``: cuDNN 7's
    #: wgrad_alg0/alg1 engines); "" = priced by its kind alone.
    family: str = ""

    def __post_init__(self) -> None:
        given: int | tuple[int, ...] = self.grid
        dims = (given,) if isinstance(given, int) else tuple(given)
        grid = tuple(int(g) for g in dims)
        if len(grid) < 3:
            grid = grid + (1,) * (3 - len(grid))
        object.__setattr__(self, "grid", grid)
        try:
            object.__setattr__(self, "kind", KernelKind(self.kind))
        except ValueError:
            raise GpusimError(
                f"kernel {self.name!r}: unknown kind {self.kind!r}; "
                f"expected one of {[k.value for k in KernelKind]}"
            ) from None

        def fail(what: str, value: object) -> None:
            raise GpusimError(f"kernel {self.name!r}: {what} (got {value!r})")

        if not self.name:
            fail("name must not be empty", self.name)
        if len(grid) != 3 or any(g < 1 for g in grid):
            fail("grid must be 1 to 3 positive dimensions", self.grid)
        if self.threads < 1:
            fail("threads per block must be >= 1", self.threads)
        if self.regs_per_thread < 0:
            fail("registers per thread must be >= 0", self.regs_per_thread)
        if self.smem_per_block_B < 0:
            fail("shared memory per block must be >= 0", self.smem_per_block_B)
        for what, value in (("flops", self.flops), ("dram_bytes", self.dram_bytes)):
            if not (value >= 0 and math.isfinite(value)):
                fail(f"{what} must be finite and >= 0", value)
        if self.dtype not in PRECISIONS:
            fail(f"dtype must be one of {PRECISIONS}", self.dtype)
        if self.measured_time_s is not None and not self.measured_time_s > 0:
            fail("measured_time_s must be > 0", self.measured_time_s)
        if self.tile_mn is not None:
            tile = tuple(int(t) for t in self.tile_mn)
            if len(tile) != 2 or min(tile) < 1:
                fail("tile_mn must be two positive integers", self.tile_mn)
            object.__setattr__(self, "tile_mn", tile)
        if isinstance(self.mainloop_iterations, bool) or not isinstance(
                self.mainloop_iterations, int) or self.mainloop_iterations < 0:
            fail("mainloop_iterations must be an integer >= 0", self.mainloop_iterations)

    @property
    def blocks(self) -> int:
        """Total thread blocks in the grid."""
        x, y, z = self.grid
        return x * y * z


@dataclass(frozen=True)
class KernelCost:
    """What a cost model says of one kernel on one GPU."""

    #: Duration of one block when nothing slows it (no DRAM contention, its SM not shared
    #: beyond the kernel's own natural occupancy).
    block_time_s: float
    #: The kernel's total DRAM traffic; the engine spreads it over the blocks' run time.
    dram_bytes: float
    #: Share of its SM's throughput one block uses while it runs unimpeded, per execution
    #: resource (:data:`SM_RESOURCES`): its work over its unimpeded time over the SM's
    #: capacity. Absent resources: none (a block that only waits, like a sleep kernel).
    sm_throughput: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: Bytes one block keeps in flight to DRAM when more than its warps keep at the
    #: streaming rate (e.g. shared-memory tiles loaded ahead); 0: its warps' (§6.7).
    bytes_in_flight_B: float = 0.0

    def __post_init__(self) -> None:
        if not (self.block_time_s > 0 and math.isfinite(self.block_time_s)):
            raise GpusimError(f"block_time_s must be finite and > 0 (got {self.block_time_s!r})")
        if not (self.dram_bytes >= 0 and math.isfinite(self.dram_bytes)):
            raise GpusimError(f"dram_bytes must be finite and >= 0 (got {self.dram_bytes!r})")
        # A plain dict (picklable, for process pools), checked and never changed after this.
        object.__setattr__(self, "sm_throughput", check_sm_throughput(self.sm_throughput))
        if not (self.bytes_in_flight_B >= 0 and math.isfinite(self.bytes_in_flight_B)):
            raise GpusimError(f"bytes_in_flight_B must be finite and >= 0 "
                              f"(got {self.bytes_in_flight_B!r})")


def check_sm_throughput(shares: Mapping[str, float],
                        who: str = "sm_throughput") -> dict[str, float]:
    """``shares`` as a plain dict in :data:`SM_RESOURCES` order, zero shares dropped; raises
    :class:`GpusimError` (prefixed by ``who``) for an unknown resource or a share outside
    [0, 1]."""
    if not isinstance(shares, Mapping):
        raise GpusimError(f"{who} must be a mapping resource -> share (got {shares!r})")
    unknown = sorted(str(k) for k in shares if k not in SM_RESOURCES)
    if unknown:
        raise GpusimError(f"{who}: unknown resource(s) {', '.join(map(repr, unknown))}; "
                          f"resources: {', '.join(SM_RESOURCES)}")
    out: dict[str, float] = {}
    for resource in SM_RESOURCES:
        if resource not in shares:
            continue
        value = shares[resource]
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 <= value <= 1):
            raise GpusimError(f"{who}: the {resource} share must be a number in [0, 1] "
                              f"(got {value!r})")
        if value > 0:
            out[resource] = float(value)
    return out


#: A cost model: a pure function of the kernel and the GPU.
CostModel = Callable[[KernelSpec, GPUSpec], KernelCost]
