"""Block execution: how fast running blocks progress, and when they end (docs/model.md §6.7).

A block has ``block_time_s`` of work: the time it takes when nothing slows it. It runs at
a *rate* (seconds of its work done per second) that two shared resources can lower:

* its **SM** (:class:`~sim.engine.resources.SMThroughput`): co-resident blocks share the SM's
  execution resources max-min fairly, so a block runs at its SM rate ``sigma <= 1`` where
  the blocks on its SM ask more than the SM has (``--sm-sharing on``, the default);
* **DRAM** (:class:`~sim.engine.resources.Dram`): a kernel's blocks ask
  ``dram_bytes / blocks / block_time_s`` each, at their SM rate; what the kernel gets,
  bounded by the memory-level parallelism of its resident blocks and the bandwidth, gives
  one DRAM factor ``g <= 1`` for all its blocks.

The block's rate is ``sigma x g``. SM rates are computed first from the blocks' unimpeded
demands and DRAM is then shared among the SM-limited demands; a block slowed by DRAM does
not hand the SM throughput it leaves unused to its neighbours (a simplification: a block
held back by DRAM is memory-bound and uses little of its SM's math).

Rates change only when blocks start or end. All changes at one instant are settled once, in
the dispatch pass (:meth:`Execution.settle`), after every completion and placement of the
instant. Progress is kept per :class:`~sim.engine.dispatch.BlockGroup` as work remaining at
the time of its last rate change; a group's completion is a timer at
``remaining / rate``, replaced (the old one goes stale) whenever the rate changes.

**Grouped vs exact.** A group is a set of blocks of one kernel that started together and
whose SMs have given them the same SM rate ever since, so they end together. When the SM
rates of its SMs come apart, the group splits by rate, each part carrying the same
remaining work. In exact mode every block is its own group. Both modes then do the same
float arithmetic at the same instants: a group's remaining work is updated only when its
rate changes, SM loads are summed from integer block counts in launch order, and a
kernel's DRAM demand from the integer number of its blocks at each SM rate, rates in
increasing order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import simpy
from simpy.events import URGENT, EventPriority

from gpu_models.kernel import SM_RESOURCES
from gpu_models.memory import MemorySystem
from gpu_models.occupancy import occupancy
from gpu_models.spec import GPUSpec
from sim.engine.dispatch import BlockGroup, KernelRun
from sim.engine.monitor import Monitor
from sim.engine.resources import Dram, MemoryFlow, SMThroughput


class Wakeup(simpy.Event):
    """A timeout with a chosen priority that calls ``callback(event)``; ``event.value`` is
    ``value``. (SimPy's Timeout always has NORMAL priority.)"""

    def __init__(self, env: simpy.Environment, delay_s: float, priority: EventPriority,
                 value: Any,
                 callback: Callable[[simpy.Event], None]) -> None:
        # Set up as SimPy's own Timeout is (no Event.__init__ call): one is made per rate
        # change, the most frequent object of a run.
        self.env = env
        self.callbacks = [callback]
        self._ok = True
        self._value = value
        env.schedule(self, priority, delay_s)


class Execution:
    """Rates and completions of the running blocks of one run.

    ``on_done(group, alone)`` is called when a group's work is complete; ``alone``: it is
    the only group its completion timer ends.
    """

    def __init__(self, env: simpy.Environment, spec: GPUSpec, *, sm_sharing: bool,
                 exact: bool, monitor: Monitor,
                 on_done: Callable[[BlockGroup, bool], None]) -> None:
        self.env = env
        self.spec = spec
        self.sm_sharing = sm_sharing
        self.exact = exact
        self.monitor = monitor
        self._on_done = on_done
        self.sm = SMThroughput(spec.sm_count)
        memory = MemorySystem.for_gpu(spec) if sm_sharing else None
        self.memory = memory
        self.dram = Dram(spec.dram_bw_Bps, memory)
        #: Running kernels that use DRAM, by launch sequence.
        self._memory_kernels: dict[int, KernelRun] = {}
        self._memory_dirty = False
        #: Kernels holding an SM-throughput slot, by slot.
        self._sm_kernels: dict[int, KernelRun] = {}
        #: Blocks per SM of each launch shape (occupancy), computed once.
        self._per_sm: dict[tuple[int, int, int], int] = {}
        #: Groups started at this instant, waiting for their rate.
        self._pending: list[BlockGroup] = []
        #: Largest delivered load on any SM per resource (exact mode: the reference checks).
        self.peak_sm_load = np.zeros(len(SM_RESOURCES))

    # ------------------------------------------------------------------ kernels
    def prepare(self, kernel: KernelRun) -> None:
        """Per-kernel constants, once, when its first blocks start."""
        launch = kernel.launch
        if self.sm_sharing and launch.sm_throughput:
            shape = (launch.threads, launch.regs_per_thread, launch.smem_per_block_B)
            per_sm = self._per_sm.get(shape)
            if per_sm is None:
                per_sm = self._per_sm[shape] = occupancy(self.spec, *shape).blocks_per_sm
            kernel.slot = self.sm.acquire(kernel.seq, [launch.sm_throughput.get(r, 0.0)
                                                       for r in SM_RESOURCES], per_sm)
            self._sm_kernels[kernel.slot] = kernel
        if self.memory is not None:
            kernel.in_flight_per_block_B = self.memory.block_in_flight_B(
                kernel.fp.warps, launch.bytes_in_flight_B)

    def kernel_done(self, kernel: KernelRun) -> None:
        """``kernel`` completed: it gives its SM-throughput slot back."""
        if kernel.slot >= 0:
            del self._sm_kernels[kernel.slot]
            self.sm.release(kernel.slot)
            kernel.slot = -1

    # ------------------------------------------------------------------ groups
    def start(self, group: BlockGroup) -> None:
        """``group`` starts now; it gets its rate when the instant is settled, or at once
        when nothing can slow it."""
        kernel = group.kernel
        kernel.groups[id(group)] = group
        _count(kernel, group.sm_rate, group.blocks)
        if kernel.slot >= 0:
            self.sm.add(kernel.slot, group.sm_ids, group.counts)
        if kernel.demand_Bps > 0:
            self._memory_kernels[kernel.seq] = kernel
            self._memory_dirty = True
        if kernel.slot < 0 and kernel.demand_Bps == 0:
            self._set_rate(group, 1.0)  # pure latency or compute-only and never shared
        else:
            self._pending.append(group)

    def finish(self, group: BlockGroup) -> None:
        """``group`` has ended: its blocks leave the SM and DRAM shares."""
        kernel = group.kernel
        del kernel.groups[id(group)]
        _count(kernel, group.sm_rate, -group.blocks)
        if kernel.slot >= 0:
            self.sm.remove(kernel.slot, group.sm_ids, group.counts)
        if kernel.demand_Bps > 0:
            self._memory_dirty = True
            if not kernel.groups:
                del self._memory_kernels[kernel.seq]

    def replay_sm_rate(self, group: BlockGroup) -> float | None:
        """The SM rate new blocks on ``group``'s SMs would start at, if it is the group's
        (a replay, :mod:`sim.engine.engine`); ``None`` if their SMs' rates came apart."""
        kernel = group.kernel
        sm_rate = 1.0
        if kernel.slot >= 0 and self.sm.any_oversubscribed:
            sigma = self.sm.sigma[kernel.slot][group.sm_ids]
            sm_rate = float(sigma[0])
            if not (sigma == sm_rate).all():
                return None
        return sm_rate if sm_rate == group.sm_rate else None

    def replace(self, group: BlockGroup, sm_rate: float) -> None:
        """``group`` ended and as many new blocks of its kernel take its place on its SMs,
        nothing else having changed (a replay): every load, share and rate stays as it
        was, so the new blocks start at the old ones' rate (``sm_rate``, the kernel's DRAM
        factor) with the whole block time ahead, as the full pass would start them. The
        group object itself carries them (it moves to the end of its kernel's groups, where
        a new group would be)."""
        kernel = group.kernel
        now = self.env.now
        group.start_s = group.updated_s = now
        group.remaining_s = kernel.launch.block_time_s
        group.rate = 1.0
        group.sm_rate = sm_rate
        group.timer = None
        key = id(group)
        kernel.groups[key] = kernel.groups.pop(key)
        self._set_rate(group, 1.0 if kernel.slot < 0 and kernel.demand_Bps == 0
                       else sm_rate * kernel.dram_factor)

    def settle(self) -> None:
        """Recompute every rate the changes of this instant affect (module docstring)."""
        changed = self.sm.settle() if self.sm_sharing else []
        resplit = sorted((self._sm_kernels[slot] for slot in changed), key=lambda k: k.seq)
        # Running groups whose SMs' rate changed take it (splitting where SMs differ).
        for kernel in resplit:
            self._resplit(kernel)
            if kernel.demand_Bps > 0:
                self._memory_dirty = True
        # New groups take their SMs' rate.
        pending, self._pending = self._pending, []
        for group in pending:
            if group.kernel.slot >= 0:
                self._split_new(group)
        pending.extend(self._pending)
        self._pending = []
        if self._memory_dirty:
            self._memory_dirty = False
            self._share_dram()
        for group in pending:
            self._refresh(group)
        for kernel in resplit:
            for group in list(kernel.groups.values()):
                self._refresh(group)
        if self.sm_sharing and self.monitor.series:
            self._sample()

    # ------------------------------------------------------------------ splitting
    def _split_new(self, group: BlockGroup) -> None:
        """A new group takes the SM rate of its SMs; SMs at other rates, new groups."""
        if not self.sm.any_oversubscribed:
            return  # every SM rate is 1, the group's already
        sigma = self.sm.sigma[group.kernel.slot][group.sm_ids]
        for part in self._split(group, sigma):
            self._pending.append(part)

    def _resplit(self, kernel: KernelRun) -> None:
        """After SM rates changed: each running group of ``kernel`` takes its SMs' rate,
        splitting where they differ (new groups of this instant are left to
        :meth:`_split_new`)."""
        for group in list(kernel.groups.values()):
            if group.timer is None:
                continue
            sigma = self.sm.sigma[kernel.slot][group.sm_ids]
            if (sigma == group.sm_rate).all():
                continue
            self._split(group, sigma)

    def _split(self, group: BlockGroup, sigma: np.ndarray) -> list[BlockGroup]:
        """Give ``group`` the SM rate ``sigma[0]`` of its first SM and move the SMs at other
        rates into new groups, one per rate. The new groups carry its progress and share
        its timer until their own rate changes (then the same arithmetic as an exact-mode
        block of theirs follows)."""
        kernel = group.kernel
        first = float(sigma[0])
        keep = sigma == first
        parts = []
        _count(kernel, group.sm_rate, -group.blocks)
        if not keep.all():
            group.count_replays()  # before its SMs are dealt out to the parts
            for value in sorted(set(sigma[~keep].tolist())):
                mask = sigma == value
                part = BlockGroup(
                    kernel, group.sm_ids[mask], group.counts[mask], group.taken[mask],
                    int(group.counts[mask].sum()), group.start_s,
                    remaining_s=group.remaining_s, updated_s=group.updated_s, rate=group.rate,
                    sm_rate=float(value), timer=group.timer)
                if group.timer is not None:
                    cast(list[BlockGroup], group.timer.value).append(part)
                kernel.groups[id(part)] = part
                _count(kernel, part.sm_rate, part.blocks)
                self.monitor.groups += 1
                parts.append(part)
            group.sm_ids, group.counts, group.taken = (group.sm_ids[keep], group.counts[keep],
                                                       group.taken[keep])
            group.blocks = int(group.counts.sum())
        group.sm_rate = first
        _count(kernel, first, group.blocks)
        return parts

    # ------------------------------------------------------------------ DRAM
    def _share_dram(self) -> None:
        kernels = [self._memory_kernels[seq] for seq in sorted(self._memory_kernels)]
        flows = []
        for kernel in kernels:
            running = kernel.running
            flows.append(MemoryFlow(blocks=running, demand_per_block_Bps=kernel.demand_Bps,
                                    asked_Bps=kernel.demand_Bps * _blocks_at_rate(kernel),
                                    in_flight_B=running * kernel.in_flight_per_block_B))
        allocation = self.dram.share(flows)
        self.monitor.sample_dram(self.env.now, allocation)
        for kernel, factor in zip(kernels, allocation.factors, strict=True):
            if factor != kernel.dram_factor:
                kernel.dram_factor = factor
                for group in list(kernel.groups.values()):
                    self._refresh(group)

    # ------------------------------------------------------------------ progress
    def _refresh(self, group: BlockGroup) -> None:
        """Give ``group`` its current rate if it changed (or it has no timer yet)."""
        rate = group.sm_rate * group.kernel.dram_factor
        if group.timer is not None and rate == group.rate:
            return
        self._set_rate(group, rate)

    def _set_rate(self, group: BlockGroup, rate: float) -> None:
        now = self.env.now
        # Work done at the old rate since the last change (nothing for a new group).
        group.remaining_s = max(0.0, group.remaining_s - group.rate * (now - group.updated_s))
        group.updated_s = now
        group.rate = rate
        group.timer = Wakeup(self.env, group.remaining_s / rate, URGENT, [group],
                             self._on_timer)

    def _on_timer(self, event: simpy.Event) -> None:
        self.monitor.events += 1
        groups = cast("list[BlockGroup]", event.value)  # a string: no alias built per call
        alone = len(groups) == 1
        for group in groups:
            if group.timer is event:  # else its rate changed since this timer was set
                self._on_done(group, alone)

    # ------------------------------------------------------------------ monitoring
    def _sample(self) -> None:
        """SM throughput in use and over-subscription, after the instant is settled."""
        delivered = [0.0] * len(SM_RESOURCES)
        kernels = self._sm_kernels
        for slot, shares in self.sm.per_slot_shares.items():
            kernel = kernels[slot]
            used = _blocks_at_rate(kernel) * kernel.dram_factor
            for r, share in shares:
                delivered[r] += share * used
        count = self.sm.count
        self.monitor.sample_sm_throughput(self.env.now, [d / count for d in delivered],
                                          self.sm.oversubscribed)
        if self.exact:
            factors = {slot: k.dram_factor for slot, k in self._sm_kernels.items()}
            np.maximum(self.peak_sm_load, self.sm.peak_load(factors), out=self.peak_sm_load)


def _count(kernel: KernelRun, sm_rate: float, blocks: int) -> None:
    """``blocks`` more (or, negative, fewer) running blocks of ``kernel`` at ``sm_rate``."""
    left = kernel.blocks_at_rate.get(sm_rate, 0) + blocks
    if left:
        kernel.blocks_at_rate[sm_rate] = left
    else:
        del kernel.blocks_at_rate[sm_rate]


def _blocks_at_rate(kernel: KernelRun) -> float:
    """Running blocks of ``kernel`` weighted by their SM rate, summed by rate in increasing
    order from integer counts (the same float whatever the grouping)."""
    counts = kernel.blocks_at_rate
    if len(counts) == 1:
        for sigma, blocks in counts.items():
            return blocks * sigma
    total = 0.0
    for sigma in sorted(counts):
        total += counts[sigma] * sigma
    return total
