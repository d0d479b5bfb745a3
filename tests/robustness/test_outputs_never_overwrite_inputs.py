"""No command overwrites a file the user gave it (issue 17, "data of the user's destroyed").

Every command declares its input and output files (``sim.cli.files.declare_files``) and
one check refuses an output that is an input, by any name; ``sweep --resume`` refuses a
file that is not its own results; ``reproduce`` writes only into a new, empty or own folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sim.cli import main

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture

DATA = Path(__file__).resolve().parent.parent / "data"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"


def one_error_line(err: str) -> bool:
    return err.startswith("gpusim: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "symlink"])
def test_calibrate_ingest_refuses_to_write_over_its_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: CliRun,
        spelling: str) -> None:
    trace = tmp_path / "t.json"
    shutil.copy(DATA / "tiny_profiler_trace.json", trace)
    before = trace.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same": "t.json", "dot-slash": "./t.json", "symlink": "link.json"}[spelling]
    if spelling == "symlink":
        (tmp_path / "link.json").symlink_to(trace)
    code, _, err = cli("calibrate", "ingest", "t.json", "--out", out)
    assert code == 2 and one_error_line(err)
    assert "input file" in err and "would destroy it" in err
    assert trace.read_bytes() == before


def test_run_and_plot_sweep_refuse_an_output_that_is_their_input(
        tmp_path: Path, cli: CliRun, capsys: pytest.CaptureFixture[str]) -> None:
    program = tmp_path / "p.json"
    shutil.copy(EXAMPLES / "two_streams.json", program)
    before = program.read_bytes()
    code, _, err = cli("run", str(program), "--trace", str(program))
    assert code == 2 and "would destroy it" in err and program.read_bytes() == before
    results = tmp_path / "r.csv"
    assert main(["sweep", "--workload", "resnet50", "--set", "sm_count=66,132", "--set",
                 "connections=8,32", "--evaluator", "occupancy", "--executor", "serial",
                 "--out", str(results)]) == 0
    capsys.readouterr()
    before = results.read_bytes()
    code, _, err = cli("plot-sweep", str(results), "--x", "sm_count", "--y",
                       "connections", "--metric", "conv_128x64.occupancy", "--out",
                       str(results))
    assert code == 2 and "would destroy it" in err and results.read_bytes() == before


def test_sweep_refuses_to_write_over_its_sweep_file(tmp_path: Path,
                                                     cli: CliRun) -> None:
    spec = tmp_path / "s.csv"  # a sweep file under a results-file name
    spec.write_text('[sweep]\nworkload = "resnet50"\n')
    before = spec.read_bytes()
    code, _, err = cli("sweep", str(spec), "--evaluator", "occupancy", "--out",
                       str(spec), "--overwrite")
    assert code == 2 and "would destroy it" in err and spec.read_bytes() == before


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_resume_refuses_a_file_that_is_not_sweep_results(
        tmp_path: Path, cli: CliRun, suffix: str) -> None:
    people = tmp_path / f"people{suffix}"
    if suffix == ".csv":
        people.write_text("name,age\nann,3\nbob,4")  # no final newline: must not be cut
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"name": ["ann", "bob"], "age": [3, 4]}), people)
    before = people.read_bytes()
    code, _, err = cli("sweep", "--workload", "resnet50", "--evaluator", "occupancy",
                       "--executor", "serial", "--out", str(people), "--resume")
    assert code == 2 and one_error_line(err)
    assert "not a gpusim sweep results file" in err and "left unchanged" in err
    assert people.read_bytes() == before
    assert not people.with_name(people.name + ".parts").exists()


def test_resume_checks_the_key_column_too(tmp_path: Path,
                                          cli: CliRun, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.csv"
    assert main(["sweep", "--workload", "resnet50", "--evaluator", "occupancy",
                 "--executor", "serial", "--out", str(out)]) == 0
    capsys.readouterr()
    lines = out.read_text().splitlines()
    lines[1] = "not-a-key" + lines[1][lines[1].index(","):]  # the right header, a wrong key
    out.write_text("\n".join(lines) + "\n")
    before = out.read_bytes()
    code, _, err = cli("sweep", "--workload", "resnet50", "--batch", "1,2",
                       "--evaluator", "occupancy", "--executor", "serial", "--out", str(out),
                       "--resume")
    assert code == 2 and "key 'not-a-key' is not a sweep point key" in err
    assert out.read_bytes() == before


def test_resume_still_continues_its_own_results(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.csv"
    base = ["sweep", "--workload", "resnet50", "--evaluator", "occupancy", "--executor",
            "serial", "--out", str(out)]
    assert main([*base, "--batch", "1"]) == 0
    assert main([*base, "--batch", "1,2", "--resume"]) == 0
    assert "1 already in" in capsys.readouterr().out


def test_reproduce_writes_only_into_a_new_empty_or_own_folder(
        tmp_path: Path, cli: CliRun) -> None:
    existing_file = tmp_path / "notes.txt"
    existing_file.write_text("mine")
    code, _, err = cli("reproduce", "--quick", "--out", str(existing_file))
    assert code == 2 and one_error_line(err) and "is not a folder" in err
    assert existing_file.read_text() == "mine"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "summary.json").write_text("{}")
    (folder / "thesis.tex").write_text("mine")
    code, _, err = cli("reproduce", "--quick", "--out", str(folder))
    assert code == 2 and "thesis.tex" in err and "new or empty folder" in err
    assert (folder / "summary.json").read_text() == "{}"


@pytest.mark.parametrize("argv", [
    ["reproduce", "--quick", "--out", ""],
    ["calibrate", "ingest", str(DATA / "tiny_profiler_trace.json"), "--out", ""],
    ["run", str(EXAMPLES / "two_streams.json"), "--trace", ""],
])
def test_empty_output_names_are_refused(cli: CliRun,
                                        argv: list[str]) -> None:
    code, _, err = cli(*argv)
    assert code == 2 and one_error_line(err) and "is empty" in err


def test_output_folders_and_missing_parents(tmp_path: Path, cli: CliRun,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("sweep", "--workload", "resnet50", "--out",
                       str(tmp_path / "no" / "d" / "r.csv"))
    assert code == 2 and one_error_line(err)
    assert f"cannot write {tmp_path / 'no' / 'd' / 'r.csv'} (--out): folder" in err
    assert ".tmp" not in err and err.rstrip().endswith("does not exist")
    results = tmp_path / "r.csv"
    assert main(["sweep", "--workload", "resnet50", "--set", "sm_count=66,132", "--set",
                 "connections=8,32", "--evaluator", "occupancy", "--executor", "serial",
                 "--out", str(results)]) == 0
    capsys.readouterr()
    code, _, err = cli("plot-sweep", str(results), "--x", "sm_count", "--y",
                       "connections", "--metric", "conv_128x64.occupancy", "--out",
                       str(tmp_path))
    assert code == 2 and "is a folder" in err
    assert not tmp_path.with_suffix(".png").exists()
