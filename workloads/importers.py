"""Importers: PyTorch modules (via torch.fx) and ONNX models -> layer graphs.

Both importers replay the model's operations through :class:`~workloads.graph.GraphBuilder`,
so an imported graph carries the same :class:`~workloads.layers.Layer` records, shape checks
and counts as the zoo's; importing a module equivalent to a zoo network gives the same
parameters, multiply-adds and op counts. Layer names come from the model: the torch module
path (``layer1.0.conv1``; a module called twice gets ``_1``, ``_2`` suffixes, like fx) or
the ONNX node name. The enclosing module is the parent of the module path; branches are not
inferred (``branch`` is ``None``).

The torch.fx importer lives in :mod:`workloads.fx_import` (it traces, then runs the trace on
meta tensors; its docstring lists what it supports); :func:`from_torch` here calls it.

ONNX operations supported (anything else raises :class:`GpusimError` naming the node):
Conv (groups, depthwise), Gemm, MatMul (constant weight; on the last dim of any rank),
BatchNormalization, LayerNormalization (last axis), Relu, Clip(0, 6), Sigmoid, HardSigmoid,
HardSwish, Gelu, Mul (of two tensors, broadcasting, or of a tensor and a weight tensor),
MaxPool, AveragePool, GlobalAveragePool, ReduceMean (constant axes), Add, Sum, Concat
(axis 1), Flatten (axis 1), Reshape (constant shape; ``0`` copies a dim, ``-1`` is
inferred), Squeeze, Unsqueeze, Transpose (the permuted view and the copy ONNX makes of it),
Split, Slice (constant, one axis, step 1), Dropout, Identity, LRN, Softmax.

Dropout follows PyTorch's modes: with ``training=False`` it is an identity and adds no op.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from gpu_models.datafile import check_readable, import_optional
from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder, Tensor
from workloads.layers import OpType


class _Namer:
    """Unique layer names from module paths (``relu``, ``relu_1``, ... when reused)."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def __call__(self, path: str) -> str:
        path = path.replace("/", ".").strip(".") or "op"
        count = self.used.get(path, 0)
        self.used[path] = count + 1
        return path if count == 0 else f"{path}_{count}"


def _emit(b: GraphBuilder, full_name: str, fn: Callable[..., Tensor], *args: Any,
          **kwargs: Any) -> Tensor:
    """Call builder method ``fn`` with the module path as scopes (sets ``module``)."""
    parts = full_name.split(".")
    with contextlib.ExitStack() as stack:
        for part in parts[:-1]:
            stack.enter_context(b.scope(part))
        return fn(*args, name=parts[-1], **kwargs)


# ---------------------------------------------------------------------- torch.fx
def from_torch(
    module: Any, input_shape: Sequence[int], *, name: str = "torch_model", dtype: str = "fp32",
    training: bool = False,
) -> nx.DiGraph:
    """Trace ``module`` with ``torch.fx`` and build its layer graph for ``input_shape``
    (:func:`workloads.fx_import.from_torch`: traced, then run on meta tensors)."""
    from workloads.fx_import import from_torch as trace_and_build

    return trace_and_build(module, input_shape, name=name, dtype=dtype, training=training)


# ---------------------------------------------------------------------- ONNX
def from_onnx(
    model: Any, *, name: str | None = None, dtype: str = "fp32", training: bool = False,
    batch: int | None = None, resolution: int | None = None,
) -> nx.DiGraph:
    """Build the layer graph of an ONNX model (a path or an ``onnx.ModelProto``).

    ``batch`` fills a symbolic batch dimension (it is required when the model's input has
    one) or replaces the model's; ``resolution`` replaces the height and width of an image
    input. A ``Reshape`` to a constant shape that starts with the model's own batch size
    keeps the batch dim (``--batch`` changes it).
    """
    onnx = import_optional("onnx", needed_for="the ONNX importer", extra="onnx")
    numpy_helper = import_optional("onnx.numpy_helper", needed_for="the ONNX importer",
                                   extra="onnx")
    if isinstance(model, (str, Path)):
        path = check_readable(model, "ONNX model")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises protobuf's DecodeError and others
            raise GpusimError(f"cannot read ONNX model {str(path)!r}: {exc}") from None
        name = name or path.stem
    graph = model.graph
    name = name or graph.name or "onnx_model"
    inits = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # Constant nodes hold values too (e.g. Reshape shapes)
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    values[node.output[0]] = arr
                    inits[node.output[0]] = tuple(arr.shape)
    data_inputs = [i for i in graph.input if i.name not in inits]
    if len(data_inputs) != 1:
        raise GpusimError(f"ONNX model {name!r}: expected one data input, got "
                          f"{[i.name for i in data_inputs]}")
    dims: list[int] = []
    for d in data_inputs[0].type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif batch is not None and not dims:
            dims.append(batch)
        else:
            raise GpusimError(f"ONNX model {name!r}: input dim {d.dim_param!r} is symbolic; "
                              "pass batch=")
    declared_batch = dims[0]
    if batch is not None and dims[0] != batch:
        dims[0] = batch
    if resolution is not None:
        if len(dims) != 4:
            raise GpusimError(f"ONNX model {name!r}: a resolution applies to an image input "
                              f"(N, C, H, W), not {tuple(dims)}")
        dims[2] = dims[3] = resolution
    b = GraphBuilder(name, batch=dims[0], resolution=dims[-1] if len(dims) == 4 else None,
                     dtype=dtype, training=training)
    env: dict[str, Tensor] = {data_inputs[0].name: b.input(dims)}
    namer = _Namer()

    def attrs(node: Any) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def sym_pads(pads: Sequence[int], where: str) -> tuple[int, int]:
        pads = list(pads) or [0, 0, 0, 0]
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise GpusimError(f"ONNX node {where!r}: asymmetric padding {pads} not supported")
        return (int(pads[0]), int(pads[1]))

    def act(tname: str, where: str) -> Tensor:
        if tname not in env:
            raise GpusimError(f"ONNX node {where!r}: input {tname!r} is not an activation")
        return env[tname]

    for node in graph.node:
        op = node.op_type
        if op == "Constant":
            continue
        if op == "Identity" and node.input[0] in inits:  # an aliased (shared) weight
            inits[node.output[0]] = inits[node.input[0]]
            if node.input[0] in values:
                values[node.output[0]] = values[node.input[0]]
            continue
        where = node.name or node.output[0]
        lname = namer(where)
        a = attrs(node)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise GpusimError(f"ONNX node {where!r}: auto_pad is not supported")
        out: Tensor
        if op == "Conv":
            x = act(node.input[0], where)
            w = inits.get(node.input[1])
            if w is None:
                raise GpusimError(f"ONNX node {where!r}: weight must be an initializer")
            groups = int(a.get("group", 1))
            out = _emit(b, lname, b.conv2d, x, w[0], tuple(a.get("kernel_shape", w[2:])),
                        stride=tuple(a.get("strides", (1, 1))),
                        padding=sym_pads(a.get("pads", []), where),
                        dilation=tuple(a.get("dilations", (1, 1))), groups=groups,
                        bias=len(node.input) > 2 and bool(node.input[2]),
                        in_channels=w[1] * groups)
        elif op in ("Gemm", "MatMul"):
            x = act(node.input[0], where)
            w = inits.get(node.input[1])
            if w is None or len(w) != 2:
                raise GpusimError(f"ONNX node {where!r}: weight must be a 2-D initializer")
            if int(a.get("transA", 0)):
                raise GpusimError(f"ONNX node {where!r}: transA is not supported")
            out_f, in_f = (w if int(a.get("transB", 0)) else (w[1], w[0]))
            has_bias = op == "Gemm" and len(node.input) > 2 and bool(node.input[2])
            out = _emit(b, lname, b.linear, x, out_f, bias=has_bias, in_features=in_f)
        elif op == "BatchNormalization":
            scale = inits.get(node.input[1])
            out = _emit(b, lname, b.batchnorm, act(node.input[0], where),
                        num_features=scale[0] if scale else None)
        elif op == "Relu":
            out = _emit(b, lname, b.relu, act(node.input[0], where))
        elif op == "Clip":
            lo = values.get(node.input[1]) if len(node.input) > 1 else a.get("min")
            hi = values.get(node.input[2]) if len(node.input) > 2 else a.get("max")
            if lo is None or hi is None or float(lo) != 0.0 or float(hi) != 6.0:
                raise GpusimError(f"ONNX node {where!r}: only Clip(0, 6) (ReLU6) is supported")
            out = _emit(b, lname, b.relu6, act(node.input[0], where))
        elif op in ("MaxPool", "AveragePool"):
            fn = b.maxpool if op == "MaxPool" else b.avgpool
            if op == "MaxPool" and any(d != 1 for d in a.get("dilations", (1, 1))):
                raise GpusimError(f"ONNX node {where!r}: dilated max pooling")
            out = _emit(b, lname, fn, act(node.input[0], where), tuple(a["kernel_shape"]),
                        tuple(a.get("strides", (1, 1))),
                        padding=sym_pads(a.get("pads", []), where),
                        ceil_mode=bool(a.get("ceil_mode", 0)))
        elif op == "GlobalAveragePool":
            out = _emit(b, lname, b.adaptive_avgpool, act(node.input[0], where), 1)
        elif op in ("Add", "Sum"):
            out = _emit(b, lname, b.add, [act(i, where) for i in node.input])
        elif op == "Concat":
            if int(a.get("axis", 0)) != 1:
                raise GpusimError(f"ONNX node {where!r}: only concatenation along axis 1")
            out = _emit(b, lname, b.concat, [act(i, where) for i in node.input])
        elif op == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise GpusimError(f"ONNX node {where!r}: only Flatten(axis=1)")
            out = _emit(b, lname, b.flatten, act(node.input[0], where))
        elif op == "Reshape":
            target = values.get(node.input[1])
            x = act(node.input[0], where)
            if target is None:
                raise GpusimError(f"ONNX node {where!r}: only Reshape to a constant shape "
                                  "is supported")
            shape = [int(d) for d in target]
            if shape and shape[0] == declared_batch:
                shape[0] = 0  # the batch dim stays the batch
            if len(shape) == 2 and len(x.shape) > 2 and shape[0] in (0, x.shape[0]) \
                    and shape[1] in (-1, _numel(x.shape[1:])):
                out = _emit(b, lname, b.flatten, x)
            else:
                out = _emit(b, lname, b.reshape, x, shape)
        elif op == "Dropout":
            x = act(node.input[0], where)
            out = _emit(b, lname, b.dropout, x, p=float(a.get("ratio", 0.5))) if training else x
        elif op == "Identity":
            out = act(node.input[0], where)
        elif op == "LRN":
            out = _emit(b, lname, b.lrn, act(node.input[0], where), size=int(a["size"]))
        elif op == "Softmax":
            out = _emit(b, lname, b.softmax, act(node.input[0], where))
        elif op in _ONNX_ACTIVATIONS:
            out = _emit(b, lname, b.activation, act(node.input[0], where), _ONNX_ACTIVATIONS[op])
        elif op == "Mul":
            operands = [i for i in node.input if i in env]
            consts = [i for i in node.input if i not in env]
            if len(operands) == 2:
                out = _emit(b, lname, b.mul, [env[i] for i in operands])
            elif len(operands) == 1 and consts and consts[0] in inits \
                    and _numel(inits[consts[0]]) > 1:
                out = _emit(b, lname, b.mul, [env[operands[0]]], weight=inits[consts[0]])
            else:
                raise GpusimError(f"ONNX node {where!r}: only Mul of two activations or of "
                                  "an activation and a weight tensor is supported")
        elif op == "LayerNormalization":
            if int(a.get("axis", -1)) not in (-1, len(act(node.input[0], where).shape) - 1):
                raise GpusimError(f"ONNX node {where!r}: only layer norm over the last axis")
            scale = inits.get(node.input[1]) if len(node.input) > 1 else None
            out = _emit(b, lname, b.layernorm, act(node.input[0], where),
                        normalized=scale[-1] if scale else None, affine=scale is not None,
                        bias=len(node.input) > 2 and bool(node.input[2]))
        elif op == "ReduceMean":
            axes = a.get("axes")
            if axes is None and len(node.input) > 1:
                axes = values.get(node.input[1])
            if axes is None:
                raise GpusimError(f"ONNX node {where!r}: only ReduceMean over given axes")
            out = _emit(b, lname, b.mean, act(node.input[0], where),
                        [int(x) for x in axes], keepdim=bool(a.get("keepdims", 1)))
        elif op == "Transpose":
            x = act(node.input[0], where)
            perm = a.get("perm", list(range(len(x.shape)))[::-1])
            # ONNX materialises the transposed tensor: a strided view and its dense copy.
            view = _emit(b, lname, b.permute, x, [int(d) for d in perm])
            out = _emit(b, f"{lname}.contiguous", b.contiguous, view)
        elif op in ("Squeeze", "Unsqueeze"):
            out = _emit(b, lname, b.reshape, act(node.input[0], where),
                        _onnx_squeezed(op, act(node.input[0], where).shape,
                                       a.get("axes") if "axes" in a else
                                       values.get(node.input[1]) if len(node.input) > 1
                                       else None, where))
        elif op == "Split":
            x = act(node.input[0], where)
            axis = int(a.get("axis", 0)) % len(x.shape)
            sizes = a.get("split")
            if sizes is None and len(node.input) > 1 and node.input[1]:
                sizes = values.get(node.input[1])
            if sizes is None:
                n = len(node.output)
                sizes = [x.shape[axis] // n] * n
            start = 0
            for i, (size, tname) in enumerate(zip(sizes, node.output, strict=True)):
                env[tname] = _emit(b, lname if i == 0 else namer(where), b.slice, x, axis,
                                   start, start + int(size))
                start += int(size)
            continue
        elif op == "Slice":
            x = act(node.input[0], where)
            starts, ends = values.get(node.input[1]), values.get(node.input[2])
            axes = values.get(node.input[3]) if len(node.input) > 3 and node.input[3] \
                else list(range(len(starts))) if starts is not None else None
            steps = values.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
            if starts is None or ends is None or axes is None or len(axes) != 1 or (
                    steps is not None and int(steps[0]) != 1):
                raise GpusimError(f"ONNX node {where!r}: only a constant Slice of one axis "
                                  "with step 1 is supported")
            axis = int(axes[0]) % len(x.shape)
            lo, hi, _ = slice(int(starts[0]), int(ends[0])).indices(x.shape[axis])
            out = _emit(b, lname, b.slice, x, axis, lo, hi)
        else:
            raise GpusimError(f"ONNX node {where!r}: op {op} is not supported")
        env[node.output[0]] = out
    for i, o in enumerate(graph.output):
        b.output(act(o.name, "graph output"), "logits" if i == 0 else f"output{i}")
    return b.finish()


#: ONNX activations and the op each is.
_ONNX_ACTIVATIONS: dict[str, OpType] = {
    "Sigmoid": OpType.SIGMOID, "HardSigmoid": OpType.HARDSIGMOID,
    "HardSwish": OpType.HARDSWISH, "Gelu": OpType.GELU,
}


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def _onnx_squeezed(op: str, shape: tuple[int, ...], axes: Any, where: str) -> list[int]:
    """The output shape of ``Squeeze``/``Unsqueeze`` with these ``axes``."""
    dims = list(shape)
    if op == "Squeeze":
        if axes is None:
            return [d for d in dims if d != 1]
        drop = {int(x) % len(dims) for x in axes}
        return [d for i, d in enumerate(dims) if i not in drop]
    if axes is None:
        raise GpusimError(f"ONNX node {where!r}: Unsqueeze needs its axes")
    rank = len(dims) + len(axes)
    for x in sorted(int(x) % rank for x in axes):
        dims.insert(x, 1)
    return dims
