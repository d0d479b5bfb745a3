"""Layer descriptions: one frozen record per operation of a network graph.

A workload is a networkx ``DiGraph`` whose nodes are operations (keyed by their readable
name) and whose edges are the tensors flowing between them. Every node carries one
:class:`Layer` under the node attribute ``"layer"``; every edge carries ``shape`` (tuple of
ints), ``bytes`` (int, ``prod(shape) * dtype size``) and ``kind`` (``"activation"`` for a
forward tensor, ``"gradient"`` for a gradient, ``"saved"`` for a forward tensor saved for the
backward pass, ``"weight_grad"`` for a parameter gradient going to the optimizer).
For forward ops, ``graph.predecessors(node)`` lists the producers in the order of
``inputs``; the image batch (the graph input) has no node, so an op reading it has fewer
predecessors than inputs.

Fields of :class:`Layer` (all counts are for the whole batch):

``name``
    Unique readable name, torchvision-style (``inception3a.branch2.0.conv``). Backward and
    optimizer ops append a suffix to their forward layer's name (``.dgrad``, ``.wgrad``,
    ``.bwd``, ``.update``, ``.grad_accum``).
``op``
    The :class:`OpType`.
``inputs``
    Shapes of the tensors the op reads, in order (NCHW for images, ``(N, F)`` for
    features). For backward ops: the incoming gradient first, then the saved forward
    tensors it needs (``conv2d_wgrad``: ``(grad_out, x)``; ``relu_bwd``: ``(grad_out, y)``).
``output``
    Shape of the tensor the op writes. ``conv2d_dgrad`` writes the input gradient (shape of
    the forward input); ``conv2d_wgrad``/``linear_wgrad`` write the weight gradient
    (``(K, C/groups, R, S)`` / ``(out, in)``); ``sgd_update`` writes ``(params,)``.
``kernel``, ``stride``, ``padding``, ``dilation``
    ``(height, width)`` pairs for convolutions and pooling (``(1, 1)``/``(0, 0)`` where they
    do not apply). Backward ops copy them from their forward op.
``groups``
    Convolution groups (1 = dense, ``C`` = depthwise).
``dtype``
    Storage type of activations and weights: ``"fp32"`` (default), ``"fp16"`` or ``"bf16"``.
``params``
    Number of trainable parameters the op owns (forward op) or reads/updates (backward and
    optimizer ops copy the forward op's count). Summing ``params`` over *forward* nodes gives
    the model's parameter count.
``macs``
    Multiply-adds of convolutions and matrix products (0 for every other op), the figure
    torchvision publishes as "GFLOPS". ``conv2d_dgrad``/``conv2d_wgrad`` (and the linear
    equivalents) each cost the forward op's ``macs``.
``flops``
    Floating-point operations: ``2 * macs`` for conv/linear ops (+ bias adds), an
    elementwise estimate for the rest (documented per op in :mod:`workloads.graph`).
``bytes_read``, ``bytes_written``
    Minimum DRAM traffic in bytes: every input tensor and the weights read once, the output
    written once. View ops (``flatten``, ``add_bwd``, ``concat_bwd``, ``flatten_bwd``) move
    nothing; lowering emits no kernel for them (see :attr:`Layer.is_view`).
``phase``
    ``"forward"``, ``"loss"``, ``"backward"`` or ``"optimizer"``.
``forward_of``
    For backward/optimizer ops, the name of the forward layer they belong to; else ``None``.
``module``
    The enclosing module path (``inception3a``, ``layer1.0``); ``""`` at top level.
``branch``
    The parallel branch the op belongs to (``inception3a.branch2``), or ``None``. Policies
    use it to put each branch on its own stream.
``training``
    Whether a forward op runs in training mode (batch-norm batch statistics, active dropout).
``bias``
    Whether a conv/linear op adds a bias (counted in ``params``).
``ceil_mode``
    Pooling output-size rounding (torch ``ceil_mode``).
``attrs``
    The integers an op needs beyond its shapes, where it has any (``()`` otherwise):
    ``permute``: the permutation; ``mean``: the reduced dims; ``slice``: ``(dim, start,
    stop)``; ``mul``: the shape of its learned operand (``()`` when it multiplies two
    activations). Backward ops copy them.

Ops of imported networks (:mod:`workloads.importers`, :mod:`workloads.graphfile`) beyond the
zoo's: the activations SiLU, Hardswish, GELU, sigmoid and Hardsigmoid; ``mul`` (elementwise
product with broadcasting: squeeze-and-excitation scales, layer scales); ``layernorm`` (over
the last dim); ``mean`` (a reduction over dims); the views ``reshape``, ``permute`` and
``slice``, which move nothing (as in PyTorch), and ``contiguous``, the copy that PyTorch
makes where an op needs a permuted or sliced tensor laid out densely; and
``stochastic_depth`` (training only: in inference it is the identity and adds no op).
``linear`` applies to the last dim of an input of any rank (a transformer's or ConvNeXt's
MLP on ``(N, H, W, C)``), as ``nn.Linear`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from gpu_models.errors import GpusimError

#: Bytes per element of each supported storage type.
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2}

PHASES: tuple[str, ...] = ("forward", "loss", "backward", "optimizer")


class OpType(StrEnum):
    """Kinds of operation. The value is the string used in JSON and the CLI."""

    # forward
    CONV2D = "conv2d"
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    RELU = "relu"
    RELU6 = "relu6"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    ADAPTIVE_AVGPOOL = "adaptive_avgpool"
    ADD = "add"
    CONCAT = "concat"
    DROPOUT = "dropout"
    FLATTEN = "flatten"
    LRN = "lrn"
    SOFTMAX = "softmax"
    # forward, ops of imported networks (see the module docstring)
    SILU = "silu"
    HARDSWISH = "hardswish"
    GELU = "gelu"
    SIGMOID = "sigmoid"
    HARDSIGMOID = "hardsigmoid"
    MUL = "mul"
    LAYERNORM = "layernorm"
    MEAN = "mean"
    RESHAPE = "reshape"
    PERMUTE = "permute"
    SLICE = "slice"
    CONTIGUOUS = "contiguous"
    STOCHASTIC_DEPTH = "stochastic_depth"
    # loss
    CROSS_ENTROPY = "cross_entropy"
    # backward
    CONV2D_DGRAD = "conv2d_dgrad"
    CONV2D_WGRAD = "conv2d_wgrad"
    LINEAR_DGRAD = "linear_dgrad"
    LINEAR_WGRAD = "linear_wgrad"
    BATCHNORM_BWD = "batchnorm_bwd"
    RELU_BWD = "relu_bwd"
    RELU6_BWD = "relu6_bwd"
    MAXPOOL_BWD = "maxpool_bwd"
    AVGPOOL_BWD = "avgpool_bwd"
    ADAPTIVE_AVGPOOL_BWD = "adaptive_avgpool_bwd"
    ADD_BWD = "add_bwd"
    CONCAT_BWD = "concat_bwd"
    DROPOUT_BWD = "dropout_bwd"
    FLATTEN_BWD = "flatten_bwd"
    LRN_BWD = "lrn_bwd"
    SOFTMAX_BWD = "softmax_bwd"
    CROSS_ENTROPY_BWD = "cross_entropy_bwd"
    SILU_BWD = "silu_bwd"
    HARDSWISH_BWD = "hardswish_bwd"
    GELU_BWD = "gelu_bwd"
    SIGMOID_BWD = "sigmoid_bwd"
    HARDSIGMOID_BWD = "hardsigmoid_bwd"
    #: Gradient of one input of a ``mul`` (and of its learned operand, if it has one).
    MUL_BWD = "mul_bwd"
    LAYERNORM_BWD = "layernorm_bwd"
    MEAN_BWD = "mean_bwd"
    RESHAPE_BWD = "reshape_bwd"
    PERMUTE_BWD = "permute_bwd"
    #: The slice's gradient written into a zeroed gradient of the whole tensor.
    SLICE_BWD = "slice_bwd"
    CONTIGUOUS_BWD = "contiguous_bwd"
    STOCHASTIC_DEPTH_BWD = "stochastic_depth_bwd"
    #: Sum of the gradients arriving at a tensor that fanned out in the forward pass.
    GRAD_ACCUMULATE = "grad_accumulate"
    # optimizer
    SGD_UPDATE = "sgd_update"


#: Convolution-like ops (implicit GEMM kernels).
CONV_OPS: frozenset[OpType] = frozenset(
    {OpType.CONV2D, OpType.CONV2D_DGRAD, OpType.CONV2D_WGRAD}
)
#: Matrix-product ops.
GEMM_OPS: frozenset[OpType] = frozenset(
    {OpType.LINEAR, OpType.LINEAR_DGRAD, OpType.LINEAR_WGRAD}
)
#: Ops that only reinterpret or alias memory: no kernel, no traffic.
VIEW_OPS: frozenset[OpType] = frozenset(
    {OpType.FLATTEN, OpType.FLATTEN_BWD, OpType.ADD_BWD, OpType.CONCAT_BWD,
     OpType.RESHAPE, OpType.RESHAPE_BWD, OpType.PERMUTE, OpType.PERMUTE_BWD, OpType.SLICE,
     OpType.CONTIGUOUS_BWD}
)
#: Elementwise activations of imported networks (one output element per input element).
ACTIVATIONS: frozenset[OpType] = frozenset(
    {OpType.SILU, OpType.HARDSWISH, OpType.GELU, OpType.SIGMOID, OpType.HARDSIGMOID}
)
#: Forward op -> its backward op, for ops with a single ``<op>_bwd`` counterpart.
BACKWARD_OF: dict[OpType, OpType] = {
    OpType.BATCHNORM: OpType.BATCHNORM_BWD,
    OpType.RELU: OpType.RELU_BWD,
    OpType.RELU6: OpType.RELU6_BWD,
    OpType.MAXPOOL: OpType.MAXPOOL_BWD,
    OpType.AVGPOOL: OpType.AVGPOOL_BWD,
    OpType.ADAPTIVE_AVGPOOL: OpType.ADAPTIVE_AVGPOOL_BWD,
    OpType.ADD: OpType.ADD_BWD,
    OpType.CONCAT: OpType.CONCAT_BWD,
    OpType.DROPOUT: OpType.DROPOUT_BWD,
    OpType.FLATTEN: OpType.FLATTEN_BWD,
    OpType.LRN: OpType.LRN_BWD,
    OpType.SOFTMAX: OpType.SOFTMAX_BWD,
    OpType.CROSS_ENTROPY: OpType.CROSS_ENTROPY_BWD,
    OpType.SILU: OpType.SILU_BWD,
    OpType.HARDSWISH: OpType.HARDSWISH_BWD,
    OpType.GELU: OpType.GELU_BWD,
    OpType.SIGMOID: OpType.SIGMOID_BWD,
    OpType.HARDSIGMOID: OpType.HARDSIGMOID_BWD,
    OpType.MUL: OpType.MUL_BWD,
    OpType.LAYERNORM: OpType.LAYERNORM_BWD,
    OpType.MEAN: OpType.MEAN_BWD,
    OpType.RESHAPE: OpType.RESHAPE_BWD,
    OpType.PERMUTE: OpType.PERMUTE_BWD,
    OpType.SLICE: OpType.SLICE_BWD,
    OpType.CONTIGUOUS: OpType.CONTIGUOUS_BWD,
    OpType.STOCHASTIC_DEPTH: OpType.STOCHASTIC_DEPTH_BWD,
}


def numel(shape: tuple[int, ...]) -> int:
    """Number of elements of a tensor of ``shape``."""
    return math.prod(shape)


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of ``dtype``; :class:`GpusimError` for an unknown type."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise GpusimError(
            f"dtype {dtype!r} is not supported; valid: {', '.join(DTYPE_BYTES)}"
        ) from None


def _pair(name: str, field: str, value: tuple[int, int], minimum: int) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise GpusimError(f"layer {name!r}: {field} must be a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise GpusimError(f"layer {name!r}: {field} must be >= {minimum}, got {value!r}")


def _shape(name: str, field: str, shape: object) -> None:
    if (
        not isinstance(shape, tuple)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise GpusimError(
            f"layer {name!r}: {field} must be a non-empty tuple of positive ints, got {shape!r}"
        )


@dataclass(frozen=True)
class Layer:
    """One operation of a workload graph (see the module docstring for every field)."""

    name: str
    op: OpType
    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    dtype: str = "fp32"
    params: int = 0
    macs: int = 0
    flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    phase: str = "forward"
    forward_of: str | None = None
    module: str = ""
    branch: str | None = None
    training: bool = False
    bias: bool = False
    ceil_mode: bool = False
    attrs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GpusimError(f"layer name must be a non-empty string, got {self.name!r}")
        try:
            object.__setattr__(self, "op", OpType(self.op))
        except ValueError:
            raise GpusimError(f"layer {self.name!r}: unknown op {self.op!r}") from None
        if not isinstance(self.inputs, tuple):
            raise GpusimError(f"layer {self.name!r}: inputs must be a tuple of shapes")
        for i, shape in enumerate(self.inputs):
            _shape(self.name, f"inputs[{i}]", shape)
        _shape(self.name, "output", self.output)
        _pair(self.name, "kernel", self.kernel, 1)
        _pair(self.name, "stride", self.stride, 1)
        _pair(self.name, "padding", self.padding, 0)
        _pair(self.name, "dilation", self.dilation, 1)
        if not isinstance(self.groups, int) or self.groups < 1:
            raise GpusimError(f"layer {self.name!r}: groups must be >= 1, got {self.groups!r}")
        if self.dtype not in DTYPE_BYTES:
            raise GpusimError(
                f"layer {self.name!r}: dtype {self.dtype!r} is not supported; "
                f"valid: {', '.join(DTYPE_BYTES)}"
            )
        for field in ("params", "macs", "flops", "bytes_read", "bytes_written"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise GpusimError(
                    f"layer {self.name!r}: {field} must be a non-negative int, got {value!r}"
                )
        if self.phase not in PHASES:
            raise GpusimError(
                f"layer {self.name!r}: phase must be one of {', '.join(PHASES)}, "
                f"got {self.phase!r}"
            )
        if not isinstance(self.attrs, tuple) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in self.attrs):
            raise GpusimError(f"layer {self.name!r}: attrs must be a tuple of ints, "
                              f"got {self.attrs!r}")
        if self.phase in ("backward", "optimizer") and not self.forward_of:
            raise GpusimError(f"layer {self.name!r}: a {self.phase} op needs forward_of")

    @property
    def dtype_bytes(self) -> int:
        """Bytes per element of :attr:`dtype`."""
        return DTYPE_BYTES[self.dtype]

    @property
    def bytes(self) -> int:
        """Total minimum DRAM traffic, ``bytes_read + bytes_written``."""
        return self.bytes_read + self.bytes_written

    @property
    def is_view(self) -> bool:
        """True for ops that launch no kernel and move no data (flatten, add_bwd, ...)."""
        return self.op in VIEW_OPS

    @property
    def is_conv(self) -> bool:
        """True for convolutions and their data/weight gradients."""
        return self.op in CONV_OPS

    @property
    def in_channels(self) -> int:
        """Channels (dim 1) of the first input (for backward ops: of the gradient)."""
        return self.inputs[0][1] if self.inputs and len(self.inputs[0]) > 1 else 1

    @property
    def out_channels(self) -> int:
        """Channels (dim 1) of the output (features for ``(N, F)`` outputs; for a linear
        layer, which acts on the last dim, its output features)."""
        if self.op is OpType.LINEAR:
            return self.output[-1]
        return self.output[1] if len(self.output) > 1 else self.output[0]

    @property
    def weight_shape(self) -> tuple[int, ...] | None:
        """Weight tensor shape of conv/linear ops and their gradients, else ``None``.

        ``(K, C/groups, R, S)`` for convolutions, ``(out, in)`` for linear layers (which
        act on the last dim of their input).
        """
        if self.op in (OpType.CONV2D, OpType.LINEAR):
            x, y = self.inputs[0], self.output
        elif self.op in (OpType.CONV2D_DGRAD, OpType.LINEAR_DGRAD):
            x, y = self.output, self.inputs[0]  # reads dy, writes dx
        elif self.op in (OpType.CONV2D_WGRAD, OpType.LINEAR_WGRAD):
            return self.output
        else:
            return None
        if self.op in GEMM_OPS:
            return (y[-1], x[-1])
        return (y[1], x[1] // self.groups, *self.kernel)

    @property
    def arithmetic_intensity(self) -> float:
        """FLOP per byte of minimum DRAM traffic (0 when the op moves nothing)."""
        return self.flops / self.bytes if self.bytes else 0.0
