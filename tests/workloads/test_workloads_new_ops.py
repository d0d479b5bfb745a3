"""Ops of imported networks, without the zoo or torch: shapes, counts, checks, lowering and
backward rules on tiny graphs with hand-computed answers."""

from __future__ import annotations

import networkx as nx
import pytest

from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind
from gpu_models.presets import load_gpu
from workloads import make_training_graph
from workloads.graph import GraphBuilder
from workloads.layers import ACTIVATIONS, Layer, OpType
from workloads.lowering import lower, lower_layer

H100 = load_gpu("h100")


def _layer(g: nx.DiGraph, name: str) -> Layer:
    return g.nodes[name]["layer"]


def test_activations_count_one_read_and_one_write() -> None:
    expected = {OpType.SIGMOID: 4, OpType.SILU: 5, OpType.HARDSIGMOID: 3,
                OpType.HARDSWISH: 4, OpType.GELU: 8}
    assert set(expected) == ACTIVATIONS
    for op, per_elem in expected.items():
        b = GraphBuilder("act", batch=2)
        b.activation(b.input((2, 8, 4, 4)), op, name="a")
        layer = _layer(b.finish(), "a")
        assert layer.op is op and layer.output == (2, 8, 4, 4)
        assert layer.flops == per_elem * 256
        assert (layer.bytes_read, layer.bytes_written) == (256 * 4, 256 * 4)
        (kernel,) = lower_layer(layer, H100)
        assert kernel.kind is KernelKind.ELEMENTWISE and kernel.grid == (1, 1, 1)  # 256/512
    with pytest.raises(GpusimError, match=r"'x': 'relu' is not an activation"):
        GraphBuilder("act", batch=1).activation(GraphBuilder("a", batch=1).input((1, 2)),
                                                "relu", name="x")


def test_mul_broadcasts_and_a_learned_operand_counts_parameters() -> None:
    b = GraphBuilder("se", batch=2)
    x = b.input((2, 8, 4, 4))
    s = b.mean(x, [2, 3], keepdim=True, name="squeeze")
    y = b.mul([x, s], name="scale")
    b.mul([y], weight=(8, 1, 1), name="layer_scale")
    g = b.finish()
    squeeze, scale, ls = (_layer(g, n) for n in ("squeeze", "scale", "layer_scale"))
    assert squeeze.output == (2, 8, 1, 1) and squeeze.flops == 256 and squeeze.attrs == (2, 3)
    assert scale.output == (2, 8, 4, 4) and scale.flops == 256 and scale.params == 0
    assert scale.bytes_read == (256 + 16) * 4 and scale.bytes_written == 256 * 4
    assert ls.params == 8 and ls.attrs == (8, 1, 1) and ls.bytes_read == (256 + 8) * 4
    # a broadcast product runs on ATen's strided elementwise kernel
    (kernel,) = lower_layer(scale, H100)
    assert "elementwise_kernel<128, 2>" in kernel.library_name
    with pytest.raises(GpusimError, match=r"'bad': shapes \(2, 8, 4, 4\) and \(3,\) do not"):
        b.mul([x], weight=(3,), name="bad")
    with pytest.raises(GpusimError, match=r"must broadcast to the input"):
        b.mul([s], weight=(8, 4, 4), name="grows")


def test_layernorm_linear_on_any_rank_and_their_kernels() -> None:
    b = GraphBuilder("mlp", batch=2)
    x = b.input((2, 4, 4, 8))  # (N, H, W, C), as ConvNeXt's block has it
    n = b.layernorm(x, normalized=8, name="norm")
    y = b.linear(n, 16, name="fc1")
    g = b.finish()
    norm, fc1 = _layer(g, "norm"), _layer(g, "fc1")
    assert norm.params == 16 and norm.flops == 5 * 256
    assert fc1.output == (2, 4, 4, 16) and fc1.params == 8 * 16 + 16
    assert fc1.macs == 32 * 8 * 16 and fc1.weight_shape == (16, 8) and y.shape[-1] == 16
    (ln_kernel,) = lower_layer(norm, H100)
    assert ln_kernel.grid == (32, 1, 1) and ln_kernel.threads == 128  # one block per row
    # the N-D linear is the GEMM of its 32 folded rows
    flat = GraphBuilder("flat", batch=32)
    flat.linear(flat.input((32, 8)), 16, name="fc1")
    folded = _layer(flat.finish(), "fc1")
    assert [(k.grid, k.flops, k.dram_bytes) for k in lower_layer(fc1, H100)] == \
        [(k.grid, k.flops, k.dram_bytes) for k in lower_layer(folded, H100)]
    with pytest.raises(GpusimError, match=r"'norm2': normalizes 4 features but the input's "
                                          r"last dim is 8"):
        b.layernorm(x, normalized=4, name="norm2")


def test_views_move_nothing_and_contiguous_copies() -> None:
    b = GraphBuilder("shuffle", batch=2)
    x = b.input((2, 8, 4, 4))
    v = b.reshape(x, [0, 2, 4, -1, 4], name="view")       # (2, 2, 4, 4, 4)
    t = b.permute(v, [0, 2, 1, 3, 4], name="transpose")   # (2, 4, 2, 4, 4)
    c = b.contiguous(t, name="copy")
    back = b.reshape(c, [0, -1, 4, 4], name="view_back")
    left = b.slice(back, 1, 0, 4, name="left")
    g = b.finish()
    assert v.shape == (2, 2, 4, 4, 4) and t.shape == (2, 4, 2, 4, 4)
    assert back.shape == (2, 8, 4, 4) and left.shape == (2, 4, 4, 4)
    assert _layer(g, "transpose").attrs == (0, 2, 1, 3, 4)
    assert _layer(g, "left").attrs == (1, 0, 4)
    for name in ("view", "transpose", "view_back", "left"):
        assert _layer(g, name).is_view and _layer(g, name).bytes == 0
        assert lower_layer(_layer(g, name), H100) == []
    copy = _layer(g, "copy")
    assert copy.bytes == 2 * 256 * 4 and not copy.is_view
    (kernel,) = lower_layer(copy, H100)
    assert kernel.kind is KernelKind.CONCAT_COPY and kernel.dram_bytes == 2 * 256 * 4
    with pytest.raises(GpusimError, match=r"'r': cannot reshape \(2, 8, 4, 4\) \(256 elements"):
        b.reshape(x, [2, 100], name="r")
    with pytest.raises(GpusimError, match=r"'p': dims \[0, 0, 1, 2\] are not a permutation"):
        b.permute(x, [0, 0, 1, 2], name="p")
    with pytest.raises(GpusimError, match=r"'s': slice 6:10 of dim 1 is not within 0:8"):
        b.slice(x, 1, 6, 10, name="s")


def test_stochastic_depth_exists_only_in_training_and_launches_noise_kernels() -> None:
    b = GraphBuilder("sd", batch=4, training=True)
    y = b.stochastic_depth(b.input((4, 8, 2, 2)), p=0.2, name="drop_path")
    layer = _layer(b.finish(), "drop_path")
    assert y.shape == (4, 8, 2, 2) and layer.flops == 128
    labels = [k.library_name for k in lower_layer(layer, H100)]
    assert len(labels) == 3 and "bernoulli_" in labels[0] and "noise" in labels[2]
    with pytest.raises(GpusimError, match=r"p must be in \[0, 1\)"):
        b.stochastic_depth(y, p=1.0, name="bad")


def _se_training() -> nx.DiGraph:
    """conv -> silu -> (mean -> conv -> sigmoid) -> mul -> layer scale -> linear head."""
    b = GraphBuilder("se", batch=2, training=True)
    x = b.input((2, 3, 8, 8))
    c = b.conv2d(x, 8, 3, padding=1, name="conv")
    a = b.activation(c, "silu", name="act")
    s = b.mean(a, [2, 3], keepdim=True, name="squeeze")
    s = b.conv2d(s, 8, 1, bias=True, name="excite")
    s = b.activation(s, "sigmoid", name="gate")
    y = b.mul([a, s], name="scale")
    y = b.mul([y], weight=(8, 1, 1), name="layer_scale")
    p = b.permute(y, [0, 2, 3, 1], name="to_nhwc")
    n = b.layernorm(b.contiguous(p, name="dense"), name="norm")
    m = b.mean(n, [1, 2], name="pool")
    b.output(b.linear(m, 10, name="fc"))
    return make_training_graph(b.finish())


def test_backward_rules_of_the_new_ops() -> None:
    g = _se_training()
    # mul of two activations: a gradient per input, the broadcast one summed
    assert _layer(g, "scale.bwd.0").output == (2, 8, 8, 8)
    assert _layer(g, "scale.bwd.1").output == (2, 8, 1, 1)
    assert ("act", "scale.bwd.1", "saved") in [(u, v, d["kind"]) for u, v, d in
                                               g.in_edges("scale.bwd.1", data=True)]
    # the layer scale's backward also makes its parameter gradient, which the update reads
    assert _layer(g, "layer_scale.bwd.0").params == 8
    assert g.has_edge("layer_scale.bwd.0", "layer_scale.update")
    # SiLU saves its input (the conv's output); sigmoid saves its own output
    assert g.edges["conv", "act.bwd"]["kind"] == "saved"
    assert g.edges["gate", "gate.bwd"]["kind"] == "saved"
    # the activation's gradient sums the two consumers' (squeeze and scale)
    assert _layer(g, "act.grad_accum").op is OpType.GRAD_ACCUMULATE
    # views pass the gradient through; layer norm updates its scale and shift
    assert _layer(g, "to_nhwc.bwd").is_view and _layer(g, "dense.bwd").is_view
    assert _layer(g, "norm.bwd").params == 16 and g.has_edge("norm.bwd", "norm.update")
    assert _layer(g, "pool.bwd").output == (2, 8, 8, 8)
    kernels = lower(g, H100)
    by_layer: dict[str, list[str]] = {}
    for _, data in kernels.nodes(data=True):
        by_layer.setdefault(data["layer"], []).append(data["kernel"].library_name)
    assert len(by_layer["scale.bwd.1"]) == 2 and "sum" in by_layer["scale.bwd.1"][1]
    assert len(by_layer["layer_scale.bwd.0"]) == 3  # dX, and the weight's product + sum
    assert len(by_layer["norm.bwd"]) == 2 and "to_nhwc.bwd" not in by_layer


def test_slice_backward_scatters_into_a_zeroed_gradient() -> None:
    b = GraphBuilder("split", batch=2, training=True)
    x = b.conv2d(b.input((2, 3, 4, 4)), 8, 1, name="conv")
    left, right = b.slice(x, 1, 0, 4, name="left"), b.slice(x, 1, 4, 8, name="right")
    y = b.concat([left, b.relu(right, name="relu")], name="cat")
    b.output(b.linear(b.flatten(y), 2, name="fc"))
    g = make_training_graph(b.finish())
    assert _layer(g, "left.bwd").output == (2, 8, 4, 4)
    assert _layer(g, "conv.grad_accum").inputs == ((2, 8, 4, 4), (2, 8, 4, 4))
    (fill, copy) = lower_layer(_layer(g, "right.bwd"), H100)
    assert "fill" in fill.library_name and fill.dram_bytes == 256 * 4
    assert copy.dram_bytes == 2 * 128 * 4
