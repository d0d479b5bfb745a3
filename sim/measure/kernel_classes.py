"""Kernel classes: the groups a training step's kernel time is compared in, measured vs lowered.

A profiler trace and a kernel graph name kernels differently (cuDNN's library names against
lowering's tile names), so they are compared in *classes* that both sides can tell apart:

=============  ===================================================================
class          kernels
=============  ===================================================================
conv_fwd       everything a forward convolution launches (implicit GEMM, Winograd
               transforms and GEMMs, offset helpers) except layout copies
conv_dgrad     the same for a convolution's data gradient (zero fills included)
conv_wgrad     the same for its weight gradient (split-K reductions included)
bn_fwd         batch-norm kernels of the forward pass (cuDNN's bn_fw_*)
bn_bwd         batch-norm backward kernels (cuDNN's bn_bw_*)
elementwise    ReLU, residual adds, gradient accumulation, ReLU backward, counters,
               DDP's gradient copies, zero_grad fills, ...
pooling        max/average pooling forward and backward (the backward's zero fill
               included), global average pooling
optimizer      the optimizer step (multi-tensor or per-tensor SGD)
layout_copy    cuDNN's nchwToNhwc / nhwcToNchw transposes around tensor-op kernels
linear         the classifier's GEMMs, their split-K reductions and bias gradient
loss           softmax / log-softmax / NLL kernels and the loss's elementwise work
other          anything else (concatenation, DDP's buffer flattening, ...)
=============  ===================================================================

:func:`traced_class` classifies an ingested :class:`~sim.measure.ingest.TraceKernel` from its
kind, phase, the convolution pass the ingester gave it and its enclosing aten op;
:func:`lowered_class` a lowered kernel from its kind, library name and the op of its layer.
"""

from __future__ import annotations

import re

from gpu_models.kernel import KernelKind, KernelSpec
from sim.measure.ingest import TraceKernel
from workloads.layers import OpType

#: The classes, in report order.
CLASSES: tuple[str, ...] = (
    "conv_fwd", "conv_dgrad", "conv_wgrad", "bn_fwd", "bn_bwd", "elementwise", "pooling",
    "optimizer", "layout_copy", "linear", "loss", "other",
)

_LAYOUT_COPY = re.compile(r"nchwtonhwc|nhwctonchw", re.IGNORECASE)
_POOL_OPS = re.compile(r"pool")
_LINEAR_OPS = re.compile(r"^aten::(linear|addmm|mm|matmul|bmm)$")
_LOSS_OPS = re.compile(r"cross_entropy|nll_loss|log_softmax|softmax")
_CONV_PASS_CLASS = {"fwd": "conv_fwd", "dgrad": "conv_dgrad", "wgrad": "conv_wgrad"}
_KIND_CLASS = {
    KernelKind.CONV_FWD: "conv_fwd", KernelKind.CONV_DGRAD: "conv_dgrad",
    KernelKind.CONV_WGRAD: "conv_wgrad", KernelKind.OPTIMIZER: "optimizer",
    KernelKind.POOLING: "pooling", KernelKind.SOFTMAX_LOSS: "loss",
    KernelKind.ELEMENTWISE: "elementwise", KernelKind.GEMM: "linear",
}


def traced_class(kernel: TraceKernel) -> str:
    """The class of a kernel of a profiler trace (see the module docstring).

    Layout copies first, then the convolution pass the ingester found; then kind and the
    outermost aten op: pooling ops (their fills and reductions included), linear-layer ops
    and a backward ``aten::sum`` (autograd's bias gradient of a linear layer), loss ops.
    """
    if _LAYOUT_COPY.search(kernel.name):
        return "layout_copy"
    if kernel.conv_pass:
        return _CONV_PASS_CLASS[kernel.conv_pass]
    if kernel.kind is KernelKind.NORMALIZATION:
        return "bn_bwd" if kernel.phase == "backward" else "bn_fwd"
    if kernel.kind is KernelKind.OPTIMIZER:
        return "optimizer"
    op = kernel.op
    if _POOL_OPS.search(op) or kernel.kind is KernelKind.POOLING:
        return "pooling"
    if _LINEAR_OPS.match(op) or (op == "aten::sum" and kernel.phase == "backward"):
        return "linear"
    if _LOSS_OPS.search(op) or kernel.kind is KernelKind.SOFTMAX_LOSS:
        return "loss"
    return _KIND_CLASS.get(kernel.kind, "other")


#: Layer ops -> class for kernels whose class their layer decides.
_OP_CLASS: dict[OpType, str] = {
    OpType.CONV2D: "conv_fwd", OpType.CONV2D_DGRAD: "conv_dgrad",
    OpType.CONV2D_WGRAD: "conv_wgrad", OpType.MAXPOOL: "pooling", OpType.AVGPOOL: "pooling",
    OpType.ADAPTIVE_AVGPOOL: "pooling", OpType.MAXPOOL_BWD: "pooling",
    OpType.AVGPOOL_BWD: "pooling", OpType.LINEAR: "linear", OpType.LINEAR_DGRAD: "linear",
    OpType.LINEAR_WGRAD: "linear", OpType.CROSS_ENTROPY: "loss",
    OpType.CROSS_ENTROPY_BWD: "loss", OpType.SOFTMAX: "loss", OpType.SOFTMAX_BWD: "loss",
    OpType.SGD_UPDATE: "optimizer",
}


def lowered_class(kernel: KernelSpec, op: str) -> str:
    """The class of a lowered kernel of a layer whose op is ``op`` (an OpType value).

    Layout copies first; then the framework kernels a layer carries (DDP's gradient copies
    and AccumulateGrad's adds after a weight gradient, DDP's buffer flattening before the
    first layer) by their kind; batch norm by kind (its counter kernel is elementwise, as the
    trace's separate ``aten::add_`` is); everything else by its layer's op.
    """
    if _LAYOUT_COPY.search(kernel.library_name):
        return "layout_copy"
    if kernel.kind is KernelKind.NORMALIZATION:
        return "bn_bwd" if op == OpType.BATCHNORM_BWD.value else "bn_fwd"
    if kernel.kind is KernelKind.CONCAT_COPY:
        return "other"
    if kernel.kind is KernelKind.OPTIMIZER:
        return "optimizer"
    framework_hook = kernel.kind is KernelKind.ELEMENTWISE and any(
        tag in kernel.library_name for tag in ("DDP", "AccumulateGrad", "zero_grad"))
    layer_op = OpType(op)
    if framework_hook or layer_op not in _OP_CLASS:
        return _KIND_CLASS.get(kernel.kind, "other") if kernel.kind is not KernelKind.GEMM \
            else "linear"
    return _OP_CLASS[layer_op]
