"""Building and checking layer graphs.

:class:`GraphBuilder` is how the model zoo and the importers construct a workload: each
method adds one operation, computes its output shape, parameters, multiply-adds, FLOPs and
minimum DRAM traffic, checks its input (a wrong channel count, a spatial size that does not
fit, shapes that cannot be added or concatenated) and returns a :class:`Tensor` handle for
its output. Scopes give layers torchvision-style names (``inception3a.branch2.0.conv``) and
record the enclosing module and parallel branch.

FLOP estimates of non-GEMM ops, per output element unless stated:
relu 1, relu6 2, batchnorm 2 (inference) / 4 (training: statistics + normalise), maxpool
and avgpool ``kernel area``, adaptive avgpool 1 per *input* element, add ``inputs - 1``,
dropout 1, lrn ``3 + size``, softmax 5, cross-entropy 5 per logit, concat/flatten 0;
ops of imported networks: sigmoid 4 (negate, exp, add, divide), SiLU 5 (sigmoid and a
product), Hardsigmoid 3, Hardswish 4, GELU 8 (erf by a polynomial), mul 1, layer norm 5
(mean, variance, normalise, scale, shift), mean 1 per *input* element, stochastic depth 1,
contiguous and the views 0. Dropout in training also writes a one-byte mask per element.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gpu_models.errors import GpusimError
from workloads.layers import ACTIVATIONS, DTYPE_BYTES, Layer, OpType, dtype_bytes, numel

IntPair = int | tuple[int, int]

#: FLOP per element of the activations of :data:`workloads.layers.ACTIVATIONS`.
ACTIVATION_FLOPS: dict[OpType, int] = {
    OpType.SIGMOID: 4, OpType.SILU: 5, OpType.HARDSIGMOID: 3, OpType.HARDSWISH: 4,
    OpType.GELU: 8,
}


@dataclass(frozen=True)
class Tensor:
    """A handle on a tensor being built: its producing node (``None`` = graph input)."""

    producer: str | None
    shape: tuple[int, ...]


def _as_pair(value: IntPair, what: str, where: str, minimum: int = 0) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (int(value[0]), int(value[1]))
    else:
        raise GpusimError(f"layer {where!r}: {what} must be an int or a pair, got {value!r}")
    if min(pair) < minimum:
        raise GpusimError(f"layer {where!r}: {what} must be >= {minimum}, got {value!r}")
    return pair


def conv_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length along one spatial dim, following PyTorch's conv/pool formula."""
    if min(kernel, stride, dilation) < 1 or padding < 0:
        raise GpusimError(f"kernel, stride and dilation must be >= 1 and padding >= 0 (got "
                          f"kernel={kernel}, stride={stride}, dilation={dilation}, "
                          f"padding={padding})")
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # PyTorch: with ceil_mode the last window must start inside the input or left padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


#: Largest batch size and input resolution a graph may have. Above them a network's grids
#: take hours to simulate (ResNet-50 at batch 65,536 already launches millions of blocks per
#: convolution), or exceed CUDA's grid limits.
MAX_BATCH = 65_536
MAX_RESOLUTION = 4096


class GraphBuilder:
    """Adds validated layers to a networkx ``DiGraph`` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        batch: int,
        resolution: int | None = None,
        dtype: str = "fp32",
        training: bool = False,
    ) -> None:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise GpusimError(f"workload {name!r}: batch must be a positive int, got {batch!r}")
        if batch > MAX_BATCH:
            raise GpusimError(f"workload {name!r}: batch must be <= {MAX_BATCH:,} (gpusim's "
                              f"bound), got {batch:,}")
        if resolution is not None and not 1 <= resolution <= MAX_RESOLUTION:
            raise GpusimError(f"workload {name!r}: resolution must be 1 to {MAX_RESOLUTION:,} "
                              f"(gpusim's bound), got {resolution:,}")
        dtype_bytes(dtype)
        self.graph = nx.DiGraph(
            name=name, batch=batch, resolution=resolution, dtype=dtype,
            phase="training" if training else "inference", outputs=[], output_labels=[],
        )
        self.batch = batch
        self.dtype = dtype
        self.training = training
        self._dsize = DTYPE_BYTES[dtype]
        # Stack of (name, is_branch): names join into the layer path; the first branch
        # scope splits "module" (above it) from "branch" (up to the innermost branch).
        self._scopes: list[tuple[str, bool]] = []
        # (scope depth when entered, label) of the innermost ``branch()`` context.
        self._branch_label: tuple[int, str] | None = None
        # (module, branch) given explicitly by ``labelled()``, overriding the scopes'.
        self._labels: tuple[str, str | None] | None = None

    # ------------------------------------------------------------------ scopes
    @contextlib.contextmanager
    def scope(self, name: str | int, *, branch: bool = False) -> Iterator[None]:
        """Names added inside are prefixed with ``name.``; ``branch=True`` marks a branch."""
        self._scopes.append((str(name), branch))
        try:
            yield
        finally:
            self._scopes.pop()

    @contextlib.contextmanager
    def branch(self, label: str) -> Iterator[None]:
        """Label layers inside as branch ``<module>.<label>`` without changing their names.

        ``<module>`` is the scope path where the context is entered; scopes opened inside
        still extend the layer names but not the module.
        """
        previous = self._branch_label
        self._branch_label = (len(self._scopes), label)
        try:
            yield
        finally:
            self._branch_label = previous

    @contextlib.contextmanager
    def labelled(self, module: str, branch: str | None) -> Iterator[None]:
        """Layers added inside get this ``module`` and ``branch`` (a graph file gives them
        per layer) instead of those the scopes imply."""
        previous = self._labels
        self._labels = (module, branch)
        try:
            yield
        finally:
            self._labels = previous

    def _path(self, local: str) -> str:
        return ".".join([s for s, _ in self._scopes] + [local])

    def _module_and_branch(self) -> tuple[str, str | None]:
        names = [s for s, _ in self._scopes]
        flags = [b for _, b in self._scopes]
        if True in flags:
            first = flags.index(True)
            last = len(flags) - 1 - flags[::-1].index(True)
            return ".".join(names[:first]), ".".join(names[: last + 1])
        if self._branch_label is not None:
            depth, label = self._branch_label
            module = ".".join(names[:depth])
            return module, f"{module}.{label}" if module else label
        return ".".join(names), None

    # ------------------------------------------------------------------ plumbing
    def input(self, shape: Sequence[int]) -> Tensor:
        """The graph input (image batch): no node, just a shape."""
        shape_t = tuple(int(d) for d in shape)
        if not shape_t or min(shape_t) < 1:
            raise GpusimError(f"workload {self.graph.graph['name']!r}: bad input shape {shape_t}")
        return Tensor(None, shape_t)

    def _add(self, local: str, op: OpType, xs: Sequence[Tensor], output: tuple[int, ...],
             **fields: Any) -> Tensor:
        name = self._path(local)
        if name in self.graph:
            raise GpusimError(f"layer {name!r} is defined twice")
        for x in xs:
            if x.producer is not None and x.producer not in self.graph:
                raise GpusimError(f"layer {name!r}: input from unknown layer {x.producer!r}")
        module, branch = self._labels if self._labels is not None else \
            self._module_and_branch()
        fields.setdefault("training", self.training)
        layer = Layer(
            name=name, op=op, inputs=tuple(x.shape for x in xs), output=output,
            dtype=self.dtype, phase="forward", module=module, branch=branch, **fields,
        )
        self.graph.add_node(name, layer=layer)
        for x in xs:
            if x.producer is not None:
                if self.graph.has_edge(x.producer, name):
                    raise GpusimError(f"layer {name!r} reads the output of {x.producer!r} twice")
                self.graph.add_edge(
                    x.producer, name, shape=x.shape, bytes=numel(x.shape) * self._dsize,
                    kind="activation",
                )
        return Tensor(name, output)

    def _rw(self, xs: Sequence[Tensor], output: tuple[int, ...], params: int = 0) -> dict[str, int]:
        read = sum(numel(x.shape) for x in xs) + params
        return {"bytes_read": read * self._dsize, "bytes_written": numel(output) * self._dsize}

    def _expect_nchw(self, x: Tensor, where: str) -> None:
        if len(x.shape) != 4:
            raise GpusimError(f"layer {self._path(where)!r}: expects an NCHW input, got {x.shape}")

    def _check_channels(self, x: Tensor, expected: int | None, where: str) -> None:
        if expected is not None and x.shape[1] != expected:
            raise GpusimError(
                f"layer {self._path(where)!r}: expects {expected} input channels, "
                f"got {x.shape[1]} (input shape {x.shape})"
            )

    def output(self, x: Tensor, label: str = "logits") -> Tensor:
        """Mark ``x`` as a network output (the loss is attached to outputs in training)."""
        if x.producer is None:
            raise GpusimError(f"output {label!r} must be produced by a layer")
        if label in self.graph.graph["output_labels"]:
            raise GpusimError(f"output {label!r} is marked twice")
        self.graph.graph["outputs"].append(x.producer)
        self.graph.graph["output_labels"].append(label)
        return x

    def finish(self) -> nx.DiGraph:
        """The finished graph, validated."""
        validate_graph(self.graph)
        return self.graph

    # ------------------------------------------------------------------ GEMM ops
    def conv2d(
        self, x: Tensor, out_channels: int, kernel: IntPair, *, stride: IntPair = 1,
        padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = False,
        in_channels: int | None = None, name: str = "conv",
    ) -> Tensor:
        """2-D convolution (torch ``nn.Conv2d``)."""
        self._expect_nchw(x, name)
        self._check_channels(x, in_channels, name)
        where = self._path(name)
        k, s = _as_pair(kernel, "kernel", where, 1), _as_pair(stride, "stride", where, 1)
        p, d = _as_pair(padding, "padding", where), _as_pair(dilation, "dilation", where, 1)
        n, c, h, w = x.shape
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) \
                or out_channels < 1:
            raise GpusimError(f"layer {where!r}: out_channels must be a positive int, "
                              f"got {out_channels!r}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise GpusimError(f"layer {where!r}: groups must be a positive int, got {groups!r}")
        if c % groups or out_channels % groups:
            raise GpusimError(
                f"layer {where!r}: channels {c}->{out_channels} not divisible by groups={groups}"
            )
        oh = conv_output_size(h, k[0], s[0], p[0], d[0])
        ow = conv_output_size(w, k[1], s[1], p[1], d[1])
        if oh < 1 or ow < 1:
            raise GpusimError(f"layer {where!r}: input {x.shape} too small for kernel {k}")
        out = (n, out_channels, oh, ow)
        weights = out_channels * (c // groups) * k[0] * k[1]
        params = weights + (out_channels if bias else 0)
        macs = numel(out) * (c // groups) * k[0] * k[1]
        flops = 2 * macs + (numel(out) if bias else 0)
        return self._add(
            name, OpType.CONV2D, [x], out, kernel=k, stride=s, padding=p, dilation=d,
            groups=groups, params=params, macs=macs, flops=flops, bias=bias,
            **self._rw([x], out, params),
        )

    def linear(
        self, x: Tensor, out_features: int, *, bias: bool = True,
        in_features: int | None = None, name: str = "fc",
    ) -> Tensor:
        """Fully connected layer (torch ``nn.Linear``) on the last dim of ``x``.

        ``x`` is ``(N, F)``, or of higher rank (``(N, H, W, F)``, ``(N, S, F)``): every row
        of the leading dims is transformed, one GEMM with ``prod(leading dims)`` rows.
        """
        where = self._path(name)
        if len(x.shape) < 2:
            raise GpusimError(f"layer {where!r}: expects an (N, ..., F) input, got {x.shape}")
        if isinstance(out_features, bool) or not isinstance(out_features, int) \
                or out_features < 1:
            raise GpusimError(f"layer {where!r}: out_features must be a positive int, "
                              f"got {out_features!r}")
        if in_features is not None and x.shape[-1] != in_features:
            raise GpusimError(
                f"layer {where!r}: expects {in_features} input features, got {x.shape[-1]}"
            )
        f = x.shape[-1]
        out = (*x.shape[:-1], out_features)
        params = f * out_features + (out_features if bias else 0)
        macs = numel(x.shape[:-1]) * f * out_features
        flops = 2 * macs + (numel(out) if bias else 0)
        return self._add(
            name, OpType.LINEAR, [x], out, params=params, macs=macs, flops=flops, bias=bias,
            **self._rw([x], out, params),
        )

    # ------------------------------------------------------------------ elementwise
    def batchnorm(self, x: Tensor, *, num_features: int | None = None, name: str = "bn") -> Tensor:
        """Batch normalisation (2 parameters per channel; running stats are buffers)."""
        self._check_channels(x, num_features, name)
        params = 2 * x.shape[1]
        per_elem = 4 if self.training else 2
        return self._add(
            name, OpType.BATCHNORM, [x], x.shape, params=params,
            flops=per_elem * numel(x.shape), **self._rw([x], x.shape, params),
        )

    def relu(self, x: Tensor, *, name: str = "relu") -> Tensor:
        """ReLU (in-place or not, the traffic is the same)."""
        return self._add(name, OpType.RELU, [x], x.shape, flops=numel(x.shape),
                         **self._rw([x], x.shape))

    def relu6(self, x: Tensor, *, name: str = "relu6") -> Tensor:
        """ReLU6 (clamp to [0, 6])."""
        return self._add(name, OpType.RELU6, [x], x.shape, flops=2 * numel(x.shape),
                         **self._rw([x], x.shape))

    def dropout(self, x: Tensor, *, p: float = 0.5, name: str = "dropout") -> Tensor:
        """Dropout; callers add it only in training (eval-mode dropout runs no kernel)."""
        if not 0.0 <= p < 1.0:
            raise GpusimError(f"layer {self._path(name)!r}: dropout p must be in [0, 1), got {p}")
        rw = self._rw([x], x.shape)
        rw["bytes_written"] += numel(x.shape)  # the one-byte keep mask saved for backward
        return self._add(name, OpType.DROPOUT, [x], x.shape, flops=numel(x.shape), **rw)

    def lrn(self, x: Tensor, *, size: int = 5, name: str = "lrn") -> Tensor:
        """Local response normalisation across ``size`` channels."""
        return self._add(
            name, OpType.LRN, [x], x.shape, kernel=(1, 1), flops=(3 + size) * numel(x.shape),
            **self._rw([x], x.shape),
        )

    def softmax(self, x: Tensor, *, name: str = "softmax") -> Tensor:
        """Softmax over the last dim."""
        return self._add(name, OpType.SOFTMAX, [x], x.shape, flops=5 * numel(x.shape),
                         **self._rw([x], x.shape))

    # ------------------------------------------------------------------ pooling
    def _pool(self, op: OpType, x: Tensor, kernel: IntPair, stride: IntPair | None,
              padding: IntPair, ceil_mode: bool, name: str) -> Tensor:
        self._expect_nchw(x, name)
        where = self._path(name)
        k = _as_pair(kernel, "kernel", where, 1)
        s = _as_pair(stride if stride is not None else kernel, "stride", where, 1)
        p = _as_pair(padding, "padding", where)
        if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
            raise GpusimError(f"layer {where!r}: padding {p} exceeds half the kernel {k}")
        n, c, h, w = x.shape
        oh = conv_output_size(h, k[0], s[0], p[0], 1, ceil_mode)
        ow = conv_output_size(w, k[1], s[1], p[1], 1, ceil_mode)
        if oh < 1 or ow < 1:
            raise GpusimError(f"layer {where!r}: input {x.shape} too small for kernel {k}")
        out = (n, c, oh, ow)
        return self._add(
            name, op, [x], out, kernel=k, stride=s, padding=p, ceil_mode=ceil_mode,
            flops=numel(out) * k[0] * k[1], **self._rw([x], out),
        )

    def maxpool(self, x: Tensor, kernel: IntPair, stride: IntPair | None = None, *,
                padding: IntPair = 0, ceil_mode: bool = False, name: str = "maxpool") -> Tensor:
        """Max pooling (torch ``nn.MaxPool2d``; ``stride`` defaults to ``kernel``)."""
        return self._pool(OpType.MAXPOOL, x, kernel, stride, padding, ceil_mode, name)

    def avgpool(self, x: Tensor, kernel: IntPair, stride: IntPair | None = None, *,
                padding: IntPair = 0, ceil_mode: bool = False, name: str = "avgpool") -> Tensor:
        """Average pooling (torch ``nn.AvgPool2d``)."""
        return self._pool(OpType.AVGPOOL, x, kernel, stride, padding, ceil_mode, name)

    def adaptive_avgpool(self, x: Tensor, output_size: IntPair = 1, *,
                         name: str = "avgpool") -> Tensor:
        """Adaptive average pooling to ``output_size`` (torch ``nn.AdaptiveAvgPool2d``)."""
        self._expect_nchw(x, name)
        oh, ow = _as_pair(output_size, "output_size", self._path(name), 1)
        out = (x.shape[0], x.shape[1], oh, ow)
        return self._add(name, OpType.ADAPTIVE_AVGPOOL, [x], out, flops=numel(x.shape),
                         **self._rw([x], out))

    # ------------------------------------------------------------------ structure
    def add(self, xs: Sequence[Tensor], *, name: str = "add") -> Tensor:
        """Elementwise sum of two or more tensors of identical shape (residuals)."""
        if len(xs) < 2:
            raise GpusimError(f"layer {self._path(name)!r}: add needs at least two inputs")
        for x in xs[1:]:
            if x.shape != xs[0].shape:
                raise GpusimError(
                    f"layer {self._path(name)!r}: cannot add shapes {xs[0].shape} and {x.shape}"
                )
        out = xs[0].shape
        return self._add(name, OpType.ADD, xs, out, flops=(len(xs) - 1) * numel(out),
                         **self._rw(xs, out))

    def concat(self, xs: Sequence[Tensor], *, name: str = "cat") -> Tensor:
        """Concatenate along channels (dim 1); other dims must agree."""
        if len(xs) < 2:
            raise GpusimError(f"layer {self._path(name)!r}: concat needs at least two inputs")
        first = xs[0].shape
        for x in xs[1:]:
            if len(x.shape) != len(first) or x.shape[:1] + x.shape[2:] != first[:1] + first[2:]:
                raise GpusimError(
                    f"layer {self._path(name)!r}: cannot concatenate {first} and {x.shape} "
                    "along channels"
                )
        out = (first[0], sum(x.shape[1] for x in xs), *first[2:])
        return self._add(name, OpType.CONCAT, xs, out, **self._rw(xs, out))

    def flatten(self, x: Tensor, *, name: str = "flatten") -> Tensor:
        """Flatten to ``(N, features)``: a view, no traffic."""
        out = (x.shape[0], numel(x.shape[1:]))
        return self._add(name, OpType.FLATTEN, [x], out)

    # ------------------------------------------------------------------ imported networks
    def activation(self, x: Tensor, op: OpType | str, *, name: str | None = None) -> Tensor:
        """An elementwise activation: ``silu``, ``hardswish``, ``gelu``, ``sigmoid`` or
        ``hardsigmoid`` (torch ``nn.SiLU``, ...)."""
        try:
            kind = OpType(op)
        except ValueError:
            kind = None
        if kind not in ACTIVATIONS:
            valid = ", ".join(sorted(a.value for a in ACTIVATIONS))
            raise GpusimError(f"layer {self._path(name or str(op))!r}: {op!r} is not an "
                              f"activation; valid: {valid}")
        assert kind is not None
        return self._add(name or kind.value, kind, [x], x.shape,
                         flops=ACTIVATION_FLOPS[kind] * numel(x.shape), **self._rw([x], x.shape))

    def mul(self, xs: Sequence[Tensor], *, weight: Sequence[int] | None = None,
            name: str = "mul") -> Tensor:
        """Elementwise product, broadcasting as torch does: of two tensors (``xs``; a
        squeeze-and-excitation block scales ``(N, C, H, W)`` by ``(N, C, 1, 1)``), or of one
        tensor and a learned operand of shape ``weight`` (a layer scale; its elements are
        parameters). The output has the broadcast shape."""
        where = self._path(name)
        if weight is None and len(xs) != 2:
            raise GpusimError(f"layer {where!r}: mul needs two inputs, or one and a weight")
        if weight is not None and len(xs) != 1:
            raise GpusimError(f"layer {where!r}: mul with a weight takes one input")
        shapes = [x.shape for x in xs]
        params = 0
        if weight is not None:
            w = tuple(weight)
            if not w or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                for d in w):
                raise GpusimError(f"layer {where!r}: weight must be a shape of positive "
                                  f"ints, got {weight!r}")
            shapes.append(w)
            params = numel(w)
        out = broadcast_shape(shapes[0], shapes[1], where)
        if weight is not None and out != xs[0].shape:
            raise GpusimError(f"layer {where!r}: a weight of shape {tuple(weight)} must "
                              f"broadcast to the input {xs[0].shape}")
        return self._add(name, OpType.MUL, xs, out, params=params, flops=numel(out),
                         attrs=tuple(weight) if weight is not None else (),
                         **self._rw(xs, out, params))

    def layernorm(self, x: Tensor, *, normalized: int | None = None, affine: bool = True,
                  bias: bool = True, name: str = "ln") -> Tensor:
        """Layer normalisation over the last dim (torch ``nn.LayerNorm(C)``; ConvNeXt's
        ``LayerNorm2d`` is one on a permuted tensor). ``affine``: a learned scale per
        element of that dim, and with ``bias`` a shift."""
        where = self._path(name)
        if normalized is not None and x.shape[-1] != normalized:
            raise GpusimError(f"layer {where!r}: normalizes {normalized} features but the "
                              f"input's last dim is {x.shape[-1]} (input shape {x.shape})")
        params = x.shape[-1] * ((1 + int(bias)) if affine else 0)
        return self._add(name, OpType.LAYERNORM, [x], x.shape, params=params,
                         flops=5 * numel(x.shape),
                         **self._rw([x], x.shape, params))

    def mean(self, x: Tensor, dims: Sequence[int], *, keepdim: bool = False,
             name: str = "mean") -> Tensor:
        """Mean over ``dims`` (``x.mean((2, 3))``: a global average pool to ``(N, C)``)."""
        where = self._path(name)
        axes = _dims(dims, len(x.shape), where)
        if not axes:
            raise GpusimError(f"layer {where!r}: mean needs at least one dim")
        out = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keepdim else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        if not out:
            raise GpusimError(f"layer {where!r}: mean over every dim leaves no tensor")
        return self._add(name, OpType.MEAN, [x], out, flops=numel(x.shape), attrs=axes,
                         **self._rw([x], out))

    def reshape(self, x: Tensor, shape: Sequence[int], *, name: str = "reshape") -> Tensor:
        """A view with another shape (``view``/``reshape`` of a dense tensor): no traffic.

        ``shape`` is the whole output shape; as in ONNX, ``0`` copies the input's dim at
        that position (the batch stays the batch when ``--batch`` changes) and one ``-1``
        is inferred.
        """
        where = self._path(name)
        dims = list(shape)
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1
                               for d in dims):
            raise GpusimError(f"layer {where!r}: shape must be ints >= -1, got {shape!r}")
        for i, d in enumerate(dims):
            if d == 0:
                if i >= len(x.shape):
                    raise GpusimError(f"layer {where!r}: shape {list(shape)} copies dim {i} "
                                      f"(0), which the input {x.shape} does not have")
                dims[i] = x.shape[i]
        if dims.count(-1) > 1:
            raise GpusimError(f"layer {where!r}: shape {list(shape)} has more than one -1")
        known = math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if numel(x.shape) % known:
                raise GpusimError(f"layer {where!r}: cannot reshape {x.shape} to "
                                  f"{list(shape)}")
            dims[dims.index(-1)] = numel(x.shape) // known
        out = tuple(dims)
        if numel(out) != numel(x.shape):
            raise GpusimError(f"layer {where!r}: cannot reshape {x.shape} "
                              f"({numel(x.shape)} elements) to {out} ({numel(out)})")
        return self._add(name, OpType.RESHAPE, [x], out)

    def permute(self, x: Tensor, dims: Sequence[int], *, name: str = "permute") -> Tensor:
        """Reorder the dims (``permute``/``transpose``): a strided view, no traffic."""
        where = self._path(name)
        order = _dims(dims, len(x.shape), where, ordered=True)
        if sorted(order) != list(range(len(x.shape))):
            raise GpusimError(f"layer {where!r}: dims {list(dims)} are not a permutation of "
                              f"the input's {len(x.shape)} dims")
        out = tuple(x.shape[i] for i in order)
        return self._add(name, OpType.PERMUTE, [x], out, attrs=order)

    def slice(self, x: Tensor, dim: int, start: int, stop: int, *,
              name: str = "slice") -> Tensor:
        """Elements ``start:stop`` of dim ``dim`` (``chunk``, ``split``): a view."""
        where = self._path(name)
        (axis,) = _dims([dim], len(x.shape), where)
        size = x.shape[axis]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop)) \
                or not 0 <= start < stop <= size:
            raise GpusimError(f"layer {where!r}: slice {start}:{stop} of dim {axis} is not "
                              f"within 0:{size}")
        out = tuple(stop - start if i == axis else d for i, d in enumerate(x.shape))
        return self._add(name, OpType.SLICE, [x], out, attrs=(axis, start, stop))

    def contiguous(self, x: Tensor, *, name: str = "contiguous") -> Tensor:
        """The dense copy of a permuted or sliced tensor (``x.contiguous()``)."""
        return self._add(name, OpType.CONTIGUOUS, [x], x.shape, **self._rw([x], x.shape))

    def stochastic_depth(self, x: Tensor, *, p: float, name: str = "stochastic_depth",
                         ) -> Tensor:
        """Stochastic depth (torchvision ``StochasticDepth``): each sample's residual is
        dropped with probability ``p``. Training only: callers add it only in training,
        where it multiplies by a per-sample mask (in inference it is the identity)."""
        if not 0.0 <= p < 1.0:
            raise GpusimError(f"layer {self._path(name)!r}: stochastic depth p must be in "
                              f"[0, 1), got {p}")
        return self._add(name, OpType.STOCHASTIC_DEPTH, [x], x.shape, flops=numel(x.shape),
                         **self._rw([x], x.shape))


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The shape two tensors broadcast to (numpy/torch rules), or an error naming ``where``."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != db and 1 not in (da, db):
            raise GpusimError(f"layer {where!r}: shapes {a} and {b} do not broadcast")
        out.append(max(da, db))
    return tuple(reversed(out))


def _dims(dims: Sequence[int], rank: int, where: str, *, ordered: bool = False,
          ) -> tuple[int, ...]:
    """Dims as non-negative indices (``-1`` = last); sorted and unique unless ``ordered``."""
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not -rank <= d < rank:
            raise GpusimError(f"layer {where!r}: dim {d!r} is out of range for a "
                              f"{rank}-d input")
        out.append(d % rank)
    if ordered:
        return tuple(out)
    if len(set(out)) != len(out):
        raise GpusimError(f"layer {where!r}: dims {list(dims)} repeat a dim")
    return tuple(sorted(out))


def validate_graph(graph: nx.DiGraph) -> None:
    """Check a layer graph: acyclic, every node has a Layer, edge shapes match.

    Raises :class:`GpusimError` naming the first offending layer or edge.
    """
    name = graph.graph.get("name", "?")
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise GpusimError(
            f"workload {name!r}: graph has a cycle through layer {cycle[0][0]!r} "
            f"({' -> '.join(str(u) for u, _ in cycle)})"
        )
    for node, data in graph.nodes(data=True):
        layer = data.get("layer")
        if not isinstance(layer, Layer):
            raise GpusimError(f"workload {name!r}: node {node!r} has no Layer")
        if layer.name != node:
            raise GpusimError(f"workload {name!r}: node {node!r} carries layer {layer.name!r}")
    for u, v, data in graph.edges(data=True):
        shape = data.get("shape")
        dst = graph.nodes[v]["layer"]
        if shape is None or "bytes" not in data:
            raise GpusimError(f"edge {u!r} -> {v!r}: missing shape/bytes")
        if data.get("kind") == "activation":
            src = graph.nodes[u]["layer"]
            if tuple(shape) != src.output:
                raise GpusimError(
                    f"edge {u!r} -> {v!r}: carries {shape} but layer {u!r} outputs {src.output}"
                )
            if tuple(shape) not in dst.inputs:
                raise GpusimError(
                    f"edge {u!r} -> {v!r}: layer {v!r} has no input of shape {shape}"
                )
        if data["bytes"] != math.prod(shape) * dst.dtype_bytes:
            raise GpusimError(f"edge {u!r} -> {v!r}: bytes do not match shape {shape}")


def framework_index(graph: nx.DiGraph) -> dict[Any, int]:
    """Position of every node in the graph's insertion order.

    Graphs are built in the order a framework issues their ops (forward in module order,
    backward as autograd runs it), and lowering keeps that order for the kernels it adds.
    """
    return {node: i for i, node in enumerate(graph.nodes)}


def framework_order(graph: nx.DiGraph) -> list[Any]:
    """The order a framework launches the graph's ops (or kernels) in, on one stream.

    Insertion order where it is topological (every graph the builders make); otherwise the
    topological order that always takes the earliest-inserted ready node.
    """
    index = framework_index(graph)
    return list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
