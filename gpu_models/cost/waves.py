"""Waves, residency, SM demands and physical floors: the quantities every cost model shares.

A kernel's blocks run in *waves*: one SM holds ``blocks_per_sm`` blocks at once (the
occupancy calculator), so the GPU holds ``sm_count x blocks_per_sm`` (one *wave*) and a grid
of ``B`` blocks needs ``ceil(B / wave)`` waves when it runs alone. A block shares its SM's
issue slots with the other resident blocks of its kernel: ``resident_blocks_per_sm`` is how
many of them an SM actually holds when the kernel runs alone (never more than the grid
spread over the SMs), and a block's share of the GPU's peak is
``peak / (sm_count x resident_blocks_per_sm)``.

:func:`block_sm_demand` is what a block asks of its SM (docs/model.md §6.7): its work rate
over the SM's peak on the execution resource its math runs on (:func:`sm_resource`), never
more than ``1 / resident_blocks_per_sm``, so that a kernel alone at its natural occupancy
never over-subscribes an SM and keeps its cost-model time in the engine.

:func:`isolated_time_s` is the time of a kernel running alone under a cost model, exactly as
the engine runs it: wave after wave (every block of a wave starts together and, being
alike, ends together), each wave lasting ``block_time_s`` over its blocks' rate. The rate is
1 unless DRAM holds the wave back: with ``sm_sharing`` (the engine's default) by the
memory-parallelism bound of its resident blocks (:class:`gpu_models.memory.MemorySystem`),
else by the bandwidth shared max-min fairly (:mod:`gpu_models.sharing`). A partial last
wave asks for less bandwidth than a full one, so it can run faster than a full wave of a
memory-bound kernel. The one case it only approximates: a cost model whose blocks
over-subscribe their SM alone (none built in does): each wave is then timed by its
busiest SM.
"""

from __future__ import annotations

import math

from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel, KernelCost, KernelSpec
from gpu_models.memory import MemorySystem
from gpu_models.occupancy import block_footprint, occupancy
from gpu_models.sharing import max_min_rates
from gpu_models.spec import GPUSpec


def blocks_per_sm(kernel: KernelSpec, spec: GPUSpec) -> int:
    """Blocks of ``kernel`` one SM of ``spec`` holds; raises if the block can never run."""
    occ = occupancy(spec, kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B)
    if occ.blocks_per_sm == 0:
        raise GpusimError(f"kernel {kernel.name!r} can never run on {spec.name}: {occ.reason}")
    return occ.blocks_per_sm


def wave_size(kernel: KernelSpec, spec: GPUSpec) -> int:
    """Blocks the whole GPU holds at once: ``sm_count x blocks_per_sm``."""
    return spec.sm_count * blocks_per_sm(kernel, spec)


def waves(kernel: KernelSpec, spec: GPUSpec) -> int:
    """Waves the kernel needs running alone: ``ceil(blocks / (sm_count x blocks_per_sm))``."""
    return math.ceil(kernel.blocks / wave_size(kernel, spec))


def resident_blocks_per_sm(kernel: KernelSpec, spec: GPUSpec) -> int:
    """Blocks an SM holds when the kernel runs alone: occupancy, or fewer for a small grid."""
    return min(blocks_per_sm(kernel, spec), math.ceil(kernel.blocks / spec.sm_count))


def peak_flop_per_s(kernel: KernelSpec, spec: GPUSpec) -> float:
    """The GPU's peak rate for the kernel's precision and math units."""
    return spec.peak_flop_per_s(kernel.dtype, tensor_cores=kernel.tensor_cores)


def block_share_flop_per_s(kernel: KernelSpec, spec: GPUSpec) -> float:
    """One block's share of the peak: ``peak / (sm_count x resident_blocks_per_sm)``."""
    return peak_flop_per_s(kernel, spec) / (spec.sm_count * resident_blocks_per_sm(kernel, spec))


def compute_floor_s(kernel: KernelSpec, spec: GPUSpec) -> float:
    """No kernel finishes faster than its FLOPs at the GPU's peak rate."""
    return kernel.flops / peak_flop_per_s(kernel, spec)


def memory_floor_s(kernel: KernelSpec, spec: GPUSpec) -> float:
    """No kernel finishes faster than its DRAM traffic at the GPU's peak bandwidth."""
    return kernel.dram_bytes / spec.dram_bw_Bps


def physical_floor_s(kernel: KernelSpec, spec: GPUSpec) -> float:
    """The larger of the compute and memory floors."""
    return max(compute_floor_s(kernel, spec), memory_floor_s(kernel, spec))


def sm_resource(kernel: KernelSpec, spec: GPUSpec) -> str:
    """The SM execution resource the kernel's math runs on: ``tensor`` where it uses tensor
    cores the GPU has for its precision, else ``simt`` (the CUDA cores' FP32/SIMT pipes)."""
    if kernel.tensor_cores and kernel.dtype != "fp32":
        tensor_peak: float = getattr(spec, f"peak_{kernel.dtype}_tensor_flop_per_s")
        if tensor_peak > 0:
            return "tensor"
    return "simt"


def block_sm_demand(kernel: KernelSpec, spec: GPUSpec, block_time_s: float) -> dict[str, float]:
    """Share of its SM's throughput one block uses when it runs for ``block_time_s``
    unimpeded: ``(flops per block / block_time_s) / (peak / sm_count)`` on
    :func:`sm_resource`, at most ``1 / resident_blocks_per_sm`` (module docstring)."""
    if kernel.flops <= 0:
        return {}
    per_sm_peak = peak_flop_per_s(kernel, spec) / spec.sm_count
    share = kernel.flops / kernel.blocks / block_time_s / per_sm_peak
    return {sm_resource(kernel, spec): min(share, 1.0 / resident_blocks_per_sm(kernel, spec))}


def implied_bytes_in_flight_B(kernel: KernelSpec, spec: GPUSpec, block_time_s: float,
                              dram_bytes: float) -> float:
    """Bytes per block a kernel whose blocks take ``block_time_s`` alone must keep in flight
    for its DRAM demand (``dram_bytes / blocks / block_time_s`` each) to be met at its
    natural occupancy: for cost models whose time already includes the memory side
    (calibrated, scaled), so that the engine does not slow the kernel alone a second time."""
    resident = min(kernel.blocks, wave_size(kernel, spec))
    demand = dram_bytes / kernel.blocks / block_time_s * resident
    return MemorySystem.for_gpu(spec).in_flight_for(demand, resident)


def lone_kernel_time_s(kernel: KernelSpec, spec: GPUSpec, cost: KernelCost, *,
                       sm_sharing: bool = True) -> float:
    """The engine's time for ``kernel`` priced at ``cost`` running alone (module docstring)."""
    wave = wave_size(kernel, spec)
    full_waves, last = divmod(kernel.blocks, wave)
    demand = cost.dram_bytes / kernel.blocks / cost.block_time_s  # per block
    fp = block_footprint(spec, kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B)
    memory = MemorySystem.for_gpu(spec) if sm_sharing else None
    heaviest = max(cost.sm_throughput.values(), default=0.0)
    time_s = 0.0
    for blocks, count in ((wave, full_waves), (last, 1 if last else 0)):
        if not count:
            continue
        sigma = 1.0
        busiest = math.ceil(blocks / spec.sm_count) * heaviest
        if sm_sharing and busiest > 1.0:
            sigma = 1.0 / busiest
        rate = sigma
        if demand > 0:
            if memory is not None:
                asked = demand * (blocks * sigma)
                in_flight = memory.block_in_flight_B(fp.warps, cost.bytes_in_flight_B)
                granted = memory.alone_Bps(asked, memory.unloaded_Bps(blocks * in_flight),
                                           blocks)
                rate = sigma * (1.0 if granted >= asked else granted / asked)
            else:
                rate = max_min_rates(spec.dram_bw_Bps, ((blocks, demand),))[0]
        for _ in range(count):
            time_s += cost.block_time_s / rate
    return time_s


def isolated_time_s(kernel: KernelSpec, spec: GPUSpec, cost_model: CostModel, *,
                    sm_sharing: bool = True) -> float:
    """Time of ``kernel`` running alone on ``spec`` under ``cost_model``, as the engine gives
    it (module docstring); ``sm_sharing=False`` for the engine without SM sharing and the
    memory-parallelism bound."""
    return lone_kernel_time_s(kernel, spec, cost_model(kernel, spec), sm_sharing=sm_sharing)
