"""Workload sources: one parser for every form a workload is named in, used by build(),
the commands, sweep points and reproduce (no torch needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import workloads
from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from sim.analysis.sweep.points import SweepSpec
from sim.analysis.workflow import kernel_graph_for, prepare_workload
from sim.cli import main
from sim.cli.sweep import check_global_values
from sim.report.reproduce import file_label, make_plan
from workloads.sources import parse_source

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "graphs"
              / "inception_block.json")


def test_every_form_parses(tmp_path: Path) -> None:
    zoo = workloads.workload_source("resnet50")
    assert (zoo.kind, zoo.target, zoo.label) == ("zoo", "resnet50", "resnet50")
    tv = workloads.workload_source("torchvision:resnet50?width_per_group=128&zero_init_"
                                   "residual=true&norm_layer=none")
    assert tv.kind == "torchvision" and tv.target == "resnet50"
    assert tv.args == (("width_per_group", 128), ("zero_init_residual", True),
                       ("norm_layer", None))
    assert tv.label == "resnet50-width_per_group=128-zero_init_residual=True-norm_layer=None"
    graph = workloads.workload_source(EXAMPLE)
    assert (graph.kind, graph.label) == ("graph", "inception_block")
    onnx_path = tmp_path / "net.onnx"
    onnx_path.write_bytes(b"")
    assert workloads.workload_source(str(onnx_path)).kind == "onnx"


@pytest.mark.parametrize(("text", "message"), [
    ("lenet", "unknown workload 'lenet'; valid: alexnet"),
    ("nets/missing.json", "workload file 'nets/missing.json' does not exist"),
    ("torchvision:", "name a torchvision model"),
    ("torchvision:resnet50?a=1&a=2", "model argument 'a' is given twice"),
    ("torchvision:resnet50?=1", "model arguments are ARG=VALUE"),
    ("", "non-empty name"),
])
def test_bad_sources_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        parse_source(text, workloads.workload_names())


def test_one_resolution_function_everywhere() -> None:
    """build(), the workflow, sweeps and reproduce all take a graph file."""
    g = workloads.build(EXAMPLE, batch=4, phase="training", optimizer="step")
    assert g.graph["batch"] == 4 and "optimizer.step" in g
    with pytest.raises(GpusimError, match=r"unknown option\(s\) layers; valid: optimizer"):
        workloads.build(EXAMPLE, layers=3)
    kernels = kernel_graph_for(EXAMPLE, batch=2, gpu=load_gpu("h100"), resolution=14)
    assert kernels.graph["batch"] == 2 and kernels.graph["resolution"] == 14
    prepared = prepare_workload(EXAMPLE, batch=2, resolution=14)
    assert prepared.resolution == 14 and prepared.labels["workload"] == EXAMPLE
    points = SweepSpec.from_tables([{}], {"workload": (EXAMPLE, "googlenet")}).points()
    check_global_values(points, "limits")  # files are valid sweep workloads
    bad = SweepSpec.from_tables([{}], {"workload": ("nope.toml",)}).points()
    with pytest.raises(GpusimError, match=r"sweep: --workload 'nope.toml': workload file"):
        check_global_values(bad, "limits")
    plan = make_plan(quick=True, networks=[EXAMPLE, "resnet18"])
    assert plan.networks == (EXAMPLE, "resnet18") and plan.timeline == (EXAMPLE, 32)
    assert file_label(EXAMPLE) == "inception_block"
    with pytest.raises(GpusimError, match="unknown workload 'nonet'"):
        make_plan(quick=True, networks=["nonet"])


def test_workloads_command_explains_the_other_forms(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workloads"]) == 0
    out = capsys.readouterr().out
    for form in ("PATH.onnx", "PATH.json, PATH.toml", "torchvision:NAME[?ARG=VALUE&...]",
                 "gpusim graph --export", "--batch and --resolution"):
        assert form in out


def test_simulate_takes_a_graph_file_and_a_resolution(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--workload", EXAMPLE, "--batch", "8", "--resolution", "14",
                 "--policy", "branches", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["workload"] == EXAMPLE and summary["streams"] == 4
    assert main(["limits", "--workload", EXAMPLE, "--resolution", "0"]) == 2
    assert "resolution must be a positive int" in capsys.readouterr().err
