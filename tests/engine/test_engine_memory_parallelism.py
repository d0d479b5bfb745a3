"""DRAM bounded by memory-level parallelism in the engine (docs/model.md §6.7).

A memory-bound kernel with ``W`` resident warps on every SM reaches, of the bandwidth, the
fraction R(W) / R(64) of the single-kernel curve
``R = X / (1 + (X / B)^n)^(1/n)``, ``X = sm_count x W x bytes_in_flight_per_warp / L0``:
written out here from the H100's parameters, independently of gpu_models/memory.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.cost import RooflineModel, lone_kernel_time_s
from gpu_models.kernel import KernelSpec
from gpu_models.memory import memory_params
from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, simulate

H100 = load_gpu("h100")
BW = H100.dram_bw_Bps
US = 1e-6
MODES = ("grouped", "exact")


def curve_fraction(warps_per_sm: float) -> float:
    """R(W) / R(64) on the H100 (module docstring)."""
    p = memory_params(H100)
    plateau = p.plateau_fraction * BW

    def rate(w: float) -> float:
        x = H100.sm_count * w * p.bytes_in_flight_per_warp_B / p.latency_s
        return x / (1 + (x / plateau) ** p.knee) ** (1 / p.knee)

    return rate(warps_per_sm) / rate(H100.max_warps_per_sm)


def streaming(name: str, stream: str, warps: int, nbytes: float, **kw: Any) -> Launch:
    """One block per SM of ``warps`` warps, asking 10x the bandwidth when nothing slows it."""
    return Launch(name=name, stream=stream, grid=H100.sm_count, threads=32 * warps,
                  regs_per_thread=32, smem_per_block_B=0,
                  block_time_s=nbytes / (10 * BW), dram_bytes=nbytes, **kw)


def run(kernels: list[Launch], mode: str = "grouped", **kw: Any):
    streams = tuple(StreamDef(n) for n in dict.fromkeys(k.stream for k in kernels))
    return simulate(Program(H100, streams, tuple(kernels), launch_overhead_s=0.0,
                            event_overhead_s=0.0), mode=mode, **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("warps", [1, 8, 32])
def test_a_memory_bound_kernel_draws_what_its_warps_keep_in_flight(mode: str,
                                                                   warps: int) -> None:
    nbytes = 1e8
    r = run([streaming("m", "a", warps, nbytes)], mode)
    assert r.makespan_s == pytest.approx(nbytes / (BW * curve_fraction(warps)), rel=1e-9)
    assert r.dram_Bps.at(r.makespan_s / 2) == pytest.approx(BW * curve_fraction(warps))
    assert r.counters.memory_parallelism_s == pytest.approx(r.makespan_s)
    # Without the bound (sm_sharing off) the kernel gets the whole bandwidth.
    off = run([streaming("m", "a", warps, nbytes)], mode, sm_sharing=False)
    assert off.makespan_s == pytest.approx(nbytes / BW, rel=1e-9)
    assert off.counters.memory_parallelism_s == 0


@pytest.mark.parametrize("mode", MODES)
def test_two_low_occupancy_memory_kernels_overlap_as_the_curve_says(mode: str) -> None:
    # One warp per SM each. On one stream each draws R(1); on two streams their blocks
    # co-reside (2 warps per SM) and together draw R(2), half each.
    nbytes = 1e8
    one = run([streaming("a", "s", 1, nbytes), streaming("b", "s", 1, nbytes)], mode)
    two = run([streaming("a", "s", 1, nbytes), streaming("b", "t", 1, nbytes)], mode)
    assert one.makespan_s == pytest.approx(2 * nbytes / (BW * curve_fraction(1)), rel=1e-9)
    assert two.makespan_s == pytest.approx(2 * nbytes / (BW * curve_fraction(2)), rel=1e-9)
    gain = one.makespan_s / two.makespan_s
    assert gain == pytest.approx(curve_fraction(2) / curve_fraction(1), rel=1e-9)
    assert 1.9 < gain < 2.0  # nearly Little's law: twice the bytes in flight
    assert [k.end_s for k in two.kernels] == [two.makespan_s] * 2


@pytest.mark.parametrize("mode", MODES)
def test_a_full_gpu_of_streaming_warps_uses_the_whole_bandwidth(mode: str) -> None:
    # 64 warps per SM (2 blocks of 1024 threads): the curve's full-occupancy point is the
    # engine's whole bandwidth, as the cost models price it.
    k = Launch(name="m", stream="a", grid=2 * 132, threads=1024, regs_per_thread=32,
               smem_per_block_B=0, block_time_s=10 * US, dram_bytes=2 * BW * 10 * US)
    r = run([k], mode)
    assert r.makespan_s == pytest.approx(20 * US, rel=1e-9)
    assert r.counters.memory_parallelism_s == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_kernel_asking_less_than_its_parallelism_allows_is_not_slowed(mode: str) -> None:
    # 32 warps per SM asking 0.1x the bandwidth: far below what they keep in flight.
    k = Launch(name="m", stream="a", grid=132, threads=1024, regs_per_thread=32,
               smem_per_block_B=0, block_time_s=10 * US, dram_bytes=0.1 * BW * 10 * US)
    r = run([k], mode)
    assert r.makespan_s == 10 * US
    assert r.counters.memory_parallelism_s == 0


kernels = st.builds(
    lambda blocks, warps, flops, nbytes, smem_kb, kind: KernelSpec(
        name="k", kind=kind, grid=(blocks, 1, 1), threads=32 * warps, regs_per_thread=32,
        smem_per_block_B=smem_kb * 1024, flops=flops, dram_bytes=nbytes),
    blocks=st.integers(1, 3000), warps=st.sampled_from([1, 2, 4, 8, 16, 32]),
    flops=st.sampled_from([0.0, 1e6, 1e9, 1e11]), nbytes=st.sampled_from([0.0, 1e5, 1e7, 1e9]),
    smem_kb=st.sampled_from([0, 0, 16, 48]),
    kind=st.sampled_from(["elementwise", "conv_fwd", "gemm", "normalization"]))


@settings(max_examples=60, deadline=None)
@given(kernels, st.booleans(), st.sampled_from(["h100", "v100", "a100"]))
def test_isolated_time_is_the_engines_for_a_kernel_alone(kernel: KernelSpec, sharing: bool,
                                                         gpu: str) -> None:
    spec = load_gpu(gpu)
    cost = RooflineModel()(kernel, spec)
    launch = Launch.from_kernel(kernel, cost, stream="a")
    program = Program(spec, (StreamDef("a"),), (launch,), launch_overhead_s=0.0,
                      event_overhead_s=0.0)
    engine_s = simulate(program, sm_sharing=sharing).makespan_s
    assert lone_kernel_time_s(kernel, spec, cost, sm_sharing=sharing) == pytest.approx(
        engine_s, rel=1e-9)
