"""Makespan-only runs (:func:`sim.engine.engine.simulate_makespan`): searching policies time
many candidates and keep one number of each, so the engine can skip the series, the "what
binds" clocks and the result. Skipping them must not move a single block: the monitor only
writes, the engine never reads it."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef
from sim.engine.engine import Engine, simulate, simulate_makespan

H100 = load_gpu("h100")


def _program(seed: int, streams: int, partitioned: bool) -> Program:
    rng = np.random.default_rng(seed)
    shapes = ((256, 32, 0), (128, 64, 16 * 1024), (512, 40, 0), (64, 32, 8 * 1024))
    launches = []
    for i in range(20):
        threads, regs, smem = shapes[int(rng.integers(len(shapes)))]
        block_s = float(rng.uniform(2e-6, 8e-6))
        blocks = int(rng.integers(50, 1500))
        after = (f"k{int(rng.integers(i))}",) if i and rng.random() < 0.2 else ()
        launches.append(Launch(
            name=f"k{i}", stream=f"s{i % streams}", grid=blocks, threads=threads,
            regs_per_thread=regs, smem_per_block_B=smem, block_time_s=block_s,
            dram_bytes=float(rng.uniform(0, 2)) * H100.dram_bw_Bps * block_s * blocks / 1000,
            sm_throughput={"simt": float(rng.uniform(0.02, 0.3))}, after=after))
    defs = tuple(StreamDef(f"s{j}", priority=j % 2,
                           sms=tuple(range(j * 40, j * 40 + 60)) if partitioned else None)
                 for j in range(streams))
    return Program(H100, defs, tuple(launches), launch_overhead_s=1e-6, event_overhead_s=0.5e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("streams", "partitioned"), [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("sm_sharing", [True, False])
def test_makespan_only_runs_the_same_blocks(seed: int, streams: int, partitioned: bool,
                                            sm_sharing: bool) -> None:
    program = _program(seed, streams, partitioned)
    full = simulate(program, sm_sharing=sm_sharing)
    assert simulate_makespan(program, sm_sharing=sm_sharing) == full.makespan_s  # exactly
    # Every kernel's timeline and spread over the SMs, not just the end.
    bare = Engine(program, sm_sharing=sm_sharing, series=False).run()
    assert bare.kernels == full.kernels
    assert bare.counters.dispatch_passes == full.counters.dispatch_passes
    # ... while the series and clocks were not kept.
    assert len(bare.busy_sms.times_s) == 1 < len(full.busy_sms.times_s)
    assert not bare.counters.blocked_s and full.counters.blocked_s


def test_the_exact_mode_keeps_its_series() -> None:
    # The per-block reference checks the SMs' peak load from its series: never switched off.
    program = _program(0, 2, False)
    engine = Engine(program, mode="exact", series=False)
    assert engine.series and engine.monitor.series
