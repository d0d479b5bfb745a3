"""gpusim's layer-graph format: examples, schema, export/load round trip, errors, and
workload files through the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

import workloads
from gpu_models.errors import GpusimError
from sim.cli import main
from workloads.graphfile import (
    SCHEMA_PATH,
    graph_document,
    graph_from_document,
    json_schema,
    load_graph_file,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "graphs"


def _edges(g: nx.DiGraph) -> list[tuple[str, str, dict[str, Any]]]:
    return [(u, v, dict(g.edges[u, v])) for v in g for u in g.predecessors(v)]


def assert_same_graph(a: nx.DiGraph, b: nx.DiGraph) -> None:
    assert list(a.nodes) == list(b.nodes)
    for node in a:  # ops, shapes, params, MACs, FLOPs, bytes, module, branch
        assert a.nodes[node]["layer"] == b.nodes[node]["layer"], node
    assert _edges(a) == _edges(b)
    assert workloads.param_count(a) == workloads.param_count(b)
    assert workloads.forward_macs(a) == workloads.forward_macs(b)
    assert a.graph["outputs"] == b.graph["outputs"]
    assert a.graph["output_labels"] == b.graph["output_labels"]


def test_schema_is_committed_and_examples_follow_it() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    committed = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert committed == json_schema(), "regenerate: graphfile.json_schema() changed"
    jsonschema.Draft202012Validator.check_schema(committed)
    doc = json.loads((EXAMPLES / "inception_block.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, committed)
    import tomllib

    jsonschema.validate(tomllib.loads((EXAMPLES / "se_block.toml").read_text("utf-8")),
                        committed)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "layers": [{"name": "x", "op": "conv2d",
                                                "inputs": ["input"], "kernel": 3}]},
                            committed)  # no out_channels


def test_inception_block_example() -> None:
    g = load_graph_file(EXAMPLES / "inception_block.json", batch=8)
    assert g.graph["name"] == "inception_block" and g.graph["batch"] == 8
    cat = g.nodes["cat"]["layer"]
    assert cat.output == (8, 64 + 128 + 32 + 32, 28, 28)
    assert list(g.predecessors("cat")) == ["branch1.relu", "branch2.relu", "branch3.relu",
                                           "branch4.relu"]
    assert {g.nodes[n]["layer"].branch for n in g} == {"branch1", "branch2", "branch3",
                                                       "branch4", None}
    convs = [g.nodes[n]["layer"] for n in g if g.nodes[n]["layer"].op.value == "conv2d"]
    # 1x1 + (1x1, 3x3) + (1x1, 5x5) + pool projection, at 28x28, batch 8
    assert sum(c.macs for c in convs) == 8 * 28 * 28 * (
        192 * 64 + 192 * 96 + 96 * 128 * 9 + 192 * 16 + 16 * 32 * 25 + 192 * 32)
    assert load_graph_file(EXAMPLES / "inception_block.json", resolution=14).nodes[
        "cat"]["layer"].output == (1, 256, 14, 14)


def test_se_block_toml_example_runs_training() -> None:
    inference = load_graph_file(EXAMPLES / "se_block.toml", batch=2)
    assert "drop_path" not in inference  # stochastic depth is the identity in inference
    assert inference.nodes["se.scale"]["layer"].inputs == ((2, 256, 56, 56), (2, 256, 1, 1))
    g = workloads.build(str(EXAMPLES / "se_block.toml"), batch=2, phase="training")
    assert "drop_path" in g and "se.scale.bwd.1" in g and "residual.bwd" in g


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "densenet121", "mobilenet_v2",
                                  "randwire"])
@pytest.mark.parametrize("phase", ["inference", "training"])
def test_export_and_load_give_the_same_graph(name: str, phase: str) -> None:
    g = workloads.build(name, batch=2, phase=phase)
    doc = json.loads(json.dumps(graph_document(g)))  # through JSON text
    loaded = graph_from_document(doc, training=phase == "training")
    if phase == "training":
        loaded = workloads.make_training_graph(loaded)
    assert_same_graph(g, loaded)
    # --batch applies to the exported graph (reshapes keep the batch dim)
    assert graph_from_document(doc, batch=3).graph["batch"] == 3


def test_export_command_round_trip_never_overwrites_its_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "incv3.json"
    assert main(["graph", "--workload", "inception_v3", "--batch", "2", "--export",
                 str(out)]) == 0
    assert f"wrote 313 layers to {out}" in capsys.readouterr().out
    assert_same_graph(workloads.build("inception_v3", batch=2),
                      workloads.build(str(out), batch=2))
    before = out.read_bytes()
    assert main(["graph", "--workload", str(out), "--export", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is the workload file itself" in err and err.count("\n") == 1
    assert out.read_bytes() == before


BASE: dict[str, Any] = {
    "format": "gpusim-layer-graph", "version": 1, "name": "bad",
    "input": {"shape": [1, 3, 8, 8]},
    "layers": [
        {"name": "c1", "op": "conv2d", "inputs": ["input"], "out_channels": 4, "kernel": 3},
        {"name": "c2", "op": "conv2d", "inputs": ["c1"], "in_channels": 4, "out_channels": 4,
         "kernel": 1},
    ],
}


def _with_layer(index: int, **changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    doc["layers"][index].update(changes)
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (_with_layer(1, op="swish"), "layer 'c2': field 'op': unknown op 'swish'"),
    (_with_layer(1, in_channels=8), "layer 'c2': field 'in_channels': is 8 but the input "
                                    "'c1' has 4 channels"),
    (_with_layer(0, inputs=["c2"]), "field 'inputs': the layers' inputs form a cycle"),
    (_with_layer(1, inputs=["c0"]), "layer 'c2': field 'inputs': 'c0' is neither a layer "
                                    "nor the graph input 'input'"),
    (_with_layer(0, kernel="3"), "layer 'c1': field 'kernel': must be an int or a pair"),
    (_with_layer(0, bias=1), "layer 'c1': field 'bias': must be true or false, got 1"),
    (_with_layer(0, stride=0), "layer 'c1': field 'stride': must be an int or a pair [h, w] "
                               "of ints >= 1"),
    (_with_layer(0, padding_mode="zeros"), "layer 'c1': field 'padding_mode': unknown for "
                                           "op conv2d"),
    (_with_layer(0, out_channels=None), "layer 'c1': field 'out_channels': must be an int"),
    (_with_layer(1, kernel=9), "layer 'c2': (op conv2d)"),
    ({**BASE, "layers": []}, "field 'layers': is empty"),
    ({**BASE, "input": {"shape": [1, 0, 8, 8]}}, "field 'input': shape must be a non-empty "
                                                  "list of positive ints"),
    ({**BASE, "layerz": []}, "unknown key(s) layerz"),
])
def test_bad_graph_files_exit_2_naming_layer_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any],
        message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert main(["limits", "--workload", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpusim: error: graph file {str(path)!r}")
    assert message in err and err.count("\n") == 1, err


def test_unreadable_graph_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("", encoding="utf-8")
    assert main(["graph", "--workload", str(empty)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert main(["graph", "--workload", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(GpusimError, match="must be a table"):
        graph_from_document([1, 2])


def test_a_json_graph_through_gpusim_limits(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "inception_block.json"
    assert main(["limits", "--workload", str(path), "--batch", "16", "--policies",
                 "branches", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["workload"] == str(path) and report["batch"] == 16
    assert report["streams"]["branches"] == 4  # one stream per labelled branch
    assert report["kernels"] > 18 and report["speedup_ideal"] >= 1


def _onnx_se_model(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="stem", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["a1"], name="act"),
        helper.make_node("Conv", ["a1", "wd"], ["d1"], name="depthwise", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=16),
        helper.make_node("GlobalAveragePool", ["d1"], ["s0"], name="se.pool"),
        helper.make_node("Conv", ["s0", "ws"], ["s1"], name="se.fc", kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["s1"], ["s2"], name="se.gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["d1", "s2"], ["m"], name="se.scale"),
        helper.make_node("Split", ["m"], ["m0", "m1"], name="split", axis=1),
        helper.make_node("Sigmoid", ["m1"], ["g"], name="gate"),
        helper.make_node("Concat", ["m0", "g"], ["cat"], name="cat", axis=1),
        helper.make_node("Transpose", ["cat"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean", ["t"], ["r"], name="pool", axes=[1, 2], keepdims=0),
        helper.make_node("Gemm", ["r", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    inits = [init("w1", 16, 3, 3, 3), init("wd", 16, 1, 3, 3), init("ws", 16, 16, 1, 1),
             init("wf", 10, 16), init("bf", 10)]
    graph = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_an_onnx_file_through_gpusim_limits(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "se.onnx"
    _onnx_se_model(path)
    g = workloads.build(str(path), batch=4, resolution=16)
    assert g.nodes["se.scale"]["layer"].inputs == ((4, 16, 16, 16), (4, 16, 1, 1))
    assert g.nodes["split"]["layer"].attrs == (1, 0, 8)
    assert g.nodes["to_nhwc.contiguous"]["layer"].op.value == "contiguous"
    assert g.nodes["pool"]["layer"].output == (4, 16)
    assert workloads.param_count(g) == 16 * 27 + 16 * 9 + 16 * 16 + 10 * 16 + 10
    assert main(["limits", "--workload", str(path), "--batch", "4", "--phase", "training",
                 "--policies", "min-streams"]) == 0
    out = capsys.readouterr().out
    assert f"{path} training batch 4" in out and "best policy:" in out
