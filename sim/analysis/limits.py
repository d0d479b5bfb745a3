"""The limits of concurrent layer scheduling: bounds, policies and what binds.

For a kernel DAG on a GPU, :func:`compute_limits` reports

* **serial** — the framework default (``serial`` policy) simulated: the baseline;
* **each policy's** simulated time (default: :data:`sim.scheduling.DEFAULT_POLICIES`);
* the **critical-path bound** — every kernel at its isolated time (alone on the GPU),
  unlimited concurrency, and the host launch overhead only as far as no launch order can
  avoid it. The host issues the ``N`` launches one at a time (``L`` seconds each) in a
  topological order, and a kernel is visible to the GPU when its launch call ends. So a
  kernel ``v`` with ``a(v)`` ancestors is launched at position ``>= a(v) + 1`` and cannot
  start before ``(a(v) + 1) x L``, after which the longest isolated-time path from it to an
  exit, ``bottom(v)``, still has to run; and the last launch ends at ``N x L``, after which
  at least one exit kernel runs. The bound is the larger of
  ``max_v [(a(v) + 1) x L + bottom(v)]`` and ``N x L + min over exits of its time``: the
  plain critical path when ``L = 0``. Event overhead is not counted: a policy can avoid it
  (``serial`` has none);
* the **work bound** — the GPU's capacity: for each SM resource (warps, registers, shared
  memory, block slots), the summed resource-time of all blocks (a block holds its
  allocated share of one SM for its block time) over ``sm_count``; with SM sharing on
  (the engine's default), for each SM execution resource (``simt_throughput``,
  ``tensor_throughput``), the summed throughput-time of all blocks (share x block time)
  over ``sm_count`` — for the roofline model, total FLOPs over the peak; and the DRAM bytes
  over the bandwidth. Its value is the largest of these;
* the **lower bound** — ``max(critical path, work bound)``: no schedule beats it;
* the **ideal speedup** ``serial / lower bound`` and the **achievable speedup**
  ``serial / best policy``. Both are >= 1 by construction (the lower bound is at most every
  simulated time, serial's included, and the best policy is at most serial), but the bound
  and the simulation sum the same times along different paths, so a ratio within a relative
  :data:`SPEEDUP_SNAP` (1e-9) of 1 is reported as exactly 1 (float noise such as
  1.0000000000000022 or 0.9999999999999998 is not a speedup);
* **what binds** the best policy, from the engine's counters (see :func:`what_binds`).

Every time in a report must be finite and > 0: a degenerate GPU (``clock_hz=1e-300``,
``dram_bw_Bps=1e-300``) makes kernels take forever, and the report raises
:class:`GpusimError` naming the figure and the likely GPUSpec field instead of printing
``inf`` and ``nan``.

:func:`limits_for_workload` does the same from a workload name (build, lower, price).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import networkx as nx

from gpu_models.cost import DEFAULT_COST_MODEL
from gpu_models.errors import GpusimError
from gpu_models.kernel import SM_RESOURCES, CostModel
from gpu_models.occupancy import block_footprint
from gpu_models.spec import GPUSpec
from gpu_models.units import US_PER_S
from sim.analysis.processes import check_workers, process_pool
from sim.analysis.workflow import (
    PolicyRun,
    PolicyTiming,
    prepare_workload,
    run_policy,
    schedule_context,
    time_policy,
)
from sim.engine.engine import simulate
from sim.engine.result import SimResult
from sim.scheduling import (
    DEFAULT_POLICIES,
    ScheduleContext,
    SchedulingPolicy,
    event_count,
    get_policy,
)
from sim.scheduling.base import bottom_levels

#: Called before each policy is simulated, and once at the end with ``""``:
#: ``(policy name, policies done, policies in all)`` (for a progress bar); with workers, the
#: names of the policies still running, comma-separated, as each one finishes.
PolicyProgress = Callable[[str, int, int], None]
#: What :func:`_run_policies` gives per policy: a full run or a makespan-only timing.
_Run = TypeVar("_Run", PolicyRun, PolicyTiming)

#: Speedups within this relative distance of 1 are float noise and reported as 1.
SPEEDUP_SNAP = 1e-9

#: The best policy is "dependency-bound" when within this factor of the critical path.
DEPENDENCY_BOUND_FACTOR = 1.05

#: Names :func:`what_binds` reports, each with what it means in words. (The engine counter
#: behind each name is in :func:`binds_detail`.)
BINDS: Mapping[str, str] = MappingProxyType({
    "warps": "the next block of the oldest ready kernel found no SM with free warp slots",
    "registers": "the next block of the oldest ready kernel found no SM with enough free "
                 "registers",
    "shared_memory": "the next block of the oldest ready kernel found no SM with enough free "
                     "shared memory",
    "blocks": "the next block of the oldest ready kernel found no SM with a free block slot",
    "host_launch": "the host was still issuing kernel launches near the end: the GPU "
                   "waited for the host",
    "queue_head_of_line": "a hardware queue's head waited on a dependency while a ready "
                          "kernel of another stream sat behind it (a false dependency)",
    "resident_grids": "a ready kernel waited because the GPU already held as many grids as "
                      "it can (max_resident_grids)",
    "dram_bandwidth": "the running blocks asked for more DRAM bandwidth than the GPU has",
    "sm_throughput": "co-resident blocks asked more of an SM's execution resources (FP32 "
                     "pipes, tensor cores) than it has: they ran slower than alone",
    "memory_parallelism": "a kernel drew less DRAM bandwidth than it asked, held back by the "
                          "bytes its resident warps keep in flight",
    "dependencies": "the run is within 5% of the DAG's critical path: the dependencies "
                    "between kernels, not the GPU, set the time",
})
#: Each counted limit as a short phrase, for "where the time went" lines.
BIND_LABELS: Mapping[str, str] = MappingProxyType({
    "warps": "blocks waiting for free warp slots",
    "registers": "blocks waiting for free registers",
    "shared_memory": "blocks waiting for free shared memory",
    "blocks": "blocks waiting for a free block slot",
    "host_launch": "GPU idle while the host launched",
    "queue_head_of_line": "false dependency in a hardware queue",
    "resident_grids": "waiting for the resident-grid limit",
    "dram_bandwidth": "DRAM bandwidth saturated",
    "sm_throughput": "SM throughput over-subscribed",
    "memory_parallelism": "DRAM held back by memory parallelism",
})


@dataclass(frozen=True)
class WorkBound:
    """The GPU-capacity bound, per resource, in seconds."""

    #: Summed block resource-time over sm_count, per SM resource.
    sm_resource_s: Mapping[str, float]
    #: DRAM bytes (as the cost model prices them) over the bandwidth.
    dram_s: float

    @property
    def value_s(self) -> float:
        """The largest of the per-resource bounds."""
        return max([*self.sm_resource_s.values(), self.dram_s])

    @property
    def binding(self) -> str:
        """Which resource gives :attr:`value_s`."""
        candidates = {**self.sm_resource_s, "dram_bandwidth": self.dram_s}
        return max(candidates, key=candidates.__getitem__)


@dataclass(frozen=True, eq=False)
class LimitsReport:
    """The limits-table row of one workload on one GPU. Times in seconds."""

    workload: str
    batch: int | None
    phase: str
    precision: str
    gpu: str
    cost_model: str
    kernels: int
    serial_s: float
    #: Simulated time per policy (serial first, then in the order asked).
    policies_s: Mapping[str, float]
    critical_path_s: float
    work_bound: WorkBound
    binds: str
    #: Each engine counter of the best policy's run, seconds.
    binds_detail_s: Mapping[str, float]
    streams: Mapping[str, int]
    events: Mapping[str, int]
    #: Per-policy simulation results, when asked to keep them (for plots).
    results: Mapping[str, SimResult] | None = field(default=None, repr=False)
    #: SM throughput sharing and the memory-parallelism bound in the engine.
    sm_sharing: bool = True

    def __post_init__(self) -> None:
        wb = self.work_bound
        if not math.isfinite(wb.dram_s):
            raise GpusimError(f"{self.gpu}: the DRAM work bound is not finite "
                              f"({wb.dram_s} s): dram_bw_Bps is too small")
        for resource, value in wb.sm_resource_s.items():
            if not math.isfinite(value):
                raise GpusimError(f"{self.gpu}: the {resource} work bound is not finite "
                                  f"({value} s): kernels' block times overflow; check "
                                  f"clock_hz and the GPU's throughput fields")
        figures = {"critical-path bound": self.critical_path_s,
                   **{f"policy {n!r} time": t for n, t in self.policies_s.items()}}
        for what, value in figures.items():
            if not math.isfinite(value) or value < 0:
                likely = ("dram_bw_Bps" if wb.dram_s >= max(wb.sm_resource_s.values(),
                                                             default=0.0)
                          else "clock_hz (or another throughput field)")
                raise GpusimError(f"{self.gpu}: the {what} is not finite ({value} s): the "
                                  f"GPU spec is degenerate; likely field: {likely}")

    @property
    def work_bound_s(self) -> float:
        return self.work_bound.value_s

    @property
    def lower_bound_s(self) -> float:
        return max(self.critical_path_s, self.work_bound_s)

    @property
    def best_policy(self) -> str:
        """The fastest policy (the first on a tie, so serial wins ties)."""
        return min(self.policies_s, key=self.policies_s.__getitem__)

    @property
    def best_s(self) -> float:
        return self.policies_s[self.best_policy]

    @property
    def speedup_ideal(self) -> float:
        return _snap(self.serial_s / self.lower_bound_s) if self.lower_bound_s > 0 else 1.0

    @property
    def speedup_achievable(self) -> float:
        return _snap(self.serial_s / self.best_s) if self.best_s > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form, times in microseconds."""
        return {
            "workload": self.workload,
            "batch": self.batch,
            "phase": self.phase,
            "precision": self.precision,
            "gpu": self.gpu,
            "cost_model": self.cost_model,
            "sm_sharing": self.sm_sharing,
            "kernels": self.kernels,
            "serial_us": self.serial_s * US_PER_S,
            "critical_path_us": self.critical_path_s * US_PER_S,
            "work_bound_us": self.work_bound_s * US_PER_S,
            "lower_bound_us": self.lower_bound_s * US_PER_S,
            "policies": {name: t * US_PER_S for name, t in self.policies_s.items()},
            "best_policy": self.best_policy,
            "speedup_ideal": self.speedup_ideal,
            "speedup_achievable": self.speedup_achievable,
            "binds": self.binds,
            "binds_detail_us": {k: v * US_PER_S for k, v in self.binds_detail_s.items()},
            "work_bound_detail_us": {
                **{k: v * US_PER_S for k, v in self.work_bound.sm_resource_s.items()},
                "dram_bandwidth": self.work_bound.dram_s * US_PER_S,
            },
            "work_bound_binds": self.work_bound.binding,
            "streams": dict(self.streams),
            "events": dict(self.events),
        }


def _snap(ratio: float) -> float:
    """``ratio``, or exactly 1 when within :data:`SPEEDUP_SNAP` of it (float noise)."""
    return 1.0 if abs(ratio - 1.0) <= SPEEDUP_SNAP else ratio


def critical_path_bound_s(ctx: ScheduleContext, launch_overhead_s: float) -> float:
    """The critical-path bound with the unavoidable host launch overhead (module doc)."""
    graph = ctx.graph
    if graph.number_of_nodes() == 0:
        return 0.0
    bottom = bottom_levels(graph, ctx.isolated_s)
    order = list(nx.topological_sort(graph))
    position = {n: i for i, n in enumerate(order)}
    ancestors = [0] * len(order)  # bitsets over topological positions
    for i, node in enumerate(order):
        for pred in graph.predecessors(node):
            j = position[pred]
            ancestors[i] |= ancestors[j] | (1 << j)
    paths_s = max((ancestors[i].bit_count() + 1) * launch_overhead_s + bottom[node]
                  for i, node in enumerate(order))
    last_launch_s = len(order) * launch_overhead_s + min(
        ctx.isolated_s[n] for n in order if graph.out_degree(n) == 0)
    return max(paths_s, last_launch_s)


def work_bound(ctx: ScheduleContext, *, sm_sharing: bool = True) -> WorkBound:
    """Summed block resource-time per SM resource over the GPU's SMs (with ``sm_sharing``,
    throughput-time per SM execution resource too), and DRAM time."""
    gpu = ctx.gpu
    totals = {"warps": 0.0, "registers": 0.0, "shared_memory": 0.0, "blocks": 0.0}
    if sm_sharing:
        totals.update({f"{r}_throughput": 0.0 for r in SM_RESOURCES})
    dram_B = 0.0
    for node, kernel in ctx.graph.nodes(data="kernel"):
        cost = ctx.costs[node]
        fp = block_footprint(gpu, kernel.threads, kernel.regs_per_thread,
                             kernel.smem_per_block_B)
        block_s = kernel.blocks * cost.block_time_s
        totals["warps"] += block_s * fp.warps / gpu.max_warps_per_sm
        totals["registers"] += block_s * fp.regs_per_warp * fp.warps / gpu.regs_per_sm
        totals["shared_memory"] += block_s * fp.smem_B / gpu.smem_per_sm_B
        totals["blocks"] += block_s / gpu.max_blocks_per_sm
        if sm_sharing:
            for resource, share in cost.sm_throughput.items():
                totals[f"{resource}_throughput"] += block_s * share
        dram_B += cost.dram_bytes
    return WorkBound(
        sm_resource_s=MappingProxyType({k: v / gpu.sm_count for k, v in totals.items()}),
        dram_s=dram_B / gpu.dram_bw_Bps,
    )


def binds_detail(result: SimResult) -> dict[str, float]:
    """The engine's what-binds counters of ``result`` under the names of :data:`BINDS`."""
    c = result.counters
    detail = {r: float(c.blocked_s.get(r, 0.0))
              for r in ("warps", "registers", "shared_memory", "blocks")}
    detail.update(
        host_launch=c.launch_bound_s,
        queue_head_of_line=c.false_dependency_s,
        resident_grids=c.resident_limit_s,
        dram_bandwidth=c.dram_saturated_s,
        sm_throughput=max(c.sm_oversubscribed_s.values(), default=0.0),
        memory_parallelism=c.memory_parallelism_s,
    )
    return detail


def what_binds(result: SimResult, dag_critical_path_s: float) -> str:
    """What limited a run, in this order:

    * ``dependencies`` when it is within :data:`DEPENDENCY_BOUND_FACTOR` of the DAG's
      critical path (isolated times, no host overhead);
    * ``host_launch`` when the host was still issuing launches until within that factor of
      the end: the GPU cannot finish before it has seen the last kernel, so nothing on the
      GPU side was the limit (the counters below overlap it and would mislead);
    * else the counter with the most time (see :data:`BINDS`).
    """
    if result.makespan_s <= dag_critical_path_s * DEPENDENCY_BOUND_FACTOR:
        return "dependencies"
    host_end_s = max((k.launch_s for k in result.kernels), default=0.0)
    if host_end_s * DEPENDENCY_BOUND_FACTOR >= result.makespan_s:
        return "host_launch"
    detail = binds_detail(result)
    return max(detail, key=detail.__getitem__)


def compute_limits(
    kernel_graph: nx.DiGraph,
    gpu: GPUSpec,
    *,
    cost_model: CostModel,
    policies: Sequence[str | SchedulingPolicy] | None = None,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    keep_results: bool = False,
    mode: str = "grouped",
    placement: str = "most-free",
    labels: Mapping[str, Any] | None = None,
    sm_sharing: bool = True,
    workers: int = 1,
) -> LimitsReport:
    """The limits report of ``kernel_graph`` on ``gpu`` (see the module docstring).

    ``policies`` default to :data:`~sim.scheduling.DEFAULT_POLICIES`; ``serial`` is always
    simulated (it is the baseline) and comes first. Overheads of ``None`` take the GPU's.
    ``labels`` fill the report's descriptive fields (workload, batch, phase, precision,
    cost_model); they default to the kernel graph's metadata. ``sm_sharing``: the engine's
    physics (:func:`sim.engine.engine.simulate`), for every run and bound. ``workers``: see
    :func:`limits_of`.
    """
    ctx = schedule_context(kernel_graph, gpu, cost_model, launch_overhead_s=launch_overhead_s,
                           event_overhead_s=event_overhead_s, sm_sharing=sm_sharing)
    meta = {**kernel_graph.graph, **(labels or {})}
    meta.setdefault("cost_model", type(cost_model).__name__)
    return limits_of(ctx, policies=policies, launch_overhead_s=launch_overhead_s,
                     event_overhead_s=event_overhead_s, keep_results=keep_results, mode=mode,
                     placement=placement, labels=meta, sm_sharing=sm_sharing, workers=workers)


def limits_of(
    ctx: ScheduleContext,
    *,
    policies: Sequence[str | SchedulingPolicy] | None = None,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    keep_results: bool = False,
    mode: str = "grouped",
    placement: str = "most-free",
    labels: Mapping[str, Any] | None = None,
    sm_sharing: bool = True,
    progress: PolicyProgress | None = None,
    workers: int = 1,
) -> LimitsReport:
    """The limits report of a priced kernel DAG (:func:`compute_limits` after pricing;
    ``ctx``'s isolated times should be those of the same ``sm_sharing``).

    ``progress``, if given, is told which policy runs next (see :data:`PolicyProgress`).
    ``workers``: policies simulated in that many worker processes at once
    (:mod:`sim.analysis.processes`; the same report, sooner on a machine with the cores).
    ``keep_results``: every policy's :class:`SimResult` in the report (each simulated in
    full; without it and without workers, the policies are timed makespan-only and the best
    simulated in full: the same report, sooner).
    """
    asked = list(DEFAULT_POLICIES if policies is None else policies)
    if not asked:
        raise GpusimError("policies must name at least one policy")
    chosen: dict[str, SchedulingPolicy] = {}
    for policy in ["serial", *asked]:
        resolved = get_policy(policy) if isinstance(policy, str) else policy
        chosen.setdefault(resolved.name, resolved)  # each policy simulated once
    # The report needs every policy's makespan but the best one's result only: unless all
    # results are kept (or another mode or placement is asked, which only full runs
    # take), the policies are timed makespan-only and the best is then simulated in full.
    # Not with workers: there the policies run side by side, and the full run of the best
    # after them would cost more wall time than timing them makespan-only saves.
    full = keep_results or mode != "grouped" or placement != "most-free" or workers > 1
    common: dict[str, Any] = {"launch_overhead_s": launch_overhead_s,
                              "event_overhead_s": event_overhead_s, "sm_sharing": sm_sharing}
    results: dict[str, SimResult] = {}
    timed: Mapping[str, PolicyRun | PolicyTiming]
    if full:
        runs = _run_policies(ctx, chosen, workers, progress, run_policy, mode=mode,
                             placement=placement, **common)
        results = {name: run.result for name, run in runs.items()}
        timed = runs
    else:
        timed = _run_policies(ctx, chosen, workers, progress, time_policy, **common)
    gpu = ctx.gpu
    launch_s = gpu.launch_overhead_s if launch_overhead_s is None else launch_overhead_s
    # "dependencies" bind only when the DAG itself, not the host, explains the time.
    dag_s = critical_path_bound_s(ctx, 0.0)
    times = {name: run.makespan_s for name, run in timed.items()}
    best = min(times, key=times.__getitem__)
    best_result = results[best] if full else simulate(timed[best].program,
                                                      sm_sharing=sm_sharing)
    meta = labels or {}
    return LimitsReport(
        workload=str(meta.get("workload", "")),
        batch=meta.get("batch"),
        phase=str(meta.get("phase", "")),
        precision=str(meta.get("precision", "")),
        gpu=gpu.name,
        cost_model=str(meta.get("cost_model", "")),
        kernels=ctx.graph.number_of_nodes(),
        serial_s=times["serial"],
        policies_s=MappingProxyType(times),
        critical_path_s=critical_path_bound_s(ctx, launch_s),
        work_bound=work_bound(ctx, sm_sharing=sm_sharing),
        binds=what_binds(best_result, dag_s),
        binds_detail_s=MappingProxyType(binds_detail(best_result)),
        streams=MappingProxyType({n: r.schedule.stream_count for n, r in timed.items()}),
        events=MappingProxyType({n: event_count(r.program) for n, r in timed.items()}),
        results=MappingProxyType(results) if keep_results else None,
        sm_sharing=sm_sharing,
    )


def _run_policies(ctx: ScheduleContext, chosen: Mapping[str, SchedulingPolicy],
                  workers: int, progress: PolicyProgress | None, run: Callable[..., _Run],
                  **options: Any) -> dict[str, _Run]:
    """Every chosen policy run on ``ctx`` by ``run`` (:func:`run_policy` or
    :func:`time_policy`, with ``options``), in order; with ``workers > 1`` in that many
    worker processes (each run is a pure function of the context and the policy: the same
    runs, in any process)."""
    check_workers(workers)
    total = len(chosen)
    if workers == 1 or total == 1:
        runs: dict[str, _Run] = {}
        for done, (name, policy) in enumerate(chosen.items()):
            if progress is not None:
                progress(name, done, total)
            runs[name] = run(ctx, policy, **options)
    else:
        try:
            pickle.dumps((ctx, list(chosen.values())))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise GpusimError(f"workers={workers} sends the schedule context and the "
                              f"policies to worker processes, and they cannot be pickled "
                              f"({exc}); use workers=1") from None
        with process_pool(min(workers, total)) as pool:
            futures = {pool.submit(run, ctx, policy, **options): name
                       for name, policy in chosen.items()}
            if progress is not None:
                progress(", ".join(chosen), 0, total)
            finished: dict[str, _Run] = {}
            for done, future in enumerate(cf.as_completed(futures), start=1):
                finished[futures[future]] = future.result()
                left = [name for name in chosen if name not in finished]
                if progress is not None and left:
                    progress(", ".join(left), done, total)
        runs = {name: finished[name] for name in chosen}
    if progress is not None:
        progress("", total, total)
    return runs


def limits_for_workload(
    name: str,
    *,
    batch: int = 1,
    phase: str = "inference",
    precision: str = "fp32",
    gpu: str | Path | GPUSpec = "h100",
    cost_model: str | CostModel = DEFAULT_COST_MODEL,
    policies: Sequence[str | SchedulingPolicy] | None = None,
    keep_results: bool = False,
    origin: str | GPUSpec | None = None,
    launch_overhead_s: float | None = None,
    event_overhead_s: float | None = None,
    resolution: int | None = None,
    sm_sharing: bool = True,
    options: Mapping[str, Any] | None = None,
    progress: PolicyProgress | None = None,
    workers: int = 1,
) -> LimitsReport:
    """The limits report of workload ``name``, prepared by
    :func:`~sim.analysis.workflow.prepare_workload` (built, lowered and priced; ``options``
    go to the builder or the lowering; ``workers``: see :func:`limits_of`)."""
    prepared = prepare_workload(
        name, batch=batch, phase=phase, precision=precision, gpu=gpu, cost_model=cost_model,
        origin=origin, launch_overhead_s=launch_overhead_s, event_overhead_s=event_overhead_s,
        resolution=resolution, sm_sharing=sm_sharing, options=options)
    return limits_of(prepared.ctx, policies=policies, keep_results=keep_results,
                     launch_overhead_s=launch_overhead_s, event_overhead_s=event_overhead_s,
                     labels=prepared.labels, sm_sharing=sm_sharing, progress=progress,
                     workers=workers)
