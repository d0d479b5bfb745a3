"""Every file reader and every optional dependency fails with exit 2 naming the file.

Issue 17, "tracebacks where exit 2 and a message are promised": readers of JSON, TOML,
gzip, CSV and Parquet go through ``gpu_models.datafile``; optional packages through
``gpu_models.datafile.import_optional``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gpu_models.datafile import MAX_FILE_BYTES, import_optional, read_csv, read_data_file
from gpu_models.errors import GpusimError
from sim.cli import main

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture

DATA = Path(__file__).resolve().parent.parent / "data"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"


def exits_2_naming(cli: CliRun, needle: str, *argv: str) -> str:
    code, _, err = cli(*argv)
    assert code == 2, err
    assert err.startswith("gpusim: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    return err


def test_byte_corrupted_gzip_trace(tmp_path: Path, cli: CliRun) -> None:
    packed = bytes(gzip.compress((DATA / "tiny_profiler_trace.json").read_bytes()))
    # Byte 10 opens the deflate stream (zlib.error: invalid block type); a byte in the
    # middle breaks the CRC check instead (gzip.BadGzipFile).
    for at in (10, len(packed) // 2):
        damaged = bytearray(packed)
        damaged[at] ^= 0xFF
        trace = tmp_path / "t.json.gz"
        trace.write_bytes(bytes(damaged))
        exits_2_naming(cli, "is a corrupted gzip file", "calibrate", "ingest", str(trace),
                       "--out", str(tmp_path / "c.json"))
        assert not (tmp_path / "c.json").exists()


def test_a_gzip_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpu_models.datafile.MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.json.gz"
    path.write_bytes(gzip.compress(b" " * 5000 + b"{}"))
    with pytest.raises(GpusimError, match="decompresses to more than"):
        read_data_file(path, "trace file")
    assert MAX_FILE_BYTES == 1 << 30


def test_program_with_a_5000_digit_integer_or_deep_nesting(
        tmp_path: Path, cli: CliRun) -> None:
    program = json.loads((EXAMPLES / "two_streams.json").read_text())
    text = json.dumps(program).replace('"grid": 528', '"grid": ' + "7" * 5000, 1)
    path = tmp_path / "p.json"
    path.write_text(text)
    exits_2_naming(cli, "program file", "run", str(path))
    path.write_text('{"gpu": "h100", "streams": ' + "[" * 100_000 + "]" * 100_000 + "}")
    exits_2_naming(cli, "nests lists or objects too deeply", "run", str(path))


def test_spec_file_errors_name_the_file_and_the_field_the_user_set(
        tmp_path: Path, cli: CliRun) -> None:
    spec = tmp_path / "mine.toml"
    spec.write_text('base = "h100"\nsmem_per_sm_B = 1\n')
    err = exits_2_naming(cli, "GPU spec file", "occupancy", "--gpu", str(spec),
                         "--threads", "64", "--regs", "32")
    assert str(spec) in err and "smem_per_sm_B = 1 is invalid" in err
    # The derived field is explained, not blamed with a value the user never wrote.
    assert "max_smem_per_block_B follows it" in err
    err = exits_2_naming(cli, "smem_per_sm_B = 1 is invalid", "occupancy", "--set",
                         "smem_per_sm_B=1", "--threads", "64", "--regs", "32")
    spec.write_text('base = "h100"\nsm_count = "many"\n')
    exits_2_naming(cli, str(spec), "occupancy", "--gpu", str(spec), "--threads", "64",
                   "--regs", "32")


def test_garbage_parquet_to_plot_sweep_and_resume(tmp_path: Path,
                                                  cli: CliRun) -> None:
    pytest.importorskip("pyarrow")
    garbage = tmp_path / "r.parquet"
    garbage.write_bytes(b"PAR1 this is not a parquet file")
    exits_2_naming(cli, "not a readable Parquet file", "plot-sweep", str(garbage),
                   "--x", "sm_count", "--y", "connections")
    exits_2_naming(cli, "not a readable Parquet file", "sweep", "--workload",
                   "resnet50", "--evaluator", "occupancy", "--executor", "serial", "--out",
                   str(garbage), "--resume")
    assert garbage.read_bytes() == b"PAR1 this is not a parquet file"


def test_damaged_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("key,gpu\n" + '"' + "x" * 200_000 + '",b\n')  # over csv's field limit
    with pytest.raises(GpusimError, match=r"results file .*line 2"):
        read_csv(path, "results file")


def test_plot_sweep_output_must_be_an_image_format(
        tmp_path: Path, cli: CliRun, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r.csv"
    assert main(["sweep", "--workload", "resnet50", "--set", "sm_count=66,132", "--set",
                 "connections=8,32", "--evaluator", "occupancy", "--executor", "serial",
                 "--out", str(results)]) == 0
    capsys.readouterr()
    for name in ("x.xyz", "noformat"):
        exits_2_naming(cli, "give a name ending in one of", "plot-sweep", str(results),
                       "--x", "sm_count", "--y", "connections", "--metric",
                       "conv_128x64.occupancy", "--out", str(tmp_path / name))
        assert not (tmp_path / name).exists()
        assert not (tmp_path / f"{name}.png").exists()


def test_calibrate_layers_without_torch_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cli: CliRun) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    out = tmp_path / "campaign"
    exits_2_naming(cli, "pip install 'gpusim[torch]'", "calibrate", "layers", "--out",
                   str(out), "--device", "cpu", "--quick")
    assert not out.exists()


def test_import_optional_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(GpusimError, match=r"reading X needs the optional package pyarrow.*"
                                          r"gpusim\[parquet\]"):
        import_optional("pyarrow", needed_for="reading X", extra="parquet")


def test_calibrate_fit_with_a_work_function_that_is_not_one(
        tmp_path: Path, cli: CliRun, capsys: pytest.CaptureFixture[str]) -> None:
    calibration = tmp_path / "c.json"
    assert main(["calibrate", "ingest", str(DATA / "tiny_profiler_trace.json"), "--out",
                 str(calibration), "--gpu-name", "a100"]) == 0
    capsys.readouterr()
    base = ["calibrate", "fit", "--gpu", "a100", "--file", str(calibration), "--work"]
    exits_2_naming(cli, "--work 'os:sep' is not a function", *base, "os:sep")
    exits_2_naming(cli, "TypeError", *base, "os:getpid")
    exits_2_naming(cli, "has no attribute", *base, "os:nothing_here")


def test_corrupted_campaign_archive(tmp_path: Path, cli: CliRun) -> None:
    folder = tmp_path / "campaign"
    folder.mkdir()
    (folder / "netbench_runs.json").write_text(json.dumps({
        "format": "gpusim-netbench", "version": 1, "runs": [],
        "provenance": {"gpu_name": "NVIDIA A100", "gpu_preset": "a100"}}))
    (folder / "calibration.tar.gz").write_bytes(b"\x1f\x8b not really")
    code, _, err = cli("calibrate", "import-layers", str(folder))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
