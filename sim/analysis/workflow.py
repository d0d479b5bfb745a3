"""From a workload name to a simulated run: build, lower, price, schedule, simulate.

The steps each live in their own package; this module strings them together once, for the
CLI, the limits report, sweeps and notebooks::

    from sim.analysis.workflow import prepare_workload, simulate_workload
    prepared = prepare_workload("resnet50", batch=64, phase="training", gpu="h100")
    prepared.kernel_graph, prepared.ctx.costs            # lowered and priced, once
    run = prepared.run("min-streams")                    # one policy, simulated
    run.result.makespan_s, run.program

* :func:`kernel_graph_for` — the workload's layer graph (:func:`workloads.build`: a zoo name,
  an ONNX or layer-graph file, or ``torchvision:NAME``) lowered to
  kernels (:func:`workloads.lowering.lower`) for a GPU and a math precision; ``options``
  go to the builder (``nodes=64`` for RandWire, ``optimizer=step`` for training) or, for
  :data:`LOWERING_OPTIONS` (``fusion=inference``, ``layout=nhwc``), to the lowering;
* :func:`resolve_cost_model` (from :mod:`gpu_models.cost`) — a cost model by name
  (``roofline``, ``calibrated``, ``scaled``) or as given;
* :func:`schedule_context` — the kernel DAG priced by the cost model
  (:meth:`ScheduleContext.priced <sim.scheduling.base.ScheduleContext.priced>`), with the
  simulator as an evaluator for searching policies;
* :func:`prepare_workload` — all of the above for a workload: the one setup that
  :func:`simulate_workload` and :func:`sim.analysis.limits.limits_for_workload` share;
* :func:`run_policy` — one policy's schedule, program and simulation;
  :func:`time_policy` the same with the makespan only (for ranking policies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from gpu_models.cost import DEFAULT_COST_MODEL, resolve_cost_model
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel
from gpu_models.presets import resolve_gpu
from gpu_models.spec import PRECISIONS, GPUSpec
from sim.engine.engine import Progress, simulate, simulate_makespan
from sim.engine.program import Launch, Program
from sim.engine.result import SimResult
from sim.scheduling import Schedule, ScheduleContext, SchedulingPolicy, get_policy, to_program
from workloads import build
from workloads.lowering import STORAGE_DTYPE, lower

#: Workload options that belong to the lowering (:func:`workloads.lowering.lower`), not to
#: the graph builder.
LOWERING_OPTIONS: tuple[str, ...] = ("fusion", "layout")


def kernel_graph_for(name: str, *, batch: int = 1, phase: str = "inference",
                     precision: str = "fp32", gpu: GPUSpec,
                     resolution: int | None = None,
                     options: Mapping[str, Any] | None = None) -> nx.DiGraph:
    """The kernel DAG of workload ``name`` (any form :func:`workloads.build` takes: a zoo
    name, a file, ``torchvision:NAME``) on ``gpu`` at ``precision``, its nodes in the
    framework's launch order (lowering keeps the layer graph's order). ``options``: see
    the module docstring."""
    if precision not in PRECISIONS:
        raise GpusimError(f"precision must be one of {', '.join(PRECISIONS)} "
                          f"(got {precision!r})")
    given = dict(options or {})
    lowering = {k: given.pop(k) for k in LOWERING_OPTIONS if k in given}
    layers = build(name, batch=batch, resolution=resolution, phase=phase,
                   dtype=STORAGE_DTYPE[precision], **given)
    return lower(layers, gpu, precision=precision, **lowering)


def schedule_context(
    kernel_graph: nx.DiGraph,
    gpu: GPUSpec,
    cost_model: CostModel,
    *,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    evaluate: bool = True,
    sm_sharing: bool = True,
) -> ScheduleContext:
    """``kernel_graph`` priced by ``cost_model`` on ``gpu``.

    With ``evaluate``, policies that search (``stages``) time their candidates by simulating
    them under the same host overheads and engine physics (``sm_sharing``) as the final run.
    """
    ctx = ScheduleContext.priced(kernel_graph, gpu, cost_model, sm_sharing=sm_sharing)
    if not evaluate:
        return ctx
    return ctx.with_evaluator(CandidateEvaluator(ctx, launch_overhead_s=launch_overhead_s,
                                                 event_overhead_s=event_overhead_s,
                                                 sm_sharing=sm_sharing))


class CandidateEvaluator:
    """Times a searching policy's candidate schedule of ``ctx`` by simulating its program
    under the given host overheads and engine physics; makespan in seconds.

    Candidates equal but for their kernels' names (the same stage of repeated modules, a
    schedule met again) are simulated once (:meth:`Program.timing_key`). A plain object,
    so that a context carrying it goes to worker processes (``limits_of(workers=...)``).
    """

    def __init__(self, ctx: ScheduleContext, *, launch_overhead_s: float | None,
                 event_overhead_s: float | None, sm_sharing: bool) -> None:
        self.ctx = ctx
        self.launch_overhead_s = launch_overhead_s
        self.event_overhead_s = event_overhead_s
        self.sm_sharing = sm_sharing
        self._makespans: dict[tuple[Any, ...], float] = {}
        self._launches: dict[tuple[Any, ...], Launch] = {}

    def remember(self, program: Program, makespan_s: float) -> None:
        """Take ``makespan_s`` as the makespan of ``program``, simulated elsewhere under
        this evaluator's physics, grouped with the default placement (the same makespan,
        :func:`simulate_makespan`): a candidate equal to it is then not simulated again
        (``stages`` compares itself with the serial schedule a limits report has run)."""
        self._makespans.setdefault(program.timing_key(), makespan_s)

    def __call__(self, schedule: Schedule) -> float:
        program = to_program(self.ctx, schedule, launch_overhead_s=self.launch_overhead_s,
                             event_overhead_s=self.event_overhead_s,
                             launches_seen=self._launches)
        return self.makespan(program)

    def makespan(self, program: Program) -> float:
        """The makespan of ``program`` (built under this evaluator's host overheads, or
        others: they are part of its timing key) under this evaluator's physics; simulated
        only if no program with its timing key was."""
        key = program.timing_key()
        makespan = self._makespans.get(key)
        if makespan is None:
            makespan = simulate_makespan(program, sm_sharing=self.sm_sharing)
            self._makespans[key] = makespan
        return makespan


@dataclass(frozen=True, eq=False)
class PolicyRun:
    """One policy applied to a priced kernel DAG, and its simulation."""

    policy: str
    schedule: Schedule
    program: Program
    result: SimResult

    @property
    def makespan_s(self) -> float:
        """The simulated makespan (as :class:`PolicyTiming` has it)."""
        return self.result.makespan_s


def run_policy(
    ctx: ScheduleContext,
    policy: str | SchedulingPolicy,
    *,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    mode: str = "grouped",
    placement: str = "most-free",
    sm_sharing: bool = True,
    progress: Progress | None = None,
) -> PolicyRun:
    """Schedule ``ctx`` with ``policy`` and simulate the program (``sm_sharing``: see
    :func:`sim.engine.engine.simulate`)."""
    name, schedule, program = _scheduled(ctx, policy, launch_overhead_s, event_overhead_s)
    result = simulate(program, mode=mode, placement=placement, sm_sharing=sm_sharing,
                      progress=progress)
    evaluator = _evaluator(ctx, sm_sharing)
    if evaluator is not None and mode == "grouped" and placement == "most-free":
        # A later search of the same context need not simulate this program again. (A
        # program under other host overheads has another timing key: never a false hit.)
        evaluator.remember(program, result.makespan_s)
    return PolicyRun(name, schedule, program, result)


def _scheduled(ctx: ScheduleContext, policy: str | SchedulingPolicy,
               launch_overhead_s: float | None,
               event_overhead_s: float | None) -> tuple[str, Schedule, Program]:
    """``policy``'s name, its schedule of ``ctx`` and the schedule's program."""
    chosen = get_policy(policy) if isinstance(policy, str) else policy
    schedule = chosen.schedule(ctx)
    return chosen.name, schedule, to_program(ctx, schedule, launch_overhead_s=launch_overhead_s,
                                             event_overhead_s=event_overhead_s)


def _evaluator(ctx: ScheduleContext, sm_sharing: bool) -> CandidateEvaluator | None:
    """``ctx``'s candidate evaluator if it simulates under ``sm_sharing``."""
    evaluator = ctx.evaluate
    if isinstance(evaluator, CandidateEvaluator) and evaluator.sm_sharing == sm_sharing:
        return evaluator
    return None


@dataclass(frozen=True, eq=False)
class PolicyTiming:
    """One policy applied to a priced kernel DAG, and only its program's makespan."""

    policy: str
    schedule: Schedule
    program: Program
    makespan_s: float


def time_policy(
    ctx: ScheduleContext,
    policy: str | SchedulingPolicy,
    *,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    sm_sharing: bool = True,
) -> PolicyTiming:
    """:func:`run_policy` (grouped mode, default placement) without the result: the
    makespan only (:func:`~sim.engine.engine.simulate_makespan`, the same number), what a
    report that ranks policies needs of all but the best. Through the context's
    :class:`CandidateEvaluator` when it has the same physics: a program it has simulated
    (the schedule a searching policy compared itself with, one timed before) is not
    simulated again, and one simulated here is remembered for a later search."""
    name, schedule, program = _scheduled(ctx, policy, launch_overhead_s, event_overhead_s)
    evaluator = _evaluator(ctx, sm_sharing)
    makespan = (simulate_makespan(program, sm_sharing=sm_sharing) if evaluator is None
                else evaluator.makespan(program))
    return PolicyTiming(name, schedule, program, makespan)


@dataclass(frozen=True, eq=False)
class PreparedWorkload:
    """A workload built, lowered and priced on one GPU, ready to be scheduled.

    ``launch_overhead_s`` / ``event_overhead_s`` of ``None`` take the GPU's; every policy
    run from it (:meth:`run`) uses them and its ``sm_sharing``, as do the candidates of
    searching policies.
    """

    workload: str
    batch: int
    phase: str
    precision: str
    gpu: GPUSpec
    #: The cost model as asked for (a name, or the model's class name).
    cost_model_name: str
    kernel_graph: nx.DiGraph
    #: The priced kernel DAG, with the simulator as evaluator.
    ctx: ScheduleContext
    launch_overhead_s: float | None = None
    event_overhead_s: float | None = None
    #: Input height = width as asked (``None``: the workload's own).
    resolution: int | None = None
    #: SM throughput sharing and the memory-parallelism bound in the engine.
    sm_sharing: bool = True
    #: The workload options it was built and lowered with.
    options: Mapping[str, Any] | None = None

    @property
    def labels(self) -> dict[str, Any]:
        """The descriptive fields a report carries."""
        return {"workload": self.workload, "batch": self.batch, "phase": self.phase,
                "precision": self.precision, "cost_model": self.cost_model_name}

    def run(self, policy: str | SchedulingPolicy, *, mode: str = "grouped",
            placement: str = "most-free", progress: Progress | None = None) -> PolicyRun:
        """Schedule with ``policy`` and simulate, under the workload's host overheads and
        engine physics."""
        return run_policy(self.ctx, policy, launch_overhead_s=self.launch_overhead_s,
                          event_overhead_s=self.event_overhead_s, mode=mode,
                          placement=placement, sm_sharing=self.sm_sharing, progress=progress)


def prepare_workload(
    name: str,
    *,
    batch: int = 1,
    phase: str = "inference",
    precision: str = "fp32",
    gpu: str | Path | GPUSpec = "h100",
    cost_model: str | CostModel = DEFAULT_COST_MODEL,
    origin: str | GPUSpec | None = None,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    resolution: int | None = None,
    sm_sharing: bool = True,
    options: Mapping[str, Any] | None = None,
) -> PreparedWorkload:
    """Build, lower and price workload ``name`` (see the module docstring); ``sm_sharing``
    selects the engine's physics for every run from it (:func:`sim.engine.engine.simulate`)."""
    spec = resolve_gpu(gpu)
    model = resolve_cost_model(cost_model, spec, origin=origin)
    graph = kernel_graph_for(name, batch=batch, phase=phase, precision=precision, gpu=spec,
                             resolution=resolution, options=options)
    ctx = schedule_context(graph, spec, model, launch_overhead_s=launch_overhead_s,
                           event_overhead_s=event_overhead_s, sm_sharing=sm_sharing)
    model_name = cost_model if isinstance(cost_model, str) else type(cost_model).__name__
    return PreparedWorkload(name, batch, phase, precision, spec, model_name, graph, ctx,
                            launch_overhead_s, event_overhead_s, resolution, sm_sharing,
                            dict(options or {}))


@dataclass(frozen=True, eq=False)
class WorkloadRun:
    """A workload simulated under one policy."""

    prepared: PreparedWorkload
    run: PolicyRun

    @property
    def kernel_graph(self) -> nx.DiGraph:
        return self.prepared.kernel_graph

    @property
    def gpu(self) -> GPUSpec:
        return self.prepared.gpu

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
    gpu: str | Path | GPUSpec = "h100",
    cost_model: str | CostModel = DEFAULT_COST_MODEL,
    origin: str | GPUSpec | None = None,
    policy: str | SchedulingPolicy = "serial",
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    mode: str = "grouped",
    placement: str = "most-free",
    resolution: int | None = None,
    sm_sharing: bool = True,
    options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> WorkloadRun:
    """Prepare workload ``name`` (:func:`prepare_workload`) and simulate it under ``policy``
    (``progress``: the engine's, see :meth:`sim.engine.engine.Engine.run`)."""
    prepared = prepare_workload(
        name, batch=batch, phase=phase, precision=precision, gpu=gpu, cost_model=cost_model,
        origin=origin, launch_overhead_s=launch_overhead_s, event_overhead_s=event_overhead_s,
        resolution=resolution, sm_sharing=sm_sharing, options=options)
    return WorkloadRun(prepared, prepared.run(policy, mode=mode, placement=placement,
                                              progress=progress))


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


def sm_throughput_in_use(result: SimResult) -> dict[str, float]:
    """Average fraction of the GPU's SM throughput in use over the run, per execution
    resource (empty without SM sharing)."""
    return {resource: time_average(series.times_s, series.values, result.makespan_s)
            for resource, series in result.sm_throughput.items()}
