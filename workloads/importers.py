"""Importers: PyTorch modules (via torch.fx) and ONNX models -> layer graphs.

Both importers replay the model's operations through :class:`~workloads.graph.GraphBuilder`,
so an imported graph carries the same :class:`~workloads.layers.Layer` records, shape checks
and counts as the zoo's; importing a module equivalent to a zoo network gives the same
parameters, multiply-adds and op counts. Layer names come from the model: the torch module
path (``layer1.0.conv1``; a module called twice gets ``_1``, ``_2`` suffixes, like fx) or
the ONNX node name. The enclosing module is the parent of the module path; branches are not
inferred (``branch`` is ``None``).

Supported operations (anything else raises :class:`GpusimError` naming the node):

- torch.fx: ``nn.Conv2d`` (numeric padding, zero padding mode), ``nn.Linear``,
  ``nn.BatchNorm2d``, ``nn.ReLU``, ``nn.ReLU6``, ``nn.MaxPool2d``, ``nn.AvgPool2d``,
  ``nn.AdaptiveAvgPool2d``, ``nn.Dropout``, ``nn.Flatten``, ``nn.Identity``,
  ``nn.LocalResponseNorm``, ``nn.Softmax``; ``torch.cat`` (dim 1), ``+``/``torch.add`` of
  two tensors, ``torch.flatten(x, 1)``, ``F.relu``, ``F.relu6``, ``F.max_pool2d``,
  ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``, ``F.dropout``; methods ``relu``,
  ``flatten``, ``view``/``reshape`` to ``(N, -1)``, ``add``.
- ONNX: Conv, Gemm, MatMul (constant weight), BatchNormalization, Relu, Clip(0, 6),
  MaxPool, AveragePool, GlobalAveragePool, Add, Sum, Concat (axis 1), Flatten (axis 1),
  Reshape to 2-D, Dropout, Identity, LRN, Softmax.

Dropout follows PyTorch's modes: with ``training=False`` it is an identity and adds no op.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from gpu_models.datafile import check_readable, import_optional
from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder, Tensor


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
    """Trace ``module`` with ``torch.fx`` and build its layer graph for ``input_shape``."""
    try:
        import torch
        import torch.fx
        import torch.nn.functional as F
        from torch import nn
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise GpusimError("the torch importer needs PyTorch installed") from exc

    shape = tuple(int(d) for d in input_shape)
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many types for untraceable code
        raise GpusimError(f"torch.fx cannot trace {name!r}: {exc}") from exc
    b = GraphBuilder(name, batch=shape[0], resolution=shape[-1] if len(shape) == 4 else None,
                     dtype=dtype, training=training)
    namer = _Namer()
    env: dict[str, Tensor] = {}
    n_inputs = 0

    def arg(a: Any, where: str) -> Tensor:
        if isinstance(a, torch.fx.Node):
            return env[a.name]
        raise GpusimError(f"torch node {where!r}: expected a tensor argument, got {a!r}")

    def tensors(args: Any, where: str) -> list[Tensor]:
        return [arg(a, where) for a in args]

    def flatten_dims(start: int, where: str) -> None:
        if start != 1:
            raise GpusimError(f"torch node {where!r}: only flatten from dim 1 is supported")

    for node in traced.graph.nodes:
        where = node.name
        if node.op == "placeholder":
            if n_inputs:
                raise GpusimError(f"torch model {name!r}: only one input is supported")
            env[node.name] = b.input(shape)
            n_inputs += 1
        elif node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
            for i, o in enumerate(outs):
                b.output(arg(o, where), "logits" if i == 0 else f"output{i}")
        elif node.op == "call_module":
            mod = traced.get_submodule(node.target)
            x = arg(node.args[0], where)
            lname = namer(str(node.target))
            if isinstance(mod, nn.Conv2d):
                if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
                    raise GpusimError(f"torch node {where!r}: only numeric zero padding")
                env[node.name] = _emit(
                    b, lname, b.conv2d, x, mod.out_channels, tuple(mod.kernel_size),
                    stride=tuple(mod.stride), padding=tuple(mod.padding),
                    dilation=tuple(mod.dilation), groups=mod.groups, bias=mod.bias is not None,
                    in_channels=mod.in_channels)
            elif isinstance(mod, nn.Linear):
                env[node.name] = _emit(b, lname, b.linear, x, mod.out_features,
                                       bias=mod.bias is not None, in_features=mod.in_features)
            elif isinstance(mod, nn.BatchNorm2d):
                if not mod.affine:
                    raise GpusimError(f"torch node {where!r}: only affine batch norm")
                env[node.name] = _emit(b, lname, b.batchnorm, x, num_features=mod.num_features)
            elif isinstance(mod, nn.ReLU6):
                env[node.name] = _emit(b, lname, b.relu6, x)
            elif isinstance(mod, nn.ReLU):
                env[node.name] = _emit(b, lname, b.relu, x)
            elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
                if isinstance(mod, nn.MaxPool2d) and mod.dilation not in (1, (1, 1)):
                    raise GpusimError(f"torch node {where!r}: dilated max pooling")
                fn = b.maxpool if isinstance(mod, nn.MaxPool2d) else b.avgpool
                env[node.name] = _emit(b, lname, fn, x, mod.kernel_size, mod.stride,
                                       padding=mod.padding, ceil_mode=mod.ceil_mode)
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                env[node.name] = _emit(b, lname, b.adaptive_avgpool, x, mod.output_size)
            elif isinstance(mod, nn.Dropout):
                env[node.name] = _emit(b, lname, b.dropout, x, p=mod.p) if training else x
            elif isinstance(mod, nn.Flatten):
                flatten_dims(mod.start_dim, where)
                env[node.name] = _emit(b, lname, b.flatten, x)
            elif isinstance(mod, nn.Identity):
                env[node.name] = x
            elif isinstance(mod, nn.LocalResponseNorm):
                env[node.name] = _emit(b, lname, b.lrn, x, size=mod.size)
            elif isinstance(mod, nn.Softmax):
                env[node.name] = _emit(b, lname, b.softmax, x)
            else:
                raise GpusimError(
                    f"torch node {where!r}: module {type(mod).__name__} is not supported")
        elif node.op in ("call_function", "call_method"):
            target = node.target
            lname = namer(_fx_path(node, where))
            kw = dict(node.kwargs)
            if target in (torch.cat, torch.concat):
                dim = node.args[1] if len(node.args) > 1 else kw.get("dim", 0)
                if dim != 1:
                    raise GpusimError(f"torch node {where!r}: only concatenation along dim 1")
                env[node.name] = _emit(b, lname, b.concat, tensors(node.args[0], where))
            elif target in (operator.add, operator.iadd, torch.add, "add", "add_"):
                env[node.name] = _emit(b, lname, b.add, tensors(node.args[:2], where))
            elif target in (torch.flatten, "flatten"):
                start = node.args[1] if len(node.args) > 1 else kw.get("start_dim", 0)
                flatten_dims(int(start), where)
                env[node.name] = _emit(b, lname, b.flatten, arg(node.args[0], where))
            elif target in ("view", "reshape", torch.reshape):
                dims = node.args[1:] if target != torch.reshape else node.args[1]
                dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) \
                    else tuple(dims)
                if len(dims) != 2 or dims[1] != -1:
                    raise GpusimError(f"torch node {where!r}: only view/reshape to (N, -1)")
                env[node.name] = _emit(b, lname, b.flatten, arg(node.args[0], where))
            elif target in (F.relu, torch.relu, "relu", "relu_"):
                env[node.name] = _emit(b, lname, b.relu, arg(node.args[0], where))
            elif target is F.relu6:
                env[node.name] = _emit(b, lname, b.relu6, arg(node.args[0], where))
            elif target in (F.max_pool2d, F.avg_pool2d):
                args = list(node.args[1:])
                kernel = args[0] if args else kw["kernel_size"]
                stride = args[1] if len(args) > 1 else kw.get("stride")
                padding = args[2] if len(args) > 2 else kw.get("padding", 0)
                ceil = args[4] if target is F.max_pool2d and len(args) > 4 else (
                    args[3] if target is F.avg_pool2d and len(args) > 3
                    else kw.get("ceil_mode", False))
                fn = b.maxpool if target is F.max_pool2d else b.avgpool
                env[node.name] = _emit(b, lname, fn, arg(node.args[0], where), kernel,
                                       stride or None, padding=padding, ceil_mode=bool(ceil))
            elif target is F.adaptive_avg_pool2d:
                size = node.args[1] if len(node.args) > 1 else kw["output_size"]
                env[node.name] = _emit(b, lname, b.adaptive_avgpool, arg(node.args[0], where),
                                       size)
            elif target is F.dropout:
                x = arg(node.args[0], where)
                p = node.args[1] if len(node.args) > 1 else kw.get("p", 0.5)
                active = kw.get("training", node.args[2] if len(node.args) > 2 else True)
                env[node.name] = _emit(b, lname, b.dropout, x, p=p) if (
                    training and active) else x
            else:
                raise GpusimError(f"torch node {where!r}: {target!r} is not supported")
        else:
            raise GpusimError(f"torch node {where!r}: {node.op} is not supported")
    return b.finish()


def _fx_path(node: Any, fallback: str) -> str:
    """A readable path for a function call: the calling module's path + the fx name."""
    stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        return f"{path}.{fallback}" if path else fallback
    return fallback


# ---------------------------------------------------------------------- ONNX
def from_onnx(
    model: Any, *, name: str | None = None, dtype: str = "fp32", training: bool = False,
    batch: int | None = None,
) -> nx.DiGraph:
    """Build the layer graph of an ONNX model (a path or an ``onnx.ModelProto``).

    ``batch`` fills a symbolic batch dimension; it is required when the model's input has
    one and ignored otherwise.
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
    if batch is not None and dims[0] != batch:
        dims[0] = batch
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
            if target is None or len(target) != 2:
                raise GpusimError(f"ONNX node {where!r}: only Reshape to 2-D is supported")
            out = _emit(b, lname, b.flatten, act(node.input[0], where))
        elif op == "Dropout":
            x = act(node.input[0], where)
            out = _emit(b, lname, b.dropout, x, p=float(a.get("ratio", 0.5))) if training else x
        elif op == "Identity":
            out = act(node.input[0], where)
        elif op == "LRN":
            out = _emit(b, lname, b.lrn, act(node.input[0], where), size=int(a["size"]))
        elif op == "Softmax":
            out = _emit(b, lname, b.softmax, act(node.input[0], where))
        else:
            raise GpusimError(f"ONNX node {where!r}: op {op} is not supported")
        env[node.output[0]] = out
    for i, o in enumerate(graph.output):
        b.output(act(o.name, "graph output"), "logits" if i == 0 else f"output{i}")
    return b.finish()
