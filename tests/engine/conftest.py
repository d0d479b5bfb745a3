"""Fixtures of the engine tests: random programs of mixed kernels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef


@pytest.fixture
def random_program() -> Callable[..., Program]:
    """A factory of 24-kernel H100 programs: mixed block shapes (even and uneven register
    takes), 2-8 us blocks, DRAM traffic up to twice the bandwidth, SM shares, a cross-stream
    wait on about one kernel in five; optionally stream priorities (0, 1, 0, ...) and SM
    partitions (stream ``j`` on SMs ``40 j .. 40 j + 59``: overlapping)."""
    h100 = load_gpu("h100")

    def make(seed: int, streams: int, *, priorities: bool = False,
             partitioned: bool = False) -> Program:
        rng = np.random.default_rng(seed)
        shapes = ((256, 32, 0), (128, 64, 16 * 1024), (512, 40, 0), (64, 32, 8 * 1024))
        launches = []
        for i in range(24):
            threads, regs, smem = shapes[int(rng.integers(len(shapes)))]
            block_s = float(rng.uniform(2e-6, 8e-6))
            blocks = int(rng.integers(100, 1500))
            after = (f"k{int(rng.integers(i))}",) if i and rng.random() < 0.2 else ()
            launches.append(Launch(
                name=f"k{i}", stream=f"s{i % streams}", grid=blocks, threads=threads,
                regs_per_thread=regs, smem_per_block_B=smem, block_time_s=block_s,
                dram_bytes=float(rng.uniform(0, 2)) * h100.dram_bw_Bps * block_s * blocks / 1000,
                sm_throughput={"simt": float(rng.uniform(0.02, 0.2))}, after=after))
        defs = tuple(StreamDef(f"s{j}", priority=j % 2 if priorities else 0,
                               sms=tuple(range(40 * j, 40 * j + 60)) if partitioned else None)
                     for j in range(streams))
        return Program(h100, defs, tuple(launches), launch_overhead_s=1e-6,
                       event_overhead_s=0.5e-6)

    return make
