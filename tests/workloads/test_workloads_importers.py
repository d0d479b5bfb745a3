"""Importers: torch.fx and ONNX models give the same layer graphs as the zoo builders."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads
from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder
from workloads.layers import OpType

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


# ---------------------------------------------------------------- plain torch.nn models
class BasicBlock(nn.Module):  # torchvision.models.resnet.BasicBlock, written out
    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Any) -> Any:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                     BasicBlock(planes, planes, 1)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, 1000)

    def forward(self, x: Any) -> Any:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class BasicConv2d(nn.Module):  # torchvision.models.googlenet.BasicConv2d
    def __init__(self, cin: int, cout: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Any) -> Any:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):  # torchvision.models.googlenet.Inception
    def __init__(self, cin: int, ch1: int, ch3r: int, ch3: int, ch5r: int, ch5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3r, kernel_size=1),
                                     BasicConv2d(ch3r, ch3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5r, kernel_size=1),
                                     BasicConv2d(ch5r, ch5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x: Any) -> Any:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):  # torchvision.models.GoogLeNet(aux_logits=False)
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.2)
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x: Any) -> Any:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, f"inception{name}")(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


# ---------------------------------------------------------------- helpers
def _summary(g: nx.DiGraph) -> tuple[int, int, int, Counter[OpType], int]:
    ops = Counter(layer.op for _, layer in g.nodes(data="layer"))
    flops = sum(layer.flops for _, layer in g.nodes(data="layer"))
    return (workloads.param_count(g), workloads.forward_macs(g), flops, ops,
            g.number_of_edges())


def _convs(g: nx.DiGraph) -> set[str]:
    return {n for n, layer in g.nodes(data="layer") if layer.op is OpType.CONV2D}


# ---------------------------------------------------------------- torch.fx
@pytest.mark.parametrize("model_cls,name", [(ResNet18, "resnet18"), (GoogLeNet, "googlenet")])
def test_fx_import_matches_zoo(model_cls: type, name: str) -> None:
    from workloads.importers import from_torch

    model = model_cls()
    imported = from_torch(model, (2, 3, 224, 224), name=name)
    zoo = workloads.build(name, batch=2)
    assert workloads.param_count(imported) == sum(p.numel() for p in model.parameters())
    assert _summary(imported) == _summary(zoo)
    assert _convs(imported) == _convs(zoo)  # torchvision module paths, same in both
    assert imported.graph["batch"] == 2 and imported.graph["resolution"] == 224


def test_fx_import_training_graph_matches_zoo() -> None:
    from workloads.importers import from_torch

    imported = workloads.make_training_graph(
        from_torch(GoogLeNet(), (2, 3, 224, 224), training=True))
    zoo = workloads.build("googlenet", batch=2, phase="training")
    assert _summary(imported) == _summary(zoo)


def test_fx_import_module_names_and_errors() -> None:
    from workloads.importers import from_torch

    g = from_torch(BasicBlock(64, 128, 2), (1, 64, 56, 56))
    assert g.nodes["downsample.0"]["layer"].module == "downsample"
    assert "relu" in g and "relu_1" in g  # a module called twice
    assert g.nodes["conv1"]["layer"].stride == (2, 2)

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.elu = nn.ELU()

        def forward(self, x: Any) -> Any:
            return self.elu(x)

    with pytest.raises(GpusimError, match=r"elu.*ELU is not supported"):
        from_torch(Bad(), (1, 3, 8, 8))

    class WrongChannels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 8, 3)

        def forward(self, x: Any) -> Any:
            return self.conv(x)

    with pytest.raises(GpusimError, match=r"'conv'.*expects 4 input channels"):
        from_torch(WrongChannels(), (1, 3, 8, 8))


# ---------------------------------------------------------------- ONNX
def test_onnx_export_of_torch_resnet18_matches_zoo(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from workloads.importers import from_onnx

    path = tmp_path / "resnet18.onnx"
    model = ResNet18().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter needs only onnx; no constant folding keeps BN apart.
            torch.onnx.export(model, torch.randn(2, 3, 224, 224), str(path), dynamo=False,
                              do_constant_folding=False)
        except Exception as exc:  # pragma: no cover - exporter missing in this torch
            pytest.skip(f"torch.onnx.export unavailable: {exc}")
    imported = from_onnx(path)
    zoo = workloads.build("resnet18", batch=2)
    assert _summary(imported) == _summary(zoo)
    assert imported.graph["name"] == "resnet18"


def _helper_model() -> Any:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="branch_a",
                         kernel_shape=[1, 1]),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], name="branch_b", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=2),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="branch_c", kernel_shape=[3, 3],
                         strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c2", "c3", "p1"], ["cat"], name="cat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat", axis=1),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("s", 8), init("bb", 8), init("m", 8),
             init("v", 8), init("w2", 4, 8, 1, 1), init("w3", 6, 4, 3, 3),
             init("wf", 10, 18), init("bf", 10)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    return model


def test_onnx_helper_model_matches_builder(tmp_path: Path) -> None:
    model = _helper_model()
    import onnx

    from workloads.importers import from_onnx

    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    with pytest.raises(GpusimError, match=r"symbolic"):
        from_onnx(path)
    imported = from_onnx(path, batch=4)

    b = GraphBuilder("tiny", batch=4)
    x = b.input((4, 3, 16, 16))
    x = b.relu(b.batchnorm(b.conv2d(x, 8, 3, stride=2, padding=1, bias=True), name="bn2"))
    a = b.conv2d(x, 4, 1, name="a")
    c = b.conv2d(x, 6, 3, padding=1, groups=2, name="c")
    p = b.maxpool(x, 3, 1, padding=1)
    y = b.adaptive_avgpool(b.concat([a, c, p]), 1)
    b.output(b.linear(b.flatten(y), 10))
    expected = b.finish()
    assert _summary(imported) == _summary(expected)
    assert imported.nodes["branch_b"]["layer"].groups == 2
    assert imported.nodes["fc"]["layer"].output == (4, 10)
    train = workloads.make_training_graph(imported)
    assert "stem.wgrad" in train and "stem.dgrad" not in train and "relu.bwd" in train


def test_onnx_unsupported_op_names_the_node() -> None:
    model = _helper_model()
    from workloads.importers import from_onnx

    model.graph.node[2].op_type = "Erf"
    with pytest.raises(GpusimError, match=r"'relu'.*Erf"):
        from_onnx(model, batch=1)


def test_onnx_export_of_inception_module_matches_fx(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from workloads.importers import from_onnx, from_torch

    module = Inception(192, 64, 96, 128, 16, 32, 32).eval()
    path = tmp_path / "inception.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, torch.randn(1, 192, 28, 28), str(path), dynamo=False,
                              do_constant_folding=False)
        except Exception as exc:  # pragma: no cover - exporter missing in this torch
            pytest.skip(f"torch.onnx.export unavailable: {exc}")
    via_onnx = from_onnx(path)
    via_fx = from_torch(module, (1, 192, 28, 28))
    assert _summary(via_onnx) == _summary(via_fx)
    zoo = workloads.build("googlenet")
    zoo_module = [layer for _, layer in zoo.nodes(data="layer")
                  if layer.module == "inception3a"]
    assert sum(layer.macs for layer in zoo_module) == workloads.forward_macs(via_fx)
    assert sum(layer.params for layer in zoo_module) == workloads.param_count(via_fx)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 4),
    padding=st.integers(0, 3), dilation=st.integers(1, 3), ceil=st.booleans(),
)
def test_output_sizes_match_torch(size: int, kernel: int, stride: int, padding: int,
                                  dilation: int, ceil: bool) -> None:
    from workloads.graph import conv_output_size

    x = torch.empty(1, 1, size, size, device="meta")
    span = size + 2 * padding - dilation * (kernel - 1)
    if span >= 1:
        w = torch.empty(1, 1, kernel, kernel, device="meta")
        y = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
        assert conv_output_size(size, kernel, stride, padding, dilation) == y.shape[-1]
    if 2 * padding <= kernel and size + 2 * padding >= kernel:
        y = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
        assert conv_output_size(size, kernel, stride, padding, 1, ceil) == y.shape[-1]
