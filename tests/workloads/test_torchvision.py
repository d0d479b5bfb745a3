"""torchvision:NAME workloads: any torchvision classification model, built on the meta
device and traced with torch.fx, counted as torchvision counts it."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pytest

import workloads
from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from sim.cli import main
from workloads.layers import OpType
from workloads.lowering import lower


def _torchvision() -> Any:
    # A torch/torchvision pair that does not match fails with RuntimeError, not ImportError.
    try:
        import torchvision
    except Exception as exc:
        pytest.skip(f"torchvision does not import here: {exc}", allow_module_level=True)
    return torchvision


torchvision = _torchvision()
torch = pytest.importorskip("torch")

#: Models outside the zoo, one or more of every family the importer has to cover.
OUTSIDE_THE_ZOO = (
    "resnext50_32x4d", "wide_resnet50_2", "densenet169", "efficientnet_b0",
    "efficientnet_v2_s", "regnet_y_400mf", "regnet_x_400mf", "convnext_tiny", "mnasnet0_5",
    "shufflenet_v2_x1_0", "mobilenet_v3_small", "mobilenet_v3_large", "vgg11_bn",
    "squeezenet1_0",
)
#: Small inputs: structure and counts do not depend on them, and every model takes them.
BATCH, RESOLUTION = 1, 96


@functools.cache
def imported(spec: str, phase: str = "inference") -> Any:
    """One trace per model and phase for the whole module."""
    return workloads.build(spec, batch=BATCH, resolution=RESOLUTION, phase=phase)


def reference_counts(name: str, **kwargs: Any) -> tuple[int, int]:
    """torchvision's own parameter count, and multiply-adds counted independently: forward
    hooks on every Conv2d and Linear, from their shapes, on meta tensors."""
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    params = sum(p.numel() for p in model.parameters())
    macs = 0

    def conv(m: Any, _: Any, out: Any) -> None:
        nonlocal macs
        macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m: Any, _: Any, out: Any) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear)
    model = model.to("meta")
    with torch.no_grad():
        model(torch.empty(BATCH, 3, RESOLUTION, RESOLUTION, device="meta"))
    return params, macs


@pytest.mark.parametrize("name", OUTSIDE_THE_ZOO)
def test_models_outside_the_zoo_count_as_torchvision(name: str) -> None:
    assert name not in workloads.workload_names()
    g = imported(f"torchvision:{name}")
    params, macs = reference_counts(name)
    assert workloads.param_count(g) == params
    assert abs(workloads.forward_macs(g) - macs) <= 0.02 * macs
    assert g.graph["batch"] == BATCH and g.graph["resolution"] == RESOLUTION


#: The zoo's googlenet is torchvision's as released, without the auxiliary heads.
ZOO_AS_TORCHVISION = {"googlenet": "torchvision:googlenet?aux_logits=False"}


@pytest.mark.parametrize("name", [w.name for w in workloads.list_workloads() if w.torchvision])
def test_zoo_models_through_torchvision_give_the_zoos_graph(name: str) -> None:
    zoo = workloads.build(name, batch=BATCH, resolution=RESOLUTION)
    g = imported(ZOO_AS_TORCHVISION.get(name, f"torchvision:{name}"))
    assert workloads.param_count(g) == workloads.param_count(zoo)
    assert workloads.forward_macs(g) == workloads.forward_macs(zoo)
    assert Counter(layer.op for _, layer in g.nodes(data="layer")) == \
        Counter(layer.op for _, layer in zoo.nodes(data="layer"))
    assert g.number_of_edges() == zoo.number_of_edges()


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny", "shufflenet_v2_x1_0",
                                  "mobilenet_v3_small"])
def test_training_graphs_of_imported_networks_lower(name: str) -> None:
    g = imported(f"torchvision:{name}", "training")
    forward = [layer for _, layer in g.nodes(data="layer") if layer.phase == "forward"]
    updates = [layer for _, layer in g.nodes(data="layer") if layer.op is OpType.SGD_UPDATE]
    # every parameter is updated once
    assert sum(u.params for u in updates) == sum(f.params for f in forward) \
        == workloads.param_count(g)
    kernels = lower(g, load_gpu("h100"), precision="fp16")
    assert kernels.number_of_nodes() > len(forward)
    if name == "convnext_tiny":
        # stochastic depth runs in training, in 17 of the 18 blocks (block 0 has p = 0);
        # 23 layer norms (stem, 3 downsamplings, 18 blocks, head) have a backward
        ops = Counter(layer.op for _, layer in g.nodes(data="layer"))
        assert ops[OpType.STOCHASTIC_DEPTH] == 17 and ops[OpType.LAYERNORM_BWD] == 23


def test_channel_shuffle_is_views_and_one_copy() -> None:
    g = imported("torchvision:shufflenet_v2_x1_0")
    # channel_shuffle: view -> transpose -> contiguous -> view
    shuffle = [n for n in g if n.startswith("stage2.0.") and
               g.nodes[n]["layer"].op in (OpType.RESHAPE, OpType.PERMUTE, OpType.CONTIGUOUS)]
    assert [g.nodes[n]["layer"].op for n in shuffle] == [
        OpType.RESHAPE, OpType.PERMUTE, OpType.CONTIGUOUS, OpType.RESHAPE]
    # chunk: two slice views; at batch 1 a channel slice is dense, so no copy feeds a conv
    slices = [layer for _, layer in g.nodes(data="layer") if layer.op is OpType.SLICE]
    assert len(slices) == 2 * (3 + 7 + 3)  # two per stride-1 block
    assert not any(n.endswith(".contiguous") and "branch2" in n for n in g)
    # at batch 2 the slice is strided: PyTorch's conv copies it first, and so does the graph
    g2 = workloads.build("torchvision:shufflenet_v2_x1_0", batch=2, resolution=RESOLUTION)
    assert "stage2.1.branch2.0.contiguous" in g2


def test_model_arguments_and_resolution() -> None:
    wide = imported("torchvision:resnet50?width_per_group=128")
    params, macs = reference_counts("resnet50", width_per_group=128)
    assert workloads.param_count(wide) == params == 68_883_240  # = wide_resnet50_2
    assert workloads.forward_macs(wide) == macs
    default = workloads.build("torchvision:efficientnet_b1")
    assert default.graph["resolution"] == 240  # the crop size of its released weights
    assert workloads.build("torchvision:resnet18", batch=3).graph["batch"] == 3


@pytest.mark.parametrize(("spec", "message"), [
    ("torchvision:resnet5", "unknown torchvision classification model 'resnet5'"),
    ("torchvision:resnet50?width=64", "torchvision:resnet50: cannot build the model with "
                                      "width=64"),
    ("torchvision:resnet50?weights=DEFAULT", "weights are never loaded"),
    ("torchvision:resnet50?groups", "model arguments are ARG=VALUE"),
    ("torchvision:vit_b_16", "torch node 'expand': expand is not supported"),
])
def test_bad_torchvision_workloads_exit_2(spec: str, message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--workload", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_unsupported_ops_name_the_node() -> None:
    from workloads.importers import from_torch

    class Scaled(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.tanh(x) * 2.0

    with pytest.raises(GpusimError, match=r"torch node 'tanh': tanh is not supported"):
        from_torch(Scaled(), (1, 4))


def test_torchvision_through_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--workload", "torchvision:mnasnet0_5", "--batch", "2",
                 "--resolution", "64", "--policy", "min-streams"]) == 0
    out = capsys.readouterr().out
    assert "torchvision:mnasnet0_5 inference batch 2" in out and "makespan:" in out
    assert main(["sweep", "--workload", "torchvision:mnasnet0_5,squeezenet1_1", "--policy",
                 "serial", "--executor", "serial", "--quiet", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [r["workload"] for r in rows] == ["torchvision:mnasnet0_5", "squeezenet1_1"]
    assert all(r["error"] is None and r["serial_us"] > 0 for r in rows)
