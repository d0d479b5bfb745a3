"""The memory-parallelism model (gpu_models/memory.py, docs/model.md §6.7): the fit to the
published microbenchmark curves, parameters for every preset, the single-kernel curve and
the sharing of one memory system by several kernels."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from gpu_models.errors import GpusimError
from gpu_models.memory import (
    MemoryParams,
    MemorySystem,
    curve_Bps,
    loaded_latency_s,
    measured_curves,
    memory_params,
    stream_bandwidth_Bps,
)
from gpu_models.presets import list_presets, load_gpu

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "microbench"
#: The latency-aware cost model's target for streaming kernels (issue 15): every point.
TOLERANCE = 0.15


def _model_curve(curve) -> list[float]:
    p = curve.params
    return [curve_Bps(curve.sm_count * w * p.bytes_in_flight_per_warp_B / p.latency_s,
                      p.plateau_fraction * curve.datasheet_bw_Bps, p.knee)
            for w in curve.warps_per_sm]


def test_every_fitted_curve_within_15_percent_of_every_measured_point() -> None:
    curves = measured_curves()
    assert {c.preset for c in curves} == {"v100", "a100-40gb", "a100", "h100-pcie"}
    for curve in curves:
        assert len(curve.warps_per_sm) == len(curve.measured_Bps) == 32
        errors = [m / v - 1 for m, v in zip(_model_curve(curve), curve.measured_Bps,
                                             strict=True)]
        worst = max(abs(e) for e in errors)
        assert worst <= TOLERANCE, (curve.preset, worst)
        # The residuals the data file records are the ones the model gives.
        assert worst == pytest.approx(curve.fit_max_rel_error, abs=1e-4)
        rms = math.sqrt(sum(e * e for e in errors) / len(errors))
        assert rms == pytest.approx(curve.fit_rms_rel_error, abs=1e-4)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference/microbench not present")
def test_committed_points_are_the_published_scale_column() -> None:
    for curve in measured_curves():
        tag = curve.source.split()[0]  # gpu-stream_<gpu>.txt
        lines = [ln for ln in (REFERENCE / tag).read_text().splitlines() if ln.strip()]
        column = lines[0].split("|")[1].split().index("scale")
        rows = [ln.split("|") for ln in lines[1:]]
        assert [2 * int(left.split()[0]) / 32 for left, _ in rows] == list(curve.warps_per_sm)
        assert [float(right.split()[1:][column]) * 1e9 for _, right in rows] == list(
            curve.measured_Bps)


def test_every_preset_has_parameters_measured_or_labelled_derived() -> None:
    measured = {c.preset for c in measured_curves()}
    for name in list_presets():
        spec = load_gpu(name)
        params = memory_params(spec)
        assert params.derived == (name not in measured), (name, params.source)
        assert params.source.startswith("measured" if name in measured else "derived")
        # The curve rises with the warps and stays below its plateau.
        warps = sorted({w for w in (1, 2, 8, 32) if w < spec.max_warps_per_sm}
                       | {spec.max_warps_per_sm})
        rates = [stream_bandwidth_Bps(spec, w) for w in warps]
        assert all(a < b for a, b in itertools.pairwise(rates)), name
        assert rates[-1] < params.plateau_fraction * spec.dram_bw_Bps
    # A hypothetical variant keeps its preset's parameters.
    assert memory_params(load_gpu("v100").replace(sm_count=160)) == memory_params(load_gpu("v100"))
    # Derivation rules: by architecture, else the nearest measured architecture.
    assert "architecture 9.0" in memory_params(load_gpu("h100")).source
    assert "nearest measured architecture 7.0" in memory_params(load_gpu("titan-xp")).source


def test_single_kernel_curve_is_littles_law_with_a_latency_rising_with_load() -> None:
    spec = load_gpu("h100-pcie")
    p = memory_params(spec)
    plateau = p.plateau_fraction * spec.dram_bw_Bps
    for warps in (1, 8, 32, 64):
        rate = stream_bandwidth_Bps(spec, warps)
        in_flight = spec.sm_count * warps * p.bytes_in_flight_per_warp_B
        # Little's law at the latency of the load the kernel itself puts on DRAM.
        assert rate == pytest.approx(in_flight / loaded_latency_s(p, rate / plateau), rel=1e-12)
    # One warp per SM is far from the plateau: within 0.2% of the unloaded Little's law.
    one = stream_bandwidth_Bps(spec, 1)
    assert one == pytest.approx(spec.sm_count * p.bytes_in_flight_per_warp_B / p.latency_s,
                                rel=2e-3)
    assert loaded_latency_s(p, 0.0) == p.latency_s
    with pytest.raises(GpusimError, match="utilisation"):
        loaded_latency_s(p, 1.0)
    with pytest.raises(GpusimError, match="warps_per_sm"):
        stream_bandwidth_Bps(spec, 65)


def test_memory_system_sharing() -> None:
    spec = load_gpu("h100")
    ms = MemorySystem.for_gpu(spec)
    bw = spec.dram_bw_Bps
    full = spec.max_warps_per_sm

    def unloaded(warps_per_sm: float) -> float:
        return ms.unloaded_Bps(ms.block_in_flight_B(round(spec.sm_count * warps_per_sm)))

    # Alone, a kernel asking for more than it can draw gets the curve's fraction of its
    # full-occupancy rate (the capacity: bandwidth-equivalent bytes).
    for warps in (1, 8, 32):
        alone = ms.alone_Bps(10 * bw, unloaded(warps), 132)
        assert alone == pytest.approx(bw * stream_bandwidth_Bps(spec, warps)
                                      / stream_bandwidth_Bps(spec, full), rel=1e-12)
    assert ms.alone_Bps(10 * bw, unloaded(full), 132) == pytest.approx(bw, rel=1e-12)
    # Two kernels of 4 warps per SM draw together what one of 8 draws alone.
    both = ms.share((10 * bw, 10 * bw), (unloaded(4), unloaded(4)), (132, 132))
    assert both.rates_Bps[0] == both.rates_Bps[1]
    assert both.used_Bps == pytest.approx(ms.alone_Bps(10 * bw, unloaded(8), 132), rel=1e-12)
    assert both.limited
    # A kernel asking less than its parallelism allows keeps its demand; the other is held.
    mixed = ms.share((0.05 * bw, 10 * bw), (unloaded(32), unloaded(16)), (132, 132))
    assert mixed.rates_Bps[0] == 0.05 * bw
    assert mixed.rates_Bps[1] < ms.alone_Bps(10 * bw, unloaded(16), 132)  # it sees the load
    assert mixed.used_Bps <= bw * (1 + 1e-12)
    # Demand within every kernel's parallelism: granted as asked, nothing limited.
    easy = ms.share((0.1 * bw, 0.2 * bw), (unloaded(32), unloaded(32)), (132, 132))
    assert easy.rates_Bps == (0.1 * bw, 0.2 * bw) and not easy.limited
    # in_flight_for is the parallelism a demand needs alone.
    blocks = 264
    need = ms.in_flight_for(0.6 * bw, blocks)
    assert ms.alone_Bps(0.6 * bw, ms.unloaded_Bps(blocks * need), blocks) == pytest.approx(0.6 * bw)
    # Blocks declaring more in flight than streaming warps keep can ask past the capacity:
    # then it is shared max-min fairly per block (k0's blocks ask less than the fair share).
    deep = ms.unloaded_Bps(ms.block_in_flight_B(4, 64_000)) * 132
    capped = ms.share((0.2 * bw, 3 * bw), (deep, deep), (132, 132))
    assert capped.rates_Bps == (0.2 * bw, pytest.approx(0.8 * bw)) and capped.limited
    assert ms.in_flight_for(2 * bw, blocks) == ms.in_flight_for(bw, blocks)
    assert ms.alone_Bps(2 * bw, ms.unloaded_Bps(blocks * ms.in_flight_for(bw, blocks)), blocks) == (
        pytest.approx(bw))


def test_parameters_are_validated() -> None:
    good = {"bytes_in_flight_per_warp_B": 256.0, "latency_s": 4e-7, "plateau_fraction": 0.9,
            "knee": 2.0, "source": "test"}
    MemoryParams(**good)
    for field, bad in (("latency_s", 0.0), ("plateau_fraction", -1.0), ("knee", 0.5),
                       ("bytes_in_flight_per_warp_B", math.inf)):
        with pytest.raises(GpusimError, match=field):
            MemoryParams(**{**good, field: bad})
