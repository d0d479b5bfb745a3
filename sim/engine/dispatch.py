"""Hardware work queues and the block dispatcher (docs/model.md §6.3-§6.5).

* **Streams and hardware queues** (:class:`HardwareQueue`): stream ``i`` (in declaration
  order) feeds queue ``i % connections``; a queue is FIFO in launch order. Its head kernel is
  handed to the dispatcher once its stream predecessor and its ``after`` kernels have
  *completed* and fewer than ``max_resident_grids`` kernels are handed and not complete.
  A head that waits blocks the kernels behind it, even of other streams (false
  dependency): :meth:`HardwareQueue.falsely_blocked` says when another connection would
  let a kernel behind it go now.
* **Block dispatcher** (:class:`Dispatcher`): handed kernels are served in (stream priority,
  time handed, launch order) order. Only the first kernel with blocks left gets blocks;
  the next one gets any only after the first has dispatched *all* its blocks (leftover
  policy). A higher-priority kernel handed later goes first for the remaining assignments;
  running blocks are never preempted. Which SM gets each block is a
  :class:`~sim.engine.placement.BlockPlacement`.
* **SM partitions** (``StreamDef.sms``, as CUDA green contexts or MPS SM shares give): a
  stream's kernels may only use its SMs; the placement sees zero capacity elsewhere. The
  leftover rule then holds per SM: a kernel with blocks left keeps *its* SMs from younger
  (or lower-priority) kernels, and those may still use the SMs outside it, so kernels of
  disjoint partitions run side by side. Without partitions this is the rule above (the
  first kernel with blocks left keeps every SM). All SMs are alike, so a block that fits
  an SM fits every SM of a (non-empty, validated) partition: a partition never deadlocks.

The dispatcher only decides where blocks go; it hands every placement to a ``start``
callback (the engine), which runs the blocks.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import simpy

from gpu_models.occupancy import BlockFootprint
from sim.engine.placement import BlockPlacement
from sim.engine.program import Launch
from sim.engine.resources import IntArray, SMArray


@dataclass(eq=False, slots=True)
class KernelRun:
    """Run-time state of one launch."""

    launch: Launch
    seq: int
    priority: int
    fp: BlockFootprint
    demand_Bps: float
    queue: HardwareQueue
    #: Blocks started on each SM: an array while the kernel runs (from its first blocks),
    #: then, once it completes, a tuple shared by kernels that ran alike (a program of
    #: 100,000 kernels keeps one small tuple per distinct spread, not 100,000 arrays).
    sm_blocks: IntArray | tuple[int, ...] | None = None
    #: Boolean mask of the SMs the kernel's stream may use; ``None``: every SM.
    allowed: IntArray | None = None
    stream_pred: KernelRun | None = None
    after: list[KernelRun] = field(default_factory=list)
    to_dispatch: int = 0
    running: int = 0
    done: bool = False
    #: Kernels this one waits for that have not completed (:meth:`wire`, :meth:`completed`):
    #: asked of queue heads on every pass where a queue changed, so a count, not a scan.
    waiting_on: int = 0
    #: Kernels that wait for this one.
    dependents: list[KernelRun] = field(default_factory=list)
    launch_begin_s: float = float("nan")
    launch_s: float = float("nan")
    ready_s: float = float("nan")
    start_s: float = float("nan")
    end_s: float = float("nan")
    #: Running groups (insertion order), by ``id``.
    groups: dict[int, BlockGroup] = field(default_factory=dict)
    #: Running blocks per SM rate (integers: the same whatever the grouping).
    blocks_at_rate: dict[float, int] = field(default_factory=dict)
    #: Row in :class:`~sim.engine.resources.SMThroughput` (-1: its blocks use no SM resource
    #: or SM sharing is off).
    slot: int = -1
    #: Rate factor DRAM gives the kernel's blocks (1: not slowed by DRAM).
    dram_factor: float = 1.0
    #: Bytes one resident block keeps in flight to DRAM.
    in_flight_per_block_B: float = 0.0

    def wire(self) -> None:
        """Count the kernels this one waits for and tell each of them (once, when the
        program's kernels are built): :attr:`waiting_on` is then kept as they complete."""
        deps = {id(k): k for k in ([self.stream_pred] if self.stream_pred else []) + self.after}
        self.waiting_on = sum(not k.done for k in deps.values())
        for k in deps.values():
            k.dependents.append(self)

    def completed(self) -> None:
        """This kernel completed: the kernels waiting for it wait for one fewer."""
        self.done = True
        for k in self.dependents:
            k.waiting_on -= 1

    def unmet(self) -> list[KernelRun]:
        """Kernels this one still waits for (stream predecessor first)."""
        deps = [self.stream_pred] if self.stream_pred is not None else []
        deps.extend(self.after)
        return [k for k in deps if not k.done]


@dataclass(eq=False, slots=True)
class BlockGroup:
    """Blocks of one kernel that started together on ``sm_ids`` and end together: their
    SMs have given them the same rate since they started (docs/model.md §6.9)."""

    kernel: KernelRun
    sm_ids: IntArray
    counts: IntArray
    #: Resources taken per SM (rows of :attr:`SMArray.free`), given back at the end.
    taken: IntArray
    blocks: int
    start_s: float
    #: Seconds of unimpeded work left at ``updated_s`` (the last rate change).
    remaining_s: float = 0.0
    updated_s: float = 0.0
    #: Progress per second: ``sm_rate x`` the kernel's DRAM factor.
    rate: float = 1.0
    #: The SM rate its SMs give it.
    sm_rate: float = 1.0
    #: The completion timer for the current rate (``None`` before the first).
    timer: simpy.Event | None = None
    #: Replays since its blocks were last counted into the kernel's blocks per SM
    #: (:meth:`count_replays`): counted once, when it ends or its SMs change, not per replay.
    replays: int = 0

    def count_replays(self) -> None:
        """Add the blocks of its uncounted replays (the same blocks per SM each time) to
        its kernel's blocks per SM."""
        if self.replays:
            cast(IntArray, self.kernel.sm_blocks)[self.sm_ids] += self.counts * self.replays
            self.replays = 0


class HardwareQueue:
    """One hardware work queue: kernels of its streams in launch order."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pending: deque[KernelRun] = deque()
        #: Pending kernels per stream, in launch order (a stream's first one is the only one
        #: whose stream predecessor may be complete).
        self._per_stream: dict[str, deque[KernelRun]] = {}

    def push(self, kernel: KernelRun) -> None:
        self.pending.append(kernel)
        stream = self._per_stream.get(kernel.launch.stream)
        if stream is None:
            stream = self._per_stream[kernel.launch.stream] = deque()
        stream.append(kernel)

    def pop(self) -> KernelRun:
        kernel = self.pending.popleft()
        stream = self._per_stream[kernel.launch.stream]
        stream.popleft()
        if not stream:
            del self._per_stream[kernel.launch.stream]
        return kernel

    def head(self) -> KernelRun | None:
        return self.pending[0] if self.pending else None

    def falsely_blocked(self) -> bool:
        """The head waits on a dependency while a kernel of another stream behind it has all
        of its own dependencies met (it could be handed over if it were at the head).

        Only the first pending kernel of each other stream can qualify: a later one waits
        for its stream predecessor, which is still queued.
        """
        if len(self._per_stream) < 2:
            return False
        head = self.pending[0]
        if not head.waiting_on:
            return False
        head_stream = head.launch.stream
        return any(stream != head_stream and not kernels[0].waiting_on
                   for stream, kernels in self._per_stream.items())


#: What the dispatcher calls for each placement: (kernel, SM ids, blocks per SM, taken rows).
StartBlocks = Callable[[KernelRun, IntArray, IntArray, IntArray], None]


class Dispatcher:
    """Hands blocks of ready kernels to SMs: priority first, then the leftover policy."""

    def __init__(self, sms: SMArray, placement: BlockPlacement, exact: bool,
                 start: StartBlocks, partitioned: bool = False,
                 report_blocking: bool = True) -> None:
        self.sms = sms
        self.placement = placement
        self.exact = exact
        self._start = start
        #: Some stream is confined to an SM partition (else the plain, faster pass runs).
        self.partitioned = partitioned
        #: Whether a pass says what blocks the head kernel (only the monitor asks).
        self.report_blocking = report_blocking
        self._ready: list[tuple[int, float, int, KernelRun]] = []

    def add(self, kernel: KernelRun, now_s: float) -> None:
        bisect.insort(self._ready, (kernel.priority, now_s, kernel.seq, kernel))

    def head(self) -> KernelRun | None:
        """The first ready kernel: the one that gets blocks next."""
        return self._ready[0][3] if self._ready else None

    def run_pass(self) -> str | None:
        """Place every block that may go now; returns the resource that blocks the head
        kernel if it still has blocks left, else ``None``."""
        if self.partitioned:
            return self._run_partitioned_pass()
        while self._ready:
            kernel = self._ready[0][3]
            if self.exact:
                self._place_one_by_one(kernel)
                if kernel.to_dispatch:
                    return self.sms.blocking_resource(self.sms.limits(kernel.fp))
            else:
                limits = self._place_bulk(kernel)
                if kernel.to_dispatch:
                    return self.sms.blocking_resource(limits) if self.report_blocking else None
            self._ready.pop(0)
        return None

    def _run_partitioned_pass(self) -> str | None:
        """:meth:`run_pass` with SM partitions: the leftover rule per SM. Kernels go in
        ready order; each may use the SMs of its partition that no kernel before it with
        blocks left holds; one left with blocks holds its partition from those after it."""
        held: IntArray | None = None  # SMs held by earlier kernels with blocks left
        head: str | None = None
        i = 0
        while i < len(self._ready):
            kernel = self._ready[i][3]
            usable = kernel.allowed
            if held is not None:
                usable = ~held if usable is None else usable & ~held
                if not usable.any():
                    i += 1
                    continue
            if self.exact:
                self._place_one_by_one(kernel, usable)
                limits = self.sms.limits(kernel.fp) if kernel.to_dispatch else None
            else:
                limits = self._place_bulk(kernel, usable)
            if not kernel.to_dispatch:
                self._ready.pop(i)
                continue
            if head is None:  # the first kernel with blocks left: nothing held before it
                assert limits is not None
                head = self.sms.blocking_resource(
                    limits if kernel.allowed is None else limits[:, kernel.allowed])
            if kernel.allowed is None:
                break  # it holds every SM
            held = kernel.allowed.copy() if held is None else held | kernel.allowed
            if held.all():
                break
            i += 1
        return head

    def _place_bulk(self, kernel: KernelRun, usable: IntArray | None = None) -> IntArray:
        """Place what fits of ``kernel`` (on the SMs ``usable`` marks, else any); returns
        the SMs' limits for it afterwards."""
        limits = self.sms.limits(kernel.fp)
        cap = limits.min(axis=0)
        if usable is not None:
            cap = np.where(usable, cap, 0)
        counts = self.placement.place_counts(cap, kernel.to_dispatch, kernel.fp, self.sms)
        ids = counts.nonzero()[0]
        if len(ids):
            placed = counts[ids]
            taken = self.sms.allocate(kernel.fp, ids, placed)
            self._start(kernel, ids, placed, taken)
        # Every per-resource limit drops by exactly the blocks placed (registers too: each
        # warp uses up one register slot), so no need to recompute them.
        limits -= counts
        return limits

    def _place_one_by_one(self, kernel: KernelRun, usable: IntArray | None = None) -> None:
        one = np.ones(1, dtype=np.int64)
        while kernel.to_dispatch:
            sm = self.placement.choose(kernel.fp, self.sms, usable)
            if sm is None:
                return
            taken = self.sms.allocate_one(kernel.fp, sm)
            self._start(kernel, np.array([sm], dtype=np.int64), one, taken)
