"""Hardware pieces the engine drives: the SMs' resource accounting and DRAM bandwidth.

**SMs.** :class:`SMArray` holds, for every SM, what is still free: warps, block slots,
shared memory (the carveout is ``smem_per_sm_B``, the default maximum) and registers. The
register file is split into ``sub_partitions`` pools (one per warp scheduler); every warp of
a block takes ``regs_per_warp`` registers from one pool, the pool with the most free
registers first (lowest pool index on a tie). A block's allocated size comes from
:func:`gpu_models.occupancy.block_footprint`, so an empty SM holds exactly
``occupancy(...).blocks_per_sm`` blocks of one kernel. State lives in numpy arrays so that
a dispatch pass can ask every SM at once how many more blocks of a kernel it can take.

**DRAM.** :class:`Dram` is a fluid resource (docs/model.md §6.7). A running block of a kernel
with DRAM traffic asks for ``dram_bytes / blocks / block_time_s`` bytes/s. While the summed
demand of the running blocks fits the bandwidth every block runs at full speed. Beyond it
the bandwidth is shared max-min fairly (water-filling) among the blocks: blocks that ask
for less than the fair share get what they ask and keep full speed (they are not
memory-bound); the others each get the fair share of what is left and progress at rate
``share / demand`` (compute-only blocks always at rate 1). All blocks of one kernel have the
same demand and so the same rate: progress is kept as one *virtual clock per kernel* and
its groups wait in a per-kernel heap keyed by the virtual time at which they finish, so a
rate change costs O(K log K) for K running memory kernels, not one update per block.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np

from gpu_models.occupancy import LIMITERS, BlockFootprint
from gpu_models.spec import GPUSpec

IntArray = np.ndarray


class SMArray:
    """Free resources of every SM of a GPU, allocated and released in bulk.

    A dispatch pass makes a fixed number of numpy calls, whatever the number of SMs, and
    their overhead, not the arithmetic, is most of its cost (integer division and
    reductions along short rows are the slow ones). So the calls made once per pass are
    kept few: while no resident block took unequal registers from the pools (the common
    case: warps in whole rounds of the pool count), every SM's pools are equal, which lets
    :meth:`limits` divide one pool instead of all and :meth:`allocate` skip the pool check.
    """

    def __init__(self, spec: GPUSpec) -> None:
        self.spec = spec
        self.count = spec.sm_count
        self.pools = spec.sub_partitions
        # One row per SM: free warps, block slots, shared memory, then each register pool.
        # One matrix so that a group of blocks is taken or given back in one numpy step.
        self.free: IntArray = np.empty((self.count, 3 + self.pools), dtype=np.int64)
        self.free[:, :3] = (spec.max_warps_per_sm, spec.max_blocks_per_sm, spec.smem_per_sm_B)
        self.free[:, 3:] = spec.regs_per_sm // spec.sub_partitions
        self._no_limit = np.full(self.count, spec.max_blocks_per_sm, dtype=np.int64)
        #: Per footprint, the row one block takes when its warps are dealt evenly.
        self._even_takes: dict[BlockFootprint, IntArray] = {}
        #: Resident takes (what :meth:`allocate` returned) in which some SM took unequal
        #: registers from its pools; while there are none, every SM's pools are equal.
        self._uneven_takes = 0

    @property
    def free_warps(self) -> IntArray:
        return self.free[:, 0]

    @property
    def free_slots(self) -> IntArray:
        return self.free[:, 1]

    @property
    def free_smem_B(self) -> IntArray:
        return self.free[:, 2]

    @property
    def free_regs(self) -> IntArray:
        """Free registers per SM and pool, ``[sm_count, sub_partitions]``."""
        return self.free[:, 3:]

    # ------------------------------------------------------------------ queries
    def limits(self, fp: BlockFootprint) -> IntArray:
        """More blocks of footprint ``fp`` each SM could take, per resource alone:
        rows in :data:`~gpu_models.occupancy.LIMITERS` order, one column per SM."""
        free = self.free
        out = np.empty((len(LIMITERS), self.count), dtype=np.int64)
        np.floor_divide(free[:, 0], fp.warps, out=out[0])
        if fp.regs_per_warp:
            # Each warp uses one pool "slot" of regs_per_warp; the greedy pool choice can
            # always use any slot left, so the slots add up across pools.
            if self._uneven_takes:
                np.floor_divide((free[:, 3:] // fp.regs_per_warp).sum(axis=1), fp.warps,
                                out=out[1])
            else:  # all pools equal: the pool count times one pool's slots
                np.floor_divide(free[:, 3], fp.regs_per_warp, out=out[1])
                out[1] *= self.pools
                out[1] //= fp.warps
        else:
            out[1] = self._no_limit
        if fp.smem_B:
            np.floor_divide(free[:, 2], fp.smem_B, out=out[2])
        else:
            out[2] = self._no_limit
        out[3] = free[:, 1]
        return out

    def capacity(self, fp: BlockFootprint) -> IntArray:
        """How many more blocks of footprint ``fp`` each SM can take right now."""
        return self.limits(fp).min(axis=0)

    @staticmethod
    def blocking_resource(limits: IntArray) -> str:
        """The resource that keeps most SMs from taking one more block, given
        :meth:`limits` with no SM able to take one (each SM counts for the first of
        :data:`~gpu_models.occupancy.LIMITERS` at zero; ties in that order too)."""
        # Count, resource by resource, the SMs whose first zero it is; stop once the SMs
        # not yet counted could not outnumber the best so far (in most passes, after the
        # first resource: a numpy call or two instead of a full argmax and bincount).
        best, best_count = 0, -1
        uncounted = limits.shape[1]
        first_zero = limits[0] == 0
        counted = first_zero
        for resource in range(len(LIMITERS)):
            if resource:
                first_zero = (limits[resource] == 0) & ~counted
                counted = counted | first_zero
            count = int(np.count_nonzero(first_zero))
            if count > best_count:
                best, best_count = resource, count
            uncounted -= count
            if best_count >= uncounted:
                break
        return LIMITERS[best]

    def resident_warps(self) -> IntArray:
        """Warps resident on each SM."""
        return self.spec.max_warps_per_sm - self.free[:, 0]

    def busy_count(self) -> int:
        """SMs holding at least one block."""
        return int(np.count_nonzero(self.free[:, 1] < self.spec.max_blocks_per_sm))

    # ------------------------------------------------------------------ changes
    def allocate(self, fp: BlockFootprint, sm_ids: IntArray, counts: IntArray) -> IntArray:
        """Place ``counts[i]`` blocks on SM ``sm_ids[i]`` (ids distinct); returns what was
        taken (rows of :attr:`free`), for :meth:`release`."""
        if not fp.regs_per_warp or (fp.warps % self.pools == 0 and (
                not self._uneven_takes or not _unequal_pools(self.free[sm_ids, 3:]))):
            # No registers, or equal pools and whole rounds of warps: the greedy deals the
            # warps out evenly.
            taken = counts[:, None] * self._even_take(fp)
        else:
            taken = np.empty((len(sm_ids), 3 + self.pools), dtype=np.int64)
            taken[:, 0] = counts * fp.warps
            taken[:, 1] = counts
            taken[:, 2] = counts * fp.smem_B
            taken[:, 3:] = take_register_warps(self.free[sm_ids, 3:], fp.regs_per_warp,
                                               taken[:, 0]) * fp.regs_per_warp
            self._uneven_takes += _unequal_pools(taken[:, 3:])
        self.free[sm_ids] -= taken
        return taken

    def _even_take(self, fp: BlockFootprint) -> IntArray:
        take = self._even_takes.get(fp)
        if take is None:
            take = np.array((fp.warps, 1, fp.smem_B)
                            + (fp.warps // self.pools * fp.regs_per_warp,) * self.pools)
            self._even_takes[fp] = take
        return take

    def allocate_one(self, fp: BlockFootprint, sm_id: int) -> IntArray:
        """Place one block on ``sm_id`` warp by warp (the reference rule of exact mode)."""
        taken = np.zeros((1, 3 + self.pools), dtype=np.int64)
        taken[0, :3] = (fp.warps, 1, fp.smem_B)
        if fp.regs_per_warp:
            taken[0, 3:] = greedy_register_warps(self.free[sm_id, 3:], fp.regs_per_warp,
                                                 fp.warps) * fp.regs_per_warp
            self._uneven_takes += _unequal_pools(taken[:, 3:])
        self.free[sm_id] -= taken[0]
        return taken

    def release(self, sm_ids: IntArray, taken: IntArray) -> None:
        """Give back what :meth:`allocate` took."""
        self.free[sm_ids] += taken
        if self._uneven_takes:
            self._uneven_takes -= _unequal_pools(taken[:, 3:])

    def check(self) -> None:
        """Raise AssertionError if any SM is over any resource (used by tests)."""
        if (self.free < 0).any():
            raise AssertionError("an SM is over one of its resources")


def _unequal_pools(pools: IntArray) -> bool:
    """Does some row of ``pools`` (one column per register pool) hold unequal values?"""
    return bool((pools != pools[:, :1]).any())


def greedy_register_warps(free_regs: IntArray, regs_per_warp: int, warps: int) -> IntArray:
    """Warps per pool when ``warps`` warps each take ``regs_per_warp`` from the pool with
    the most free registers (lowest index on a tie) -- the rule, one warp at a time."""
    free = [int(v) for v in free_regs]
    taken = [0] * len(free)
    for _ in range(warps):
        pool = max(range(len(free)), key=lambda j: (free[j], -j))
        if free[pool] < regs_per_warp:
            raise AssertionError("register pools cannot hold the block")
        free[pool] -= regs_per_warp
        taken[pool] += 1
    return np.array(taken, dtype=np.int64)


def take_register_warps(free_regs: IntArray, regs_per_warp: int, warps: IntArray) -> IntArray:
    """:func:`greedy_register_warps` for many SMs at once, in closed form.

    Write a pool's free registers as ``q * r + rem`` (``r = regs_per_warp``). The greedy
    picks warp "slots" in decreasing order of the free registers they leave behind, i.e. by
    (level desc, rem desc, pool asc) where pool ``j`` offers levels ``q_j, q_j - 1, ..., 1``.
    So every slot above some level ``L*`` is taken, and at ``L*`` the pools that reach it
    are taken in (rem desc, pool asc) order until ``warps`` is met. ``L*`` is the largest
    level whose slots at or above it number at least ``warps``.
    """
    r = regs_per_warp
    k = warps.astype(np.int64)
    pools = free_regs.shape[1]
    q = free_regs // r
    rem = free_regs % r
    qs = -np.sort(-q, axis=1)  # descending
    top_sums = np.cumsum(qs, axis=1)
    t = np.arange(1, pools + 1)
    # If exactly the top t pools reach level L, slots at or above L = S_t - t * (L - 1).
    level_t = (top_sums - k[:, None]) // t + 1
    level = np.minimum(level_t, qs).max(axis=1)
    above = np.maximum(q - level[:, None], 0)
    extra = k - above.sum(axis=1)
    eligible = q >= level[:, None]
    # Rank of each eligible pool by (rem desc, pool asc) among the eligible ones.
    idx = np.arange(pools)
    before = (rem[:, :, None] > rem[:, None, :]) | (
        (rem[:, :, None] == rem[:, None, :]) & (idx[:, None] < idx[None, :])
    )
    rank = (before & eligible[:, :, None]).sum(axis=1)
    taken = above + (eligible & (rank < extra[:, None]))
    # No warps wanted: the formulas above would still pick level-top slots.
    return np.where(k[:, None] > 0, taken, 0)


class _Flow:
    """The running blocks of one kernel that use DRAM: they share one demand and one rate.

    ``virtual_s`` is the progress (seconds of block time) the kernel's blocks have made since
    the flow began; ``heap`` holds ``(virtual finish, insertion number, token)`` per group.
    """

    __slots__ = ("blocks", "demand_Bps", "heap", "rate", "virtual_s")

    def __init__(self, demand_Bps: float) -> None:
        self.blocks = 0
        self.demand_Bps = demand_Bps
        self.rate = 1.0
        self.virtual_s = 0.0
        self.heap: list[tuple[float, int, object]] = []


class Dram:
    """DRAM bandwidth shared max-min fairly (water-filling) by the running blocks that use it.

    The sharing unit is the kernel: its ``n`` running blocks each ask for ``d`` bytes/s. If
    the summed demand fits the bandwidth every block runs at rate 1. Otherwise kernels are
    taken in increasing per-block demand (ties by launch order); while a kernel's per-block
    demand is at most the fair share (bandwidth left / blocks left) its blocks get all they
    ask (rate 1) and leave the rest; the remaining kernels' blocks each get the fair share,
    i.e. progress at rate ``fair / d``. Each kernel keeps its own virtual clock and a heap of
    its groups keyed by virtual finish, so a change of the running set costs O(K log K) for
    K memory kernels (K <= ``max_resident_grids``), not one update per block. Demand is summed
    in launch order, so the same running blocks give the same float rates whatever the
    grouping.
    """

    def __init__(self, bandwidth_Bps: float) -> None:
        self.bandwidth_Bps = bandwidth_Bps
        #: Running memory kernels by launch sequence number.
        self._flows: dict[int, _Flow] = {}
        self.demand_Bps = 0.0
        self._updated_s = 0.0
        self._seq = itertools.count()
        #: The kernel whose group :meth:`next_finish_delay_s` found due first.
        self._due: int | None = None
        #: Time with summed demand above the bandwidth.
        self.saturated_s = 0.0
        #: Bandwidth used, as a step function: (time, bytes/s) at each change.
        self.used_Bps: list[tuple[float, float]] = [(0.0, 0.0)]

    def rate(self, kernel_seq: int) -> float:
        """Current progress rate of a running memory kernel's blocks (1.0 if none run)."""
        flow = self._flows.get(kernel_seq)
        return 1.0 if flow is None else flow.rate

    def advance(self, now_s: float) -> None:
        """Move every kernel's virtual clock to ``now_s`` at its current rate."""
        dt = now_s - self._updated_s
        if dt > 0:
            for flow in self._flows.values():
                flow.virtual_s += flow.rate * dt
            if self.demand_Bps > self.bandwidth_Bps:
                self.saturated_s += dt
            self._updated_s = now_s

    def start(self, now_s: float, kernel_seq: int, blocks: int, demand_per_block_Bps: float,
              duration_s: float, token: object) -> None:
        """``blocks`` blocks of one kernel start now; ``token`` comes back when they end."""
        self.advance(now_s)
        flow = self._flows.get(kernel_seq)
        if flow is None:
            flow = self._flows[kernel_seq] = _Flow(demand_per_block_Bps)
        heapq.heappush(flow.heap, (flow.virtual_s + duration_s, next(self._seq), token))
        flow.blocks += blocks
        self._rerate(now_s)

    def next_finish_delay_s(self) -> float | None:
        """Real time until the next memory group finishes at the current rates (the earliest;
        on a tie, the kernel launched first)."""
        best: float | None = None
        due = -1
        for seq, flow in self._flows.items():
            if flow.heap:
                delay = (flow.heap[0][0] - flow.virtual_s) / flow.rate
                if best is None or delay < best or (delay == best and seq < due):
                    best, due = delay, seq
        self._due = due if best is not None else None
        return None if best is None else max(0.0, best)

    def pop_finished(self, now_s: float) -> object:
        """Remove the group :meth:`next_finish_delay_s` found due (now) and return its token
        (its blocks are not yet freed)."""
        self.advance(now_s)
        assert self._due is not None
        flow = self._flows[self._due]
        finish_s, _, token = heapq.heappop(flow.heap)
        # Snap the clock to the finish so groups that end together compare equal.
        if finish_s > flow.virtual_s:
            flow.virtual_s = finish_s
        return token

    def finish(self, now_s: float, kernel_seq: int, blocks: int) -> None:
        """``blocks`` blocks of a kernel have ended."""
        self.advance(now_s)
        flow = self._flows[kernel_seq]
        flow.blocks -= blocks
        if not flow.blocks:
            del self._flows[kernel_seq]
        self._rerate(now_s)

    def _rerate(self, now_s: float) -> None:
        flows = self._flows
        order = sorted(flows)  # launch order: a deterministic float sum
        total = 0.0
        for seq in order:
            flow = flows[seq]
            total += flow.blocks * flow.demand_Bps
        self.demand_Bps = total
        if total <= self.bandwidth_Bps:
            for flow in flows.values():
                flow.rate = 1.0
            used = total
        else:
            # Water-filling: smallest per-block demand first.
            left_Bps = self.bandwidth_Bps
            left_blocks = 0
            for seq in order:
                left_blocks += flows[seq].blocks
            by_demand = sorted(order, key=lambda s: flows[s].demand_Bps)  # stable: launch order
            i, n = 0, len(by_demand)
            while i < n:
                flow = flows[by_demand[i]]
                if flow.demand_Bps * left_blocks > left_Bps:
                    break  # it and every kernel after it get the fair share
                flow.rate = 1.0
                left_Bps -= flow.blocks * flow.demand_Bps
                left_blocks -= flow.blocks
                i += 1
            fair_Bps = left_Bps / left_blocks if left_blocks else 0.0
            for seq in by_demand[i:]:
                flow = flows[seq]
                flow.rate = fair_Bps / flow.demand_Bps
            used = self.bandwidth_Bps
        if self.used_Bps[-1][0] == now_s:
            self.used_Bps[-1] = (now_s, used)
        elif self.used_Bps[-1][1] != used:
            self.used_Bps.append((now_s, used))
