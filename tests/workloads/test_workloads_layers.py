"""Layer records and the graph builder validate their input and name the culprit."""

from __future__ import annotations

import networkx as nx
import pytest

from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder, conv_output_size, validate_graph
from workloads.layers import Layer, OpType


def test_layer_is_frozen_and_validated() -> None:
    layer = Layer(name="c", op=OpType.CONV2D, inputs=((1, 3, 8, 8),), output=(1, 4, 8, 8))
    with pytest.raises(AttributeError):
        layer.name = "d"  # type: ignore[misc]
    assert Layer(name="r", op="relu", inputs=((2, 3),), output=(2, 3)).op is OpType.RELU
    bad = [
        dict(op="warp"), dict(output=(1, 0)), dict(kernel=(0, 1)), dict(groups=0),
        dict(dtype="fp8"), dict(macs=-1), dict(phase="serving"), dict(phase="backward"),
        dict(inputs=[(1, 2)]), dict(stride=(1,)),
    ]
    for override in bad:
        fields = dict(name="x", op=OpType.RELU, inputs=((1, 2),), output=(1, 2))
        fields.update(override)
        with pytest.raises(GpusimError, match=r"'x'|layer"):
            Layer(**fields)  # type: ignore[arg-type]


def test_layer_properties() -> None:
    layer = Layer(name="f", op=OpType.FLATTEN, inputs=((2, 3, 4, 4),), output=(2, 48),
                  dtype="fp16", bytes_read=10, bytes_written=6, flops=32)
    assert layer.is_view and not layer.is_conv and layer.dtype_bytes == 2
    assert layer.bytes == 16 and layer.arithmetic_intensity == 2.0
    assert layer.in_channels == 3 and layer.out_channels == 48


def test_conv_counts_and_shapes() -> None:
    b = GraphBuilder("t", batch=2)
    x = b.input((2, 8, 10, 10))
    y = b.conv2d(x, 16, 3, stride=2, padding=1, groups=2, bias=True, in_channels=8, name="c")
    layer = b.graph.nodes["c"]["layer"]
    assert y.shape == (2, 16, 5, 5)
    assert layer.params == 16 * 4 * 9 + 16
    assert layer.macs == 2 * 16 * 25 * 4 * 9
    assert layer.flops == 2 * layer.macs + 2 * 16 * 25
    assert layer.bytes_read == (2 * 8 * 100 + layer.params) * 4
    assert layer.bytes_written == 2 * 16 * 25 * 4


def test_pool_output_size_matches_pytorch_ceil_mode() -> None:
    assert conv_output_size(112, 3, 2, 0, ceil_mode=True) == 56  # GoogLeNet maxpool1
    assert conv_output_size(112, 3, 2, 0) == 55
    assert conv_output_size(14, 2, 2, 0, ceil_mode=True) == 7
    assert conv_output_size(5, 2, 2, 1, ceil_mode=True) == 3  # last window starts in padding


def test_builder_errors_name_the_layer() -> None:
    b = GraphBuilder("t", batch=1)
    x = b.input((1, 3, 32, 32))
    with b.scope("block"):
        with pytest.raises(GpusimError, match=r"'block.conv'.*expects 4 input channels, got 3"):
            b.conv2d(x, 8, 3, in_channels=4)
        y = b.conv2d(x, 8, 3, padding=1, in_channels=3)
        z = b.conv2d(x, 6, 3, padding=1, in_channels=3, name="conv2")
        with pytest.raises(GpusimError, match=r"'block.add'.*cannot add"):
            b.add([y, z])
        with pytest.raises(GpusimError, match=r"defined twice"):
            b.conv2d(x, 8, 3, in_channels=3)
        w = b.maxpool(y, 2, name="pool")
        with pytest.raises(GpusimError, match=r"'block.cat'.*cannot concatenate"):
            b.concat([y, w])
        with pytest.raises(GpusimError, match=r"groups"):
            b.conv2d(x, 8, 3, groups=2, name="g")
        with pytest.raises(GpusimError, match=r"too small"):
            b.conv2d(w, 8, 32, name="big")
        with pytest.raises(GpusimError, match=r"\(N, \.\.\., F\)"):
            b.linear(b.input((5,)), 10)  # linear acts on the last dim of rank >= 2
    with pytest.raises(GpusimError, match=r"batch"):
        GraphBuilder("t", batch=0)


def test_module_and_branch_labels() -> None:
    b = GraphBuilder("t", batch=1)
    x = b.input((1, 3, 8, 8))
    with b.scope("m"):
        with b.scope("br", branch=True), b.scope(0):
            b.relu(x, name="r")
        with b.branch("lab"), b.scope("sub"):
            b.relu(x, name="q")
        b.relu(x, name="s")
    g = b.graph
    assert (g.nodes["m.br.0.r"]["layer"].module, g.nodes["m.br.0.r"]["layer"].branch) == (
        "m", "m.br")
    assert (g.nodes["m.sub.q"]["layer"].module, g.nodes["m.sub.q"]["layer"].branch) == (
        "m", "m.lab")
    assert (g.nodes["m.s"]["layer"].module, g.nodes["m.s"]["layer"].branch) == ("m", None)


def _chain() -> nx.DiGraph:
    b = GraphBuilder("t", batch=1)
    x = b.input((1, 3, 8, 8))
    y = b.relu(x, name="a")
    b.output(b.relu(y, name="b"))
    return b.finish()


def test_validate_graph_rejects_cycles_and_bad_edges() -> None:
    g = _chain()
    g.add_edge("b", "a", shape=(1, 3, 8, 8), bytes=768, kind="activation")
    with pytest.raises(GpusimError, match=r"cycle through layer"):
        validate_graph(g)
    g = _chain()
    g.edges["a", "b"]["shape"] = (1, 3, 4, 4)
    with pytest.raises(GpusimError, match=r"'a' -> 'b'"):
        validate_graph(g)
    g = _chain()
    g.add_node("orphan")
    with pytest.raises(GpusimError, match=r"'orphan' has no Layer"):
        validate_graph(g)


def test_zero_stride_kernel_or_dilation_is_an_error_naming_the_layer() -> None:
    b = GraphBuilder("t", batch=1)
    x = b.input((1, 3, 16, 16))
    for kwargs, what in (({"stride": 0}, "stride"), ({"stride": (1, 0)}, "stride"),
                         ({"dilation": 0}, "dilation"), ({"padding": -1}, "padding")):
        with pytest.raises(GpusimError, match=f"layer 'c': {what} must be >= "):
            b.conv2d(x, 8, 3, name="c", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(GpusimError, match="layer 'c': kernel must be >= 1"):
        b.conv2d(x, 8, 0, name="c")
    with pytest.raises(GpusimError, match="layer 'c': out_channels must be a positive int"):
        b.conv2d(x, 0, 3, name="c")
    with pytest.raises(GpusimError, match="layer 'c': groups must be a positive int"):
        b.conv2d(x, 8, 3, groups=0, name="c")
    with pytest.raises(GpusimError, match="layer 'p': stride must be >= 1"):
        b.maxpool(x, 2, 0, name="p")
    with pytest.raises(GpusimError, match="layer 'p': kernel must be >= 1"):
        b.avgpool(x, 0, name="p")
    with pytest.raises(GpusimError, match=r"stride=0"):
        conv_output_size(16, 3, 0, 1)
