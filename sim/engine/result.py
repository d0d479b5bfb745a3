"""Simulation results: per-kernel timelines, occupancy over time and what-binds counters.

A :class:`SimResult` is plain data (frozen dataclasses, tuples, numpy arrays) in seconds and
bytes. :meth:`SimResult.kernel_records` / :meth:`SimResult.block_records` give lists of
plain dicts (pandas-free; ``pandas.DataFrame(result.kernel_records())`` works if you have
it) and :meth:`SimResult.to_dict` the JSON summary ``gpusim run --json`` prints (in us).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpu_models.units import US_PER_S
from sim.engine.program import Program


@dataclass(frozen=True)
class KernelRecord:
    """One kernel's life: host launch call, hand-off to the dispatcher, first and last block."""

    name: str
    stream: str
    #: Position in host launch order.
    seq: int
    #: Host time the launch call began (after its event waits) and ended (kernel visible).
    launch_begin_s: float
    launch_s: float
    #: Time the kernel was handed to the block dispatcher (dependencies met).
    ready_s: float
    #: First block dispatched / last block ended.
    start_s: float
    end_s: float
    blocks: int
    #: Blocks this kernel ran on each SM.
    sm_blocks: tuple[int, ...]
    kind: str = ""
    layer: str = ""

    @property
    def duration_s(self) -> float:
        """From the first block's start to the last block's end."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class BlockRecord:
    """One thread block: where and when it ran."""

    kernel: str
    sm: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class StepSeries:
    """A step function: ``values[i]`` holds from ``times_s[i]`` until the next time."""

    times_s: tuple[float, ...]
    values: tuple[float, ...]

    def at(self, t_s: float) -> float:
        """The value at time ``t_s``."""
        index = int(np.searchsorted(np.asarray(self.times_s), t_s, side="right")) - 1
        return self.values[max(index, 0)]


@dataclass(frozen=True, eq=False)
class SMOccupancy:
    """Resident warps per SM over time: row ``i`` of :attr:`warps` holds from ``times_s[i]``.

    Stored as a change log (a dispatch pass usually touches a few SMs, and a dense row per
    pass would cost sm_count numbers each); :attr:`warps` expands it on first use.
    """

    times_s: np.ndarray
    sm_count: int
    #: How many of the changes below belong to each row, in order.
    changes_per_row: np.ndarray
    #: Change ``j``: from ``times_s[change_rows[j]]`` SM ``change_sms[j]`` holds
    #: ``change_warps[j]`` warps (a later change of the same row and SM wins).
    change_sms: np.ndarray
    change_warps: np.ndarray

    @property
    def change_rows(self) -> np.ndarray:
        """The row of each change."""
        return np.repeat(np.arange(len(self.changes_per_row)), self.changes_per_row)

    @functools.cached_property
    def warps(self) -> np.ndarray:
        """Dense ``[len(times_s), sm_count]`` matrix of resident warps."""
        rows, sms = len(self.times_s), self.sm_count
        change_rows = self.change_rows
        key = change_rows * sms + self.change_sms
        # Keep the last change per (row, SM): unique over the reversed log.
        _, first_in_reversed = np.unique(key[::-1], return_index=True)
        keep = len(key) - 1 - first_in_reversed
        values = np.zeros((rows, sms), dtype=np.int64)
        source = np.zeros((rows, sms), dtype=np.int64)
        values[change_rows[keep], self.change_sms[keep]] = self.change_warps[keep]
        source[change_rows[keep], self.change_sms[keep]] = change_rows[keep]
        # Carry each SM's last change forward to the rows without one.
        source = np.maximum.accumulate(source, axis=0)
        return values[source, np.arange(sms)]


@dataclass(frozen=True)
class Counters:
    """How the run went and what bound it. All times in seconds of simulated time."""

    #: Engine events processed (SimPy events whose callbacks ran, stale timers included).
    events: int
    blocks: int
    #: Completion groups scheduled (equals ``blocks`` in exact mode).
    groups: int
    dispatch_passes: int
    #: Host wall-clock seconds of the run.
    wall_s: float
    #: Time the head kernel had blocks left but no SM could take one, by blocking resource
    #: (warps, registers, shared_memory, blocks).
    blocked_s: Mapping[str, float] = field(default_factory=dict)
    #: Time no block ran while the host was still launching (launch-bound).
    launch_bound_s: float = 0.0
    #: Time some hardware queue's head waited on a dependency while a kernel of another
    #: stream behind it in the same queue had all its own dependencies met (false
    #: dependency: another connection would have let that kernel go).
    false_dependency_s: float = 0.0
    #: Time a queue head had its dependencies met but the resident-grid limit was reached.
    resident_limit_s: float = 0.0
    #: Time the running blocks asked for more DRAM bandwidth than the GPU has and used it
    #: all (it is shared max-min fairly: only blocks asking more than the fair share slow
    #: down); with the parallelism bound, time they were held back short of it counts as
    #: ``memory_parallelism_s`` instead.
    dram_saturated_s: float = 0.0
    #: Time some kernel got less DRAM bandwidth than it asked while the bandwidth was not
    #: used up: held back by the memory-level parallelism of its resident warps.
    memory_parallelism_s: float = 0.0
    #: Time some SM's running blocks asked more of an execution resource than it has (then
    #: it is shared max-min fairly), per resource (simt, tensor).
    sm_oversubscribed_s: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (times in seconds)."""
        return {
            "events": self.events,
            "blocks": self.blocks,
            "groups": self.groups,
            "dispatch_passes": self.dispatch_passes,
            "wall_s": self.wall_s,
            "blocked_s": dict(self.blocked_s),
            "launch_bound_s": self.launch_bound_s,
            "false_dependency_s": self.false_dependency_s,
            "resident_limit_s": self.resident_limit_s,
            "dram_saturated_s": self.dram_saturated_s,
            "memory_parallelism_s": self.memory_parallelism_s,
            "sm_oversubscribed_s": dict(self.sm_oversubscribed_s),
        }


@dataclass(frozen=True, eq=False)
class SimResult:
    """Everything one simulation produced."""

    program: Program
    mode: str
    placement: str
    makespan_s: float
    kernels: tuple[KernelRecord, ...]
    #: SMs holding at least one block, over time.
    busy_sms: StepSeries
    #: DRAM bandwidth in use (bytes/s), over time.
    dram_Bps: StepSeries
    sm_occupancy: SMOccupancy
    counters: Counters
    #: Per-block records: always in exact mode, in grouped mode only with record_blocks.
    blocks: tuple[BlockRecord, ...] | None = None
    #: Fraction of the GPU's throughput in use, per SM execution resource, over time.
    sm_throughput: Mapping[str, StepSeries] = field(default_factory=dict)
    #: Whether SM throughput sharing and the memory-parallelism bound were on.
    sm_sharing: bool = True

    def kernel(self, name: str) -> KernelRecord:
        """The record of kernel ``name``."""
        for record in self.kernels:
            if record.name == name:
                return record
        raise KeyError(name)

    def kernel_records(self) -> list[dict[str, Any]]:
        """One plain dict per kernel (seconds), in launch order."""
        return [
            {
                "name": k.name, "stream": k.stream, "seq": k.seq, "kind": k.kind,
                "layer": k.layer, "launch_begin_s": k.launch_begin_s, "launch_s": k.launch_s,
                "ready_s": k.ready_s, "start_s": k.start_s, "end_s": k.end_s,
                "blocks": k.blocks, "sm_blocks": list(k.sm_blocks),
            }
            for k in self.kernels
        ]

    def block_records(self) -> list[dict[str, Any]]:
        """One plain dict per block (seconds); empty if blocks were not recorded."""
        return [
            {"kernel": b.kernel, "sm": b.sm, "start_s": b.start_s, "end_s": b.end_s}
            for b in self.blocks or ()
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary of ``gpusim run --json`` (times in us)."""
        return {
            "gpu": self.program.gpu.name,
            "mode": self.mode,
            "placement": self.placement,
            "sm_sharing": self.sm_sharing,
            "makespan_us": self.makespan_s * US_PER_S,
            "kernels": [
                {
                    "name": k.name, "stream": k.stream, "launch_us": k.launch_s * US_PER_S,
                    "ready_us": k.ready_s * US_PER_S, "start_us": k.start_s * US_PER_S,
                    "end_us": k.end_s * US_PER_S, "blocks": k.blocks,
                }
                for k in self.kernels
            ],
            "counters": self.counters.to_dict(),
        }
