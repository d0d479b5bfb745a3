"""The roofline cost model: per-block time from a GPU's peak rates, for any GPU.

A kernel is limited by its math (FLOPs at the GPU's peak rate for its precision) or by its
DRAM traffic (bytes at the GPU's bandwidth), whichever is slower; real kernels reach only a
fraction of either peak, so each :class:`KernelKind` has an *efficiency* pair (compute,
memory) in :data:`DEFAULT_EFFICIENCY`.

How the two sides split between the cost model and the engine: the engine runs each block
for ``block_time_s`` and spreads ``dram_bytes`` evenly over the blocks' run time; when the
summed demand of running blocks exceeds ``dram_bw_Bps`` it slows every memory-demanding block
in proportion (fluid sharing). So this model gives

* ``block_time_s`` = the block's FLOPs at its share of the GPU's peak,
  ``peak x compute_efficiency / (sm_count x resident_blocks_per_sm)``, plus a fixed per-block
  latency floor (a block that computes nothing still takes time to start and retire);
* ``dram_bytes`` = the kernel's traffic divided by its kind's memory efficiency: the
  *bandwidth-equivalent* bytes, which at the peak bandwidth take as long as the real bytes at
  the bandwidth the kind achieves. A lone memory-bound kernel then lasts
  ``bytes / (bandwidth x memory_efficiency)`` in the engine and in :func:`isolated_time_s`.

Since both efficiencies are at most 1, predictions never beat ``flops / peak`` or
``bytes / bandwidth`` (tested over random kernels on every preset).

What a block uses while it runs (docs/model.md §6.7): ``sm_throughput`` is its FLOPs over
its block time over its SM's peak on the resource its math runs on
(:func:`~gpu_models.cost.waves.block_sm_demand`), at most ``compute_efficiency /
resident_blocks_per_sm``: a kernel alone never over-subscribes its SMs, and two co-resident
kernels whose shares sum past 1 slow each other down. ``bytes_in_flight_B``: GEMM and
convolution kernels stage their operand tiles in shared memory and load them ahead (at
least double-buffered; CUTLASS multistage mainloops with ``cp.async``), so a block keeps at
least half of its shared memory in flight (an assumption, stated as such). ATen's
elementwise and ``multi_tensor_apply`` (optimizer) kernels load 4 elements of each operand
per thread before using them (``vectorized_elementwise_kernel``'s vec_size 4 for 4-byte types,
``multi_tensor_apply``'s kILP = 4), so a thread keeps ``4 x 2 operands x element size`` in
flight (two operands: a binary op or an SGD step; the operand count is an assumption).
Other kinds keep what their warps keep at the streaming rate of the fitted benchmark, one
element per thread (``gpu_models/memory.py``). The memory-parallelism bound then makes a
memory-bound kernel with few resident warps slower than ``bytes / bandwidth`` alone, as on
real GPUs (:func:`~gpu_models.cost.waves.isolated_time_s` gives the same time).

Where the efficiency values come from: two are measured on this project's lent H100 (see
shared/reference/gpu_facts.md: a bf16 GEMM on random data reached ~800 of 989 TFLOP/s, a
device-to-device copy ~3.0 of 3.35 TB/s); the rest are stated assumptions, each labelled in
its ``source``, to be replaced by the calibrated model where measured kernels exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gpu_models.cost.waves import block_share_flop_per_s, block_sm_demand
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelCost, KernelKind, KernelSpec
from gpu_models.spec import GPUSpec

#: Fixed time every block takes on top of its math. Source: the shortest kernels in the
#: public A100 ResNet-50 profiler trace (shared/reference/traces) are 1-block, 128-thread
#: fill kernels lasting 1.34-1.44 us, and multi-wave copy kernels there take >= 1.71 us per
#: wave; 1 us keeps a block just under the smallest observed whole-kernel time.
DEFAULT_BLOCK_LATENCY_S = 1.0e-6


@dataclass(frozen=True)
class KindEfficiency:
    """Fractions of peak compute and peak bandwidth one kind of kernel reaches."""

    compute: float
    memory: float
    #: Where the two numbers come from (a measurement, or "assumption: why").
    source: str

    def __post_init__(self) -> None:
        for name in ("compute", "memory"):
            value = getattr(self, name)
            if not (0 < value <= 1):
                raise GpusimError(f"efficiency {name} must be in (0, 1] (got {value!r})")


_GEMM_MEASURED = "measured: bf16 GEMM ~800/989 TFLOP/s on the lent H100 (gpu_facts.md)"
_COPY_MEASURED = "measured: device copy ~3.0/3.35 TB/s on the lent H100 (gpu_facts.md)"

#: Per-kind efficiencies of :class:`RooflineModel` (see the module docstring for sources).
DEFAULT_EFFICIENCY: Mapping[KernelKind, KindEfficiency] = MappingProxyType({
    KernelKind.GEMM: KindEfficiency(
        0.80, 0.90, f"compute {_GEMM_MEASURED}; memory {_COPY_MEASURED}"),
    KernelKind.CONV_FWD: KindEfficiency(
        0.70, 0.90, "assumption: implicit GEMM below a plain GEMM (im2col address math, "
        "edge tiles); memory as copy"),
    KernelKind.CONV_DGRAD: KindEfficiency(
        0.60, 0.90, "assumption: as conv_fwd, less for strided/transposed tiles"),
    KernelKind.CONV_WGRAD: KindEfficiency(
        0.60, 0.90, "assumption: as conv_fwd, less for split-K reductions over N*P*Q"),
    KernelKind.ELEMENTWISE: KindEfficiency(
        0.50, 0.90, f"memory {_COPY_MEASURED}; compute assumption (rarely binds)"),
    KernelKind.REDUCTION: KindEfficiency(
        0.50, 0.80, "assumption: streaming read with a tree reduction tail"),
    KernelKind.POOLING: KindEfficiency(
        0.50, 0.80, "assumption: windowed reads, partial reuse through L1"),
    KernelKind.NORMALIZATION: KindEfficiency(
        0.50, 0.80, "assumption: two passes (statistics, apply) over the activations"),
    KernelKind.SOFTMAX_LOSS: KindEfficiency(
        0.50, 0.70, "assumption: small rows, reductions per row"),
    KernelKind.CONCAT_COPY: KindEfficiency(0.50, 0.90, f"memory {_COPY_MEASURED}"),
    KernelKind.OPTIMIZER: KindEfficiency(
        0.50, 0.90, "assumption: multi-tensor apply streams like a copy"),
    KernelKind.MICRO: KindEfficiency(
        1.00, 1.00, "microbenchmarks state their own work; measured campaigns calibrate them"),
})


#: Kinds whose blocks load operand tiles into shared memory ahead of use (module docstring).
TILED_KINDS: frozenset[KernelKind] = frozenset({
    KernelKind.GEMM, KernelKind.CONV_FWD, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD})


#: Kinds of ATen kernels that load ``VECTOR_ELEMENTS`` of each of ``VECTOR_OPERANDS``
#: operands per thread ahead of use (module docstring).
VECTORIZED_KINDS: frozenset[KernelKind] = frozenset({KernelKind.ELEMENTWISE,
                                                     KernelKind.OPTIMIZER})
VECTOR_ELEMENTS = 4
VECTOR_OPERANDS = 2
_ELEMENT_B = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2}


def block_bytes_in_flight_B(kernel: KernelSpec) -> float:
    """Bytes one block keeps in flight beyond the streaming rate (module docstring); 0
    leaves it to its warps."""
    if kernel.kind in TILED_KINDS:
        return kernel.smem_per_block_B / 2
    if kernel.kind in VECTORIZED_KINDS:
        return float(kernel.threads * VECTOR_ELEMENTS * VECTOR_OPERANDS
                     * _ELEMENT_B[kernel.dtype])
    return 0.0


@dataclass(frozen=True)
class RooflineModel:
    """Cost model from the spec's peaks, per-kind efficiencies and a per-block floor."""

    # hash=False keeps models hashable (the engine may key caches on them).
    efficiency: Mapping[KernelKind, KindEfficiency] = field(
        default_factory=lambda: DEFAULT_EFFICIENCY, hash=False)
    block_latency_s: float = DEFAULT_BLOCK_LATENCY_S

    def __post_init__(self) -> None:
        table = {KernelKind(k): v for k, v in self.efficiency.items()}
        missing = [k.value for k in KernelKind if k not in table]
        if missing:
            raise GpusimError(f"roofline efficiency table lacks kind(s) {', '.join(missing)}")
        object.__setattr__(self, "efficiency", MappingProxyType(table))
        # > 0 so that a kernel with no FLOPs still has a positive block time.
        if not (self.block_latency_s > 0 and math.isfinite(self.block_latency_s)):
            raise GpusimError(f"block_latency_s must be finite and > 0 "
                              f"(got {self.block_latency_s!r})")

    def block_compute_s(self, kernel: KernelSpec, spec: GPUSpec) -> float:
        """One block's FLOPs at its share of the GPU's (efficiency-scaled) peak."""
        share = block_share_flop_per_s(kernel, spec) * self.efficiency[kernel.kind].compute
        return kernel.flops / kernel.blocks / share

    def __call__(self, kernel: KernelSpec, spec: GPUSpec) -> KernelCost:
        block_time_s = self.block_compute_s(kernel, spec) + self.block_latency_s
        return KernelCost(
            block_time_s=block_time_s,
            dram_bytes=kernel.dram_bytes / self.efficiency[kernel.kind].memory,
            sm_throughput=block_sm_demand(kernel, spec, block_time_s),
            bytes_in_flight_B=block_bytes_in_flight_B(kernel),
        )


def roofline_model(
    *,
    efficiency: Mapping[str, float | tuple[float, float]] | None = None,
    block_latency_s: float = DEFAULT_BLOCK_LATENCY_S,
) -> RooflineModel:
    """A :class:`RooflineModel`, optionally with some kinds' efficiencies overridden.

    ``efficiency`` maps a kind name to a compute efficiency or a (compute, memory) pair;
    overridden entries are labelled ``"override"``.
    """
    table = dict(DEFAULT_EFFICIENCY)
    for name, value in (efficiency or {}).items():
        try:
            kind = KernelKind(name)
        except ValueError:
            raise GpusimError(f"efficiency override: unknown kind {name!r}; expected one of "
                              f"{[k.value for k in KernelKind]}") from None
        compute, memory = value if isinstance(value, tuple) else (value, table[kind].memory)
        table[kind] = KindEfficiency(float(compute), float(memory), "override")
    return RooflineModel(efficiency=table, block_latency_s=block_latency_s)
