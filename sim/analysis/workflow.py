"""From a workload name to a simulated run: build, lower, price, schedule, simulate.

The steps each live in their own package; this module strings them together the same way
for the CLI, the limits table, sweeps and notebooks::

    from sim.analysis.workflow import simulate_workload
    run = simulate_workload("resnet50", batch=64, phase="training", gpu="h100",
                            policy="min-streams")
    run.result.makespan_s, run.program, run.kernel_graph

* :func:`kernel_graph_for` — the workload's layer graph (:func:`workloads.build`) lowered to
  kernels (:func:`workloads.lowering.lower`) for a GPU and a math precision;
* :func:`resolve_cost_model` — a cost model by name (``roofline``, ``calibrated``,
  ``scaled``) or as given;
* :func:`schedule_context` — the kernel DAG priced by the cost model (block times, DRAM
  bytes, isolated times), with the simulator as an evaluator for searching policies;
* :func:`run_policy` — one policy's schedule, program and simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from gpu_models.cost import get_cost_model, isolated_time_s
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel
from gpu_models.presets import load_gpu
from gpu_models.spec import PRECISIONS, GPUSpec
from sim.engine.engine import simulate
from sim.engine.program import Program
from sim.engine.result import SimResult
from sim.scheduling import Schedule, ScheduleContext, SchedulingPolicy, get_policy, to_program
from workloads import build
from workloads.lowering import lower

#: Storage type of the layer graph for each math precision (tf32 math reads fp32 tensors).
_STORAGE_DTYPE: dict[str, str] = {"fp32": "fp32", "tf32": "fp32", "fp16": "fp16",
                                  "bf16": "bf16"}


def resolve_gpu(gpu: str | GPUSpec) -> GPUSpec:
    """A preset name or spec-file path loaded, or the spec itself."""
    return gpu if isinstance(gpu, GPUSpec) else load_gpu(gpu)


def resolve_cost_model(cost_model: str | CostModel, gpu: GPUSpec, *,
                       origin: str | GPUSpec | None = None) -> CostModel:
    """The cost model ``cost_model`` for ``gpu``: a name, or a cost model returned as is.

    ``calibrated`` is fitted to ``gpu``'s calibration data; ``scaled`` carries ``origin``'s
    calibrated model to ``gpu`` and needs ``origin``.
    """
    if not isinstance(cost_model, str):
        return cost_model
    if cost_model == "calibrated":
        return get_cost_model("calibrated", gpu=gpu)
    if cost_model == "scaled":
        if origin is None:
            raise GpusimError("cost model 'scaled' needs an origin GPU (the measured one)")
        return get_cost_model("scaled", origin=origin)
    return get_cost_model(cost_model)


def kernel_graph_for(name: str, *, batch: int = 1, phase: str = "inference",
                     precision: str = "fp32", gpu: GPUSpec) -> nx.DiGraph:
    """The kernel DAG of workload ``name`` on ``gpu`` at ``precision``."""
    if precision not in PRECISIONS:
        raise GpusimError(f"precision must be one of {', '.join(PRECISIONS)} "
                          f"(got {precision!r})")
    layers = build(name, batch=batch, phase=phase, dtype=_STORAGE_DTYPE[precision])
    return in_framework_order(lower(layers, gpu, precision=precision), layers)


def in_framework_order(kernel_graph: nx.DiGraph, layers: nx.DiGraph) -> nx.DiGraph:
    """``kernel_graph`` with its nodes inserted in the layer graph's (framework) order.

    The ``serial`` policy launches in node insertion order, which should be the order the
    framework issues ops in (module code order, autograd's backward order); lowering visits
    layers level by level, so the order is restored here. Kernels of one layer keep their
    order.
    """
    index = {name: i for i, name in enumerate(layers.nodes)}
    ordered = nx.DiGraph()
    ordered.graph.update(kernel_graph.graph)
    ordered.add_nodes_from(
        (n, kernel_graph.nodes[n])
        for n in sorted(kernel_graph.nodes, key=lambda n: index[kernel_graph.nodes[n]["layer"]]))
    ordered.add_edges_from(kernel_graph.edges(data=True))
    return ordered


def schedule_context(
    kernel_graph: nx.DiGraph,
    gpu: GPUSpec,
    cost_model: CostModel,
    *,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    evaluate: bool = True,
) -> ScheduleContext:
    """``kernel_graph`` priced by ``cost_model`` on ``gpu``.

    With ``evaluate``, policies that search (``stages``) time their candidates by simulating
    them under the same host overheads as the final run.
    """
    if not nx.is_directed_acyclic_graph(kernel_graph):
        cycle = nx.find_cycle(kernel_graph)
        raise GpusimError(f"kernel graph has a cycle: {' -> '.join(str(u) for u, _ in cycle)}")
    costs = {}
    isolated = {}
    for node, kernel in kernel_graph.nodes(data="kernel"):
        if kernel is None:
            raise GpusimError(f"kernel graph node {node!r} has no 'kernel' attribute")
        costs[node] = cost_model(kernel, gpu)
        isolated[node] = isolated_time_s(kernel, gpu, cost_model)
    ctx = ScheduleContext(graph=kernel_graph, gpu=gpu, costs=costs, isolated_s=isolated)
    if not evaluate:
        return ctx

    def evaluate_s(schedule: Schedule) -> float:
        program = to_program(ctx, schedule, launch_overhead_s=launch_overhead_s,
                             event_overhead_s=event_overhead_s)
        return simulate(program).makespan_s

    return ScheduleContext(graph=kernel_graph, gpu=gpu, costs=costs, isolated_s=isolated,
                           evaluate=evaluate_s)


@dataclass(frozen=True, eq=False)
class PolicyRun:
    """One policy applied to a priced kernel DAG, and its simulation."""

    policy: str
    schedule: Schedule
    program: Program
    result: SimResult


def run_policy(
    ctx: ScheduleContext,
    policy: str | SchedulingPolicy,
    *,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    mode: str = "grouped",
    sm_policy: str = "most-free",
) -> PolicyRun:
    """Schedule ``ctx`` with ``policy`` and simulate the program."""
    chosen = get_policy(policy) if isinstance(policy, str) else policy
    schedule = chosen.schedule(ctx)
    program = to_program(ctx, schedule, launch_overhead_s=launch_overhead_s,
                         event_overhead_s=event_overhead_s)
    return PolicyRun(chosen.name, schedule, program,
                     simulate(program, mode=mode, sm_policy=sm_policy))


@dataclass(frozen=True, eq=False)
class WorkloadRun:
    """A workload simulated under one policy."""

    workload: str
    batch: int
    phase: str
    precision: str
    gpu: GPUSpec
    kernel_graph: nx.DiGraph
    run: PolicyRun

    @property
    def program(self) -> Program:
        return self.run.program

    @property
    def result(self) -> SimResult:
        return self.run.result


def simulate_workload(
    name: str,
    *,
    batch: int = 1,
    phase: str = "inference",
    precision: str = "fp32",
    gpu: str | GPUSpec = "h100",
    cost_model: str | CostModel = "roofline",
    origin: str | GPUSpec | None = None,
    policy: str | SchedulingPolicy = "serial",
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    mode: str = "grouped",
    sm_policy: str = "most-free",
) -> WorkloadRun:
    """Build, lower, price, schedule and simulate workload ``name`` (see the module doc)."""
    spec = resolve_gpu(gpu)
    model = resolve_cost_model(cost_model, spec, origin=origin)
    graph = kernel_graph_for(name, batch=batch, phase=phase, precision=precision, gpu=spec)
    ctx = schedule_context(graph, spec, model, launch_overhead_s=launch_overhead_s,
                           event_overhead_s=event_overhead_s)
    run = run_policy(ctx, policy, launch_overhead_s=launch_overhead_s,
                     event_overhead_s=event_overhead_s, mode=mode, sm_policy=sm_policy)
    return WorkloadRun(name, batch, phase, precision, spec, graph, run)


def time_average(times_s: tuple[float, ...], values: tuple[float, ...], end_s: float) -> float:
    """Time-average over ``[0, end_s]`` of a step function (``values[i]`` from
    ``times_s[i]`` until the next time)."""
    if end_s <= 0 or not times_s:
        return 0.0
    total = 0.0
    for i, (t, v) in enumerate(zip(times_s, values, strict=True)):
        nxt = times_s[i + 1] if i + 1 < len(times_s) else end_s
        total += v * max(0.0, min(nxt, end_s) - max(t, 0.0))
    return total / end_s


def busy_sm_fraction(result: SimResult) -> float:
    """Average fraction of the SMs holding at least one block, over the run."""
    series = result.busy_sms
    return (time_average(series.times_s, series.values, result.makespan_s)
            / result.program.gpu.sm_count)


def dram_utilisation(result: SimResult) -> float:
    """Average DRAM bandwidth in use over the run, as a fraction of the GPU's."""
    series = result.dram_Bps
    return (time_average(series.times_s, series.values, result.makespan_s)
            / result.program.gpu.dram_bw_Bps)
