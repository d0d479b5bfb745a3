"""Block-log summaries (sim.measure.micro.blocklog), on synthetic logs made here.

The logs below are invented to test the arithmetic; they are not measurements and are never
written under gpu_models/data.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_models.errors import GpusimError
from sim.measure.micro.blocklog import (
    BlockLog,
    co_residency,
    describe,
    max_concurrency,
    observed_tick_ns,
    representative,
    run_scalars,
    summarize_kernel,
    summarize_run,
    wave_starts,
)

T0 = 1_700_000_000_000_000_000  # a plausible %globaltimer value (ns since the epoch)
T = T0


def _raw(rows: list[tuple[int, int, int]]) -> BlockLog:
    """A log from (start_ns, end_ns, sm) rows."""
    return BlockLog.from_raw(np.array(rows, dtype=np.uint64).reshape(-1))


def staircase(blocks: int, sms: int, per_sm: int, block_ns: int, t0: int = T0) -> np.ndarray:
    """Raw log of an ideal wave staircase: block i in wave i // (sms * per_sm) on SM i % sms."""
    wave = sms * per_sm
    i = np.arange(blocks)
    start = t0 + (i // wave) * block_ns
    raw = np.stack([start, start + block_ns, i % sms], axis=1).astype(np.uint64)
    return raw.reshape(-1)


def test_from_raw_parses_and_rejects_unwritten_blocks() -> None:
    log = BlockLog.from_raw(staircase(10, 4, 2, 1000))
    assert log.blocks == 10
    assert list(log.sm[:5]) == [0, 1, 2, 3, 0]
    raw = staircase(10, 4, 2, 1000)
    raw[3 * 7] = 0  # block 7 never wrote its start
    with pytest.raises(GpusimError, match="1 block"):
        BlockLog.from_raw(raw, "k")
    with pytest.raises(GpusimError, match="3 values"):
        BlockLog.from_raw(np.zeros(4, np.uint64))
    bad = staircase(2, 1, 1, 1000)
    bad[1] = bad[0] - 1  # ends before it starts
    with pytest.raises(GpusimError, match="ends before"):
        BlockLog.from_raw(bad)


def test_max_concurrency_back_to_back_do_not_overlap() -> None:
    start = np.array([0, 10, 10, 5])
    end = np.array([10, 20, 20, 12])
    assert max_concurrency(start, end) == 3  # at t=10: [10,20) x2 and [5,12)
    assert max_concurrency(np.array([0, 10]), np.array([10, 20])) == 1


def test_wave_starts_cluster_by_gap() -> None:
    starts = np.array([0, 3, 1, 100, 102, 250])
    firsts, sizes = wave_starts(starts, gap_ns=50)
    assert firsts == [0, 100, 250]
    assert sizes == [3, 2, 1]


def test_summary_of_a_staircase() -> None:
    # 4.5 waves of 8 blocks (4 SMs x 2) of 1 us.
    log = BlockLog.from_raw(staircase(36, 4, 2, 1000))
    s = summarize_kernel(log, T0)
    assert s["blocks"] == 36
    assert s["first_start_s"] == 0.0
    assert s["last_end_s"] == pytest.approx(5e-6)
    assert s["block_time_s"]["median"] == pytest.approx(1e-6)
    assert s["wave_starts_s"] == pytest.approx([0, 1e-6, 2e-6, 3e-6, 4e-6])
    assert s["wave_sizes"] == [8, 8, 8, 8, 4]
    assert s["max_resident_per_sm"] == 2
    assert s["max_resident"] == 8
    assert sum(c for _, c in s["blocks_per_sm"]) == 36
    assert s["sms_used"] == 4


def test_run_aligns_kernels_on_first_block() -> None:
    a = BlockLog.from_raw(staircase(8, 4, 2, 1000, t0=T0 + 500))
    b = BlockLog.from_raw(staircase(4, 4, 2, 1000, t0=T0 + 2000))
    run = summarize_run({"a": a, "b": b})
    assert run["kernels"]["a"]["first_start_s"] == 0.0
    assert run["kernels"]["b"]["first_start_s"] == pytest.approx(1.5e-6)
    assert run["makespan_s"] == pytest.approx(2.5e-6)
    scalars = run_scalars(run)
    assert scalars["kernels"]["b"] == [pytest.approx(1.5e-6), pytest.approx(2.5e-6)]
    with pytest.raises(GpusimError):
        summarize_run({})


def test_representative_is_the_median_run() -> None:
    runs = [{"makespan_s": m} for m in (3.0, 1.0, 2.0, 5.0)]
    assert representative(runs) == 2  # lower median of 1, 2, 3, 5
    assert representative([{"makespan_s": 1.0}]) == 0
    with pytest.raises(GpusimError):
        representative([])


def test_describe_and_tick() -> None:
    d = describe([1.0, 3.0, 2.0])
    assert d == {"median": 2.0, "min": 1.0, "max": 3.0, "mean": 2.0, "n": 3}
    with pytest.raises(GpusimError):
        describe([])
    assert observed_tick_ns(np.array([0, 64, 32, 32, 128])) == 32
    assert observed_tick_ns(np.array([5, 5])) is None


def test_co_residency_hand_computed() -> None:
    # SM 0: a0 [0, 100) and b0 [50, 150) overlap for 50 ns; SM 1: a1 [0, 100) then a2
    # [100, 200), back to back, no other kernel; SM 2: b1 alone.
    a = _raw([(T, T + 100, 0), (T, T + 100, 1), (T + 100, T + 200, 1)])
    b = _raw([(T + 50, T + 150, 0), (T + 300, T + 400, 2)])
    share = co_residency({"a": a, "b": b})
    # a0 shared half its time (counts as shared), a1 and a2 none: mean fraction 0.5 / 3.
    assert share["a"]["shared_blocks"] == 1
    assert share["a"]["shared_fraction"] == pytest.approx(0.5 / 3, abs=1e-6)
    assert share["a"]["mean_other_blocks"] == pytest.approx(50 / 300, abs=1e-6)
    assert share["a"]["mean_own_blocks"] == 0.0  # back-to-back blocks do not overlap
    assert share["b"]["shared_fraction"] == pytest.approx(0.25)
    assert share["a"]["block_time_shared_s"]["median"] == pytest.approx(100e-9)
    assert share["b"]["block_time_unshared_s"]["max"] == pytest.approx(100e-9)


def test_co_residency_counts_the_union_of_other_blocks() -> None:
    # Two b blocks cover a's [0, 100) as [0, 60) and [40, 100): a shares all of it once,
    # although the two overlaps add up to 120 ns (mean other blocks: 1.2).
    a = _raw([(T, T + 100, 0)])
    b = _raw([(T, T + 60, 0), (T + 40, T + 100, 0)])
    share = co_residency({"a": a, "b": b})
    assert share["a"]["shared_fraction"] == pytest.approx(1.0)
    assert share["a"]["mean_other_blocks"] == pytest.approx(1.2)
    assert share["b"]["mean_own_blocks"] == pytest.approx(40 / 120)  # 20 ns each way
    assert share["a"]["block_time_unshared_s"] is None
