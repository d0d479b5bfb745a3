"""Replays (sim/engine/engine.py): a group of the head kernel that ends alone, with more of
its kernel's blocks left, is replaced by as many new blocks on the same SMs without a full
dispatch pass. The shortcut must change nothing but the engine's own work: every result is
the one the engine gives with replays switched off."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef
from sim.engine.engine import Engine
from sim.engine.result import SimResult

H100 = load_gpu("h100")


def _run(program: Program, *, replays: bool, **options: object) -> SimResult:
    engine = Engine(program, **options)  # type: ignore[arg-type]
    engine._replays = engine._replays and replays
    return engine.run()


def _same(a: SimResult, b: SimResult) -> None:
    assert a.makespan_s == b.makespan_s
    assert a.kernels == b.kernels
    assert a.busy_sms == b.busy_sms and a.dram_Bps == b.dram_Bps
    assert dict(a.sm_throughput) == dict(b.sm_throughput)
    assert np.array_equal(a.sm_occupancy.warps, b.sm_occupancy.warps)
    ca, cb = a.counters.to_dict(), b.counters.to_dict()
    for bookkeeping in ("events", "wall_s"):
        ca.pop(bookkeeping), cb.pop(bookkeeping)
    assert ca == cb
    assert a.blocks == b.blocks


def test_waves_of_one_kernel_replay_without_a_pass() -> None:
    # 1024-thread blocks: 2 per SM, 264 per wave; 4 waves of 10 us. Waves 2 and 3 replace a
    # wave that ended with more than a wave left (replays); wave 4 takes the last 264
    # blocks, after which the kernel has none left: a full pass.
    kernel = Launch(name="k", stream="s", grid=4 * 264, threads=1024, regs_per_thread=0,
                    smem_per_block_B=0, block_time_s=10e-6)
    program = Program(H100, (StreamDef("s"),), (kernel,), launch_overhead_s=0.0,
                      event_overhead_s=0.0)
    fast, plain = _run(program, replays=True), _run(program, replays=False)
    assert fast.makespan_s == pytest.approx(40e-6, rel=1e-12)
    _same(fast, plain)
    assert plain.counters.events - fast.counters.events == 2  # two pass events saved


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("streams", [1, 3])
def test_random_programs_give_the_same_results_with_and_without_replays(
        seed: int, streams: int, random_program: Callable[..., Program]) -> None:
    program = random_program(seed, streams)
    fast = _run(program, replays=True, record_blocks=True)
    plain = _run(program, replays=False, record_blocks=True)
    _same(fast, plain)
    assert fast.counters.events < plain.counters.events  # replays happened


def test_sharing_off_and_other_placements_agree_too(
        random_program: Callable[..., Program]) -> None:
    program = random_program(7, 2)
    for options in ({"sm_sharing": False}, {"placement": "first-fit"}):
        _same(_run(program, replays=True, **options), _run(program, replays=False, **options))
