"""Policies that read only the DAG (and isolated kernel times): serial, branches,
min-streams, levels and critical-path.

Each class is a :class:`~sim.scheduling.base.SchedulingPolicy`; its docstring says which real
system it mirrors and how it orders launches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from gpu_models.errors import GpusimError
from sim.scheduling.base import (
    Node,
    Schedule,
    ScheduleContext,
    bottom_levels,
    generations,
    interleaved_order,
    ordered_by,
)
from workloads.graph import framework_index, framework_order

#: Streams of ``critical-path`` without a ``:k`` suffix.
DEFAULT_CRITICAL_PATH_STREAMS = 4


@dataclass(frozen=True)
class Serial:
    """Everything on one stream in the framework's (topological) order.

    Mirrors eager PyTorch / TensorFlow / MXNet: one default stream, ops launched in the
    order the model's forward (and autograd's backward) issue them. No events.
    """

    name: str = "serial"

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        order = framework_order(ctx.graph)
        return Schedule(order=tuple(order), stream_of=dict.fromkeys(order, 0))


@dataclass(frozen=True)
class Branches:
    """One stream per parallel branch of a module, joined by events.

    Mirrors hand-written multi-stream model code (the usual ``torch.cuda.stream`` recipe for
    Inception modules and residual shortcuts): each branch of a module (the ``branch``
    attribute lowering copies from the layer) runs its forward kernels on its own stream,
    the module's stem and join on stream 0; as PyTorch's autograd runs every backward op on
    the stream of its forward op, a branch's backward kernels go to its forward stream, and
    the loss and optimizer to stream 0. The streams are :func:`branch_streams` of the
    kernel graph contracted to its layers (:func:`kernel_layer_dag`), the same assignment
    the device campaign measures (``sim.measure.netbench.torch_graph.assign_streams``).
    Launch order: by ASAP level, interleaving the branches (see
    :func:`~sim.scheduling.base.interleaved_order`).
    """

    name: str = "branches"

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        graph = ctx.graph
        by_layer = branch_streams(kernel_layer_dag(graph))
        stream_of = {n: by_layer[graph.nodes[n].get("layer", n)] for n in graph.nodes}
        return Schedule(order=interleaved_order(graph, stream_of), stream_of=stream_of)


def kernel_layer_dag(kernel_graph: nx.DiGraph) -> nx.DiGraph:
    """A kernel graph contracted layer by layer (node attribute ``layer``; a kernel without
    one is its own layer): one node per layer in launch order, an edge wherever a kernel of
    one depends on a kernel of another, the layer's ``branch``, ``phase``, ``module`` and
    ``forward_of`` from its first kernel. For a lowered workload this is
    :func:`workloads.analysis.launching_layer_dag` of its layer graph."""
    dag = nx.DiGraph()
    keys = ("branch", "phase", "module", "forward_of")
    for node, attrs in kernel_graph.nodes(data=True):
        layer = attrs.get("layer", node)
        if layer not in dag:
            dag.add_node(layer, **{k: attrs.get(k) for k in keys})
    # In-edges kernel by kernel, so that a layer's inputs keep their order (first input
    # first): the stream a branch continues is its first input's.
    for v in kernel_graph.nodes:
        lv = kernel_graph.nodes[v].get("layer", v)
        for u in kernel_graph.predecessors(v):
            lu = kernel_graph.nodes[u].get("layer", u)
            if lu != lv:
                dag.add_edge(lu, lv)
    return dag


def branch_streams(layer_dag: nx.DiGraph) -> dict[Node, int]:
    """The ``branches`` stream of every node of a layer DAG (nodes with ``branch`` and
    ``phase`` attributes, e.g. :func:`kernel_layer_dag`).

    Forward branches are coloured: a branch spans the ASAP levels of its layers, branches
    whose spans overlap run side by side and get different streams, and a stream is reused
    once its branch has ended (interval colouring, first-fit, in order of each branch's
    first layer; stream 0 is busy wherever a layer outside any branch runs). A branch
    prefers the stream of the layer it continues, so a chain split into consecutive
    branches needs no event. A backward layer runs on its forward layer's stream (else its
    branch's); every other layer on stream 0.
    """
    level = generations(layer_dag)
    index = framework_index(layer_dag)
    span: dict[str, tuple[int, int]] = {}
    members: dict[str, list[Node]] = {}
    for node, attrs in layer_dag.nodes(data=True):
        branch = attrs.get("branch")
        if branch and attrs.get("phase", "forward") == "forward":
            lo, hi = span.get(branch, (level[node], level[node]))
            span[branch] = (min(lo, level[node]), max(hi, level[node]))
            members.setdefault(branch, []).append(node)
    stream_of: dict[Node, int] = {
        n: 0 for n, attrs in layer_dag.nodes(data=True) if not attrs.get("branch")}
    # Levels at which each stream is busy with a branch, or with layers outside branches.
    busy: dict[int, list[tuple[int, int]]] = {0: [(level[n], level[n]) for n in stream_of]}
    first = {b: min(index[n] for n in nodes) for b, nodes in members.items()}
    branch_stream: dict[str, int] = {}
    for branch in sorted(span, key=lambda b: (span[b][0], first[b])):
        lo, hi = span[branch]
        head = min(members[branch], key=index.__getitem__)
        preferred = [stream_of[p] for p in layer_dag.predecessors(head) if p in stream_of]

        def free(s: int, lo: int = lo, hi: int = hi) -> bool:
            return all(b_hi < lo or b_lo > hi for b_lo, b_hi in busy.get(s, []))

        candidates = [*preferred, *range(len(busy) + 1)]
        stream = next(s for s in candidates if free(s))
        busy.setdefault(stream, []).append((lo, hi))
        branch_stream[branch] = stream
        for node in members[branch]:
            stream_of[node] = stream
    for node, attrs in layer_dag.nodes(data=True):
        if node not in stream_of:  # a branch layer outside the forward pass
            forward = attrs.get("forward_of")
            stream_of[node] = stream_of.get(forward, branch_stream.get(attrs["branch"], 0)) \
                if attrs.get("phase") == "backward" else 0
    return stream_of


@dataclass(frozen=True)
class MinStreams:
    """Maximum logical concurrency with the fewest streams and synchronisations.

    Mirrors Nimble (Kwon et al., NeurIPS'20): take the transitive reduction of the DAG (its
    minimum equivalent graph), find a maximum matching of the bipartite graph (u_out, v_in)
    over its edges, and chain each matched pair on one stream. Every path of the reduction
    that the matching follows becomes a stream, so any two kernels that could run at the
    same time sit on different streams, the stream count is the minimum path cover, and
    only the unmatched reduction edges need events. Launch order: by ASAP level,
    interleaving streams.
    """

    name: str = "min-streams"

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        stream_of = min_stream_assignment(ctx.graph)
        return Schedule(order=interleaved_order(ctx.graph, stream_of), stream_of=stream_of)


def min_stream_assignment(graph: nx.DiGraph) -> dict[Node, int]:
    """Nimble's stream assignment: matched edges of the transitive reduction share a stream.

    Streams are numbered by their first kernel in framework order. Deterministic: the
    reduction's edges and the matching's search both go in framework (insertion) order,
    never in the order of a set of node names (which changes with ``PYTHONHASHSEED``).
    """
    nodes = list(graph.nodes)
    successors = reduced_successors(graph)
    match = max_bipartite_matching(successors, len(nodes))
    has_pred = {v for v in match if v >= 0}
    stream_of: dict[Node, int] = {}
    streams = 0
    for i in range(len(nodes)):  # insertion order: stream numbers follow the framework
        if i in has_pred:
            continue
        chain = i
        while chain >= 0:
            stream_of[nodes[chain]] = streams
            chain = match[chain]
        streams += 1
    return stream_of


def reduced_successors(graph: nx.DiGraph) -> list[list[int]]:
    """The transitive reduction of a DAG as sorted successor lists over framework indices.

    Edge ``u -> v`` is implied by a longer path exactly when ``v`` descends from another
    successor ``w`` of ``u``: so with each node's descendants as a bitset over framework
    indices (built in reverse topological order), the reduced successors of ``u`` are its
    successors outside the union of their descendants. (The same edges as
    ``networkx.transitive_reduction``, without building a graph: the scheduling policies
    need it once per policy, and it was a tenth of a whole limits report.)
    """
    index = framework_index(graph)
    descendants = [0] * len(index)
    successors: list[list[int]] = [[] for _ in index]
    for node in reversed(list(nx.topological_sort(graph))):
        succ = [index[v] for v in graph.successors(node)]
        reach = 0
        for j in succ:
            reach |= descendants[j]
        i = index[node]
        successors[i] = sorted(j for j in succ if not reach >> j & 1)
        for j in succ:
            reach |= 1 << j
        descendants[i] = reach
    return successors


def max_bipartite_matching(adjacency: list[list[int]], right_count: int) -> list[int]:
    """A maximum matching of a bipartite graph (Hopcroft-Karp), deterministically.

    ``adjacency[u]`` lists the right vertices (``0 .. right_count - 1``) of left vertex
    ``u``. Returns, per left vertex, its matched right vertex or ``-1``. Every search visits
    left vertices in index order and their neighbours in list order, so the same input
    always gives the same matching (``networkx``'s ``hopcroft_karp_matching`` walks a
    ``set`` of the left vertices, whose order depends on their hashes).
    """
    left_count = len(adjacency)
    match_left = [-1] * left_count
    match_right = [-1] * right_count
    while True:
        # Breadth-first layers of alternating paths from every free left vertex.
        dist = [-1] * left_count
        queue = [u for u in range(left_count) if match_left[u] < 0]
        for u in queue:
            dist[u] = 0
        found = False
        head = 0
        while head < len(queue):
            u = queue[head]
            head += 1
            for v in adjacency[u]:
                w = match_right[v]
                if w < 0:
                    found = True
                elif dist[w] < 0:
                    dist[w] = dist[u] + 1
                    queue.append(w)
        if not found:
            return match_left
        # Depth-first augmenting paths along the layers (iterative: paths can be long).
        cursor = [0] * left_count
        for root in range(left_count):
            if match_left[root] >= 0:
                continue
            stack = [root]
            while stack:
                u = stack[-1]
                if cursor[u] == len(adjacency[u]):
                    dist[u] = -1  # dead end for the rest of this phase
                    stack.pop()
                    continue
                v = adjacency[u][cursor[u]]
                cursor[u] += 1
                w = match_right[v]
                if w < 0:
                    # Augment: every vertex on the stack takes the edge it last followed.
                    for x in reversed(stack):
                        y = adjacency[x][cursor[x] - 1]
                        match_left[x] = y
                        match_right[y] = x
                    break
                if dist[w] == dist[u] + 1:
                    stack.append(w)


@dataclass(frozen=True)
class Levels:
    """Topological generations, each level's kernels on separate streams, a barrier between
    levels.

    Mirrors the simple "wavefront" schedulers of early multi-stream work (and the greedy
    baseline of IOS): every kernel whose inputs are ready is launched at once on its own
    stream, then everything synchronises before the next level. The barrier is a set of
    events from every stream of level ``k`` to every stream of level ``k + 1`` (pruned where
    already implied), which is what makes the policy pay for its synchronisation. Kernel
    ``j`` of a level (framework order) goes to stream ``j``. Launch order: level by level.
    """

    name: str = "levels"

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        graph = ctx.graph
        index = framework_index(graph)
        stream_of: dict[Node, int] = {}
        barriers: list[tuple[Node, Node]] = []
        previous: list[Node] = []
        order: list[Node] = []
        for gen in nx.topological_generations(graph):
            nodes = sorted(gen, key=index.__getitem__)
            for j, node in enumerate(nodes):
                stream_of[node] = j
            barriers.extend((u, v) for u in previous for v in nodes if not graph.has_edge(u, v))
            order.extend(nodes)
            previous = nodes
        return Schedule(order=tuple(order), stream_of=stream_of, barriers=tuple(barriers))


@dataclass(frozen=True)
class CriticalPath:
    """List scheduling by bottom level onto ``streams`` streams.

    Mirrors the classic HLFET list scheduler (Adam, Chandy & Dickson 1974) as used by
    stream schedulers for DNN graphs: the ready kernel with the longest path to the exit
    (isolated kernel times) goes first, onto the stream where it can start earliest (the
    stream of a predecessor on a tie, saving an event). Start times are estimated with
    isolated times, as if the streams did not slow each other. Launch order: by estimated
    start time, so the host issues kernels in the order the plan expects them to run.
    """

    streams: int = DEFAULT_CRITICAL_PATH_STREAMS

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise GpusimError(f"policy 'critical-path': streams must be >= 1 "
                              f"(got {self.streams})")

    @property
    def name(self) -> str:
        """``critical-path``, or ``critical-path:k`` for a non-default stream count."""
        if self.streams == DEFAULT_CRITICAL_PATH_STREAMS:
            return "critical-path"
        return f"critical-path:{self.streams}"

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        graph = ctx.graph
        start, stream_of = list_schedule(graph, ctx.isolated_s, self.streams)
        bottom = bottom_levels(graph, ctx.isolated_s)
        index = framework_index(graph)
        order = ordered_by(graph, lambda n: (start[n], -bottom[n], index[n]))
        return Schedule(order=order, stream_of=stream_of)


def list_schedule(graph: nx.DiGraph, time_s: Mapping[Node, float],
                  streams: int) -> tuple[dict[Node, float], dict[Node, int]]:
    """HLFET: estimated start time and stream of every kernel on ``streams`` streams."""
    bottom = bottom_levels(graph, time_s)
    index = framework_index(graph)
    remaining = {n: graph.in_degree(n) for n in graph.nodes}
    ready = [n for n, d in remaining.items() if d == 0]
    free_at = [0.0] * streams
    start: dict[Node, float] = {}
    end: dict[Node, float] = {}
    stream_of: dict[Node, int] = {}
    while ready:
        ready.sort(key=lambda n: (-bottom[n], index[n]))
        node = ready.pop(0)
        data_ready = max((end[p] for p in graph.predecessors(node)), default=0.0)
        pred_streams = {stream_of[p] for p in graph.predecessors(node)}
        stream = min(range(streams),
                     key=lambda s: (max(free_at[s], data_ready), s not in pred_streams, s))
        start[node] = max(free_at[stream], data_ready)
        end[node] = start[node] + time_s[node]
        free_at[stream] = end[node]
        stream_of[node] = stream
        for succ in graph.successors(node):
            remaining[succ] -= 1
            if remaining[succ] == 0:
                ready.append(succ)
    return start, stream_of
