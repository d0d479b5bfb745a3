"""The ``stages`` policy: IOS-style dynamic programming over stages.

IOS (Ding et al., MLSys'21, "Inter-Operator Scheduler for CNN Acceleration") splits a
network into *stages* run one after another; inside a stage, independent groups of
operators run concurrently, one stream per group, and the stage ends with a
synchronisation. It picks the stages by dynamic programming over the operators still to
run, timing each candidate stage on the GPU. Here the simulator is that GPU: each candidate
stage is timed by simulating it alone (``ScheduleContext.evaluate``; without one, the
longest group at isolated kernel times), memoised by its kernel set.

IOS schedules *operators* (a convolution with its fused batch-norm and activation); a kernel
DAG has one kernel per piece, so kernels are first grouped into **units**: a unit starts at
a heavy kernel (convolution or GEMM) or wherever the DAG forks or joins, and takes the chain
of light kernels that follows it. The search is exponential, so, as IOS does, it is bounded:

* the DAG is cut at *articulation kernels* (every other kernel is an ancestor or a
  descendant: the joins between modules); each segment between two is searched alone and
  each articulation kernel is a stage of its own;
* a segment of more than ``max_segment_units`` units is cut into horizontal slices of that
  many (by ASAP level: a slice depends only on earlier slices), searched one by one;
* a stage holds at most ``max_stage_units`` units in at most ``max_groups`` groups (a group
  is a weakly connected part of the stage and runs in order on one stream);
* a slice whose search needs more than ``max_evaluations`` stage simulations or
  ``max_candidates`` candidate stages, and every slice once the total budget of stage
  simulations is spent, falls back. The total budget scales with the graph:
  ``evaluations_per_unit`` per operator unit, at least ``min_total_evaluations`` and at most
  ``max_total_evaluations`` (the hard guard; an explicit ``total_evaluations`` overrides
  the scaling; a slice search begun under budget may finish, at most ``max_evaluations``
  over). The guards count work, not wall time, so the schedule does not depend on
  the machine.

IOS never loses to sequential execution, and neither does this search:

* a searched slice keeps its stage plan only when simulating it beats simulating the slice
  as **one sequential stage** (one stream, framework order, no events);
* a slice that falls back takes the cheaper, by simulation, of that sequential stage and
  one stage per ASAP level of its units; with no simulator, or once the budget is spent,
  it takes the sequential stage (ties go to sequential: fewer events);
* finally the whole schedule is simulated against ``serial`` (one stream, framework
  order) and ``serial`` is returned when it is faster. So under the simulator that prices
  the candidates, ``stages`` is never slower than ``serial``.

Launch order: stage by stage, the groups of a stage interleaved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

import networkx as nx

from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind
from sim.scheduling.base import Node, Schedule, ScheduleContext
from workloads.graph import framework_order

#: Kernels that start a unit (IOS's operators are built around these).
HEAVY_KINDS: frozenset[KernelKind] = frozenset({
    KernelKind.CONV_FWD, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD, KernelKind.GEMM,
})

#: A stage: its groups, each a tuple of kernels in launch order.
Stage = tuple[tuple[Node, ...], ...]


class _OutOfBudget(Exception):
    """The search of a segment spent its budget; the segment falls back to ASAP levels."""


@dataclass(frozen=True)
class Stages:
    """IOS-style stage partition by dynamic programming, the simulator as cost model."""

    max_stage_units: int = 8
    max_groups: int = 4
    max_segment_units: int = 6
    max_evaluations: int = 63
    #: Stage simulations per operator unit of the graph (the scaled total budget) ...
    evaluations_per_unit: int = 1
    #: ... at least this many ...
    min_total_evaluations: int = 400
    #: ... and never more than this many (the hard guard on the search's total work).
    max_total_evaluations: int = 1200
    #: A fixed total budget instead of the scaled one (still at most the hard guard).
    total_evaluations: int | None = None
    max_candidates: int = 50_000
    name: str = "stages"

    def __post_init__(self) -> None:
        for what in ("max_stage_units", "max_groups", "max_segment_units"):
            if getattr(self, what) < 1:
                raise GpusimError(f"policy {self.name!r}: {what} must be >= 1")
        for what in ("max_evaluations", "evaluations_per_unit", "min_total_evaluations",
                     "max_total_evaluations", "max_candidates"):
            if getattr(self, what) < 0:
                raise GpusimError(f"policy {self.name!r}: {what} must be >= 0")
        if self.total_evaluations is not None and self.total_evaluations < 0:
            raise GpusimError(f"policy {self.name!r}: total_evaluations must be >= 0")

    def evaluation_budget(self, unit_count: int) -> int:
        """Total stage simulations allowed for a graph of ``unit_count`` operator units."""
        if self.total_evaluations is not None:
            return min(self.total_evaluations, self.max_total_evaluations)
        scaled = max(self.min_total_evaluations, self.evaluations_per_unit * unit_count)
        return min(scaled, self.max_total_evaluations)

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        all_segments = segments(ctx.graph)
        unit_count = sum(len(units(ctx, seg)) if len(seg) > 1 else 1 for seg in all_segments)
        search = _Search(ctx, self, budget=self.evaluation_budget(unit_count))
        stages: list[Stage] = []
        for segment in all_segments:
            stages.extend(search.segment_stages(segment))
        note = (f"{search.searched} slice(s) searched, {search.fallbacks} fell back "
                f"({search.sequential} slice(s) sequential), {search.evaluations} stage "
                f"simulations of {search.budget}")
        schedule = stages_schedule(stages, note=note)
        if ctx.evaluate is None or not stages:
            return schedule
        # Never lose to the framework default: simulate both whole schedules.
        serial = stages_schedule([(tuple(framework_order(ctx.graph)),)])
        if serial.order == schedule.order and len(stages) == 1:
            return schedule
        if ctx.evaluate(serial) < ctx.evaluate(schedule):
            return stages_schedule([(tuple(framework_order(ctx.graph)),)],
                                   note=note + "; serial was faster, kept serial")
        return schedule


def segments(graph: nx.DiGraph) -> list[list[Node]]:
    """The DAG cut at articulation kernels, in topological order; each articulation kernel
    is a segment of its own."""
    order = framework_order(graph)
    position = {n: i for i, n in enumerate(order)}
    # Bitsets of ancestors / descendants, as Python ints indexed by position.
    anc = [0] * len(order)
    for i, node in enumerate(order):
        for pred in graph.predecessors(node):
            anc[i] |= anc[position[pred]] | (1 << position[pred])
    desc = [0] * len(order)
    for i in reversed(range(len(order))):
        for succ in graph.successors(order[i]):
            desc[i] |= desc[position[succ]] | (1 << position[succ])
    others = len(order) - 1
    out: list[list[Node]] = []
    current: list[Node] = []
    for i, node in enumerate(order):
        if anc[i].bit_count() + desc[i].bit_count() == others:
            if current:
                out.append(current)
                current = []
            out.append([node])
        else:
            current.append(node)
    if current:
        out.append(current)
    return out


def units(ctx: ScheduleContext, segment: list[Node]) -> list[tuple[Node, ...]]:
    """``segment`` (in topological order) grouped into operator units, in topological order:
    a kernel joins its predecessor's unit when it is light, has that one predecessor in the
    segment, and is that predecessor's only successor in the segment."""
    sub = ctx.graph.subgraph(segment)
    unit_of: dict[Node, int] = {}
    out: list[list[Node]] = []
    for node in segment:
        preds = list(sub.predecessors(node))
        if (len(preds) == 1 and sub.out_degree(preds[0]) == 1
                and ctx.kernel(node).kind not in HEAVY_KINDS):
            unit = unit_of[preds[0]]
            out[unit].append(node)
        else:
            unit = len(out)
            out.append([node])
        unit_of[node] = unit
    return [tuple(u) for u in out]


def stages_schedule(stages: list[Stage], *, note: str = "") -> Schedule:
    """Stages run one after another: group ``j`` of a stage on stream ``j``, and every
    stream of a stage waits for every stream of the previous one."""
    order: list[Node] = []
    stream_of: dict[Node, int] = {}
    barriers: list[tuple[Node, Node]] = []
    previous_ends: list[Node] = []
    for stage in stages:
        for j, group in enumerate(stage):
            for node in group:
                stream_of[node] = j
        longest = max(len(g) for g in stage)
        order.extend(g[i] for i in range(longest) for g in stage if i < len(g))
        barriers.extend((u, g[0]) for u in previous_ends for g in stage)
        previous_ends = [g[-1] for g in stage]
    return Schedule(order=tuple(order), stream_of=stream_of, barriers=tuple(barriers),
                    note=note)


@dataclass
class _Search:
    """The dynamic programme, one segment at a time (mutable search state)."""

    ctx: ScheduleContext
    policy: Stages
    #: Total stage simulations this search may run.
    budget: int = 0
    evaluations: int = 0
    searched: int = 0
    fallbacks: int = 0
    #: Slices that ended as one sequential stage.
    sequential: int = 0
    _stage_cost: dict[frozenset[Node], float] = field(default_factory=dict)
    _position: dict[Node, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._position = {n: i for i, n in enumerate(framework_order(self.ctx.graph))}

    def segment_stages(self, segment: list[Node]) -> list[Stage]:
        if len(segment) == 1:
            return [((segment[0],),)]
        unit_list = units(self.ctx, segment)
        unit_graph = self._unit_graph(unit_list)
        # Horizontal slices of at most max_segment_units units: each slice of a topological
        # order (by ASAP level) can only depend on earlier slices, so slices run in turn.
        level = {u: i for i, gen in enumerate(nx.topological_generations(unit_graph))
                 for u in gen}
        ordered = sorted(unit_graph.nodes, key=lambda u: (level[u], u))
        size = self.policy.max_segment_units
        stages: list[Stage] = []
        for start in range(0, len(ordered), size):
            chunk = sorted(ordered[start:start + size])
            chunk_units = [unit_list[u] for u in chunk]
            sequential: list[Stage] = [(tuple(sorted(
                (n for unit in chunk_units for n in unit), key=self._position.__getitem__)),)]
            try:
                if self.evaluations >= self.budget:
                    raise _OutOfBudget
                found = self._search(chunk_units)
            except _OutOfBudget:
                self.fallbacks += 1
                chunk_graph = self._unit_graph(chunk_units)
                levels = [self._groups(chunk_units, chunk_graph, sum(1 << u for u in gen))
                          for gen in nx.topological_generations(chunk_graph)]
                found = self._cheaper(sequential, levels, unpriced=sequential)
            else:
                self.searched += 1
                found = self._cheaper(sequential, found, unpriced=found)
            if found is sequential:
                self.sequential += 1
            stages.extend(found)
        return stages

    def _cheaper(self, sequential: list[Stage], other: list[Stage],
                 unpriced: list[Stage]) -> list[Stage]:
        """``other`` when simulating it beats the sequential stage, else sequential;
        ``unpriced`` without a simulator or once the budget is spent (two simulations)."""
        if len(other) == 1 and other[0] == sequential[0]:
            return sequential
        evaluate = self.ctx.evaluate
        if evaluate is None or self.evaluations + 2 > self.budget:
            return unpriced
        self.evaluations += 2
        if evaluate(stages_schedule(other)) < evaluate(stages_schedule(sequential)):
            return other
        return sequential

    def _unit_graph(self, unit_list: list[tuple[Node, ...]]) -> nx.DiGraph:
        unit_of = {n: i for i, unit in enumerate(unit_list) for n in unit}
        graph = nx.DiGraph()
        graph.add_nodes_from(range(len(unit_list)))
        graph.add_edges_from(
            (unit_of[u], unit_of[v]) for u, v in self.ctx.graph.subgraph(unit_of).edges
            if unit_of[u] != unit_of[v])
        return graph

    def _search(self, unit_list: list[tuple[Node, ...]]) -> list[Stage]:
        """Best stage sequence of one segment's units (raises :class:`_OutOfBudget`)."""
        unit_graph = self._unit_graph(unit_list)
        preds = [sum(1 << p for p in unit_graph.predecessors(u)) for u in unit_graph.nodes]
        count = len(unit_list)
        full = (1 << count) - 1
        limit = self.policy.max_stage_units
        evaluations_left = [self.policy.max_evaluations]
        candidates_left = [self.policy.max_candidates]

        def stages_from(done: int) -> list[int]:
            """Every admissible stage (bitmask of units) that can run once ``done`` has."""
            found: list[int] = []

            def grow(i: int, chosen: int, size: int) -> None:
                if i == count:
                    if chosen:
                        found.append(chosen)
                    return
                grow(i + 1, chosen, size)  # leave unit i out
                bit = 1 << i
                if size < limit and not done & bit and preds[i] & ~(done | chosen) == 0:
                    grow(i + 1, chosen | bit, size + 1)

            grow(0, 0, 0)
            candidates_left[0] -= len(found)
            if candidates_left[0] < 0:
                raise _OutOfBudget
            return [s for s in found if nx.number_weakly_connected_components(
                unit_graph.subgraph(_bits(s))) <= self.policy.max_groups]

        @cache
        def best(done: int) -> tuple[float, tuple[int, ...]]:
            if done == full:
                return 0.0, ()
            options = []
            for stage in stages_from(done):
                cost = self._cost(unit_list, unit_graph, stage, evaluations_left)
                rest, plan = best(done | stage)
                options.append((cost + rest, (stage, *plan)))
            return min(options)

        _, plan = best(0)
        return [self._groups(unit_list, unit_graph, stage) for stage in plan]

    def _groups(self, unit_list: list[tuple[Node, ...]], unit_graph: nx.DiGraph,
                stage: int) -> Stage:
        """The stage's groups: weakly connected sets of its units, kernels in order."""
        components = nx.weakly_connected_components(unit_graph.subgraph(_bits(stage)))
        groups = sorted(sorted(c) for c in components)
        return tuple(tuple(n for u in group for n in unit_list[u]) for group in groups)

    def _cost(self, unit_list: list[tuple[Node, ...]], unit_graph: nx.DiGraph, stage: int,
              evaluations_left: list[int]) -> float:
        """Seconds the stage takes alone (memoised across segments)."""
        groups = self._groups(unit_list, unit_graph, stage)
        key = frozenset(n for g in groups for n in g)
        if key not in self._stage_cost:
            if self.ctx.evaluate is None:
                self._stage_cost[key] = _analytic_stage_s(groups, self.ctx.isolated_s)
            else:
                evaluations_left[0] -= 1
                if evaluations_left[0] < 0:
                    raise _OutOfBudget
                self.evaluations += 1
                self._stage_cost[key] = self.ctx.evaluate(stages_schedule([groups]))
        return self._stage_cost[key]


def _bits(mask: int) -> list[int]:
    """Indices of the set bits of ``mask``."""
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _analytic_stage_s(groups: Stage, isolated_s: Mapping[Node, float]) -> float:
    """Without a simulator: the longest group at isolated kernel times."""
    return max(sum(isolated_s[n] for n in g) for g in groups)
