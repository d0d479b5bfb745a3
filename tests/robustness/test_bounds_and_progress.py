"""Nothing hangs or exhausts memory: bounded fields, progress for long runs, short tables.

Issue 17, "hangs or silent waits": every numeric input that sizes the simulator's state has
a documented upper bound and is rejected at once above it; a run that takes more than two
seconds shows progress on a terminal; a huge table is summarised.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gpu_models.errors import GpusimError
from gpu_models.presets import load_preset
from gpu_models.spec import UPPER_BOUNDS
from sim.analysis.limits import limits_for_workload
from sim.cli import main
from sim.cli.common import MAX_TABLE_ROWS, format_table
from sim.engine.engine import simulate
from sim.engine.program import MAX_PROGRAM_KERNELS, Launch, Program, StreamDef
from sim.report.reproduce import PROGRESS_FORMAT

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture


@pytest.mark.parametrize("value", ["1e7", "1000000"])
def test_huge_sm_count_is_refused_at_once(cli: CliRun,
                                          value: str) -> None:
    started = time.perf_counter()
    code, _, err = cli("simulate", "--workload", "resnet50", "--set",
                       f"sm_count={value}")
    assert code == 2 and "sm_count must be <= 4,096" in err
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("field", sorted(UPPER_BOUNDS))
def test_every_bounded_field_is_refused_above_its_bound(field: str) -> None:
    bound, today = UPPER_BOUNDS[field]
    assert bound > today  # far above any real GPU
    with pytest.raises(GpusimError, match=field):
        load_preset("h100").replace(**{field: bound + 1})


def test_the_bounds_leave_room_for_large_hypothetical_gpus() -> None:
    big = load_preset("h100").replace(sm_count=UPPER_BOUNDS["sm_count"][0], connections=32)
    assert big.sm_count == 4096


def test_program_kernel_count_is_bounded() -> None:
    kernel = {"name": "k", "stream": "s", "grid": 1, "threads": 32, "regs": 16,
              "block_time_us": 1.0}
    data = {"gpu": "h100", "streams": [{"name": "s"}],
            "kernels": [kernel] * (MAX_PROGRAM_KERNELS + 1)}
    with pytest.raises(GpusimError, match=f"at most {MAX_PROGRAM_KERNELS:,}"):
        Program.from_dict(data)


@pytest.mark.parametrize("argv", [
    ["graph", "--workload", "randwire", "--option", "nodes=1000"],
    ["graph", "--workload", "pathnet", "--option", "layers=1000"],
    ["graph", "--workload", "pathnet", "--option", "modules=500", "--option", "active=2"],
    ["limits", "--workload", "resnet50", "--batch", "10000000"],
    ["graph", "--workload", "resnet50", "--resolution", "100000"],
])
def test_workload_sizes_are_bounded(cli: CliRun,
                                    argv: list[str]) -> None:
    started = time.perf_counter()
    code, _, err = cli(*argv)
    assert code == 2 and "gpusim's bound" in err and err.count("\n") == 1
    assert time.perf_counter() - started < 10


def _program(kernels: int, grid: int = 264) -> Program:
    gpu = load_preset("h100")
    return Program(gpu, (StreamDef("s"),), tuple(
        Launch(f"k{i}", "s", grid, 256, 32, 0, 5e-6) for i in range(kernels)))


def test_the_engine_reports_progress_up_to_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sim.engine.engine.PROGRESS_EVERY_EVENTS", 64)
    calls: list[tuple[int, int]] = []
    program = _program(40, grid=20_000)
    result = simulate(program, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 2
    assert all(total == 40 * 20_000 for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1][0] == 40 * 20_000 == result.counters.blocks
    # The callback does not change the run.
    assert simulate(program).makespan_s == result.makespan_s


def test_limits_reports_each_policy_as_it_starts() -> None:
    calls: list[tuple[str, int, int]] = []
    limits_for_workload("alexnet", policies=("branches", "min-streams"),
                        progress=lambda name, done, total: calls.append((name, done, total)))
    assert calls == [("serial", 0, 3), ("branches", 1, 3), ("min-streams", 2, 3), ("", 3, 3)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("argv", [
    ["run", "PROGRAM"],
    ["limits", "--workload", "alexnet", "--policies", "branches"],
    ["simulate", "--workload", "alexnet"],
])
def test_long_runs_show_a_progress_bar_on_a_terminal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    program = tmp_path / "p.json"
    program.write_text(json.dumps({"gpu": "h100", "streams": [{"name": "s"}], "kernels": [
        {"name": f"k{i}", "stream": "s", "grid": 5000, "threads": 256, "regs": 32,
         "block_time_us": 2.0} for i in range(20)]}))
    terminal = _Terminal()
    monkeypatch.setattr("sim.cli.common.PROGRESS_DELAY_S", 0.0)  # every run counts as long
    monkeypatch.setattr("sys.stderr", terminal)
    assert main([str(program) if a == "PROGRAM" else a for a in argv]) == 0
    shown = terminal.getvalue()
    assert ("blocks" in shown) or ("policies" in shown), shown


def test_without_a_terminal_there_is_no_bar(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--workload", "alexnet"]) == 0
    assert capsys.readouterr().err == ""


def test_a_huge_run_table_is_summarised(tmp_path: Path,
                                        cli: CliRun) -> None:
    kernels: list[dict[str, Any]] = [
        {"name": f"k{i}", "stream": "s", "grid": 1, "threads": 32, "regs": 16,
         "block_time_us": 1.0} for i in range(1000)]
    program = tmp_path / "p.json"
    program.write_text(json.dumps({"gpu": "h100", "streams": [{"name": "s"}],
                                   "kernels": kernels}))
    code, out, _ = cli("run", str(program))
    assert code == 0
    assert len(out.splitlines()) <= MAX_TABLE_ROWS + 5
    assert "... 950 more rows (use --json for all) ..." in out
    assert "k0 " in out and "k999 " in out
    code, out, _ = cli("run", str(program), "--json")
    assert len(json.loads(out)["kernels"]) == 1000


def test_the_reproduce_progress_bar_shows_no_eta() -> None:
    # The ETA climbed from 0:20 to 3:12: steps' units take very different times.
    assert "remaining" not in PROGRESS_FORMAT and "elapsed" in PROGRESS_FORMAT


@pytest.mark.parametrize("total", [0, 1, 59, 60, 61, 62, 1000])
def test_a_table_keeps_only_the_rows_it_shows(total: int) -> None:
    # Rows read once from a generator: up to 60 all shown; beyond, the first 40, a line
    # naming how many are left out, and the last 10 (61 rows: rows 40-50 left out).
    text = format_table(((i,) for i in range(total)), ("row",))
    body = [line.strip() for line in text.splitlines()[2:]]
    if total <= MAX_TABLE_ROWS:
        assert body == [str(i) for i in range(total)]
    else:
        assert body == ([str(i) for i in range(40)]
                        + [f"... {total - 50:,} more rows (use --json for all) ..."]
                        + [str(i) for i in range(total - 10, total)])
    assert format_table(((i,) for i in range(total)), ("row",), max_rows=None).count("\n") \
        == total + 1
