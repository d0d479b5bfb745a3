"""Per-block logs of microbenchmark kernels, and the compact summaries that get committed.

Every block of a microbenchmark kernel writes three numbers (see ``kernels.cu``): its start
and end on the device's global timer (nanoseconds) and the id of the SM it ran on. A log
of a big grid is large and mostly redundant, so what is committed is a summary per kernel,
with every time relative to the experiment's time zero ``t0_ns`` (the earliest block start
of the run, so measured and simulated timelines can be aligned on their first block):

* first/last block start and end;
* per-block duration (median, min, max);
* blocks per SM (how the block scheduler spread the grid), as ``[sm, count]`` pairs;
* the most blocks resident at once on one SM and on the whole GPU (measured occupancy);
* wave start times: block starts clustered where a gap exceeds half a block duration.

For cases of several kernels, :func:`co_residency` says how blocks of different kernels
shared SMs: the ground truth of SM-throughput sharing is which blocks sat together on one SM
for how long, and how much slower they ran for it.

Pure numpy; no CUDA. Tests feed it synthetic logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu_models.errors import GpusimError
from gpu_models.units import NS_PER_S

#: Waves kept in a summary; a kernel whose blocks start continuously (memory-bound blocks
#: finishing at scattered times) has no staircase, and its first waves say enough.
MAX_WAVES = 64


def seconds(ns: float) -> float:
    """Nanoseconds to seconds, rounded to 0.1 ns (the timer ticks in ns at best), so the
    committed JSON does not carry float noise such as 0.0050030000000000005."""
    return round(float(ns) / NS_PER_S, 10)


@dataclass(frozen=True)
class BlockLog:
    """One kernel launch's per-block records, in block order."""

    start_ns: np.ndarray
    end_ns: np.ndarray
    sm: np.ndarray

    @classmethod
    def from_raw(cls, raw: np.ndarray, name: str = "kernel") -> BlockLog:
        """Parse the device array ``[start, end, smid] * blocks`` (uint64).

        The host fills the log with zeros before each launch; a zero start means a block
        never wrote its record, which makes the whole measurement invalid.
        """
        flat = np.asarray(raw, dtype=np.uint64).reshape(-1)
        if flat.size == 0 or flat.size % 3:
            raise GpusimError(f"{name}: block log must hold 3 values per block (got {flat.size})")
        rows = flat.reshape(-1, 3)
        start = rows[:, 0].astype(np.int64)
        end = rows[:, 1].astype(np.int64)
        missing = np.flatnonzero(start == 0)
        if missing.size:
            raise GpusimError(f"{name}: {missing.size} block(s) wrote no record "
                              f"(first: block {int(missing[0])})")
        if np.any(end < start):
            bad = int(np.flatnonzero(end < start)[0])
            raise GpusimError(f"{name}: block {bad} ends before it starts")
        return cls(start_ns=start, end_ns=end, sm=rows[:, 2].astype(np.int64))

    @property
    def blocks(self) -> int:
        return int(self.start_ns.size)


def max_concurrency(start_ns: np.ndarray, end_ns: np.ndarray) -> int:
    """Most intervals ``[start, end)`` open at one instant (an end at t closes before a start
    at t opens, so back-to-back blocks do not count as overlapping)."""
    if start_ns.size == 0:
        return 0
    times = np.concatenate([end_ns, start_ns])
    deltas = np.concatenate([-np.ones(end_ns.size, np.int64), np.ones(start_ns.size, np.int64)])
    order = np.lexsort((deltas, times))  # by time, ends (-1) before starts (+1)
    return int(np.max(np.cumsum(deltas[order])))


def wave_starts(start_ns: np.ndarray, gap_ns: float) -> tuple[list[int], list[int]]:
    """Cluster sorted block starts into waves: a new wave begins after a gap > ``gap_ns``.

    Returns (start of each wave, blocks in each wave), at most :data:`MAX_WAVES` waves.
    """
    starts = np.sort(start_ns)
    if starts.size == 0:
        return [], []
    breaks = np.flatnonzero(np.diff(starts) > gap_ns) + 1
    edges = np.concatenate([[0], breaks, [starts.size]])
    firsts = [int(starts[i]) for i in edges[:-1]]
    sizes = [int(n) for n in np.diff(edges)]
    return firsts[:MAX_WAVES], sizes[:MAX_WAVES]


def summarize_kernel(log: BlockLog, t0_ns: int) -> dict[str, Any]:
    """Compact summary of one kernel's blocks, times in seconds relative to ``t0_ns``."""
    durations = log.end_ns - log.start_ns
    median_ns = float(np.median(durations))
    sms, counts = np.unique(log.sm, return_counts=True)
    resident_per_sm = max(
        max_concurrency(log.start_ns[log.sm == s], log.end_ns[log.sm == s]) for s in sms
    )
    firsts, sizes = wave_starts(log.start_ns, gap_ns=max(0.5 * median_ns, 1.0))

    def rel(t: int) -> float:
        # Subtract as integers: %globaltimer counts from the epoch (~1.7e18 ns), beyond
        # float64's exact range, so converting first would round to ~256 ns.
        return seconds(int(t) - int(t0_ns))

    return {
        "blocks": log.blocks,
        "first_start_s": rel(log.start_ns.min()),
        "last_start_s": rel(log.start_ns.max()),
        "first_end_s": rel(log.end_ns.min()),
        "last_end_s": rel(log.end_ns.max()),
        "block_time_s": {
            "median": seconds(median_ns),
            "min": seconds(durations.min()),
            "max": seconds(durations.max()),
        },
        "sms_used": int(sms.size),
        "blocks_per_sm": [[int(s), int(c)] for s, c in zip(sms, counts, strict=True)],
        "max_resident_per_sm": int(resident_per_sm),
        "max_resident": max_concurrency(log.start_ns, log.end_ns),
        "wave_starts_s": [rel(t) for t in firsts],
        "wave_sizes": sizes,
    }


def _merged(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals ``[start, end)`` as disjoint sorted intervals."""
    if start.size == 0:
        return start, end
    order = np.argsort(start, kind="stable")
    s, e = start[order], np.maximum.accumulate(end[order])
    # A new merged interval starts where a start lies beyond every end before it.
    new = np.concatenate([[True], s[1:] > e[:-1]])
    firsts = np.flatnonzero(new)
    lasts = np.concatenate([firsts[1:], [s.size]]) - 1
    return s[firsts], e[lasts]


def _covered(start: np.ndarray, end: np.ndarray, seg_start: np.ndarray,
             seg_end: np.ndarray) -> np.ndarray:
    """For each interval ``[start_i, end_i)``, how long disjoint segments cover it."""
    if seg_start.size == 0:
        return np.zeros(start.size, dtype=np.int64)
    lo = np.maximum.outer(start, seg_start)
    hi = np.minimum.outer(end, seg_end)
    return np.clip(hi - lo, 0, None).sum(axis=1)


def co_residency(logs: Mapping[str, BlockLog]) -> dict[str, dict[str, Any]]:
    """How each kernel's blocks shared their SMs with blocks of the other kernels.

    Per block: the time at least one block of another kernel was on its SM (its *shared*
    time), and the time-weighted mean number of other-kernel and own-kernel blocks beside it.
    Per kernel:

    * ``shared_blocks``: blocks that shared their SM for at least half their duration;
    * ``shared_fraction``: mean over blocks of shared time / duration;
    * ``mean_other_blocks``, ``mean_own_blocks``: blocks of other kernels, and other blocks
      of this kernel, beside one of its blocks, averaged over its blocks' time;
    * ``block_time_shared_s``, ``block_time_unshared_s``: median/min/max duration of the
      blocks that did and did not share (``None`` where there are none): how much sharing
      slowed them.
    """
    names = list(logs)
    kernel = np.concatenate([np.full(logs[n].blocks, i) for i, n in enumerate(names)])
    start = np.concatenate([logs[n].start_ns for n in names])
    end = np.concatenate([logs[n].end_ns for n in names])
    sm = np.concatenate([logs[n].sm for n in names])
    shared = np.zeros(start.size, dtype=np.int64)
    other_time = np.zeros(start.size, dtype=np.int64)
    own_time = np.zeros(start.size, dtype=np.int64)
    for s in np.unique(sm):
        idx = np.flatnonzero(sm == s)
        overlap = np.clip(np.minimum.outer(end[idx], end[idx])
                          - np.maximum.outer(start[idx], start[idx]), 0, None)
        np.fill_diagonal(overlap, 0)
        same = kernel[idx][:, None] == kernel[idx][None, :]
        own_time[idx] = np.where(same, overlap, 0).sum(axis=1)
        other_time[idx] = np.where(same, 0, overlap).sum(axis=1)
        for k in np.unique(kernel[idx]):
            mine, others = idx[kernel[idx] == k], idx[kernel[idx] != k]
            seg_start, seg_end = _merged(start[others], end[others])
            shared[mine] = _covered(start[mine], end[mine], seg_start, seg_end)
    duration = np.maximum(end - start, 1)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        sel = kernel == i
        fraction = shared[sel] / duration[sel]
        is_shared = fraction >= 0.5
        dur = (end - start)[sel]

        def stats(values: np.ndarray) -> dict[str, float] | None:
            if values.size == 0:
                return None
            return {"median": seconds(float(np.median(values))),
                    "min": seconds(values.min()), "max": seconds(values.max())}

        out[name] = {
            "shared_blocks": int(is_shared.sum()),
            "shared_fraction": round(float(fraction.mean()), 6),
            "mean_other_blocks": round(float(other_time[sel].sum() / duration[sel].sum()), 6),
            "mean_own_blocks": round(float(own_time[sel].sum() / duration[sel].sum()), 6),
            "block_time_shared_s": stats(dur[is_shared]),
            "block_time_unshared_s": stats(dur[~is_shared]),
        }
    return out


def summarize_run(logs: Mapping[str, BlockLog]) -> dict[str, Any]:
    """Summaries of every kernel of one run, on one time axis starting at the first block."""
    if not logs:
        raise GpusimError("a run needs at least one kernel log")
    t0 = min(int(log.start_ns.min()) for log in logs.values())
    t_end = max(int(log.end_ns.max()) for log in logs.values())
    return {
        "makespan_s": seconds(t_end - t0),
        "kernels": {name: summarize_kernel(log, t0) for name, log in logs.items()},
    }


def run_scalars(run: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers kept for every repeat (the full summary is kept for one): the
    makespan and, per kernel, ``[first_start_s, last_end_s]``."""
    return {
        "makespan_s": run["makespan_s"],
        "kernels": {name: [k["first_start_s"], k["last_end_s"]]
                    for name, k in run["kernels"].items()},
    }


def representative(runs: Sequence[Mapping[str, Any]]) -> int:
    """Index of the run with the median makespan (the lower median for an even count), so
    the committed detail is one real run, not an average of several."""
    if not runs:
        raise GpusimError("no runs to choose from")
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["makespan_s"], i))
    return order[(len(order) - 1) // 2]


def describe(values: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """Median, min, max, mean and count of ``values`` (at least one)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise GpusimError("nothing to describe: no values")
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max()),
            "mean": float(arr.mean()), "n": int(arr.size)}


def observed_tick_ns(timestamps_ns: np.ndarray) -> int | None:
    """Smallest positive step between distinct timestamps: an upper bound on the global
    timer's resolution as seen in these logs (``None`` with fewer than two distinct values)."""
    values = np.unique(np.asarray(timestamps_ns, dtype=np.int64))
    if values.size < 2:
        return None
    return int(np.min(np.diff(values)))
