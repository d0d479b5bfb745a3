"""The engine: a SimPy model of a GPU running a :class:`~sim.engine.program.Program`.

It wires the pieces of docs/model.md §6, each a small class that owns its state:

* the **host** (:class:`~sim.engine.host.Host`, a SimPy process) issues the launches;
* **hardware queues** and the **block dispatcher** (:mod:`sim.engine.dispatch`) decide which
  kernel gets blocks and, through a :class:`~sim.engine.placement.BlockPlacement`, which SM;
* the **SMs** (:mod:`sim.engine.resources`) hold the resources blocks take;
* **block execution** (:mod:`sim.engine.execution`) runs the blocks at the rate their SM's
  shared throughput and DRAM (memory-level parallelism, bandwidth) allow, and ends them;
* the **monitor** (:mod:`sim.engine.monitor`) records counters, series and block records
  and assembles the :class:`~sim.engine.result.SimResult`.

The engine itself starts blocks when the dispatcher places them, gives their resources back
when they end, and completes kernels.

Same-instant ordering: block completions are URGENT events, host steps NORMAL, and the
dispatch pass a single LATE event per instant, so every completion and launch at an instant
is seen before blocks are handed out, and rates are settled once per instant after the
pass. That is what makes the two modes agree (docs/model.md §6.9):

* ``grouped``: the blocks of a kernel placed by one dispatch pass start together and, while
  their SMs give them the same rate, end together: one completion timer for the whole
  group, placed in bulk (a group splits where its SMs' rates come apart);
* ``exact``: the reference. Blocks are placed one at a time by the placement's per-block rule
  (registers warp by warp) and each block has its own completion timer.

**Replays** (grouped mode). Most instants of a many-wave kernel are one group of the head
kernel ending alone while the kernel still has more blocks than the group: its blocks would
leave, the dispatch pass would put as many new blocks on exactly those SMs (the head was
blocked everywhere, so the freed resources are the only room, and the kernel fills it), and
every rate, series and "what binds" clock would come back to where it was. The engine
defers such a group's release to the pass; if nothing else happened at the instant, the new
group simply takes the old one's place (:meth:`Execution.replay`), else the release is done
first, exactly as without the deferral. When no other event is due at the instant at all,
the replay is made at once, without the pass event. Results are bit-identical either way
(docs/model.md §6.9).

``sm_sharing=False`` runs the engine without SM throughput sharing and without the
memory-parallelism bound (blocks of other kernels never slow a block; DRAM is shared
max-min fairly up to the bandwidth only): the engine before issue 14, for teaching and
ablation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import numpy as np
import simpy
from simpy.events import NORMAL, EventPriority

from gpu_models.errors import GpusimError
from gpu_models.occupancy import BlockFootprint, block_footprint
from sim.engine.dispatch import BlockGroup, Dispatcher, HardwareQueue, KernelRun
from sim.engine.execution import Execution, Wakeup
from sim.engine.host import Host
from sim.engine.monitor import Monitor
from sim.engine.placement import BlockPlacement, PlacementFactory, make_placement
from sim.engine.program import Program
from sim.engine.resources import IntArray, SMArray
from sim.engine.result import SimResult

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


class Engine:
    """One simulation run of ``program``; call :meth:`run` once."""

    def __init__(self, program: Program, *, mode: str = "grouped",
                 placement: str | PlacementFactory = "most-free",
                 record_blocks: bool = False, sm_sharing: bool = True,
                 series: bool = True) -> None:
        if mode not in MODES:
            raise GpusimError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if not isinstance(sm_sharing, bool):
            raise GpusimError(f"sm_sharing must be True or False (got {sm_sharing!r})")
        self.program = program
        self.mode = mode
        self.sm_sharing = sm_sharing
        self.placement = make_placement(placement)
        spec = program.gpu
        self.env = simpy.Environment(initial_time=0.0)
        self.sms = SMArray(spec)
        # Series and "what binds" clocks (off: the makespan only, :func:`simulate_makespan`;
        # the exact mode is the reference and keeps them).
        self.series = series or mode == "exact"
        self.dispatcher = Dispatcher(
            self.sms, self.placement, mode == "exact", self._start,
            partitioned=any(s.sms is not None and len(s.sms) < spec.sm_count
                            for s in program.streams),
            report_blocking=self.series)
        self.queues = [HardwareQueue(i) for i in range(spec.connections)]
        self.kernels = self._build_kernels()
        self.host = Host(self.env, self.kernels, launch_overhead_s=program.launch_overhead,
                         event_overhead_s=program.event_overhead,
                         on_visible=self._on_visible, on_done=self._on_host_done)
        self.monitor = Monitor(self.sms, record_blocks=record_blocks or mode == "exact",
                               series=self.series)
        self.execution = Execution(self.env, spec, sm_sharing=sm_sharing,
                                   exact=mode == "exact", monitor=self.monitor,
                                   on_done=self._finish)
        self.resident = 0
        self.completed = 0
        self.running_blocks = 0
        self._dispatch_pending = False
        # Set when a queue or a dependency changed (push, hand-over, completion): only then
        # can the false-dependency and resident-limit clocks change.
        self._queues_changed = True
        # Set when blocks start or end: only then can busy SMs, occupancy and rates change.
        self._sms_changed = False
        # Replays (module docstring): possible in grouped mode with a bulk placement that
        # keeps no state, without SM partitions.
        self._replays = (mode == "grouped" and not self.dispatcher.partitioned
                         and type(self.placement).place_counts is BlockPlacement.place_counts)
        # Set by anything that happens between two dispatch passes.
        self._touched = True
        # A group whose release waits for the pass, where the same blocks may replace it.
        self._replay: BlockGroup | None = None
        # Blocks per SM of the completed kernels, each distinct spread kept once.
        self._spreads: dict[tuple[int, ...], tuple[int, ...]] = {}

    def _build_kernels(self) -> list[KernelRun]:
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
        by_name: dict[str, KernelRun] = {}
        last: dict[str, KernelRun] = {}
        kernels = []
        footprints: dict[tuple[int, int, int], BlockFootprint] = {}
        for seq, launch in enumerate(self.program.kernels):
            shape = (launch.threads, launch.regs_per_thread, launch.smem_per_block_B)
            fp = footprints.get(shape)
            if fp is None:
                fp = footprints[shape] = block_footprint(spec, *shape)
            kernel = KernelRun(
                launch=launch, seq=seq, priority=priority[launch.stream], fp=fp,
                demand_Bps=launch.dram_demand_Bps,
                queue=self.queues[stream_index[launch.stream] % spec.connections],
                allowed=allowed[launch.stream], stream_pred=last.get(launch.stream),
                to_dispatch=launch.blocks,
            )
            by_name[launch.name] = kernel
            last[launch.stream] = kernel
            kernels.append(kernel)
        for kernel in kernels:
            kernel.after = [by_name[name] for name in kernel.launch.after]
            kernel.wire()
        return kernels

    # ------------------------------------------------------------------ run
    def run(self, progress: Progress | None = None) -> SimResult:
        """Simulate to the end; raises :class:`DeadlockError` if kernels are left waiting.

        ``progress(blocks_started, blocks_total)`` is called every
        :data:`PROGRESS_EVERY_EVENTS` simulation events (for a progress bar on long runs).
        """
        wall = time.perf_counter()
        self._run_to_end(progress)
        wall_s = time.perf_counter() - wall
        return self.monitor.result(self.program, mode=self.mode, placement=self.placement.name,
                                   sm_sharing=self.sm_sharing, kernels=self.kernels,
                                   host_events=self.host.events, wall_s=wall_s)

    def run_makespan(self) -> float:
        """Simulate to the end and return only the makespan (no result is assembled):
        what a search needs of a candidate. The same as :meth:`run`'s ``makespan_s``."""
        self._run_to_end(None)
        return max((k.end_s for k in self.kernels), default=0.0)

    def _run_to_end(self, progress: Progress | None) -> None:
        self.host.start()
        self._request_dispatch()  # a first pass at t=0 starts the "what binds" clocks
        if progress is None:
            self.env.run()
        else:
            total = sum(k.launch.blocks for k in self.kernels)
            try:
                while True:
                    for _ in range(PROGRESS_EVERY_EVENTS):
                        self.env.step()
                    progress(self.monitor.blocks_started, total)
            except simpy.core.EmptySchedule:
                progress(self.monitor.blocks_started, total)
        if self.completed < len(self.kernels):
            raise DeadlockError(self._deadlock_message())

    def _on_visible(self, kernel: KernelRun) -> None:
        """The host's launch call of ``kernel`` ended: it joins its hardware queue."""
        self._touch()
        queue = kernel.queue
        queue.push(kernel)
        self._queues_changed = True
        # A pass is needed only if blocks may go out or a "what binds" clock may change:
        # the kernel was handed over, waits only on the resident-grid limit, or now
        # sits behind a head of another stream that waits.
        if (self._advance_queues() or (queue.head() is kernel and not kernel.waiting_on)
                or queue.falsely_blocked()):
            self._request_dispatch()

    # ------------------------------------------------------------------ queues
    def _advance_queues(self) -> bool:
        """Hand ready queue heads to the dispatcher, oldest launch first; True if any."""
        limit = self.program.gpu.max_resident_grids
        handed = False
        while self.resident < limit:
            best: KernelRun | None = None
            for queue in self.queues:
                head = queue.head()
                if head is not None and not head.waiting_on and (best is None
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
    def _start(self, kernel: KernelRun, sm_ids: IntArray, counts: IntArray,
               taken: IntArray) -> None:
        now = self.env.now
        blocks = int(counts.sum())
        if kernel.to_dispatch == kernel.launch.blocks:
            kernel.start_s = now
            kernel.sm_blocks = np.zeros(self.program.gpu.sm_count, dtype=np.int64)
            self.execution.prepare(kernel)
        kernel.to_dispatch -= blocks
        kernel.running += blocks
        cast(IntArray, kernel.sm_blocks)[sm_ids] += counts
        self.running_blocks += blocks
        self.monitor.started(blocks)
        self._sms_changed = True
        self.execution.start(BlockGroup(kernel, sm_ids, counts, taken, blocks, now,
                                        remaining_s=kernel.launch.block_time_s, updated_s=now))

    def _on_host_done(self) -> None:
        self._touch()
        self._request_dispatch()

    def _touch(self) -> None:
        """Something happens before the next pass: a deferred release is done first."""
        self._touched = True
        if self._replay is not None:
            group, self._replay = self._replay, None
            self._release(group)

    def _replayable(self, group: BlockGroup) -> bool:
        """Whether ``group``, ending as the first change since the last pass, would be
        replaced by as many blocks on the same SMs (module docstring): its kernel is the
        dispatcher's head with more blocks left than the group."""
        kernel = group.kernel
        return (self._replays and not self._touched and kernel.to_dispatch > group.blocks
                and self.dispatcher.head() is kernel)

    def _finish(self, group: BlockGroup, alone: bool = False) -> None:
        if self._replay is None and self._replayable(group):
            now = self.env.now
            if alone and self.env.peek() > now and group.kernel.launch.block_time_s > 0:
                # Nothing else happens at this instant (no other event is due now): the
                # pass would find the replay; make it at once, without the pass event.
                if self._replay_now(group):
                    return
            else:
                self._replay = group
                self._request_dispatch()
                return
        self._touch()
        self._release(group)

    def _replay_now(self, group: BlockGroup) -> bool:
        """New blocks of ``group``'s kernel take its place (module docstring); False if its
        SMs' rates came apart or the new blocks would take other registers (then nothing
        is done: it is released and the pass runs in full)."""
        sm_rate = self.execution.replay_sm_rate(group)
        if sm_rate is None or not self._same_take(group):
            return False
        self.monitor.finished(group, self.env.now)  # before the group starts afresh
        self.execution.replace(group, sm_rate)
        kernel = group.kernel
        kernel.to_dispatch -= group.blocks
        group.replays += 1
        self.monitor.started(group.blocks)
        self.monitor.passes += 1
        return True

    def _same_take(self, group: BlockGroup) -> bool:
        """Whether new blocks on ``group``'s SMs would take exactly what it gives back:
        always for even register takes; else as the remembered takes tell, or the pass's
        allocation is tried (and undone if it differs)."""
        fp = group.kernel.fp
        sms = self.sms
        if not fp.regs_per_warp or (fp.warps % sms.pools == 0 and not sms.uneven_takes):
            return True
        if sms.known_retake(fp, group.sm_ids, group.counts, group.taken):
            return True
        sms.release(group.sm_ids, group.taken)
        taken = sms.allocate(fp, group.sm_ids, group.counts)
        if np.array_equal(taken, group.taken):
            return True
        sms.release(group.sm_ids, taken)
        sms.retake(group.sm_ids, group.taken)
        return False

    def _release(self, group: BlockGroup) -> None:
        """``group`` has ended: its resources go back, and its kernel may complete."""
        kernel = group.kernel
        now = self.env.now
        self.sms.release(group.sm_ids, group.taken)
        group.count_replays()
        self.execution.finish(group)
        self._sms_changed = True
        kernel.running -= group.blocks
        self.running_blocks -= group.blocks
        self.monitor.finished(group, now)
        if not kernel.to_dispatch and not kernel.running:
            kernel.completed()
            self.execution.kernel_done(kernel)
            self._queues_changed = True
            kernel.end_s = now
            placed = tuple(cast(IntArray, kernel.sm_blocks).tolist())
            kernel.sm_blocks = self._spreads.setdefault(placed, placed)
            kernel.groups, kernel.blocks_at_rate = {}, {}  # emptied: drop their tables
            self.resident -= 1
            self.completed += 1
            self._advance_queues()
        self._request_dispatch()

    # ------------------------------------------------------------------ dispatch
    def _request_dispatch(self) -> None:
        if not self._dispatch_pending:
            self._dispatch_pending = True
            Wakeup(self.env, 0, LATE, None, self._dispatch)

    def _dispatch(self, event: simpy.Event) -> None:
        self.monitor.events += 1
        self._dispatch_pending = False
        now = self.env.now
        replay, self._replay = self._replay, None
        if replay is not None:
            self._touched = False
            if self._replay_now(replay):
                return
            self._release(replay)  # its SMs' rates came apart: the full pass
        self._touched = False
        blocked = self.dispatcher.run_pass()
        if self._sms_changed:
            self.execution.settle()
        if not self.series:
            self.monitor.passes += 1
            self._queues_changed = self._sms_changed = False
            return
        # Everything at this instant is settled: sample the state and the "what binds" clocks.
        self.monitor.sample_pass(now, blocked,
                                 launch_bound=not self.running_blocks and not self.host.done)
        if self._queues_changed:
            self._queues_changed = False
            at_limit = self.resident >= self.program.gpu.max_resident_grids and any(
                (h := q.head()) is not None and not h.waiting_on for q in self.queues)
            self.monitor.sample_queues(now, any(q.falsely_blocked() for q in self.queues),
                                       at_limit)
        if self._sms_changed:
            self._sms_changed = False
            self.monitor.sample_sms(now, self.sms)

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


def simulate_makespan(program: Program, *, sm_sharing: bool = True) -> float:
    """The makespan of ``program`` in seconds, exactly :func:`simulate`'s, without its
    series, "what binds" clocks and records (grouped mode, default placement): for
    searching policies, which time many candidates and keep only the fastest."""
    return Engine(program, sm_sharing=sm_sharing, series=False).run_makespan()


def simulate(program: Program, *, mode: str = "grouped",
             placement: str | PlacementFactory = "most-free",
             record_blocks: bool = False, sm_sharing: bool = True,
             progress: Progress | None = None) -> SimResult:
    """Run ``program`` and return its :class:`~sim.engine.result.SimResult`.

    ``mode``: ``"grouped"`` (fast) or ``"exact"`` (per-block reference). ``placement``: a
    name in :data:`sim.engine.placement.PLACEMENTS` or a factory such as ``RoundRobin``.
    ``record_blocks``: keep per-block records in grouped mode too (exact mode always does).
    ``sm_sharing``: co-resident blocks share their SM's throughput and DRAM follows the
    memory-level parallelism of the resident warps (default); ``False``: neither (the
    engine before these mechanisms, for teaching and ablation). ``progress``: see
    :meth:`Engine.run`.
    """
    return Engine(program, mode=mode, placement=placement, record_blocks=record_blocks,
                  sm_sharing=sm_sharing).run(progress)
