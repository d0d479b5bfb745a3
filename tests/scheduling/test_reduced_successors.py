"""The transitive reduction of :func:`sim.scheduling.dag.reduced_successors` is networkx's."""

from __future__ import annotations

import random

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.scheduling.dag import reduced_successors


def _networkx_reduction(graph: nx.DiGraph) -> list[list[int]]:
    index = {n: i for i, n in enumerate(graph.nodes)}
    out: list[list[int]] = [[] for _ in index]
    for u, v in nx.transitive_reduction(graph).edges:
        out[index[u]].append(index[v])
    return [sorted(row) for row in out]


def test_diamond_with_a_shortcut() -> None:
    # a -> b -> d, a -> c -> d, and the shortcut a -> d that the paths imply.
    graph = nx.DiGraph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")])
    assert reduced_successors(graph) == [[1, 2], [3], [3], []]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 24), st.integers(0, 2**32 - 1), st.floats(0.05, 0.6))
def test_matches_networkx_on_random_dags(nodes: int, seed: int, density: float) -> None:
    # Random edges i -> j (i < j), nodes inserted in a shuffled (non-topological) order.
    rng = random.Random(seed)
    order = list(range(nodes))
    rng.shuffle(order)
    graph = nx.DiGraph()
    graph.add_nodes_from(order)
    graph.add_edges_from((i, j) for i in range(nodes) for j in range(i + 1, nodes)
                         if rng.random() < density)
    assert reduced_successors(graph) == _networkx_reduction(graph)
