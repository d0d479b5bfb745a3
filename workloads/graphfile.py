"""gpusim's layer-graph format: a network as a JSON or TOML file, read and written.

A file holds the input once and a list of layers, each with a name, an op, the names of the
tensors it reads and the op's attributes (JSON Schema: ``workloads/data/
layer_graph.schema.json``; examples: ``examples/graphs/``)::

    {
      "format": "gpusim-layer-graph", "version": 1,
      "name": "inception_block",
      "input": {"name": "input", "shape": [1, 192, 28, 28], "dtype": "fp32"},
      "layers": [
        {"name": "b1", "op": "conv2d", "inputs": ["input"], "out_channels": 64, "kernel": 1},
        {"name": "b1.relu", "op": "relu", "inputs": ["b1"]},
        {"name": "b2", "op": "conv2d", "inputs": ["input"], "out_channels": 128,
         "kernel": 3, "padding": 1},
        {"name": "cat", "op": "concat", "inputs": ["b1.relu", "b2"]}
      ]
    }

The first dim of ``input.shape`` is the batch (commands set it with ``--batch``, default 1)
and, for an image input, the last two are its height and width (``--resolution`` replaces
both). ``outputs``
(default: the layers no layer reads, in file order) and ``output_labels`` name the network's
outputs; ``params_not_in_graph`` counts parameters of the model that no layer holds (a head
that inference skips). A layer may also carry ``module`` and ``branch`` (the parallel branch
it belongs to, which the ``branches`` scheduling policy puts on its own stream). Layers may
come in any order; they run in file order where their inputs allow. ``dropout`` and
``stochastic_depth`` layers run only in training graphs (in inference they are the identity;
their ``p`` changes no count).

:data:`OP_ATTRIBUTES` lists each op's attributes. Every error names the file, the layer and
the field: an unknown op or field, a wrong type, an input that is neither a layer nor the
graph input, layers whose inputs form a cycle, a channel count that does not match the input
(``in_channels``, ``in_features``, ``num_features``, ``normalized``), an empty graph.

:func:`graph_document` turns any forward layer graph (a zoo network, an import) into such a
document and :func:`write_graph_file` writes it; loading it back gives the same graph: ops,
shapes, parameters, multiply-adds, module and branch labels and edges.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder, Tensor
from workloads.layers import ACTIVATIONS, DTYPE_BYTES, Layer, OpType

FORMAT = "gpusim-layer-graph"
VERSION = 1
#: Where the JSON Schema of the format lives (package data).
SCHEMA_PATH = Path(__file__).parent / "data" / "layer_graph.schema.json"


@dataclass(frozen=True)
class Attribute:
    """One attribute of an op: its kind of value, and its default (``REQUIRED``: none)."""

    kind: str
    default: Any = None


REQUIRED = object()
_TOP_KEYS = ("format", "version", "name", "input", "layers", "outputs", "output_labels",
             "params_not_in_graph")
_LAYER_KEYS = ("name", "op", "inputs", "module", "branch")
_POOL = {"kernel": Attribute("pair1", REQUIRED), "stride": Attribute("pair1"),
         "padding": Attribute("pair0", 0), "ceil_mode": Attribute("bool", False)}

#: Attributes of every op (kinds: ``int1`` positive int, ``int0`` non-negative int, ``int``,
#: ``pair1``/``pair0`` an int or ``[h, w]`` of positive / non-negative ints, ``bool``,
#: ``prob`` a number in [0, 1), ``dims`` a list of ints, ``shape`` a list of ints >= -1).
OP_ATTRIBUTES: Mapping[OpType, Mapping[str, Attribute]] = {
    OpType.CONV2D: {"out_channels": Attribute("int1", REQUIRED),
                    "kernel": Attribute("pair1", REQUIRED), "stride": Attribute("pair1", 1),
                    "padding": Attribute("pair0", 0), "dilation": Attribute("pair1", 1),
                    "groups": Attribute("int1", 1), "bias": Attribute("bool", False),
                    "in_channels": Attribute("int1")},
    OpType.LINEAR: {"out_features": Attribute("int1", REQUIRED),
                    "bias": Attribute("bool", True), "in_features": Attribute("int1")},
    OpType.BATCHNORM: {"num_features": Attribute("int1")},
    OpType.LAYERNORM: {"affine": Attribute("bool", True), "bias": Attribute("bool", True),
                       "normalized": Attribute("int1")},
    OpType.RELU: {}, OpType.RELU6: {}, OpType.SOFTMAX: {}, OpType.FLATTEN: {},
    OpType.CONTIGUOUS: {}, OpType.ADD: {}, OpType.CONCAT: {},
    **{op: {} for op in sorted(ACTIVATIONS)},
    OpType.MAXPOOL: _POOL, OpType.AVGPOOL: _POOL,
    OpType.ADAPTIVE_AVGPOOL: {"output_size": Attribute("pair1", 1)},
    OpType.MUL: {"weight": Attribute("dims")},
    OpType.DROPOUT: {"p": Attribute("prob", 0.5)},
    OpType.STOCHASTIC_DEPTH: {"p": Attribute("prob", 0.5)},
    OpType.LRN: {"size": Attribute("int1", 5)},
    OpType.MEAN: {"dims": Attribute("dims", REQUIRED), "keepdim": Attribute("bool", False)},
    OpType.RESHAPE: {"shape": Attribute("shape", REQUIRED)},
    OpType.PERMUTE: {"dims": Attribute("dims", REQUIRED)},
    OpType.SLICE: {"dim": Attribute("int", REQUIRED), "start": Attribute("int0", REQUIRED),
                   "stop": Attribute("int1", REQUIRED)},
}
#: Ops with two or more inputs (``mul``: two, or one and a ``weight``); the rest take one.
_MULTI_INPUT = {OpType.ADD: 2, OpType.CONCAT: 2}
#: Ops that exist only in training graphs (identity in inference).
TRAINING_ONLY = frozenset({OpType.DROPOUT, OpType.STOCHASTIC_DEPTH})


class _Where:
    """Error messages that name the file, the layer and the field."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, text: str, layer: str | None = None, field: str | None = None) -> GpusimError:
        where = f"graph file {self.path!r}"
        if layer is not None:
            where += f": layer {layer!r}"
        if field is not None:
            where += f": field {field!r}"
        return GpusimError(f"{where}: {text}")


def load_graph_file(path: str | Path, *, batch: int | None = None,
                    resolution: int | None = None, dtype: str | None = None,
                    training: bool = False) -> nx.DiGraph:
    """The forward layer graph a JSON/TOML file describes (see the module docstring).

    ``batch``, ``resolution`` and ``dtype`` replace the file's; ``training`` builds the
    graph in training mode (dropout and stochastic depth run, batch norm takes batch
    statistics).
    """
    data = read_data_file(path, "graph file")
    return graph_from_document(data, origin=str(path), batch=batch, resolution=resolution,
                               dtype=dtype, training=training,
                               default_name=Path(path).stem)


def graph_from_document(data: Any, *, origin: str = "<document>", batch: int | None = None,
                        resolution: int | None = None, dtype: str | None = None,
                        training: bool = False, default_name: str = "graph") -> nx.DiGraph:
    """:func:`load_graph_file` of an already parsed document."""
    w = _Where(origin)
    if not isinstance(data, dict):
        raise w.fail("must be a table (an object) with 'input' and 'layers'")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise w.fail(f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(_TOP_KEYS)}")
    if data.get("format", FORMAT) != FORMAT:
        raise w.fail(f"format must be {FORMAT!r}, got {data['format']!r}", field="format")
    if data.get("version", VERSION) != VERSION:
        raise w.fail(f"version {data['version']!r} is not supported (this gpusim reads "
                     f"version {VERSION})", field="version")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise w.fail(f"must be a non-empty string, got {name!r}", field="name")
    input_name, file_shape, file_dtype = _input(data.get("input"), w)
    shape = list(file_shape)
    if batch is not None:
        shape[0] = batch
    if resolution is not None:
        if len(shape) != 4:
            raise w.fail(f"--resolution applies to an image input (N, C, H, W), not "
                         f"{tuple(shape)}", field="input")
        shape[2] = shape[3] = resolution
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise w.fail("must be a list of layers", field="layers")
    if not layers:
        raise w.fail("is empty: a graph needs at least one layer", field="layers")
    specs = [_layer_spec(i, raw, w, input_name) for i, raw in enumerate(layers)]
    order = _file_order(specs, input_name, w)
    b = GraphBuilder(name, batch=shape[0], resolution=shape[-1] if len(shape) == 4 else None,
                     dtype=dtype or file_dtype, training=training)
    tensors: dict[str, Tensor] = {input_name: b.input(shape)}
    for spec in order:
        tensors[spec.name] = _add_layer(b, spec, [tensors[i] for i in spec.inputs], training, w)
    _outputs(b, data, specs, tensors, w)
    extra = data.get("params_not_in_graph", 0)
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
        raise w.fail(f"must be a non-negative int, got {extra!r}", field="params_not_in_graph")
    if extra:
        b.graph.graph["params_not_in_graph"] = extra
    try:
        return b.finish()
    except GpusimError as exc:
        raise w.fail(str(exc)) from None


def _input(raw: Any, w: _Where) -> tuple[str, tuple[int, ...], str]:
    if not isinstance(raw, dict):
        raise w.fail("must be a table with 'shape' (and 'name', 'dtype')", field="input")
    unknown = sorted(set(raw) - {"name", "shape", "dtype"})
    if unknown:
        raise w.fail(f"unknown key(s) {', '.join(unknown)}; valid: name, shape, dtype",
                     field="input")
    name = raw.get("name", "input")
    if not isinstance(name, str) or not name:
        raise w.fail(f"name must be a non-empty string, got {name!r}", field="input")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise w.fail(f"shape must be a non-empty list of positive ints (batch first), got "
                     f"{shape!r}", field="input")
    dtype = raw.get("dtype", "fp32")
    if dtype not in DTYPE_BYTES:
        raise w.fail(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}",
                     field="input")
    return name, tuple(shape), dtype


@dataclass(frozen=True)
class _Spec:
    index: int
    name: str
    op: OpType
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    module: str
    branch: str | None


def _layer_spec(index: int, raw: Any, w: _Where, input_name: str) -> _Spec:
    if not isinstance(raw, dict):
        raise w.fail(f"layers[{index}] must be a table with name, op and inputs")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise w.fail(f"must be a non-empty string, got {name!r}", f"#{index}", "name")
    if name == input_name:
        raise w.fail("is the name of the graph input", name, "name")
    op_text = raw.get("op")
    try:
        op: OpType | None = OpType(str(op_text))
    except ValueError:
        op = None
    if op is None or op not in OP_ATTRIBUTES:
        valid = ", ".join(o.value for o in OP_ATTRIBUTES)
        raise w.fail(f"unknown op {op_text!r}; valid: {valid}", name, "op")
    inputs = raw.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(
            isinstance(i, str) and i for i in inputs):
        raise w.fail(f"must be a non-empty list of layer names, got {inputs!r}", name,
                     "inputs")
    if len(set(inputs)) != len(inputs):
        raise w.fail(f"reads the same tensor twice: {inputs}", name, "inputs")
    allowed = OP_ATTRIBUTES[op]
    unknown = sorted(set(raw) - set(_LAYER_KEYS) - set(allowed))
    if unknown:
        valid = ", ".join([*_LAYER_KEYS, *allowed])
        raise w.fail(f"unknown for op {op.value} (valid: {valid})", name, unknown[0])
    attrs: dict[str, Any] = {}
    for key, spec in allowed.items():
        if key in raw:
            attrs[key] = _checked(raw[key], spec.kind, w, name, key)
        elif spec.default is REQUIRED:
            raise w.fail(f"is required for op {op.value}", name, key)
        elif spec.default is not None:
            attrs[key] = spec.default
    needed = _MULTI_INPUT.get(op, 1)
    if op is OpType.MUL:
        expected = 1 if "weight" in attrs else 2
        if len(inputs) != expected:
            raise w.fail(f"mul takes {expected} input(s) "
                         f"{'with' if expected == 1 else 'without'} a weight, got "
                         f"{len(inputs)}", name, "inputs")
    elif (needed == 1 and len(inputs) != 1) or len(inputs) < needed:
        raise w.fail(f"op {op.value} takes {'one input' if needed == 1 else 'two or more'}"
                     f", got {len(inputs)}", name, "inputs")
    module, branch = raw.get("module", ""), raw.get("branch")
    if not isinstance(module, str):
        raise w.fail(f"must be a string, got {module!r}", name, "module")
    if branch is not None and (not isinstance(branch, str) or not branch):
        raise w.fail(f"must be a non-empty string, got {branch!r}", name, "branch")
    return _Spec(index, name, op, tuple(inputs), attrs, module, branch)


def _checked(value: Any, kind: str, w: _Where, layer: str, field: str) -> Any:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if kind in ("int", "int0", "int1"):
        low = {"int": None, "int0": 0, "int1": 1}[kind]
        if not is_int(value) or (low is not None and value < low):
            what = "an int" if low is None else f"an int >= {low}"
            raise w.fail(f"must be {what}, got {value!r}", layer, field)
        return value
    if kind in ("pair0", "pair1"):
        low = int(kind[-1])
        items = value if isinstance(value, list) else [value]
        if len(items) not in ((1, 2) if not isinstance(value, list) else (2,)) or not all(
                is_int(v) and v >= low for v in items):
            raise w.fail(f"must be an int or a pair [h, w] of ints >= {low}, got {value!r}",
                         layer, field)
        return tuple(items) if isinstance(value, list) else value
    if kind == "bool":
        if not isinstance(value, bool):
            raise w.fail(f"must be true or false, got {value!r}", layer, field)
        return value
    if kind == "prob":
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value < 1:
            raise w.fail(f"must be a number in [0, 1), got {value!r}", layer, field)
        return float(value)
    if kind in ("dims", "shape"):
        low = -1 if kind == "shape" else None
        if not isinstance(value, list) or not value or not all(
                is_int(v) and (low is None or v >= low) for v in value):
            what = "ints >= -1" if kind == "shape" else "ints"
            raise w.fail(f"must be a non-empty list of {what}, got {value!r}", layer, field)
        return tuple(value)
    raise AssertionError(kind)  # pragma: no cover - every kind is handled above


def _file_order(specs: list[_Spec], input_name: str, w: _Where) -> list[_Spec]:
    """The layers in file order where their inputs allow (a topological order)."""
    by_name: dict[str, _Spec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise w.fail("is defined twice", spec.name, "name")
        by_name[spec.name] = spec
    deps = nx.DiGraph()
    deps.add_nodes_from(s.name for s in specs)
    for spec in specs:
        for i in spec.inputs:
            if i != input_name and i not in by_name:
                raise w.fail(f"{i!r} is neither a layer nor the graph input {input_name!r}",
                             spec.name, "inputs")
            if i != input_name:
                deps.add_edge(i, spec.name)
    try:
        cycle = nx.find_cycle(deps)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([*(u for u, _ in cycle), cycle[0][0]])
        raise w.fail(f"the layers' inputs form a cycle: {path}", cycle[0][1], "inputs")
    order = nx.lexicographical_topological_sort(deps, key=lambda n: by_name[n].index)
    return [by_name[n] for n in order]


def _add_layer(b: GraphBuilder, spec: _Spec, xs: list[Tensor], training: bool,
               w: _Where) -> Tensor:
    a = dict(spec.attrs)
    op = spec.op
    if op in TRAINING_ONLY and not training:
        return xs[0]  # identity in inference: no op
    x = xs[0]
    for field, dim in (("in_channels", 1), ("in_features", -1), ("num_features", 1),
                       ("normalized", -1)):
        expected = a.pop(field, None)
        if expected is not None and len(x.shape) > 1 and x.shape[dim] != expected:
            what = "features" if dim == -1 else "channels"
            raise w.fail(f"is {expected} but the input {spec.inputs[0]!r} has {x.shape[dim]} "
                         f"{what} (shape {x.shape})", spec.name, field)
    try:
        with b.labelled(spec.module, spec.branch):
            return _BUILD[op](b, xs, a, spec.name)
    except GpusimError as exc:
        raise w.fail(f"(op {op.value}) {exc}", spec.name) from None


_Build = Callable[[GraphBuilder, list[Tensor], dict[str, Any], str], Tensor]


def _activation(op: OpType) -> _Build:
    def build(b: GraphBuilder, xs: list[Tensor], a: dict[str, Any], n: str) -> Tensor:
        return b.activation(xs[0], op, name=n)
    return build


def _pool_args(a: dict[str, Any]) -> dict[str, Any]:
    return {"stride": a.get("stride"), "padding": a["padding"], "ceil_mode": a["ceil_mode"]}


_BUILD: dict[OpType, _Build] = {
    OpType.CONV2D: lambda b, xs, a, n: b.conv2d(
        xs[0], a["out_channels"], a["kernel"], stride=a["stride"], padding=a["padding"],
        dilation=a["dilation"], groups=a["groups"], bias=a["bias"], name=n),
    OpType.LINEAR: lambda b, xs, a, n: b.linear(xs[0], a["out_features"], bias=a["bias"],
                                                name=n),
    OpType.BATCHNORM: lambda b, xs, a, n: b.batchnorm(xs[0], name=n),
    OpType.LAYERNORM: lambda b, xs, a, n: b.layernorm(xs[0], affine=a["affine"],
                                                      bias=a["bias"], name=n),
    OpType.RELU: lambda b, xs, a, n: b.relu(xs[0], name=n),
    OpType.RELU6: lambda b, xs, a, n: b.relu6(xs[0], name=n),
    OpType.SOFTMAX: lambda b, xs, a, n: b.softmax(xs[0], name=n),
    OpType.FLATTEN: lambda b, xs, a, n: b.flatten(xs[0], name=n),
    OpType.CONTIGUOUS: lambda b, xs, a, n: b.contiguous(xs[0], name=n),
    OpType.ADD: lambda b, xs, a, n: b.add(xs, name=n),
    OpType.CONCAT: lambda b, xs, a, n: b.concat(xs, name=n),
    **{op: _activation(op) for op in sorted(ACTIVATIONS)},
    OpType.MAXPOOL: lambda b, xs, a, n: b.maxpool(xs[0], a["kernel"], name=n, **_pool_args(a)),
    OpType.AVGPOOL: lambda b, xs, a, n: b.avgpool(xs[0], a["kernel"], name=n, **_pool_args(a)),
    OpType.ADAPTIVE_AVGPOOL: lambda b, xs, a, n: b.adaptive_avgpool(xs[0], a["output_size"],
                                                                    name=n),
    OpType.MUL: lambda b, xs, a, n: b.mul(xs, weight=a.get("weight"), name=n),
    OpType.DROPOUT: lambda b, xs, a, n: b.dropout(xs[0], p=a["p"], name=n),
    OpType.STOCHASTIC_DEPTH: lambda b, xs, a, n: b.stochastic_depth(xs[0], p=a["p"], name=n),
    OpType.LRN: lambda b, xs, a, n: b.lrn(xs[0], size=a["size"], name=n),
    OpType.MEAN: lambda b, xs, a, n: b.mean(xs[0], a["dims"], keepdim=a["keepdim"], name=n),
    OpType.RESHAPE: lambda b, xs, a, n: b.reshape(xs[0], a["shape"], name=n),
    OpType.PERMUTE: lambda b, xs, a, n: b.permute(xs[0], a["dims"], name=n),
    OpType.SLICE: lambda b, xs, a, n: b.slice(xs[0], a["dim"], a["start"], a["stop"], name=n),
}


def _outputs(b: GraphBuilder, data: dict[str, Any], specs: list[_Spec],
             tensors: dict[str, Tensor], w: _Where) -> None:
    outputs = data.get("outputs")
    if outputs is None:
        read = {i for s in specs for i in s.inputs}
        outputs = [s.name for s in specs if s.name not in read]
    if not isinstance(outputs, list) or not outputs or not all(
            isinstance(o, str) for o in outputs):
        raise w.fail(f"must be a non-empty list of layer names, got {outputs!r}",
                     field="outputs")
    labels = data.get("output_labels", ["logits", *(f"output{i}"
                                                    for i in range(1, len(outputs)))])
    if not isinstance(labels, list) or len(labels) != len(outputs) or not all(
            isinstance(label, str) and label for label in labels):
        raise w.fail(f"must be one non-empty string per output, got {labels!r}",
                     field="output_labels")
    for out, label in zip(outputs, labels, strict=True):
        if out not in tensors or tensors[out].producer is None:
            raise w.fail(f"{out!r} is not a layer", field="outputs")
        try:
            b.output(tensors[out], label)
        except GpusimError as exc:
            raise w.fail(str(exc), field="outputs") from None


# ---------------------------------------------------------------------- writing
def graph_document(graph: nx.DiGraph) -> dict[str, Any]:
    """The layer-graph document of a *forward* graph (a training graph's forward part)."""
    order = [n for n in graph if graph.nodes[n]["layer"].phase == "forward"]
    if not order:
        raise GpusimError(f"workload {graph.graph.get('name')!r}: no forward layers to write")
    layers: list[Layer] = [graph.nodes[n]["layer"] for n in order]
    first = layers[0]
    input_shape = _input_shape(graph, order)
    input_name = "input"
    while input_name in graph:
        input_name = f"_{input_name}"
    records = []
    for node, layer in zip(order, layers, strict=True):
        producers = list(graph.predecessors(node))
        inputs: list[str] = []
        queue = [p for p in producers if graph.nodes[p]["layer"].phase == "forward"]
        for shape in layer.inputs:
            match = next((p for p in queue if graph.nodes[p]["layer"].output == shape), None)
            if match is None:
                inputs.append(input_name)
            else:
                inputs.append(match)
                queue.remove(match)
        record: dict[str, Any] = {"name": node, "op": layer.op.value, "inputs": inputs}
        record.update(_attributes(layer))
        if layer.module:
            record["module"] = layer.module
        if layer.branch is not None:
            record["branch"] = layer.branch
        records.append(record)
    doc: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "name": str(graph.graph.get("name", "graph")),
        "input": {"name": input_name, "shape": list(input_shape), "dtype": first.dtype},
        "layers": records,
        "outputs": list(graph.graph.get("outputs", [])),
        "output_labels": list(graph.graph.get("output_labels", [])),
    }
    extra = int(graph.graph.get("params_not_in_graph", 0))
    if extra:
        doc["params_not_in_graph"] = extra
    return doc


def _input_shape(graph: nx.DiGraph, order: list[str]) -> tuple[int, ...]:
    for node in order:
        layer: Layer = graph.nodes[node]["layer"]
        forward_preds = [p for p in graph.predecessors(node)
                         if graph.nodes[p]["layer"].phase == "forward"]
        if len(forward_preds) < len(layer.inputs):
            produced = {graph.nodes[p]["layer"].output for p in forward_preds}
            for shape in layer.inputs:
                if shape not in produced:
                    return shape
            return layer.inputs[0]
    raise GpusimError(f"workload {graph.graph.get('name')!r}: no layer reads the input")


def _pair(value: tuple[int, int]) -> int | list[int]:
    return value[0] if value[0] == value[1] else list(value)


def _attributes(layer: Layer) -> dict[str, Any]:
    op = layer.op
    if op is OpType.CONV2D:
        return {"in_channels": layer.inputs[0][1], "out_channels": layer.output[1],
                "kernel": _pair(layer.kernel), "stride": _pair(layer.stride),
                "padding": _pair(layer.padding), "dilation": _pair(layer.dilation),
                "groups": layer.groups, "bias": layer.bias}
    if op is OpType.LINEAR:
        return {"in_features": layer.inputs[0][-1], "out_features": layer.output[-1],
                "bias": layer.bias}
    if op is OpType.BATCHNORM:
        return {"num_features": layer.inputs[0][1]}
    if op is OpType.LAYERNORM:
        per = layer.params // layer.inputs[0][-1]
        return {"normalized": layer.inputs[0][-1], "affine": per >= 1, "bias": per == 2}
    if op in (OpType.MAXPOOL, OpType.AVGPOOL):
        return {"kernel": _pair(layer.kernel), "stride": _pair(layer.stride),
                "padding": _pair(layer.padding), "ceil_mode": layer.ceil_mode}
    if op is OpType.ADAPTIVE_AVGPOOL:
        return {"output_size": _pair((layer.output[2], layer.output[3]))}
    if op is OpType.MUL:
        return {"weight": list(layer.attrs)} if layer.params else {}
    if op is OpType.LRN:
        return {"size": layer.flops // math.prod(layer.output) - 3}
    if op is OpType.MEAN:
        return {"dims": list(layer.attrs), "keepdim": len(layer.output) == len(layer.inputs[0])}
    if op is OpType.RESHAPE:
        return {"shape": _reshape_target(layer.inputs[0], layer.output)}
    if op is OpType.PERMUTE:
        return {"dims": list(layer.attrs)}
    if op is OpType.SLICE:
        dim, start, stop = layer.attrs
        return {"dim": dim, "start": start, "stop": stop}
    return {}  # dropout, stochastic depth: p changes no count, and layers do not keep it


def _reshape_target(src: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """The reshape's shape with ``0`` (copy) for the leading dims it keeps, so that the
    batch stays the batch when the file is loaded with another ``--batch``."""
    target = list(out)
    for i, (a, b) in enumerate(zip(src, out, strict=False)):
        if a != b:
            break
        target[i] = 0
    return target


def write_graph_file(graph: nx.DiGraph, path: str | Path) -> dict[str, Any]:
    """Write :func:`graph_document` of ``graph`` as JSON to ``path``; return the document."""
    doc = graph_document(graph)
    Path(path).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


# ---------------------------------------------------------------------- JSON Schema
_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "int0": {"type": "integer", "minimum": 0},
    "int1": {"type": "integer", "minimum": 1},
    "pair0": {"oneOf": [{"type": "integer", "minimum": 0},
                        {"type": "array", "items": {"type": "integer", "minimum": 0},
                         "minItems": 2, "maxItems": 2}]},
    "pair1": {"oneOf": [{"type": "integer", "minimum": 1},
                        {"type": "array", "items": {"type": "integer", "minimum": 1},
                         "minItems": 2, "maxItems": 2}]},
    "bool": {"type": "boolean"},
    "prob": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "dims": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}, "minItems": 1},
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the format, made from :data:`OP_ATTRIBUTES` (the committed
    ``workloads/data/layer_graph.schema.json`` is this; a test keeps them equal)."""
    common = {
        "name": {"type": "string", "minLength": 1},
        "op": {"enum": [op.value for op in OP_ATTRIBUTES]},
        "inputs": {"type": "array", "items": {"type": "string", "minLength": 1},
                   "minItems": 1, "uniqueItems": True},
        "module": {"type": "string"},
        "branch": {"type": "string", "minLength": 1},
    }
    per_op = []
    for op, attributes in OP_ATTRIBUTES.items():
        properties = {key: _KIND_SCHEMAS[spec.kind] for key, spec in attributes.items()}
        required = [key for key, spec in attributes.items() if spec.default is REQUIRED]
        per_op.append({
            "if": {"properties": {"op": {"const": op.value}}},
            "then": {"properties": properties, "required": required,
                     "propertyNames": {"enum": [*common, *attributes]}},
        })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gpusim.invalid/layer_graph.schema.json",
        "title": "gpusim layer graph",
        "description": "A network as gpusim reads it: the input once, then layers with a "
                       "name, an op, the tensors they read and the op's attributes "
                       "(workloads/graphfile.py).",
        "type": "object",
        "required": ["input", "layers"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": FORMAT},
            "version": {"const": VERSION},
            "name": {"type": "string", "minLength": 1},
            "input": {
                "type": "object", "required": ["shape"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 1},
                              "minItems": 1},
                    "dtype": {"enum": list(DTYPE_BYTES)},
                },
            },
            "layers": {
                "type": "array", "minItems": 1,
                "items": {"type": "object", "required": ["name", "op", "inputs"],
                          "properties": common, "allOf": per_op},
            },
            "outputs": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "output_labels": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "params_not_in_graph": {"type": "integer", "minimum": 0},
        },
    }
