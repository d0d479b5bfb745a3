"""DRAM bandwidth sharing (docs/model.md §6.7): max-min fair (water-filling) per block, with the
kernel as the unit that shares one demand and one rate.

The rule alone, without the memory-parallelism bound (``sm_sharing=False``; the bound and
the rule together: tests/engine/test_engine_memory_parallelism.py). Hand-computed on the
H100 preset (bandwidth ``BW``); kernels of 256 threads and 32 registers hold 8 blocks per
SM, so 1056 blocks fill the GPU and every block below starts at t=0.
"""

from __future__ import annotations

import pytest

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, simulate
from sim.engine.resources import Dram, MemoryFlow

US = 1e-6
H100 = load_gpu("h100")
BW = H100.dram_bw_Bps
MODES = ("grouped", "exact")


def kernel(name: str, stream: str, blocks: int, block_us: float, demand_bw: float) -> Launch:
    """``blocks`` blocks of ``block_us``; all of them together ask for ``demand_bw`` x BW."""
    return Launch(name=name, stream=stream, grid=blocks, threads=256, regs_per_thread=32,
                  smem_per_block_B=0, block_time_s=block_us * US,
                  dram_bytes=demand_bw * BW * block_us * US)


def run(kernels: list[Launch], mode: str = "grouped"):
    streams = tuple(StreamDef(n) for n in dict.fromkeys(k.stream for k in kernels))
    return simulate(Program(H100, streams, tuple(kernels), launch_overhead_s=0.0,
                            event_overhead_s=0.0), mode=mode, sm_sharing=False)


def us(seconds: float) -> float:
    return round(seconds / US, 6)


@pytest.mark.parametrize("mode", MODES)
def test_a_kernel_with_small_demand_is_not_slowed(mode: str) -> None:
    # The reviewer's case: mem (528 blocks) asks for 2 BW, alu (528 blocks) for 0.01 BW.
    # Fair share per block BW / 1056; alu's blocks ask for 0.01 BW / 528, less: alu gets all
    # it asks and runs at rate 1, ending at 100 us exactly. mem gets BW - 0.01 BW = 0.99 BW:
    # rate 0.99 / 2 = 0.495, 49.5 us of progress by t=100; then alone at 1 / 2: the other
    # 50.5 us take 101 us, so mem ends at 201 us (= 2.01 BW x 100 us / BW: no bandwidth idle).
    r = run([kernel("mem", "a", 528, 100, 2.0), kernel("alu", "b", 528, 100, 0.01)], mode)
    assert r.kernel("alu").end_s == 100 * US
    assert us(r.kernel("mem").end_s) == pytest.approx(201)
    # Demand above the bandwidth the whole time; the bandwidth is fully used.
    assert us(r.counters.dram_saturated_s) == pytest.approx(201)
    assert r.dram_Bps.at(50 * US) == pytest.approx(BW)
    assert r.dram_Bps.at(150 * US) == pytest.approx(BW)


@pytest.mark.parametrize("mode", MODES)
def test_three_kernels_water_filling(mode: str) -> None:
    # 352 blocks each (3 x 352 = 1056, one full wave), 30 us blocks; all together they ask for
    # a = 0.2, b = 0.6, c = 1.2 BW (2.0 BW). Per block, in units of BW / 352: a 0.2, b 0.6,
    # c 1.2; the fair share is 1 / 3. a asks for less: rate 1, leaving 0.8 over 704 blocks,
    # i.e. 0.4 each < 0.6 and 1.2: b at 0.4 / 0.6 = 2/3, c at 0.4 / 1.2 = 1/3.
    #   t=30: a ends (30 us of progress). b has 20 us, c 10 us.
    #   Then 1.0 over 704 blocks = 0.5 each: b at 5/6, c at 5/12. b's last 10 us take 12 us:
    #   t=42: b ends. c has 10 + 12 x 5/12 = 15 us.
    #   Alone c asks 1.2 BW: rate 1 / 1.2 = 5/6, its last 15 us take 18 us: t=60, which is
    #   the total traffic (2.0 BW x 30 us) over BW: the bandwidth was never idle.
    r = run([kernel("a", "x", 352, 30, 0.2), kernel("b", "y", 352, 30, 0.6),
             kernel("c", "z", 352, 30, 1.2)], mode)
    assert [us(k.end_s) for k in r.kernels] == [30, pytest.approx(42), pytest.approx(60)]
    assert us(r.counters.dram_saturated_s) == pytest.approx(60)
    for t_us in (10, 35, 50):
        assert r.dram_Bps.at(t_us * US) == pytest.approx(BW)


@pytest.mark.parametrize("mode", MODES)
def test_demand_within_the_bandwidth_runs_at_full_speed(mode: str) -> None:
    # 0.5 + 0.45 BW fit: no slowdown, no saturated time; the used bandwidth is the demand.
    r = run([kernel("m0", "a", 528, 10, 0.5), kernel("m1", "b", 528, 10, 0.45)], mode)
    assert [k.end_s for k in r.kernels] == [10 * US, 10 * US]
    assert r.counters.dram_saturated_s == 0
    assert r.dram_Bps.at(5 * US) == pytest.approx(0.95 * BW)


def test_kernels_with_equal_per_block_demand_share_by_blocks() -> None:
    # Equal per-block demand (BW / 264 each): 264 blocks of p and 792 of q ask for 1 BW and
    # 3 BW. Each block gets BW / 1056, rate 1/4 for both: both kernels end at 4 x 10 = 40 us,
    # so the kernel with 3x the blocks got 3x the bandwidth.
    r = run([kernel("p", "a", 264, 10, 1.0), kernel("q", "b", 792, 10, 3.0)])
    assert [us(k.end_s) for k in r.kernels] == [pytest.approx(40), pytest.approx(40)]


def test_dram_water_filling_rates() -> None:
    # Bandwidth 100. k0: 10 blocks x 1, k1: 10 x 4, k2: 5 x 20 -> demand 150.
    # Fair share 100 / 25 = 4: k0 (1) and then k1 (4 <= (100 - 10) / 15 = 6) get all they ask;
    # k2 gets (100 - 10 - 40) / 5 = 10 per block: rate 10 / 20 = 0.5.
    dram = Dram(100.0, None)

    def flow(blocks: int, demand: float) -> MemoryFlow:
        return MemoryFlow(blocks, demand, blocks * demand, 0.0)

    k0, k1, k2 = flow(10, 1.0), flow(10, 4.0), flow(5, 20.0)
    share = dram.share([k0, k1, k2])
    assert share.factors == (1.0, 1.0, 0.5)
    assert (share.used_Bps, share.saturated, share.parallelism_bound) == (100.0, True, False)
    # Without k0: k1 (4 x 10 = 40) + k2 (100): fair 100 / 15 > 4, so k1 keeps rate 1; k2 gets
    # 60 / 5 = 12 per block: rate 0.6.
    share = dram.share([k1, k2])
    assert share.factors == (1.0, pytest.approx(0.6))
    # k2 alone asks for 100: exactly the bandwidth, rate 1, not saturated.
    share = dram.share([k2])
    assert share.factors == (1.0,) and share.used_Bps == 100.0 and not share.saturated
    assert dram.share([]).used_Bps == 0.0
