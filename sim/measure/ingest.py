"""Ingest PyTorch profiler traces: real kernel launches -> calibration records.

``torch.profiler`` (Kineto) writes a Chrome-trace JSON file (often gzip-compressed) whose
``traceEvents`` hold, among others:

* **kernel events** – ``"ph": "X"``, ``"cat": "kernel"`` (older traces ``"Kernel"``), ``ts``
  and ``dur`` in microseconds, ``args`` with ``stream``, ``correlation``, ``grid``,
  ``block``, ``registers per thread`` and ``shared memory`` (static + dynamic bytes);
* **launches** – ``"cat": "cuda_runtime"`` (or ``cuda_driver``) events such as
  ``cudaLaunchKernel`` on a CPU thread, linked to their kernel by ``args.correlation``;
* **CPU ranges** – ``cpu_op`` events (``aten::conv2d`` ... with ``Input Dims`` / ``Input
  type`` / ``Concrete Inputs`` when shapes were recorded) and ``user_annotation`` ranges from
  ``record_function`` (``ProfilerStep#N`` for iterations, and layer labels such as
  ``layer:inception3a.branch2.conv2`` when the measuring script adds them);
* top-level ``deviceProperties`` describing each GPU.

A kernel is attributed to the CPU ranges that enclose its launch on the launching thread:
the innermost range whose name starts with the layer prefix names its layer, the outermost
``aten::`` op gives its layer signature (op, input shapes, dtype, batch, concrete arguments),
and the ``ProfilerStep#N`` range around the launch gives its step. Backward kernels run on
the autograd thread, outside the forward layer ranges; they inherit the layer of the forward
op whose ``Sequence number`` their ``autograd::engine::evaluate_function`` range carries.
Each kernel's kind comes from its library name and enclosing op (:func:`classify_kernel`).

:func:`parse_trace` returns the kernels and a :class:`TraceSummary` (kernels and kernel
time per step, busy time per stream, CPU ops seen); :func:`to_calibration` turns the kernels
into a :class:`~gpu_models.calibration.CalibrationSet` with provenance, and
:func:`ingest_trace` does both in one call. A CPU-only trace has
no kernel events: it ingests to zero records and a summary that counts its CPU ops.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_models.calibration import (
    UNKNOWN,
    CalibrationRecord,
    CalibrationSet,
    LayerSignature,
    Provenance,
)
from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind
from gpu_models.spec import PRECISIONS
from gpu_models.units import NS_PER_S, US_PER_S

DEFAULT_LAYER_PREFIX = "layer:"
DEFAULT_STEP_PREFIX = "ProfilerStep#"
_KERNEL_CATS = frozenset({"kernel", "Kernel"})
_LAUNCH_CATS = frozenset({"cuda_runtime", "cuda_driver", "Runtime", "Driver"})
_RANGE_CATS = frozenset({"cpu_op", "user_annotation", "Operator", "python_function"})
_BACKWARD_PREFIX = "autograd::engine::evaluate_function:"
#: Ranges of optimizer steps and gradient zeroing: kernels there are neither pass.
_OPTIMIZER_PREFIX = "Optimizer."
#: Timestamps above this many microseconds are Unix-epoch times (after 2001-09-09).
_EPOCH_US_2001 = 1e15

#: PyTorch's names for tensor element types -> gpusim precisions.
_TORCH_DTYPES = {"float": "fp32", "c10::Half": "fp16", "c10::BFloat16": "bf16"}

#: Library helper kernels that cuDNN / cuBLAS / CUTLASS launch around a convolution or GEMM
#: without doing its math, classified by what they do (tried before :data:`_NAME_KINDS`,
#: whose ``wgrad``/``cutlass``/``cublas`` patterns would otherwise give them the main kind).
_HELPER_KINDS: tuple[tuple[str, KernelKind], ...] = (
    # Index/offset tables for implicit GEMM (cuDNN's cask computeOffsetsKernel,
    # computeWgradBOffsetsKernel, computeWgradSplitKOffsetsKernel): a few integer ops
    # per element of a small table.
    (r"offsetskernel", KernelKind.ELEMENTWISE),
    # alpha/beta scaling of a tensor (cuDNN's scalePackedTensor_kernel).
    (r"scalepackedtensor", KernelKind.ELEMENTWISE),
    # Split-K partial-sum reductions after a GEMM / weight-gradient kernel (cuBLASLt's
    # splitKreduce_kernel, CUTLASS's ReduceSplitK, cuDNN's reduce_wgrad_nchw_helper).
    (r"splitkreduce|reducesplitk|splitk_reduce|reduce_wgrad", KernelKind.REDUCTION),
)
#: Library-name patterns -> kind, tried in order on the lower-cased name (first match wins).
_NAME_KINDS: tuple[tuple[str, KernelKind], ...] = (
    # cuDNN's `*_scudnn_128x64_stridedB_splitK_*` kernels compute weight gradients (split-K
    # over N*P*Q, after the computeWgrad*OffsetsKernel helpers; the RTX 2080 Ti trace runs
    # them alone for the stem conv, whose input needs no gradient).
    (r"wgrad|stridedb_splitk", KernelKind.CONV_WGRAD),
    (r"dgrad", KernelKind.CONV_DGRAD),
    (r"fprop|implicit_convolve|conv2d|convolve|winograd|scudnn|fft2d|im2col",
     KernelKind.CONV_FWD),
    (r"gemm|gemv|cutlass|cublas|wmma", KernelKind.GEMM),
    (r"batch_norm|batchnorm|bn_fw|bn_bw|layer_norm|layernorm|group_norm|instance_norm",
     KernelKind.NORMALIZATION),
    (r"pool", KernelKind.POOLING),
    (r"softmax|nll_loss|cross_entropy", KernelKind.SOFTMAX_LOSS),
    (r"multi_tensor_apply|fused_sgd|adam", KernelKind.OPTIMIZER),
    (r"catarray|cat_|nchwtonhwc|nhwctonchw|transpose|copy", KernelKind.CONCAT_COPY),
    (r"reduce|reduction", KernelKind.REDUCTION),
    (r"elementwise|unrolled|vectorized|fill|scalar|add_kernel", KernelKind.ELEMENTWISE),
)
#: Enclosing aten op -> kind, for kernels whose name says nothing (tried after the names).
_OP_KINDS: tuple[tuple[str, KernelKind], ...] = (
    (r"convolution_backward", KernelKind.CONV_DGRAD),
    (r"conv", KernelKind.CONV_FWD),
    (r"addmm|matmul|linear|\bmm\b|bmm", KernelKind.GEMM),
    (r"norm", KernelKind.NORMALIZATION),
    (r"pool", KernelKind.POOLING),
    (r"softmax|nll_loss|cross_entropy", KernelKind.SOFTMAX_LOSS),
    (r"cat|copy", KernelKind.CONCAT_COPY),
    (r"sum|mean|max|min", KernelKind.REDUCTION),
)
#: Communication kernels (NCCL collectives), left out of the records.
_COMM_PATTERN = re.compile(r"nccl", re.IGNORECASE)
#: Kinds whose math runs at the workload's precision (tensor cores unless fp32).
_MATH_KINDS = frozenset({KernelKind.CONV_FWD, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD,
                         KernelKind.GEMM})
#: Name fragments of tensor-core kernels (cuDNN/cuBLAS/CUTLASS naming).
_TENSOR_CORE_MARKS = ("xmma", "tensorop", "16816", "1688", "884", "hmma", "tf32", "wmma")


def classify_kernel(name: str, op: str = "", ranges: Sequence[str] = ()) -> KernelKind:
    """The kind of a kernel from its library name, its enclosing op and enclosing ranges.

    Heuristic: an ``Optimizer.step`` range first, then library helper kernels, then
    cuDNN/cuBLAS/PyTorch names (``dgrad``/``wgrad``/``fprop``/``winograd``, ``gemm``,
    ``bn_``, ``pool``, ...; a forward-convolution kernel inside
    ``aten::convolution_backward`` is dgrad), then the enclosing aten op; a kernel nothing
    identifies is elementwise. A GEMM kernel that cuDNN runs for a forward convolution is
    ``conv_fwd``; inside ``convolution_backward`` a GEMM kernel stays ``gemm`` here (its name
    does not say whether it computes the data or the weight gradient): :func:`parse_trace`
    gives it its pass from its position in the op (see ``_with_conv_passes``).

    Helper kernels that a library launches around a convolution or GEMM without doing its
    math are classified by what they do, whatever op encloses them, so that a pass's main
    kind holds only the kernels that carry its FLOPs (lowering picks a layer's recorded
    launch among them, the calibrated model fits them, and the trace comparison counts
    them): offset/index-table kernels (``computeOffsetsKernel``,
    ``computeWgrad*OffsetsKernel``) and tensor scaling (``scalePackedTensor_kernel``) are
    ``elementwise``; split-K partial-sum reductions (``splitKreduce_kernel``,
    ``ReduceSplitK``, ``reduce_wgrad_nchw_helper``) are ``reduction``. Winograd transform
    kernels (``winogradForwardData4x4``, ``generateWinogradTilesKernel``, ...) are *not*
    helpers: they do part of the convolution's arithmetic and keep the pass's kind.
    """
    lower = name.lower()
    if any(r.startswith(f"{_OPTIMIZER_PREFIX}step") for r in ranges):
        return KernelKind.OPTIMIZER
    for pattern, kind in _HELPER_KINDS:
        if re.search(pattern, lower):
            return kind
    for pattern, kind in _NAME_KINDS:
        if re.search(pattern, lower):
            # cuDNN computes data gradients with forward-convolution kernels (winograd,
            # scudnn) on the flipped filter: inside a backward conv op they are dgrad.
            if kind is KernelKind.CONV_FWD and "convolution_backward" in op:
                return KernelKind.CONV_DGRAD
            # cuDNN runs many (1x1) forward convolutions as plain GEMMs: the layer pass is
            # what lowering matches, so they count as conv_fwd.
            if kind is KernelKind.GEMM and "conv" in op and "backward" not in op:
                return KernelKind.CONV_FWD
            return kind
    for pattern, kind in _OP_KINDS:
        if re.search(pattern, op.lower()):
            return kind
    return KernelKind.ELEMENTWISE


def _precision(name: str, kind: KernelKind, run_precision: str | None,
               tensor_dtype: str) -> tuple[str, bool]:
    """(precision, tensor cores) of a kernel: its name, else the run's, else its tensors'."""
    lower = name.lower()
    tensor_cores = any(mark in lower for mark in _TENSOR_CORE_MARKS)
    if "bf16" in lower:
        return "bf16", tensor_cores
    if "tf32" in lower:
        return "tf32", True
    if "f16" in lower or "half" in lower or "h884" in lower or "h1688" in lower:
        return "fp16", tensor_cores
    if run_precision is not None and kind in _MATH_KINDS:
        return run_precision, tensor_cores or run_precision != "fp32"
    if run_precision in ("fp16", "bf16"):
        return run_precision, tensor_cores
    # Integer or bool tensors have no precision-specific math: count them as fp32.
    return (tensor_dtype if tensor_dtype in PRECISIONS else "fp32"), tensor_cores


@dataclass(frozen=True)
class TraceKernel:
    """One kernel event of a trace, with what the ingester attributed to it."""

    name: str
    ts_s: float
    duration_s: float
    device: int
    stream: int
    correlation: int | None
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    regs_per_thread: int
    smem_per_block_B: int
    kind: KernelKind
    layer_name: str = ""
    #: "forward", "backward" or "" (not known, or an optimizer step).
    phase: str = ""
    #: The outermost aten op around the launch, and the innermost one.
    op: str = ""
    inner_op: str = ""
    step: int | None = None
    signature: LayerSignature | None = None
    dtype: str = "fp32"
    tensor_cores: bool = False
    batch: int | None = None
    #: Which instance of its outermost aten op launched it (an id unique in the trace, in
    #: CPU time order): kernels of one ``aten::conv2d`` call share it.
    op_seq: int | None = None
    #: For kernels a convolution op launched (helpers and layout copies included): the pass
    #: they serve, "fwd", "dgrad" or "wgrad" (see :func:`conv_passes`); "" otherwise.
    conv_pass: str = ""


@dataclass(frozen=True)
class TraceSummary:
    """What a trace holds, for a human check before its records are used."""

    gpu_name: str
    device_properties: Mapping[str, Any]
    n_kernels: int
    n_cpu_ops: int
    n_launches: int
    n_memcpy: int
    n_memset: int
    #: Kernels whose launch could not be found (attributed to nothing).
    n_unlinked: int
    n_with_layer: int
    #: step -> (kernels, summed kernel time in s), in step order.
    steps: Mapping[int, tuple[int, float]]
    #: stream -> summed kernel time in s.
    stream_time_s: Mapping[int, float]
    kinds: Mapping[str, int]
    layers: tuple[str, ...]
    #: Kernel events with a zero duration (skipped: a record needs a duration > 0).
    n_zero_duration: int
    #: Communication (NCCL) kernels, skipped: they wait on other GPUs.
    n_communication: int
    #: Kernel events with a negative duration (a damaged trace; skipped).
    n_negative_duration: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "gpu_name": self.gpu_name, "device_properties": dict(self.device_properties),
            "n_kernels": self.n_kernels, "n_cpu_ops": self.n_cpu_ops,
            "n_launches": self.n_launches, "n_memcpy": self.n_memcpy,
            "n_memset": self.n_memset, "n_unlinked": self.n_unlinked,
            "n_with_layer": self.n_with_layer, "n_zero_duration": self.n_zero_duration,
            "n_communication": self.n_communication,
            "n_negative_duration": self.n_negative_duration,
            "steps": {str(k): {"kernels": n, "kernel_time_s": t}
                      for k, (n, t) in self.steps.items()},
            "stream_time_s": {str(k): v for k, v in self.stream_time_s.items()},
            "kinds": dict(self.kinds), "layers": list(self.layers),
        }


@dataclass(frozen=True)
class IngestResult:
    """The kernels of one trace and its summary."""

    kernels: tuple[TraceKernel, ...]
    summary: TraceSummary
    #: Top-level trace fields that can feed provenance (versions, trace name).
    metadata: Mapping[str, Any] = field(default_factory=dict)


def load_trace(path: str | Path) -> dict[str, Any]:
    """Read a Chrome-trace JSON file (gzip-compressed or not) into its top-level object."""
    path = Path(path)
    data = read_data_file(path, "trace file", fmt="json")
    if isinstance(data, list):  # the Chrome format's bare-array form
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise GpusimError(f"trace file {str(path)!r} has no 'traceEvents' list")
    return data


@dataclass
class _Range:
    name: str
    start: float
    end: float
    cat: str
    args: Mapping[str, Any]
    #: Position among the trace's range events (a stable identity).
    index: int = -1


def _number(event: Mapping[str, Any], key: str, where: str) -> float:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GpusimError(f"{where}: '{key}' must be a number (got {value!r})")
    return float(value)


def _dims(args: Mapping[str, Any], key: str, where: str) -> tuple[int, int, int]:
    value = args.get(key)
    if not isinstance(value, list) or not 1 <= len(value) <= 3 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise GpusimError(f"{where}: args.{key} must be 1 to 3 positive integers "
                          f"(got {value!r})")
    x, y, z = (*value, 1, 1)[:3]
    return x, y, z


def _count(args: Mapping[str, Any], key: str, where: str) -> int:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GpusimError(f"{where}: args.{key!r} must be an integer >= 0 (got {value!r})")
    return value


def _signature(op_range: _Range | None) -> LayerSignature | None:
    """The layer signature an aten op's recorded inputs give, if shapes were recorded."""
    if op_range is None:
        return None
    dims = op_range.args.get("Input Dims")
    if not isinstance(dims, list):
        return None
    shapes = tuple(tuple(d) for d in dims if isinstance(d, list) and d)
    types = op_range.args.get("Input type") or []
    dtype = _TORCH_DTYPES.get(types[0], str(types[0])) if types else ""
    concrete = op_range.args.get("Concrete Inputs") or []
    attrs = tuple((f"arg{i}", str(v)) for i, v in enumerate(concrete) if v not in ("", None))
    try:
        return LayerSignature(op=op_range.name, shapes=shapes, dtype=dtype,
                              batch=shapes[0][0] if shapes and shapes[0][0] > 0 else None,
                              attrs=attrs)
    except (TypeError, ValueError):
        return None  # shapes the profiler wrote in a form we do not read: no signature


@dataclass
class _Events:
    """The events of a trace the ingester uses, sorted by kind."""

    #: CPU ranges (ops, annotations) per (pid, tid) thread.
    ranges: dict[tuple[Any, Any], list[_Range]] = field(default_factory=dict)
    #: correlation id -> (thread, ts) of the runtime call that launched it.
    launches: dict[int, tuple[tuple[Any, Any], float]] = field(default_factory=dict)
    #: External id -> (thread, ts) of the first CPU op carrying it.
    ext_ops: dict[int, tuple[tuple[Any, Any], float]] = field(default_factory=dict)
    #: (event index, event) of every kernel event.
    kernels: list[tuple[int, Mapping[str, Any]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def _collect(events: Sequence[Any], origin: str) -> _Events:
    out = _Events()
    for index, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise GpusimError(f"{origin}: event {index} is not an object")
        if event.get("ph") != "X":
            continue
        cat = event.get("cat")
        args = event.get("args") or {}
        where = f"{origin}: event {index} ({event.get('name')!r})"
        if not isinstance(args, Mapping):
            raise GpusimError(f"{where}: 'args' must be an object")
        thread = (event.get("pid"), event.get("tid"))
        if cat in _KERNEL_CATS:
            out.kernels.append((index, event))
        elif cat in _LAUNCH_CATS:
            out.counts["launch"] += 1
            if isinstance(args.get("correlation"), int):
                out.launches[args["correlation"]] = (thread, _number(event, "ts", where))
        elif cat in _RANGE_CATS:
            start = _number(event, "ts", where)
            end = start + _number(event, "dur", where)
            out.ranges.setdefault(thread, []).append(
                _Range(str(event.get("name", "")), start, end, str(cat), args, index))
            if cat in ("cpu_op", "Operator"):
                out.counts["cpu_op"] += 1
                if isinstance(args.get("External id"), int):
                    out.ext_ops.setdefault(args["External id"], (thread, start))
        elif cat == "gpu_memcpy":
            out.counts["memcpy"] += 1
        elif cat == "gpu_memset":
            out.counts["memset"] += 1
    return out


def _parse_kernel(index: int, event: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """A kernel event's fields, validated; errors name the event."""
    where = f"{origin}: kernel event {index} ({event.get('name')!r})"
    args = event.get("args") or {}
    stream = args.get("stream")
    if isinstance(stream, bool) or not isinstance(stream, int):
        raise GpusimError(f"{where}: args.stream must be an integer (got {stream!r})")
    name = str(event.get("name") or "")
    if not name:
        raise GpusimError(f"{where}: kernel has no name")
    correlation = args.get("correlation")
    device = args.get("device", 0)
    return {
        "name": name, "ts": _number(event, "ts", where), "dur": _number(event, "dur", where),
        "stream": stream, "device": device if isinstance(device, int) else 0,
        "correlation": correlation if isinstance(correlation, int) else None,
        "external_id": args.get("External id"),
        "grid": _dims(args, "grid", where), "block": _dims(args, "block", where),
        "regs": _count(args, "registers per thread", where),
        "smem": _count(args, "shared memory", where),
    }


def _enclosing(events: _Events, points: Mapping[tuple[Any, Any], list[tuple[float, int]]],
               layer_prefix: str) -> tuple[dict[int, list[_Range]], dict[int, str]]:
    """Ranges around each launch point, and forward sequence number -> layer.

    Sweeps each thread's ranges in time order with a stack: at a launch, the stack holds
    exactly the ranges that enclose it (ranges on one thread nest).
    """
    enclosing: dict[int, list[_Range]] = {}
    seq_layer: dict[int, str] = {}
    for thread in set(events.ranges) | set(points):
        items: list[tuple[float, int, float, Any]] = []
        for rng in events.ranges.get(thread, []):
            items.append((rng.start, 0, -rng.end, rng))  # ranges before launches at equal ts
        for ts, position in points.get(thread, []):
            items.append((ts, 1, 0.0, position))
        items.sort(key=lambda item: (item[0], item[1], item[2]))
        stack: list[_Range] = []
        for ts, is_point, _, payload in items:
            while stack and stack[-1].end < ts:
                stack.pop()
            if is_point:
                enclosing[payload] = list(stack)
                continue
            stack.append(payload)
            seq = payload.args.get("Sequence number")
            if isinstance(seq, int) and not payload.name.startswith(_BACKWARD_PREFIX):
                layer = _innermost_layer(stack, layer_prefix)
                if layer:
                    seq_layer.setdefault(seq, layer)
    return enclosing, seq_layer


def parse_trace(
    trace: str | Path | Mapping[str, Any],
    *,
    layer_prefix: str = DEFAULT_LAYER_PREFIX,
    step_prefix: str = DEFAULT_STEP_PREFIX,
    precision: str | None = None,
    batch: int | None = None,
    step_marker: str = "",
) -> IngestResult:
    """Kernels of a profiler trace (a path or the loaded object) with their attribution.

    ``precision`` is the precision the workload ran at (``tf32`` = fp32 storage with TF32
    tensor-core math): convolution and GEMM kernels whose names do not say get it, other
    kernels get it only as a storage type (fp16/bf16). ``batch`` is the workload's batch
    size, recorded on every kernel (a recorded input shape gives it too).

    Steps come from ``ProfilerStep#N`` ranges (``step_prefix``). A trace recorded without
    them (the public RTX 2080 Ti trace) can name a range that opens every iteration instead,
    ``step_marker`` (e.g. ``"Optimizer.zero_grad"``): step ``i`` is then every kernel
    launched from the start of the ``i``-th such range (0-based, in time order) until the
    next one starts; kernels launched before the first have no step.
    """
    if precision is not None and precision not in PRECISIONS:
        raise GpusimError(f"precision must be one of {PRECISIONS} (got {precision!r})")
    if batch is not None and batch < 1:
        raise GpusimError(f"batch must be >= 1 (got {batch!r})")
    data = load_trace(trace) if isinstance(trace, (str, Path)) else trace
    origin = f"trace {str(trace)!r}" if isinstance(trace, (str, Path)) else "trace"
    if not isinstance(data, Mapping) or not isinstance(data.get("traceEvents"), list):
        raise GpusimError(f"{origin}: has no 'traceEvents' list")
    events = _collect(data["traceEvents"], origin)

    # Where each kernel was launched from: its runtime call, else the op with its External id.
    parsed = [_parse_kernel(index, event, origin) for index, event in events.kernels]
    points: dict[tuple[Any, Any], list[tuple[float, int]]] = {}
    launch_ts: dict[int, float] = {}
    for position, info in enumerate(parsed):
        source = events.launches.get(info["correlation"]) if info["correlation"] is not None \
            else None
        if source is None and isinstance(info["external_id"], int):
            source = events.ext_ops.get(info["external_id"])
        if source is not None:
            points.setdefault(source[0], []).append((source[1], position))
            launch_ts[position] = source[1]
    enclosing, seq_layer = _enclosing(events, points, layer_prefix)

    step_ranges = sorted((r for rs in events.ranges.values() for r in rs
                          if r.name.startswith(step_prefix)), key=lambda r: r.start)
    markers = sorted(r.start for rs in events.ranges.values() for r in rs
                     if step_marker and r.name.startswith(step_marker))
    if step_marker and not markers:
        raise GpusimError(f"{origin}: no range whose name starts with {step_marker!r} "
                          "to mark steps with")

    def step_of(position: int) -> int | None:
        if position not in launch_ts:
            return None
        if markers:
            return bisect.bisect_right(markers, launch_ts[position]) - 1 if \
                launch_ts[position] >= markers[0] else None
        return _step_of(launch_ts[position], step_ranges, step_prefix)

    kernels = []
    for position, info in enumerate(parsed):
        if info["dur"] <= 0:
            events.counts["zero_duration" if info["dur"] == 0 else "negative_duration"] += 1
            continue
        if _COMM_PATTERN.search(info["name"]):
            # Collectives wait on other GPUs: their duration is not this GPU's work.
            events.counts["communication"] += 1
            continue
        stack = enclosing.get(position, [])
        layer = _innermost_layer(stack, layer_prefix)
        backward = [r for r in stack if r.name.startswith(_BACKWARD_PREFIX)]
        aten = [r for r in stack if r.name.startswith("aten::")]
        phase = ""
        if backward:
            phase = "backward"
            seq = backward[-1].args.get("Sequence number")
            layer = layer or (seq_layer.get(seq, "") if isinstance(seq, int) else "")
        elif (aten or layer) and not any(r.name.startswith(_OPTIMIZER_PREFIX) for r in stack):
            phase = "forward"
        op, inner = (aten[0].name, aten[-1].name) if aten else ("", "")
        signature = _signature(aten[0] if aten else None)
        kind = classify_kernel(info["name"], inner or op, [r.name for r in stack])
        dtype, tensor_cores = _precision(info["name"], kind, precision,
                                         signature.dtype if signature else "")
        kernels.append(TraceKernel(
            name=info["name"], ts_s=info["ts"] / US_PER_S, duration_s=info["dur"] / US_PER_S,
            device=info["device"], stream=info["stream"], correlation=info["correlation"],
            grid=info["grid"], block=info["block"], regs_per_thread=info["regs"],
            smem_per_block_B=info["smem"], kind=kind, layer_name=layer, phase=phase, op=op,
            inner_op=inner, step=step_of(position),
            signature=signature, dtype=dtype, tensor_cores=tensor_cores,
            batch=batch or (signature.batch if signature else None),
            op_seq=aten[0].index if aten else None))
    kernels = _with_conv_passes(kernels)

    summary = _summarise(data, kernels, events.counts,
                         unlinked=len(parsed) - len(enclosing),
                         layers=sorted({r.name[len(layer_prefix):]
                                        for rs in events.ranges.values() for r in rs
                                        if r.name.startswith(layer_prefix)}))
    metadata = {k: data[k] for k in ("traceName", "cuda_runtime_version",
                                     "cuda_driver_version", "cupti_version")
                if k in data}
    date = _trace_date(data)
    if date:
        metadata["date"] = date
    return IngestResult(kernels=tuple(kernels), summary=summary, metadata=metadata)


#: Outermost aten ops of a forward / backward convolution (eager PyTorch's names).
_CONV_FWD_OPS = frozenset({"aten::conv2d", "aten::convolution", "aten::_convolution",
                           "aten::cudnn_convolution"})
_CONV_BWD_OPS = frozenset({"aten::convolution_backward", "aten::cudnn_convolution_backward"})


def _with_conv_passes(kernels: Sequence[TraceKernel]) -> list[TraceKernel]:
    """Each convolution op's kernels with the pass they serve (``conv_pass``).

    A forward convolution's kernels serve ``fwd``. One ``aten::convolution_backward`` call
    computes the data gradient and then the weight gradient (PyTorch calls cuDNN's backward
    data before its backward filter), so its kernels split at the first one that belongs to
    the weight gradient: a ``conv_wgrad`` kernel, a kernel whose name says ``wgrad``
    (cuDNN's ``computeWgrad*OffsetsKernel`` helpers, ``reduce_wgrad_nchw_helper``), or the
    second plain GEMM kernel (a 1x1 convolution's backward is two cuBLAS-style GEMMs, data
    gradient first; a Winograd pass runs one batched GEMM between its transforms).
    Everything before it is ``dgrad``; a backward without a data gradient (the first layer)
    is all ``wgrad``. A plain GEMM kernel of a backward pass takes that
    pass's kind, as a forward convolution's GEMM kernel is ``conv_fwd``.
    """
    by_op: dict[int, list[int]] = {}
    for position, kernel in enumerate(kernels):
        if kernel.op_seq is not None and (kernel.op in _CONV_FWD_OPS
                                          or kernel.op in _CONV_BWD_OPS):
            by_op.setdefault(kernel.op_seq, []).append(position)
    out = list(kernels)
    for positions in by_op.values():
        if kernels[positions[0]].op in _CONV_FWD_OPS:
            for p in positions:
                out[p] = dataclasses.replace(kernels[p], conv_pass="fwd")
            continue
        gemms = [i for i, p in enumerate(positions) if kernels[p].kind is KernelKind.GEMM]
        starts = [i for i, p in enumerate(positions)
                  if kernels[p].kind is KernelKind.CONV_WGRAD
                  or "wgrad" in kernels[p].name.lower()]
        if len(gemms) > 1:
            starts.append(gemms[1])
        split = min(starts, default=len(positions))
        for i, p in enumerate(positions):
            pass_ = "dgrad" if i < split else "wgrad"
            kind = kernels[p].kind
            if kind in (KernelKind.GEMM, KernelKind.CONV_FWD, KernelKind.CONV_DGRAD,
                        KernelKind.CONV_WGRAD):
                kind = KernelKind.CONV_DGRAD if pass_ == "dgrad" else KernelKind.CONV_WGRAD
            out[p] = dataclasses.replace(kernels[p], conv_pass=pass_, kind=kind)
    return out


def _trace_date(data: Mapping[str, Any]) -> str:
    """UTC date of the trace's first event, or "" when its clock is not anchored.

    Newer Kineto traces count ``ts`` in microseconds from ``baseTimeNanoseconds``; older
    ones write Unix-epoch microseconds directly (recognisable by their size).
    """
    base = data.get("baseTimeNanoseconds")
    stamps = [e["ts"] for e in data["traceEvents"] if isinstance(e, Mapping)
              and isinstance(e.get("ts"), (int, float)) and not isinstance(e.get("ts"), bool)]
    if not stamps:
        return ""
    if isinstance(base, int) and not isinstance(base, bool):
        seconds = base / NS_PER_S + min(stamps) / US_PER_S
    elif min(stamps) > _EPOCH_US_2001:
        seconds = min(stamps) / US_PER_S
    else:
        return ""
    try:
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.date().isoformat()


def _innermost_layer(stack: Sequence[_Range], prefix: str) -> str:
    for rng in reversed(stack):
        if prefix and rng.name.startswith(prefix):
            return rng.name[len(prefix):]
    return ""


def _step_of(ts: float, step_ranges: Sequence[_Range], prefix: str) -> int | None:
    # Step ranges come from the main thread; a launch from any thread inside one belongs to it.
    for rng in step_ranges:
        if rng.start <= ts <= rng.end:
            suffix = rng.name[len(prefix):]
            return int(suffix) if suffix.isdigit() else None
    return None


def _summarise(data: Mapping[str, Any], kernels: Sequence[TraceKernel], counts: Counter[str],
               *, unlinked: int, layers: Sequence[str]) -> TraceSummary:
    props_list = data.get("deviceProperties") or []
    devices = Counter(k.device for k in kernels)
    main_device = devices.most_common(1)[0][0] if devices else 0
    props: Mapping[str, Any] = {}
    if isinstance(props_list, list):
        props = next((p for p in props_list if isinstance(p, Mapping)
                      and p.get("id") == main_device), {})
    steps: dict[int, tuple[int, float]] = {}
    for k in kernels:
        if k.step is not None:
            n, total = steps.get(k.step, (0, 0.0))
            steps[k.step] = (n + 1, total + k.duration_s)
    streams: dict[int, float] = {}
    for k in kernels:
        streams[k.stream] = streams.get(k.stream, 0.0) + k.duration_s
    return TraceSummary(
        gpu_name=str(props.get("name", "")), device_properties=dict(props),
        n_kernels=len(kernels), n_cpu_ops=counts["cpu_op"], n_launches=counts["launch"],
        n_memcpy=counts["memcpy"], n_memset=counts["memset"], n_unlinked=unlinked,
        n_with_layer=sum(1 for k in kernels if k.layer_name),
        steps=dict(sorted(steps.items())), stream_time_s=dict(sorted(streams.items())),
        kinds=dict(Counter(k.kind.value for k in kernels).most_common()),
        layers=tuple(layers), n_zero_duration=counts["zero_duration"],
        n_communication=counts["communication"],
        n_negative_duration=counts["negative_duration"])


def trace_provenance(
    result: IngestResult,
    *,
    script: str,
    args: Sequence[str],
    date: str = "",
    gpu_name: str = "",
    gpu_preset: str = "",
    driver: str = "",
    cuda: str = "",
    libraries: Mapping[str, str] | None = None,
    source: str = "",
) -> Provenance:
    """Provenance for records ingested from a trace.

    Values not given are taken from the trace where it records them (GPU name from
    ``deviceProperties``, CUDA runtime/driver versions from newer Kineto fields, the date
    from its clock) and are otherwise ``"unknown"``.
    """
    meta = result.metadata
    return Provenance(
        gpu_name=gpu_name or result.summary.gpu_name or UNKNOWN,
        gpu_preset=gpu_preset,
        driver=driver or str(meta.get("cuda_driver_version") or UNKNOWN),
        cuda=cuda or str(meta.get("cuda_runtime_version") or UNKNOWN),
        libraries=dict(libraries or {}),
        date=date or str(meta.get("date") or UNKNOWN), script=script, args=tuple(args),
        source=source or str(meta.get("traceName") or ""),
    )


def to_calibration(result: IngestResult, provenance: Provenance) -> CalibrationSet:
    """The parsed trace's kernels as calibration records."""
    records = tuple(
        CalibrationRecord(
            library_name=k.name, kind=k.kind, grid=k.grid, block=k.block,
            regs_per_thread=k.regs_per_thread, smem_per_block_B=k.smem_per_block_B,
            duration_s=k.duration_s, layer_name=k.layer_name, signature=k.signature,
            stream=k.stream, step=k.step, phase=k.phase, batch=k.batch, dtype=k.dtype,
            tensor_cores=k.tensor_cores)
        for k in result.kernels)
    return CalibrationSet(provenance=provenance, records=records)


def ingest_trace(
    trace: str | Path | Mapping[str, Any],
    *,
    provenance: Provenance | Mapping[str, Any],
    precision: str | None = None,
    batch: int | None = None,
    layer_prefix: str = DEFAULT_LAYER_PREFIX,
    step_prefix: str = DEFAULT_STEP_PREFIX,
    step_marker: str = "",
) -> CalibrationSet:
    """A profiler trace straight to a calibration set (see :func:`parse_trace`).

    ``provenance`` is a :class:`Provenance` or its dict form (the keys of
    :data:`gpu_models.calibration.REQUIRED_PROVENANCE`, plus ``gpu_preset`` and ``source``).
    """
    if not isinstance(provenance, Provenance):
        provenance = Provenance.from_dict(provenance)
    parsed = parse_trace(trace, layer_prefix=layer_prefix, step_prefix=step_prefix,
                         precision=precision, batch=batch, step_marker=step_marker)
    return to_calibration(parsed, provenance)
