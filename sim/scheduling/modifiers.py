"""Resource-aware variants: modifiers applied on top of any base policy's schedule.

The published analysis of concurrent layer scheduling finds that streams alone recover
little because the block dispatcher serves the oldest kernel first (leftover policy) and a
large kernel fills every SM. The remedies it points to are implemented here as
:class:`Modifier` strategies that take a base :class:`~sim.scheduling.base.Schedule` and
return a changed one; the registry composes them by name (``min-streams+priority+cap``):

* ``priority`` — CUDA stream priorities for the critical path (:class:`CriticalPriority`);
* ``cap`` — capped grids, i.e. persistent kernels with fewer, longer blocks, so that
  concurrent kernels leave SMs to each other (:class:`GridCap`);
* ``partition`` — disjoint SM partitions per stream, as CUDA green contexts or MPS SM
  shares give (:class:`SMPartition`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from typing import Protocol

from gpu_models.cost import wave_size
from gpu_models.errors import GpusimError
from sim.scheduling.base import (
    Node,
    Schedule,
    ScheduleContext,
    SchedulingPolicy,
    bottom_levels,
    generations,
    top_levels,
)


class Modifier(Protocol):
    """Changes a base policy's schedule (priorities, grids), keeping its streams."""

    @property
    def name(self) -> str:
        """The registry name (``priority``, ``cap``, ``partition``)."""
        ...

    def apply(self, ctx: ScheduleContext, schedule: Schedule) -> Schedule:
        """The modified schedule."""
        ...


@dataclass(frozen=True)
class Modified:
    """A base policy followed by modifiers; itself a policy (``base+mod+mod``)."""

    base: SchedulingPolicy
    modifiers: tuple[Modifier, ...]

    @property
    def name(self) -> str:
        return "+".join([self.base.name, *(m.name for m in self.modifiers)])

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        schedule = self.base.schedule(ctx)
        for modifier in self.modifiers:
            schedule = modifier.apply(ctx, schedule)
        return schedule


def slacks(ctx: ScheduleContext, schedule: Schedule) -> tuple[dict[Node, float], float]:
    """Each scheduled kernel's slack (how long it may be delayed without lengthening the
    critical path, at isolated times) and the critical path's length."""
    graph = ctx.graph.subgraph(schedule.order)
    top = top_levels(graph, ctx.isolated_s)
    bottom = bottom_levels(graph, ctx.isolated_s)
    length = max(bottom.values(), default=0.0)
    # Relative tolerance: float sums along different paths differ in the last bits.
    return {n: max(0.0, length - top[n] - bottom[n]) if length - top[n] - bottom[n] > 1e-9 * length
            else 0.0 for n in graph}, length


@dataclass(frozen=True)
class CriticalPriority:
    """Stream priorities by slack: streams holding critical-path kernels are served first.

    Mirrors the stream-priority remedy (CUDA ``cudaStreamCreateWithPriority``, as used by
    priority-aware DNN schedulers): a kernel's slack is how much it could be delayed without
    lengthening the critical path (isolated times); a stream gets the priority of its most
    critical kernel, spread over the GPU's ``stream_priority_levels`` (CUDA numbering: the
    most urgent is ``-(levels - 1)``, the default 0). The dispatcher then prefers the
    critical stream's ready kernels over a non-critical kernel that became ready earlier.
    Launch order: the base policy's (it already decides when each kernel is issued;
    priorities act in the dispatcher, and reordering launches would change the events).
    """

    name: str = "priority"

    def apply(self, ctx: ScheduleContext, schedule: Schedule) -> Schedule:
        slack, length = slacks(ctx, schedule)
        slack_of_stream: dict[int, float] = {}
        for node in schedule.order:
            stream = schedule.stream_of[node]
            slack_of_stream[stream] = min(slack[node], slack_of_stream.get(stream, math.inf))
        levels = ctx.gpu.stream_priority_levels - 1
        priorities = {
            s: -round((1.0 - slack / length) * levels) if length > 0 else 0
            for s, slack in slack_of_stream.items()
        }
        return replace(schedule, priorities=priorities)


@dataclass(frozen=True)
class GridCap:
    """Caps grids so that kernels that may run concurrently share the GPU in proportion.

    Mirrors persistent / grid-limited kernels (the "fewer, longer blocks" remedy, as in
    Kernelet-style slicing or a persistent cuDNN/CUTLASS kernel launched on a share of the
    SMs): kernels at the same ASAP level on different streams may run together; each gets at
    most its share of one wave, ``ceil(wave x t / T)``, where ``wave`` is the blocks the whole
    GPU holds at once (``sm_count x blocks_per_sm``), ``t`` its isolated time and ``T`` the
    summed isolated time of its level's kernels. Each remaining block loops over
    ``ceil(blocks / cap)`` of the original blocks (see
    :func:`~sim.scheduling.base.capped_launch`), so the kernel keeps its work but leaves SMs to
    its peers instead of taking every SM first (leftover policy). Critical-path kernels
    (zero slack), kernels alone at their level, and grids within their share are unchanged:
    the cap makes room for the critical path, it never slows it.

    Why the block time is scaled rather than re-priced by the cost model: a block's time
    stands for its share (1 / blocks per SM) of an SM's throughput, and the engine lets
    blocks of other kernels use the rest of the SM at full speed. Re-pricing a capped grid
    would give its lone block the whole SM's throughput while other kernels' blocks run
    beside it undiminished, counting the SM twice.
    """

    name: str = "cap"

    def apply(self, ctx: ScheduleContext, schedule: Schedule) -> Schedule:
        graph = ctx.graph.subgraph(schedule.order)
        level = generations(graph)
        streams_at: dict[int, set[int]] = {}
        time_at: dict[int, float] = {}
        for node in schedule.order:
            streams_at.setdefault(level[node], set()).add(schedule.stream_of[node])
            time_at[level[node]] = time_at.get(level[node], 0.0) + ctx.isolated_s[node]
        slack, _ = slacks(ctx, schedule)
        caps: dict[Node, int] = dict(schedule.grid_cap)
        for node in schedule.order:
            if len(streams_at[level[node]]) < 2 or slack[node] == 0.0:
                continue
            kernel = ctx.kernel(node)
            share = ctx.isolated_s[node] / time_at[level[node]]
            cap = math.ceil(wave_size(kernel, ctx.gpu) * share)
            if cap < kernel.blocks:
                caps[node] = min(cap, caps.get(node, cap))
        return replace(schedule, grid_cap=caps)


@dataclass(frozen=True)
class SMPartition:
    """Disjoint SM partitions per stream, sized in proportion to each stream's work.

    Mirrors CUDA green contexts (``cuGreenCtxCreate`` over an SM resource split, one
    context per stream) and MPS's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``-style SM shares:
    every stream's kernels run only on its own SMs, so the block dispatcher's leftover
    policy can no longer let one large kernel take the whole GPU ahead of the kernels of
    other streams; the price is that a stream cannot use the SMs of the others even while
    they are idle (the partition is static for the whole step).

    How the SMs are split, deterministically: a stream's *work* is the summed isolated time
    of its kernels. Every partition gets one SM; the other ``sm_count - P`` SMs go in
    proportion to work, rounded down, and the SMs left by rounding go one each to the
    largest remainders (ties: lower stream index). Partitions are contiguous SM ranges in
    stream-index order. With more streams than ``max_partitions`` (or than SMs), streams
    are first folded into that many partitions, heaviest stream first onto the partition
    with the least work so far (ties: lower index) -- streams folded together share their
    partition as streams normally share the GPU. A schedule with one stream, or one
    partition, is unchanged. Launch order, streams, priorities and grids: the base
    policy's. Registry names: ``partition`` (one partition per stream, up to one per SM)
    and ``partition:N`` (at most ``N`` partitions).
    """

    #: At most this many partitions (``None``: as many as SMs allow).
    max_partitions: int | None = None

    def __post_init__(self) -> None:
        if self.max_partitions is not None and self.max_partitions < 1:
            raise GpusimError(f"modifier 'partition': max_partitions must be >= 1 "
                              f"(got {self.max_partitions})")

    @property
    def name(self) -> str:
        """``partition``, or ``partition:N`` with a partition limit."""
        if self.max_partitions is None:
            return "partition"
        return f"partition:{self.max_partitions}"

    def apply(self, ctx: ScheduleContext, schedule: Schedule) -> Schedule:
        streams = sorted(set(schedule.stream_of[n] for n in schedule.order))
        work = dict.fromkeys(streams, 0.0)
        for node in schedule.order:
            work[schedule.stream_of[node]] += ctx.isolated_s[node]
        limit = ctx.gpu.sm_count if self.max_partitions is None else min(
            self.max_partitions, ctx.gpu.sm_count)
        group_of = fold_streams(work, limit)
        groups = sorted(set(group_of.values()))
        if len(groups) < 2:
            return schedule
        group_work = [sum(w for s, w in work.items() if group_of[s] == g) for g in groups]
        sizes = proportional_split(ctx.gpu.sm_count, group_work)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        ranges = {g: tuple(range(start, start + size))
                  for g, start, size in zip(groups, starts, sizes, strict=True)}
        return replace(schedule, sms={s: ranges[group_of[s]] for s in streams})


def fold_streams(work: dict[int, float], partitions: int) -> dict[int, int]:
    """Partition index of each stream: its own (in stream order) when there are at most
    ``partitions`` streams, else longest-processing-time folding (heaviest stream first
    onto the partition with the least work; ties by stream / partition index). Partitions
    are numbered by their first (lowest) stream."""
    streams = sorted(work)
    if len(streams) <= partitions:
        return {s: i for i, s in enumerate(streams)}
    loads = [(0.0, i) for i in range(partitions)]
    heapq.heapify(loads)
    bin_of: dict[int, int] = {}
    for s in sorted(streams, key=lambda s: (-work[s], s)):
        load, i = heapq.heappop(loads)
        bin_of[s] = i
        heapq.heappush(loads, (load + work[s], i))
    # Renumber partitions by their lowest stream so that SM ranges follow stream order.
    first: dict[int, int] = {}
    for s in streams:
        first.setdefault(bin_of[s], len(first))
    return {s: first[bin_of[s]] for s in streams}


def proportional_split(total: int, weights: list[float]) -> list[int]:
    """``total`` items split into ``len(weights)`` shares of at least 1 each, the rest in
    proportion to ``weights`` by largest remainder (ties: lower index); equal weights for
    an all-zero input."""
    count = len(weights)
    if count > total:
        raise ValueError(f"cannot give {count} shares at least 1 of {total}")
    spare = total - count
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * count, float(count)
    quotas = [spare * w / weight_sum for w in weights]
    sizes = [1 + math.floor(q) for q in quotas]
    left = total - sum(sizes)
    by_remainder = sorted(range(count), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    for i in by_remainder[:left]:
        sizes[i] += 1
    return sizes
