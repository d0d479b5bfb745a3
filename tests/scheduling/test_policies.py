"""Scheduling policies on small hand-made kernel DAGs: streams, events, order, registry."""

from __future__ import annotations

import math

import networkx as nx
import pytest

from gpu_models.cost import get_cost_model, isolated_time_s
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelCost, KernelSpec
from gpu_models.spec import GPUSpec
from sim.engine.engine import simulate
from sim.scheduling import (
    DEFAULT_POLICIES,
    CriticalPath,
    Schedule,
    ScheduleContext,
    Stages,
    capped_launch,
    check_schedule,
    event_count,
    get_policy,
    to_program,
)
from sim.scheduling.dag import min_stream_assignment
from sim.scheduling.stages import segments, units

ROOFLINE = get_cost_model("roofline")


def kernel(name: str, *, blocks: int = 132, kind: str = "elementwise",
           flops: float = 1e9, dram_bytes: float = 1e6) -> KernelSpec:
    return KernelSpec(name=name, kind=kind, grid=(blocks, 1, 1), threads=256,
                      regs_per_thread=32, smem_per_block_B=0, flops=flops,
                      dram_bytes=dram_bytes)


def graph_of(edges: list[tuple[str, str]], *, attrs: dict[str, dict] | None = None,
             nodes: list[str] | None = None, kinds: dict[str, str] | None = None,
             flops: dict[str, float] | None = None) -> nx.DiGraph:
    """A kernel DAG; nodes are inserted in the order of ``nodes`` (else first mention)."""
    order = list(nodes or dict.fromkeys(n for e in edges for n in e))
    g = nx.DiGraph()
    for n in order:
        g.add_node(n, kernel=kernel(n, kind=(kinds or {}).get(n, "elementwise"),
                                    flops=(flops or {}).get(n, 1e9)),
                   **(attrs or {}).get(n, {}))
    g.add_edges_from(edges)
    return g


def context(graph: nx.DiGraph, gpu: GPUSpec, *, evaluate: bool = False) -> ScheduleContext:
    costs = {n: ROOFLINE(k, gpu) for n, k in graph.nodes(data="kernel")}
    iso = {n: isolated_time_s(k, gpu, ROOFLINE) for n, k in graph.nodes(data="kernel")}
    ctx = ScheduleContext(graph, gpu, costs, iso)
    if not evaluate:
        return ctx
    return ScheduleContext(graph, gpu, costs, iso,
                           evaluate=lambda s: simulate(to_program(ctx, s)).makespan_s)


#: Inception-like module: a stem, four branches of different lengths, a join.
INCEPTION = [("stem", "a1"), ("stem", "b1"), ("b1", "b2"), ("stem", "c1"), ("c1", "c2"),
             ("c2", "c3"), ("stem", "d1"), ("a1", "cat"), ("b2", "cat"), ("c3", "cat"),
             ("d1", "cat")]
INCEPTION_BRANCH = {n: {"branch": f"m.{n[0]}", "module": "m", "phase": "forward"}
                    for n in ("a1", "b1", "b2", "c1", "c2", "c3", "d1")}


# ---------------------------------------------------------------------- registry
def test_registry_names_and_composition() -> None:
    assert get_policy("serial").name == "serial"
    assert get_policy("critical-path:8").name == "critical-path:8"
    assert get_policy("critical-path:4").name == "critical-path"
    assert get_policy("min-streams+priority+cap").name == "min-streams+priority+cap"
    for name in DEFAULT_POLICIES:
        assert get_policy(name).name == name


@pytest.mark.parametrize(("name", "fragment"), [
    ("nope", "'nope'"),
    ("serial:3", "takes no ':' parameter"),
    ("critical-path:x", "'x' is not an integer"),
    ("critical-path:0", "streams must be >= 1"),
    ("min-streams+turbo", "'turbo'"),
    ("", "non-empty"),
])
def test_registry_rejects_bad_names(name: str, fragment: str) -> None:
    with pytest.raises(GpusimError, match=fragment):
        get_policy(name)


# ---------------------------------------------------------------------- base policies
def test_serial_is_one_stream_in_framework_order(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION, nodes=["stem", "a1", "b1", "b2", "c1", "c2", "c3", "d1", "cat"])
    program = to_program(context(g, h100), get_policy("serial").schedule(context(g, h100)))
    assert [k.name for k in program.kernels] == list(g.nodes)
    assert len(program.streams) == 1 and event_count(program) == 0


def test_branches_one_stream_per_branch_with_events_at_fork_and_join(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION, attrs=INCEPTION_BRANCH)
    ctx = context(g, h100)
    schedule = get_policy("branches").schedule(ctx)
    streams = {b: {schedule.stream_of[n] for n in g if g.nodes[n].get("branch") == b}
               for b in ("m.a", "m.b", "m.c", "m.d")}
    assert all(len(s) == 1 for s in streams.values())
    assert len({next(iter(s)) for s in streams.values()}) == 4
    assert schedule.stream_of["stem"] == schedule.stream_of["cat"] == 0
    # One branch shares stream 0 with stem and join: 3 fork events + 3 join events.
    assert event_count(to_program(ctx, schedule)) == 6


def test_branches_reuse_streams_across_modules(h100: GPUSpec) -> None:
    edges = INCEPTION + [(s.replace("stem", "cat"), t + "2") if s == "stem" else
                         (s + "2", t.replace("cat", "cat2")) for s, t in INCEPTION
                         if s == "stem" or t == "cat"]
    attrs = dict(INCEPTION_BRANCH)
    attrs.update({n + "2": {"branch": f"m2.{n[0]}"} for n in ("a1", "b2", "c3", "d1")})
    g = graph_of(edges, attrs=attrs)
    assert get_policy("branches").schedule(context(g, h100)).stream_count == 4


def test_min_streams_is_a_minimum_path_cover_of_the_reduction() -> None:
    g = graph_of(INCEPTION)
    streams = min_stream_assignment(g)
    # Four parallel branches need four streams; stem and cat extend two of the chains.
    assert len(set(streams.values())) == 4
    # Redundant (transitive) edges do not add streams or events.
    g.add_edge("stem", "cat")
    assert len(set(min_stream_assignment(g).values())) == 4


def test_min_streams_events_only_on_unmatched_reduction_edges(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION)
    g.add_edge("stem", "c3")  # transitive: implied by stem -> c1 -> c2 -> c3
    ctx = context(g, h100)
    program = to_program(ctx, get_policy("min-streams").schedule(ctx))
    # 9 reduction edges... 11 minus the matched ones: 4 chains cover 9 nodes with 5 matches.
    reduced_edges = nx.transitive_reduction(g).number_of_edges()
    assert event_count(program) == reduced_edges - (g.number_of_nodes() - 4)


def test_levels_puts_each_level_on_separate_streams_with_barriers(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION)
    ctx = context(g, h100)
    schedule = get_policy("levels").schedule(ctx)
    for gen in nx.topological_generations(g):
        assert len({schedule.stream_of[n] for n in gen}) == len(gen)
    result = simulate(to_program(ctx, schedule))
    ends = {k.name: k.end_s for k in result.kernels}
    starts = {k.name: k.start_s for k in result.kernels}
    # Barrier: level 2 (b2, c2) starts only after every level-1 kernel (a1, d1 too) ends.
    assert min(starts["b2"], starts["c2"]) >= max(ends[n] for n in ("a1", "b1", "c1", "d1"))


def test_critical_path_uses_at_most_k_streams_and_puts_the_long_chain_first(
        h100: GPUSpec) -> None:
    g = graph_of(INCEPTION)
    ctx = context(g, h100)
    schedule = CriticalPath(streams=2).schedule(ctx)
    assert schedule.stream_count <= 2
    # c1 heads the longest branch: it is the first branch kernel launched.
    first_branch = next(n for n in schedule.order if n not in ("stem",))
    assert first_branch == "c1"


def test_stages_searches_a_module_and_uses_the_simulator(h100: GPUSpec) -> None:
    kinds = {n: "conv_fwd" for n in ("a1", "b1", "c1", "d1")}
    g = graph_of(INCEPTION, kinds=kinds)
    calls: list[Schedule] = []
    ctx = context(g, h100, evaluate=True)
    counting = ScheduleContext(ctx.graph, ctx.gpu, ctx.costs, ctx.isolated_s,
                               evaluate=lambda s: calls.append(s) or ctx.evaluate(s))
    schedule = Stages().schedule(counting)
    check_schedule(g, schedule)
    assert calls, "the stage costs come from the simulator"
    assert "1 slice(s) searched" in schedule.note
    assert set(schedule.order) == set(g.nodes)


def test_stages_segments_cut_at_joins_and_units_follow_operators(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION, kinds={"b2": "conv_fwd"})
    assert segments(g) == [["stem"], ["a1", "b1", "b2", "c1", "c2", "c3", "d1"], ["cat"]]
    ctx = context(g, h100)
    # b2 is heavy: it starts its own unit; c1 -> c2 -> c3 is one unit.
    assert units(ctx, segments(g)[1]) == [("a1",), ("b1",), ("b2",), ("c1", "c2", "c3"),
                                          ("d1",)]


def test_stages_falls_back_when_the_budget_is_spent(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION)
    schedule = Stages(max_total_evaluations=0).schedule(context(g, h100, evaluate=True))
    assert "0 slice(s) searched" in schedule.note
    check_schedule(g, schedule)


def test_stages_rejects_bad_settings() -> None:
    with pytest.raises(GpusimError, match="max_groups"):
        Stages(max_groups=0)


# ---------------------------------------------------------------------- modifiers
def test_priority_puts_the_critical_stream_first(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION, flops={"c1": 1e11, "c2": 1e11, "c3": 1e11})
    ctx = context(g, h100)
    schedule = get_policy("min-streams+priority").schedule(ctx)
    critical = schedule.stream_of["c2"]
    assert schedule.priorities[critical] == -(h100.stream_priority_levels - 1)
    assert all(p >= schedule.priorities[critical] for p in schedule.priorities.values())
    # Streams of the short branches (not also carrying stem or join) are less urgent.
    shared = {schedule.stream_of["stem"], schedule.stream_of["cat"]}
    side = {schedule.stream_of[n] for n in ("a1", "b1", "d1")} - shared
    assert side and all(schedule.priorities[s] > schedule.priorities[critical] for s in side)
    assert schedule.order == get_policy("min-streams").schedule(ctx).order


def test_cap_shrinks_only_non_critical_concurrent_grids(h100: GPUSpec) -> None:
    g = nx.DiGraph()
    g.add_node("big", kernel=kernel("big", blocks=20_000, flops=1e12))
    g.add_node("small", kernel=kernel("small", blocks=20_000, flops=1e11))
    ctx = context(g, h100)
    schedule = get_policy("min-streams+cap").schedule(ctx)
    assert "big" not in schedule.grid_cap  # on the critical path
    cap = schedule.grid_cap["small"]
    assert 1 <= cap < 20_000
    program = to_program(ctx, schedule)
    small = program.kernel("small")
    assert small.blocks == cap
    assert small.block_time_s == pytest.approx(
        ctx.costs["small"].block_time_s * math.ceil(20_000 / cap))
    assert small.dram_bytes == ctx.costs["small"].dram_bytes


def test_capped_launch_keeps_work() -> None:
    k = kernel("k", blocks=1000)
    cost = KernelCost(block_time_s=2e-6, dram_bytes=5.0)
    assert capped_launch(k, cost, None) == (1000, 2e-6)
    assert capped_launch(k, cost, 5000) == (1000, 2e-6)
    blocks, block_s = capped_launch(k, cost, 300)
    assert blocks == 300 and block_s == pytest.approx(4 * 2e-6)
    with pytest.raises(GpusimError, match="'k'"):
        capped_launch(k, cost, 0)


# ---------------------------------------------------------------------- programs
def test_to_program_prunes_implied_events(h100: GPUSpec) -> None:
    # x on stream 1 feeds y and z on stream 0: only the first of them needs the event.
    g = graph_of([("x", "y"), ("x", "z"), ("y", "z")])
    ctx = context(g, h100)
    schedule = Schedule(order=("x", "y", "z"), stream_of={"x": 1, "y": 0, "z": 0})
    program = to_program(ctx, schedule)
    assert program.kernel("y").after == ("x",)
    assert program.kernel("z").after == ()


def test_to_program_rejects_a_non_topological_order(h100: GPUSpec) -> None:
    g = graph_of([("x", "y")])
    bad = Schedule(order=("y", "x"), stream_of={"x": 0, "y": 1})
    with pytest.raises(GpusimError, match="before its dependency 'x'"):
        to_program(context(g, h100), bad)
    with pytest.raises(GpusimError, match="no stream"):
        to_program(context(g, h100), Schedule(order=("x", "y"), stream_of={"x": 0}))


def test_host_pays_for_events(h100: GPUSpec) -> None:
    g = graph_of(INCEPTION, attrs=INCEPTION_BRANCH)
    ctx = context(g, h100)
    program = to_program(ctx, get_policy("branches").schedule(ctx),
                         launch_overhead_s=0.0, event_overhead_s=1e-3)
    result = simulate(program)
    # Six events at 1 ms each dominate: the host is the bottleneck.
    assert result.makespan_s >= 6e-3
