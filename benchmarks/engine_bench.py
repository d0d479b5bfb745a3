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

    python benchmarks/engine_bench.py [--quick] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def make_program(shape: str, kernels: int, blocks: int, seed: int = 0, *,
                 shares: str | None = "model") -> Program:
    """A synthetic program of ``kernels`` launches with ``blocks`` blocks each; with
    ``shares`` (a key of :data:`SHARES`) every kernel's blocks ask a share of their SM."""
    rng = np.random.default_rng(seed)
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
        launches.append(Launch(
            name=f"k{i}", stream=f"s{i % n_streams}", grid=blocks, threads=256, regs_per_thread=32,
            smem_per_block_B=0, block_time_s=block_time_s, dram_bytes=dram_bytes, after=after,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three sizes only")
    parser.add_argument("--shares", choices=tuple(SHARES), default="model",
                        help="SM shares of the blocks (default model; see the docstring)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a checkout of the engine before SM sharing, timed on the same "
                        "programs (without shares) in a subprocess")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
