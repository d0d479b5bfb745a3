"""Monitoring: what the engine records about a run, kept outside the mechanism.

The engine reports to a :class:`Monitor` after each dispatch pass (docs/model.md §6.10-§6.11):

* **stopwatches** (:class:`Stopwatch`) of how long each "what binds" condition held: the
  head kernel blocked on an SM resource, the GPU idle while the host launches, a false
  dependency in a hardware queue, the resident-grid limit, an SM over-subscribed on an
  execution resource, DRAM demand above the bandwidth, a kernel held below its DRAM demand
  by the memory-level parallelism of its resident warps;
* **series**: busy SMs, DRAM bandwidth in use and SM throughput in use per execution
  resource as step functions, and resident warps per SM as a change log;
* **block records** (exact mode always, grouped mode on request);
* **bookkeeping**: events, dispatch passes, groups and blocks started.

:meth:`Monitor.result` assembles the :class:`~sim.engine.result.SimResult` at the end.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from gpu_models.kernel import SM_RESOURCES
from sim.engine.dispatch import BlockGroup, KernelRun
from sim.engine.program import Program
from sim.engine.resources import MemoryAllocation, SMArray
from sim.engine.result import (
    BlockRecord,
    Counters,
    KernelRecord,
    SimResult,
    SMOccupancy,
    StepSeries,
)


class Stopwatch:
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


class Monitor:
    """Counters, series and records of one run."""

    def __init__(self, sms: SMArray, record_blocks: bool, series: bool = True) -> None:
        self.record_blocks = record_blocks
        #: Keep the series and clocks (off: counters only, for a makespan-only run).
        self.series = series
        self.events = 0
        self.passes = 0
        self.groups = 0
        self.blocks_started = 0
        self.block_records: list[tuple[float, int, int, float, str]] = []
        self.blocked = Stopwatch()
        self.launch_bound = Stopwatch()
        self.false_dependency = Stopwatch()
        self.resident_limit = Stopwatch()
        self.dram_saturated = Stopwatch()
        self.memory_parallelism = Stopwatch()
        self.sm_oversubscribed = {r: Stopwatch() for r in SM_RESOURCES}
        self.busy_sms: list[tuple[float, float]] = [(0.0, 0.0)]
        self.dram_Bps: list[tuple[float, float]] = [(0.0, 0.0)]
        self.sm_throughput: dict[str, list[tuple[float, float]]] = {
            r: [(0.0, 0.0)] for r in SM_RESOURCES}
        # Resident warps per SM as a change log, rows at these times: the changes of row
        # ``i`` are the next ``occupancy_counts[i]`` (SM id, warps) pairs. Compact arrays of
        # the smallest unsigned numbers that hold them (8-bit SM ids up to 256 SMs, 8-bit
        # warps on every real GPU): a long run logs millions of changes.
        self.occupancy_times: list[float] = [0.0]
        self._last_warps = sms.resident_warps()
        self._sm_code, self._sm_dtype = _compact_type(sms.count - 1)
        self._warp_code, self._warp_dtype = _compact_type(sms.spec.max_warps_per_sm)
        self.occupancy_counts = array("q", [sms.count])
        self.occupancy_sms = array(self._sm_code,
                                   np.arange(sms.count, dtype=self._sm_dtype).tobytes())
        self.occupancy_warps = array(self._warp_code,
                                     self._last_warps.astype(self._warp_dtype).tobytes())

    # ------------------------------------------------------------------ during the run
    def started(self, blocks: int) -> None:
        """A group of ``blocks`` blocks was started."""
        self.blocks_started += blocks
        self.groups += 1

    def finished(self, group: BlockGroup, now_s: float) -> None:
        """``group`` ended at ``now_s``."""
        if self.record_blocks:
            kernel = group.kernel
            for sm, count in zip(group.sm_ids.tolist(), group.counts.tolist(), strict=True):
                record = (group.start_s, kernel.seq, sm, now_s, kernel.launch.name)
                self.block_records.extend([record] * count)

    def sample_pass(self, now_s: float, blocked: str | None, launch_bound: bool) -> None:
        """After a dispatch pass: the head kernel's blocking resource, launch-boundness."""
        self.passes += 1
        self.blocked.set(now_s, blocked)
        self.launch_bound.set(now_s, "on" if launch_bound else None)

    def sample_queues(self, now_s: float, falsely_blocked: bool, at_resident_limit: bool) -> None:
        """After a pass in which a queue or a dependency changed."""
        self.false_dependency.set(now_s, "on" if falsely_blocked else None)
        self.resident_limit.set(now_s, "on" if at_resident_limit else None)

    def sample_sms(self, now_s: float, sms: SMArray) -> None:
        """After a pass in which blocks started or ended: busy SMs and occupancy."""
        warps = sms.resident_warps()
        changed = (warps != self._last_warps).nonzero()[0]
        if not len(changed):
            return  # no SM's resident warps moved, so neither did the busy SMs
        # Busy: holding a block, i.e. some warps (a block has at least one).
        _append_step(self.busy_sms, now_s, float(np.count_nonzero(warps)))
        if self.occupancy_times[-1] != now_s:
            self.occupancy_times.append(now_s)
            self.occupancy_counts.append(0)
        self.occupancy_counts[-1] += len(changed)
        self.occupancy_sms.frombytes(changed.astype(self._sm_dtype).tobytes())
        self.occupancy_warps.frombytes(warps[changed].astype(self._warp_dtype).tobytes())
        self._last_warps = warps

    def sample_dram(self, now_s: float, allocation: MemoryAllocation) -> None:
        """After DRAM was shared anew: bandwidth in use, saturation, parallelism bound."""
        if not self.series:
            return
        _append_step(self.dram_Bps, now_s, allocation.used_Bps)
        self.dram_saturated.set(now_s, "on" if allocation.saturated else None)
        self.memory_parallelism.set(now_s, "on" if allocation.parallelism_bound else None)

    def sample_sm_throughput(self, now_s: float, in_use: Sequence[float],
                             oversubscribed: Sequence[bool]) -> None:
        """After SM rates were settled: the fraction of the GPU's throughput in use per
        resource, and which resources some SM is over-subscribed on."""
        for resource, used, over in zip(SM_RESOURCES, in_use, oversubscribed, strict=True):
            _append_step(self.sm_throughput[resource], now_s, used)
            self.sm_oversubscribed[resource].set(now_s, "on" if over else None)

    # ------------------------------------------------------------------ at the end
    def result(self, program: Program, *, mode: str, placement: str, sm_sharing: bool,
               kernels: Sequence[KernelRun], host_events: int, wall_s: float) -> SimResult:
        """The run's :class:`SimResult` (closes the stopwatches at the makespan)."""
        end = max((k.end_s for k in kernels), default=0.0)
        for watch in (self.blocked, self.launch_bound, self.false_dependency,
                      self.resident_limit, self.dram_saturated, self.memory_parallelism,
                      *self.sm_oversubscribed.values()):
            watch.set(end, None)
        records = tuple(
            KernelRecord(
                name=k.launch.name, stream=k.launch.stream, seq=k.seq,
                launch_begin_s=k.launch_begin_s, launch_s=k.launch_s, ready_s=k.ready_s,
                start_s=k.start_s, end_s=k.end_s, blocks=k.launch.blocks,
                sm_blocks=cast(tuple[int, ...], k.sm_blocks), kind=k.launch.kind,
                layer=k.launch.layer,
            )
            for k in kernels
        )
        blocks = None
        if self.record_blocks:
            blocks = tuple(BlockRecord(kernel=name, sm=sm, start_s=start, end_s=stop)
                           for start, _, sm, stop, name in sorted(self.block_records))
        counters = Counters(
            events=self.events + host_events, blocks=self.blocks_started, groups=self.groups,
            dispatch_passes=self.passes, wall_s=wall_s,
            blocked_s=dict(sorted(self.blocked.totals.items())),
            launch_bound_s=self.launch_bound.totals.get("on", 0.0),
            false_dependency_s=self.false_dependency.totals.get("on", 0.0),
            resident_limit_s=self.resident_limit.totals.get("on", 0.0),
            dram_saturated_s=self.dram_saturated.totals.get("on", 0.0),
            memory_parallelism_s=self.memory_parallelism.totals.get("on", 0.0),
            sm_oversubscribed_s={r: w.totals.get("on", 0.0)
                                 for r, w in self.sm_oversubscribed.items()},
        )
        return SimResult(
            program=program, mode=mode, placement=placement, makespan_s=end,
            kernels=records, busy_sms=_series(self.busy_sms),
            dram_Bps=_series(self.dram_Bps),
            sm_occupancy=SMOccupancy(
                times_s=np.array(self.occupancy_times), sm_count=program.gpu.sm_count,
                changes_per_row=np.frombuffer(self.occupancy_counts, dtype=np.int64),
                change_sms=np.frombuffer(self.occupancy_sms, dtype=self._sm_dtype),
                change_warps=np.frombuffer(self.occupancy_warps, dtype=self._warp_dtype),
            ),
            counters=counters, blocks=blocks,
            sm_throughput={r: _series(steps) for r, steps in self.sm_throughput.items()},
            sm_sharing=sm_sharing,
        )


def _compact_type(largest: int) -> tuple[str, np.dtype[Any]]:
    """The :mod:`array` type code and numpy dtype of the smallest unsigned integers that
    hold ``0..largest`` (64-bit signed beyond 16 bits)."""
    if largest < 2**8:
        return "B", np.dtype(np.uint8)
    if largest < 2**16:
        return "H", np.dtype(np.uint16)
    return "q", np.dtype(np.int64)


def _append_step(steps: list[tuple[float, float]], now_s: float, value: float) -> None:
    if steps[-1][0] == now_s:
        steps[-1] = (now_s, value)
    elif steps[-1][1] != value:
        steps.append((now_s, value))


def _series(steps: list[tuple[float, float]]) -> StepSeries:
    return StepSeries(times_s=tuple(t for t, _ in steps), values=tuple(v for _, v in steps))
