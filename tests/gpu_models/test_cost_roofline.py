"""Roofline cost model, waves, isolated time, the registry, and the physical floors.

Expected values are worked out by hand from the model's definition (gpu_models/cost):
block time = FLOPs per block / (peak x efficiency / (SMs x resident blocks per SM)) + floor,
isolated time = max(waves x block time, bytes / efficiency / bandwidth).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_models.calibration import CalibrationRecord
from gpu_models.cost import (
    DEFAULT_BLOCK_LATENCY_S,
    DEFAULT_EFFICIENCY,
    RooflineModel,
    blocks_per_sm,
    features,
    get_cost_model,
    isolated_time_s,
    list_cost_models,
    physical_floor_s,
    resident_blocks_per_sm,
    roofline_model,
    scaled_model,
    waves,
)
from gpu_models.cost.calibrated import calibrated_model
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.occupancy import occupancy
from gpu_models.presets import list_presets, load_preset
from gpu_models.spec import PRECISIONS, GPUSpec


def conv(blocks: int, flops: float, dram_bytes: float = 0.0, **kw: object) -> KernelSpec:
    """A tensor-core conv kernel: 128 threads, 232 regs, 80 KiB smem (2 blocks/SM on H100)."""
    fields = dict(name="conv", kind="conv_fwd", grid=(blocks, 1, 1), threads=128,
                  regs_per_thread=232, smem_per_block_B=81920, flops=flops,
                  dram_bytes=dram_bytes, dtype="bf16", tensor_cores=True)
    fields.update(kw)
    return KernelSpec(**fields)  # type: ignore[arg-type]


def test_waves_and_residency_follow_occupancy(h100: GPUSpec) -> None:
    k = conv(blocks=1000, flops=1e9)
    per_sm = occupancy(h100, 128, 232, 81920).blocks_per_sm
    assert blocks_per_sm(k, h100) == per_sm == 2
    assert waves(k, h100) == math.ceil(1000 / (132 * 2)) == 4
    assert resident_blocks_per_sm(k, h100) == 2
    # A grid smaller than the GPU leaves SMs with fewer blocks than occupancy allows.
    assert resident_blocks_per_sm(conv(blocks=100, flops=1e9), h100) == 1
    assert resident_blocks_per_sm(conv(blocks=200, flops=1e9), h100) == 2


def test_compute_bound_full_waves_exact(h100: GPUSpec) -> None:
    model = RooflineModel()
    k = conv(blocks=132 * 2 * 3, flops=3e12)  # exactly three full waves
    eff = DEFAULT_EFFICIENCY[KernelKind.CONV_FWD].compute
    share = h100.peak_bf16_tensor_flop_per_s * eff / (132 * 2)
    block = 3e12 / k.blocks / share + DEFAULT_BLOCK_LATENCY_S
    assert model(k, h100).block_time_s == pytest.approx(block)
    assert isolated_time_s(k, h100, model) == pytest.approx(3 * block)
    # Three full waves of a compute-bound kernel: FLOPs at efficiency x peak, plus 3 floors.
    assert isolated_time_s(k, h100, model) == pytest.approx(
        3e12 / (h100.peak_bf16_tensor_flop_per_s * eff) + 3 * DEFAULT_BLOCK_LATENCY_S)


def test_partial_wave_costs_a_whole_block_time(h100: GPUSpec) -> None:
    model = RooflineModel()
    full = conv(blocks=264, flops=264e6)
    partial = conv(blocks=265, flops=265e6)  # same work per block, one block more
    assert model(partial, h100).block_time_s == pytest.approx(model(full, h100).block_time_s)
    assert isolated_time_s(partial, h100, model) == pytest.approx(
        2 * isolated_time_s(full, h100, model))


def test_memory_bound_kernel_gets_bytes_over_achieved_bandwidth(a100: GPUSpec) -> None:
    model = RooflineModel()
    # PyTorch's vectorized ReLU: 128 threads x 4 floats per block, read + write; 16 blocks
    # (64 warps) per SM, 29 full waves of 1728: full occupancy reaches the bandwidth.
    blocks = 1728 * 29
    nbytes = blocks * 512 * 8
    k = KernelSpec(name="relu", kind="elementwise", grid=(blocks, 1, 1), threads=128,
                   regs_per_thread=16, smem_per_block_B=0, flops=blocks * 512,
                   dram_bytes=nbytes)
    eff = DEFAULT_EFFICIENCY[KernelKind.ELEMENTWISE].memory
    cost = model(k, a100)
    assert cost.dram_bytes == pytest.approx(nbytes / eff)
    assert isolated_time_s(k, a100, model) == pytest.approx(nbytes / (eff * a100.dram_bw_Bps))
    # Without the memory-parallelism bound (the engine with --sm-sharing off) the same.
    assert isolated_time_s(k, a100, model, sm_sharing=False) == pytest.approx(
        nbytes / (eff * a100.dram_bw_Bps))


def test_isolated_time_of_a_partial_last_wave_is_the_engines(h100: GPUSpec) -> None:
    # 1.5 waves of 256-thread blocks (8 per SM, 1056 per wave), 10 us blocks.
    model = RooflineModel(block_latency_s=10e-6)
    blocks = 1056 + 528

    def copy(full_wave_demand: float) -> KernelSpec:
        """Asking ``full_wave_demand`` x the bandwidth when a wave is full."""
        return KernelSpec(name="copy", kind="micro", grid=(blocks, 1, 1), threads=256,
                          regs_per_thread=32, smem_per_block_B=0, flops=0.0,
                          dram_bytes=full_wave_demand * h100.dram_bw_Bps * 10e-6 * blocks / 1056)

    # Without the parallelism bound, asking 1.5x: the full wave runs at rate 1 / 1.5
    # (15 us), the half wave asks 0.75x and runs at rate 1 (10 us): 25 us, where
    # max(waves x block time, bytes / bandwidth) said 22.5 us.
    assert isolated_time_s(copy(1.5), h100, model, sm_sharing=False) == pytest.approx(25e-6)
    # With it, asking 2x: the full wave (64 warps per SM) still gets the whole bandwidth
    # (20 us); the half wave (32 warps per SM) asks 1x but draws only the fraction
    # R(32) / R(64) of it that the curve gives.
    from gpu_models.memory import stream_bandwidth_Bps

    half = stream_bandwidth_Bps(h100, 32) / stream_bandwidth_Bps(h100, 64)
    assert half < 1
    assert isolated_time_s(copy(2.0), h100, model) == pytest.approx(20e-6 + 10e-6 / half,
                                                                    rel=1e-9)
    assert isolated_time_s(copy(2.0), h100, model, sm_sharing=False) == pytest.approx(30e-6)


def test_small_kernel_gets_the_latency_floor(h100: GPUSpec) -> None:
    k = KernelSpec(name="fill", kind="elementwise", grid=(1, 1, 1), threads=128,
                   regs_per_thread=16, smem_per_block_B=0, flops=0.0, dram_bytes=4.0)
    assert isolated_time_s(k, h100, RooflineModel()) == pytest.approx(DEFAULT_BLOCK_LATENCY_S)


def gemm(blocks: int, flops: float, dram_bytes: float = 0.0) -> KernelSpec:
    """A bf16 tensor-core GEMM kernel: 256 threads, 128 regs, 96 KiB smem (2 blocks/SM)."""
    return KernelSpec(name="gemm", kind="gemm", grid=(blocks, 1, 1), threads=256,
                      regs_per_thread=128, smem_per_block_B=98304, flops=flops,
                      dram_bytes=dram_bytes, dtype="bf16", tensor_cores=True)


@pytest.mark.parametrize("make", [conv, gemm])
def test_doubling_sms_halves_a_compute_bound_multi_wave_kernel(h100: GPUSpec, make: object
                                                                ) -> None:
    """``replace(sm_count=...)`` scales the whole-GPU peaks: twice the SMs, half the time."""
    model = RooflineModel()
    big = h100.replace(sm_count=264)
    assert big.peak_bf16_tensor_flop_per_s == pytest.approx(2 * h100.peak_bf16_tensor_flop_per_s)
    k = make(blocks=132 * 2 * 8, flops=8e12, dram_bytes=1e9)  # type: ignore[operator]
    assert (waves(k, h100), waves(k, big)) == (8, 4)
    ratio = isolated_time_s(k, big, model) / isolated_time_s(k, h100, model)
    assert ratio == pytest.approx(0.5, rel=0.01)
    # The scaled model, from the H100's roofline, agrees.
    scaled = scaled_model(h100, origin_model=model)
    assert isolated_time_s(k, big, scaled) / isolated_time_s(k, h100, scaled) == \
        pytest.approx(0.5, rel=0.02)
    # A memory-bound kernel at the same bandwidth does not speed up.
    copy = KernelSpec(name="copy", kind="concat_copy", grid=(100_000, 1, 1), threads=256,
                      regs_per_thread=16, smem_per_block_B=0, flops=0.0, dram_bytes=4e9)
    for m in (model, scaled):
        assert isolated_time_s(copy, big, m) == pytest.approx(isolated_time_s(copy, h100, m),
                                                              rel=0.01)


def test_halving_the_clock_doubles_a_compute_bound_kernel(h100: GPUSpec) -> None:
    model = RooflineModel()
    slow = h100.replace(clock_hz=h100.clock_hz / 2)
    assert slow.peak_bf16_tensor_flop_per_s == pytest.approx(h100.peak_bf16_tensor_flop_per_s / 2)
    k = conv(blocks=132 * 2 * 8, flops=8e12, dram_bytes=1e9)
    assert isolated_time_s(k, slow, model) / isolated_time_s(k, h100, model) == \
        pytest.approx(2.0, rel=0.02)
    scaled = scaled_model(h100, origin_model=model)
    assert isolated_time_s(k, slow, scaled) / isolated_time_s(k, h100, scaled) == \
        pytest.approx(2.0, rel=0.02)


def test_fp32_kernel_uses_cuda_core_peak(a100: GPUSpec) -> None:
    tf32 = conv(blocks=108, flops=1e10, dtype="tf32")
    fp32 = conv(blocks=108, flops=1e10, dtype="fp32", tensor_cores=False)
    model = RooflineModel()
    ratio = (model.block_compute_s(fp32, a100) / model.block_compute_s(tf32, a100))
    assert ratio == pytest.approx(a100.peak_tf32_tensor_flop_per_s / a100.peak_fp32_flop_per_s)


def test_kernel_that_cannot_launch_is_an_error(h100: GPUSpec) -> None:
    k = conv(blocks=10, flops=1e6, smem_per_block_B=300_000)
    with pytest.raises(GpusimError, match="can never run on h100: shared memory"):
        RooflineModel()(k, h100)


def test_efficiency_overrides_and_validation(h100: GPUSpec) -> None:
    k = conv(blocks=264, flops=1e11)
    slow = roofline_model(efficiency={"conv_fwd": 0.35})
    fast = roofline_model()
    assert slow.efficiency[KernelKind.CONV_FWD].source == "override"
    assert slow.block_compute_s(k, h100) == pytest.approx(2 * fast.block_compute_s(k, h100))
    pair = roofline_model(efficiency={"elementwise": (0.5, 0.45)})
    assert pair.efficiency[KernelKind.ELEMENTWISE].memory == 0.45
    with pytest.raises(GpusimError, match="unknown kind 'winograd'"):
        roofline_model(efficiency={"winograd": 0.5})
    with pytest.raises(GpusimError, match=r"in \(0, 1\]"):
        roofline_model(efficiency={"gemm": 1.5})
    with pytest.raises(GpusimError, match="block_latency_s"):
        RooflineModel(block_latency_s=0.0)


def test_every_kind_has_a_sourced_efficiency() -> None:
    assert set(DEFAULT_EFFICIENCY) == set(KernelKind)
    for eff in DEFAULT_EFFICIENCY.values():
        assert eff.source
        assert 0 < eff.compute <= 1 and 0 < eff.memory <= 1


def test_models_are_hashable_values() -> None:
    assert RooflineModel() == RooflineModel()
    assert hash(RooflineModel()) == hash(RooflineModel())
    assert {_MODELS["calibrated"]: 1, _MODELS["scaled"]: 2}[_MODELS["scaled"]] == 2


def test_registry() -> None:
    assert list_cost_models() == ("analytic", "roofline", "calibrated", "scaled")
    assert isinstance(get_cost_model("roofline"), RooflineModel)
    assert get_cost_model("roofline", block_latency_s=2e-6).block_latency_s == 2e-6
    with pytest.raises(GpusimError, match="unknown cost model 'magic'"):
        get_cost_model("magic")
    with pytest.raises(GpusimError, match=r"cost model 'roofline'.*unexpected keyword"):
        get_cost_model("roofline", gpu="a100")


# ---------------------------------------------------------------- physical floors


def _synthetic_a100_records() -> list[CalibrationRecord]:
    """Calibration records generated from known coefficients (no measured data exist)."""
    a100 = load_preset("a100")
    records = []
    for kind, coefs in (("conv_fwd", (1.4, 0.2, 2e-6, 3e-6)),
                        ("elementwise", (0.0, 1.15, 1e-6, 2e-6))):
        for i in range(1, 9):
            k = KernelSpec(name=f"{kind}{i}", kind=kind, grid=(200 * i, 1, 1), threads=256,
                           regs_per_thread=64, smem_per_block_B=16384, flops=2e9 * i,
                           dram_bytes=3e7 * i, dtype="fp32")
            duration = sum(c * f for c, f in zip(coefs, features(k, a100), strict=True))
            records.append(CalibrationRecord(
                library_name=k.name, kind=kind, grid=k.grid, block=(256, 1, 1),
                regs_per_thread=64, smem_per_block_B=16384, duration_s=duration,
                flops=k.flops, dram_bytes=k.dram_bytes))
    return records


_MODELS = {
    "roofline": RooflineModel(),
    "calibrated": calibrated_model("a100", records=_synthetic_a100_records()),
    "scaled": scaled_model("a100", records=_synthetic_a100_records()),
}

kernels = st.builds(
    lambda kind, blocks, warps, regs, smem_kb, flops, nbytes, dtype, tc: KernelSpec(
        name="k", kind=kind, grid=(blocks, 1, 1), threads=32 * warps, regs_per_thread=regs,
        smem_per_block_B=smem_kb * 1024, flops=flops, dram_bytes=nbytes, dtype=dtype,
        tensor_cores=tc),
    st.sampled_from(list(KernelKind)),
    st.integers(1, 200_000),
    st.integers(1, 32),
    st.integers(0, 64),
    st.integers(0, 48),
    st.floats(0, 1e13),
    st.floats(0, 1e10),
    st.sampled_from(PRECISIONS),
    st.booleans(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel=kernels, preset=st.sampled_from(list_presets()),
       model_name=st.sampled_from(sorted(_MODELS)))
def test_no_model_beats_the_physical_floors(kernel: KernelSpec, preset: str,
                                            model_name: str) -> None:
    spec = load_preset(preset)
    model = _MODELS[model_name]
    if model_name == "calibrated" and preset != "a100":
        spec = load_preset("a100")  # the calibrated model only speaks for its own GPU
    cost = model(kernel, spec)
    assert cost.block_time_s > 0
    floor = physical_floor_s(kernel, spec)
    assert isolated_time_s(kernel, spec, model) >= floor * (1 - 1e-9)
    assert waves(kernel, spec) * cost.block_time_s + cost.dram_bytes / spec.dram_bw_Bps > 0
