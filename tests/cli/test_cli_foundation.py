"""CLI behaviour of the foundation commands: gpus, occupancy, help, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sim.cli import main

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture


def test_gpus_json_lists_presets_keyed_by_field_names(cli: CliRun) -> None:
    code, out, _ = cli("gpus", "--json")
    assert code == 0
    data = json.loads(out)
    names = {d["name"] for d in data}
    assert {"v100", "a100", "h100", "h100-pcie", "h200", "titan-xp"} <= names
    h100 = next(d for d in data if d["name"] == "h100")
    assert h100["sm_count"] == 132 and h100["dram_bw_Bps"] == 3.35e12


def test_gpus_table(cli: CliRun) -> None:
    code, out, _ = cli("gpus")
    assert code == 0 and "h100-pcie" in out and "SMs" in out


def test_occupancy_json(cli: CliRun) -> None:
    code, out, _ = cli("occupancy", "--gpu", "h100", "--threads", "64", "--regs", "200",
                       "--smem", "0", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["blocks_per_sm"] == 4 and data["limiter"] == "registers"


def test_occupancy_with_override(cli: CliRun) -> None:
    code, out, _ = cli("occupancy", "--gpu", "h100", "--set", "max_blocks_per_sm=4",
                       "--threads", "32", "--regs", "16", "--json")
    assert code == 0 and json.loads(out)["blocks_per_sm"] == 4


def test_occupancy_impossible_launch_table(cli: CliRun) -> None:
    code, out, _ = cli("occupancy", "--threads", "2048", "--regs", "32")
    assert code == 0 and "cannot launch" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["occupancy", "--gpu", "h101", "--threads", "64", "--regs", "2"], "unknown GPU 'h101'"),
        (["occupancy", "--set", "sm_count=-3", "--threads", "64", "--regs", "2"], "sm_count"),
        (["occupancy", "--set", "bogus=1", "--threads", "64", "--regs", "2"], "bogus"),
        (["occupancy", "--threads", "0", "--regs", "2"], "threads"),
        (["occupancy", "--gpu", "/no/such.toml", "--threads", "64", "--regs", "2"],
         "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    cli: CliRun, argv: list[str], needle: str
) -> None:
    code, _, err = cli(*argv)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("gpusim: error:")


def test_console_script_help_lists_commands() -> None:
    # The `gpusim` entry point installed beside this interpreter (pip install -e .).
    script = Path(sys.executable).with_name("gpusim")
    if not script.exists():
        pytest.skip("the gpusim console script is not installed in this environment")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    for command in ("gpus", "occupancy", "run", "simulate", "limits", "reproduce", "sweep",
                    "validate", "calibrate", "workloads", "graph", "op"):
        assert command in proc.stdout


def test_python_dash_m_sim_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "sim", "gpus", "--json"], capture_output=True,
                          text=True, check=True)
    assert json.loads(proc.stdout)


def test_argparse_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["occupancy", "--threads", "many", "--regs", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpusim: error:") and err.count("\n") == 1
