"""The ``partition`` modifier: disjoint SM partitions per stream, sized by each stream's
work (CUDA green contexts), and the registry's ``partition:N``."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_models.cost import get_cost_model, isolated_time_s
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelSpec
from gpu_models.presets import load_preset
from sim.analysis.limits import compute_limits
from sim.engine.engine import simulate
from sim.scheduling import (
    Schedule,
    ScheduleContext,
    SMPartition,
    get_policy,
    modifier_names,
    to_program,
)
from sim.scheduling.modifiers import fold_streams, proportional_split

ROOFLINE = get_cost_model("roofline")
H100 = load_preset("h100")


def kernel(name: str, blocks: int = 1056, flops: float = 1e9) -> KernelSpec:
    return KernelSpec(name=name, kind="elementwise", grid=(blocks, 1, 1), threads=256,
                      regs_per_thread=32, smem_per_block_B=0, flops=flops, dram_bytes=1e6)


def context(graph: nx.DiGraph) -> ScheduleContext:
    costs = {n: ROOFLINE(k, H100) for n, k in graph.nodes(data="kernel")}
    iso = {n: isolated_time_s(k, H100, ROOFLINE) for n, k in graph.nodes(data="kernel")}
    return ScheduleContext(graph, H100, costs, iso)


def fork(work: dict[str, float]) -> nx.DiGraph:
    """A source kernel, one branch per entry of ``work`` (FLOPs), and a join."""
    g = nx.DiGraph()
    g.add_node("src", kernel=kernel("src", blocks=132))
    for name, flops in work.items():
        g.add_node(name, kernel=kernel(name, flops=flops))
    g.add_node("join", kernel=kernel("join", blocks=132))
    g.add_edges_from(("src", n) for n in work)
    g.add_edges_from((n, "join") for n in work)
    return g


def test_proportional_split() -> None:
    # 2 SMs given first, 130 shared 3:1 -> 97.5 / 32.5; the spare SM goes to the first
    # (equal remainders: lower index).
    assert proportional_split(132, [3.0, 1.0]) == [99, 33]
    assert proportional_split(132, [0.0, 0.0, 0.0]) == [44, 44, 44]
    assert proportional_split(3, [1e9, 1.0, 0.0]) == [1, 1, 1]
    # 1 each, 6 shared: quotas 0.6 / 1.2 / 1.8 / 2.4 -> 1 + floor = 1, 2, 2, 3; the 2 SMs
    # left go to the largest remainders (0.8, then 0.6).
    assert proportional_split(10, [1.0, 2.0, 3.0, 4.0]) == [2, 2, 3, 3]
    with pytest.raises(ValueError, match="cannot give 3 shares"):
        proportional_split(2, [1.0, 1.0, 1.0])


def test_fold_streams_balances_work_deterministically() -> None:
    assert fold_streams({0: 1.0, 1: 2.0}, 4) == {0: 0, 1: 1}
    # LPT, heaviest first onto the lighter bin: 5 -> 0, 4 -> 1, 3 -> 1 (4 < 5), 2 -> 0
    # (5 < 7), 1 -> 0 (7 = 7: the lower bin).
    folded = fold_streams({0: 5.0, 1: 4.0, 2: 3.0, 3: 2.0, 4: 1.0}, 2)
    assert folded == {0: 0, 1: 1, 2: 1, 3: 0, 4: 0}


def test_partition_gives_disjoint_ranges_in_proportion_to_work() -> None:
    g = fork({"heavy": 3e12, "light": 1e12})
    ctx = context(g)
    base = get_policy("min-streams").schedule(ctx)
    schedule = get_policy("min-streams+partition").schedule(ctx)
    assert (schedule.order, dict(schedule.stream_of)) == (base.order, dict(base.stream_of))
    heavy, light = schedule.stream_of["heavy"], schedule.stream_of["light"]
    sms = schedule.sms
    assert set(sms) == {heavy, light}
    assert sorted(sms[heavy] + sms[light]) == list(range(132))
    assert len(sms[heavy]) > 2 * len(sms[light]) >= 2
    program = to_program(ctx, schedule)
    assert {s.name: s.sms for s in program.streams} == {f"s{k}": v for k, v in sms.items()}
    result = simulate(program)
    for record in result.kernels:
        allowed = set(program.stream(record.stream).sms or range(132))
        used = {sm for sm, n in enumerate(record.sm_blocks) if n}
        assert used <= allowed, record.name


def test_partition_of_one_stream_changes_nothing() -> None:
    ctx = context(fork({"a": 1e12, "b": 1e12}))
    assert get_policy("serial+partition").schedule(ctx) == get_policy("serial").schedule(ctx)
    assert get_policy("min-streams+partition:1").schedule(ctx).sms == {}


def test_partition_limit_folds_streams() -> None:
    ctx = context(fork({f"b{i}": (i + 1) * 1e11 for i in range(6)}))
    schedule = get_policy("min-streams+partition:2").schedule(ctx)
    ranges = set(schedule.sms.values())
    assert len(ranges) == 2
    assert sorted(sm for r in ranges for sm in r) == list(range(132))


def test_registry_names_and_errors() -> None:
    assert "partition" in modifier_names()
    assert get_policy("critical-path+priority+partition").name == (
        "critical-path+priority+partition")
    assert get_policy("min-streams+partition:4").name == "min-streams+partition:4"
    assert SMPartition().name == "partition"
    with pytest.raises(GpusimError, match="modifier 'cap' takes no ':' parameter"):
        get_policy("min-streams+cap:2")
    with pytest.raises(GpusimError, match="'x' is not an integer"):
        get_policy("min-streams+partition:x")
    with pytest.raises(GpusimError, match="max_partitions must be >= 1"):
        get_policy("min-streams+partition:0")
    with pytest.raises(GpusimError, match="unknown policy modifier"):
        get_policy("min-streams+parts")


def test_schedule_sms_default_empty() -> None:
    assert Schedule(order=("a",), stream_of={"a": 0}).sms == {}


@st.composite
def dags(draw: st.DrawFn) -> nx.DiGraph:
    count = draw(st.integers(2, 8))
    g = nx.DiGraph()
    for i in range(count):
        g.add_node(f"k{i}", kernel=kernel(f"k{i}", blocks=draw(st.integers(1, 3000)),
                                          flops=draw(st.floats(0, 2e10))))
    for j in range(1, count):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                g.add_edge(f"k{i}", f"k{j}")
    return g


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=dags())
def test_partitioned_policies_respect_dependencies_and_the_lower_bound(
        graph: nx.DiGraph) -> None:
    policies = ["min-streams+partition", "critical-path+priority+partition",
                "levels+partition:2"]
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=policies,
                            keep_results=True)
    assert report.results is not None
    for name, t in report.policies_s.items():
        assert report.lower_bound_s <= t * (1 + 1e-6), name
    for name, result in report.results.items():
        ends = {k.name: k.end_s for k in result.kernels}
        starts = {k.name: k.start_s for k in result.kernels}
        for u, v in graph.edges:
            assert starts[v] >= ends[u] - 1e-15, f"{name}: {v} started before {u} ended"
