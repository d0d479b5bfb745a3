"""How parallel is a network? Structural analysis of a layer graph.

Per graph (:func:`analyze`): op count, total FLOPs, multiply-adds and minimum DRAM bytes;
the critical path in ops (longest dependency chain) and in FLOPs (the chain with the most
work: with unlimited concurrency and time proportional to FLOPs, no schedule beats it);
the width of every topological level (ops whose longest chain from a source has the same
length, i.e. that an as-soon-as-possible schedule with unit-time ops runs together); op
counts in paths and widths leave out view ops, which launch no kernel (levels are still
those of the whole graph, so a level holding only a view has width 0); and
the **maximum antichain of convolutions**: the largest set of convolution ops (forward,
data-gradient and weight-gradient) no two of which depend on each other, i.e. how many
convolutions could ever run at once.

The antichain is computed exactly. By Dilworth's theorem the largest antichain of a partial
order equals its minimum chain cover, which is ``n`` minus a maximum matching in the
bipartite graph ``{(u_left, v_right) : u reaches v}`` built on the transitive closure
restricted to convolutions (reachability through any op counts). König's theorem turns the
matching into a minimum vertex cover; the convolutions with neither copy in the cover form
a maximum antichain. Reachability is propagated as integer bitsets in reverse topological
order, so DenseNet-121's training graph (~360 convolutions) takes well under a second.

:func:`parallelism_profile` gives plot-ready series: ops and convolutions per topological
level, separately for the forward and the backward part of the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import networkx as nx

from gpu_models.errors import GpusimError
from workloads.graph import framework_order
from workloads.layers import Layer


def launches_kernels(layer: Layer) -> bool:
    """Whether an op counts in op widths and op critical paths: every op but views.

    View ops (flatten, add/concat/flatten backward) launch no kernel; :func:`analyze` and
    :func:`parallelism_profile` both count ops through this one filter, so their numbers
    agree.
    """
    return not layer.is_view


def launching_layer_dag(graph: nx.DiGraph) -> nx.DiGraph:
    """The layers of ``graph`` that launch kernels (:func:`launches_kernels`), as a DAG.

    An edge ``u -> v`` wherever ``v`` reads ``u``'s output directly or through views (which
    launch nothing, so lowering passes their dependencies through in the same way). Nodes
    keep the layer graph's order and carry the layer's ``branch``, ``phase``, ``module`` and
    ``forward_of``: the structure the ``branches`` scheduling policy reads, the same as its
    kernel graph contracted layer by layer.
    """
    _check_dag(graph)
    dag = nx.DiGraph()
    exits: dict[str, tuple[str, ...]] = {}
    for node in framework_order(graph):
        deps = tuple(dict.fromkeys(d for p in graph.predecessors(node) for d in exits[p]))
        layer = _layer(graph, node)
        if launches_kernels(layer):
            dag.add_node(node, branch=layer.branch, phase=layer.phase, module=layer.module,
                         forward_of=layer.forward_of)
            dag.add_edges_from((d, node) for d in deps)
            exits[node] = (node,)
        else:
            exits[node] = deps
    return dag


@dataclass(frozen=True)
class PhaseProfile:
    """Ops and convolutions per topological level of one part (forward or backward)."""

    phase: str
    ops_per_level: tuple[int, ...]
    convs_per_level: tuple[int, ...]
    #: Maximum antichain of convolutions within this part alone.
    max_conv_antichain: int

    @property
    def max_ops(self) -> int:
        """Widest level, in ops."""
        return max(self.ops_per_level, default=0)

    @property
    def max_convs(self) -> int:
        """Widest level, in convolutions."""
        return max(self.convs_per_level, default=0)


@dataclass(frozen=True)
class GraphAnalysis:
    """The structural summary of one layer graph (see the module docstring)."""

    name: str
    phase: str
    batch: int
    resolution: int | None
    ops: int
    kernel_ops: int
    convs: int
    params: int
    macs: int
    flops: int
    bytes: int
    #: Non-view ops on the longest chain (views launch no kernel; see :func:`launches_kernels`).
    critical_path_ops: int
    critical_path_flops: int
    critical_path: tuple[str, ...]
    levels: int
    #: Non-view ops per topological level, and the widest level.
    width_per_level: tuple[int, ...]
    max_width: int
    max_conv_antichain: int
    conv_antichain: tuple[str, ...]
    profile: tuple[PhaseProfile, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (tuples become lists when serialised), profile maxima included."""
        out = asdict(self)
        for part, record in zip(self.profile, out["profile"], strict=True):
            record["max_ops"] = part.max_ops
            record["max_convs"] = part.max_convs
        return out


def _layer(graph: nx.DiGraph, node: str) -> Layer:
    return graph.nodes[node]["layer"]


def _check_dag(graph: nx.DiGraph) -> list[str]:
    try:
        return list(nx.topological_sort(graph))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(graph)
        raise GpusimError(
            f"workload {graph.graph.get('name', '?')!r}: graph has a cycle through layer "
            f"{cycle[0][0]!r}"
        ) from None


def topological_levels(graph: nx.DiGraph) -> dict[str, int]:
    """Level of each node: the number of ops on the longest chain ending just before it."""
    level: dict[str, int] = {}
    for v in _check_dag(graph):
        level[v] = max((level[p] + 1 for p in graph.predecessors(v)), default=0)
    return level


def width_per_level(graph: nx.DiGraph, select: Callable[[Layer], bool] | None = None) -> list[int]:
    """Number of (selected) ops at each topological level of ``graph``."""
    level = topological_levels(graph)
    widths = [0] * (max(level.values(), default=-1) + 1)
    for v, lv in level.items():
        if select is None or select(_layer(graph, v)):
            widths[lv] += 1
    return widths


def critical_path(graph: nx.DiGraph, weight: Callable[[Layer], int]) -> tuple[int, list[str]]:
    """The heaviest chain by ``weight`` per op: (total weight, node names in order)."""
    best: dict[str, int] = {}
    back: dict[str, str | None] = {}
    for v in _check_dag(graph):
        prev = max(graph.predecessors(v), key=lambda p: best[p], default=None)
        best[v] = weight(_layer(graph, v)) + (best[prev] if prev is not None else 0)
        back[v] = prev
    if not best:
        return 0, []
    last = max(best, key=lambda v: best[v])
    total = best[last]
    path: list[str] = []
    end: str | None = last
    while end is not None:
        path.append(end)
        end = back[end]
    return total, path[::-1]


def max_antichain(
    graph: nx.DiGraph, select: Callable[[Layer], bool] = lambda layer: layer.is_conv
) -> list[str]:
    """A maximum set of selected ops with no dependency path between any two (exact).

    Dilworth/König via Hopcroft-Karp matching on the selected nodes' transitive closure.
    """
    order = _check_dag(graph)
    chosen = [v for v in order if select(_layer(graph, v))]
    index = {v: i for i, v in enumerate(chosen)}
    reach: dict[str, int] = {}
    for v in reversed(order):
        bits = 0
        for s in graph.successors(v):
            bits |= reach[s]
            if s in index:
                bits |= 1 << index[s]
        reach[v] = bits
    n = len(chosen)
    adjacency: list[list[int]] = []
    bip = nx.Graph()
    left = [("L", i) for i in range(n)]
    bip.add_nodes_from(left)
    bip.add_nodes_from(("R", i) for i in range(n))
    for v in chosen:
        i, bits, row = index[v], reach[v], []
        while bits:
            low = bits & -bits
            row.append(low.bit_length() - 1)
            bits ^= low
        adjacency.append(row)
        bip.add_edges_from((("L", i), ("R", j)) for j in row)
    matching = nx.bipartite.hopcroft_karp_matching(bip, top_nodes=left)
    match_of_right = {j: matching[("R", j)][1] for j in range(n) if ("R", j) in matching}
    # Konig: Z = vertices reachable from unmatched left vertices by alternating paths;
    # the minimum vertex cover is (L - Z) + (R & Z), so the antichain is L & Z minus R & Z.
    z_left = {i for i in range(n) if ("L", i) not in matching}
    z_right: set[int] = set()
    frontier = list(z_left)
    while frontier:
        i = frontier.pop()
        for j in adjacency[i]:
            if j not in z_right:
                z_right.add(j)
                partner = match_of_right[j]  # exists: the matching is maximum
                if partner not in z_left:
                    z_left.add(partner)
                    frontier.append(partner)
    antichain = [v for i, v in enumerate(chosen) if i in z_left and i not in z_right]
    if len(antichain) != n - len(matching) // 2:  # Dilworth: must hold for a max matching
        raise AssertionError("antichain size does not match the minimum chain cover")
    return antichain


def parallelism_profile(graph: nx.DiGraph) -> list[PhaseProfile]:
    """Ops and convolutions per topological level, forward (+loss) and backward separately.

    Each part's levels are computed on the subgraph induced by its ops, so the backward
    profile starts at the loss gradient. Inference graphs have only the forward part.
    """
    parts = {"forward": ("forward", "loss"), "backward": ("backward",)}
    out: list[PhaseProfile] = []
    for label, phases in parts.items():
        nodes = [v for v in graph if _layer(graph, v).phase in phases]
        if not nodes:
            continue
        sub = graph.subgraph(nodes)
        out.append(PhaseProfile(
            phase=label,
            ops_per_level=tuple(width_per_level(sub, launches_kernels)),
            convs_per_level=tuple(width_per_level(sub, lambda layer: layer.is_conv)),
            max_conv_antichain=len(max_antichain(sub)),
        ))
    return out


def analyze(graph: nx.DiGraph) -> GraphAnalysis:
    """The full :class:`GraphAnalysis` of a layer graph."""
    layers = [_layer(graph, v) for v in _check_dag(graph)]
    # Ops are counted as parallelism_profile counts them: views (no kernel) excluded.
    cp_ops, _ = critical_path(graph, lambda layer: int(launches_kernels(layer)))
    cp_flops, cp_path = critical_path(graph, lambda layer: layer.flops)
    widths = width_per_level(graph, launches_kernels)
    antichain = max_antichain(graph)
    params = graph.graph.get("params")
    if params is None:
        params = sum(layer.params for layer in layers if layer.phase == "forward")
    return GraphAnalysis(
        name=str(graph.graph.get("name", "")),
        phase=str(graph.graph.get("phase", "")),
        batch=int(graph.graph.get("batch", 0)),
        resolution=graph.graph.get("resolution"),
        ops=len(layers),
        kernel_ops=sum(1 for layer in layers if launches_kernels(layer)),
        convs=sum(1 for layer in layers if layer.is_conv),
        params=int(params),
        macs=sum(layer.macs for layer in layers),
        flops=sum(layer.flops for layer in layers),
        bytes=sum(layer.bytes for layer in layers),
        critical_path_ops=cp_ops,
        critical_path_flops=cp_flops,
        critical_path=tuple(cp_path),
        levels=len(widths),
        width_per_level=tuple(widths),
        max_width=max(widths, default=0),
        max_conv_antichain=len(antichain),
        conv_antichain=tuple(antichain),
        profile=tuple(parallelism_profile(graph)),
    )
