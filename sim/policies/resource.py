"""Resource-aware variants: modifiers applied on top of any base policy's schedule.

The published analysis of concurrent layer scheduling finds that streams alone recover
little because the block dispatcher serves the oldest kernel first (leftover policy) and a
large kernel fills every SM. The remedies it points to are implemented here as
:class:`Modifier` strategies that take a base :class:`~sim.policies.base.Schedule` and
return a changed one; the registry composes them by name (``min-streams+priority+cap``):

* ``priority`` — CUDA stream priorities for the critical path (:class:`CriticalPriority`);
* ``cap`` — capped grids, i.e. persistent kernels with fewer, longer blocks, so that
  concurrent kernels leave SMs to each other (:class:`GridCap`).

SM partitioning per stream (CUDA green contexts / MPS-style SM masks) needs the engine to
restrict a stream's blocks to a subset of SMs; the engine has no such option yet, so there
is no modifier for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

from gpu_models.cost import wave_size
from sim.policies.base import (
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

    name: str

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
    :func:`~sim.policies.base.capped_launch`), so the kernel keeps its work but leaves SMs to
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
