"""Waves, residency and physical floors: the quantities every cost model shares.

A kernel's blocks run in *waves*: one SM holds ``blocks_per_sm`` blocks at once (the
occupancy calculator), so the GPU holds ``sm_count x blocks_per_sm`` (one *wave*) and a grid
of ``B`` blocks needs ``ceil(B / wave)`` waves when it runs alone. A block shares its SM's
issue slots with the other resident blocks of its kernel: ``resident_blocks_per_sm`` is how
many of them an SM actually holds when the kernel runs alone (never more than the grid
spread over the SMs), and a block's share of the GPU's peak is
``peak / (sm_count x resident_blocks_per_sm)``.

:func:`isolated_time_s` is the analytic time of a kernel running alone under a cost model:
``waves x block_time_s``, never below ``dram_bytes / dram_bw_Bps`` (the engine's fluid DRAM
sharing gives a lone memory-bound kernel exactly that). It is exact when every wave is full
and all blocks last equally long; for a partial last wave it is the same number (the last
wave takes a full block time even with fewer blocks), which is what the engine produces too
since a block's time does not depend on how many neighbours it has.
"""

from __future__ import annotations

import math

from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel, KernelSpec
from gpu_models.occupancy import occupancy
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


def isolated_time_s(kernel: KernelSpec, spec: GPUSpec, cost_model: CostModel) -> float:
    """Analytic time of ``kernel`` running alone on ``spec`` under ``cost_model``.

    ``waves x block_time_s``, but never below the cost's DRAM bytes at full bandwidth (the
    engine stretches memory-bound blocks to that). See the module docstring for partial waves.
    """
    cost = cost_model(kernel, spec)
    return max(waves(kernel, spec) * cost.block_time_s, cost.dram_bytes / spec.dram_bw_Bps)
