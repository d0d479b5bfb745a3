"""The model zoo matches torchvision: exact parameter counts, multiply-adds within 2%."""

from __future__ import annotations

import pytest

import workloads
from gpu_models.errors import GpusimError
from workloads.layers import OpType

# Reference figures from torchvision's weights metadata (torchvision.models.*_Weights
# .IMAGENET1K_V1.meta): "num_params" and "_ops" (the "GFLOPS" column of the docs' model
# table, which counts multiply-adds of the eval-mode forward pass at the default resolution).
TORCHVISION_REFERENCE: dict[str, tuple[int, float]] = {
    "alexnet": (61_100_840, 0.71),
    "vgg16": (138_357_544, 15.47),
    "resnet18": (11_689_512, 1.81),
    "resnet50": (25_557_032, 4.09),
    "resnet101": (44_549_160, 7.80),
    "resnet152": (60_192_808, 11.51),
    "googlenet": (6_624_904, 1.50),  # without the aux classifiers, as shipped
    "inception_v3": (27_161_264, 5.71),  # num_params includes the AuxLogits head
    "densenet121": (7_978_856, 2.83),
    "squeezenet1_1": (1_235_496, 0.35),
    "mobilenet_v2": (3_504_872, 0.30),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_REFERENCE))
def test_params_exact_and_macs_within_2_percent(name: str) -> None:
    params, gmacs = TORCHVISION_REFERENCE[name]
    graph = workloads.build(name)
    assert graph.graph["params"] == params
    assert workloads.param_count(graph) == params
    macs = workloads.forward_macs(graph)
    assert abs(macs / 1e9 - gmacs) / gmacs < 0.02, macs


def test_every_torchvision_model_is_registered() -> None:
    names = set(workloads.workload_names())
    assert set(TORCHVISION_REFERENCE) <= names
    assert {"pathnet", "randwire"} <= names
    for info in workloads.list_workloads():
        assert info.default_resolution == (299 if info.name == "inception_v3" else 224)
        assert info.description


def test_inception_v3_aux_head_only_in_training() -> None:
    inference = workloads.build("inception_v3")
    training = workloads.build("inception_v3", phase="training")
    assert not any(n.startswith("AuxLogits") for n in inference)
    assert "AuxLogits.fc" in training
    assert "aux_logits_loss" in training
    assert training.graph["params"] == inference.graph["params"] == 27_161_264
    in_graph = sum(lay.params for _, lay in training.nodes(data="layer") if lay.phase == "forward")
    assert in_graph == 27_161_264


@pytest.mark.parametrize("name", workloads.workload_names())
def test_macs_scale_with_batch_and_graph_metadata(name: str) -> None:
    one = workloads.build(name)
    four = workloads.build(name, batch=4)
    assert workloads.forward_macs(four) == 4 * workloads.forward_macs(one)
    assert four.graph["batch"] == 4 and four.graph["phase"] == "inference"
    assert four.graph["name"] == name
    assert four.graph["resolution"] == workloads.get_workload(name).default_resolution
    assert len(four.graph["outputs"]) == 1
    assert four.nodes[four.graph["outputs"][0]]["layer"].output == (4, 1000)


def test_readable_names_modules_and_branches() -> None:
    g = workloads.build("googlenet")
    layer = g.nodes["inception3a.branch2.1.conv"]["layer"]
    assert layer.op is OpType.CONV2D
    assert layer.module == "inception3a"
    assert layer.branch == "inception3a.branch2"
    assert layer.output == (1, 128, 28, 28)
    r = g.nodes["inception3a.cat"]["layer"]
    assert r.branch is None and r.output == (1, 256, 28, 28)
    v3 = workloads.build("inception_v3")
    bl = v3.nodes["Mixed_5b.branch5x5_2.conv"]["layer"]
    assert (bl.module, bl.branch, bl.kernel, bl.padding) == (
        "Mixed_5b", "Mixed_5b.branch5x5", (5, 5), (2, 2))
    rn = workloads.build("resnet50")
    ds = rn.nodes["layer2.0.downsample.0"]["layer"]
    assert (ds.module, ds.branch, ds.stride) == ("layer2.0", "layer2.0.downsample", (2, 2))
    assert rn.nodes["layer2.0.conv2"]["layer"].stride == (2, 2)  # ResNet v1.5


def test_resolution_changes_shapes() -> None:
    g = workloads.build("resnet50", resolution=160)
    assert g.nodes["conv1"]["layer"].output == (1, 64, 80, 80)
    with pytest.raises(GpusimError, match=r"too small"):
        workloads.build("vgg16", resolution=16)


def test_dropout_only_in_training() -> None:
    ops = {lay.op for _, lay in workloads.build("alexnet").nodes(data="layer")}
    assert OpType.DROPOUT not in ops
    train = workloads.build("alexnet", phase="training")
    assert train.nodes["classifier.0"]["layer"].op is OpType.DROPOUT


def test_dtype_halves_bytes_not_flops() -> None:
    a = workloads.build("resnet18", dtype="fp32")
    b = workloads.build("resnet18", dtype="fp16")
    la, lb = a.nodes["layer1.0.conv1"]["layer"], b.nodes["layer1.0.conv1"]["layer"]
    assert lb.bytes * 2 == la.bytes and lb.flops == la.flops
    with pytest.raises(GpusimError, match=r"dtype"):
        workloads.build("resnet18", dtype="int3")


def test_pathnet_configurable_and_seeded() -> None:
    g = workloads.build("pathnet", layers=3, modules=8, active=3, seed=5)
    convs = [n for n, lay in g.nodes(data="layer") if lay.op is OpType.CONV2D]
    assert len(convs) == 1 + 3 * 3
    layer0 = [n for n in convs if n.startswith("layer0.")]
    assert len(layer0) == 3
    assert g.nodes[layer0[0]]["layer"].branch == layer0[0].rsplit(".", 1)[0]
    again = workloads.build("pathnet", layers=3, modules=8, active=3, seed=5)
    assert list(again) == list(g)
    other = workloads.build("pathnet", layers=3, modules=8, active=3, seed=6)
    assert list(other) != list(g)
    with pytest.raises(GpusimError, match=r"active"):
        workloads.build("pathnet", modules=2, active=3)


def test_randwire_seeded_and_configurable() -> None:
    a = workloads.build("randwire", nodes=16, seed=1)
    b = workloads.build("randwire", nodes=16, seed=1)
    c = workloads.build("randwire", nodes=16, seed=2)
    assert list(a.edges) == list(b.edges)
    assert list(a.edges) != list(c.edges)
    assert "conv3.node15.pointwise" in a and "conv3.node16.pointwise" not in a
    with pytest.raises(GpusimError, match=r"randwire"):
        workloads.build("randwire", nodes=4, k=4)


def test_unknown_workload_and_options() -> None:
    with pytest.raises(GpusimError, match=r"unknown workload 'lenet'.*resnet50"):
        workloads.build("lenet")
    with pytest.raises(GpusimError, match=r"unknown option.*depth"):
        workloads.build("resnet50", depth=3)
    with pytest.raises(GpusimError, match=r"phase"):
        workloads.build("resnet50", phase="serving")
    with pytest.raises(GpusimError, match=r"batch"):
        workloads.build("resnet50", batch=0)
