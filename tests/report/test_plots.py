"""The figure functions: each returns a fresh Figure with labelled axes, and saves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec
from sim.engine.engine import simulate
from sim.engine.program import Launch, Program, StreamDef
from sim.engine.result import SimResult
from sim.report import plots
from workloads.analysis import parallelism_profile
from workloads.registry import build


def _program(gpu: GPUSpec, streams: int) -> Program:
    names = [f"s{i}" for i in range(streams)]
    kernels = [
        Launch(f"k{i}", names[i % streams], 400 + 100 * i, 256, 32, 0, 5e-6,
               dram_bytes=2e8 * (i % 2), kind=("conv_fwd", "elementwise")[i % 2])
        for i in range(6)
    ]
    return Program(gpu=gpu, streams=tuple(StreamDef(n) for n in names), kernels=tuple(kernels),
                   launch_overhead_s=1e-6)


@pytest.fixture
def results(h100: GPUSpec) -> dict[str, SimResult]:
    return {"serial": simulate(_program(h100, 1), record_blocks=True),
            "concurrent": simulate(_program(h100, 3), record_blocks=True)}


def _labels(fig: Figure) -> str:
    texts = [fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""]
    for ax in fig.axes:
        texts += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), ax.get_title("left")]
    return " ".join(texts)


def _check(fig: Figure, tmp_path: Path, *needles: str) -> None:
    assert isinstance(fig, Figure)
    labels = _labels(fig)
    for needle in needles:
        assert needle in labels, f"{needle!r} not in {labels!r}"
    path = tmp_path / "figure.png"
    fig.savefig(path)
    assert path.stat().st_size > 5_000


def test_no_pyplot_state(h100: GPUSpec) -> None:
    plots.occupancy_chart(h100)
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or not pyplot.get_fignums()


def test_occupancy_chart(h100: GPUSpec, tmp_path: Path) -> None:
    fig = plots.occupancy_chart(h100)
    _check(fig, tmp_path, "threads per block", "shared memory per block (KiB)", "occupancy (%")
    left = fig.axes[0]
    # 32 registers, 1024 threads: 2 blocks of 32 warps fill the SM.
    assert max(left.lines[0].get_ydata()) == pytest.approx(100)


def test_waves_chart_marks_every_wave(h100: GPUSpec, tmp_path: Path) -> None:
    fig = plots.waves_chart(h100, threads=256, regs_per_thread=64, smem_per_block_B=32768,
                            block_time_s=1e-5, grid_sizes=[1, 600, 1200, 2000],
                            simulated_s=[1e-5, 2e-5, 3e-5, 4e-5])
    _check(fig, tmp_path, "kernel duration (us)", "blocks in the grid", "wave = 528 blocks")
    ax = fig.axes[0]
    wave_lines = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in wave_lines] == [528, 1056, 1584]


def test_parallelism_profile_chart(tmp_path: Path) -> None:
    profiles = {name: parallelism_profile(build(name, batch=2, phase="training"))
                for name in ("googlenet", "resnet18")}
    fig = plots.parallelism_profile_chart(profiles)
    _check(fig, tmp_path, "googlenet", "resnet18", "topological level", "ops at once")


def test_timeline_comparison(results: dict[str, SimResult], tmp_path: Path) -> None:
    fig = plots.timeline_comparison(results, title="t")
    _check(fig, tmp_path, "serial: 6 kernels on 1 stream(s)", "concurrent: 6 kernels on 3",
           "time (us)")
    # The shared time axis spans the longer run.
    span = max(r.makespan_s for r in results.values()) * 1e6
    assert fig.axes[-1].get_xlim()[1] == pytest.approx(span)


def test_timeline_of_one_run(results: dict[str, SimResult], tmp_path: Path) -> None:
    fig = plots.timeline_comparison({"concurrent": results["concurrent"]})
    _check(fig, tmp_path, "stream")
    assert len(fig.axes) == 1


def test_utilization_chart(results: dict[str, SimResult], tmp_path: Path) -> None:
    fig = plots.utilization_chart(results["concurrent"])
    _check(fig, tmp_path, "busy SMs", "DRAM bandwidth\n(GB/s)", "resident warps")


def test_block_placement_chart(results: dict[str, SimResult], tmp_path: Path) -> None:
    fig = plots.block_placement_chart(results["concurrent"], sms=range(8))
    _check(fig, tmp_path, "SM", "time (us)")
    assert len(fig.axes[0].get_yticks()) == 8


def test_block_placement_needs_block_records(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="record_blocks"):
        plots.block_placement_chart(simulate(_program(h100, 2)))


def _limits_rows() -> list[dict[str, object]]:
    rows = []
    for name in ("googlenet", "resnet50"):
        for batch in (1, 32):
            serial, best, bound = 100.0 * batch, 80.0 * batch, 60.0 * batch
            rows.append({"workload": name, "batch": batch, "serial_us": serial,
                         "lower_bound_us": bound, "policies": {"serial": serial, "branches": best},
                         "best_policy": "branches", "speedup_ideal": serial / bound,
                         "speedup_achievable": serial / best})
    return rows


def test_limits_chart(tmp_path: Path) -> None:
    fig = plots.limits_chart(_limits_rows())
    _check(fig, tmp_path, "batch 1", "batch 32", "time relative to serial")
    heights = sorted({round(p.get_height(), 3) for p in fig.axes[0].patches})
    assert heights == [0.6, 0.8, 1.0]


def test_speedup_vs_batch_chart(tmp_path: Path) -> None:
    fig = plots.speedup_vs_batch_chart(_limits_rows())
    _check(fig, tmp_path, "batch size", "speedup over serial (x)")


def test_measured_vs_simulated_chart_reports_error(tmp_path: Path) -> None:
    measured = [1e-5, 2e-5, 4e-5, 1e-4]
    simulated = [1.1e-5, 1.8e-5, 4e-5, 1.3e-4]
    fig = plots.measured_vs_simulated_chart(measured, simulated,
                                            groups=["waves", "waves", "leftover", "leftover"])
    _check(fig, tmp_path, "measured (us)", "simulated (us)")
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "median |error| 10.0%" in text and "max |error| 30.0%" in text


def test_utilization_chart_of_two_runs_averages_windows(
        results: dict[str, SimResult], tmp_path: Path) -> None:
    fig = plots.utilization_chart(results)
    _check(fig, tmp_path, "busy SMs", "time (us)")
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["serial",
                                                                           "concurrent"]


def test_window_means_integrates_the_steps() -> None:
    times, means = plots.window_means(np.array([0.0, 1.0, 3.0]), np.array([2.0, 0.0, 4.0]),
                                      4.0, 2.0)
    assert times.tolist() == [0.0, 2.0, 4.0] and means.tolist() == [1.0, 2.0, 2.0]
    times, values = plots.window_means(np.array([0.0, 1.0]), np.array([2.0, 0.0]), 3.0, 0.0)
    assert times.tolist() == [0.0, 1.0, 3.0] and values.tolist() == [2.0, 0.0, 0.0]


def test_short_names_drop_the_shared_prefix() -> None:
    assert plots.short_names(["m.a.conv", "m.b.bn"]) == {"m.a.conv": "a.conv", "m.b.bn": "b.bn"}
    assert plots.short_names(["a", "b"]) == {"a": "a", "b": "b"}


def test_time_unit() -> None:
    assert plots.time_unit(5e-3) == (1e6, "us")
    assert plots.time_unit(0.5) == (1e3, "ms")
