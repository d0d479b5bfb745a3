"""Graph analysis: critical paths, level widths and the exact maximum conv antichain."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from workloads.analysis import (
    analyze,
    critical_path,
    max_antichain,
    parallelism_profile,
    topological_levels,
    width_per_level,
)
from workloads.layers import Layer, OpType


def _dag(n: int, edges: list[tuple[int, int]], convs: set[int]) -> nx.DiGraph:
    g = nx.DiGraph(name="random")
    for i in range(n):
        op = OpType.CONV2D if i in convs else OpType.RELU
        g.add_node(f"n{i}", layer=Layer(name=f"n{i}", op=op, inputs=((1, 1),), output=(1, 1),
                                         flops=i + 1))
    g.add_edges_from((f"n{u}", f"n{v}") for u, v in edges)
    return g


@st.composite
def random_dags(draw: st.DrawFn) -> nx.DiGraph:
    n = draw(st.integers(1, 11))
    pairs = [(u, v) for u in range(n) for v in range(u + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    convs = draw(st.sets(st.integers(0, n - 1)))
    return _dag(n, edges, convs)


def _brute_force_antichain(g: nx.DiGraph) -> int:
    convs = [n for n in g if g.nodes[n]["layer"].is_conv]
    closure = nx.transitive_closure_dag(g)
    best = 0
    for r in range(len(convs), 0, -1):
        for combo in itertools.combinations(convs, r):
            if all(not closure.has_edge(a, b) and not closure.has_edge(b, a)
                   for a, b in itertools.combinations(combo, 2)):
                return r
    return best


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_max_antichain_is_an_antichain_of_maximum_size(g: nx.DiGraph) -> None:
    chain = max_antichain(g)
    closure = nx.transitive_closure_dag(g)
    assert all(g.nodes[n]["layer"].is_conv for n in chain)
    for a, b in itertools.combinations(chain, 2):
        assert not closure.has_edge(a, b) and not closure.has_edge(b, a)
    assert len(chain) == _brute_force_antichain(g)


@settings(max_examples=100, deadline=None)
@given(random_dags())
def test_critical_path_and_levels(g: nx.DiGraph) -> None:
    ops, path = critical_path(g, lambda layer: 1)
    assert ops == len(path) == nx.dag_longest_path_length(g) + 1
    assert all(g.has_edge(a, b) for a, b in itertools.pairwise(path))
    flops, fpath = critical_path(g, lambda layer: layer.flops)
    assert flops == sum(g.nodes[n]["layer"].flops for n in fpath)
    for a, b in itertools.pairwise(fpath):
        assert g.has_edge(a, b)
    levels = topological_levels(g)
    assert sum(width_per_level(g)) == g.number_of_nodes()
    assert max(levels.values()) + 1 == ops
    for u, v in g.edges:
        assert levels[v] > levels[u]


def test_known_graph() -> None:
    # n0 -> {n1, n2, n3} -> n4: three parallel convs between two other ops.
    g = _dag(5, [(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 4)], {1, 2, 3})
    assert width_per_level(g) == [1, 3, 1]
    assert sorted(max_antichain(g)) == ["n1", "n2", "n3"]
    assert critical_path(g, lambda layer: layer.flops) == (1 + 4 + 5, ["n0", "n3", "n4"])


@pytest.mark.parametrize("name", ["densenet121", "inception_v3", "resnet152"])
def test_antichain_on_big_training_graphs(name: str) -> None:
    # Its speed (well under a second here) is a benchmark figure, not a timed assertion.
    g = workloads.build(name, batch=32, phase="training")
    result = analyze(g)
    # Weight gradients depend only on their output gradient: all of them can run at once.
    assert result.max_conv_antichain >= sum(
        1 for _, lay in g.nodes(data="layer") if lay.op is OpType.CONV2D)


def test_inference_analysis_values() -> None:
    chain = analyze(workloads.build("vgg16"))
    assert chain.max_conv_antichain == 1 and chain.max_width == 1
    assert chain.critical_path_ops == chain.kernel_ops == chain.ops - 1  # flatten: a view
    goog = analyze(workloads.build("googlenet", batch=8))
    assert goog.max_conv_antichain == 4  # the four branches of an Inception module
    assert goog.params == 6_624_904 and goog.phase == "inference" and goog.batch == 8
    assert goog.critical_path_flops < goog.flops
    v3 = analyze(workloads.build("inception_v3"))
    assert v3.max_conv_antichain == 6  # InceptionE: 1x1, 1x3/3x1 pairs x2, pool proj
    d = goog.to_dict()
    assert d["max_conv_antichain"] == 4 and d["profile"][0]["phase"] == "forward"


def test_parallelism_profile_splits_forward_and_backward() -> None:
    inf = parallelism_profile(workloads.build("googlenet"))
    assert [p.phase for p in inf] == ["forward"]
    train = parallelism_profile(workloads.build("googlenet", phase="training"))
    assert [p.phase for p in train] == ["forward", "backward"]
    fwd, bwd = train
    assert fwd.max_convs == 3 and fwd.max_conv_antichain == 4
    # Per branch, the dgrad and wgrad of a conv are independent: twice the forward width.
    assert bwd.max_convs == 8
    g = workloads.build("googlenet", phase="training")
    n_fwd = sum(1 for _, lay in g.nodes(data="layer")
                if lay.phase in ("forward", "loss") and not lay.is_view)
    assert sum(fwd.ops_per_level) == n_fwd


@pytest.mark.parametrize("name", ["vgg16", "googlenet", "resnet18"])
def test_analysis_and_profile_count_ops_alike(name: str) -> None:
    # Inference graphs are all forward: the profile's one part is the whole graph, so the
    # level widths of `gpusim graph` must be the profile's, views (flatten) left out of both.
    inference = analyze(workloads.build(name))
    (forward,) = inference.profile
    assert inference.width_per_level == forward.ops_per_level
    assert inference.max_width == forward.max_ops
    training = workloads.build(name, phase="training")
    result = analyze(training)
    assert sum(result.width_per_level) == result.kernel_ops < result.ops  # views: add/cat bwd
    assert result.critical_path_ops <= result.kernel_ops


def test_critical_path_in_ops_skips_views() -> None:
    # conv -> flatten (a view) -> linear: two ops that launch kernels on the longest chain.
    g = nx.DiGraph(name="t")
    for i, op in enumerate((OpType.CONV2D, OpType.FLATTEN, OpType.LINEAR)):
        g.add_node(f"n{i}", layer=Layer(name=f"n{i}", op=op, inputs=((1, 1),), output=(1, 1)))
    g.add_edges_from([("n0", "n1"), ("n1", "n2")])
    result = analyze(g)
    assert result.critical_path_ops == 2 and result.kernel_ops == 2
    assert result.width_per_level == (1, 0, 1) == result.profile[0].ops_per_level
