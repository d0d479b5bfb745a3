"""Engine speed: kernels/s, blocks/s and events/s on programs of growing size.

Two program shapes on the H100 preset, kernels of 256 threads and 32 registers (8 blocks
per SM), block times drawn from 5-15 us, every 4th kernel with DRAM traffic (about a third
of the bandwidth per wave), 2 us launch overhead:

* ``serial``: one stream, as a framework runs a network by default. Each kernel's waves
  start together, so the grouped mode needs about one event per wave.
* ``4-stream``: kernels dealt round-robin over 4 streams, every 10th waiting on a kernel of
  another stream. Kernels of different block times share SMs, so the SMs drift out of
  phase and block starts fragment into many small groups: the hard case.

Every kernel's blocks also ask a share of their SM's FP32 throughput, from a separate random
stream, so that the programs are otherwise the same as before SM sharing existed (docs/model.md
§6.7). ``--shares model`` (default) draws them as the roofline gives them: 0.7 x 0.5-1.0 of 1/8
per block, so 8 resident blocks never ask more than the SM has (these kernels' blocks all have
one footprint, so no mix of them does either): the cost of the bookkeeping. ``--shares stress``
draws 0.06-0.14 per block (8 blocks: 0.5-1.1 of the SM): SMs are over-subscribed in many
different mixes, blocks of one kernel on different SMs run at different rates and groups split:
the cost of the mechanism at work. Each size runs with ``--sm-sharing on`` (``on``) and
``off``; with ``--baseline DIR`` (a checkout of the engine before SM sharing, e.g. ``git
worktree`` or ``git archive`` of an older commit) the same programs without the shares also run
on that engine in a subprocess, in the same run, and ``on/base`` is the cost of SM sharing and
the memory-parallelism bound (issue 14: at most 2x).

The exact (per-block) mode runs where it is affordable. ``bare SimPy ev/s`` is a plain SimPy
process yielding as many timeouts as the engine processed events, measured in the same run;
``ratio`` is the engine's events/s over it. CPU seconds are reported next to wall seconds
because the benchmark machine may be shared.

The default run prints the targets of issue 18, each next to the time of 100,000 bare SimPy
timeouts measured in the same run (``x bare``: the target's time over it), CPU seconds where
the work is in this process (the machine may be shared):

* ``program``: the 1,000-kernel x 4,000-block ``4-stream`` program (mixed block times, DRAM
  traffic and SM shares, a cross-stream event every 10th kernel; the issue's profile: ~120
  groups per kernel), SM sharing on (target <= 5x bare SimPy). (``mixed=True`` also mixes
  the block shapes: far more groups, a harder case the checksum covers on a small program);
* ``limits``: the Inception-v3 training b32 limits report on the H100, every default policy,
  ``cost_model="roofline"`` (target <= 1.5 s);
* ``limits-2w``: the same report with ``workers=2`` (policies in two worker processes), wall
  seconds, worker start-up included (what a user waits on two cores);
* ``sweep``: ResNet-50 b32 inference limits reports (every policy) over 8 SM counts of the
  H100, on a local pool of 2 workers, start-up included (target >= 5 points/s);
* ``start-up``: ``gpusim gpus`` in a subprocess, wall seconds (target <= 0.4 s);
* ``100k``: ``gpusim run`` of a 100,000-kernel serial program in a subprocess: peak resident
  memory and lines printed (target < 300 MB and a summarised table).

``--sizes`` prints the older table of programs of growing size instead::

    python benchmarks/engine_bench.py [--only program,limits,...]
    python benchmarks/engine_bench.py --sizes [--quick] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import simpy

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, simulate

#: (shape, kernels, blocks per kernel, also run exact mode)
SIZES: tuple[tuple[str, int, int, bool], ...] = (
    ("serial", 10, 1_000, True),
    ("serial", 100, 2_000, True),
    ("serial", 1_000, 2_000, False),
    ("serial", 1_000, 10_000, False),
    ("serial", 10_000, 100, False),
    ("serial", 10_000, 2_000, False),
    ("4-stream", 10, 1_000, True),
    ("4-stream", 100, 2_000, True),
    ("4-stream", 1_000, 2_000, False),
    ("4-stream", 10_000, 100, False),
)
QUICK_SIZES: tuple[tuple[str, int, int, bool], ...] = (
    ("serial", 10, 1_000, True), ("serial", 1_000, 2_000, False),
    ("4-stream", 100, 2_000, False),
)


#: Per-block SM share ranges of ``--shares`` (module docstring).
SHARES: dict[str, tuple[float, float]] = {"model": (0.7 * 0.5 / 8, 0.7 / 8),
                                           "stress": (0.06, 0.14)}


#: Block shapes of ``mixed`` programs: (threads, registers per thread, shared memory bytes).
MIXED_SHAPES: tuple[tuple[int, int, int], ...] = (
    (256, 32, 0), (128, 64, 16 * 1024), (512, 40, 0), (256, 96, 48 * 1024), (64, 32, 8 * 1024))


def make_program(shape: str, kernels: int, blocks: int, seed: int = 0, *,
                 shares: str | None = "model", mixed: bool = False) -> Program:
    """A synthetic program of ``kernels`` launches with ``blocks`` blocks each; with
    ``shares`` (a key of :data:`SHARES`) every kernel's blocks ask a share of their SM;
    ``mixed``: block shapes drawn from :data:`MIXED_SHAPES` (a separate random stream)."""
    rng = np.random.default_rng(seed)
    shapes = np.random.default_rng(seed + 2).integers(0, len(MIXED_SHAPES), kernels)
    low, high = SHARES[shares] if shares is not None else (0.0, 0.0)
    share = np.random.default_rng(seed + 1).uniform(low, high, kernels)
    n_streams = 1 if shape == "serial" else 4
    streams = tuple(StreamDef(f"s{i}") for i in range(n_streams))
    gpu = load_gpu("h100")
    launches = []
    for i in range(kernels):
        after = (f"k{i - 3}",) if n_streams > 1 and i % 10 == 9 else ()
        block_time_s = float(rng.uniform(5e-6, 15e-6))
        # About a third of the bandwidth when a full wave of 1056 blocks runs.
        dram_bytes = gpu.dram_bw_Bps / 3 / 1056 * block_time_s * blocks if i % 4 == 0 else 0.0
        threads, regs, smem_B = MIXED_SHAPES[int(shapes[i])] if mixed else (256, 32, 0)
        launches.append(Launch(
            name=f"k{i}", stream=f"s{i % n_streams}", grid=blocks, threads=threads,
            regs_per_thread=regs, smem_per_block_B=smem_B, block_time_s=block_time_s,
            dram_bytes=dram_bytes, after=after,
            sm_throughput={"simt": float(share[i])} if shares is not None else {},
        ))
    return Program(gpu, streams, tuple(launches), launch_overhead_s=2e-6)


def bare_simpy_events_per_s(n_events: int) -> float:
    """Timeouts per second of a bare SimPy process loop."""
    env = simpy.Environment()

    def loop() -> simpy.events.ProcessGenerator:
        for _ in range(n_events):
            yield env.timeout(1.0)

    env.process(loop())
    start = time.perf_counter()
    env.run()
    return n_events / (time.perf_counter() - start)


#: Run in a subprocess on the baseline engine: time one program of its own generator.
_BASELINE_SNIPPET = """
import json, sys, time
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import engine_bench
from sim import simulate
program = engine_bench.make_program(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
cpu = time.process_time()
result = simulate(program)
print(json.dumps({"wall_s": result.counters.wall_s, "cpu_s": time.process_time() - cpu,
                  "events": result.counters.events, "makespan_s": result.makespan_s}))
"""


def baseline_run(directory: Path, shape: str, kernels: int, blocks: int) -> dict[str, float]:
    """The baseline engine in ``directory`` on the same program without SM shares."""
    env = {**os.environ, "PYTHONPATH": str(directory)}
    out = subprocess.run([sys.executable, "-c", _BASELINE_SNIPPET, str(directory), shape,
                          str(kernels), str(blocks)], env=env, capture_output=True, text=True,
                         check=True, cwd=directory)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def sizes_table(args: argparse.Namespace) -> None:
    """The table of programs of growing size (``--sizes``)."""
    header = (f"{'shape':>8} {'kernels':>7} {'blocks/k':>8} {'mode':>7} {'sharing':>7} "
              f"{'wall s':>7} {'cpu s':>7} {'kernels/s':>9} {'blocks/s':>9} {'events':>8} "
              f"{'groups/k':>8} {'events/s':>9} {'bare SimPy ev/s':>15} {'ratio':>6} "
              f"{'on/off':>6} {'on/base':>7}")
    print(header)
    print("-" * len(header))
    for shape, kernels, blocks, with_exact in QUICK_SIZES if args.quick else SIZES:
        program = make_program(shape, kernels, blocks, shares=args.shares)
        base = (baseline_run(args.baseline, shape, kernels, blocks)
                if args.baseline is not None else None)
        for mode in ("grouped", "exact") if with_exact else ("grouped",):
            cpu_s: dict[bool, float] = {}
            for sharing in (False, True):
                cpu = time.process_time()
                result = simulate(program, mode=mode, sm_sharing=sharing)
                cpu_s[sharing] = time.process_time() - cpu
                c = result.counters
                bare = bare_simpy_events_per_s(max(c.events, 10_000))
                events_per_s = c.events / c.wall_s
                on_off = f"{cpu_s[True] / cpu_s[False]:6.2f}" if sharing else ""
                on_base = (f"{cpu_s[True] / base['cpu_s']:7.2f}"
                           if sharing and base is not None and mode == "grouped" else "")
                print(f"{shape:>8} {kernels:>7} {blocks:>8} {mode:>7} "
                      f"{'on' if sharing else 'off':>7} {c.wall_s:>7.3f} {cpu_s[sharing]:>7.3f} "
                      f"{kernels / c.wall_s:>9.0f} {c.blocks / c.wall_s:>9.3g} {c.events:>8} "
                      f"{c.groups / kernels:>8.1f} {events_per_s:>9.0f} {bare:>15.0f} "
                      f"{events_per_s / bare:>6.3f} {on_off:>6} {on_base:>7}")
        if base is not None:
            print(f"{shape:>8} {kernels:>7} {blocks:>8} {'grouped':>7} {'base':>7} "
                  f"{base['wall_s']:>7.3f} {base['cpu_s']:>7.3f} "
                  f"{kernels / base['wall_s']:>9.0f} {'':>9} {int(base['events']):>8}")


# ---------------------------------------------------------------------- issue-18 targets
BARE_EVENTS = 100_000
#: Target name -> (what is measured, the target as text).
TARGETS: dict[str, str] = {
    "program": "1,000 x 4,000 4-stream program, CPU s (target <= 5x bare SimPy)",
    "limits": "inception_v3 training b32 limits report, CPU s (target <= 1.5 s)",
    "limits-2w": "the same report with workers=2, wall s, worker start-up included",
    "sweep": "resnet50 b32 sweep, 8 points, 2 workers, wall s (target >= 5 points/s)",
    "start-up": "gpusim gpus, subprocess wall s (target <= 0.4 s)",
    "100k": "gpusim run, 100,000 kernels: wall s, peak MB, lines (target < 300 MB, summary)",
}


def bare_simpy_s(n_events: int = BARE_EVENTS) -> float:
    """CPU seconds of ``n_events`` timeouts of a bare SimPy process."""
    env = simpy.Environment()

    def loop() -> simpy.events.ProcessGenerator:
        for _ in range(n_events):
            yield env.timeout(1.0)

    env.process(loop())
    start = time.process_time()
    env.run()
    return time.process_time() - start


def target_program() -> tuple[float, str]:
    program = make_program("4-stream", 1_000, 4_000)
    start = time.process_time()
    result = simulate(program, sm_sharing=True)
    c = result.counters
    return time.process_time() - start, (f"makespan {result.makespan_s * 1e3:.3f} ms, "
                                         f"{c.events} events, {c.groups} groups")


def target_limits() -> tuple[float, str]:
    from sim.analysis.limits import limits_for_workload

    start = time.process_time()
    report = limits_for_workload("inception_v3", batch=32, phase="training", gpu="h100",
                                 cost_model="roofline")
    return time.process_time() - start, (f"best {report.best_policy} "
                                         f"{report.best_s * 1e6:.1f} us")


def target_limits_2w() -> tuple[float, str]:
    from sim.analysis.limits import limits_for_workload

    start = time.perf_counter()
    report = limits_for_workload("inception_v3", batch=32, phase="training", gpu="h100",
                                 cost_model="roofline", workers=2)
    return time.perf_counter() - start, (f"best {report.best_policy} "
                                         f"{report.best_s * 1e6:.1f} us")


def target_sweep() -> tuple[float, str]:
    from sim.analysis.sweep import LocalPool, SweepSpec, run_sweep

    spec = SweepSpec.from_tables(
        [{"sm_count": ["66", "99", "132", "165", "198", "231", "264", "330"]}],
        defaults={"gpu": ["h100"], "workload": ["resnet50"], "batch": ["32"],
                  "phase": ["inference"], "cost_model": ["roofline"]})
    outcome = run_sweep(spec, executor=LocalPool(workers=2), progress=False)
    return outcome.elapsed_s, f"{outcome.points_per_s:.2f} points/s, {outcome.errors} invalid"


def _gpusim() -> list[str]:
    return [str(Path(sys.executable).with_name("gpusim"))]


def target_startup() -> tuple[float, str]:
    # As an installed package runs: with bytecode caches (this machine may switch them off
    # with PYTHONDONTWRITEBYTECODE; the first run writes them).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = []
    for _ in range(4):
        start = time.perf_counter()
        subprocess.run([*_gpusim(), "gpus"], check=True, capture_output=True, env=env)
        runs.append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    python_s = time.perf_counter() - start
    return min(runs[1:]), f"best of 3 after a warm-up; bare python {python_s:.3f} s"


def target_100k() -> tuple[float, str]:
    kernels = [{"name": f"k{i}", "stream": "s", "grid": 132 * (1 + i % 4), "threads": 256,
                "regs": 32, "block_time_us": 2.0 + i % 7} for i in range(100_000)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.json"
        path.write_text(json.dumps({"gpu": "h100", "streams": [{"name": "s"}],
                                    "kernels": kernels}), encoding="utf-8")
        code = ("import resource, sys\nfrom sim.cli import main\nrc = main(['run', sys.argv[1]])\n"
                "print('peak_kB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
                "'rc', rc, file=sys.stderr)")
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                             capture_output=True, text=True)
        wall_s = time.perf_counter() - start
    peak_kB = int(out.stderr.split("peak_kB")[-1].split()[0])
    lines = out.stdout.count("\n")
    return wall_s, f"peak {peak_kB / 1024:.0f} MB, {lines} lines printed"


TARGET_FUNCTIONS = {"program": target_program, "limits": target_limits,
                    "limits-2w": target_limits_2w, "sweep": target_sweep,
                    "start-up": target_startup, "100k": target_100k}


def targets_table(only: list[str]) -> None:
    """Each target's time as a ratio to bare SimPy, measured in this run: the reference is
    timed (best of 3) right before and right after each target and their mean taken, so
    that a machine whose speed drifts (a shared one) moves both alike."""
    before_s = min(bare_simpy_s() for _ in range(3))
    print(f"bare SimPy: {BARE_EVENTS:,} timeouts in {before_s:.4f} CPU s (best of 3)")
    for name in only:
        seconds, detail = TARGET_FUNCTIONS[name]()
        after_s = min(bare_simpy_s() for _ in range(3))
        bare_s = (before_s + after_s) / 2
        print(f"{name:>9}: {seconds:8.3f} s = {seconds / bare_s:7.1f}x bare SimPy   "
              f"{detail}   [{TARGETS[name]}; bare SimPy {before_s:.4f} s before, "
              f"{after_s:.4f} s after]", flush=True)
        before_s = after_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(TARGETS),
                        help=f"comma-separated targets (default all: {', '.join(TARGETS)})")
    parser.add_argument("--sizes", action="store_true",
                        help="the table of programs of growing size instead of the targets")
    parser.add_argument("--quick", action="store_true", help="with --sizes: three sizes only")
    parser.add_argument("--shares", choices=tuple(SHARES), default="model",
                        help="SM shares of the blocks (default model; see the docstring)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="with --sizes: a checkout of the engine before SM sharing, timed "
                        "on the same programs (without shares) in a subprocess")
    args = parser.parse_args()
    if args.sizes:
        sizes_table(args)
        return
    only = args.only.split(",")
    unknown = [n for n in only if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    targets_table(only)


if __name__ == "__main__":
    main()
