"""Hardware pieces the engine drives: SM resources, SM throughput and DRAM bandwidth.

**SM resources.** :class:`SMArray` holds, for every SM, what is still free: warps, block
slots, shared memory (the carveout is ``smem_per_sm_B``, the default maximum) and registers.
The register file is split into ``sub_partitions`` pools (one per warp scheduler); every
warp of a block takes ``regs_per_warp`` registers from one pool, the pool with the most free
registers first (lowest pool index on a tie). A block's allocated size comes from
:func:`gpu_models.occupancy.block_footprint`, so an empty SM holds exactly
``occupancy(...).blocks_per_sm`` blocks of one kernel. State lives in numpy arrays so that
a dispatch pass can ask every SM at once how many more blocks of a kernel it can take.

**SM throughput** (docs/model.md §6.7). :class:`SMThroughput` shares each SM's execution
resources (:data:`~gpu_models.kernel.SM_RESOURCES`: FP32/SIMT pipes, tensor cores; capacity 1
each) among the blocks running there, as a fluid: while the blocks' summed demand on a
resource fits, all run at full speed; beyond it the resource is shared max-min fairly
(:func:`gpu_models.sharing.max_min_rates`): blocks asking less than the fair share keep full
speed, the others get the fair share. A block's SM rate is the smallest over its resources.

**DRAM** (docs/model.md §6.7). :class:`Dram` gives each running kernel that uses DRAM its
share of the bandwidth: bounded by the memory-level parallelism of its resident blocks
(:class:`gpu_models.memory.MemorySystem`) and shared max-min fairly per block beyond the
bandwidth; without the parallelism bound (``--sm-sharing off``) only the max-min rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np

from gpu_models.kernel import SM_RESOURCES
from gpu_models.memory import MemorySystem
from gpu_models.occupancy import LIMITERS, BlockFootprint
from gpu_models.sharing import max_min_rates, max_min_rates_columns
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

    #: Uneven register takes remembered (:meth:`_uneven_take`), at most.
    TAKE_CACHE_SIZE = 4096

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
        #: Rows of resident takes (what :meth:`allocate` returned, one row per SM) that took
        #: unequal registers from the SM's pools; while there are none, every SM's pools are
        #: equal. Counted by row, so that a take given back in parts (a group split by SM,
        #: docs/model.md §6.9) is counted off exactly.
        self._uneven_takes = 0
        #: Uneven takes remembered by (footprint, pool rows, counts): :meth:`_uneven_take`.
        self._take_cache: dict[tuple[BlockFootprint, bytes, bytes], tuple[IntArray, int]] = {}

    @property
    def uneven_takes(self) -> int:
        """Resident take rows with unequal registers across pools (0: all pools equal)."""
        return self._uneven_takes

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
            taken, uneven = self._uneven_take(fp, self.free[sm_ids, 3:], counts)
            self._uneven_takes += uneven
        self.free[sm_ids] -= taken
        return taken

    def known_retake(self, fp: BlockFootprint, sm_ids: IntArray, counts: IntArray,
                     taken: IntArray) -> bool:
        """Whether giving back ``taken`` (an uneven take of ``counts`` blocks of ``fp`` on
        ``sm_ids``) and placing the same blocks again would take exactly ``taken``, as far
        as the remembered takes tell without computing one (``False``: not known)."""
        pools = self.free[sm_ids, 3:] + taken[:, 3:]
        hit = self._take_cache.get((fp, pools.tobytes(), counts.tobytes()))
        return hit is not None and hit[0] is taken

    def _uneven_take(self, fp: BlockFootprint, pools: IntArray,
                     counts: IntArray) -> tuple[IntArray, int]:
        """What ``counts[i]`` blocks of ``fp`` take from SMs whose register pools are the
        rows of ``pools`` (the greedy, :func:`take_register_warps`), and how many of those
        rows take unequally from the pools. A pure function of its arguments, remembered:
        the waves of a kernel meet the same pool states again and again, and the closed
        form costs some twenty numpy calls."""
        key = (fp, pools.tobytes(), counts.tobytes())
        hit = self._take_cache.get(key)
        if hit is None:
            taken = np.empty((len(counts), 3 + self.pools), dtype=np.int64)
            taken[:, 0] = counts * fp.warps
            taken[:, 1] = counts
            taken[:, 2] = counts * fp.smem_B
            taken[:, 3:] = take_register_warps(pools, fp.regs_per_warp,
                                               taken[:, 0]) * fp.regs_per_warp
            taken.flags.writeable = False  # shared by every take it answers
            if len(self._take_cache) >= self.TAKE_CACHE_SIZE:
                self._take_cache.clear()
            hit = self._take_cache[key] = (taken, _unequal_rows(taken[:, 3:]))
        return hit

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
            self._uneven_takes += _unequal_rows(taken[:, 3:])
        self.free[sm_id] -= taken[0]
        return taken

    def release(self, sm_ids: IntArray, taken: IntArray) -> None:
        """Give back what :meth:`allocate` took (or some of its rows)."""
        self.free[sm_ids] += taken
        if self._uneven_takes:
            self._uneven_takes -= _unequal_rows(taken[:, 3:])

    def retake(self, sm_ids: IntArray, taken: IntArray) -> None:
        """Take back what :meth:`release` gave back (its exact inverse)."""
        self.free[sm_ids] -= taken
        self._uneven_takes += _unequal_rows(taken[:, 3:])

    def check(self) -> None:
        """Raise AssertionError if any SM is over any resource (used by tests)."""
        if (self.free < 0).any():
            raise AssertionError("an SM is over one of its resources")


def _unequal_pools(pools: IntArray) -> bool:
    """Does some row of ``pools`` (one column per register pool) hold unequal values?"""
    return bool((pools != pools[:, :1]).any())


def _unequal_rows(pools: IntArray) -> int:
    """Rows of ``pools`` that hold unequal values."""
    return int(np.count_nonzero((pools != pools[:, :1]).any(axis=1)))


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


#: Shares are kept as whole multiples of 1 / SHARE_UNITS, so that the load on an SM is an
#: integer sum: exact, the same whatever the order blocks came and went in (0.25 x 4 is
#: exactly the SM's capacity). The rounding is below 1e-12 of a share.
SHARE_UNITS = 2**40


class SMThroughput:
    """Per-SM fluid sharing of the execution resources by the running blocks.

    Kernels whose blocks use an SM resource hold a *slot*: a row of block counts per SM and
    each block's demand per resource. Loads per SM and resource are kept as integers
    (:data:`SHARE_UNITS`), updated as blocks start and end, so the same blocks give the same
    loads however they were grouped. :meth:`settle` recomputes the SM rate of every slot on
    the SMs whose blocks changed.
    """

    def __init__(self, sm_count: int) -> None:
        self.count = sm_count
        self.resources = len(SM_RESOURCES)
        self._capacity = 4
        self.counts = np.zeros((self._capacity, sm_count), dtype=np.int64)
        self.demand = np.zeros((self._capacity, self.resources))
        self._units = np.zeros((self._capacity, self.resources), dtype=np.int64)
        #: Load of each SM per resource, in SHARE_UNITS (capacity: SHARE_UNITS).
        self.loads = np.zeros((self.resources, sm_count), dtype=np.int64)
        #: SM rate of each slot's blocks on each SM (1 where it has none).
        self.sigma = np.ones((self._capacity, sm_count))
        self._free = list(range(self._capacity - 1, -1, -1))
        #: Slots in use as (kernel launch sequence, slot), in launch order.
        self.active: list[tuple[int, int]] = []
        #: SMs over-subscribed on each resource; per resource whether any is (plain bools:
        #: the monitor reads them after every pass), and whether any is on any resource
        #: (asked on every replay).
        self.over = np.zeros((self.resources, sm_count), dtype=bool)
        self.oversubscribed: tuple[bool, ...] = (False,) * self.resources
        self.any_oversubscribed = False
        self._max_per_sm: dict[int, int] = {}
        self._dirty = np.zeros(sm_count, dtype=bool)
        self._any_dirty = False
        #: While no mix of the running kernels can over-subscribe an SM (and none is), the
        #: loads are not needed and not kept up to date (``_stale``); they are rebuilt from
        #: the block counts, exactly (integers), when that stops.
        self._fits = True
        self._stale = False
        self._units_of: dict[int, tuple[int, ...]] = {}
        self._demand_of: dict[int, tuple[float, ...]] = {}
        #: Per active slot, its resources with a demand: ``[(resource, units), ...]``.
        self._slot_units: dict[int, list[tuple[int, int]]] = {}
        #: The most any SM could be asked, per resource: every running kernel at its
        #: occupancy (integers, kept as slots come and go). While it fits, no SM can be
        #: over-subscribed and settling costs nothing.
        self._bound = [0] * self.resources
        self._reorder()

    def acquire(self, seq: int, demand: Sequence[float], max_per_sm: int) -> int:
        """A slot for kernel ``seq`` whose blocks each ask ``demand`` (per resource), at most
        ``max_per_sm`` of them on one SM (its occupancy)."""
        if not self._free:
            grow = self._capacity
            self.counts = np.vstack([self.counts, np.zeros((grow, self.count), np.int64)])
            self.demand = np.vstack([self.demand, np.zeros((grow, self.resources))])
            self._units = np.vstack([self._units,
                                     np.zeros((grow, self.resources), dtype=np.int64)])
            self.sigma = np.vstack([self.sigma, np.ones((grow, self.count))])
            self._free = list(range(2 * grow - 1, grow - 1, -1))
            self._capacity *= 2
        slot = self._free.pop()
        # Kept as plain Python numbers too, for the per-kernel bookkeeping below.
        units = self._units_of[slot] = tuple(round(d * SHARE_UNITS) for d in demand)
        shares = self._demand_of[slot] = tuple(u / SHARE_UNITS for u in units)
        self._units[slot] = units
        self.demand[slot] = shares
        self._max_per_sm[slot] = max_per_sm
        self._slot_units[slot] = [(r, u) for r, u in enumerate(units) if u]
        for r, u in self._slot_units[slot]:
            self._bound[r] += max_per_sm * u
        index = len(self.active)
        while index and self.active[index - 1][0] > seq:
            index -= 1
        self.active.insert(index, (seq, slot))
        self._reorder()
        return slot

    def release(self, slot: int) -> None:
        """The kernel of ``slot`` completed (none of its blocks run)."""
        self.active = [(s, k) for s, k in self.active if k != slot]
        self.demand[slot] = 0.0
        self._units[slot] = 0
        for r, u in self._slot_units.pop(slot):
            self._bound[r] -= self._max_per_sm[slot] * u
        del self._units_of[slot], self._demand_of[slot]
        self.sigma[slot] = 1.0
        self._free.append(slot)
        self._reorder()

    def _reorder(self) -> None:
        """Cache the active slots in launch order, and per resource those that use it."""
        slots = self._slots = [slot for _, slot in self.active]
        self._rows = np.array(slots, dtype=np.int64)
        units_of, demand_of = self._units_of, self._demand_of
        self._users = [[(row, demand_of[slot][r]) for row, slot in enumerate(slots)
                        if units_of[slot][r]] for r in range(self.resources)]
        #: Per active slot in launch order, its resources with a demand: ``[(resource,
        #: share), ...]`` (a zero share adds nothing to a sum of loads).
        self.per_slot_shares = {slot: [(r, demand_of[slot][r]) for r in range(self.resources)
                                       if units_of[slot][r]] for slot in slots}
        self._check_fits()

    def _check_fits(self) -> None:
        """Whether no mix of the running kernels can over-subscribe an SM and none is; when
        that stops, the loads are rebuilt from the block counts (every SM marked changed:
        only those over-subscribed now are settled, and none was)."""
        self._fits = (not self.any_oversubscribed
                      and all(b <= SHARE_UNITS for b in self._bound))
        if not self._fits and self._stale:
            self.loads = self._units.T @ self.counts
            self._stale = False
            self._dirty[:] = True
            self._any_dirty = True

    # Rows are indexed as ``a[row][ids]``, not ``a[row, ids]``: a row view then a 1-D index
    # costs a third of the 2-D fancy index (these run on every pass).
    def add(self, slot: int, sm_ids: IntArray, counts: IntArray) -> None:
        self.counts[slot][sm_ids] += counts
        if self._fits:
            self._stale = True
            return
        for r, units in self._slot_units[slot]:
            self.loads[r][sm_ids] += counts * units
        self._dirty[sm_ids] = True
        self._any_dirty = True

    def remove(self, slot: int, sm_ids: IntArray, counts: IntArray) -> None:
        self.counts[slot][sm_ids] -= counts
        if self._fits:
            self._stale = True
            return
        for r, units in self._slot_units[slot]:
            self.loads[r][sm_ids] -= counts * units
        self._dirty[sm_ids] = True
        self._any_dirty = True

    def settle(self) -> list[int]:
        """Recompute the SM rates on the SMs whose blocks changed since the last call;
        returns the slots whose rate changed on some SM where they have blocks."""
        if not self._any_dirty:
            return []
        self._any_dirty = False
        if self._fits:
            self._dirty[:] = False
            return []  # no mix of the running kernels can over-subscribe an SM
        over_now = self.loads > SHARE_UNITS
        oversubscribed = tuple(cast("list[bool]", over_now.any(axis=1).tolist()))
        any_now = any(oversubscribed)
        if not any_now and not self.any_oversubscribed:
            self._dirty[:] = False
            return []  # no SM is or was over-subscribed: every rate is and stays 1
        # Only changed SMs over-subscribed now or before can have (had) rates below 1.
        touched = self._dirty & (over_now | self.over).any(axis=0)
        self._dirty[:] = False
        self.over = over_now
        self.oversubscribed = oversubscribed
        self.any_oversubscribed = any_now
        self._check_fits()
        ids = np.flatnonzero(touched)
        if not len(ids):
            return []
        over = over_now[:, ids]
        counts = self.counts[self._rows[:, None], ids]
        sigma = np.ones((len(self._slots), len(ids)))
        # Water-fill each over-subscribed resource on every touched SM at once; a block's
        # SM rate is the smallest over its resources.
        for r, users in enumerate(self._users):
            if users and over[r].any():
                rows = [row for row, _ in users]
                rates = max_min_rates_columns(1.0, counts[rows], [d for _, d in users])
                sigma[rows] = np.minimum(sigma[rows], rates)
        sigma[counts == 0] = 1.0  # no blocks there: nothing to slow
        old = self.sigma[self._rows[:, None], ids]
        changed = ((sigma != old) & (counts > 0)).any(axis=1)
        self.sigma[self._rows[:, None], ids] = sigma
        return [slot for slot, c in zip(self._slots, changed.tolist(), strict=True) if c]

    def peak_load(self, factors: dict[int, float]) -> IntArray:
        """Largest delivered load on any SM, per resource (``factors``: DRAM factor per
        slot): every SM must stay within its capacity (the reference mode checks it)."""
        load = np.zeros((self.resources, self.count))
        for _, slot in self.active:
            rate = self.counts[slot] * self.sigma[slot] * factors.get(slot, 1.0)
            load += self.demand[slot][:, None] * rate[None, :]
        return load.max(axis=1)


class MemoryFlow(NamedTuple):
    """What one running kernel asks of DRAM (a tuple: cheap to build and to key a cache)."""

    #: Running blocks.
    blocks: int
    #: Unimpeded demand of one block (bandwidth-equivalent bytes/s).
    demand_per_block_Bps: float
    #: Demand of all its blocks at their SM rates.
    asked_Bps: float
    #: Bytes its resident blocks keep in flight.
    in_flight_B: float


@dataclass(frozen=True)
class MemoryAllocation:
    """:meth:`Dram.share`'s answer."""

    #: Rate factor of each flow's blocks (1: not slowed by DRAM).
    factors: tuple[float, ...]
    used_Bps: float
    #: Unimpeded demand above the bandwidth, and the bandwidth used up (without the
    #: parallelism bound the second follows from the first).
    saturated: bool
    #: Some kernel got less than it asked while the bandwidth was not used up: held back by
    #: the memory-level parallelism of its resident warps.
    parallelism_bound: bool


class Dram:
    """DRAM bandwidth shared by the running kernels that use it (module docstring)."""

    #: Allocations remembered (a pure function of the flows: waves of a kernel repeat them).
    CACHE_SIZE = 4096

    def __init__(self, bandwidth_Bps: float, memory: MemorySystem | None) -> None:
        self.bandwidth_Bps = bandwidth_Bps
        #: The memory-parallelism bound; ``None``: bandwidth shared max-min fairly only.
        self.memory = memory
        self._cache: dict[tuple[MemoryFlow, ...], MemoryAllocation] = {}

    def share(self, flows: Sequence[MemoryFlow]) -> MemoryAllocation:
        """Each flow's rate factor; flows in launch order (sums run in that order)."""
        key = tuple(flows)
        allocation = self._cache.get(key)
        if allocation is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            allocation = self._cache[key] = self._share(key)
        return allocation

    def _share(self, flows: Sequence[MemoryFlow]) -> MemoryAllocation:
        demand = 0.0
        for flow in flows:
            demand += flow.blocks * flow.demand_per_block_Bps
        saturated = demand > self.bandwidth_Bps
        if self.memory is None:
            factors = max_min_rates(self.bandwidth_Bps, [(f.blocks, f.demand_per_block_Bps)
                                                         for f in flows])
            used = min(demand, self.bandwidth_Bps)
            return MemoryAllocation(tuple(factors), used, saturated, False)
        grant = self.memory.share([f.asked_Bps for f in flows],
                                  [self.memory.unloaded_Bps(f.in_flight_B) for f in flows],
                                  [f.blocks for f in flows])
        factors = [1.0 if rate >= f.asked_Bps else rate / f.asked_Bps
                   for rate, f in zip(grant.rates_Bps, flows, strict=True)]
        # Held back either by the bandwidth (used up) or, short of it, by parallelism.
        used_up = grant.used_Bps >= self.bandwidth_Bps * (1 - 1e-9)
        return MemoryAllocation(tuple(factors), grant.used_Bps, saturated and used_up,
                                grant.limited and not used_up)
