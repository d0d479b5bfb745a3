"""Scaled cost model: Habitat-style wave scaling from an origin GPU to any spec."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_models.calibration import CalibrationRecord
from gpu_models.cost import (
    RooflineModel,
    ScaledModel,
    calibrated_model,
    features,
    get_cost_model,
    isolated_time_s,
    memory_boundness,
    memory_floor_s,
    physical_floor_s,
    roofline_model,
    scaled_model,
    waves,
)
from gpu_models.kernel import KernelSpec
from gpu_models.spec import GPUSpec


def memory_bound() -> KernelSpec:
    """A large ReLU: 128 threads x 4 floats per block, read + write (~0.1 FLOP/byte).

    Full waves on 54, 108 and 216 A100 SMs (16 blocks per SM): a partial last wave would
    add its own memory-parallelism time (gpu_models/cost/waves.py), not what is tested here.
    """
    blocks = 3456 * 14
    return KernelSpec(name="relu", kind="elementwise", grid=(blocks, 1, 1), threads=128,
                      regs_per_thread=16, smem_per_block_B=0, flops=blocks * 512.0,
                      dram_bytes=blocks * 512 * 8.0)


def compute_bound() -> KernelSpec:
    """A big tensor-core conv: 8 waves on the A100 at 2 blocks per SM (~600 FLOP/byte)."""
    blocks = 108 * 2 * 8
    return KernelSpec(name="conv", kind="conv_fwd", grid=(blocks, 1, 1), threads=128,
                      regs_per_thread=232, smem_per_block_B=65536, flops=2e12,
                      dram_bytes=2e12 / 600, dtype="tf32", tensor_cores=True)


def synthetic_records(spec: GPUSpec) -> list[CalibrationRecord]:
    """Records generated from known coefficients (no measured data exist yet)."""
    coefs = {"conv_fwd": (1.5, 0.2, 1e-6, 3e-6), "elementwise": (0.0, 1.15, 1e-6, 2e-6)}
    records = []
    for scale in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
        for base in (memory_bound(), compute_bound()):
            k = KernelSpec(name=base.name, kind=base.kind,
                           grid=(max(1, int(base.blocks * scale)), 1, 1), threads=base.threads,
                           regs_per_thread=base.regs_per_thread,
                           smem_per_block_B=base.smem_per_block_B, flops=base.flops * scale,
                           dram_bytes=base.dram_bytes * scale, dtype=base.dtype,
                           tensor_cores=base.tensor_cores)
            duration = float(np.dot(coefs[k.kind], features(k, spec)))
            records.append(CalibrationRecord(
                library_name=f"{k.name}x{scale}", kind=k.kind, grid=k.grid,
                block=(k.threads, 1, 1), regs_per_thread=k.regs_per_thread,
                smem_per_block_B=k.smem_per_block_B, duration_s=duration, dtype=k.dtype,
                tensor_cores=k.tensor_cores, flops=k.flops, dram_bytes=k.dram_bytes))
    return records


def test_scaling_to_the_same_gpu_is_the_identity(a100: GPUSpec) -> None:
    records = synthetic_records(a100)
    origin = calibrated_model(a100, records=records)
    model = get_cost_model("scaled", origin="a100", records=records)
    assert isinstance(model, ScaledModel)
    for k in (memory_bound(), compute_bound()):
        assert model(k, a100) == origin(k, a100)
        assert model.scaled_time_s(k, a100) == pytest.approx(isolated_time_s(k, a100, origin))


def test_doubling_bandwidth_speeds_only_memory_bound_kernels(a100: GPUSpec) -> None:
    model = scaled_model(a100, origin_model=RooflineModel())
    fast_memory = a100.replace(dram_bw_Bps=2 * a100.dram_bw_Bps)
    mem, comp = memory_bound(), compute_bound()
    assert memory_boundness(mem, a100) > 0.95
    assert memory_boundness(comp, a100) < 0.05
    mem_speedup = (isolated_time_s(mem, a100, model)
                   / isolated_time_s(mem, fast_memory, model))
    comp_speedup = (isolated_time_s(comp, a100, model)
                    / isolated_time_s(comp, fast_memory, model))
    assert 1.9 < mem_speedup <= 2.0
    assert 1.0 <= comp_speedup < 1.02


def test_doubling_sms_halves_the_waves(a100: GPUSpec) -> None:
    records = synthetic_records(a100)
    model = scaled_model(a100, records=records)
    # Twice the SMs with the same per-SM rate: replace() doubles every total peak too.
    big = a100.replace(sm_count=216)
    assert big.peak_tf32_tensor_flop_per_s == pytest.approx(2 * a100.peak_tf32_tensor_flop_per_s)
    comp = compute_bound()
    assert waves(comp, a100) == 8 and waves(comp, big) == 4
    ratio = isolated_time_s(comp, big, model) / isolated_time_s(comp, a100, model)
    assert ratio == pytest.approx(0.5, rel=0.05)
    # A memory-bound kernel at the (unchanged) bandwidth keeps its time.
    mem = memory_bound()
    assert isolated_time_s(mem, big, model) == pytest.approx(
        isolated_time_s(mem, a100, model), rel=0.01)


def test_memory_part_scales_with_bandwidth_not_sms(a100: GPUSpec) -> None:
    """A kernel measured at twice its memory floor: SMs do not help it, bandwidth does.

    (Scaling its whole time by the wave ratio, as Habitat does, made it ~2x faster on twice
    the SMs: down to its floor at the same bandwidth.)
    """
    origin = roofline_model(efficiency={"elementwise": (0.5, 0.5)})
    model = scaled_model(a100, origin_model=origin)
    mem = memory_bound()
    base = isolated_time_s(mem, a100, model)
    assert base == pytest.approx(2 * memory_floor_s(mem, a100), rel=0.01)
    assert waves(mem, a100.replace(sm_count=216)) < waves(mem, a100)
    more_sms = isolated_time_s(mem, a100.replace(sm_count=216), model)
    assert more_sms == pytest.approx(base, rel=0.01)
    fewer_sms = isolated_time_s(mem, a100.replace(sm_count=54), model)
    assert fewer_sms == pytest.approx(base, rel=0.01)
    more_bw = isolated_time_s(mem, a100.replace(dram_bw_Bps=2 * a100.dram_bw_Bps), model)
    assert more_bw == pytest.approx(base / 2, rel=0.01)
    # The compute-bound kernel: SMs halve it, bandwidth leaves it, half the clock doubles it.
    comp = compute_bound()
    base = isolated_time_s(comp, a100, model)
    assert isolated_time_s(comp, a100.replace(sm_count=216), model) == pytest.approx(
        base / 2, rel=0.03)
    assert isolated_time_s(comp, a100.replace(dram_bw_Bps=2 * a100.dram_bw_Bps), model) \
        == pytest.approx(base, rel=0.03)
    assert isolated_time_s(comp, a100.replace(clock_hz=a100.clock_hz / 2), model) \
        == pytest.approx(2 * base, rel=0.03)


def test_scaling_across_presets_respects_floors(a100: GPUSpec, h100: GPUSpec,
                                                v100: GPUSpec) -> None:
    model = scaled_model(a100, records=synthetic_records(a100))
    for spec in (h100, v100):
        for k in (memory_bound(), compute_bound()):
            assert isolated_time_s(k, spec, model) >= physical_floor_s(k, spec)
    # The H100 has more bandwidth and per-SM tensor throughput: both kernels speed up.
    for k in (memory_bound(), compute_bound()):
        assert isolated_time_s(k, h100, model) < isolated_time_s(k, a100, model)
