"""Device campaign 1: run every experiment and write one JSON file per experiment.

``python -m sim.measure.micro run [--quick] --out DIR`` (or ``gpusim calibrate micro``)
runs, in order, each experiment of :data:`sim.measure.micro.schema.EXPERIMENTS` within its
time budget and writes ``DIR/<gpu>/<experiment>.json``. The queue experiment needs
``CUDA_DEVICE_MAX_CONNECTIONS`` set before CUDA starts, so it runs one fresh child process
per setting (``queues-child``) and merges their cases. ``plan`` is a dry run without a GPU:
it lists the cases the plans make for a preset GPU, sized with the project's occupancy
calculator, and estimates their time.

This module never imports the engine (``sim``): the device has no SimPy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.presets import DEFAULT_GPU, load_gpu
from gpu_models.units import NS_PER_S, US_PER_S
from sim.measure.micro import plans, provenance
from sim.measure.micro.schema import EXPERIMENTS, FORMAT, check_result, result_path

#: Seconds each experiment may start new cases for: (quick, full). A case in progress
#: finishes; the sums stay under 2 and 8 minutes with room for start-up and compilation.
BUDGETS_S: dict[str, tuple[float, float]] = {
    "occupancy": (15.0, 80.0),
    "waves": (10.0, 60.0),
    "concurrency": (10.0, 50.0),
    "bandwidth": (10.0, 50.0),
    "queues": (24.0, 100.0),  # split between the child processes
    "launch_overhead": (8.0, 30.0),
}
#: Committed files stay well under this; a bigger one is reported.
MAX_FILE_B = 1_000_000
#: Where experiments put per-block logs when asked to keep them (None: not kept).
RawLogs = dict[str, Any] | None


@dataclass(frozen=True)
class Outcome:
    """What one experiment produced."""

    parameters: dict[str, Any]
    cases: list[dict[str, Any]]
    truncated: bool


def document(experiment: str, gpu_key: str, prov: dict[str, Any], outcome: Outcome,
             quick: bool) -> dict[str, Any]:
    """The result file of one experiment (checked against the schema)."""
    doc = {
        "format": FORMAT,
        "experiment": experiment,
        "gpu_key": gpu_key,
        "provenance": prov,
        "parameters": {"quick": quick, **outcome.parameters,
                       "compile_options": {v: list(plans.compile_options(v))
                                           for v in plans.VARIANTS}},
        "truncated": outcome.truncated,
        "cases": outcome.cases,
    }
    check_result(doc, where=experiment)
    return doc


def dumps(obj: Any, depth: int = 0, flat_from: int = 4) -> str:
    """JSON with one line per item down to depth ``flat_from``, compact below it: readable
    diffs (one kernel or summary per line) without a line per number."""
    if depth >= flat_from or not isinstance(obj, (dict, list)) or not obj:
        return json.dumps(obj, separators=(", ", ": "))
    pad = " " * (depth + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(v, depth + 1, flat_from)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    items = [f"{pad}{dumps(v, depth + 1, flat_from)}" for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"


def write_document(doc: dict[str, Any], out_root: Path) -> Path:
    """Write ``doc`` to ``out_root/<gpu>/<experiment>.json``; returns the path."""
    path = result_path(out_root, doc["gpu_key"], doc["experiment"])
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(doc) + "\n"
    path.write_text(text, encoding="utf-8")
    if len(text) > MAX_FILE_B:
        print(f"warning: {path} is {len(text)} bytes (> {MAX_FILE_B})", file=sys.stderr)
    return path


def _timeline(gpu: Any, cases: Sequence[plans.CasePlan], deadline: float,
              raw: dict[str, Any] | None) -> Outcome:
    from sim.measure.micro.harness import run_timeline_case

    done, truncated = [], False
    for case in cases:
        if time.monotonic() > deadline:
            truncated = True
            break
        done.append(run_timeline_case(gpu, case, raw))
        gpu.free_memory()
        print(f"  {case.name}: makespan {done[-1]['detail']['makespan_s'] * US_PER_S:.1f} us",
              flush=True)
    return Outcome({"planned_cases": [c.name for c in cases],
                    "spin_ns": plans.SPIN_NS,
                    "carveout_preference_percent": 100}, done, truncated)


def exp_occupancy(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    from sim.measure.micro.harness import run_occupancy_shape

    del raw  # only the residency each shape reached is kept
    shapes = plans.occupancy_shapes(quick, gpu.smem_optin_B)
    done, truncated = [], False
    for shape in shapes:
        if time.monotonic() > deadline:
            truncated = True
            break
        done.append(run_occupancy_shape(gpu, shape))
    return Outcome({"spin_ns": plans.OCCUPANCY_SPIN_NS, "planned_shapes": len(shapes),
                    "occupancy_api": gpu.api_used.get("occupancy", ""),
                    "carveout_preference_percent": 100}, done, truncated)


def exp_waves(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    return _timeline(gpu, plans.waves_plan(gpu.sm_count, gpu.slots, quick), deadline, raw)


def exp_concurrency(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    return _timeline(gpu, plans.concurrency_plan(gpu.sm_count, gpu.slots, quick), deadline,
                     raw)


def exp_bandwidth(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    outcome = _timeline(gpu, plans.bandwidth_plan(gpu.sm_count, gpu.slots, quick), deadline,
                        raw)
    outcome.parameters["elems_per_block"] = plans.STREAM_ELEMS_PER_BLOCK
    outcome.parameters["bytes_per_elem"] = plans.BYTES_PER_ELEM
    return outcome


def exp_launch_overhead(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    from sim.measure.micro.harness import run_launch_overhead

    del deadline, raw  # a fixed, short experiment; its logs are summarised in full
    plan = plans.launch_plan(quick)
    return Outcome({"host_launches": plan.host_launches,
                    "device_launches": plan.device_launches, "repeats": plan.repeats,
                    "launch_path": "CuPy RawKernel.__call__ inside `with stream:`"},
                   run_launch_overhead(gpu, plan), False)


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise GpusimError(f"the campaign needs CuPy and a GPU ({exc}); `plan` runs without "
                          "them") from None
    return cupy


def queues_child(connections: int, quick: bool, budget_s: float, out: Path,
                 argv: Sequence[str], script: str) -> None:
    """One CUDA_DEVICE_MAX_CONNECTIONS setting (this process was started with it set)."""
    cupy = _import_cupy()
    from sim.measure.micro.harness import Gpu

    if os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS") != str(connections):
        raise GpusimError(f"queues-child needs CUDA_DEVICE_MAX_CONNECTIONS={connections} "
                          "in its environment before CUDA starts")
    gpu = Gpu(cupy)
    outcome = _timeline(gpu, plans.queues_plan(connections, quick),
                        time.monotonic() + budget_s, None)
    out.write_text(json.dumps({"provenance": provenance.collect(argv, script),
                               "cases": outcome.cases, "truncated": outcome.truncated}),
                   encoding="utf-8")


def exp_queues(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    """Run a fresh child per connections setting, then merge their cases (raw logs of the
    children are not kept)."""
    del gpu, raw  # the parent's context stays idle while the children measure
    cases: list[dict[str, Any]] = []
    children: dict[str, Any] = {}
    truncated = False
    settings = plans.QUEUE_CONNECTIONS
    for i, connections in enumerate(settings):
        budget = max(1.0, (deadline - time.monotonic()) / (len(settings) - i))
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "part.json"
            cmd = [sys.executable, "-m", "sim.measure.micro", "queues-child",
                   "--connections", str(connections), "--budget-s", f"{budget:.1f}",
                   "--out", str(part)] + (["--quick"] if quick else [])
            env = {**os.environ, "CUDA_DEVICE_MAX_CONNECTIONS": str(connections)}
            subprocess.run(cmd, env=env, check=True, timeout=budget + 120)
            data = json.loads(part.read_text(encoding="utf-8"))
        cases.extend(data["cases"])
        truncated = truncated or data["truncated"]
        children[str(connections)] = {"argv": data["provenance"]["argv"],
                                      "env": data["provenance"]["env"],
                                      "date_utc": data["provenance"]["date_utc"]}
    return Outcome({"connections": list(settings), "spin_ns": plans.SPIN_NS,
                    "gate_ns": plans.GATE_NS, "child_processes": children}, cases, truncated)


EXPERIMENT_FUNCS: dict[str, Callable[[Any, bool, float, RawLogs], Outcome]] = {
    "occupancy": exp_occupancy,
    "waves": exp_waves,
    "concurrency": exp_concurrency,
    "bandwidth": exp_bandwidth,
    "queues": exp_queues,
    "launch_overhead": exp_launch_overhead,
}


def run_campaign(out_root: Path, quick: bool, only: Sequence[str], argv: Sequence[str],
                 script: str, keep_raw: bool = False) -> int:
    """Run the chosen experiments on GPU 0 and write their files; returns an exit code."""
    if "CUDA_DEVICE_MAX_CONNECTIONS" in os.environ:
        raise GpusimError("unset CUDA_DEVICE_MAX_CONNECTIONS: the campaign sets it per "
                          "queue experiment child, and the other experiments use the default")
    cupy = _import_cupy()
    from sim.measure.micro.harness import Gpu, selfcheck

    chosen = list(only) or list(EXPERIMENTS)
    gpu = Gpu(cupy)
    prov = provenance.collect(argv, script)
    key = provenance.gpu_key(prov["gpu_name"])
    print(f"GPU {prov['gpu_name']!r} ({gpu.sm_count} SMs) -> data key {key!r}; "
          f"driver {prov['driver_version']}, CuPy {prov['cupy_version']}", flush=True)
    prov["selfcheck"] = selfcheck(gpu)
    print(f"selfcheck: {prov['selfcheck']}", flush=True)
    failures = 0
    raw: dict[str, Any] = {}
    for name in chosen:
        budget = BUDGETS_S[name][0 if quick else 1]
        started = time.monotonic()
        print(f"[{name}] budget {budget:.0f} s", flush=True)
        try:
            outcome = EXPERIMENT_FUNCS[name](gpu, quick, started + budget,
                                             raw if keep_raw else None)
            path = write_document(document(name, key, prov, outcome, quick), out_root)
        except Exception as exc:
            failures += 1
            traceback.print_exc()
            print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"[{name}] {len(outcome.cases)} cases{' (truncated)' if outcome.truncated else ''}"
              f" in {time.monotonic() - started:.1f} s -> {path}", flush=True)
        if name == "occupancy":
            _print_occupancy_check(outcome.cases, key)
    if keep_raw and raw:
        # One file for all experiments: the device tool returns at most 8 files.
        raw_path = out_root / key / "raw_blocklogs.npz"
        np.savez_compressed(raw_path, **raw)
        print(f"raw block logs of {len(raw)} kernels -> {raw_path} (not for committing)")
    return 1 if failures else 0


def _print_occupancy_check(cases: Sequence[dict[str, Any]], key: str) -> None:
    """One line: how often the API, the residency seen and the calculator agree."""
    try:
        spec = load_gpu(key)
    except GpusimError:
        print(f"  no preset {key!r}: calculator comparison left to `gpusim validate`")
        return
    calc_diff = sum(
        occupancy(spec, c["threads"], c["regs"], c["smem_static_B"] + c["smem_dynamic_B"])
        .blocks_per_sm != c["cuda_api_blocks_per_sm"] for c in cases)
    seen_diff = sum(c["resident_per_sm"] is not None
                    and c["resident_per_sm"] != c["cuda_api_blocks_per_sm"] for c in cases)
    print(f"  {len(cases)} shapes: calculator != CUDA API in {calc_diff}; "
          f"resident seen != CUDA API in {seen_diff}", flush=True)


# ---------------------------------------------------------------------- dry run
def _calculator_slots(gpu_name: str) -> tuple[int, Callable[[plans.Shape], int], float]:
    spec = load_gpu(gpu_name)

    def slots(shape: plans.Shape) -> int:
        regs = plans.PTXAS_REGS_SM90[(shape.kernel, shape.variant)]
        return max(1, occupancy(spec, shape.threads, regs, shape.smem_dynamic_B).blocks_per_sm)

    return spec.sm_count, slots, spec.dram_bw_Bps


def dry_run(gpu_name: str, quick: bool) -> dict[str, Any]:
    """Cases each experiment would run on preset ``gpu_name`` and a rough time estimate
    (sized with the project's calculator and ptxas register counts, not the device)."""
    sm_count, slots, bw = _calculator_slots(gpu_name)
    spec = load_gpu(gpu_name)
    experiments: dict[str, Any] = {}
    timeline = {
        "waves": plans.waves_plan(sm_count, slots, quick),
        "concurrency": plans.concurrency_plan(sm_count, slots, quick),
        "bandwidth": plans.bandwidth_plan(sm_count, slots, quick),
        "queues": [c for n in plans.QUEUE_CONNECTIONS for c in plans.queues_plan(n, quick)],
    }
    shapes = plans.occupancy_shapes(quick, spec.max_smem_per_block_B)
    # Two launches per shape of at most two waves, plus a few ms of host work each.
    per_shape_s = 2 * (2 * plans.OCCUPANCY_SPIN_NS / NS_PER_S + 3e-3)
    experiments["occupancy"] = {"cases": len(shapes), "estimate_s": len(shapes) * per_shape_s}
    for name, cases in timeline.items():
        experiments[name] = {
            "cases": len(cases),
            "launches": sum(len(c.kernels) for c in cases),
            "estimate_s": sum(plans.estimate_case_s(c, sm_count, slots, bw) for c in cases),
            "case_names": [c.name for c in cases],
        }
    lp = plans.launch_plan(quick)
    experiments["launch_overhead"] = {
        "cases": 4, "estimate_s": (lp.repeats + 1) * (lp.host_launches * 10e-6
                                                      + 3 * lp.device_launches * 60e-6)}
    for name, info in experiments.items():
        info["budget_s"] = BUDGETS_S[name][0 if quick else 1]
    return {"gpu": gpu_name, "quick": quick, "sm_count": sm_count,
            "experiments": experiments,
            "budget_total_s": sum(b[0 if quick else 1] for b in BUDGETS_S.values())}


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The campaign's sub-commands, for ``python -m sim.measure.micro`` and
    ``gpusim calibrate micro``."""
    sub = parser.add_subparsers(dest="micro_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the campaign on GPU 0 (needs CuPy and a GPU)")
    run.add_argument("--quick", action="store_true", help="short pass (under 2 minutes)")
    run.add_argument("--out", type=Path, required=True,
                     help="folder for <gpu>/<experiment>.json")
    run.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=[],
                     help="run only these experiments")
    run.add_argument("--raw", action="store_true",
                     help="also write <gpu>/raw_blocklogs.npz: the per-block logs of every "
                     "timeline case's committed repeat (large; not for committing)")
    run.set_defaults(micro_func=_cmd_run)
    plan = sub.add_parser("plan", help="dry run without a GPU: cases and time estimates")
    plan.add_argument("--quick", action="store_true")
    plan.add_argument("--gpu", default=DEFAULT_GPU, help="preset to size the plans for")
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(micro_func=_cmd_plan)
    # No help=: a sub-command without one is left out of --help (argparse would print
    # help=SUPPRESS literally as "==SUPPRESS=="); it is the campaign's own child process.
    child = sub.add_parser("queues-child")
    child.add_argument("--connections", type=int, required=True)
    child.add_argument("--budget-s", type=float, required=True)
    child.add_argument("--out", type=Path, required=True)
    child.add_argument("--quick", action="store_true")
    child.set_defaults(micro_func=_cmd_child)


def _cmd_run(args: argparse.Namespace, argv: Sequence[str], script: str) -> int:
    return run_campaign(args.out, args.quick, args.only, argv, script, args.raw)


def _cmd_plan(args: argparse.Namespace, argv: Sequence[str], script: str) -> int:
    del argv, script
    result = dry_run(args.gpu, args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"campaign 1 on {result['gpu']} ({result['sm_count']} SMs), "
          f"{'quick' if result['quick'] else 'full'} pass; sized with the calculator")
    for name, info in result["experiments"].items():
        print(f"  {name:16s} {info['cases']:4d} cases  estimate {info['estimate_s']:6.1f} s  "
              f"budget {info['budget_s']:5.0f} s")
    print(f"  total budget {result['budget_total_s']:.0f} s")
    return 0


def _cmd_child(args: argparse.Namespace, argv: Sequence[str], script: str) -> int:
    queues_child(args.connections, args.quick, args.budget_s, args.out, argv, script)
    return 0


def run_args(args: argparse.Namespace, argv: Sequence[str], script: str) -> int:
    """Dispatch parsed arguments; ``argv`` and ``script`` (the command that was typed) go
    into the provenance of what is measured."""
    return int(args.micro_func(args, argv, script))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim.measure.micro``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m sim.measure.micro",
                                     description="Device campaign 1: block scheduling, "
                                     "concurrency and bandwidth microbenchmarks (CuPy)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_args(args, argv, "python -m sim.measure.micro")
    except GpusimError as exc:
        print(f"sim.measure.micro: error: {exc}", file=sys.stderr)
        return 2
