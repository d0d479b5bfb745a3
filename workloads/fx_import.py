"""PyTorch modules -> layer graphs, by tracing with torch.fx and running on meta tensors.

:func:`from_torch` traces a module with ``torch.fx.symbolic_trace`` (leaf modules are those
of ``torch.nn``), then runs the traced graph on a *meta* tensor of the input shape: every op
computes its output's shape, strides and aliasing, but no data and no FLOPs, so a model of
any size imports in about a second without memory. Each traced node becomes the matching
:class:`~workloads.graph.GraphBuilder` op, named by its module path (``layer1.0.conv1``; a
module called twice gets ``_1``, ``_2`` suffixes; a function call gets the calling module's
path and the fx node name, ``features.1.0.block.2.mul``). The enclosing module is the parent
of the path; branches are not inferred (``branch`` is ``None``).

What PyTorch does with memory layout is kept: ``permute``/``transpose``, ``view``/``reshape``
of a dense tensor and slices (``chunk``, ``split``, ``x[:, :c]``) are views and move nothing;
``contiguous()`` of a strided tensor, a ``reshape`` that cannot be a view, and an op that
needs a dense input (convolution, linear, layer norm, batch norm, pooling) reading a
permuted or sliced tensor get a ``contiguous`` copy first (named ``<op>.contiguous``), as
ATen makes one there. A convolution, batch norm or pooling op takes a channels-last tensor
as it is. Nodes whose value is not a tensor (``x.size(0)``, ``torch._assert``) launch
nothing and add no op.

Supported (anything else that computes a tensor raises :class:`GpusimError` naming the node
and the op):

- modules: ``Conv2d`` (numeric zero padding), ``Linear`` (on any rank), ``BatchNorm2d``,
  ``LayerNorm`` (over the last dim), ``ReLU``, ``ReLU6``, ``SiLU``, ``Hardswish``, ``GELU``,
  ``Sigmoid``, ``Hardsigmoid``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
  ``Dropout``, ``Flatten``, ``Identity``, ``LocalResponseNorm``, ``Softmax``;
- functions and methods: ``+`` / ``add`` and ``*`` / ``mul`` of tensors (``mul`` broadcasts:
  squeeze-and-excitation; a product with a parameter is a layer scale), ``cat`` (dim 1),
  ``flatten``, ``view``/``reshape``/``squeeze``/``unsqueeze``, ``permute``/``transpose``/
  ``swapaxes``, ``contiguous``, ``chunk``/``split`` and slicing, ``mean``, ``relu``,
  ``relu6``, ``silu``, ``hardswish``, ``gelu``, ``sigmoid``, ``hardsigmoid``, ``softmax``,
  ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``, ``layer_norm``, ``dropout`` and
  torchvision's ``stochastic_depth``.

Dropout and stochastic depth follow PyTorch's modes: with ``training=False`` (or ``p = 0``)
they are the identity and add no op.

Parameters: every layer counts the parameters it reads (a convolution its weight and bias,
a layer norm its scale and shift, a layer scale its elements). Parameters of modules the
traced graph never runs in this mode (Inception-v3's auxiliary head in eval mode) are the
graph's ``params_not_in_graph``, so :func:`workloads.registry.param_count` is the model's.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder, Tensor
from workloads.importers import _emit, _Namer
from workloads.layers import OpType


@dataclass
class _Act:
    """An activation: the builder handle and the meta tensor it holds (shape, strides)."""

    handle: Tensor
    value: Any


@dataclass
class _Const:
    """A parameter or buffer read with ``get_attr``."""

    shape: tuple[int, ...]
    is_param: bool


@dataclass
class _Pack:
    """Tensors packed into a tuple (``InceptionOutputs(logits, aux)``): the fx nodes."""

    items: list[Any]


@dataclass
class _Pieces:
    """The outputs of ``chunk``/``split``: slices ``(start, stop)`` of ``dim`` of ``source``."""

    source: _Act
    dim: int
    bounds: list[tuple[int, int]]
    values: list[Any] = field(default_factory=list)


def from_torch(
    module: Any, input_shape: Sequence[int], *, name: str = "torch_model", dtype: str = "fp32",
    training: bool = False, traced: Any = None,
) -> nx.DiGraph:
    """The layer graph of ``module`` (an ``nn.Module``) on an input of ``input_shape`` (see
    the module docstring). ``traced``: its ``torch.fx`` trace, where the caller has one."""
    try:
        import torch
        import torch.fx
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise GpusimError("the torch importer needs PyTorch installed "
                          "(pip install 'gpusim[torch]')") from exc
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise GpusimError(f"torch model {name!r}: bad input shape {shape}")
    if traced is None:
        try:
            traced = torch.fx.symbolic_trace(module)
        except Exception as exc:  # fx raises many types for untraceable code
            raise GpusimError(f"torch.fx cannot trace {name!r}: {exc}") from exc
    tensors = [*traced.parameters(), *traced.buffers()]
    if any(t.device.type != "meta" for t in tensors):
        traced = copy.deepcopy(traced).to("meta")  # shapes only: never touch the weights
    importer = _FxImporter(torch, traced, name, shape, dtype, training)
    graph = importer.run()
    # The trace keeps only the modules it runs: the model's other parameters (a head that
    # this mode skips) are counted from the model itself.
    total = sum(p.numel() for p in module.parameters())
    missing = total - importer.reached_params()
    if missing:
        graph.graph["params_not_in_graph"] = int(missing)
    return graph


class _FxImporter:
    """Runs a traced graph on meta tensors and adds one builder op per tensor op."""

    def __init__(self, torch: Any, traced: Any, name: str, shape: tuple[int, ...], dtype: str,
                 training: bool) -> None:
        self.torch = torch
        self.traced = traced
        self.name = name
        self.shape = shape
        self.training = training
        self.b = GraphBuilder(name, batch=shape[0],
                              resolution=shape[-1] if len(shape) == 4 else None, dtype=dtype,
                              training=training)
        self.namer = _Namer()
        self.env: dict[str, _Act | _Const | _Pieces | _Pack] = {}
        self.inputs = 0
        #: Parameter names the graph reads (the rest belong to modules it never runs).
        self.reached: set[str] = set()
        self.param_names = {n for n, _ in traced.named_parameters()}

    def run(self) -> nx.DiGraph:
        torch = self.torch
        importer = self

        class Runner(torch.fx.Interpreter):  # type: ignore[name-defined]
            def run_node(self, n: Any) -> Any:
                try:
                    value = super().run_node(n)
                except GpusimError:
                    raise
                except Exception as exc:
                    # The builder's checks name what is wrong more plainly (a channel
                    # count) than torch does: give its error where it has one.
                    try:
                        importer.visit(n, None)
                    except GpusimError as mine:
                        raise mine from exc
                    except Exception:  # the builder has nothing to add: torch's error
                        pass
                    raise GpusimError(f"torch node {n.name!r} fails on meta tensors of "
                                      f"input shape {importer.shape}: {exc}") from exc
                importer.visit(n, value)
                return value

        x = torch.empty(self.shape, device="meta")
        runner = Runner(self.traced)
        runner.extra_traceback = False  # our errors name the node already: one line
        with torch.no_grad():
            runner.run(x)
        return self.b.finish()

    def reached_params(self) -> int:
        """Parameters the graph reads (by the modules it calls and the ``get_attr`` nodes)."""
        return sum(p.numel() for n, p in self.traced.named_parameters() if n in self.reached)

    # ------------------------------------------------------------------ arguments
    def act(self, a: Any, where: str) -> _Act:
        entry = self.env.get(a.name) if isinstance(a, self.torch.fx.Node) else None
        if isinstance(entry, _Act):
            return entry
        raise GpusimError(f"torch node {where!r}: expected an activation argument, got {a!r}")

    def is_act(self, a: Any) -> bool:
        return isinstance(a, self.torch.fx.Node) and isinstance(self.env.get(a.name), _Act)

    def const(self, a: Any) -> _Const | None:
        if isinstance(a, self.torch.fx.Node):
            entry = self.env.get(a.name)
            return entry if isinstance(entry, _Const) else None
        return None

    def dense(self, x: _Act, lname: str, *, channels_last: bool = False) -> Tensor:
        """``x`` laid out densely: a ``contiguous`` copy first where ATen makes one."""
        v = x.value
        if v.is_contiguous() or (channels_last and v.dim() == 4 and v.is_contiguous(
                memory_format=self.torch.channels_last)):
            return x.handle
        return _emit(self.b, f"{lname}.contiguous", self.b.contiguous, x.handle)

    def set(self, node: Any, handle: Tensor, value: Any) -> None:
        self.env[node.name] = _Act(handle, value)

    # ------------------------------------------------------------------ nodes
    def visit(self, node: Any, value: Any) -> None:
        torch = self.torch
        where = node.name
        if node.op == "placeholder":
            if self.inputs:
                raise GpusimError(f"torch model {self.name!r}: only one input is supported")
            self.inputs += 1
            self.set(node, self.b.input(self.shape), value)
        elif node.op == "get_attr":
            if isinstance(value, torch.Tensor):
                is_param = str(node.target) in self.param_names
                if is_param:
                    self.reached.add(str(node.target))
                self.env[node.name] = _Const(tuple(value.shape), is_param)
        elif node.op == "output":
            outs = self.unpacked(_flat(node.args[0]))
            for i, o in enumerate(outs):
                self.b.output(self.act(o, where).handle, "logits" if i == 0 else f"output{i}")
        elif node.op == "call_module":
            mod = self.traced.get_submodule(node.target)
            prefix = f"{node.target}."
            self.reached.update(n for n in self.param_names if n.startswith(prefix))
            self.module(node, mod, value)
        elif node.op in ("call_function", "call_method"):
            if isinstance(value, (tuple, list)) and value and all(
                    isinstance(v, torch.Tensor) for v in value):
                self.pieces(node, value)
            elif isinstance(value, torch.Tensor):
                self.function(node, value)
            # else: a Python value (a size, a dim, an assertion): no GPU work, no op
        else:  # pragma: no cover - fx has no other node kinds
            raise GpusimError(f"torch node {where!r}: {node.op} is not supported")

    def module(self, node: Any, mod: Any, value: Any) -> None:
        nn = self.torch.nn
        where = node.name
        x = self.act(node.args[0], where)
        lname = self.namer(str(node.target))
        b = self.b
        out: Tensor
        if isinstance(mod, nn.Conv2d):
            if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
                raise GpusimError(f"torch node {where!r}: only numeric zero padding")
            out = _emit(b, lname, b.conv2d, self.dense(x, lname, channels_last=True),
                        mod.out_channels, tuple(mod.kernel_size), stride=tuple(mod.stride),
                        padding=tuple(mod.padding), dilation=tuple(mod.dilation),
                        groups=mod.groups, bias=mod.bias is not None,
                        in_channels=mod.in_channels)
        elif isinstance(mod, nn.Linear):
            out = _emit(b, lname, b.linear, self.dense(x, lname), mod.out_features,
                        bias=mod.bias is not None, in_features=mod.in_features)
        elif isinstance(mod, nn.BatchNorm2d):
            if not mod.affine:
                raise GpusimError(f"torch node {where!r}: only affine batch norm")
            out = _emit(b, lname, b.batchnorm, self.dense(x, lname, channels_last=True),
                        num_features=mod.num_features)
        elif isinstance(mod, nn.LayerNorm):
            if len(mod.normalized_shape) != 1:
                raise GpusimError(f"torch node {where!r}: only layer norm over the last dim")
            out = _emit(b, lname, b.layernorm, self.dense(x, lname),
                        normalized=mod.normalized_shape[0], affine=mod.elementwise_affine,
                        bias=getattr(mod, "bias", None) is not None)
        elif isinstance(mod, nn.ReLU6):
            out = _emit(b, lname, b.relu6, x.handle)
        elif isinstance(mod, nn.ReLU):
            out = _emit(b, lname, b.relu, x.handle)
        elif type(mod) in self.activation_modules():
            out = _emit(b, lname, b.activation, x.handle, self.activation_modules()[type(mod)])
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            if isinstance(mod, nn.MaxPool2d) and mod.dilation not in (1, (1, 1)):
                raise GpusimError(f"torch node {where!r}: dilated max pooling")
            fn = b.maxpool if isinstance(mod, nn.MaxPool2d) else b.avgpool
            out = _emit(b, lname, fn, self.dense(x, lname, channels_last=True),
                        mod.kernel_size, mod.stride, padding=mod.padding,
                        ceil_mode=mod.ceil_mode)
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            out = _emit(b, lname, b.adaptive_avgpool, self.dense(x, lname, channels_last=True),
                        tuple(value.shape[-2:]))
        elif isinstance(mod, nn.Dropout):
            out = _emit(b, lname, b.dropout, x.handle, p=mod.p) if (
                self.training and mod.training and mod.p > 0) else x.handle
        elif isinstance(mod, nn.Flatten):
            out = self.reshaped(x, value, lname, flatten=(mod.start_dim, mod.end_dim) == (1, -1))
        elif isinstance(mod, nn.Identity):
            out = x.handle
        elif isinstance(mod, nn.LocalResponseNorm):
            out = _emit(b, lname, b.lrn, x.handle, size=mod.size)
        elif isinstance(mod, nn.Softmax):
            self.check_last_dim(mod.dim, value, where)
            out = _emit(b, lname, b.softmax, x.handle)
        else:
            raise GpusimError(
                f"torch node {where!r}: module {type(mod).__name__} is not supported")
        self.set(node, out, value)

    def activation_modules(self) -> dict[type, OpType]:
        nn = self.torch.nn
        return {nn.SiLU: OpType.SILU, nn.Hardswish: OpType.HARDSWISH, nn.GELU: OpType.GELU,
                nn.Sigmoid: OpType.SIGMOID, nn.Hardsigmoid: OpType.HARDSIGMOID}

    def check_last_dim(self, dim: Any, value: Any, where: str) -> None:
        if dim is None or int(dim) % value.dim() != value.dim() - 1:
            raise GpusimError(f"torch node {where!r}: only softmax over the last dim")

    def reshaped(self, x: _Act, value: Any, lname: str, *, flatten: bool) -> Tensor:
        """A view with ``value``'s shape: ``flatten`` when it flattens to ``(N, features)``;
        a ``contiguous`` copy first where ``reshape`` had to copy."""
        src = x.handle
        if not value._is_view() and not x.value.is_contiguous():
            src = _emit(self.b, f"{lname}.contiguous", self.b.contiguous, src)
        shape = tuple(value.shape)
        if shape == src.shape:
            return src
        if (flatten or len(shape) == 2) and len(src.shape) > 2 and shape[0] == src.shape[0]:
            return _emit(self.b, lname, self.b.flatten, src)
        return _emit(self.b, lname, self.b.reshape, src, shape)

    def unpacked(self, nodes: list[Any]) -> list[Any]:
        out = []
        for n in nodes:
            entry = self.env.get(n.name) if isinstance(n, self.torch.fx.Node) else None
            out.extend(self.unpacked(entry.items) if isinstance(entry, _Pack) else [n])
        return out

    def pieces(self, node: Any, value: Sequence[Any]) -> None:
        """``chunk``/``split``: remember the slices; each ``getitem`` adds one. A tuple
        type built from tensors (a namedtuple of outputs) packs them."""
        target = node.target
        if isinstance(target, type) and issubclass(target, tuple):
            self.env[node.name] = _Pack(_flat([*node.args, *node.kwargs.values()]))
            return
        names = {"chunk", "split", "tensor_split"}
        if getattr(target, "__name__", target) not in names:
            raise GpusimError(f"torch node {node.name!r}: {_target_name(target)} returns "
                              "several tensors and is not supported")
        x = self.act(node.args[0], node.name)
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        dim = int(dim) % x.value.dim()
        bounds, start = [], 0
        for v in value:
            size = int(v.shape[dim])
            bounds.append((start, start + size))
            start += size
        self.env[node.name] = _Pieces(x, dim, bounds, list(value))

    def function(self, node: Any, value: Any) -> None:
        torch = self.torch
        F = torch.nn.functional
        target = node.target
        where = node.name
        tname = _target_name(target)
        args, kw = list(node.args), dict(node.kwargs)
        lname = self.namer(_fx_path(node, where))
        b = self.b
        out: Tensor

        def first() -> _Act:
            return self.act(args[0], where)

        packed = self.env.get(args[0].name) if target is operator.getitem else None
        if isinstance(packed, _Pack):
            item = self.act(packed.items[int(args[1])], where)
            self.set(node, item.handle, item.value)
            return
        if target is operator.getitem and isinstance(self.env.get(args[0].name), _Pieces):
            piece = self.env[args[0].name]
            assert isinstance(piece, _Pieces)
            start, stop = piece.bounds[int(args[1])]
            out = _emit(b, lname, b.slice, piece.source.handle, piece.dim, start, stop)
        elif target is operator.getitem:
            out = self.indexed(first(), args[1], value, lname, where)
        elif tname in ("add", "iadd", "add_"):
            xs = [a for a in args[:2]]
            if not all(self.is_act(a) for a in xs) or "alpha" in kw:
                raise GpusimError(f"torch node {where!r}: only the sum of two activations "
                                  "is supported (not a constant or a parameter)")
            out = _emit(b, lname, b.add, [self.act(a, where).handle for a in xs])
        elif tname in ("mul", "imul", "mul_"):
            out = self.product(args[:2], lname, where)
        elif target in (torch.cat, torch.concat, torch.concatenate):
            dim = args[1] if len(args) > 1 else kw.get("dim", 0)
            if int(dim) % value.dim() != 1:
                raise GpusimError(f"torch node {where!r}: only concatenation along dim 1")
            parts = [self.act(a, where).handle for a in args[0]]
            # A one-tensor cat (a DenseNet layer's first) is the tensor, as in the zoo.
            out = parts[0] if len(parts) == 1 else _emit(b, lname, b.concat, parts)
        elif tname == "flatten":
            start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
            out = self.reshaped(first(), value, lname, flatten=(int(start), int(end)) == (1, -1))
        elif tname in ("view", "reshape", "squeeze", "unsqueeze", "view_as", "reshape_as"):
            out = self.reshaped(first(), value, lname, flatten=False)
        elif tname in ("permute", "transpose", "swapaxes", "swapdims", "t"):
            x = first()
            order = _permutation(x.value, value, tname, args, kw, where)
            out = _emit(b, lname, b.permute, x.handle, order)
        elif tname == "contiguous":
            x = first()
            out = x.handle if x.value.is_contiguous() else _emit(b, lname, b.contiguous,
                                                                 x.handle)
        elif tname == "mean":
            x = first()
            dims = args[1] if len(args) > 1 else kw.get("dim")
            if dims is None:
                raise GpusimError(f"torch node {where!r}: only mean over given dims")
            dims = [dims] if isinstance(dims, int) else list(dims)
            keep = bool(args[2] if len(args) > 2 else kw.get("keepdim", False))
            out = _emit(b, lname, b.mean, x.handle, dims, keepdim=keep)
        elif target in (F.relu, torch.relu) or tname in ("relu", "relu_"):
            out = _emit(b, lname, b.relu, first().handle)
        elif target is F.relu6:
            out = _emit(b, lname, b.relu6, first().handle)
        elif self.function_activation(target, tname) is not None:
            kind = self.function_activation(target, tname)
            out = _emit(b, lname, b.activation, first().handle, kind)
        elif target in (F.softmax, torch.softmax) or tname == "softmax":
            dim = args[1] if len(args) > 1 else kw.get("dim")
            self.check_last_dim(dim, value, where)
            out = _emit(b, lname, b.softmax, first().handle)
        elif target in (F.max_pool2d, F.avg_pool2d):
            rest = args[1:]
            kernel = rest[0] if rest else kw["kernel_size"]
            stride = rest[1] if len(rest) > 1 else kw.get("stride")
            padding = rest[2] if len(rest) > 2 else kw.get("padding", 0)
            ceil = rest[4] if target is F.max_pool2d and len(rest) > 4 else (
                rest[3] if target is F.avg_pool2d and len(rest) > 3
                else kw.get("ceil_mode", False))
            fn = b.maxpool if target is F.max_pool2d else b.avgpool
            x = first()
            out = _emit(b, lname, fn, self.dense(x, lname, channels_last=True), kernel,
                        stride or None, padding=padding, ceil_mode=bool(ceil))
        elif target is F.adaptive_avg_pool2d:
            x = first()
            out = _emit(b, lname, b.adaptive_avgpool, self.dense(x, lname, channels_last=True),
                        tuple(value.shape[-2:]))
        elif target is F.layer_norm:
            out = self.layer_norm(args, kw, value, lname, where)
        elif target is F.dropout:
            x = first()
            p = args[1] if len(args) > 1 else kw.get("p", 0.5)
            active = kw.get("training", args[2] if len(args) > 2 else True)
            out = _emit(b, lname, b.dropout, x.handle, p=p) if (
                self.training and active and p > 0) else x.handle
        elif tname == "stochastic_depth":
            x = first()
            p = float(args[1] if len(args) > 1 else kw["p"])
            active = bool(args[3] if len(args) > 3 else kw.get("training", True))
            out = _emit(b, lname, b.stochastic_depth, x.handle, p=p) if (
                self.training and active and p > 0) else x.handle
        else:
            raise GpusimError(f"torch node {where!r}: {tname} is not supported")
        self.set(node, out, value)

    def function_activation(self, target: Any, tname: str) -> OpType | None:
        F = self.torch.nn.functional
        by_function = {F.silu: OpType.SILU, F.hardswish: OpType.HARDSWISH, F.gelu: OpType.GELU,
                       F.sigmoid: OpType.SIGMOID, self.torch.sigmoid: OpType.SIGMOID,
                       F.hardsigmoid: OpType.HARDSIGMOID}
        if target in by_function:
            return by_function[target]
        return {"sigmoid": OpType.SIGMOID, "sigmoid_": OpType.SIGMOID}.get(tname)

    def product(self, operands: Sequence[Any], lname: str, where: str) -> Tensor:
        acts = [a for a in operands if self.is_act(a)]
        consts = [self.const(a) for a in operands if self.const(a) is not None]
        b = self.b
        if len(acts) == 2:
            return _emit(b, lname, b.mul, [self.act(a, where).handle for a in acts])
        if len(acts) == 1 and len(consts) == 1:
            c = consts[0]
            assert c is not None
            if not c.is_param:
                raise GpusimError(f"torch node {where!r}: a product with buffer is not "
                                  "supported (only with a parameter: a layer scale)")
            return _emit(b, lname, b.mul, [self.act(acts[0], where).handle], weight=c.shape)
        raise GpusimError(f"torch node {where!r}: only the product of two activations, or of "
                          "an activation and a parameter, is supported (not a constant)")

    def layer_norm(self, args: list[Any], kw: dict[str, Any], value: Any, lname: str,
                   where: str) -> Tensor:
        x = self.act(args[0], where)
        normalized = args[1] if len(args) > 1 else kw["normalized_shape"]
        if len(normalized) != 1:
            raise GpusimError(f"torch node {where!r}: only layer norm over the last dim")
        weight = self.const(args[2] if len(args) > 2 else kw.get("weight"))
        bias = self.const(args[3] if len(args) > 3 else kw.get("bias"))
        return _emit(self.b, lname, self.b.layernorm, self.dense(x, lname),
                     normalized=int(normalized[0]), affine=weight is not None,
                     bias=bias is not None)

    def indexed(self, x: _Act, index: Any, value: Any, lname: str, where: str) -> Tensor:
        """``x[...]`` with slices: a ``slice`` view when one dim is sliced."""
        items = index if isinstance(index, tuple) else (index,)
        sliced = []
        for dim, item in enumerate(items):
            if not isinstance(item, slice) or item.step not in (None, 1):
                raise GpusimError(f"torch node {where!r}: only indexing with slices "
                                  f"(x[:, a:b]) is supported, got {index!r}")
            if (item.start, item.stop) not in ((None, None),):
                sliced.append(dim)
        shape = tuple(value.shape)
        if shape == x.handle.shape:
            return x.handle
        if len(sliced) != 1:
            raise GpusimError(f"torch node {where!r}: only slicing of one dim is supported")
        dim = sliced[0]
        start, _, _ = items[dim].indices(x.value.shape[dim])
        return _emit(self.b, lname, self.b.slice, x.handle, dim, start,
                     start + int(shape[dim]))


def _flat(args: Any) -> list[Any]:
    if isinstance(args, (tuple, list)):
        return [a for item in args for a in _flat(item)]
    if isinstance(args, dict):
        return [a for item in args.values() for a in _flat(item)]
    return [args] if args is not None else []


def _target_name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def _permutation(src: Any, value: Any, tname: str, args: list[Any], kw: dict[str, Any],
                 where: str) -> tuple[int, ...]:
    rank = src.dim()
    if tname == "permute":
        dims = args[1:] if len(args) > 1 else kw["dims"]
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return tuple(int(d) % rank for d in dims)
    if tname == "t":
        pair = (0, 1)
    else:
        pair = (int(args[1] if len(args) > 1 else kw["dim0"]) % rank,
                int(args[2] if len(args) > 2 else kw["dim1"]) % rank)
    order = list(range(rank))
    order[pair[0]], order[pair[1]] = order[pair[1]], order[pair[0]]
    if tuple(src.shape[i] for i in order) != tuple(value.shape):  # pragma: no cover
        raise GpusimError(f"torch node {where!r}: {tname} does not match its output shape")
    return tuple(order)


def _fx_path(node: Any, fallback: str) -> str:
    """A readable path for a function call: the calling module's path + the fx name."""
    stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        return f"{path}.{fallback}" if path else fallback
    return fallback
