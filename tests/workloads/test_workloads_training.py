"""Training graphs: every forward op has its backward ops, with autograd's dependencies."""

from __future__ import annotations

import itertools
import math
from functools import cache

import networkx as nx
import pytest

import workloads
from gpu_models.errors import GpusimError
from workloads.layers import Layer, OpType

GEMM = (OpType.CONV2D, OpType.LINEAR)


@cache
def _training(name: str) -> nx.DiGraph:
    return workloads.build(name, batch=2, phase="training")


def _layer(g: nx.DiGraph, n: str) -> Layer:
    return g.nodes[n]["layer"]


def _forward_nodes(g: nx.DiGraph) -> list[str]:
    return [n for n in g if _layer(g, n).phase == "forward"]


def _grad_in(g: nx.DiGraph, backward_op: str) -> str:
    """The node feeding the output gradient into a backward op."""
    sources = [u for u, _, k in g.in_edges(backward_op, data="kind") if k == "gradient"]
    assert len(sources) == 1, (backward_op, sources)
    return sources[0]


def _contributor(g: nx.DiGraph, v: str) -> str:
    """The backward op of forward op ``v`` that produces the gradient of v's input."""
    return f"{v}.dgrad" if _layer(g, v).op in GEMM else f"{v}.bwd"


def _first_backward(g: nx.DiGraph, v: str) -> str:
    return f"{v}.wgrad" if _layer(g, v).op in GEMM else f"{v}.bwd"


@pytest.mark.parametrize("name", workloads.workload_names())
def test_every_forward_op_has_its_backward(name: str) -> None:
    g = _training(name)
    fwd = _forward_nodes(g)
    for v in fwd:
        layer = _layer(g, v)
        has_input_grad = any(_layer(g, p).phase == "forward" for p in g.predecessors(v))
        if layer.op in GEMM:
            assert f"{v}.wgrad" in g
            assert (f"{v}.dgrad" in g) == has_input_grad, v
            kinds = {OpType.CONV2D: (OpType.CONV2D_DGRAD, OpType.CONV2D_WGRAD),
                     OpType.LINEAR: (OpType.LINEAR_DGRAD, OpType.LINEAR_WGRAD)}[layer.op]
            wgrad = _layer(g, f"{v}.wgrad")
            assert wgrad.op is kinds[1] and wgrad.macs == layer.macs
            assert wgrad.forward_of == v and wgrad.phase == "backward"
            if has_input_grad:
                dgrad = _layer(g, f"{v}.dgrad")
                assert dgrad.op is kinds[0] and dgrad.output == layer.inputs[0]
        else:
            assert f"{v}.bwd" in g, v
            assert _layer(g, f"{v}.bwd").forward_of == v
        if layer.params:
            update = _layer(g, f"{v}.update")
            assert update.op is OpType.SGD_UPDATE and update.params == layer.params
    for n, layer in g.nodes(data="layer"):
        if layer.phase in ("backward", "optimizer"):
            assert layer.forward_of in g, n
    assert "loss" in g and "loss.bwd" in g


@pytest.mark.parametrize("name", workloads.workload_names())
def test_edges_are_consistent(name: str) -> None:
    g = _training(name)
    workloads.validate_graph(g)
    order = {"forward": 0, "loss": 1, "backward": 2, "optimizer": 3}
    for u, v, data in g.edges(data=True):
        src, dst = _layer(g, u), _layer(g, v)
        assert order[src.phase] <= order[dst.phase], (u, v)
        assert tuple(data["shape"]) in dst.inputs, (u, v)
        if data["kind"] in ("activation", "saved"):
            assert src.phase == "forward" and tuple(data["shape"]) == src.output, (u, v)
        elif data["kind"] == "gradient":
            assert src.phase in ("loss", "backward")
        else:
            assert data["kind"] == "weight_grad" and dst.op is OpType.SGD_UPDATE


@pytest.mark.parametrize("name", workloads.workload_names())
def test_gradients_flow_back_along_every_forward_edge(name: str) -> None:
    g = _training(name)
    for p in _forward_nodes(g):
        consumers = [v for v in g.successors(p)
                     if _layer(g, v).phase == "forward" and g.edges[p, v]["kind"] == "activation"]
        contributors = [_contributor(g, v) for v in consumers]
        contributors += [f"{lo}.bwd" for lo in g.successors(p) if _layer(g, lo).phase == "loss"]
        grad = _grad_in(g, _first_backward(g, p))
        if len(contributors) == 1:
            assert grad == contributors[0], p
        else:
            # A fanned-out tensor: autograd sums the branch gradients first.
            assert grad == f"{p}.grad_accum", p
            assert _layer(g, grad).op is OpType.GRAD_ACCUMULATE
            assert sorted(g.predecessors(grad)) == sorted(contributors), p


def test_backward_macs_are_twice_forward_minus_first_dgrad() -> None:
    for name in ("resnet50", "googlenet", "densenet121"):
        g = _training(name)
        fwd = sum(_layer(g, n).macs for n in _forward_nodes(g))
        bwd = sum(lay.macs for _, lay in g.nodes(data="layer") if lay.phase == "backward")
        stem = sum(_layer(g, n).macs for n in _forward_nodes(g)
                   if _layer(g, n).op is OpType.CONV2D and g.in_degree(n) == 0)
        assert bwd == 2 * fwd - stem


def _branch_ops(g: nx.DiGraph, module: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for n, layer in g.nodes(data="layer"):
        if layer.phase == "backward" and layer.module == module and layer.branch:
            out.setdefault(layer.branch, set()).add(n)
    return out


@pytest.mark.parametrize("name,modules", [
    ("googlenet", ["inception3a", "inception4c", "inception5b"]),
    ("inception_v3", ["Mixed_5b", "Mixed_6a", "Mixed_6e", "Mixed_7c"]),
])
def test_inception_branches_stay_parallel_in_backward(name: str, modules: list[str]) -> None:
    g = _training(name)
    for module in modules:
        branches = _branch_ops(g, module)
        assert len(branches) >= 3, (module, sorted(branches))
        convs = {b: {n for n in ops if _layer(g, n).is_conv} for b, ops in branches.items()}
        for a, b in itertools.permutations(branches, 2):
            reach: set[str] = set()
            for n in branches[a]:
                reach |= nx.descendants(g, n)
            assert not reach & branches[b], (module, a, b)
        # All branches start from the gradient of the module's output (the concat) ...
        cat_bwd = f"{module}.cat.bwd"
        for b, ops in convs.items():
            if ops:
                assert all(nx.has_path(g, cat_bwd, n) for n in ops), (module, b)
        # ... and rejoin in the gradient accumulation of the module's input.
        joins = [n for n in g if n.endswith(".grad_accum")
                 and _layer(g, n).op is OpType.GRAD_ACCUMULATE
                 and any(_layer(g, p).module == module for p in g.predecessors(n))
                 and all(_layer(g, p).branch for p in g.predecessors(n))]
        assert joins, module
        assert max(g.in_degree(j) for j in joins) >= 3


def test_residual_gradient_accumulates() -> None:
    g = _training("resnet18")
    acc = _layer(g, "layer1.0.relu2.grad_accum")  # feeds layer1.1's main path and identity
    assert acc.op is OpType.GRAD_ACCUMULATE and len(acc.inputs) == 2


def test_step_optimizer_runs_after_all_gradients() -> None:
    g = workloads.build("resnet18", phase="training", optimizer="step")
    step = _layer(g, "optimizer.step")
    assert step.params == g.graph["params"]
    param_layers = [n for n in _forward_nodes(g) if _layer(g, n).params]
    assert g.in_degree("optimizer.step") == len(param_layers)
    with pytest.raises(GpusimError, match=r"optimizer"):
        workloads.build("resnet18", phase="training", optimizer="adamw")


def test_weight_shapes_agree_across_forward_and_gradients() -> None:
    g = _training("mobilenet_v2")
    for v in _forward_nodes(g):
        layer = _layer(g, v)
        if layer.op not in GEMM:
            assert layer.weight_shape is None
            continue
        shape = layer.weight_shape
        assert shape is not None
        assert _layer(g, f"{v}.wgrad").weight_shape == shape
        if f"{v}.dgrad" in g:
            assert _layer(g, f"{v}.dgrad").weight_shape == shape
        bias = shape[0] if layer.bias else 0
        assert math.prod(shape) + bias == layer.params


def test_maxpool_backward_reads_int64_indices_whatever_the_dtype() -> None:
    for dtype, d in (("fp32", 4), ("fp16", 2), ("bf16", 2)):
        g = workloads.build("resnet18", batch=2, phase="training", dtype=dtype)
        bwd = _layer(g, "maxpool.bwd")
        y = _layer(g, "maxpool").output
        # gradient in the layer's dtype + one 8-byte index per pooled element
        assert bwd.bytes_read == math.prod(y) * (d + 8), dtype
        assert bwd.bytes_written == math.prod(_layer(g, "maxpool").inputs[0]) * d


def _parameter_free_graph() -> nx.DiGraph:
    from workloads.graph import GraphBuilder

    b = GraphBuilder("pool_only", batch=2, training=True)
    x = b.input((2, 3, 8, 8))
    b.output(b.flatten(b.maxpool(x, 2, name="pool"), name="flatten"))
    return b.finish()


@pytest.mark.parametrize("optimizer", ["per_layer", "step"])
def test_a_graph_without_parameters_gets_no_optimizer_op(optimizer: str) -> None:
    from workloads.training import make_training_graph

    g = make_training_graph(_parameter_free_graph(), optimizer=optimizer)
    assert g.graph["optimizer"] == optimizer
    assert not [n for n in g if _layer(g, n).phase == "optimizer"]
    assert "pool.bwd" in g and "loss.bwd" in g


def test_inconsistent_parameters_are_a_clean_error() -> None:
    import dataclasses

    from workloads.graph import GraphBuilder
    from workloads.training import make_training_graph

    b = GraphBuilder("t", batch=1, training=True)
    x = b.input((1, 3, 8, 8))
    y = b.conv2d(x, 4, 3, name="conv")
    b.output(b.linear(b.flatten(y, name="flatten"), 10, name="fc"))
    g = b.finish()
    layer = g.nodes["conv"]["layer"]
    g.nodes["conv"]["layer"] = dataclasses.replace(layer, params=layer.params + 1)
    with pytest.raises(GpusimError, match=r"layer 'conv': .*parameters do not match"):
        make_training_graph(g)
