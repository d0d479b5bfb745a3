"""``gpusim sweep`` and ``gpusim plot-sweep`` from the command line, and the heatmap figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from matplotlib.figure import Figure

from gpu_models.errors import GpusimError
from sim.analysis.sweep import read_results
from sim.report.plots_sweep import display_unit, pivot_sweep, sweep_heatmap

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture

GRID = ["--gpu", "h100", "--set", "sm_count=66,132,264", "--set", "smem_per_sm_B=65536,233472",
        "--workload", "resnet50", "--batch", "1,32", "--evaluator", "occupancy"]


def test_sweep_writes_results_and_resumes(cli: CliRun,
                                          tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    code, stdout, _ = cli("sweep", *GRID, "--executor", "serial", "--out", str(out),
                          "--max-points", "5", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert (summary["points"], summary["evaluated"], summary["remaining"]) == (12, 5, 7)
    code, stdout, _ = cli("sweep", *GRID, "--executor", "serial", "--out", str(out),
                          "--resume", "--quiet")
    assert code == 0 and "7 evaluated" in stdout and "5 already in" in stdout
    rows = read_results(out)
    assert len(rows) == 12 and {r["batch"] for r in rows} == {1, 32}
    code, _, err = cli("sweep", *GRID, "--executor", "serial", "--out", str(out))
    assert code == 2 and "--resume" in err


def test_invalid_points_do_not_fail_the_sweep(cli: CliRun,
                                              tmp_path: Path) -> None:
    code, stdout, _ = cli("sweep", "--set", "connections=8,64", "--set", "bogus=1",
                          "--workload", "resnet50", "--evaluator", "occupancy",
                          "--executor", "serial", "--json")
    assert code == 1  # every point ended in an error
    rows = json.loads(stdout)
    assert len(rows) == 2 and all("unknown GPUSpec field 'bogus'" in r["error"] for r in rows)
    code, stdout, _ = cli("sweep", "--set", "connections=8,64", "--workload",
                          "resnet50", "--evaluator", "occupancy", "--executor", "serial",
                          "--out", str(tmp_path / "r.csv"))
    assert code == 0 and "2 evaluated (1 invalid)" in stdout
    assert "first invalid point: GPUSpec 'h100*': connections exceeds" in stdout


def test_sweep_prints_a_table_without_out(cli: CliRun) -> None:
    code, stdout, _ = cli("sweep", "--set", "sm_count=66,132", "--workload",
                          "resnet50", "--evaluator", "occupancy", "--executor", "serial")
    assert code == 0 and "conv_128x64.blocks_per_sm" in stdout
    assert len(stdout.strip().splitlines()) == 2 + 2


def test_sweep_file_excludes_grid_options(cli: CliRun,
                                          tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nworkload = "resnet50"\n[grid]\nsm_count = [66, 132]\n',
                    encoding="utf-8")
    code, _, err = cli("sweep", str(spec), "--workload", "googlenet")
    assert code == 2 and "--workload" in err
    code, stdout, _ = cli("sweep", str(spec), "--evaluator", "occupancy",
                          "--executor", "serial", "--json")
    assert code == 0 and [r["sm_count"] for r in json.loads(stdout)] == [66, 132]


def test_sweep_usage_errors_exit_2(cli: CliRun) -> None:
    for argv in (["sweep", "--set", "sm_count=66"],  # no workload
                 ["sweep", "--workload", "resnet50", "--resume"],  # resume without --out
                 ["sweep", "--workload", "resnet50", "--batch", "two"],
                 ["sweep", "--workload", "resnet50", "--scheduler", "tcp://x:1",
                  "--executor", "local"]):
        code, _, err = cli(*argv, "--evaluator", "occupancy")
        assert code == 2 and err.startswith("gpusim: error:"), argv


@pytest.mark.parametrize(("argv", "message"), [
    (["--policy", "serial,nosuch"], "--policy 'nosuch': unknown policy 'nosuch'"),
    (["--policy", "serial+turbo"], "unknown policy modifier"),
    (["--gpu", "h100,zzz"], "--gpu 'zzz'"),
    (["--workload", "resnet50,nonet"], "unknown workload 'nonet'"),
    (["--phase", "inference,train"], "unknown phase 'train'; phases: inference, training"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
])
def test_sweep_bad_global_values_exit_2_before_running(
        cli: CliRun, argv: list[str], message: str) -> None:
    base = {"--workload": "resnet50"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    flat = [x for pair in base.items() for x in pair]
    code, stdout, err = cli("sweep", *flat, "--executor", "serial", "--quiet")
    assert code == 2 and err.startswith("gpusim: error: sweep: ") and message in err, err
    assert stdout == ""


def test_sweep_checks_only_the_gpu_for_the_occupancy_evaluator(
        cli: CliRun) -> None:
    code, _, err = cli("sweep", "--gpu", "zzz", "--workload", "anything",
                       "--evaluator", "occupancy", "--executor", "serial")
    assert code == 2 and "--gpu 'zzz'" in err
    code, _, _ = cli("sweep", "--workload", "anything", "--evaluator", "occupancy",
                     "--executor", "serial", "--json")
    assert code == 0


def test_limits_evaluator_missing_is_a_clear_error(cli: CliRun,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sim.cli.sweep.limits_available", lambda: False)
    code, _, err = cli("sweep", "--workload", "resnet50")
    assert code == 2 and "--evaluator occupancy" in err


def test_plot_sweep_draws_the_heatmap(cli: CliRun,
                                      tmp_path: Path) -> None:
    results = tmp_path / "r.parquet"
    assert cli("sweep", *GRID, "--executor", "serial", "--out", str(results))[0] == 0
    fig_path = tmp_path / "fig.png"
    code, stdout, _ = cli("plot-sweep", str(results), "--x", "sm_count", "--y",
                          "smem_per_sm_B", "--metric", "conv_256x128.waves", "--where",
                          "batch=32", "--out", str(fig_path), "--json")
    assert code == 0 and fig_path.stat().st_size > 10_000
    grid = json.loads(stdout)
    assert grid["x_values"] == [66, 132, 264] and grid["y_values"] == [65536, 233472]
    # 64 KiB per SM cannot hold a 64 KiB block plus its reservation: no waves (n/a).
    assert grid["values"][0] == [None, None, None]
    assert grid["values"][1] == [7, 4, 2]
    code, _, err = cli("plot-sweep", str(results), "--x", "sm_count", "--y",
                       "smem_per_sm_B")
    assert code == 2 and "speedup_achievable" in err


def test_plot_sweep_needs_one_row_per_cell(cli: CliRun,
                                           tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    assert cli("sweep", *GRID, "--executor", "serial", "--out", str(results))[0] == 0
    code, _, err = cli("plot-sweep", str(results), "--x", "sm_count", "--y",
                       "smem_per_sm_B", "--metric", "conv_128x64.occupancy")
    assert code == 2 and "differ in batch" in err and "--where" in err


def test_heatmap_figure_has_labelled_axes_colour_bar_and_annotations() -> None:
    rows = [{"key": f"{i}{j}", "gpu": "h100", "sm_count": sm, "smem_per_sm_B": smem,
             "workload": "resnet50", "policy": "all",
             "speedup_achievable": None if smem == 32768 else sm / 66 + smem / 2**20,
             "error": "fits no SM" if smem == 32768 else None}
            for i, sm in enumerate((66, 132)) for j, smem in enumerate((32768, 233472))]
    fig = sweep_heatmap(rows, x="sm_count", y="smem_per_sm_B")
    assert isinstance(fig, Figure)
    ax, colorbar = fig.axes
    assert ax.get_xlabel() == "sm_count (SMs)"
    assert ax.get_ylabel() == "smem_per_sm_B (KiB)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["32", "228"]
    assert colorbar.get_ylabel() == "speedup_achievable (x, higher is better)"
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["n/a", "n/a", f"{1 + 233472 / 2**20:.3g}",
                            f"{2 + 233472 / 2**20:.3g}"])
    assert "workload=resnet50" in ax.get_title()


def test_pivot_and_units_name_their_problems() -> None:
    rows = [{"key": "a", "sm_count": 66, "speedup_achievable": "fast", "error": None}]
    with pytest.raises(GpusimError, match="not numeric"):
        pivot_sweep(rows, x="sm_count", y="key")
    with pytest.raises(GpusimError, match="not a column"):
        pivot_sweep(rows, x="sm_count", y="smem_per_sm_B")
    with pytest.raises(GpusimError, match="must differ"):
        pivot_sweep(rows, x="sm_count", y="sm_count")
    assert display_unit("dram_bw_Bps").label == "dram_bw_Bps (GB/s)"
    assert display_unit("launch_overhead_s").scale == 1e6
    assert display_unit("l2_B", [50 * 2**20]).label == "l2_B (MiB)"
    assert display_unit("lower_bound_us").label == "lower_bound_us (us)"


def test_limits_sweep_table_shows_varying_inputs_and_headline_figures(
    cli: CliRun,
) -> None:
    code, stdout, _ = cli("sweep", "--set", "sm_count=33,132", "--workload",
                          "squeezenet1_1", "--policy", "critical-path", "--executor", "serial")
    assert code == 0
    header = stdout.splitlines()[0].split()
    assert header == ["sm_count", "serial_us", "lower_bound_us", "best_policy",
                      "speedup_ideal", "speedup_achievable", "binds", "error"]


def test_plot_sweep_rejects_a_non_numeric_metric(cli: CliRun,
                                                 tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    assert cli("sweep", *GRID, "--executor", "serial", "--out", str(results))[0] == 0
    for metric in ("error", "conv_128x64.limiter"):
        code, _, err = cli("plot-sweep", str(results), "--x", "sm_count", "--y",
                           "smem_per_sm_B", "--metric", metric, "--where", "batch=1")
        assert code == 2 and f"--metric {metric!r}" in err and "numeric columns" in err, err
