"""The device campaign: every step of one pass, within its time budget, into ``$OUT``.

``python -m sim.measure.micro run [--quick] --out DIR`` (on the device through
``scripts/device_campaign.sh``; also ``gpusim calibrate micro run``) runs the steps of
:mod:`sim.measure.micro.steps` in value order: the block-level experiments in this process
with CuPy (the queue experiment in one fresh child per ``CUDA_DEVICE_MAX_CONNECTIONS``
setting, which must be set before CUDA starts), then the networks in a PyTorch child
(:mod:`sim.measure.netbench`). It writes under DIR, within the device tool's return limits
(:mod:`sim.measure.micro.packing`):

* ``micro.tar.gz``: ``<gpu>/<experiment>.json`` per block-level experiment and
  ``<gpu>/blocks.npz`` (per-block logs of the contention and bandwidth cases), rewritten
  after every experiment;
* ``netbench_runs.json``, ``calibration.tar.gz``, ``log.txt``: the networks step's output;
* ``campaign.json``: per step what ran, what was skipped and why, budgets and seconds used.

``plan`` is a dry run without a GPU (:func:`sim.measure.micro.steps.dry_run`).

This module never imports the engine (``sim.engine``): the device has no SimPy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.presets import DEFAULT_GPU, load_gpu
from gpu_models.units import KILO, US_PER_S
from sim.measure.micro import packing, plans, provenance, steps
from sim.measure.micro.schema import EXPERIMENTS, FORMAT, check_result, result_path

#: Committed files stay well under this; a bigger one is reported.
MAX_FILE_B = 1_000_000
#: Experiments whose per-block logs always go into ``<gpu>/blocks.npz`` (the ground truth of
#: SM sharing and memory parallelism); ``--raw`` adds the other timeline experiments.
RAW_EXPERIMENTS: tuple[str, ...] = ("contention", "bandwidth")
#: Source files whose hash goes into the provenance (the data say which code measured them).
_SOURCES: tuple[str, ...] = ("kernels.cu", "plans.py", "harness.py", "blocklog.py")
#: Where experiments put per-block logs when asked to keep them (None: not kept).
RawLogs = dict[str, Any] | None


def _clock() -> float:
    """Seconds on a monotonic clock: every budget and deadline of a pass reads this one."""
    return time.monotonic()


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
        if _clock() > deadline:
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
        if _clock() > deadline:
            truncated = True
            break
        done.append(run_occupancy_shape(gpu, shape))
    return Outcome({"spin_ns": plans.OCCUPANCY_SPIN_NS, "planned_shapes": len(shapes),
                    "occupancy_api": gpu.api_used.get("occupancy", ""),
                    "carveout_preference_percent": 100}, done, truncated)


def exp_contention(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    outcome = _timeline(gpu, plans.contention_plan(gpu.sm_count, gpu.slots, quick,
                                                   gpu.clock_hz,
                                                   smem_per_sm_B=gpu.smem_per_sm_B),
                        deadline, raw)
    outcome.parameters.update({
        "gate_ns": plans.CONTENTION_GATE_NS, "fma_target_ns": plans.FMA_TARGET_NS,
        "fma_unroll": plans.FMA_UNROLL, "fma_mul": plans.FMA_MUL, "fma_add": plans.FMA_ADD,
        "fma_latency_cycles_planned": plans.FMA_LATENCY_CYCLES, "clock_hz": gpu.clock_hz,
        "stream_elems_per_thread": plans.STREAM_ELEMS_PER_THREAD,
        "bytes_per_elem": plans.BYTES_PER_ELEM})
    return outcome


def exp_waves(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    return _timeline(gpu, plans.waves_plan(gpu.sm_count, gpu.slots, quick), deadline, raw)


def exp_concurrency(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    return _timeline(gpu, plans.concurrency_plan(gpu.sm_count, gpu.slots, quick), deadline,
                     raw)


def exp_bandwidth(gpu: Any, quick: bool, deadline: float, raw: RawLogs) -> Outcome:
    outcome = _timeline(gpu, plans.bandwidth_plan(gpu.sm_count, gpu.slots, quick,
                                                  smem_per_sm_B=gpu.smem_per_sm_B),
                        deadline, raw)
    outcome.parameters.update({
        "elems_per_block": plans.STREAM_ELEMS_PER_BLOCK, "bytes_per_elem": plans.BYTES_PER_ELEM,
        "stream_elems_per_thread": plans.STREAM_ELEMS_PER_THREAD,
        "spoiler_smem_B": plans.pair_spoiler_B(gpu.smem_per_sm_B)})
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
                        _clock() + budget_s, None)
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
        budget = max(1.0, (deadline - _clock()) / (len(settings) - i))
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "part.json"
            cmd = [sys.executable, "-m", "sim.measure.micro", "queues-child",
                   "--connections", str(connections), "--budget-s", f"{budget:.1f}",
                   "--out", str(part)] + (["--quick"] if quick else [])
            env = {**os.environ, "CUDA_DEVICE_MAX_CONNECTIONS": str(connections)}
            subprocess.run(cmd, env=env, check=True, timeout=budget + steps.GRACE_S)
            data = json.loads(part.read_text(encoding="utf-8"))
        cases.extend(data["cases"])
        truncated = truncated or data["truncated"]
        children[str(connections)] = {"argv": data["provenance"]["argv"],
                                      "env": data["provenance"]["env"],
                                      "date_utc": data["provenance"]["date_utc"]}
    return Outcome({"connections": list(settings), "spin_ns": plans.SPIN_NS,
                    "gate_ns": plans.GATE_NS, "child_processes": children}, cases, truncated)


EXPERIMENT_FUNCS: dict[str, Callable[[Any, bool, float, RawLogs], Outcome]] = {
    "contention": exp_contention,
    "waves": exp_waves,
    "concurrency": exp_concurrency,
    "queues": exp_queues,
    "bandwidth": exp_bandwidth,
    "occupancy": exp_occupancy,
    "launch_overhead": exp_launch_overhead,
}


@dataclass
class StepRecord:
    """What one step of a pass did (``campaign.json`` and the summary table)."""

    step: str
    part: int
    budget_s: float
    status: str = "pending"  # ran, truncated, skipped, failed, timeout
    cases: int = 0
    started_s: float = 0.0
    used_s: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class NetworkOptions:
    """How the networks step runs its child (``--net-*``; tests run it on the CPU, small)."""

    device: str = "cuda"
    reps: int | None = None
    warmup: int | None = None
    max_batch: int | None = None
    resolution: int | None = None


@dataclass
class _Pass:
    """The state of one pass: where it writes, its clock, and what each step did."""

    out_root: Path
    quick: bool
    limit_s: float
    argv: list[str]
    started: float = field(default_factory=lambda: _clock())  # late-bound: tests set _clock
    records: list[StepRecord] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        return _clock() - self.started

    def left(self) -> float:
        return self.limit_s - steps.RESERVE_S - self.elapsed()

    def write_summary(self) -> None:
        doc = {"format": "gpusim-campaign/1", "quick": self.quick, "limit_s": self.limit_s,
               "elapsed_s": round(self.elapsed(), 1), "argv": self.argv,
               "provenance": self.provenance,
               "steps": [asdict(r) for r in self.records]}
        path = self.out_root / "campaign.json"
        tmp = path.with_name(".campaign.json.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def sources_sha256() -> dict[str, str]:
    """SHA-256 of the measuring code's sources, for the provenance."""
    here = Path(__file__).parent
    return {name: hashlib.sha256((here / name).read_bytes()).hexdigest() for name in _SOURCES}


def _gpu_state() -> str:
    smi = provenance.nvidia_smi(["clocks.sm", "clocks.mem", "temperature.gpu", "power.draw"])
    return ", ".join(f"{k}={v}" for k, v in smi.items()) or "nvidia-smi gave nothing"


def _run_experiments(run: _Pass, chosen: Sequence[str], argv: Sequence[str], script: str,
                     keep_raw: bool) -> None:
    """The block-level steps, in this process with CuPy; results packed after each."""
    records = {r.step: r for r in run.records}
    try:
        cupy = _import_cupy()
        from sim.measure.micro.harness import Gpu, selfcheck

        gpu = Gpu(cupy)
        prov = provenance.collect(argv, script)
        prov["sources_sha256"] = sources_sha256()
        key = provenance.gpu_key(prov["gpu_name"])
        print(f"GPU {prov['gpu_name']!r} ({gpu.sm_count} SMs) -> data key {key!r}; "
              f"driver {prov['driver_version']}, CuPy {prov['cupy_version']}", flush=True)
        prov["selfcheck"] = selfcheck(gpu)
        print(f"selfcheck: {prov['selfcheck']}", flush=True)
    except Exception as exc:  # no CuPy, no GPU, a broken harness: the networks still run
        traceback.print_exc()
        for name in chosen:
            records[name].status = "failed"
            records[name].note = f"set-up: {type(exc).__name__}: {exc}"
        return
    run.provenance.update({k: prov[k] for k in ("gpu_name", "driver_version", "cupy_version",
                                                 "nvrtc_version", "cuda_runtime_version",
                                                 "date_utc", "sources_sha256")})
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        raw: dict[str, Any] = {}
        for name in chosen:
            run.write_summary()  # what the steps so far did, should the pass be cut off here
            record = records[name]
            budget = min(record.budget_s, run.left())
            if run.left() < steps.MIN_START_S:
                record.status = "skipped"
                record.note = f"{run.left():.0f} s left before the pass limit"
                print(f"[{name}] skipped: {record.note}", flush=True)
                continue
            started = _clock()
            record.started_s = round(run.elapsed(), 1)
            print(f"[{name}] part {record.part}, budget {budget:.0f} s "
                  f"(at {run.elapsed():.0f} s of {run.limit_s:.0f} s)", flush=True)
            part_raw: dict[str, Any] | None = {} if keep_raw or name in RAW_EXPERIMENTS \
                else None
            try:
                outcome = EXPERIMENT_FUNCS[name](gpu, run.quick, started + budget, part_raw)
                write_document(document(name, key, prov, outcome, run.quick), staging)
            except Exception as exc:
                traceback.print_exc()
                record.status, record.note = "failed", f"{type(exc).__name__}: {exc}"
                print(f"[{name}] FAILED: {record.note}", flush=True)
                continue
            finally:
                record.used_s = round(_clock() - started, 1)
                gpu.free_memory()
            record.status = "truncated" if outcome.truncated else "ran"
            record.cases = len(outcome.cases)
            raw.update({f"{name}/{k}": v for k, v in (part_raw or {}).items()})
            if raw:
                np.savez_compressed(staging / key / "blocks.npz", **raw)
            size = packing.pack_folder(staging, run.out_root / packing.MICRO_ARCHIVE)
            print(f"[{name}] {record.cases} cases{' (truncated)' if outcome.truncated else ''} "
                  f"in {record.used_s:.1f} s -> {packing.MICRO_ARCHIVE} "
                  f"({size / KILO:.0f} kB); GPU {_gpu_state()}", flush=True)
            if name == "occupancy":
                _print_occupancy_check(outcome.cases, key)


def _run_networks(run: _Pass, record: StepRecord, net: NetworkOptions) -> None:
    """The networks step: campaign 2's driver in a PyTorch child writing into the output
    folder; stopped if it runs past its budget by more than the grace."""
    budget = min(record.budget_s, run.left())
    if run.left() < steps.MIN_START_S:
        record.status, record.note = "skipped", f"{run.left():.0f} s left before the pass limit"
        print(f"[networks] skipped: {record.note}", flush=True)
        return
    settings = steps.NETWORK_SETTINGS[0 if run.quick else 1]
    cmd = [sys.executable, "-m", "sim.measure.netbench", "--out", str(run.out_root),
           "--device", net.device, "--networks", *settings.networks,
           "--precisions", *settings.precisions, "--phases", *settings.phases,
           "--batches", *map(str, settings.batches),
           "--reps", str(net.reps or settings.reps),
           "--warmup", str(settings.warmup if net.warmup is None else net.warmup),
           "--budget-s", f"{budget:.0f}", "--no-gemm"]
    if net.max_batch is not None:
        cmd += ["--max-batch", str(net.max_batch)]
    if net.resolution is not None:
        cmd += ["--resolution", str(net.resolution)]
    record.started_s = round(run.elapsed(), 1)
    print(f"[networks] part {record.part}, budget {budget:.0f} s "
          f"(at {run.elapsed():.0f} s of {run.limit_s:.0f} s): {' '.join(cmd[1:])}", flush=True)
    started = _clock()
    timeout = max(1.0, min(budget + steps.GRACE_S, run.left()))
    try:
        result = subprocess.run(cmd, check=False, timeout=timeout)
        record.status = "ran" if result.returncode == 0 else "failed"
        if result.returncode:
            record.note = f"exit {result.returncode}"
    except subprocess.TimeoutExpired:
        record.status = "timeout"
        record.note = f"stopped after {timeout:.0f} s; configurations finished before are kept"
    record.used_s = round(_clock() - started, 1)
    runs_path = run.out_root / "netbench_runs.json"
    if runs_path.is_file():
        runs = json.loads(runs_path.read_text(encoding="utf-8"))
        record.cases = len(runs["runs"])
        # torch, cuDNN and CUDA as the networks saw them, beside the block-level provenance.
        net_prov = runs.get("provenance", {})
        run.provenance["networks"] = {k: net_prov.get(k) for k in ("gpu_name", "driver", "cuda",
                                                                   "libraries", "date")}
    log_path = run.out_root / "log.txt"
    if log_path.is_file():  # configurations the child could not measure, with why in log.txt
        lines = log_path.read_text(encoding="utf-8").splitlines()
        lost = {w: sum(line.startswith(f"{w} ") for line in lines) for w in ("failed", "skipped")}
        lost_text = ", ".join(f"{n} {w}" for w, n in lost.items() if n)
        if lost_text:
            record.note = "; ".join(filter(None, [record.note, f"{lost_text} (log.txt)"]))
    print(f"[networks] {record.status}: {record.cases} configurations in {record.used_s:.1f} s"
          f"{'; ' + record.note if record.note else ''}; GPU {_gpu_state()}", flush=True)


def run_campaign(out_root: Path, quick: bool, only: Sequence[str], argv: Sequence[str],
                 script: str, keep_raw: bool = False, max_s: float | None = None,
                 net: NetworkOptions | None = None) -> int:
    """Run one pass (the chosen steps, in run order) and write its files under ``out_root``;
    returns 0 when every step ran, 1 when one failed or the output would not come back."""
    if "CUDA_DEVICE_MAX_CONNECTIONS" in os.environ:
        raise GpusimError("unset CUDA_DEVICE_MAX_CONNECTIONS: the campaign sets it per "
                          "queue experiment child, and the other experiments use the default")
    out_root.mkdir(parents=True, exist_ok=True)
    run = _Pass(out_root, quick, steps.limit_s(quick, max_s), list(argv))
    chosen = [s for s in steps.RUN_ORDER if not only or s in only]
    run.records = [StepRecord(s, steps.PART[s], round(steps.budget_s(s, quick, max_s), 1))
                   for s in chosen]
    print(f"== device campaign, {'quick' if quick else 'full'} pass: steps {', '.join(chosen)};"
          f" limit {run.limit_s:.0f} s", flush=True)
    experiments = [s for s in chosen if s in EXPERIMENTS]
    if experiments:
        _run_experiments(run, experiments, argv, script, keep_raw)
    if "networks" in chosen:
        _run_networks(run, run.records[-1], net or NetworkOptions())
    run.write_summary()
    return _print_summary(run)


def _print_summary(run: _Pass) -> int:
    """The closing table (the device tool's reply shows the end of the output) and the
    return-limit check; the exit code of the pass."""
    print(f"== summary ({'quick' if run.quick else 'full'} pass): {run.elapsed():.0f} s of "
          f"{run.limit_s:.0f} s", flush=True)
    print(f"  {'part':4s} {'step':16s} {'status':9s} {'cases':>5s} {'budget_s':>8s} "
          f"{'used_s':>7s}  note")
    for r in run.records:
        print(f"  {r.part:<4d} {r.step:16s} {r.status:9s} {r.cases:5d} {r.budget_s:8.0f} "
              f"{r.used_s:7.1f}  {r.note}")
    for f in packing.listing(run.out_root):
        print(f"  {f.size_B:10d} B  {f.path}")
    problems = packing.return_problems(run.out_root)
    print("  return limits: " + ("; ".join(problems) if problems else
                                 f"ok ({packing.MAX_FILES} files, "
                                 f"{packing.MAX_FILE_B // 2**20} MiB each at most)"), flush=True)
    failed = [r for r in run.records if r.status in ("failed", "timeout", "pending")]
    return 1 if failed or problems else 0


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


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The campaign's sub-commands, for ``python -m sim.measure.micro`` and
    ``gpusim calibrate micro``."""
    sub = parser.add_subparsers(dest="micro_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run a pass of the campaign on GPU 0 (needs CuPy, a GPU "
                         "and, for the networks step, PyTorch)")
    run.add_argument("--quick", action="store_true", help="short pass (under 2 minutes)")
    run.add_argument("--out", type=Path, required=True,
                     help="folder for micro.tar.gz, the networks' files and campaign.json")
    run.add_argument("--only", nargs="+", choices=steps.RUN_ORDER, default=[],
                     help="run only these steps")
    run.add_argument("--raw", action="store_true",
                     help="keep the per-block logs of every timeline case in blocks.npz, "
                     "not only those of contention and bandwidth")
    run.add_argument("--max-s", type=float, default=None,
                     help="wall-clock limit of the pass (default 120 s quick, 480 s full); "
                     "every step's budget scales with it")
    run.add_argument("--net-device", choices=("cuda", "cpu"), default="cuda",
                     help="device of the networks step (cpu: a smoke test of the driver)")
    run.add_argument("--net-reps", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--net-warmup", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--net-max-batch", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--net-resolution", type=int, default=None, help=argparse.SUPPRESS)
    run.set_defaults(micro_func=_cmd_run)
    plan = sub.add_parser("plan", help="dry run without a GPU: every case and time estimates")
    plan.add_argument("--quick", action="store_true")
    plan.add_argument("--gpu", default=DEFAULT_GPU, help="preset to size the plans for")
    plan.add_argument("--summary", action="store_true", help="one line per step, no cases")
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
    net = NetworkOptions(args.net_device, args.net_reps, args.net_warmup, args.net_max_batch,
                         args.net_resolution)
    return run_campaign(args.out, args.quick, args.only, argv, script, args.raw, args.max_s,
                        net)


def _cmd_plan(args: argparse.Namespace, argv: Sequence[str], script: str) -> int:
    del argv, script
    result = steps.dry_run(args.gpu, args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(steps.format_dry_run(result, cases=not args.summary))
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
                                     description="The device campaign: SM contention, block "
                                     "scheduling, bandwidth and launch microbenchmarks (CuPy), "
                                     "then network runs (PyTorch)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_args(args, argv, "python -m sim.measure.micro")
    except GpusimError as exc:
        print(f"sim.measure.micro: error: {exc}", file=sys.stderr)
        return 2
