"""The engine: a SimPy model of a GPU running a :class:`~sim.engine.program.Program`.

Pieces (docs/model.md §6), each a small class that owns its state:

* **Host** (:meth:`Engine._host`, a SimPy process) walks the launches in program order.
  Before a launch, each distinct cross-stream wait edge (an ``after`` kernel of *another*
  stream; a kernel named twice is one edge) costs ``event_overhead_s`` of host time: the
  ``cudaStreamWaitEvent``. The ``cudaEventRecord`` after the awaited kernel is not charged
  on its own: it is issued once per producer however many kernels await it, and its cost is
  folded into ``event_overhead_s`` (so a producer awaited by ``k`` streams costs ``k``
  waits, not ``k`` waits and ``k`` records). ``after`` within one stream costs nothing, the
  stream's FIFO order already implies it. Then the launch call costs ``launch_overhead_s``
  and the kernel becomes visible to the GPU when the call ends. The host never
  synchronizes.
* **Streams and hardware queues** (:class:`HardwareQueue`): stream ``i`` (in declaration
  order) feeds queue ``i % connections``; a queue is FIFO in launch order. Its head kernel is
  handed to the dispatcher once its stream predecessor and its ``after`` kernels have
  *completed* and fewer than ``max_resident_grids`` kernels are handed and not complete.
  A head that waits blocks the kernels behind it, even of other streams (false
  dependency). The ``false_dependency_s`` counter runs while some queue's head waits and a
  kernel of another stream behind it has all its own dependencies met, i.e. while another
  connection would let that kernel go now.
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
* **SMs and DRAM**: :class:`~sim.engine.resources.SMArray` and :class:`~sim.engine.resources.Dram`.

Same-instant ordering: block completions are URGENT events, host steps NORMAL, and the
dispatch pass a single LATE event per instant, so every completion and launch at an instant
is seen before blocks are handed out. That is what makes the two modes agree:

* ``grouped``: the blocks of a kernel placed by one dispatch pass start together and, since
  a block's duration depends only on its kernel and its kernel's DRAM rate, end together:
  one completion event (or one DRAM heap entry) for the whole group, placed in bulk.
* ``exact``: the reference. Blocks are placed one at a time by the placement's per-block rule
  (registers warp by warp) and each block has its own completion event.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import simpy
from simpy.events import NORMAL, URGENT, EventPriority

from gpu_models.errors import GpusimError
from gpu_models.occupancy import BlockFootprint, block_footprint
from sim.engine.placement import BlockPlacement, PlacementFactory, make_placement
from sim.engine.program import Launch, Program
from sim.engine.resources import Dram, IntArray, SMArray
from sim.engine.result import (
    BlockRecord,
    Counters,
    KernelRecord,
    SimResult,
    SMOccupancy,
    StepSeries,
)

#: Priority of the dispatch pass: after every completion (URGENT) and host step (NORMAL)
#: at the same instant.
LATE = EventPriority(NORMAL + 1)
MODES: tuple[str, ...] = ("grouped", "exact")
#: A progress callback: ``(blocks started so far, blocks in the program)``.
Progress = Callable[[int, int], None]
#: How often :meth:`Engine.run` reports progress, in simulation events (cheap next to them).
PROGRESS_EVERY_EVENTS = 4096


class DeadlockError(GpusimError):
    """The program cannot progress; the message lists each waiting kernel."""


class _Wakeup(simpy.Event):
    """A timeout with a chosen priority that calls ``callback(event)``; ``event.value`` is
    ``value``. (SimPy's Timeout always has NORMAL priority.)"""

    def __init__(self, env: simpy.Environment, delay_s: float, priority: EventPriority,
                 value: Any,
                 callback: Callable[[simpy.Event], None]) -> None:
        super().__init__(env)
        self._ok = True
        self._value = value
        self.callbacks.append(callback)
        env.schedule(self, priority, delay_s)


@dataclass(eq=False)
class _Kernel:
    """Run-time state of one launch."""

    launch: Launch
    seq: int
    priority: int
    fp: BlockFootprint
    demand_Bps: float
    queue: HardwareQueue
    sm_blocks: IntArray
    #: Boolean mask of the SMs the kernel's stream may use; ``None``: every SM.
    allowed: IntArray | None = None
    stream_pred: _Kernel | None = None
    after: list[_Kernel] = field(default_factory=list)
    to_dispatch: int = 0
    running: int = 0
    done: bool = False
    launch_begin_s: float = float("nan")
    launch_s: float = float("nan")
    ready_s: float = float("nan")
    start_s: float = float("nan")
    end_s: float = float("nan")

    def unmet(self) -> list[_Kernel]:
        """Kernels this one still waits for (stream predecessor first)."""
        deps = [self.stream_pred] if self.stream_pred is not None else []
        deps.extend(self.after)
        return [k for k in deps if not k.done]


@dataclass(eq=False)
class _Group:
    """Blocks of one kernel that started together on ``sm_ids`` and end together."""

    kernel: _Kernel
    sm_ids: IntArray
    counts: IntArray
    #: Resources taken per SM (rows of :attr:`SMArray.free`), given back at the end.
    taken: IntArray
    blocks: int
    start_s: float


class HardwareQueue:
    """One hardware work queue: kernels of its streams in launch order."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pending: deque[_Kernel] = deque()
        #: Pending kernels per stream, in launch order (a stream's first one is the only one
        #: whose stream predecessor may be complete).
        self._per_stream: dict[str, deque[_Kernel]] = {}

    def push(self, kernel: _Kernel) -> None:
        self.pending.append(kernel)
        stream = self._per_stream.get(kernel.launch.stream)
        if stream is None:
            stream = self._per_stream[kernel.launch.stream] = deque()
        stream.append(kernel)

    def pop(self) -> _Kernel:
        kernel = self.pending.popleft()
        stream = self._per_stream[kernel.launch.stream]
        stream.popleft()
        if not stream:
            del self._per_stream[kernel.launch.stream]
        return kernel

    def head(self) -> _Kernel | None:
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
        if not head.unmet():
            return False
        head_stream = head.launch.stream
        return any(stream != head_stream and not kernels[0].unmet()
                   for stream, kernels in self._per_stream.items())


class Dispatcher:
    """Hands blocks of ready kernels to SMs: priority first, then the leftover policy."""

    def __init__(self, sms: SMArray, placement: BlockPlacement, exact: bool,
                 start: Callable[[_Kernel, IntArray, IntArray, IntArray], None],
                 partitioned: bool = False) -> None:
        self.sms = sms
        self.placement = placement
        self.exact = exact
        self._start = start
        #: Some stream is confined to an SM partition (else the plain, faster pass runs).
        self.partitioned = partitioned
        self._ready: list[tuple[int, float, int, _Kernel]] = []

    def add(self, kernel: _Kernel, now_s: float) -> None:
        bisect.insort(self._ready, (kernel.priority, now_s, kernel.seq, kernel))

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
                    return self.sms.blocking_resource(limits)
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

    def _place_bulk(self, kernel: _Kernel, usable: IntArray | None = None) -> IntArray:
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

    def _place_one_by_one(self, kernel: _Kernel, usable: IntArray | None = None) -> None:
        one = np.ones(1, dtype=np.int64)
        while kernel.to_dispatch:
            sm = self.placement.choose(kernel.fp, self.sms, usable)
            if sm is None:
                return
            taken = self.sms.allocate_one(kernel.fp, sm)
            self._start(kernel, np.array([sm], dtype=np.int64), one, taken)


class _Stopwatch:
    """Accumulates how long each labelled condition held."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._label: str | None = None
        self._since_s = 0.0

    def set(self, now_s: float, label: str | None) -> None:
        if label == self._label:
            return
        if self._label is not None:
            self.totals[self._label] = self.totals.get(self._label, 0.0) + now_s - self._since_s
        self._label = label
        self._since_s = now_s


class Engine:
    """One simulation run of ``program``; call :meth:`run` once."""

    def __init__(self, program: Program, *, mode: str = "grouped",
                 placement: str | PlacementFactory = "most-free",
                 record_blocks: bool = False) -> None:
        if mode not in MODES:
            raise GpusimError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        self.program = program
        self.mode = mode
        self.placement = make_placement(placement)
        self.record_blocks = record_blocks or mode == "exact"
        spec = program.gpu
        self.env = simpy.Environment(initial_time=0.0)
        self.sms = SMArray(spec)
        self.dram = Dram(spec.dram_bw_Bps)
        self.dispatcher = Dispatcher(
            self.sms, self.placement, mode == "exact", self._start,
            partitioned=any(s.sms is not None and len(s.sms) < spec.sm_count
                            for s in program.streams))
        self.queues = [HardwareQueue(i) for i in range(spec.connections)]
        self.kernels = self._build_kernels()
        self.resident = 0
        self.completed = 0
        self.running_blocks = 0
        self.host_done = False
        self._dispatch_pending = False
        # Set when a queue or a dependency changed (push, hand-over, completion): only then
        # can the false-dependency and resident-limit clocks change.
        self._queues_changed = True
        # Set when blocks start or end: only then can busy SMs and occupancy change.
        self._sms_changed = False
        self._memory_dirty = False
        self._memory_generation = 0
        self.events = 0
        self.passes = 0
        self.groups = 0
        self.blocks_started = 0
        self.block_records: list[tuple[float, int, int, float, str]] = []
        self.blocked = _Stopwatch()
        self.launch_bound = _Stopwatch()
        self.false_dependency = _Stopwatch()
        self.resident_limit = _Stopwatch()
        self.busy_sms: list[tuple[float, float]] = [(0.0, 0.0)]
        # Resident warps per SM as a change log: (row, SM ids, warps), rows at these times.
        self.occupancy_times: list[float] = [0.0]
        self._last_warps = self.sms.resident_warps()
        self.occupancy_changes: list[tuple[int, IntArray, IntArray]] = [
            (0, np.arange(spec.sm_count), self._last_warps)]

    def _build_kernels(self) -> list[_Kernel]:
        spec = self.program.gpu
        stream_index = {s.name: i for i, s in enumerate(self.program.streams)}
        priority = {s.name: s.priority for s in self.program.streams}
        allowed: dict[str, IntArray | None] = {}
        for stream in self.program.streams:
            mask = None
            if stream.sms is not None and len(stream.sms) < spec.sm_count:
                mask = np.zeros(spec.sm_count, dtype=bool)
                mask[list(stream.sms)] = True
            allowed[stream.name] = mask
        by_name: dict[str, _Kernel] = {}
        last: dict[str, _Kernel] = {}
        kernels = []
        for seq, launch in enumerate(self.program.kernels):
            kernel = _Kernel(
                launch=launch, seq=seq, priority=priority[launch.stream],
                fp=block_footprint(spec, launch.threads, launch.regs_per_thread,
                                   launch.smem_per_block_B),
                demand_Bps=launch.dram_demand_Bps,
                queue=self.queues[stream_index[launch.stream] % spec.connections],
                sm_blocks=np.zeros(spec.sm_count, dtype=np.int64),
                allowed=allowed[launch.stream], stream_pred=last.get(launch.stream),
                to_dispatch=launch.blocks,
            )
            by_name[launch.name] = kernel
            last[launch.stream] = kernel
            kernels.append(kernel)
        for kernel in kernels:
            kernel.after = [by_name[name] for name in kernel.launch.after]
        return kernels

    # ------------------------------------------------------------------ run
    def run(self, progress: Progress | None = None) -> SimResult:
        """Simulate to the end; raises :class:`DeadlockError` if kernels are left waiting.

        ``progress(blocks_started, blocks_total)`` is called every
        :data:`PROGRESS_EVERY_EVENTS` simulation events (for a progress bar on long runs).
        """
        wall = time.perf_counter()
        self.env.process(self._host())
        self._request_dispatch()  # a first pass at t=0 starts the "what binds" clocks
        if progress is None:
            self.env.run()
        else:
            total = sum(k.launch.blocks for k in self.kernels)
            try:
                while True:
                    for _ in range(PROGRESS_EVERY_EVENTS):
                        self.env.step()
                    progress(self.blocks_started, total)
            except simpy.core.EmptySchedule:
                progress(self.blocks_started, total)
        wall_s = time.perf_counter() - wall
        if self.completed < len(self.kernels):
            raise DeadlockError(self._deadlock_message())
        return self._result(wall_s)

    def _host(self) -> Generator[simpy.Event, Any, None]:
        launch_s = self.program.launch_overhead
        event_s = self.program.event_overhead
        for kernel in self.kernels:
            # Distinct cross-stream wait edges (one cudaStreamWaitEvent each).
            waits = len({k.seq for k in kernel.after if k.launch.stream != kernel.launch.stream})
            if waits and event_s > 0:
                yield self.env.timeout(waits * event_s)
                self.events += 1
            kernel.launch_begin_s = self.env.now
            if launch_s > 0:
                yield self.env.timeout(launch_s)
                self.events += 1
            kernel.launch_s = self.env.now
            queue = kernel.queue
            queue.push(kernel)
            self._queues_changed = True
            # A pass is needed only if blocks may go out or a "what binds" clock may change:
            # the kernel was handed over, waits only on the resident-grid limit, or now
            # sits behind a head of another stream that waits.
            if (self._advance_queues() or (queue.head() is kernel and not kernel.unmet())
                    or queue.falsely_blocked()):
                self._request_dispatch()
        self.host_done = True
        self._request_dispatch()

    # ------------------------------------------------------------------ queues
    def _advance_queues(self) -> bool:
        """Hand ready queue heads to the dispatcher, oldest launch first; True if any."""
        limit = self.program.gpu.max_resident_grids
        handed = False
        while self.resident < limit:
            best: _Kernel | None = None
            for queue in self.queues:
                head = queue.head()
                if head is not None and not head.unmet() and (best is None
                                                              or head.seq < best.seq):
                    best = head
            if best is None:
                break
            best.queue.pop()
            self._queues_changed = True
            self.resident += 1
            best.ready_s = self.env.now
            self.dispatcher.add(best, self.env.now)
            handed = True
        return handed

    # ------------------------------------------------------------------ blocks
    def _start(self, kernel: _Kernel, sm_ids: IntArray, counts: IntArray,
               taken: IntArray) -> None:
        now = self.env.now
        blocks = int(counts.sum())
        if kernel.to_dispatch == kernel.launch.blocks:
            kernel.start_s = now
        kernel.to_dispatch -= blocks
        kernel.running += blocks
        kernel.sm_blocks[sm_ids] += counts
        self.running_blocks += blocks
        self.blocks_started += blocks
        self.groups += 1
        self._sms_changed = True
        group = _Group(kernel, sm_ids, counts, taken, blocks, now)
        if kernel.demand_Bps > 0:
            self.dram.start(now, kernel.seq, blocks, kernel.demand_Bps,
                            kernel.launch.block_time_s, group)
            self._memory_dirty = True
        else:
            _Wakeup(self.env, kernel.launch.block_time_s, URGENT, group, self._on_compute_done)

    def _on_compute_done(self, event: simpy.Event) -> None:
        self.events += 1
        self._finish(cast(_Group, event.value))

    def _arm_memory_timer(self) -> None:
        """(Re)schedule the next DRAM-bound completion; older timers become stale."""
        self._memory_generation += 1
        delay = self.dram.next_finish_delay_s()
        if delay is not None:
            _Wakeup(self.env, delay, URGENT, self._memory_generation, self._on_memory_timer)

    def _on_memory_timer(self, event: simpy.Event) -> None:
        self.events += 1
        if event.value != self._memory_generation:
            return  # the rate changed since this timer was set
        group = cast(_Group, self.dram.pop_finished(self.env.now))
        self.dram.finish(self.env.now, group.kernel.seq, group.blocks)
        self._finish(group)
        self._arm_memory_timer()

    def _finish(self, group: _Group) -> None:
        kernel = group.kernel
        now = self.env.now
        self.sms.release(group.sm_ids, group.taken)
        self._sms_changed = True
        kernel.running -= group.blocks
        self.running_blocks -= group.blocks
        if self.record_blocks:
            for sm, count in zip(group.sm_ids.tolist(), group.counts.tolist(), strict=True):
                record = (group.start_s, kernel.seq, sm, now, kernel.launch.name)
                self.block_records.extend([record] * count)
        if not kernel.to_dispatch and not kernel.running:
            kernel.done = True
            self._queues_changed = True
            kernel.end_s = now
            self.resident -= 1
            self.completed += 1
            self._advance_queues()
        self._request_dispatch()

    # ------------------------------------------------------------------ dispatch
    def _request_dispatch(self) -> None:
        if not self._dispatch_pending:
            self._dispatch_pending = True
            _Wakeup(self.env, 0, LATE, None, self._dispatch)

    def _dispatch(self, event: simpy.Event) -> None:
        self.events += 1
        self.passes += 1
        self._dispatch_pending = False
        now = self.env.now
        blocked = self.dispatcher.run_pass()
        if self._memory_dirty:
            self._memory_dirty = False
            self._arm_memory_timer()
        # Everything at this instant is settled: sample the state and the "what binds" clocks.
        self.blocked.set(now, blocked)
        self.launch_bound.set(now, "on" if not self.running_blocks and not self.host_done
                              else None)
        if self._queues_changed:
            self._queues_changed = False
            self.false_dependency.set(now, "on" if any(q.falsely_blocked() for q in self.queues)
                                      else None)
            at_limit = self.resident >= self.program.gpu.max_resident_grids and any(
                (h := q.head()) is not None and not h.unmet() for q in self.queues)
            self.resident_limit.set(now, "on" if at_limit else None)
        if self._sms_changed:
            self._sms_changed = False
            _append_step(self.busy_sms, now, float(self.sms.busy_count()))
            warps = self.sms.resident_warps()
            changed = (warps != self._last_warps).nonzero()[0]
            if len(changed):
                if self.occupancy_times[-1] != now:
                    self.occupancy_times.append(now)
                row = len(self.occupancy_times) - 1
                self.occupancy_changes.append((row, changed, warps[changed]))
                self._last_warps = warps

    # ------------------------------------------------------------------ output
    def _deadlock_message(self) -> str:
        lines = []
        for kernel in self.kernels:
            if kernel.done:
                continue
            name = repr(kernel.launch.name)
            head = kernel.queue.head()
            if head is kernel:
                waits = ", ".join(repr(k.launch.name) for k in kernel.unmet())
                lines.append(f"{name} (head of hardware queue {kernel.queue.index}) waits for "
                             f"{waits}")
            elif kernel in kernel.queue.pending and head is not None:
                lines.append(f"{name} is queued behind {head.launch.name!r} in hardware queue "
                             f"{kernel.queue.index}")
            else:
                lines.append(f"{name} never completed")
        return ("deadlock: the program cannot progress; waiting kernels: " + "; ".join(lines)
                + " (a kernel waits on one queued behind it in the same hardware queue: "
                "reorder the launches or use more connections)")

    def _result(self, wall_s: float) -> SimResult:
        end = max((k.end_s for k in self.kernels), default=0.0)
        self.dram.advance(end)
        for watch in (self.blocked, self.launch_bound, self.false_dependency,
                      self.resident_limit):
            watch.set(end, None)
        records = tuple(
            KernelRecord(
                name=k.launch.name, stream=k.launch.stream, seq=k.seq,
                launch_begin_s=k.launch_begin_s, launch_s=k.launch_s, ready_s=k.ready_s,
                start_s=k.start_s, end_s=k.end_s, blocks=k.launch.blocks,
                sm_blocks=tuple(k.sm_blocks.tolist()), kind=k.launch.kind,
                layer=k.launch.layer,
            )
            for k in self.kernels
        )
        blocks = None
        if self.record_blocks:
            blocks = tuple(BlockRecord(kernel=name, sm=sm, start_s=start, end_s=stop)
                           for start, _, sm, stop, name in sorted(self.block_records))
        counters = Counters(
            events=self.events, blocks=self.blocks_started, groups=self.groups,
            dispatch_passes=self.passes, wall_s=wall_s,
            blocked_s=dict(sorted(self.blocked.totals.items())),
            launch_bound_s=self.launch_bound.totals.get("on", 0.0),
            false_dependency_s=self.false_dependency.totals.get("on", 0.0),
            resident_limit_s=self.resident_limit.totals.get("on", 0.0),
            dram_saturated_s=self.dram.saturated_s,
        )
        return SimResult(
            program=self.program, mode=self.mode, placement=self.placement.name, makespan_s=end,
            kernels=records, busy_sms=_series(self.busy_sms),
            dram_Bps=_series(self.dram.used_Bps),
            sm_occupancy=SMOccupancy(
                times_s=np.array(self.occupancy_times), sm_count=self.program.gpu.sm_count,
                change_rows=np.concatenate([np.full(len(ids), row) for row, ids, _ in
                                            self.occupancy_changes]),
                change_sms=np.concatenate([ids for _, ids, _ in self.occupancy_changes]),
                change_warps=np.concatenate([w for _, _, w in self.occupancy_changes]),
            ),
            counters=counters, blocks=blocks,
        )


def _append_step(steps: list[tuple[float, float]], now_s: float, value: float) -> None:
    if steps[-1][0] == now_s:
        steps[-1] = (now_s, value)
    elif steps[-1][1] != value:
        steps.append((now_s, value))


def _series(steps: list[tuple[float, float]]) -> StepSeries:
    return StepSeries(times_s=tuple(t for t, _ in steps), values=tuple(v for _, v in steps))


def simulate(program: Program, *, mode: str = "grouped",
             placement: str | PlacementFactory = "most-free",
             record_blocks: bool = False, progress: Progress | None = None) -> SimResult:
    """Run ``program`` and return its :class:`~sim.engine.result.SimResult`.

    ``mode``: ``"grouped"`` (fast) or ``"exact"`` (per-block reference). ``placement``: a
    name in :data:`sim.engine.placement.PLACEMENTS` or a factory such as ``RoundRobin``.
    ``record_blocks``: keep per-block records in grouped mode too (exact mode always does).
    ``progress``: see :meth:`Engine.run`.
    """
    return Engine(program, mode=mode, placement=placement,
                  record_blocks=record_blocks).run(progress)
