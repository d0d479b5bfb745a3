"""Engine speed: kernels/s, blocks/s and events/s on programs of growing size.

Two program shapes on the H100 preset, kernels of 256 threads and 32 registers (8 blocks
per SM), block times drawn from 5-15 us, every 4th kernel with DRAM traffic (about a third
of the bandwidth per wave), 2 us launch overhead:

* ``serial``: one stream, as a framework runs a network by default. Each kernel's waves
  start together, so the grouped mode needs about one event per wave.
* ``4-stream``: kernels dealt round-robin over 4 streams, every 10th waiting on a kernel of
  another stream. Kernels of different block times share SMs, so the SMs drift out of
  phase and block starts fragment into many small groups: the hard case.

The exact (per-block) mode runs where it is affordable. ``bare SimPy ev/s`` is a plain SimPy
process yielding as many timeouts as the engine processed events, measured in the same run;
``ratio`` is the engine's events/s over it. CPU seconds are reported next to wall seconds
because the benchmark machine may be shared.

    python benchmarks/engine_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import time

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


def make_program(shape: str, kernels: int, blocks: int, seed: int = 0) -> Program:
    """A synthetic program of ``kernels`` launches with ``blocks`` blocks each."""
    rng = np.random.default_rng(seed)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three sizes only")
    args = parser.parse_args()
    header = (f"{'shape':>8} {'kernels':>7} {'blocks/k':>8} {'mode':>7} {'wall s':>7} "
              f"{'cpu s':>7} {'kernels/s':>9} {'blocks/s':>9} {'events':>8} {'groups/k':>8} "
              f"{'events/s':>9} {'bare SimPy ev/s':>15} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for shape, kernels, blocks, with_exact in QUICK_SIZES if args.quick else SIZES:
        program = make_program(shape, kernels, blocks)
        for mode in ("grouped", "exact") if with_exact else ("grouped",):
            cpu = time.process_time()
            result = simulate(program, mode=mode)
            cpu_s = time.process_time() - cpu
            c = result.counters
            bare = bare_simpy_events_per_s(max(c.events, 10_000))
            events_per_s = c.events / c.wall_s
            print(f"{shape:>8} {kernels:>7} {blocks:>8} {mode:>7} {c.wall_s:>7.3f} "
                  f"{cpu_s:>7.3f} {kernels / c.wall_s:>9.0f} {c.blocks / c.wall_s:>9.3g} "
                  f"{c.events:>8} {c.groups / kernels:>8.1f} {events_per_s:>9.0f} "
                  f"{bare:>15.0f} {events_per_s / bare:>6.3f}")


if __name__ == "__main__":
    main()
