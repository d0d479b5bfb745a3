"""Calibrated cost model: the fitter recovers known coefficients, reports held-out error.

No measured calibration data exist yet (no GPU in this task), so every record here is
*generated* from known coefficients with a seeded generator: the tests check that the fitter
recovers those coefficients, interpolates to unseen shapes and batch sizes, and reports a
small held-out error. They say nothing about how well the model fits real GPUs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from gpu_models.calibration import (
    CalibrationRecord,
    CalibrationSet,
    Provenance,
    save_calibration_file,
)
from gpu_models.cost import (
    CalibratedModel,
    RooflineModel,
    calibrated_model,
    cross_validate,
    features,
    fit_records,
    get_cost_model,
    isolated_time_s,
    waves,
)
from gpu_models.cost.calibrated import nnls
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.presets import load_preset
from gpu_models.spec import GPUSpec
from sim.cli import main

#: Known coefficients (compute_s, memory_s, waves [s/wave], constant [s]) per kind.
TRUE_COEFS = {
    KernelKind.CONV_FWD: (1 / 0.65, 0.25, 1.5e-6, 4e-6),
    KernelKind.ELEMENTWISE: (0.0, 1 / 0.85, 0.8e-6, 2e-6),
}


def conv_kernel(batch: int, channels: int, i: int = 0) -> KernelSpec:
    """A 3x3 conv on a 28x28 map, 128x128 output tiles: grid and work scale with the batch."""
    m, n, k = batch * 28 * 28, channels, channels * 9
    grid = (-(-m // 128), -(-n // 128), 1)
    return KernelSpec(
        name=f"conv_b{batch}_c{channels}_{i}", kind="conv_fwd", grid=grid, threads=128,
        regs_per_thread=232, smem_per_block_B=65536, flops=2.0 * m * n * k,
        dram_bytes=4.0 * (m * k / 9 + n * k + m * n), dtype="tf32", tensor_cores=True,
        library_name=f"sm80_xmma_fprop_c{channels}_b{batch}_{i}")


def eltwise_kernel(elements: int, i: int = 0) -> KernelSpec:
    """PyTorch's vectorized elementwise: 128 threads x 4 floats per block, read + write."""
    return KernelSpec(
        name=f"relu_{elements}_{i}", kind="elementwise", grid=(-(-elements // 512), 1, 1),
        threads=128, regs_per_thread=16, smem_per_block_B=0, flops=float(elements),
        dram_bytes=8.0 * elements, library_name=f"vectorized_relu_{elements}_{i}")


def make_records(spec: GPUSpec, kernels: Sequence[KernelSpec], rng: np.random.Generator,
                 noise: float) -> list[CalibrationRecord]:
    """Records whose durations come from TRUE_COEFS, times (1 + noise x standard normal)."""
    records = []
    for k in kernels:
        clean = float(np.dot(TRUE_COEFS[k.kind], features(k, spec)))
        duration = clean * (1 + noise * rng.standard_normal())
        records.append(CalibrationRecord(
            library_name=k.library_name, kind=k.kind, grid=k.grid, block=(k.threads, 1, 1),
            regs_per_thread=k.regs_per_thread, smem_per_block_B=k.smem_per_block_B,
            duration_s=duration, dtype=k.dtype, tensor_cores=k.tensor_cores,
            flops=k.flops, dram_bytes=k.dram_bytes, batch=k.grid[0]))
    return records


def training_kernels(rng: np.random.Generator) -> list[KernelSpec]:
    convs = [conv_kernel(int(b), int(c), i) for i, (b, c) in enumerate(zip(
        rng.choice([1, 2, 4, 8, 16, 64, 128], 40), rng.choice([64, 128, 256, 512], 40),
        strict=True))]
    elts = [eltwise_kernel(int(n), i) for i, n in enumerate(rng.integers(10_000, 50_000_000, 40))]
    return convs + elts


def test_nnls_matches_unconstrained_when_feasible_and_clips_otherwise() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((30, 3))
    x = np.array([1.0, 2.0, 0.5])
    assert nnls(a, a @ x) == pytest.approx(x)
    y = a @ np.array([1.0, -2.0, 0.5])
    solution = nnls(a, y)
    assert solution.min() >= 0
    assert solution[1] == 0.0


def test_fit_recovers_known_coefficients_without_noise(a100: GPUSpec) -> None:
    rng = np.random.default_rng(7)
    fits = fit_records(make_records(a100, training_kernels(rng), rng, noise=0.0), a100)
    for kind, coefs in TRUE_COEFS.items():
        got = fits[kind].coefficients
        for true, fitted in zip(coefs, got, strict=True):
            assert fitted == pytest.approx(true, rel=1e-6, abs=1e-12)


def test_fit_with_noise_recovers_and_cross_validates(a100: GPUSpec) -> None:
    rng = np.random.default_rng(11)
    records = make_records(a100, training_kernels(rng), rng, noise=0.03)
    report = cross_validate(records, a100, rng=np.random.default_rng(0), folds=5)
    assert set(report) == set(TRUE_COEFS)
    for err in report.values():
        assert err.n_records == 40 and err.folds == 5
        # 3 % multiplicative noise: held-out relative error of a few percent.
        assert err.heldout_median < 0.04
        assert err.heldout_mean < 0.05
        assert err.insample_mean < 0.04
    # The conv's compute coefficient (1 / efficiency) comes back within 5 %. An elementwise
    # kernel's FLOPs and bytes are both proportional to its elements, so only the combination
    # of its compute and memory coefficients is identifiable: check what it predicts.
    conv = report[KernelKind.CONV_FWD].coefficients
    assert conv[0] == pytest.approx(TRUE_COEFS[KernelKind.CONV_FWD][0], rel=0.05)
    elt = report[KernelKind.ELEMENTWISE].coefficients
    for elements in (100_000, 3_000_000, 40_000_000):
        feats = features(eltwise_kernel(elements), a100)
        assert float(np.dot(elt, feats)) == pytest.approx(
            float(np.dot(TRUE_COEFS[KernelKind.ELEMENTWISE], feats)), rel=0.03)
    as_dict = report[KernelKind.CONV_FWD].to_dict()
    assert as_dict["kind"] == "conv_fwd"
    assert set(as_dict["coefficients"]) == {"compute_s", "memory_s", "waves", "constant"}


def test_interpolates_to_unseen_batch_sizes_and_shapes(a100: GPUSpec) -> None:
    rng = np.random.default_rng(3)
    records = make_records(a100, training_kernels(rng), rng, noise=0.02)
    model = calibrated_model(a100, records=records)
    for unseen in (conv_kernel(32, 192), conv_kernel(96, 384), eltwise_kernel(7_777_777)):
        truth = float(np.dot(TRUE_COEFS[unseen.kind], features(unseen, a100)))
        predicted, how = model.predict_s(unseen)
        assert how == "fit"
        assert predicted == pytest.approx(truth, rel=0.05)
        assert isolated_time_s(unseen, a100, model) == pytest.approx(predicted)


def test_exact_match_uses_the_measured_median(a100: GPUSpec) -> None:
    k = conv_kernel(16, 256)
    rng = np.random.default_rng(5)
    base = make_records(a100, training_kernels(rng), rng, noise=0.0)
    repeats = make_records(a100, [k, k, k], rng, noise=0.0)
    durations = (1e-4, 3e-4, 2e-4)
    repeats = [CalibrationRecord(**{**r.__dict__, "duration_s": d})
               for r, d in zip(repeats, durations, strict=True)]
    model = calibrated_model(a100, records=base + repeats)
    assert model.predict_s(k) == (pytest.approx(2e-4), "measured")
    cost = model(k, a100)
    assert cost.block_time_s * waves(k, a100) == pytest.approx(2e-4)
    assert cost.dram_bytes == k.dram_bytes


def test_work_function_supplies_flops_and_bytes(a100: GPUSpec) -> None:
    rng = np.random.default_rng(9)
    kernels = training_kernels(rng)
    records = make_records(a100, kernels, rng, noise=0.0)
    work = {r.library_name: (k.flops, k.dram_bytes) for r, k in zip(records, kernels,
                                                                     strict=True)}
    bare = [CalibrationRecord(**{**r.__dict__, "flops": None, "dram_bytes": None})
            for r in records]
    # Without work, records serve exact matches only: nothing to fit, nothing to validate.
    assert fit_records(bare, a100) == {}
    with pytest.raises(GpusimError, match="none of the 80 calibration records carries"):
        cross_validate(bare, a100, rng=np.random.default_rng(0))
    raw = calibrated_model(a100, records=bare)
    assert raw.predict_s(kernels[0])[1] == "measured"
    assert raw.predict_s(conv_kernel(3, 96))[1] == "fallback"
    fits = fit_records(bare, a100, work_fn=lambda r: work[r.library_name])
    assert fits[KernelKind.CONV_FWD].coefficients[0] == pytest.approx(
        TRUE_COEFS[KernelKind.CONV_FWD][0], rel=1e-6)


def test_kinds_without_records_fall_back_or_fail(a100: GPUSpec) -> None:
    rng = np.random.default_rng(2)
    records = make_records(a100, training_kernels(rng), rng, noise=0.0)
    gemm = KernelSpec(name="gemm", kind="gemm", grid=(64, 1, 1), threads=256,
                      regs_per_thread=128, smem_per_block_B=32768, flops=1e10,
                      dram_bytes=1e7, dtype="tf32", tensor_cores=True)
    assert calibrated_model(a100, records=records).predict_s(gemm)[1] == "fallback"
    strict = calibrated_model(a100, records=records, use_fallback=False)
    with pytest.raises(GpusimError, match="no records of kind gemm"):
        strict(gemm, a100)


def test_calibrated_model_speaks_only_for_its_gpu(a100: GPUSpec, h100: GPUSpec) -> None:
    rng = np.random.default_rng(4)
    model = calibrated_model(a100, records=make_records(a100, training_kernels(rng), rng, 0.0))
    k = conv_kernel(8, 128)
    with pytest.raises(GpusimError, match=r"differs in .*sm_count.*use the 'scaled'"):
        model(k, h100)
    # Host-side settings do not change kernel durations: allowed.
    assert model(k, a100.replace(connections=32)) == model(k, a100)


@pytest.mark.parametrize("change", [
    {"connections": 32}, {"launch_overhead_s": 1e-5}, {"event_overhead_s": 0.0},
    {"max_resident_grids": 16}, {"connections": 16, "launch_overhead_s": 2e-6},
])
def test_host_only_overrides_are_the_same_gpu(a100: GPUSpec, change: dict[str, object]
                                              ) -> None:
    rng = np.random.default_rng(4)
    model = calibrated_model(a100, records=make_records(a100, training_kernels(rng), rng, 0.0))
    variant = a100.replace(**change)
    assert variant.preset == "a100"
    for k in (conv_kernel(8, 128), eltwise_kernel(1_000_000), conv_kernel(3, 96)):
        assert model(k, variant) == model(k, a100)


@pytest.mark.parametrize("change", [
    {"sm_count": 216}, {"clock_hz": 0.7e9}, {"dram_bw_Bps": 3e12}, {"smem_per_sm_B": 65536},
])
def test_hardware_overrides_point_to_the_scaled_model(a100: GPUSpec, tmp_path: Path,
                                                      change: dict[str, object]) -> None:
    rng = np.random.default_rng(4)
    records = make_records(a100, training_kernels(rng), rng, 0.0)
    model = calibrated_model(a100, records=records)
    variant = a100.replace(**change)
    field = next(iter(change))
    with pytest.raises(GpusimError, match=rf"differs in .*{field}.*use the 'scaled'"):
        model(conv_kernel(8, 128), variant)
    # Fitting the preset's files on a changed spec would compute features on hardware the
    # data were not measured on: refused too, even though the data are found by preset.
    save_calibration_file(CalibrationSet(_synthetic_provenance("a100"), tuple(records)),
                          tmp_path / "a100-synthetic.json")
    with pytest.raises(GpusimError, match=rf"measured on a100.*{field}.*'scaled'"):
        calibrated_model(variant, directory=str(tmp_path))
    # A host-only variant finds the preset's data and answers as the preset.
    host = calibrated_model(a100.replace(connections=32), directory=str(tmp_path))
    k = conv_kernel(8, 128)
    assert host(k, a100) == calibrated_model("a100", directory=str(tmp_path))(k, a100)


def test_fallback_time_is_the_fallback_models_isolated_time(a100: GPUSpec) -> None:
    rng = np.random.default_rng(2)
    model = calibrated_model(a100, records=make_records(a100, training_kernels(rng), rng, 0.0))
    gemm = KernelSpec(name="gemm", kind="gemm", grid=(1000, 1, 1), threads=256,
                      regs_per_thread=128, smem_per_block_B=32768, flops=1e11,
                      dram_bytes=1e9, dtype="tf32", tensor_cores=True)
    assert model.predict_s(gemm) == (
        pytest.approx(isolated_time_s(gemm, a100, RooflineModel())), "fallback")


def test_no_data_for_gpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GpusimError, match=r"no calibration data for GPU 'a100'.*none yet"):
        calibrated_model("a100", directory=str(tmp_path))
    with pytest.raises(GpusimError, match="no calibration data for GPU 'h100'"):
        get_cost_model("calibrated", gpu="h100", directory=str(tmp_path))


def test_model_from_calibration_directory(a100: GPUSpec, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    records = make_records(a100, training_kernels(rng), rng, noise=0.0)
    save_calibration_file(CalibrationSet(_synthetic_provenance("a100"), tuple(records)),
                          tmp_path / "a100-synthetic.json")
    model = get_cost_model("calibrated", gpu="a100", directory=str(tmp_path))
    assert isinstance(model, CalibratedModel)
    assert model.fits[KernelKind.ELEMENTWISE].coefficients[1] == pytest.approx(1 / 0.85)


def _synthetic_provenance(preset: str) -> Provenance:
    return Provenance(gpu_name="synthetic (generated from known coefficients)",
                      gpu_preset=preset, driver="none", cuda="none", libraries={},
                      date="2026-11-26", script="tests/gpu_models/test_cost_calibrated.py",
                      args=(), source="generated")


def test_cli_fit_reports_heldout_error(a100: GPUSpec, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(8)
    path = tmp_path / "synthetic.json"
    save_calibration_file(CalibrationSet(
        _synthetic_provenance("a100"),
        tuple(make_records(a100, training_kernels(rng), rng, noise=0.03))), path)
    assert main(["calibrate", "fit", "--gpu", "a100", "--file", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["gpu"], out["records"], out["fitted_records"]) == ("a100", 80, 80)
    kinds = {k["kind"]: k for k in out["kinds"]}
    assert set(kinds) == {"conv_fwd", "elementwise"}
    assert all(k["heldout_median"] < 0.04 for k in kinds.values())
    assert main(["calibrate", "fit", "--gpu", "a100", "--dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "conv_fwd" in table and "median %" in table


def test_cli_fit_checks_the_files_gpu(a100: GPUSpec, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(8)
    records = tuple(make_records(a100, training_kernels(rng), rng, noise=0.03))
    measured_on_a100 = tmp_path / "a100.json"
    save_calibration_file(CalibrationSet(_synthetic_provenance("a100"), records),
                          measured_on_a100)
    # An A100 file fitted "for" another GPU: refused, naming both.
    assert main(["calibrate", "fit", "--gpu", "v100", "--file", str(measured_on_a100)]) == 2
    err = capsys.readouterr().err
    assert "measured on" in err and "preset a100" in err and "not on v100" in err
    assert "--force" in err
    assert main(["calibrate", "fit", "--gpu", "v100", "--file", str(measured_on_a100),
                 "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpu"] == "v100"
    # One mismatched file among several is enough to refuse.
    other = tmp_path / "h100.json"
    save_calibration_file(CalibrationSet(_synthetic_provenance("h100"), records), other)
    assert main(["calibrate", "fit", "--gpu", "a100", "--file", str(measured_on_a100),
                 "--file", str(other)]) == 2
    assert "not on a100" in capsys.readouterr().err
    # A file that names no preset (an ingest that could not tell): refused, with the fix.
    unnamed = tmp_path / "unnamed.json"
    save_calibration_file(CalibrationSet(_synthetic_provenance(""), records), unnamed)
    assert main(["calibrate", "fit", "--gpu", "a100", "--file", str(unnamed)]) == 2
    assert "(none recorded)" in capsys.readouterr().err
    # A spec file deriving from the preset: host-side changes fit, hardware changes do not.
    host = tmp_path / "host.toml"
    host.write_text('base = "a100"\nconnections = 32\n')
    assert main(["calibrate", "fit", "--gpu", str(host), "--file", str(measured_on_a100),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "fit", "--gpu", str(host), "--dir", str(tmp_path),
                 "--json"]) == 0  # finds the preset's files in the directory
    assert json.loads(capsys.readouterr().out)["records"] == 80
    bigger = tmp_path / "bigger.toml"
    bigger.write_text('base = "a100"\nsm_count = 216\n')
    assert main(["calibrate", "fit", "--gpu", str(bigger), "--file",
                 str(measured_on_a100)]) == 2
    assert "differs from preset a100" in capsys.readouterr().err


def test_cli_fit_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "fit", "--gpu", "h100", "--dir", str(tmp_path)]) == 2
    assert "no calibration data for GPU 'h100'" in capsys.readouterr().err
    assert main(["calibrate", "fit", "--gpu", "a100", "--file",
                 str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = tmp_path / "one.json"
    save_calibration_file(CalibrationSet(_synthetic_provenance("a100"), ()), path)
    assert main(["calibrate", "fit", "--gpu", "a100", "--file", str(path)]) == 2
    assert "no kernel records to fit for a100" in capsys.readouterr().err
    rng = np.random.default_rng(1)
    save_calibration_file(CalibrationSet(_synthetic_provenance("a100"), tuple(
        make_records(load_preset("a100"), training_kernels(rng), rng, 0.0))), path)
    for work, message in (("nomodule", "expects MODULE:FUNC"),
                          ("no_such_module_xyz:f", "No module named"),
                          ("json:no_such_function", "has no attribute")):
        assert main(["calibrate", "fit", "--gpu", "a100", "--file", str(path),
                     "--work", work]) == 2
        assert message in capsys.readouterr().err
