"""Occupancy: how many blocks of a kernel one SM can hold at once, and what limits it.

This follows CUDA's occupancy calculator (``cudaOccMaxActiveBlocksPerMultiprocessor`` in
``cuda_occupancy.h``). A block of ``threads`` threads, ``regs_per_thread`` registers and
``smem_per_block_B`` bytes of shared memory (static + dynamic) is limited by four resources:

* **warps** – ``floor(max_warps_per_sm / ceil(threads / warp_size))``;
* **registers** – registers are allocated per warp, rounded up to ``reg_alloc_unit``
  (256). The register file is split over ``sub_partitions`` (4) warp schedulers and a warp's
  registers come from one of them, so the warps that fit are
  ``floor((regs_per_sm / 4) / regs_per_warp) * 4`` – this can be fewer than
  ``regs_per_sm / regs_per_block`` suggests. The launch fails outright when
  ``regs_per_warp * roundup(warps_per_block, 4)`` exceeds ``regs_per_block`` (the hardware
  check assumes every sub-partition is allocated at once);
* **shared memory** – ``roundup(smem + reserved_per_block, smem_alloc_unit)`` per block
  (1 KiB is reserved per block on cc >= 8.0); the SM's shared memory is the preferred
  carveout rounded up to a supported size (default: the largest);
* **blocks** – ``max_blocks_per_sm`` slots.

A launch that can never run (too many threads, registers or shared memory per block) gets 0
blocks and a reason. :func:`block_footprint` gives the allocated resources of one block;
the engine's SM model uses it so that simulated residency matches this calculator exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec

#: Resource names, in the order ties are reported.
LIMITERS: tuple[str, ...] = ("warps", "registers", "shared_memory", "blocks")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(value: int, unit: int) -> int:
    return _ceil_div(value, unit) * unit


@dataclass(frozen=True)
class BlockFootprint:
    """Resources one resident block of a kernel holds on an SM, as allocated."""

    threads: int
    warps: int
    #: Registers one warp holds (regs/thread x warp size, rounded to the allocation unit).
    regs_per_warp: int
    #: Shared memory the block holds, reservation included, rounded to the allocation unit.
    smem_B: int


def block_footprint(
    spec: GPUSpec, threads: int, regs_per_thread: int, smem_per_block_B: int
) -> BlockFootprint:
    """Allocated resources of one block (raises only for nonsensical negative input)."""
    _check_inputs(threads, regs_per_thread, smem_per_block_B)
    warps = _ceil_div(threads, spec.warp_size)
    regs_per_warp = _round_up(regs_per_thread * spec.warp_size, spec.reg_alloc_unit)
    smem = _round_up(smem_per_block_B + spec.smem_reserved_per_block_B, spec.smem_alloc_unit_B)
    return BlockFootprint(threads=threads, warps=warps, regs_per_warp=regs_per_warp, smem_B=smem)


def launch_failure(
    spec: GPUSpec, threads: int, regs_per_thread: int, smem_per_block_B: int
) -> str | None:
    """Why a block of this shape can never run on ``spec``, or ``None`` if it can."""
    _check_inputs(threads, regs_per_thread, smem_per_block_B)
    if threads > spec.max_threads_per_block:
        return (f"threads per block {threads} exceeds max_threads_per_block "
                f"{spec.max_threads_per_block}")
    if regs_per_thread > spec.max_regs_per_thread:
        return (f"registers per thread {regs_per_thread} exceeds max_regs_per_thread "
                f"{spec.max_regs_per_thread}")
    fp = block_footprint(spec, threads, regs_per_thread, smem_per_block_B)
    regs_hw_check = fp.regs_per_warp * _round_up(fp.warps, spec.sub_partitions)
    if regs_hw_check > spec.regs_per_block:
        return (f"registers per block {regs_hw_check} (allocated: {fp.regs_per_warp} per warp x "
                f"{_round_up(fp.warps, spec.sub_partitions)} warps) exceeds regs_per_block "
                f"{spec.regs_per_block}")
    if smem_per_block_B > spec.max_smem_per_block_B:
        return (f"shared memory per block {smem_per_block_B} B exceeds max_smem_per_block_B "
                f"{spec.max_smem_per_block_B} B")
    return None


def carveout_for(spec: GPUSpec, preferred_B: int | None, block_smem_B: int) -> int:
    """The shared-memory carveout an SM uses: the preference rounded up to a supported size.

    No preference means the largest carveout. A carveout too small for one block is raised to
    the smallest one that holds it, as the driver does. A negative preference is an error.
    """
    if preferred_B is not None and (isinstance(preferred_B, bool)
                                    or not isinstance(preferred_B, int) or preferred_B < 0):
        raise GpusimError(f"preferred carveout must be a number of bytes >= 0 "
                          f"(got {preferred_B!r}); {spec.name} supports "
                          f"{', '.join(map(str, spec.smem_carveouts_B))} B")
    wanted = spec.smem_per_sm_B if preferred_B is None else max(preferred_B, block_smem_B)
    for size in spec.smem_carveouts_B:
        if size >= wanted:
            return size
    return spec.smem_carveouts_B[-1]


@dataclass(frozen=True)
class Occupancy:
    """Result of the occupancy calculation for one kernel shape on one GPU."""

    blocks_per_sm: int
    #: The resource that binds (first of :data:`LIMITERS` on a tie), or ``"launch"``.
    limiter: str
    #: Every resource whose limit equals ``blocks_per_sm``.
    limiters: tuple[str, ...]
    #: Blocks per SM each resource alone allows.
    limit_warps: int
    limit_registers: int
    limit_shared_memory: int
    limit_blocks: int
    warps_per_block: int
    active_warps: int
    #: active warps / max warps per SM.
    occupancy: float
    regs_per_warp_alloc: int
    smem_per_block_alloc_B: int
    carveout_B: int
    #: Why the launch can never run (then ``blocks_per_sm`` is 0), else ``None``.
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly view."""
        return {
            "blocks_per_sm": self.blocks_per_sm,
            "limiter": self.limiter,
            "limiters": list(self.limiters),
            "limits": {
                "warps": self.limit_warps,
                "registers": self.limit_registers,
                "shared_memory": self.limit_shared_memory,
                "blocks": self.limit_blocks,
            },
            "warps_per_block": self.warps_per_block,
            "active_warps": self.active_warps,
            "occupancy": self.occupancy,
            "regs_per_warp_alloc": self.regs_per_warp_alloc,
            "smem_per_block_alloc_B": self.smem_per_block_alloc_B,
            "carveout_B": self.carveout_B,
            "reason": self.reason,
        }


def occupancy(
    spec: GPUSpec,
    threads: int,
    regs_per_thread: int,
    smem_per_block_B: int = 0,
    *,
    preferred_carveout_B: int | None = None,
) -> Occupancy:
    """Blocks of this shape one SM of ``spec`` holds at once, with the binding limit."""
    fp = block_footprint(spec, threads, regs_per_thread, smem_per_block_B)
    carveout = carveout_for(spec, preferred_carveout_B, fp.smem_B)
    reason = launch_failure(spec, threads, regs_per_thread, smem_per_block_B)

    by_warps = spec.max_warps_per_sm // fp.warps
    # A resource the block does not use never binds; its "limit" is shown as the slot count.
    unused: set[str] = set()
    if fp.regs_per_warp == 0:
        by_regs = spec.max_blocks_per_sm
        unused.add("registers")
    else:
        warps_per_partition = (spec.regs_per_sm // spec.sub_partitions) // fp.regs_per_warp
        by_regs = (warps_per_partition * spec.sub_partitions) // fp.warps
    if fp.smem_B:
        by_smem = carveout // fp.smem_B
    else:
        by_smem = spec.max_blocks_per_sm
        unused.add("shared_memory")
    by_blocks = spec.max_blocks_per_sm
    limits = {"warps": by_warps, "registers": by_regs, "shared_memory": by_smem,
              "blocks": by_blocks}
    blocks = 0 if reason else min(limits.values())
    binding = tuple(
        name for name in LIMITERS if limits[name] == min(limits.values()) and name not in unused
    )
    return Occupancy(
        blocks_per_sm=blocks,
        limiter="launch" if reason else binding[0],
        limiters=binding,
        limit_warps=by_warps,
        limit_registers=by_regs,
        limit_shared_memory=by_smem,
        limit_blocks=by_blocks,
        warps_per_block=fp.warps,
        active_warps=blocks * fp.warps,
        occupancy=blocks * fp.warps / spec.max_warps_per_sm,
        regs_per_warp_alloc=fp.regs_per_warp,
        smem_per_block_alloc_B=fp.smem_B,
        carveout_B=carveout,
        reason=reason,
    )


def _check_inputs(threads: int, regs_per_thread: int, smem_per_block_B: int) -> None:
    if threads < 1:
        raise GpusimError(f"threads per block must be >= 1 (got {threads})")
    if regs_per_thread < 0:
        raise GpusimError(f"registers per thread must be >= 0 (got {regs_per_thread})")
    if smem_per_block_B < 0:
        raise GpusimError(f"shared memory per block must be >= 0 B (got {smem_per_block_B})")
