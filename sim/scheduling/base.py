"""What a scheduling policy produces, and how that becomes a :class:`~sim.engine.program.Program`.

A *scheduling policy* maps a kernel DAG (nodes: kernels, with a ``kernel``
:class:`~gpu_models.kernel.KernelSpec` attribute; edges: dependencies) onto CUDA streams. Its
output is a :class:`Schedule`:

* ``order`` — the host's launch order. The host issues calls one after another and every
  hardware queue is FIFO, so the order decides how early each stream's work becomes visible
  to the GPU; it must be a topological order of the DAG (a kernel can only wait on an event
  that was already recorded, i.e. a kernel launched before it).
* ``stream_of`` — the stream each kernel goes to (streams are numbered 0, 1, ...).
* ``priorities`` — a CUDA priority per stream (lower numbers are served first, as in CUDA).
* ``barriers`` — extra ordering edges beyond the DAG's, for policies that synchronise
  whole groups of kernels (levels, stages).
* ``grid_cap`` — a maximum grid per kernel, for policies that shrink grids so that
  concurrent kernels can share the GPU (see :func:`capped_launch`).
* ``sms`` — the SM ids each listed stream may use (an SM partition, as CUDA green
  contexts give; ``StreamDef.sms`` in the program).

:func:`to_program` turns a schedule into launches. Dependencies between kernels of one stream
need nothing (a stream is FIFO); a dependency that crosses streams becomes an event
(``Launch.after``), which costs the host ``event_overhead_s`` like a framework's
``cudaEventRecord`` + ``cudaStreamWaitEvent``. Redundant events are pruned with vector
clocks: stream ``s`` needs no event on kernel ``u`` of stream ``t`` when it already follows a
kernel of ``t`` at or after ``u`` (through its own earlier waits or stream order), which is
how Nimble and hand-written multi-stream code keep synchronisation down. Creating streams
is a one-time setup cost outside the step, so only launches and events are charged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import networkx as nx

from gpu_models.cost import lone_kernel_time_s
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel, KernelCost, KernelSpec
from gpu_models.spec import GPUSpec
from sim.engine.program import Launch, Program, StreamDef
from workloads.graph import framework_index

Node = Hashable


@dataclass(frozen=True)
class Schedule:
    """Streams, launch order and synchronisation of (a subset of) a kernel DAG."""

    #: Host launch order: a topological order of the scheduled kernels.
    order: tuple[Node, ...]
    #: Stream index of every scheduled kernel.
    stream_of: Mapping[Node, int]
    #: CUDA priority per stream index (lower is served first); missing streams get 0.
    priorities: Mapping[int, int] = field(default_factory=dict)
    #: Extra ordering edges ``(u, v)``: ``v`` may start only after ``u`` ends.
    barriers: tuple[tuple[Node, Node], ...] = ()
    #: Largest grid (in blocks) each listed kernel may use.
    grid_cap: Mapping[Node, int] = field(default_factory=dict)
    #: SM ids each listed stream index may use (others: every SM).
    sms: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    #: A short note on how the schedule was made (e.g. a policy's fallback).
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", tuple(self.order))
        object.__setattr__(self, "stream_of", MappingProxyType(dict(self.stream_of)))
        object.__setattr__(self, "priorities", MappingProxyType(dict(self.priorities)))
        object.__setattr__(self, "barriers", tuple(self.barriers))
        object.__setattr__(self, "grid_cap", MappingProxyType(dict(self.grid_cap)))
        object.__setattr__(self, "sms", MappingProxyType(dict(self.sms)))

    def __reduce__(self) -> tuple[type[Schedule], tuple[Any, ...]]:
        # Pickled as its fields (a MappingProxyType does not pickle): worker processes
        # send schedules back (limits_of(workers=...)).
        return (Schedule, (self.order, dict(self.stream_of), dict(self.priorities),
                           self.barriers, dict(self.grid_cap), dict(self.sms), self.note))

    @property
    def stream_count(self) -> int:
        """Number of streams used."""
        return len(set(self.stream_of.values()))


#: The simulator as a cost model: makespan in seconds of a schedule (of a subset of kernels).
Evaluator = Callable[[Schedule], float]


@dataclass(frozen=True)
class ScheduleContext:
    """Everything a policy may look at: the DAG, the GPU and what each kernel costs."""

    graph: nx.DiGraph
    gpu: GPUSpec
    #: Cost-model output per kernel.
    costs: Mapping[Node, KernelCost]
    #: Each kernel's time running alone on the GPU, seconds.
    isolated_s: Mapping[Node, float]
    #: Simulates a schedule (for policies that search, e.g. ``stages``); ``None`` if absent.
    evaluate: Evaluator | None = None

    def kernel(self, node: Node) -> KernelSpec:
        """The :class:`KernelSpec` of ``node``."""
        return self.graph.nodes[node]["kernel"]

    @classmethod
    def priced(cls, graph: nx.DiGraph, gpu: GPUSpec, cost_model: CostModel, *,
               evaluate: Evaluator | None = None, sm_sharing: bool = True) -> ScheduleContext:
        """``graph`` (nodes with a ``kernel`` attribute) priced by ``cost_model`` on ``gpu``:
        the one place kernels of a DAG are priced. Isolated times are the engine's with or
        without SM sharing and the memory-parallelism bound (``sm_sharing``)."""
        if not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            raise GpusimError(f"kernel graph has a cycle: "
                              f"{' -> '.join(str(u) for u, _ in cycle)}")
        costs: dict[Node, KernelCost] = {}
        isolated: dict[Node, float] = {}
        for node, kernel in graph.nodes(data="kernel"):
            if kernel is None:
                raise GpusimError(f"kernel graph node {node!r} has no 'kernel' attribute")
            costs[node] = cost_model(kernel, gpu)
            isolated[node] = lone_kernel_time_s(kernel, gpu, costs[node],
                                                sm_sharing=sm_sharing)
        return cls(graph=graph, gpu=gpu, costs=costs, isolated_s=isolated, evaluate=evaluate)

    def with_evaluator(self, evaluate: Evaluator) -> ScheduleContext:
        """The same priced DAG, with a simulator for policies that search."""
        return dataclasses.replace(self, evaluate=evaluate)


class SchedulingPolicy(Protocol):
    """A strategy that maps a kernel DAG onto streams, launch order and events."""

    @property
    def name(self) -> str:
        """The registry name (``serial``, ``min-streams+priority``, ...)."""
        ...

    def schedule(self, ctx: ScheduleContext) -> Schedule:
        """The schedule of every kernel of ``ctx.graph``."""
        ...


# ---------------------------------------------------------------------- graph helpers
def generations(graph: nx.DiGraph) -> dict[Node, int]:
    """ASAP level of every node: 0 for sources, else 1 + the largest level of a predecessor."""
    level: dict[Node, int] = {}
    for i, gen in enumerate(nx.topological_generations(graph)):
        for node in gen:
            level[node] = i
    return level


def bottom_levels(graph: nx.DiGraph, time_s: Mapping[Node, float]) -> dict[Node, float]:
    """Longest path from each node to an exit, the node's own time included."""
    bottom: dict[Node, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        tail = max((bottom[s] for s in graph.successors(node)), default=0.0)
        bottom[node] = time_s[node] + tail
    return bottom


def top_levels(graph: nx.DiGraph, time_s: Mapping[Node, float]) -> dict[Node, float]:
    """Longest path from an entry to each node, the node's own time excluded."""
    top: dict[Node, float] = {}
    for node in nx.topological_sort(graph):
        top[node] = max((top[p] + time_s[p] for p in graph.predecessors(node)), default=0.0)
    return top


def ordered_by(graph: nx.DiGraph, key: Callable[[Node], tuple[float, ...]]) -> tuple[Node, ...]:
    """The topological order that always launches the ready kernel with the smallest key."""
    return tuple(nx.lexicographical_topological_sort(graph, key=key))


def interleaved_order(graph: nx.DiGraph, stream_of: Mapping[Node, int]) -> tuple[Node, ...]:
    """Launch order that interleaves streams level by level.

    Kernels are launched by ASAP level, then stream, then framework order. Launching level
    by level hands every stream its next kernel early, so that with a per-launch host cost
    the work of parallel branches becomes visible to the GPU at about the same time instead
    of one branch after another.
    """
    level = generations(graph)
    index = framework_index(graph)
    return ordered_by(graph, lambda n: (level[n], stream_of[n], index[n]))


# ---------------------------------------------------------------------- program
def capped_launch(kernel: KernelSpec, cost: KernelCost, cap: int | None) -> tuple[int, float]:
    """Grid and block time of ``kernel`` when its grid may use at most ``cap`` blocks.

    A capped kernel is a persistent kernel: ``cap`` blocks loop over the original blocks'
    work, so each runs ``ceil(blocks / cap)`` original block times back to back. FLOPs and
    DRAM bytes stay the same (the DRAM traffic is spread over the longer blocks).
    """
    blocks = kernel.blocks
    if cap is None or cap >= blocks:
        return blocks, cost.block_time_s
    if cap < 1:
        raise GpusimError(f"kernel {kernel.name!r}: grid cap must be >= 1 (got {cap})")
    return cap, cost.block_time_s * math.ceil(blocks / cap)


def check_schedule(graph: nx.DiGraph, schedule: Schedule) -> None:
    """Raise :class:`GpusimError` unless ``schedule.order`` is a topological order of the
    scheduled kernels (DAG edges and barriers) and every kernel has a stream."""
    position = {node: i for i, node in enumerate(schedule.order)}
    if len(position) != len(schedule.order):
        dup = next(n for n in schedule.order if schedule.order.count(n) > 1)
        raise GpusimError(f"schedule launches kernel {dup!r} twice")
    for node in schedule.order:
        if node not in graph:
            raise GpusimError(f"schedule names kernel {node!r} that is not in the graph")
        if node not in schedule.stream_of:
            raise GpusimError(f"schedule gives kernel {node!r} no stream")
        if schedule.stream_of[node] < 0:
            raise GpusimError(f"kernel {node!r}: stream index must be >= 0")
    edges = [(u, v) for u, v in graph.subgraph(position).edges] + list(schedule.barriers)
    for u, v in edges:
        if u not in position or v not in position:
            raise GpusimError(f"barrier {u!r} -> {v!r} names a kernel not scheduled")
        if position[u] >= position[v]:
            raise GpusimError(f"schedule launches kernel {v!r} before its dependency {u!r}")


def to_program(
    ctx: ScheduleContext,
    schedule: Schedule,
    *,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    launches_seen: dict[tuple[Any, ...], Launch] | None = None,
) -> Program:
    """The engine program of ``schedule``: one launch per scheduled kernel, in launch order,
    with an event wherever a dependency crosses streams and is not already implied.

    ``launches_seen``: launches built before, reused where one is equal (a search builds
    the programs of many candidates of the same kernels; a launch is validated on
    construction, which costs more than the rest of its program)."""
    graph = ctx.graph
    check_schedule(graph, schedule)
    position = {node: i for i, node in enumerate(schedule.order)}
    deps: dict[Node, set[Node]] = {n: {p for p in graph.predecessors(n) if p in position}
                                   for n in schedule.order}
    for u, v in schedule.barriers:
        deps[v].add(u)
    streams = sorted(set(schedule.stream_of[n] for n in schedule.order))
    stream_name = {s: f"s{s}" for s in streams}

    # clock[n][t]: highest index in stream t's sequence that kernel n is known to follow.
    clock: dict[Node, dict[int, int]] = {}
    last_clock: dict[int, dict[int, int]] = {}
    seq_in_stream: dict[int, int] = {}
    launches: list[Launch] = []
    for node in schedule.order:
        s = schedule.stream_of[node]
        index = seq_in_stream.get(s, 0)
        seq_in_stream[s] = index + 1
        vc = dict(last_clock.get(s, {}))
        after: list[Node] = []
        # Latest dependencies first: their clocks often cover the earlier ones.
        for dep in sorted(deps[node], key=position.__getitem__, reverse=True):
            t = schedule.stream_of[dep]
            if t == s or vc.get(t, -1) >= clock[dep][t]:
                continue
            after.append(dep)
            for stream, seen in clock[dep].items():
                if seen > vc.get(stream, -1):
                    vc[stream] = seen
        vc[s] = index
        clock[node] = vc
        last_clock[s] = vc
        kernel = ctx.kernel(node)
        cost = ctx.costs[node]
        grid, block_time_s = capped_launch(kernel, cost, schedule.grid_cap.get(node))
        waits = tuple(str(d) for d in sorted(after, key=position.__getitem__))
        key = (node, stream_name[s], grid, block_time_s, waits)
        launch = None if launches_seen is None else launches_seen.get(key)
        if launch is None:
            launch = Launch.from_kernel(kernel, cost, stream=stream_name[s], name=str(node),
                                        grid=grid, block_time_s=block_time_s, after=waits)
            if launches_seen is not None:
                launches_seen[key] = launch
        launches.append(launch)
    return Program(
        gpu=ctx.gpu,
        streams=tuple(StreamDef(stream_name[s], schedule.priorities.get(s, 0),
                                sms=schedule.sms.get(s)) for s in streams),
        kernels=tuple(launches),
        launch_overhead_s=launch_overhead_s,
        event_overhead_s=event_overhead_s,
    )


def event_count(program: Program) -> int:
    """Cross-stream waits the host issues for ``program``."""
    return sum(len(k.after) for k in program.kernels)
