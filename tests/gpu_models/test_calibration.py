"""Calibration data files: format, validation on load, directory lookup, lowering's lookup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpu_models.calibration import (
    CalibrationRecord,
    CalibrationSet,
    LayerSignature,
    Provenance,
    calibration_dir,
    list_calibration_files,
    load_calibration_file,
    load_gpu_calibration,
    save_calibration_file,
)
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind

CONV_SIG = LayerSignature(op="aten::conv2d", shapes=((32, 64, 56, 56), (64, 64, 3, 3)),
                          dtype="fp32", batch=32,
                          attrs={"stride": "[1, 1]", "padding": "[1, 1]", "groups": "1"})


def provenance(preset: str = "a100") -> Provenance:
    return Provenance(gpu_name="test GPU (records written by hand for this test)",
                      gpu_preset=preset, driver="unknown", cuda="unknown",
                      libraries={"torch": "unknown"}, date="2026-11-26",
                      script="tests/gpu_models/test_calibration.py", args=("--x",))


def record(**changes: Any) -> CalibrationRecord:
    fields: dict[str, Any] = dict(
        library_name="sm80_xmma_fprop_implicit_gemm_tilesize128x128x16", kind="conv_fwd",
        grid=(4, 196, 1), block=(128, 1, 1), regs_per_thread=252, smem_per_block_B=67584,
        duration_s=5e-5, layer_name="block1.conv", signature=CONV_SIG, stream=7, step=3,
        phase="forward", batch=32, dtype="tf32", tensor_cores=True)
    fields.update(changes)
    return CalibrationRecord(**fields)


def test_roundtrip(tmp_path: Path) -> None:
    calib = CalibrationSet(provenance(), (record(), record(step=4, duration_s=6e-5),
                                         record(library_name="relu", kind="elementwise",
                                                signature=None, grid=(3136,),
                                                regs_per_thread=16, smem_per_block_B=0)))
    path = tmp_path / "a100.json"
    save_calibration_file(calib, path)
    loaded = load_calibration_file(path)
    assert loaded == calib
    assert loaded.path == str(path)
    assert loaded.records[2].grid == (3136, 1, 1)
    assert loaded.records[0].kind is KernelKind.CONV_FWD
    assert loaded.records[0].signature == CONV_SIG
    assert json.loads(path.read_text())["format"] == "gpusim-calibration"


def test_lookup_for_lowering() -> None:
    dgrad = record(library_name="sm80_xmma_dgrad", kind="conv_dgrad", phase="backward")
    calib = CalibrationSet(provenance(), (
        record(), dgrad, record(step=4), record(signature=None, layer_name="other")))
    launched = calib.launched(CONV_SIG)
    assert [r.library_name for r in launched] == [
        "sm80_xmma_fprop_implicit_gemm_tilesize128x128x16", "sm80_xmma_dgrad"]
    assert (launched[0].grid, launched[0].threads, launched[0].regs_per_thread,
            launched[0].smem_per_block_B, launched[0].duration_s) == (
        (4, 196, 1), 128, 252, 67584, 5e-5)
    assert calib.launched(LayerSignature(op="aten::conv2d")) == ()
    assert len(calib.for_layer("block1.conv")) == 3
    # Attribute order does not matter: signatures compare by content.
    assert LayerSignature(op="aten::conv2d", shapes=CONV_SIG.shapes, dtype="fp32", batch=32,
                          attrs={"groups": "1", "padding": "[1, 1]",
                                 "stride": "[1, 1]"}) == CONV_SIG


def _write(tmp_path: Path, data: Any, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _valid() -> dict[str, Any]:
    return CalibrationSet(provenance(), (record(), record(step=4))).to_dict()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["provenance"].pop("driver"), "provenance lacks driver"),
    (lambda d: d.pop("provenance"), "provenance must be an object"),
    (lambda d: d["provenance"].update(date=""), "provenance date must be a non-empty"),
    (lambda d: d.update(format="other"), "expected format 'gpusim-calibration'"),
    (lambda d: d.update(records={}), "'records' must be a list"),
    (lambda d: d["records"][1].update(duration_s=-1.0), r"record 1: .*duration_s must be"),
    (lambda d: d["records"][0].update(grid=[0, 1, 1]), r"record 0: .*grid must be"),
    (lambda d: d["records"][1].update(grid="4x4"), r"record 1: grid must be a list"),
    (lambda d: d["records"][1].pop("kind"), r"record 1: missing key\(s\) kind"),
    (lambda d: d["records"][0].update(kind="winograd"), r"record 0: .*unknown kind"),
    (lambda d: d["records"][0].update(colour="red"), r"record 0: unknown key\(s\) colour"),
    (lambda d: d["records"][0].update(regs_per_thread=1.5), "regs_per_thread must be"),
    (lambda d: d["records"][0].update(flops=-3), "flops must be null or"),
    (lambda d: d["records"][0].update(phase="sideways"), "phase must be"),
    (lambda d: d["records"][0]["signature"].pop("op"), r"record 0: layer signature: missing"),
    (lambda d: d["records"].append(7), "record 2: record must be an object"),
])
def test_validation_names_file_and_record(tmp_path: Path, mutate: Any, message: str) -> None:
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(GpusimError, match=message) as info:
        load_calibration_file(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(GpusimError, match="does not exist"):
        load_calibration_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GpusimError, match="not valid JSON"):
        load_calibration_file(bad)
    with pytest.raises(GpusimError, match="must hold a JSON object"):
        load_calibration_file(_write(tmp_path, [1, 2]))


def test_directory_lookup(tmp_path: Path) -> None:
    assert list_calibration_files(tmp_path) == ()
    assert list_calibration_files(tmp_path / "missing") == ()
    with pytest.raises(GpusimError, match=r"no calibration data for GPU 'a100'.*none yet"):
        load_gpu_calibration("a100", tmp_path)
    save_calibration_file(CalibrationSet(provenance("a100"), (record(),)), tmp_path / "x.json")
    save_calibration_file(CalibrationSet(provenance("h100"), (record(),)), tmp_path / "y.json")
    assert [s.provenance.gpu_preset for s in load_gpu_calibration("h100", tmp_path)] == ["h100"]
    with pytest.raises(GpusimError, match="GPUs with data: a100, h100"):
        load_gpu_calibration("v100", tmp_path)


def test_package_directory_loads() -> None:
    """Whatever the package ships (nothing yet) must load cleanly."""
    assert calibration_dir().is_dir()
    for path in list_calibration_files():
        load_calibration_file(path)


def test_record_to_kernel_spec() -> None:
    with pytest.raises(GpusimError, match="no flops/dram_bytes"):
        record().to_kernel_spec()
    k = record().to_kernel_spec(flops=1e9, dram_bytes=1e6)
    assert (k.grid, k.threads, k.measured_time_s, k.dtype, k.layer) == (
        (4, 196, 1), 128, 5e-5, "tf32", "block1.conv")
