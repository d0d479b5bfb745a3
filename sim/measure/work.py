"""Work features of traced kernels: FLOPs and DRAM bytes derived from their recorded shapes.

A calibration record measured by a profiler has a duration and a launch configuration, but
no FLOPs or bytes: those are derived. Records of a digest (``gpusim calibrate ingest
--workload``) carry the work lowering derives for their layer. For records ingested from a
trace recorded with shapes (``torch.profiler.profile(record_shapes=True)``), whose layer
signature holds the op's input shapes and arguments, :func:`signature_work` derives them:
``gpusim calibrate fit --work sim.measure.work:signature_work``.

It understands the convolution and matrix-product ops of eager PyTorch:

* ``aten::conv2d`` / ``aten::convolution`` (shapes ``x, w``; arguments stride, padding,
  dilation, groups) and ``aten::convolution_backward`` (shapes ``dy, x, w``; its stride,
  padding, dilation and groups arguments), for the record's pass (its kind);
* ``aten::linear`` (``x, w``), ``aten::addmm`` (``bias, a, b``), ``aten::mm`` (``a, b``).

The work is GPU-independent: the useful FLOPs (``2 x MACs``) and each tensor of the GEMM once
(:func:`workloads.lowering.gemm_shape`: inputs at the resolution the filter reads); the fit's
coefficients absorb how much more a kernel really moves. Other records give ``None``: they
serve exact matches only.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

from gpu_models.calibration import CalibrationRecord
from gpu_models.kernel import KernelKind
from workloads.layers import Layer
from workloads.lowering import STORAGE_BYTES, STORAGE_DTYPE, conv_layer, gemm_layer, gemm_shape

#: Argument positions of stride, padding, dilation and groups in each convolution op.
_CONV_ARGS: Mapping[str, tuple[int, int, int, int]] = {
    "aten::conv2d": (3, 4, 5, 6), "aten::convolution": (3, 4, 5, 8),
    "aten::convolution_backward": (4, 5, 6, 9),
}
_PASS_OF_KIND = {KernelKind.CONV_FWD: "fwd", KernelKind.CONV_DGRAD: "dgrad",
                 KernelKind.CONV_WGRAD: "wgrad"}


def _pair(attrs: Mapping[str, str], index: int, default: int) -> tuple[int, int]:
    text = attrs.get(f"arg{index}")
    if text is None:
        return (default, default)
    value = ast.literal_eval(text)
    values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
    return (values[0], values[-1])


def _layer(record: CalibrationRecord) -> Layer | None:
    signature = record.signature
    if signature is None:
        return None
    shapes, attrs, op = signature.shapes, dict(signature.attrs), signature.op
    dtype = STORAGE_DTYPE[record.dtype]
    if op in _CONV_ARGS and record.kind in _PASS_OF_KIND:
        backward = op == "aten::convolution_backward"
        x, w = (shapes[1], shapes[2]) if backward else (shapes[0], shapes[1])
        if len(x) != 4 or len(w) != 4:
            return None
        stride_i, pad_i, dil_i, groups_i = _CONV_ARGS[op]
        if _pair(attrs, dil_i, 1) != (1, 1):
            return None  # conv_layer builds undilated convolutions
        groups = int(attrs.get(f"arg{groups_i}", "1"))
        return conv_layer(x[0], (x[1], x[2], x[3]), w[0], (w[2], w[3]),
                          stride=_pair(attrs, stride_i, 1), padding=_pair(attrs, pad_i, 0),
                          groups=groups, pass_=_PASS_OF_KIND[record.kind], dtype=dtype)
    matrices = {"aten::linear": (0, 1), "aten::addmm": (1, 2), "aten::mm": (0, 1)}
    if op in matrices and record.kind is KernelKind.GEMM:
        a, b = (shapes[i] for i in matrices[op])
        if len(a) != 2 or len(b) != 2:
            return None
        n = b[0] if op == "aten::linear" else b[1]  # linear's weight is (out, in)
        return gemm_layer(a[0], n, a[1], dtype=dtype)
    return None


def signature_work(record: CalibrationRecord) -> tuple[float, float] | None:
    """``(flops, dram_bytes)`` of a record from its layer signature, or ``None``."""
    try:
        layer = _layer(record)
    except (ValueError, SyntaxError, IndexError, TypeError):
        return None  # arguments recorded in a form this reader does not know
    if layer is None:
        return None
    shape = gemm_shape(layer, STORAGE_BYTES[record.dtype])
    return 2.0 * layer.macs, shape.a_B + shape.b_B + shape.c_B
