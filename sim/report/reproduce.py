"""``gpusim reproduce``: regenerate the whole analysis — figures, tables, traces, summary.

The analysis argues one point in steps (see README, "What gpusim reproduce makes"):

1. the networks are DAGs with independent convolutions (structure table, parallelism
   profile);
2. but one convolution at a useful batch size already fills the GPU: occupancy decides
   how many blocks one SM holds, and a grid runs in waves of ``sm_count x blocks_per_sm``;
3. the block scheduler serves the oldest kernel first (leftover policy), so concurrent
   kernels overlap only in each other's tails (block placement, serial vs concurrent
   timelines of one Inception module and one whole network, utilisation);
4. so the speedup concurrent layer scheduling can achieve is bounded: none at batch size 1
   (the host's launches bind), a modest window at medium sizes, shrinking again as single
   kernels fill the GPU (limits table and chart, speedup against batch size);
5. what would have to change on the GPU for it to matter (sweep heatmap);
6. how far the simulator is from real GPUs (measured against simulated, once device data
   are committed — until then the step is reported as skipped, never faked).

:func:`reproduce` runs every step, shows a progress bar and writes, under the output
directory: ``figures/NAME.png`` and ``.pdf``, ``tables/NAME.csv`` and ``.md``,
``traces/NAME.json`` (Chrome/Perfetto traces) and ``summary.json`` (what was made, how long
each step took, the headline numbers and anything skipped, with the reason).
:func:`make_plan` says what a run covers: the full plan takes a few minutes on two cores,
``quick=True`` a fraction of it with fewer networks and batch sizes.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import networkx as nx
from matplotlib.figure import Figure
from tqdm import tqdm

from gpu_models.cost import DEFAULT_COST_MODEL
from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.presets import DEFAULT_GPU, load_gpu
from gpu_models.spec import GPUSpec
from gpu_models.units import GIGA, MEGA, US_PER_S
from sim.analysis.limits import limits_for_workload
from sim.analysis.sweep import LocalPool, Point, evaluate_point, limits_evaluator
from sim.analysis.sweep.evaluate import MAKESPAN_PREFIX
from sim.analysis.workflow import (
    prepare_workload,
    resolve_cost_model,
    run_policy,
    schedule_context,
)
from sim.engine.engine import simulate, simulate_makespan
from sim.engine.program import Launch, Program, StreamDef
from sim.engine.result import SimResult
from sim.engine.trace import write_chrome_trace
from sim.measure.micro.schema import default_data_dir
from sim.measure.validate import ValidationReport, validate
from sim.report import DEFAULT_OUT_DIR, plots
from sim.report.plots_sweep import sweep_heatmap
from workloads.analysis import analyze, parallelism_profile
from workloads.lowering import lower
from workloads.registry import build, workload_source

#: Figure resolution of the PNG files (the PDF files are vector).
PNG_DPI = 110
#: The progress bar: the step, the share of work done and the time so far. No ETA: the
#: units of the steps cost very different times (a limits point takes seconds, a figure
#: milliseconds), so an estimate from the rate so far swings by minutes (0:20 -> 3:12).
PROGRESS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"


@dataclass(frozen=True)
class Plan:
    """What one reproduction covers."""

    #: GPU preset name or spec-file path, and ``FIELD=VALUE`` overrides applied to it.
    gpu_name: str
    overrides: tuple[str, ...]
    quick: bool
    #: Networks of the structure table, parallelism profile and limits.
    networks: tuple[str, ...]
    batches: tuple[int, ...]
    phase: str
    #: Batch size of the structure table and parallelism profile (structure does not
    #: depend on it; FLOPs do).
    profile_batch: int
    #: The network and batch size of the whole-network timelines and of the sweep.
    timeline: tuple[str, int]
    #: Policies the limits compare (``None``: :data:`sim.scheduling.DEFAULT_POLICIES`).
    policies: tuple[str, ...] | None
    #: Sweep axes: SM counts as multiples of the GPU's, and hardware-queue counts.
    sweep_sm_factors: tuple[float, ...]
    sweep_connections: tuple[int, ...]
    #: SM throughput sharing and the memory-parallelism bound in the engine.
    sm_sharing: bool = True

    @cached_property
    def gpu(self) -> GPUSpec:
        """The GPU, overrides applied."""
        spec = load_gpu(self.gpu_name)
        return spec.with_overrides(self.overrides) if self.overrides else spec

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The networks of the published analysis: multi-branch (GoogLeNet, Inception v3), residual
#: (ResNet-50), densely connected (DenseNet-121) and randomly wired or path-structured.
PAPER_NETWORKS: tuple[str, ...] = (
    "googlenet", "inception_v3", "resnet50", "densenet121", "randwire", "pathnet",
)


#: The quick plan's policies: the strong ones, without the slow searching ``stages``.
QUICK_POLICIES: tuple[str, ...] = ("branches", "min-streams", "critical-path",
                                   "min-streams+priority")


def make_plan(
    gpu: str = DEFAULT_GPU, *, overrides: Sequence[str] = (), quick: bool = False,
    networks: Sequence[str] | None = None,
    sm_sharing: bool = True,
) -> Plan:
    """The full plan, or the quick one (two networks, two batch sizes, a 2 x 2 sweep).

    ``networks`` (any form :func:`workloads.build` takes) replace the plan's networks; the
    first one also gets the whole-network timelines and the sweep.
    """
    plan_networks: tuple[str, ...]
    batches: tuple[int, ...]
    policies: tuple[str, ...] | None
    sm_factors: tuple[float, ...]
    queues: tuple[int, ...]
    if quick:
        plan_networks, batches, policies = ("googlenet", "resnet50"), (1, 32), QUICK_POLICIES
        sm_factors, queues = (1.0, 2.0), (8, 32)
    else:
        plan_networks, batches, policies = PAPER_NETWORKS, (1, 8, 32, 128), None
        sm_factors, queues = (0.5, 1.0, 2.0), (8, 16, 32)
    timeline = ("googlenet", 32)
    if networks:
        for name in networks:
            workload_source(name)  # a bad name or a missing file fails before any work
        plan_networks = tuple(dict.fromkeys(networks))
        timeline = (plan_networks[0], 32)
    plan = Plan(gpu_name=str(gpu), overrides=tuple(overrides), quick=quick,
                networks=plan_networks, batches=batches, phase="training",
                profile_batch=32, timeline=timeline, policies=policies,
                sweep_sm_factors=sm_factors, sweep_connections=queues, sm_sharing=sm_sharing)
    plan.gpu  # noqa: B018 - resolve now: a bad GPU fails before any work
    return plan


# ---------------------------------------------------------------------------- output
@dataclass
class Artifact:
    """One thing a reproduction wrote (paths relative to the output directory)."""

    kind: str
    name: str
    files: list[str]
    description: str


@dataclass
class Output:
    """The output directory and the record of everything written to it."""

    root: Path
    artifacts: list[Artifact] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)
    #: The limits rows (one per network and batch size), for the steps that draw them.
    limits: list[dict[str, Any]] = field(default_factory=list)

    def figure(self, name: str, fig: Figure, description: str) -> None:
        """Save ``fig`` as ``figures/NAME.png`` and ``.pdf``."""
        folder = self.root / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for suffix, metadata in (("png", {}), ("pdf", {"CreationDate": None})):
            path = folder / f"{name}.{suffix}"
            # No creation date in the PDF: the same inputs give the same bytes.
            fig.savefig(path, dpi=PNG_DPI, metadata=metadata)
            files.append(str(path.relative_to(self.root)))
        self.artifacts.append(Artifact("figure", name, files, description))

    def table(
        self, name: str, rows: Sequence[Mapping[str, Any]], description: str
    ) -> None:
        """Write ``rows`` (dicts with the same keys) as ``tables/NAME.csv`` and ``.md``."""
        folder = self.root / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        columns = list(rows[0]) if rows else []
        csv_path = folder / f"{name}.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
        md_path = folder / f"{name}.md"
        md_path.write_text(markdown_table(rows, description), encoding="utf-8")
        self.artifacts.append(Artifact("table", name, [str(csv_path.relative_to(self.root)),
                                                       str(md_path.relative_to(self.root))],
                                       description))

    def trace(self, name: str, result: SimResult, description: str) -> None:
        """Write ``result`` as a Chrome/Perfetto trace, ``traces/NAME.json``."""
        folder = self.root / "traces"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        write_chrome_trace(result, path)
        self.artifacts.append(Artifact("trace", name, [str(path.relative_to(self.root))],
                                       description))

    def skip(self, name: str, reason: str) -> None:
        """Record that artifact ``name`` was not made, and why."""
        self.skipped.append({"name": name, "reason": reason})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value


def _md_cell(value: Any) -> str:
    if isinstance(value, float):
        for limit, spec in ((100, ",.0f"), (10, ".1f"), (1, ".2f")):
            if abs(value) >= limit:
                return format(value, spec)
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], caption: str = "") -> str:
    """A GitHub-flavoured Markdown table of ``rows``, with ``caption`` above it."""
    if not rows:
        return f"{caption}\n\n(no rows)\n"
    columns = list(rows[0])
    lines = [f"{caption}\n" if caption else "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------- steps
def step_structure(plan: Plan, out: Output) -> None:
    """Structure table and parallelism-profile figure of the plan's networks."""
    rows = []
    profiles = {}
    for name in plan.networks:
        graph = build(name, batch=plan.profile_batch, phase=plan.phase)
        a = analyze(graph)
        profiles[name] = parallelism_profile(graph)
        widest = {p.phase: p.max_convs for p in profiles[name]}
        rows.append({
            "workload": name,
            "ops": a.kernel_ops,
            "convs": a.convs,
            "params_M": a.params / MEGA,
            "GFLOP": a.flops / GIGA,
            "critical_path_ops": a.critical_path_ops,
            "max_width": a.max_width,
            "max_conv_antichain": a.max_conv_antichain,
            "fwd_max_convs_per_level": widest.get("forward", 0),
            "bwd_max_convs_per_level": widest.get("backward", 0),
        })
    out.table("structure", rows,
              f"Structure of each network's {plan.phase} graph at batch {plan.profile_batch}: "
              "kernel ops, convolutions (forward + gradients), critical path in ops, widest "
              "topological level, and the maximum antichain of convolutions (how many could "
              "ever run at once).")
    out.figure("parallelism_profile", plots.parallelism_profile_chart(profiles),
               "Ops and convolutions runnable at once per topological level, forward then "
               "backward, per network.")


def step_occupancy(plan: Plan, out: Output) -> None:
    """Occupancy figure of the plan's GPU."""
    out.figure("occupancy", plots.occupancy_chart(plan.gpu),
               f"Occupancy of one {plan.gpu.name} SM against threads, registers and shared "
               "memory per block.")


#: The kernel shape of the waves experiment: 4 blocks per H100 SM (registers bind).
WAVES_KERNEL: dict[str, int] = {"threads": 256, "regs_per_thread": 64,
                                 "smem_per_block_B": 32 * 1024}
WAVES_BLOCK_TIME_S = 10e-6


def wave_durations(
    gpu: GPUSpec, grid_sizes: Sequence[int], *, threads: int, regs_per_thread: int,
    smem_per_block_B: int,
    block_time_s: float,
    sm_sharing: bool = True,
) -> list[float]:
    """Simulated duration (s) of one kernel of each grid size, alone on ``gpu``."""
    durations = []
    for grid in grid_sizes:
        program = Program(
            gpu=gpu, streams=(StreamDef("s"),), launch_overhead_s=0.0,
            kernels=(Launch("k", "s", grid, threads, regs_per_thread, smem_per_block_B,
                            block_time_s),),
        )
        durations.append(simulate_makespan(program, sm_sharing=sm_sharing))
    return durations


def step_waves(plan: Plan, out: Output) -> None:
    """Wave staircase: analytic line and simulated points."""
    occ = occupancy(plan.gpu, WAVES_KERNEL["threads"], WAVES_KERNEL["regs_per_thread"],
                    WAVES_KERNEL["smem_per_block_B"])
    wave = plan.gpu.sm_count * occ.blocks_per_sm
    grid_sizes = sorted({max(1, round(wave * f / 8)) for f in range(1, 29)})
    simulated = wave_durations(plan.gpu, grid_sizes, block_time_s=WAVES_BLOCK_TIME_S,
                               sm_sharing=plan.sm_sharing, **WAVES_KERNEL)
    out.figure("waves", plots.waves_chart(
        plan.gpu, threads=WAVES_KERNEL["threads"], regs_per_thread=WAVES_KERNEL["regs_per_thread"],
        smem_per_block_B=WAVES_KERNEL["smem_per_block_B"], block_time_s=WAVES_BLOCK_TIME_S,
        grid_sizes=grid_sizes, simulated_s=simulated),
        "Duration of one kernel against its grid size: one step per wave of "
        "sm_count x blocks_per_sm blocks; points are the engine's.")


def leftover_programs(gpu: GPUSpec) -> dict[str, Program]:
    """Two kernels, serial (one stream) and concurrent (two streams): the leftover policy.

    Kernel ``a`` has 1.5 waves of 20 us blocks, kernel ``b`` half a wave. Concurrently, ``b``
    gets no SM until ``a`` has placed all its blocks; it then takes the slots ``a``'s last,
    partial wave leaves free — the only overlap the block scheduler allows.
    """
    threads, regs = 256, 32
    wave = gpu.sm_count * occupancy(gpu, threads, regs).blocks_per_sm
    programs = {}
    for label, second_stream in (("serial", "s0"), ("concurrent", "s1")):
        streams = tuple(StreamDef(n) for n in dict.fromkeys(("s0", second_stream)))
        programs[label] = Program(gpu=gpu, streams=streams, launch_overhead_s=0.0, kernels=(
            Launch("a", "s0", wave * 3 // 2, threads, regs, 0, 20e-6),
            Launch("b", second_stream, wave // 2, threads, regs, 0, 20e-6),
        ))
    return programs


def step_leftover(plan: Plan, out: Output) -> None:
    """Leftover policy: serial vs concurrent timelines and the block placement."""
    results = {label: simulate(program, record_blocks=True, sm_sharing=plan.sm_sharing)
               for label, program in leftover_programs(plan.gpu).items()}
    out.figure("leftover_timeline", plots.timeline_comparison(
        results, title="Two kernels: one stream against two (leftover policy)"),
        "Kernel a (1.5 waves) and kernel b (half a wave), on one stream and on two: "
        "concurrently, b only fills the slots a's last wave leaves free.")
    out.figure("leftover_blocks", plots.block_placement_chart(
        results["concurrent"], sms=range(12),
        title="Block placement on the first 12 SMs, two streams"),
        "Which SM ran each block of the concurrent run (first 12 SMs; lanes are resident "
        "block slots): b's blocks start only when a's first wave ends.")
    out.headline["leftover_speedup"] = round(results["serial"].makespan_s
                                              / results["concurrent"].makespan_s, 3)


#: The Inception module of the module timelines, and the batch size it runs at.
MODULE = ("googlenet", "inception3a")
MODULE_BATCH = 32


def module_graph(workload: str, module: str, *, batch: int, phase: str = "inference"
                 ) -> nx.DiGraph:
    """The layer subgraph of one module of a network (e.g. GoogLeNet's ``inception3a``)."""
    graph = build(workload, batch=batch, phase=phase)
    keep = {n for n, layer in graph.nodes(data="layer") if layer.module == module}
    if not keep:
        raise GpusimError(f"workload {workload!r} has no module {module!r}")
    # Built node by node: the network's op order is the framework's launch order, and
    # networkx's subgraph views would iterate in set (hash) order instead.
    sub = nx.DiGraph(**graph.graph)
    sub.add_nodes_from((n, graph.nodes[n]) for n in graph if n in keep)
    sub.add_edges_from((u, v, d) for u, v, d in graph.edges(data=True) if u in keep and v in keep)
    sub.graph["name"] = f"{workload}.{module}"
    return sub


def simulate_policies(
    graph: nx.DiGraph, gpu: GPUSpec, policies: Sequence[str], *,
    cost_model: str = DEFAULT_COST_MODEL,
    sm_sharing: bool = True,
) -> dict[str, SimResult]:
    """Lower a layer graph (a whole network or part of one) and simulate each policy."""
    kernel_graph = lower(graph, gpu)
    ctx = schedule_context(kernel_graph, gpu, resolve_cost_model(cost_model, gpu),
                           sm_sharing=sm_sharing)
    return {name: run_policy(ctx, name, sm_sharing=sm_sharing).result for name in policies}


def step_module(plan: Plan, out: Output) -> None:
    """One Inception module, serial against one stream per branch: timelines and traces."""
    workload, module = MODULE
    graph = module_graph(workload, module, batch=MODULE_BATCH)
    results = simulate_policies(graph, plan.gpu, ("serial", "branches"),
                                sm_sharing=plan.sm_sharing)
    labelled = {"serial (one stream)": results["serial"],
                "branches (one stream per branch)": results["branches"]}
    out.figure("module_timeline", plots.timeline_comparison(
        labelled, title=f"{workload} {module}, inference, batch {MODULE_BATCH}: serial "
        "against concurrent branches"),
        f"Kernels of {workload}'s {module} per stream, on one stream and with one stream per "
        "branch.")
    for label, result in results.items():
        out.trace(f"{module}_{label}", result,
                  f"Chrome trace of {workload} {module} (batch {MODULE_BATCH}), policy {label}.")
    out.headline["module_speedup"] = round(results["serial"].makespan_s
                                            / results["branches"].makespan_s, 3)


def limits_points(plan: Plan) -> list[Point]:
    """One point per network and batch size of the plan (the evaluator picks the policies)."""
    return [Point(workload=name, gpu=plan.gpu_name, overrides=_pairs(plan.overrides),
                  batch=batch, phase=plan.phase, sm_sharing=plan.sm_sharing)
            for name in plan.networks for batch in plan.batches]


def _pairs(overrides: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((k.strip(), v.strip()) for k, _, v in (o.partition("=") for o in overrides))


def limits_for_point(point: Point, *, policies: Sequence[str] | None) -> dict[str, Any]:
    """:func:`sim.analysis.limits.limits_for_workload` of a sweep point over ``policies``."""
    return limits_for_workload(
        point.workload, batch=point.batch, phase=point.phase, precision=point.precision,
        gpu=point.gpu_spec(), cost_model=point.cost_model, policies=policies,
        sm_sharing=point.sm_sharing, options=point.workload_options()).to_dict()


def limits_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A flat sweep row of the limits evaluator back in :meth:`LimitsReport.to_dict` form
    (the ``policies`` map rebuilt from the ``makespan_us.<policy>`` columns)."""
    record = {k: v for k, v in row.items() if not k.startswith(MAKESPAN_PREFIX)}
    record["policies"] = {k.removeprefix(MAKESPAN_PREFIX): v for k, v in row.items()
                          if k.startswith(MAKESPAN_PREFIX)}
    return record


def step_limits(plan: Plan, out: Output, tick: Callable[[int], None]) -> None:
    """The limits table (every network x batch size, in parallel), chart and speedups."""
    task = partial(evaluate_point, evaluate=partial(limits_for_point, policies=plan.policies))
    rows = []
    for row in LocalPool().run(task, limits_points(plan)):
        tick(1)
        if row["error"]:
            out.skip(f"limits {row['workload']} batch {row['batch']}", row["error"])
        else:
            rows.append(limits_record(row))
    order = {(n, b): i for i, (n, b) in enumerate(
        (n, b) for n in plan.networks for b in plan.batches)}
    rows.sort(key=lambda r: order[(r["workload"], r["batch"])])
    out.limits = rows
    out.table("limits", [{
        "workload": r["workload"], "batch": r["batch"], "kernels": r["kernels"],
        "serial_us": r["serial_us"], "best_policy": r["best_policy"],
        "best_us": r["policies"][r["best_policy"]], "critical_path_us": r["critical_path_us"],
        "work_bound_us": r["work_bound_us"], "lower_bound_us": r["lower_bound_us"],
        "speedup_achievable": r["speedup_achievable"], "speedup_ideal": r["speedup_ideal"],
        "binds": r["binds"]} for r in rows],
        f"The limits of concurrent layer scheduling ({plan.phase}, {plan.gpu.name}): serial "
        "time, the best policy's simulated time, the critical-path and work bounds and their "
        "maximum (the lower bound), the achievable (serial / best) and ideal (serial / lower "
        "bound) speedups, and what bound the best policy's run.")
    policies = list(rows[0]["policies"]) if rows else []
    out.table("policies", [
        {"workload": r["workload"], "batch": r["batch"],
         **{f"{p}_us": r["policies"][p] for p in policies}} for r in rows],
        "Simulated time of every scheduling policy, per network and batch size (us).")
    out.figure("limits", plots.limits_chart(rows),
               "Serial time, best policy and lower bound relative to serial, per network "
               "and batch size.")
    out.figure("speedup_vs_batch", plots.speedup_vs_batch_chart(rows),
               "Achievable and ideal speedup over serial against batch size, per network.")
    out.headline["limits"] = {
        f"{r['workload']}@{r['batch']}": {
            "speedup_achievable": round(r["speedup_achievable"], 3),
            "speedup_ideal": round(r["speedup_ideal"], 3), "best_policy": r["best_policy"],
            "binds": r["binds"]} for r in rows}


#: The whole-network timeline shows the fastest policy with at most this many streams (a
#: timeline with hundreds of stream rows is unreadable; min-streams may use hundreds).
MAX_TIMELINE_STREAMS = 16


def step_network(plan: Plan, out: Output) -> None:
    """One whole network, serial against the fastest readable policy: timelines, utilisation
    and Chrome traces."""
    workload, batch = plan.timeline
    row = next((r for r in out.limits if (r["workload"], r["batch"]) == (workload, batch)),
               None)
    if row is None:
        out.skip(f"whole network {workload}", "its limits failed (see the limits step)")
        return
    readable = [p for p in row["policies"] if p != "serial"
                and row[f"streams.{p}"] <= MAX_TIMELINE_STREAMS]
    policy = min(readable, key=row["policies"].__getitem__)
    prepared = prepare_workload(workload, batch=batch, phase=plan.phase, gpu=plan.gpu,
                                sm_sharing=plan.sm_sharing)
    runs = {p: prepared.run(p).result for p in ("serial", policy)}
    what = f"{workload} {plan.phase}, batch {batch}"
    out.figure("network_timeline", plots.timeline_comparison(
        runs, title=f"{what}: serial against {policy}"),
        f"Every kernel of a {what} step per stream, serial and under {policy} (the fastest "
        f"policy with at most {MAX_TIMELINE_STREAMS} streams).")
    out.figure("network_utilization", plots.utilization_chart(
        runs, title=f"{what}: busy SMs, resident warps and DRAM bandwidth"),
        f"Busy SMs, resident warps and DRAM bandwidth over the {what} step, serial and "
        f"{policy}.")
    for label, result in runs.items():
        out.trace(f"{file_label(workload)}_b{batch}_{label}", result,
                  f"Chrome trace of a {what} step, policy {label}.")


def file_label(workload: str) -> str:
    """A workload's short name (:attr:`WorkloadSource.label`), safe in a file name."""
    label = workload_source(workload).label
    return "".join(c if c.isalnum() or c in "._=-" else "_" for c in label)


def sweep_points(plan: Plan) -> list[Point]:
    """The sweep: SM count x hardware queues for the timeline network, one policy."""
    workload, batch = plan.timeline
    base = [pair for pair in _pairs(plan.overrides)
            if pair[0] not in ("sm_count", "connections")]
    sm_counts = sorted({max(1, round(plan.gpu.sm_count * f)) for f in plan.sweep_sm_factors})
    return [Point(workload=workload, gpu=plan.gpu_name, batch=batch, phase=plan.phase,
                  policy=SWEEP_POLICY, sm_sharing=plan.sm_sharing,
                  overrides=(*base, ("sm_count", str(sm)), ("connections", str(queues))))
            for sm in sm_counts for queues in plan.sweep_connections]


#: The policy the sweep evaluates (with serial, its baseline): one fast, strong policy.
SWEEP_POLICY = "min-streams"


def step_sweep(plan: Plan, out: Output, tick: Callable[[int], None]) -> None:
    """Sweep heatmap: achievable speedup over SM count and hardware queues."""
    task = partial(evaluate_point, evaluate=limits_evaluator)
    points = sweep_points(plan)
    rows = []
    for row in LocalPool().run(task, points):
        tick(1)
        rows.append(row)
    order = {p.key: i for i, p in enumerate(points)}
    rows.sort(key=lambda r: order[r["key"]])
    workload, batch = plan.timeline
    out.figure("sweep_heatmap", sweep_heatmap(
        rows, x="sm_count", y="connections", metric="speedup_achievable",
        title=f"{workload} {plan.phase}, batch {batch}: {SWEEP_POLICY} over serial\n"
        f"{plan.gpu.name} with other SM and queue counts"),
        "Achievable speedup over serial on hypothetical GPUs: SM count against hardware "
        "work queues (CUDA_DEVICE_MAX_CONNECTIONS).")
    out.table("sweep", [
        {"sm_count": r["sm_count"], "connections": r["connections"],
         "serial_us": r.get("serial_us"), f"{SWEEP_POLICY}_us":
         r.get(f"{MAKESPAN_PREFIX}{SWEEP_POLICY}"), "speedup": r.get("speedup_achievable"),
         "binds": r.get("binds"), "error": r["error"] or ""} for r in rows],
        f"{workload} {plan.phase} batch {batch} on {plan.gpu.name} with the SM count and "
        f"hardware queues changed: serial and {SWEEP_POLICY} times and the speedup.")


def validation_points(
    reports: Sequence[ValidationReport],
) -> tuple[list[float], list[float], list[str]]:
    """Measured and simulated makespans (s) of every replayed case, with its experiment.

    Cases that fed the replay its inputs (``calibration``) are labelled as such: they agree
    by construction and are not evidence.
    """
    measured, simulated, groups = [], [], []
    for report in reports:
        for case in report.cases:
            measured.append(case.measured_makespan_s)
            simulated.append(case.simulated_makespan_s)
            label = f"{report.gpu} {case.experiment}"
            groups.append(f"{label} (calibration)" if case.calibration else label)
    return measured, simulated, groups


def step_validation(plan: Plan, out: Output) -> None:
    """Measured against simulated, from the committed device data — or a note that none are."""
    reports = [r for r in validate() if r.cases]
    if not reports:
        out.skip("measured_vs_simulated",
                 f"no measured device data are committed yet (looked in {default_data_dir()}); "
                 "nothing is plotted rather than anything invented")
        return
    measured, simulated, groups = validation_points(reports)
    out.figure("measured_vs_simulated", plots.measured_vs_simulated_chart(
        measured, simulated, groups=groups,
        title="Makespan of microbenchmark cases: simulated against measured"),
        "Every replayed microbenchmark case: simulated against measured makespan, with the "
        "median and largest error.")
    out.table("validation", [
        {"gpu": r.gpu, "experiment": c.experiment, "case": c.case,
         "calibration": c.calibration, "measured_us": c.measured_makespan_s * US_PER_S,
         "simulated_us": c.simulated_makespan_s * US_PER_S, "error": c.makespan_error,
         "measured_spread_us": c.measured_spread_s * US_PER_S}
        for r in reports for c in r.cases],
        "Measured against simulated makespan of every replayed case (error = simulated / "
        "measured - 1; spread = max - min over the repeats, the noise floor).")


@dataclass(frozen=True)
class Step:
    """One step of a reproduction and its share of the progress bar."""

    label: str
    run: Callable[..., None]
    #: Progress units the step is worth.
    units: int = 1
    #: Whether ``run`` reports its own progress through a ``tick(units)`` callback.
    ticks: bool = False


def plan_steps(plan: Plan) -> list[Step]:
    """The steps of a reproduction, in order."""
    return [
        Step("structure and parallelism profile", step_structure),
        Step("occupancy", step_occupancy),
        Step("waves", step_waves),
        Step("leftover policy", step_leftover),
        Step("Inception module", step_module),
        Step("limits", step_limits, units=len(limits_points(plan)), ticks=True),
        Step("whole network", step_network),
        Step("sweep", step_sweep, units=len(sweep_points(plan)), ticks=True),
        Step("validation against device data", step_validation),
    ]


def reproduce(
    out_dir: str | Path = DEFAULT_OUT_DIR,
    *,
    gpu: str = DEFAULT_GPU,
    overrides: Sequence[str] = (),
    quick: bool = False,
    progress: bool = True,
    networks: Sequence[str] | None = None,
    sm_sharing: bool = True,
) -> dict[str, Any]:
    """Run every step of the analysis into ``out_dir``; return (and write) the summary.

    ``gpu`` is a preset name or spec file, ``overrides`` ``FIELD=VALUE`` changes to it;
    ``sm_sharing`` selects the engine's physics for every simulation.
    ``progress`` shows a tqdm bar on stderr (when it is a terminal). ``networks`` replace
    the plan's (see :func:`make_plan`). The summary lists every
    artifact with its files and description, the steps' wall times, the headline numbers
    and what was skipped.
    """
    plan = make_plan(gpu, overrides=overrides, quick=quick, networks=networks,
                     sm_sharing=sm_sharing)
    out = Output(Path(out_dir))
    check_out_dir(out.root)
    out.root.mkdir(parents=True, exist_ok=True)
    steps = plan_steps(plan)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # disable=None: no bar when stderr is not a terminal (logs stay clean).
    with tqdm(total=sum(s.units for s in steps), disable=None if progress else True, unit="unit",
              bar_format=PROGRESS_FORMAT) as bar:
        for number, step in enumerate(steps, start=1):
            bar.set_description(f"step {number}/{len(steps)}: {step.label}")
            t0 = time.perf_counter()
            if step.ticks:
                step.run(plan, out, bar.update)
            else:
                step.run(plan, out)
                bar.update(step.units)
            timings[step.label] = round(time.perf_counter() - t0, 3)
    summary = {
        "command": "gpusim reproduce",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": plan.to_dict(),
        "gpu": plan.gpu.to_dict(),
        "wall_s": round(time.perf_counter() - started, 3),
        "step_wall_s": timings,
        "headline": out.headline,
        "artifacts": [asdict(a) for a in out.artifacts],
        "skipped": out.skipped,
    }
    (out.root / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable)
                                           + "\n", encoding="utf-8")
    return summary


#: What :func:`reproduce` writes at the top of its output folder.
OUTPUT_ENTRIES = frozenset({"figures", "tables", "traces", "summary.json"})


def check_out_dir(root: Path) -> None:
    """Raise :class:`GpusimError` unless ``root`` is new, empty, or holds only what a
    reproduction writes (:data:`OUTPUT_ENTRIES`): a rerun replaces its own files, and
    never a file of the user's that happens to share a name."""
    if root.exists() and not root.is_dir():
        raise GpusimError(f"output folder {root} exists and is not a folder")
    if not root.is_dir():
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in OUTPUT_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise GpusimError(f"output folder {root} already holds files reproduce does not "
                          f"write ({shown}); give a new or empty folder (reproduce writes "
                          f"{', '.join(sorted(OUTPUT_ENTRIES))} there)")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
