"""SM throughput sharing (docs/model.md §6.7): co-resident blocks share their SM's execution
resources, max-min fairly per resource.

Hand-computed on the H100 preset with zero host overheads. Kernels of 132 blocks of 1024
threads (32 registers): two such blocks fit an SM (64 warps), so two kernels of one block
per SM co-reside, one block of each on every SM; 50 us blocks.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, simulate
from sim.engine.program import load_program
from sim.engine.trace import to_chrome_trace

US = 1e-6
H100 = load_gpu("h100")
MODES = ("grouped", "exact")


def kernel(name: str, stream: str, blocks: int = 132, **kw: Any) -> Launch:
    fields: dict[str, Any] = {"threads": 1024, "regs_per_thread": 32, "smem_per_block_B": 0,
                              "block_time_s": 50 * US}
    fields.update(kw)
    return Launch(name=name, stream=stream, grid=blocks, **fields)


def run(kernels: list[Launch], mode: str = "grouped", **kw: Any):
    streams = tuple(StreamDef(n) for n in dict.fromkeys(k.stream for k in kernels))
    program = Program(H100, streams, tuple(kernels), launch_overhead_s=0.0,
                      event_overhead_s=0.0)
    return simulate(program, mode=mode, **kw)


def us(seconds: float) -> float:
    return round(seconds / US, 6)


@pytest.mark.parametrize("mode", MODES)
def test_two_kernels_using_the_whole_sm_gain_nothing_from_two_streams(mode: str) -> None:
    # Each block alone uses its SM's whole FP32 throughput. Side by side, the two blocks on
    # every SM ask 2.0: each gets half, so both kernels end at 100 us, as on one stream.
    full = {"sm_throughput": {"simt": 1.0}}
    two = run([kernel("a", "s0", **full), kernel("b", "s1", **full)], mode)
    assert [(us(k.start_s), us(k.end_s)) for k in two.kernels] == [(0, 100), (0, 100)]
    one = run([kernel("a", "s0", **full), kernel("b", "s0", **full)], mode)
    assert us(one.makespan_s) == us(two.makespan_s) == 100
    assert us(two.counters.sm_oversubscribed_s["simt"]) == 100
    assert one.counters.sm_oversubscribed_s["simt"] == 0
    # The SMs' FP32 throughput is fully used the whole time, never beyond.
    assert two.sm_throughput["simt"].at(50 * US) == pytest.approx(1.0)
    # Without SM sharing (the engine before it) the two overlap for free.
    assert us(run([kernel("a", "s0", **full), kernel("b", "s1", **full)], mode,
                  sm_sharing=False).makespan_s) == 50


@pytest.mark.parametrize("mode", MODES)
def test_kernels_using_a_quarter_each_overlap_fully(mode: str) -> None:
    quarter = {"sm_throughput": {"simt": 0.25}}
    r = run([kernel("a", "s0", **quarter), kernel("b", "s1", **quarter)], mode)
    assert [(us(k.start_s), us(k.end_s)) for k in r.kernels] == [(0, 50), (0, 50)]
    assert r.counters.sm_oversubscribed_s["simt"] == 0
    assert r.sm_throughput["simt"].at(10 * US) == pytest.approx(0.5)


@pytest.mark.parametrize("mode", MODES)
def test_sleep_kernels_overlap_when_they_fit_and_not_when_they_cannot(mode: str) -> None:
    # No sm_throughput: pure latency, like a sleep kernel. 132 blocks each co-reside.
    r = run([kernel("a", "s0"), kernel("b", "s1")], mode)
    assert us(r.makespan_s) == 50
    # 264 blocks fill both slots of every SM: the second kernel waits for the first.
    r = run([kernel("a", "s0", 264), kernel("b", "s1", 264)], mode)
    assert [(us(k.start_s), us(k.end_s)) for k in r.kernels] == [(0, 50), (50, 100)]


@pytest.mark.parametrize("mode", MODES)
def test_partial_oversubscription_is_shared_max_min_fairly(mode: str) -> None:
    # Per SM, a asks 0.75 and b 0.5: 1.25 > 1. Max-min fair: the fair share is 1 / 2 blocks
    # = 0.5; b asks no more than that and keeps full speed (ends at 50 us); a gets the other
    # 0.5, rate 0.5 / 0.75 = 2/3, so by 50 us it has done 33.33 us of its 50; alone then, at
    # rate 1, it ends at 50 + 16.67 = 66.67 us.
    r = run([kernel("a", "s0", sm_throughput={"simt": 0.75}),
             kernel("b", "s1", sm_throughput={"simt": 0.5})], mode)
    assert us(r.kernel("b").end_s) == 50
    assert us(r.kernel("a").end_s) == pytest.approx(50 + 50 / 3)
    assert us(r.counters.sm_oversubscribed_s["simt"]) == 50
    series = r.sm_throughput["simt"]
    assert series.at(25 * US) == pytest.approx(1.0)  # 0.75 x 2/3 + 0.5
    assert series.at(60 * US) == pytest.approx(0.75)
    assert series.at(70 * US) == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_resources_are_shared_separately(mode: str) -> None:
    # A block on the FP32 pipes beside one on the tensor cores: neither slows the other.
    r = run([kernel("fp32", "s0", sm_throughput={"simt": 1.0}),
             kernel("mma", "s1", sm_throughput={"tensor": 1.0})], mode)
    assert us(r.makespan_s) == 50
    # A block using both beside a full FP32 block: only simt is contended (1.0 + 0.5 > 1,
    # fair share 0.5). The mixed block asks no more than the fair share and keeps rate 1;
    # the FP32 block gets 0.5 (rate 1/2): 25 us of work by 50 us, then alone at rate 1.
    r = run([kernel("fp32", "s0", sm_throughput={"simt": 1.0}),
             kernel("mixed", "s1", sm_throughput={"simt": 0.5, "tensor": 0.5})], mode)
    assert us(r.kernel("mixed").end_s) == 50
    assert us(r.kernel("fp32").end_s) == 75  # 25 us of work by 50 us, then rate 1


@pytest.mark.parametrize("mode", MODES)
def test_a_kernel_alone_at_its_natural_occupancy_keeps_its_time(mode: str) -> None:
    # 264 blocks at 0.5 each fill every SM to exactly 1.0: not over-subscribed.
    r = run([kernel("k", "s0", 264 * 3, sm_throughput={"simt": 0.5})], mode)
    assert us(r.makespan_s) == 150
    assert r.counters.sm_oversubscribed_s["simt"] == 0


def test_v100_two_full_rate_kernels_do_not_beat_the_peak(tmp_path: Any) -> None:
    # The issue's case, priced by the roofline from the kernels' work: 80 blocks (one per
    # SM), each computing at the SM's full FP32 rate for ~797 us. Two streams used to finish
    # in 797 us, 25 TFLOP/s from a 15.7 TFLOP/s GPU; now no faster than the peak allows.
    v100 = load_gpu("v100")
    flop = v100.peak_fp32_flop_per_s * 797e-6
    text = ('{"gpu": "v100", "launch_overhead_us": 0, "streams": [{"name": "a"}, '
            '{"name": "b"}], "kernels": ['
            + ", ".join(f'{{"name": "k{i}", "stream": "{s}", "grid": 80, "threads": 1024, '
                        f'"regs": 32, "work": {{"flop": {flop}, "math": "fp32"}}}}'
                        for i, s in enumerate("ab")) + "]}")
    path = tmp_path / "v100.json"
    path.write_text(text)
    program = load_program(path, cost_model="roofline")  # its arithmetic below
    r = simulate(program)
    assert 2 * flop / r.makespan_s <= v100.peak_fp32_flop_per_s * (1 + 1e-9)
    # Blocks of 797 us of math + the 1 us latency floor ask 797/798 of their SM each; side by
    # side each gets half: rate (1/2) / (797/798), so 798 us of block time takes 1594 us.
    assert r.makespan_s == pytest.approx(2 * 797e-6, rel=1e-9)
    off = simulate(program, sm_sharing=False)
    assert off.makespan_s == pytest.approx(798e-6, rel=1e-9)


def test_trace_has_an_sm_throughput_counter_track() -> None:
    r = run([kernel("a", "s0", sm_throughput={"simt": 0.75}),
             kernel("b", "s1", sm_throughput={"simt": 0.5})])
    events = [e for e in to_chrome_trace(r)["traceEvents"] if e["name"] == "SM throughput"]
    assert [(e["ts"], e["args"]["simt %"]) for e in events] == [
        (0.0, pytest.approx(100.0)), (pytest.approx(50.0), pytest.approx(75.0)),
        (pytest.approx(50 + 50 / 3), 0.0)]


def test_a_take_given_back_in_parts_keeps_the_register_bookkeeping_exact() -> None:
    # A group split by SM rate gives its blocks' resources back SM by SM. Three-warp blocks
    # take registers unevenly from the four pools; while any such row is resident the SM
    # array must not use its equal-pools shortcut, however the take is given back.
    import numpy as np

    from gpu_models.occupancy import block_footprint
    from sim.engine.resources import SMArray

    sms = SMArray(H100.replace(sm_count=3))
    fp = block_footprint(sms.spec, 96, 128, 0)
    ids = np.array([0, 1, 2])
    taken = sms.allocate(fp, ids, np.array([1, 1, 1]))
    sms.release(ids[:1], taken[:1])  # one SM's part first
    pools = sms.free_regs
    assert not (pools[1:] == pools[1:, :1]).all()  # SMs 1 and 2 still hold uneven takes
    assert sms._uneven_takes == 2  # counted by row: the shortcut stays off
    plain = (sms.free[:, 3:] // fp.regs_per_warp).sum(axis=1) // fp.warps
    assert np.array_equal(sms.limits(fp)[1], plain)
    sms.release(ids[1:], taken[1:])
    assert sms._uneven_takes == 0
