"""Hand-computed timelines: every mechanism of docs/model.md §6 on the H100 preset.

Defaults: zero launch overhead, 256 threads, 32 registers, no shared memory, 10 us blocks;
an H100 SM holds 8 such blocks, so one wave is 132 x 8 = 1056 blocks.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpu_models.presets import load_gpu
from gpu_models.spec import GPUSpec
from sim import DeadlockError, Launch, Program, RoundRobin, StreamDef, simulate

US = 1e-6
H100 = load_gpu("h100")
#: Blocks of the default kernel one H100 wave holds: 132 SMs x 8 blocks.
WAVE = 132 * 8


def kernel(name: str, stream: str, grid: int | tuple[int, ...], **kw: Any) -> Launch:
    """A launch with the test defaults (256 threads, 32 regs, no smem, 10 us blocks)."""
    fields: dict[str, Any] = {"threads": 256, "regs_per_thread": 32, "smem_per_block_B": 0,
                              "block_time_s": 10 * US}
    fields.update(kw)
    return Launch(name=name, stream=stream, grid=grid, **fields)


def program(kernels: list[Launch], streams: list[StreamDef] | None = None,
            gpu: GPUSpec = H100, **kw: Any) -> Program:
    """A program with zero launch and event overhead; streams default to those the kernels name."""
    if streams is None:
        names = list(dict.fromkeys(k.stream for k in kernels))
        streams = [StreamDef(n) for n in names]
    kw.setdefault("launch_overhead_s", 0.0)
    kw.setdefault("event_overhead_s", 0.0)
    return Program(gpu=gpu, streams=tuple(streams), kernels=tuple(kernels), **kw)


def us(seconds: float) -> float:
    """Seconds to microseconds, rounded to absorb float noise in hand-computed checks."""
    return round(seconds / US, 6)


MODES = ("grouped", "exact")


@pytest.mark.parametrize("mode", MODES)
def test_three_waves_and_one_block_take_four_block_times(mode: str) -> None:
    result = simulate(program([kernel("k", "a", 3 * WAVE + 1)]), mode=mode)
    k = result.kernel("k")
    assert (us(k.start_s), us(k.end_s), us(result.makespan_s)) == (0, 40, 40)
    assert sum(k.sm_blocks) == 3 * WAVE + 1
    # The head kernel had blocks left for three block times, bound by warps (8 x 8 = 64).
    assert us(result.counters.blocked_s["warps"]) == 30


@pytest.mark.parametrize("mode", MODES)
def test_two_half_waves_overlap_on_two_streams_but_not_on_one(mode: str) -> None:
    two = simulate(program([kernel("x", "a", WAVE // 2), kernel("y", "b", WAVE // 2)]),
                   mode=mode)
    assert [(us(k.start_s), us(k.end_s)) for k in two.kernels] == [(0, 10), (0, 10)]
    one = simulate(program([kernel("x", "a", WAVE // 2), kernel("y", "a", WAVE // 2)]),
                   mode=mode)
    assert [(us(k.start_s), us(k.end_s)) for k in one.kernels] == [(0, 10), (10, 20)]
    assert (us(two.makespan_s), us(one.makespan_s)) == (10, 20)


def _leftover(priority_b: int) -> list:
    # "small" holds 1 block per SM (150 KB shared memory) and needs 8 free warps.
    return [kernel("big", "a", 2 * WAVE), kernel("small", "b", 132, smem_per_block_B=150_000)], [
        StreamDef("a"), StreamDef("b", priority_b)]


@pytest.mark.parametrize("mode", MODES)
def test_leftover_policy_younger_kernel_waits_for_all_blocks_and_a_free_slot(mode: str) -> None:
    # t=0: big fills every SM; its second wave is dispatched at t=10 and fills them again,
    # so small gets its first slot when big's second wave ends at t=20.
    kernels, streams = _leftover(0)
    r = simulate(program(kernels, streams), mode=mode)
    assert (us(r.kernel("big").start_s), us(r.kernel("big").end_s)) == (0, 20)
    assert (us(r.kernel("small").start_s), us(r.kernel("small").end_s)) == (20, 30)


@pytest.mark.parametrize("mode", MODES)
def test_leftover_policy_even_when_younger_blocks_would_fit(mode: str) -> None:
    # big: 50 KB smem -> 4 blocks/SM (32 of 64 warps), 2 waves of 528. small's blocks would
    # fit beside them from t=0, but small gets blocks only once big has dispatched all of
    # its blocks, at t=10.
    big = kernel("big", "a", 1056, smem_per_block_B=50_000)
    r = simulate(program([big, kernel("small", "b", 132)]), mode=mode)
    assert (us(r.kernel("big").start_s), us(r.kernel("big").end_s)) == (0, 20)
    assert (us(r.kernel("small").start_s), us(r.kernel("small").end_s)) == (10, 20)


@pytest.mark.parametrize("mode", MODES)
def test_priority_stream_goes_before_the_older_kernels_remaining_blocks(mode: str) -> None:
    # small's stream has the higher priority (-1 < 0): at t=0 it takes one slot per SM
    # first; big gets 7 per SM (924), then 1056 at t=10 and the last 132 at t=20.
    kernels, streams = _leftover(-1)
    r = simulate(program(kernels, streams), mode=mode)
    assert (us(r.kernel("small").start_s), us(r.kernel("small").end_s)) == (0, 10)
    assert (us(r.kernel("big").start_s), us(r.kernel("big").end_s)) == (0, 30)


def test_priority_kernel_ready_later_jumps_ahead_of_remaining_blocks() -> None:
    # gate (1 block, 5 us) holds small back until t=5. t=0: gate on SM0, big 7 + 131x8 =
    # 1055 blocks. t=5: small takes gate's slot on SM0. t=10: big's wave ends and small's
    # other 131 blocks go first (SMs 1..131), big gets 7 per SM; small ends at t=20.
    # big: 1055 + 924 + 1 (t=15, SM0) + 132 (t=20) = 2112, ends at t=30.
    kernels = [kernel("big", "a", 2 * WAVE), kernel("gate", "b", 1, block_time_s=5 * US),
               kernel("small", "b", 132, smem_per_block_B=150_000)]
    r = simulate(program(kernels, [StreamDef("a"), StreamDef("b", -1)]), mode="exact")
    assert (us(r.kernel("small").ready_s), us(r.kernel("small").start_s),
            us(r.kernel("small").end_s)) == (5, 5, 20)
    assert us(r.kernel("big").end_s) == 30
    assert r.blocks is not None
    at_10 = [(b.kernel, b.sm) for b in r.blocks if us(b.start_s) == 10]
    assert [sm for name, sm in at_10 if name == "small"] == list(range(1, 132))
    assert sum(1 for name, _ in at_10 if name == "big") == 7 * 132
    starts_big = sorted(us(b.start_s) for b in r.blocks if b.kernel == "big")
    assert starts_big.count(0) == 1055 and starts_big.count(15) == 1
    assert starts_big.count(20) == 132
    grouped = simulate(program(kernels, [StreamDef("a"), StreamDef("b", -1)]))
    assert [(k.start_s, k.end_s) for k in grouped.kernels] == [
        (k.start_s, k.end_s) for k in r.kernels]


def _false_dependency(connections: int):
    gpu = H100.replace(connections=connections)
    kernels = [kernel(f"s{i}_k{j}", f"s{i}", 14) for i in range(9) for j in range(4)]
    return simulate(program(kernels, gpu=gpu))


def test_false_dependency_nine_streams_on_eight_connections() -> None:
    # Stream s8 shares queue 0 with s0 and is launched after all of s0's kernels: its
    # first kernel reaches the head only when s0_k3 is handed over at t=30.
    eight, many = _false_dependency(8), _false_dependency(32)
    assert us(many.makespan_s) == 40
    assert us(eight.makespan_s) == 70
    assert us(eight.kernel("s8_k0").start_s) == 30
    assert us(eight.counters.false_dependency_s) == 30
    assert many.counters.false_dependency_s == 0


# DRAM sharing by the max-min rule alone (sm_sharing=False: no memory-parallelism bound,
# whose own tests are in test_engine_memory_parallelism.py).
@pytest.mark.parametrize("mode", MODES)
def test_two_dram_saturating_kernels_take_the_sum_not_the_max(mode: str) -> None:
    # Each kernel alone asks for twice the bandwidth: its 10 us blocks take 20 us. Together
    # they ask for 4x: both end at 40 us = total bytes / bandwidth.
    bytes_each = 2 * H100.dram_bw_Bps * 10 * US
    alone = simulate(program([kernel("m0", "a", WAVE // 2, dram_bytes=bytes_each)]), mode=mode,
                     sm_sharing=False)
    assert us(alone.makespan_s) == pytest.approx(20)
    both = simulate(program([kernel("m0", "a", WAVE // 2, dram_bytes=bytes_each),
                             kernel("m1", "b", WAVE // 2, dram_bytes=bytes_each)]), mode=mode,
                    sm_sharing=False)
    assert us(both.makespan_s) == pytest.approx(40)
    assert us(both.makespan_s) == pytest.approx(2 * bytes_each / H100.dram_bw_Bps / US)
    assert us(both.counters.dram_saturated_s) == pytest.approx(40)
    assert both.dram_Bps.at(20 * US) == pytest.approx(H100.dram_bw_Bps)


def test_compute_blocks_are_not_slowed_by_dram_contention() -> None:
    bytes_each = 2 * H100.dram_bw_Bps * 10 * US
    r = simulate(program([kernel("mem", "a", WAVE // 2, dram_bytes=bytes_each),
                          kernel("alu", "b", WAVE // 2)]), sm_sharing=False)
    assert (us(r.kernel("alu").end_s), us(r.kernel("mem").end_s)) == (10, pytest.approx(20))


def test_dram_rate_changes_when_a_memory_kernel_ends() -> None:
    # m0 (1 block-time of traffic at 2x bandwidth) and m1 (4 us blocks at 1x bandwidth) start
    # together, 528 blocks each: demand 3x. Max-min fair: the fair share per block is
    # bw / 1056, below both kernels' per-block demand (2 bw / 528, bw / 528), so every block
    # gets it: m0 at rate 1/4, m1 at rate 1/2. m1 needs 4 us of progress: ends at 8 us. m0
    # has then made 2 us of its 10 and runs alone at rate 1/2: 8 + 8 / 0.5 = 24 us.
    bw = H100.dram_bw_Bps
    r = simulate(program([
        kernel("m0", "a", WAVE // 2, dram_bytes=2 * bw * 10 * US),
        kernel("m1", "b", WAVE // 2, dram_bytes=bw * 4 * US, block_time_s=4 * US)]),
        sm_sharing=False)
    assert us(r.kernel("m1").end_s) == pytest.approx(8)
    assert us(r.kernel("m0").end_s) == pytest.approx(24)


def test_exact_block_log_on_two_sms() -> None:
    # Most-free: ties to the lowest SM id, so blocks alternate SM0, SM1 (8 each at t=0);
    # the last 4 alternate again at t=10.
    gpu = H100.replace(sm_count=2)
    r = simulate(program([kernel("k", "a", 20)], gpu=gpu), mode="exact")
    log = [(b.sm, us(b.start_s), us(b.end_s)) for b in r.blocks or ()]
    assert log == [(0, 0, 10)] * 8 + [(1, 0, 10)] * 8 + [(0, 10, 20)] * 2 + [(1, 10, 20)] * 2
    assert r.kernel("k").sm_blocks == (10, 10)
    assert r.sm_occupancy.warps.tolist() == [[64, 64], [16, 16], [0, 0]]
    assert [us(t) for t in r.sm_occupancy.times_s] == [0, 10, 20]
    assert r.busy_sms.times_s == (0.0, pytest.approx(20 * US))
    assert r.busy_sms.values == (2.0, 0.0)


def test_exact_block_log_leftover_on_two_sms_with_other_policies() -> None:
    # a: 10 blocks of 512 threads (4 per SM); b: 3 blocks. First fit packs SM0 first.
    gpu = H100.replace(sm_count=2)
    kernels = [kernel("a", "x", 10, threads=512), kernel("b", "y", 3, block_time_s=5 * US)]
    ff = simulate(program(kernels, gpu=gpu), mode="exact", placement="first-fit")
    log = [(b.kernel, b.sm, us(b.start_s), us(b.end_s)) for b in ff.blocks or ()]
    assert log == ([("a", 0, 0, 10)] * 4 + [("a", 1, 0, 10)] * 4
                   + [("a", 0, 10, 20)] * 2 + [("b", 0, 10, 15)] * 3)
    rr = simulate(program(kernels, gpu=gpu), mode="exact", placement="round-robin")
    log = [(b.kernel, b.sm, us(b.start_s)) for b in rr.blocks or ()]
    # Round robin: a's 9th block goes to SM0 and its 10th to SM1; b continues at SM0.
    assert log == ([("a", 0, 0)] * 4 + [("a", 1, 0)] * 4 + [("a", 0, 10), ("a", 1, 10)]
                   + [("b", 0, 10), ("b", 0, 10), ("b", 1, 10)])


def test_host_launch_overhead_and_program_order() -> None:
    # 5 us per launch: kernels become visible at 5, 10, 15; the stream is FIFO.
    ks = [kernel(f"k{i}", "a", 1) for i in range(3)]
    r = simulate(program(ks, launch_overhead_s=5 * US))
    assert [us(k.launch_s) for k in r.kernels] == [5, 10, 15]
    assert [(us(k.start_s), us(k.end_s)) for k in r.kernels] == [(5, 15), (15, 25), (25, 35)]
    assert us(r.counters.launch_bound_s) == 5


def test_event_overhead_only_for_cross_stream_dependencies() -> None:
    ks = [kernel("a0", "a", 1), kernel("b0", "b", 1, after=("a0",)),
          kernel("a1", "a", 1, after=("a0",))]
    r = simulate(program(ks, launch_overhead_s=5 * US, event_overhead_s=2 * US))
    assert [(us(k.launch_begin_s), us(k.launch_s)) for k in r.kernels] == [
        (0, 5), (7, 12), (12, 17)]
    assert [(us(k.start_s), us(k.end_s)) for k in r.kernels] == [(5, 15), (15, 25), (17, 27)]


def test_host_runs_ahead_so_tiny_kernels_are_launch_bound() -> None:
    ks = [kernel(f"k{i}", "a", 1, block_time_s=1 * US) for i in range(10)]
    r = simulate(program(ks, launch_overhead_s=5 * US))
    assert us(r.makespan_s) == 51
    # Idle while waiting for each launch: 5 us before the first, then 4 us between.
    assert us(r.counters.launch_bound_s) == 5 + 9 * 4


def test_resident_grid_limit_serializes() -> None:
    gpu = H100.replace(max_resident_grids=1)
    r = simulate(program([kernel("x", "a", 10), kernel("y", "b", 10)], gpu=gpu))
    assert [(us(k.start_s), us(k.end_s)) for k in r.kernels] == [(0, 10), (10, 20)]
    assert us(r.counters.resident_limit_s) == 10


def test_shared_memory_bound_kernel_reports_shared_memory() -> None:
    # 100 KB + 1 KB reserved -> 2 blocks per SM: 264 per wave, 3 waves for 529 blocks.
    r = simulate(program([kernel("k", "a", 529, smem_per_block_B=100_000)]))
    assert us(r.makespan_s) == 30
    assert set(r.counters.blocked_s) == {"shared_memory"}


def test_deadlock_names_the_waiting_kernels() -> None:
    # One hardware queue: k1 waits for k2, which is queued behind it. Program validation
    # rejects a wait on a later kernel (a no-op in CUDA), so no valid program deadlocks;
    # the launch order is swapped behind validation's back to show that the engine still
    # reports, rather than hangs, if one ever did.
    gpu = H100.replace(connections=1)
    ks = [kernel("k2", "b", 1), kernel("k1", "a", 1, after=("k2",))]
    bad = program(ks, gpu=gpu)
    object.__setattr__(bad, "kernels", (bad.kernels[1], bad.kernels[0]))
    with pytest.raises(DeadlockError, match=r"'k1' \(head of hardware queue 0\) waits for "
                                            r"'k2'.*'k2' is queued behind 'k1'"):
        simulate(bad)
    # In a valid launch order the program runs.
    r = simulate(program(ks, gpu=gpu))
    assert [us(k.start_s) for k in r.kernels] == [0, 10]


def test_records_api_is_plain_data() -> None:
    r = simulate(program([kernel("k", "a", 2)]), record_blocks=True)
    rec = r.kernel_records()[0]
    assert rec["name"] == "k" and rec["blocks"] == 2 and rec["end_s"] == pytest.approx(10 * US)
    assert r.block_records()[0] == {"kernel": "k", "sm": 0, "start_s": 0.0,
                                    "end_s": pytest.approx(10 * US)}
    d = r.to_dict()
    assert d["makespan_us"] == pytest.approx(10)
    assert d["kernels"][0]["start_us"] == 0
    assert simulate(program([kernel("k", "a", 2)])).blocks is None


def test_policy_factory_and_empty_program() -> None:
    r = simulate(program([kernel("k", "a", 3)], gpu=H100.replace(sm_count=2)),
                 placement=RoundRobin, record_blocks=True)
    assert r.placement == "round-robin"
    assert [b.sm for b in r.blocks or ()] == [0, 0, 1]
    empty = simulate(program([], streams=[StreamDef("a")]))
    assert empty.makespan_s == 0 and empty.kernels == ()


def test_trace_dram_counter_in_gb_per_s() -> None:
    from sim.engine.trace import to_chrome_trace

    bytes_each = 2 * H100.dram_bw_Bps * 10 * US
    r = simulate(program([kernel("m0", "a", WAVE // 2, dram_bytes=bytes_each)]),
                 sm_sharing=False)
    dram = [(e["ts"], e["args"]["GB/s"]) for e in to_chrome_trace(r)["traceEvents"]
            if e["name"] == "DRAM bandwidth"]
    assert dram == [(0.0, pytest.approx(H100.dram_bw_Bps / 1e9)), (pytest.approx(20.0), 0.0)]
