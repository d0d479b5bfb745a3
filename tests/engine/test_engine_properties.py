"""Property tests on random small programs (some streams confined to SM partitions, blocks
sharing their SMs' throughput and DRAM bounded by memory-level parallelism): both modes
agree, no SM is ever over a resource or its throughput, every block runs once, on its
stream's SMs, and completes exactly its work, runs are deterministic, and the makespan
respects the lone-kernel, work, throughput and DRAM lower bounds."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.occupancy import block_footprint, launch_failure, occupancy
from gpu_models.presets import load_gpu
from sim import PLACEMENTS, Launch, Program, SimResult, StepSeries, StreamDef
from sim.engine.engine import Engine

H100 = load_gpu("h100")
US = 1e-6
REL = 1e-9


@st.composite
def programs(draw: st.DrawFn) -> Program:
    gpu = H100.replace(
        sm_count=draw(st.integers(1, 4)),
        connections=draw(st.integers(1, 4)),
        max_resident_grids=draw(st.integers(1, 6)),
    )
    n_streams = draw(st.integers(1, 4))
    # Some streams confined to an SM partition (any non-empty subset of the SMs).
    partitions = st.one_of(st.none(), st.none(),
                           st.sets(st.integers(0, gpu.sm_count - 1), min_size=1).map(sorted))
    streams = tuple(StreamDef(f"s{i}", draw(st.sampled_from([0, 0, -1])), sms=draw(partitions))
                    for i in range(n_streams))
    kernels: list[Launch] = []
    for i in range(draw(st.integers(1, 7))):
        threads = draw(st.sampled_from([32, 64, 96, 128, 256, 512, 1024]))
        regs = draw(st.sampled_from([0, 16, 32, 64, 128, 255]))
        smem = draw(st.sampled_from([0, 0, 1000, 48_000, 100_000, 200_000]))
        if launch_failure(gpu, threads, regs, smem) is not None:
            regs, smem = 32, 0
            threads = min(threads, 512)
        block_time_s = draw(st.sampled_from([1, 2, 3, 5])) * US
        blocks = draw(st.integers(1, 40))
        # Demand per block from a sliver (never memory-bound under max-min sharing) to the
        # whole bandwidth: a few blocks saturate it, and kernels of unequal demand mix.
        demand = draw(st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.25, 1.0])) * gpu.dram_bw_Bps
        after = tuple(sorted(set(draw(st.lists(st.sampled_from([k.name for k in kernels]),
                                               max_size=2))))) if kernels else ()
        # Share of the SM per block: none (pure latency) to the whole SM, on either resource;
        # co-resident blocks often ask more than an SM has.
        shares = st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 0.7, 1.0])
        sm_throughput = {r: v for r, v in (("simt", draw(shares)),
                                           ("tensor", draw(st.sampled_from([0.0, 0.0, 0.6]))))
                         if v}
        kernels.append(Launch(
            name=f"k{i}", stream=draw(st.sampled_from([s.name for s in streams])), grid=blocks,
            threads=threads, regs_per_thread=regs, smem_per_block_B=smem, block_time_s=block_time_s,
            dram_bytes=demand * blocks * block_time_s, after=after, sm_throughput=sm_throughput,
            bytes_in_flight_B=draw(st.sampled_from([0.0, 0.0, 50_000.0])),
        ))
    overhead = draw(st.sampled_from([0.0, 0.0, 1 * US, 2.5 * US]))
    return Program(gpu, streams, tuple(kernels), launch_overhead_s=overhead,
                   event_overhead_s=draw(st.sampled_from([0.0, 1 * US])))


def _run(program: Program, mode: str, policy: str = "most-free",
         sm_sharing: bool = True) -> tuple[SimResult, Engine]:
    engine = Engine(program, mode=mode, placement=policy, record_blocks=True,
                    sm_sharing=sm_sharing)
    return engine.run(), engine


@settings(max_examples=120, deadline=None)
@given(programs(), st.sampled_from(sorted(PLACEMENTS)), st.booleans())
def test_grouped_and_exact_modes_agree(program: Program, policy: str, sharing: bool) -> None:
    grouped, engine = _run(program, "grouped", policy, sharing)
    exact, _ = _run(program, "exact", policy, sharing)
    # Groups split by SM rate gave back exactly what they took (uneven register takes too).
    assert np.array_equal(engine.sms.free, Engine(program).sms.free)
    assert engine.sms._uneven_takes == 0
    for g, e in zip(grouped.kernels, exact.kernels, strict=True):
        # Same float arithmetic at the same instants: equal to the last bit.
        assert (g.start_s, g.end_s) == (e.start_s, e.end_s), (g, e)
        assert g.sm_blocks == e.sm_blocks
    key = [(b.kernel, b.sm, round(b.start_s / US, 6), round(b.end_s / US, 6))
           for b in grouped.blocks or ()]
    assert sorted(key) == sorted((b.kernel, b.sm, round(b.start_s / US, 6),
                                  round(b.end_s / US, 6)) for b in exact.blocks or ())
    assert grouped.makespan_s == exact.makespan_s
    assert np.array_equal(grouped.sm_occupancy.times_s, exact.sm_occupancy.times_s)
    assert np.array_equal(grouped.sm_occupancy.warps, exact.sm_occupancy.warps)
    assert grouped.counters.groups <= exact.counters.groups == exact.counters.blocks
    assert grouped.dram_Bps == exact.dram_Bps
    assert grouped.sm_throughput == exact.sm_throughput
    g, e = grouped.counters, exact.counters
    assert (g.sm_oversubscribed_s, g.memory_parallelism_s, g.dram_saturated_s) == (
        e.sm_oversubscribed_s, e.memory_parallelism_s, e.dram_saturated_s)


def _integral(series: StepSeries, end_s: float) -> float:
    times = [*series.times_s, end_s]
    return sum(v * (b - a) for v, a, b in zip(series.values, times, times[1:], strict=False))


@settings(max_examples=80, deadline=None)
@given(programs())
def test_sm_capacity_and_work_are_conserved(program: Program) -> None:
    result, engine = _run(program, "exact")
    spec = program.gpu
    # No SM ever delivered more than its capacity on any execution resource.
    assert (engine.execution.peak_sm_load <= 1 + 1e-9).all(), engine.execution.peak_sm_load
    # Every block completed exactly its work: the throughput delivered over the run is the
    # blocks' share x block time, and the bytes moved are the kernels' bytes.
    for resource, series in result.sm_throughput.items():
        work = sum(k.blocks * k.block_time_s * k.sm_throughput.get(resource, 0.0)
                   for k in program.kernels)
        assert _integral(series, result.makespan_s) * spec.sm_count == pytest.approx(
            work, rel=1e-9, abs=1e-18)
    assert _integral(result.dram_Bps, result.makespan_s) == pytest.approx(
        sum(k.dram_bytes for k in program.kernels), rel=1e-9, abs=1e-3)


@settings(max_examples=80, deadline=None)
@given(programs())
def test_resources_blocks_order_and_determinism(program: Program) -> None:
    result, engine = _run(program, "exact")
    spec = program.gpu
    # Everything allocated was released, and no SM went over a resource on the way.
    fresh = Engine(program)
    for name in ("free_warps", "free_slots", "free_smem_B", "free_regs"):
        assert np.array_equal(getattr(engine.sms, name), getattr(fresh.sms, name))
    launches = {k.name: k for k in program.kernels}
    footprint = {n: block_footprint(spec, k.threads, k.regs_per_thread, k.smem_per_block_B)
                 for n, k in launches.items()}
    by_sm: dict[int, list] = defaultdict(list)
    for b in result.blocks or ():
        by_sm[b.sm].append(b)
    for blocks in by_sm.values():
        for t in {b.start_s for b in blocks}:
            live = [b for b in blocks if b.start_s <= t < b.end_s]
            fps = [footprint[b.kernel] for b in live]
            assert len(live) <= spec.max_blocks_per_sm
            assert sum(f.warps for f in fps) <= spec.max_warps_per_sm
            assert sum(f.smem_B for f in fps) <= spec.smem_per_sm_B
            assert sum(f.warps * f.regs_per_warp for f in fps) <= spec.regs_per_sm
    # The occupancy log matches the blocks resident at each of its times.
    occ = result.sm_occupancy
    for row, t in enumerate(occ.times_s):
        resident = np.zeros(spec.sm_count, dtype=np.int64)
        for b in result.blocks or ():
            if b.start_s <= t < b.end_s:
                resident[b.sm] += footprint[b.kernel].warps
        assert occ.warps[row].tolist() == resident.tolist()
    # Every block runs exactly once, for at least its block time.
    per_kernel: dict[str, int] = defaultdict(int)
    for b in result.blocks or ():
        per_kernel[b.kernel] += 1
        assert b.end_s - b.start_s >= launches[b.kernel].block_time_s * (1 - REL)
    for k in result.kernels:
        assert per_kernel[k.name] == k.blocks == sum(k.sm_blocks)
        # Order: visible after launch, ready after its stream predecessor and events.
        assert k.launch_s <= k.ready_s <= k.start_s < k.end_s
        for dep in launches[k.name].after:
            assert result.kernel(dep).end_s <= k.ready_s
    by_stream: dict[str, list] = defaultdict(list)
    for k in result.kernels:
        by_stream[k.stream].append(k)
    for ks in by_stream.values():
        for prev, nxt in itertools.pairwise(ks):
            assert prev.end_s <= nxt.ready_s
    # Same input, same output.
    again, _ = _run(program, "exact")
    assert again.to_dict()["kernels"] == result.to_dict()["kernels"]
    assert again.blocks == result.blocks
    assert again.counters.events == result.counters.events


@settings(max_examples=80, deadline=None)
@given(programs())
def test_makespan_respects_lower_bounds(program: Program) -> None:
    result, _ = _run(program, "grouped")
    spec = program.gpu
    bw = spec.dram_bw_Bps
    bounds = [sum(k.dram_bytes for k in program.kernels) / bw]
    work = defaultdict(float)
    for k in program.kernels:
        per_sm = occupancy(spec, k.threads, k.regs_per_thread, k.smem_per_block_B).blocks_per_sm
        waves = math.ceil(k.blocks / (per_sm * spec.sm_count))
        # A kernel alone: its waves at full speed, or its bytes at full bandwidth.
        bounds.append(max(waves * k.block_time_s, k.dram_bytes / bw))
        fp = block_footprint(spec, k.threads, k.regs_per_thread, k.smem_per_block_B)
        busy_s = k.blocks * k.block_time_s
        work["warps"] += busy_s * fp.warps / spec.max_warps_per_sm
        work["blocks"] += busy_s / spec.max_blocks_per_sm
        work["smem"] += busy_s * fp.smem_B / spec.smem_per_sm_B
        work["regs"] += busy_s * fp.warps * fp.regs_per_warp / spec.regs_per_sm
        # An SM delivers at most its throughput: the "FLOPs over the peak" bound.
        for resource, share in k.sm_throughput.items():
            work[resource] += busy_s * share
    bounds.extend(v / spec.sm_count for v in work.values())
    assert result.makespan_s >= max(bounds) * (1 - REL)


@settings(max_examples=80, deadline=None)
@given(programs(), st.sampled_from(sorted(PLACEMENTS)))
def test_blocks_run_only_on_their_streams_sms(program: Program, policy: str) -> None:
    result, _ = _run(program, "grouped", policy)
    stream_of = {k.name: k.stream for k in program.kernels}
    for b in result.blocks or ():
        sms = program.stream(stream_of[b.kernel]).sms
        assert sms is None or b.sm in sms, (b, sms)
