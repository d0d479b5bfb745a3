"""``gpusim reproduce``: every artifact is written, summarised and readable."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec
from sim.cli import main
from sim.engine.engine import simulate
from sim.measure.validate import CaseComparison, ValidationReport
from sim.report.reproduce import (
    PAPER_NETWORKS,
    leftover_programs,
    limits_points,
    limits_record,
    make_plan,
    markdown_table,
    module_graph,
    sweep_points,
    validation_points,
    wave_durations,
)
from workloads.registry import build

#: Figures and tables the quick run must produce on a machine without device data.
QUICK_FIGURES = {"parallelism_profile", "occupancy", "waves", "leftover_timeline",
                 "leftover_blocks", "module_timeline", "limits", "speedup_vs_batch",
                 "network_timeline", "network_utilization", "sweep_heatmap"}
QUICK_TABLES = {"structure", "limits", "policies", "sweep"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One ``gpusim reproduce --quick --json`` run shared by the tests of this module."""
    out = tmp_path_factory.mktemp("reproduce")
    capture = tmp_path_factory.mktemp("stdout") / "summary.json"
    with capture.open("w") as fh, contextlib.redirect_stdout(fh):
        code = main(["reproduce", "--quick", "--out", str(out), "--json", "--no-progress"])
    assert code == 0
    return out, json.loads(capture.read_text())


@pytest.mark.slow
def test_quick_run_writes_every_artifact(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = quick_run
    figures = {a["name"] for a in summary["artifacts"] if a["kind"] == "figure"}
    tables = {a["name"] for a in summary["artifacts"] if a["kind"] == "table"}
    assert figures >= QUICK_FIGURES
    assert tables >= QUICK_TABLES
    traces = [a for a in summary["artifacts"] if a["kind"] == "trace"]
    assert len(traces) == 4  # module and network, serial and concurrent
    for trace in traces:
        events = json.loads((out / trace["files"][0]).read_text())["traceEvents"]
        assert any(e["ph"] == "X" for e in events)
    for artifact in summary["artifacts"]:
        assert artifact["description"]
        for rel in artifact["files"]:
            assert (out / rel).stat().st_size > 0, rel
    for name in figures:
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.slow
def test_summary_file_matches_stdout(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = quick_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["plan"]["quick"] is True and summary["plan"]["gpu_name"] == "h100"
    assert set(summary["step_wall_s"]) and summary["wall_s"] >= sum(
        summary["step_wall_s"].values()) * 0.99


@pytest.mark.slow
def test_skips_are_explained(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = quick_run
    made = {a["name"] for a in summary["artifacts"]}
    for item in summary["skipped"]:
        assert item["name"] not in made and len(item["reason"]) > 20


@pytest.mark.slow
def test_structure_table_csv_and_markdown(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = quick_run
    with (out / "tables" / "structure.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["workload"] for r in rows] == list(make_plan(quick=True).networks)
    googlenet = rows[0]
    assert int(googlenet["max_conv_antichain"]) > int(googlenet["fwd_max_convs_per_level"])
    md = (out / "tables" / "structure.md").read_text()
    assert md.count("\n| googlenet |") == 1


@pytest.mark.slow
def test_limits_tables_are_consistent(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = quick_run
    plan = make_plan(quick=True)
    with (out / "tables" / "limits.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["workload"], int(r["batch"])) for r in rows] == [
        (n, b) for n in plan.networks for b in plan.batches]
    for r in rows:
        assert float(r["best_us"]) <= float(r["serial_us"])
        assert float(r["lower_bound_us"]) == pytest.approx(
            max(float(r["critical_path_us"]), float(r["work_bound_us"])), rel=1e-5)
    with (out / "tables" / "policies.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:3] == ["workload", "batch", "serial_us"]
    assert {f"{p}_us" for p in plan.policies} <= set(header)
    assert set(summary["headline"]["limits"]) == {f"{n}@{b}" for n in plan.networks
                                                  for b in plan.batches}


def test_plans() -> None:
    full, quick = make_plan(), make_plan(quick=True)
    assert full.networks == PAPER_NETWORKS and full.gpu.name == "h100"
    assert set(quick.networks) < set(full.networks)
    assert set(quick.batches) <= set(full.batches)


def test_plan_overrides_reach_every_point() -> None:
    plan = make_plan(overrides=["sm_count=66", "launch_overhead_s=1e-6"], quick=True)
    assert plan.gpu.sm_count == 66
    for point in limits_points(plan):
        assert dict(point.overrides) == {"sm_count": "66", "launch_overhead_s": "1e-6"}
    sweep = sweep_points(plan)
    # The swept fields replace the plan's own value of them; the others are kept.
    assert {dict(p.overrides)["sm_count"] for p in sweep} == {"66", "132"}
    assert all(dict(p.overrides)["launch_overhead_s"] == "1e-6" for p in sweep)


def test_limits_record_rebuilds_the_policy_map() -> None:
    row = {"workload": "w", "makespan_us.serial": 2.0, "makespan_us.min-streams": 1.0,
           "best_policy": "min-streams"}
    assert limits_record(row) == {"workload": "w", "best_policy": "min-streams",
                                  "policies": {"serial": 2.0, "min-streams": 1.0}}


def test_module_graph_keeps_the_framework_order() -> None:
    full = build("googlenet", batch=2)
    sub = module_graph("googlenet", "inception3a", batch=2)
    assert list(sub) == [n for n in full if n.startswith("inception3a.")]
    assert sub.number_of_edges() > 0 and sub.graph["name"] == "googlenet.inception3a"
    with pytest.raises(GpusimError, match="no module 'nope'"):
        module_graph("googlenet", "nope", batch=2)


def test_wave_durations_follow_the_staircase(h100: GPUSpec) -> None:
    # 256 threads x 64 registers: 4 blocks per SM, 528 per wave.
    durations = wave_durations(h100, [1, 528, 529, 1056, 1057], threads=256, regs_per_thread=64,
                               smem_per_block_B=32 * 1024, block_time_s=1e-5)
    assert durations == pytest.approx([1e-5, 1e-5, 2e-5, 2e-5, 3e-5])


def test_leftover_programs_overlap_only_the_tail(h100: GPUSpec) -> None:
    results = {k: simulate(p) for k, p in leftover_programs(h100).items()}
    assert results["serial"].makespan_s == pytest.approx(60e-6)
    assert results["concurrent"].makespan_s == pytest.approx(40e-6)
    b = results["concurrent"].kernel("b")
    assert b.start_s == pytest.approx(20e-6)  # not before a's first wave ends


def test_validation_points_without_data() -> None:
    assert validation_points([]) == ([], [], [])


def test_validation_points_label_calibration_cases() -> None:
    cases = (
        CaseComparison("waves", "w1", 1e-4, 1.1e-4, 1e-6, ()),
        CaseComparison("bandwidth", "alone_full", 2e-4, 2e-4, 1e-6, (), calibration=True),
    )
    report = ValidationReport(gpu="h100", data_dir="made-up-by-this-test", files={},
                              missing=(), cases=cases)
    measured, simulated, groups = validation_points([report])
    assert measured == [1e-4, 2e-4] and simulated == [1.1e-4, 2e-4]
    assert groups == ["h100 waves", "h100 bandwidth (calibration)"]


def test_markdown_table() -> None:
    text = markdown_table([{"a": 1, "b": 1234.5}, {"a": 2, "b": 0.01234}, {"a": 3, "b": 1.0},
                           {"a": "x", "b": 25.61}], "Caption.")
    assert text.splitlines() == ["Caption.", "", "| a | b |", "|---|---|", "| 1 | 1,234 |",
                                 "| 2 | 0.0123 |", "| 3 | 1.00 |", "| x | 25.6 |"]


def test_cli_table_lists_artifacts_and_skips(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    canned = {"artifacts": [{"kind": "figure", "name": "waves",
                             "files": ["figures/waves.png", "figures/waves.pdf"],
                             "description": "d"}],
              "skipped": [{"name": "measured_vs_simulated", "reason": "no data committed"}],
              "wall_s": 1.5}
    calls = []

    def fake(out: str, **kwargs: Any) -> dict[str, Any]:
        calls.append((out, kwargs))
        return canned

    monkeypatch.setattr("sim.report.reproduce.reproduce", fake)
    assert main(["reproduce", "--out", "somewhere", "--gpu", "a100", "--set", "sm_count=64",
                 "--no-progress", "--sm-sharing", "off"]) == 0
    assert calls == [("somewhere", {"gpu": "a100", "overrides": ["sm_count=64"],
                                    "quick": False, "progress": False, "networks": None,
                                    "sm_sharing": False})]
    out = capsys.readouterr().out
    assert "figures/waves.png, figures/waves.pdf" in out
    assert "skipped measured_vs_simulated: no data committed" in out
    assert "wrote 1 artifacts and summary.json to somewhere in 1.5 s" in out


def test_bad_gpu_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--gpu", "h101", "--out", str(tmp_path), "--quick"]) == 2
    assert "unknown GPU 'h101'" in capsys.readouterr().err
