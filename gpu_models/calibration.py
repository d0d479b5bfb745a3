"""Calibration data: kernels measured on real GPUs, with where and how they were measured.

One JSON file per GPU and source lives in ``gpu_models/data/calibration/`` (its README lists
the committed files: public DeepBench timings and trace digests). A file is::

    {
      "format": "gpusim-calibration", "version": 1,
      "provenance": {
        "gpu_name": "NVIDIA A100-SXM4-80GB",   # as the driver reports it
        "gpu_preset": "a100",                  # the gpusim preset it corresponds to, or ""
        "driver": "550.54.15", "cuda": "12.4",
        "libraries": {"torch": "2.3.0", "cudnn": "8.9.7"},
        "date": "2026-11-26", "script": "gpusim calibrate ingest",
        "args": ["trace.json.gz", "--gpu-name", "a100"],
        "source": "trace.json.gz"              # optional: the measured artefact
      },
      "records": [
        {"library_name": "sm80_xmma_fprop_implicit_gemm_...", "kind": "conv_fwd",
         "grid": [196, 2, 1], "block": [128, 1, 1], "regs_per_thread": 232,
         "smem_per_block_B": 81920, "duration_s": 2.1e-4,
         "layer_name": "inception3a.branch2.conv2", "stream": 7, "step": 4,
         "phase": "forward", "batch": 32,
         "signature": {"op": "aten::convolution", "shapes": [[32, 64, 56, 56], [64, 64, 3, 3]],
                       "dtype": "fp32", "batch": 32,
                       "attrs": {"stride": "[1, 1]", "padding": "[1, 1]", "groups": "1"}},
         "dtype": "tf32", "tensor_cores": true,
         "flops": null, "dram_bytes": null}
      ]
    }

Two optional sections carry measurements that are not single kernel launches:

* ``"timings"``: whole library calls timed by a benchmark (:class:`OpTiming`): a cuBLAS GEMM
  or one pass of a cuDNN convolution, with its shape in the benchmark's own columns, e.g.
  Baidu DeepBench's ``{"op": "gemm", "pass": "gemm", "shape": {"M": 1760, "N": 16,
  "K": 1760, "a_transpose": "N", "b_transpose": "N"}, "dtype": "fp32", "layout": "nchw",
  "duration_s": 5.8e-05, "label": "DeepSpeech", "line": 2}``;
* ``"steps"`` (:class:`StepTotals`): per measured training step, its kernel count, summed
  kernel time, first-start-to-last-end span, and kernel count and time per kernel class
  (``sim.measure.kernel_classes``), with ``"workload"`` naming what ran (network, batch,
  precision, framework profile, ...). A trace summarised this way keeps the records of one
  representative step and the totals of every step: small files, no raw traces.

Provenance values a source does not record (a profiler trace has no driver version) are
written as the string ``"unknown"``: present and honest rather than missing. ``flops`` and
``dram_bytes`` are *derived* quantities (from the layer's shapes by lowering), never measured;
they may be null, and the calibrated model then asks for a function that derives them.

Loading validates everything and raises :class:`GpusimError` naming the file and the record
index. :meth:`CalibrationSet.launched` answers lowering's question "for this layer signature
on this GPU, which kernels did the library actually launch?".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.spec import PRECISIONS

FORMAT_NAME = "gpusim-calibration"
FORMAT_VERSION = 1
#: Provenance keys every file must carry (docs/model.md §9).
REQUIRED_PROVENANCE: tuple[str, ...] = (
    "gpu_name", "driver", "cuda", "libraries", "date", "script", "args",
)
UNKNOWN = "unknown"
T = TypeVar("T")


def calibration_dir() -> Path:
    """The package's calibration data directory."""
    return Path(str(resources.files("gpu_models") / "data" / "calibration"))


@dataclass(frozen=True)
class LayerSignature:
    """What identifies a layer to a library: op, tensor shapes, attributes, dtype, batch.

    ``attrs`` holds stride, padding, dilation, groups and the like as strings (the form a
    profiler records them in), so signatures from traces and from lowering compare equal
    when lowering writes them the same way.
    """

    op: str
    shapes: tuple[tuple[int, ...], ...] = ()
    dtype: str = ""
    batch: int | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.op:
            raise GpusimError("layer signature: op must not be empty")
        object.__setattr__(self, "shapes", tuple(tuple(int(d) for d in s) for s in self.shapes))
        attrs = self.attrs.items() if isinstance(self.attrs, Mapping) else self.attrs
        object.__setattr__(self, "attrs", tuple(sorted((str(k), str(v)) for k, v in attrs)))
        if self.batch is not None and self.batch < 1:
            raise GpusimError(f"layer signature {self.op!r}: batch must be >= 1 "
                              f"(got {self.batch!r})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"op": self.op, "shapes": [list(s) for s in self.shapes], "dtype": self.dtype,
                "batch": self.batch, "attrs": dict(self.attrs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSignature:
        """Inverse of :meth:`to_dict` (raises :class:`GpusimError` on bad input)."""
        if not isinstance(data, Mapping):
            raise GpusimError("layer signature must be an object")
        unknown = sorted(set(data) - {"op", "shapes", "dtype", "batch", "attrs"})
        if unknown:
            raise GpusimError(f"layer signature: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(op=str(data["op"]), shapes=tuple(data.get("shapes") or ()),
                       dtype=str(data.get("dtype") or ""), batch=data.get("batch"),
                       attrs=tuple((data.get("attrs") or {}).items()))
        except KeyError:
            raise GpusimError("layer signature: missing 'op'") from None
        except (TypeError, ValueError) as exc:
            raise GpusimError(f"layer signature: {exc}") from None


@dataclass(frozen=True)
class CalibrationRecord:
    """One measured kernel launch: its configuration, duration and the layer it served."""

    library_name: str
    kind: KernelKind
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    regs_per_thread: int
    smem_per_block_B: int
    duration_s: float
    layer_name: str = ""
    signature: LayerSignature | None = None
    stream: int | None = None
    step: int | None = None
    #: "forward", "backward" or "" (not known).
    phase: str = ""
    #: The workload's batch size, where known.
    batch: int | None = None
    dtype: str = "fp32"
    tensor_cores: bool = False
    #: Derived (not measured) work of the kernel, where lowering or the script supplied it.
    flops: float | None = None
    dram_bytes: float | None = None

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise GpusimError(f"kernel {self.library_name!r}: {message}")

        if not self.library_name:
            raise GpusimError("library_name must not be empty")
        try:
            object.__setattr__(self, "kind", KernelKind(self.kind))
        except ValueError:
            fail(f"unknown kind {self.kind!r}; expected one of {[k.value for k in KernelKind]}")
        for name in ("grid", "block"):
            dims = tuple(getattr(self, name))
            if not 1 <= len(dims) <= 3 or any(
                    isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
                fail(f"{name} must be 1 to 3 positive integers (got {getattr(self, name)!r})")
            object.__setattr__(self, name, dims + (1,) * (3 - len(dims)))
        for name in ("regs_per_thread", "smem_per_block_B"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(f"{name} must be an integer >= 0 (got {value!r})")
        if isinstance(self.duration_s, bool) or not isinstance(self.duration_s, (int, float)) \
                or not 0 < self.duration_s < float("inf"):
            fail(f"duration_s must be a finite number > 0 (got {self.duration_s!r})")
        if self.phase not in ("", "forward", "backward"):
            fail(f"phase must be '', 'forward' or 'backward' (got {self.phase!r})")
        for name in ("stream", "step", "batch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                fail(f"{name} must be null or an integer (got {value!r})")
        if self.batch is not None and self.batch < 1:
            fail(f"batch must be >= 1 (got {self.batch!r})")
        if self.dtype not in PRECISIONS:
            fail(f"dtype must be one of {PRECISIONS} (got {self.dtype!r})")
        for name in ("flops", "dram_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not 0 <= value < float("inf")):
                fail(f"{name} must be null or a finite number >= 0 (got {value!r})")

    @property
    def threads(self) -> int:
        """Threads per block."""
        x, y, z = self.block
        return x * y * z

    @property
    def config_key(self) -> tuple[str, tuple[int, int, int], int, int, int]:
        """What identifies the launch: name, grid, threads, registers, shared memory."""
        return (self.library_name, self.grid, self.threads, self.regs_per_thread,
                self.smem_per_block_B)

    def to_kernel_spec(self, *, flops: float | None = None,
                       dram_bytes: float | None = None) -> KernelSpec:
        """The launch as a :class:`KernelSpec`; work from the arguments or the record."""
        flops = self.flops if flops is None else flops
        dram_bytes = self.dram_bytes if dram_bytes is None else dram_bytes
        if flops is None or dram_bytes is None:
            raise GpusimError(f"kernel {self.library_name!r}: record has no flops/dram_bytes; "
                              "pass a work function that derives them")
        return KernelSpec(
            name=self.library_name, kind=self.kind, grid=self.grid, threads=self.threads,
            regs_per_thread=self.regs_per_thread, smem_per_block_B=self.smem_per_block_B,
            flops=flops, dram_bytes=dram_bytes, dtype=self.dtype,
            tensor_cores=self.tensor_cores, layer=self.layer_name,
            measured_time_s=self.duration_s, library_name=self.library_name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the file format's record)."""
        return {
            "library_name": self.library_name, "kind": self.kind.value,
            "grid": list(self.grid), "block": list(self.block),
            "regs_per_thread": self.regs_per_thread, "smem_per_block_B": self.smem_per_block_B,
            "duration_s": self.duration_s, "layer_name": self.layer_name,
            "signature": self.signature.to_dict() if self.signature else None,
            "stream": self.stream, "step": self.step, "phase": self.phase,
            "batch": self.batch, "dtype": self.dtype,
            "tensor_cores": self.tensor_cores, "flops": self.flops,
            "dram_bytes": self.dram_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationRecord:
        """Inverse of :meth:`to_dict` (raises :class:`GpusimError` on bad input)."""
        if not isinstance(data, Mapping):
            raise GpusimError("record must be an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise GpusimError(f"unknown key(s) {', '.join(unknown)}")
        required = ("library_name", "kind", "grid", "block", "regs_per_thread",
                    "smem_per_block_B", "duration_s")
        missing = [k for k in required if k not in data]
        if missing:
            raise GpusimError(f"missing key(s) {', '.join(missing)}")
        values = dict(data)
        signature = values.get("signature")
        values["signature"] = None if signature is None else LayerSignature.from_dict(signature)
        for name in ("grid", "block"):
            if not isinstance(values[name], (list, tuple)):
                raise GpusimError(f"{name} must be a list of integers (got {values[name]!r})")
            values[name] = tuple(values[name])
        values["layer_name"] = str(values.get("layer_name") or "")
        return cls(**values)


#: Ops an :class:`OpTiming` can time.
TIMED_OPS: tuple[str, ...] = ("gemm", "conv2d")
#: Passes of a timed op (``gemm`` for a matrix product).
TIMED_PASSES: tuple[str, ...] = ("gemm", "fwd", "dgrad", "wgrad")


@dataclass(frozen=True)
class OpTiming:
    """One measured library call (a GEMM, one pass of a convolution), not a kernel launch.

    ``shape`` holds the benchmark's own columns (DeepBench: ``M, N, K, a_transpose,
    b_transpose`` for a GEMM; ``W, H, C, N, K, S, R, pad_w, pad_h, stride_w, stride_h`` for a
    convolution); ``line`` is the row's line in the file it came from.
    """

    op: str
    pass_: str
    shape: Mapping[str, int | str]
    dtype: str
    layout: str
    duration_s: float
    label: str = ""
    line: int | None = None

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise GpusimError(f"timing {self.op!r} ({self.label or 'unlabelled'}): {message}")

        if self.op not in TIMED_OPS:
            fail(f"op must be one of {', '.join(TIMED_OPS)}")
        if self.pass_ not in TIMED_PASSES or (self.op == "gemm") != (self.pass_ == "gemm"):
            fail(f"pass must be 'gemm' for a GEMM, fwd/dgrad/wgrad for a convolution "
                 f"(got {self.pass_!r})")
        if not isinstance(self.shape, Mapping) or not all(
                isinstance(v, (int, str)) and not isinstance(v, bool)
                for v in self.shape.values()):
            fail("shape must be an object of column -> integer or string")
        object.__setattr__(self, "shape", MappingProxyType(dict(self.shape)))
        if self.dtype not in PRECISIONS:
            fail(f"dtype must be one of {PRECISIONS} (got {self.dtype!r})")
        if isinstance(self.duration_s, bool) or not isinstance(self.duration_s, (int, float)) \
                or not 0 < self.duration_s < float("inf"):
            fail(f"duration_s must be a finite number > 0 (got {self.duration_s!r})")
        if self.line is not None and (isinstance(self.line, bool)
                                      or not isinstance(self.line, int) or self.line < 1):
            fail(f"line must be null or a positive integer (got {self.line!r})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (the file format's timing)."""
        return {"op": self.op, "pass": self.pass_, "shape": dict(self.shape),
                "dtype": self.dtype, "layout": self.layout, "duration_s": self.duration_s,
                "label": self.label, "line": self.line}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpTiming:
        """Inverse of :meth:`to_dict` (raises :class:`GpusimError` on bad input)."""
        if not isinstance(data, Mapping):
            raise GpusimError("timing must be an object")
        keys = {"op", "pass", "shape", "dtype", "layout", "duration_s", "label", "line"}
        unknown = sorted(set(data) - keys)
        if unknown:
            raise GpusimError(f"timing: unknown key(s) {', '.join(unknown)}")
        missing = sorted({"op", "pass", "shape", "dtype", "duration_s"} - set(data))
        if missing:
            raise GpusimError(f"timing: missing key(s) {', '.join(missing)}")
        return cls(op=str(data["op"]), pass_=str(data["pass"]), shape=data["shape"],
                   dtype=str(data["dtype"]), layout=str(data.get("layout") or "nchw"),
                   duration_s=data["duration_s"], label=str(data.get("label") or ""),
                   line=data.get("line"))


@dataclass(frozen=True)
class StepTotals:
    """One measured training step: kernels, summed kernel time, span, totals per class."""

    step: int
    kernels: int
    kernel_time_s: float
    #: From the first kernel's start to the last kernel's end.
    span_s: float
    #: class -> (kernels, summed kernel time in seconds).
    classes: Mapping[str, tuple[int, float]]

    def __post_init__(self) -> None:
        def bad(value: Any) -> bool:
            return isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value < float("inf")

        if bad(self.kernel_time_s) or bad(self.span_s) or bad(self.kernels) \
                or bad(self.step):
            raise GpusimError(f"step {self.step!r}: kernels, kernel_time_s and span_s must "
                              "be finite numbers >= 0")
        classes = {}
        for name, value in dict(self.classes).items():
            if not isinstance(value, (list, tuple)) or len(value) != 2 or bad(value[0]) \
                    or bad(value[1]):
                raise GpusimError(f"step {self.step}: class {name!r} must be (kernels, "
                                  f"seconds) (got {value!r})")
            classes[str(name)] = (int(value[0]), float(value[1]))
        object.__setattr__(self, "classes", MappingProxyType(classes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"step": self.step, "kernels": self.kernels,
                "kernel_time_s": self.kernel_time_s, "span_s": self.span_s,
                "classes": {name: {"kernels": n, "time_s": t}
                            for name, (n, t) in self.classes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepTotals:
        """Inverse of :meth:`to_dict` (raises :class:`GpusimError` on bad input)."""
        if not isinstance(data, Mapping):
            raise GpusimError("step totals must be an object")
        try:
            classes = {name: (value["kernels"], value["time_s"])
                       for name, value in dict(data.get("classes") or {}).items()}
            return cls(step=data["step"], kernels=data["kernels"],
                       kernel_time_s=data["kernel_time_s"], span_s=data["span_s"],
                       classes=classes)
        except (KeyError, TypeError) as exc:
            raise GpusimError(f"step totals: missing or malformed {exc}") from None


@dataclass(frozen=True)
class Provenance:
    """Where a calibration file's numbers come from (docs/model.md §9)."""

    gpu_name: str
    driver: str
    cuda: str
    libraries: Mapping[str, str]
    date: str
    script: str
    args: tuple[str, ...]
    #: The gpusim preset this GPU corresponds to ("" when there is none).
    gpu_preset: str = ""
    #: The measured artefact (a trace file name, a benchmark log), if any.
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("gpu_name", "driver", "cuda", "date", "script"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise GpusimError(f"provenance {name} must be a non-empty string "
                                  f"(write {UNKNOWN!r} if the source does not record it)")
        object.__setattr__(self, "libraries", {str(k): str(v) for k, v in
                                               dict(self.libraries).items()})
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"gpu_name": self.gpu_name, "gpu_preset": self.gpu_preset,
                "driver": self.driver, "cuda": self.cuda, "libraries": dict(self.libraries),
                "date": self.date, "script": self.script, "args": list(self.args),
                "source": self.source}

    @classmethod
    def from_dict(cls, data: Any) -> Provenance:
        """Inverse of :meth:`to_dict` (raises :class:`GpusimError` on bad input)."""
        if not isinstance(data, Mapping):
            raise GpusimError("provenance must be an object")
        missing = [k for k in REQUIRED_PROVENANCE if k not in data]
        if missing:
            raise GpusimError(f"provenance lacks {', '.join(missing)}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise GpusimError(f"provenance: unknown key(s) {', '.join(unknown)}")
        if not isinstance(data["libraries"], Mapping):
            raise GpusimError("provenance libraries must be an object of name -> version")
        if not isinstance(data["args"], (list, tuple)):
            raise GpusimError("provenance args must be a list of strings")
        fields: dict[str, Any] = {k: (tuple(v) if k == "args" else v) for k, v in data.items()}
        return cls(**fields)


@dataclass(frozen=True)
class CalibrationSet:
    """The records of one calibration file (or one ingest), with their provenance."""

    provenance: Provenance
    records: tuple[CalibrationRecord, ...]
    #: The file it was read from ("" when built in memory).
    path: str = field(default="", compare=False)
    #: Timed library calls (a benchmark's rows), see :class:`OpTiming`.
    timings: tuple[OpTiming, ...] = ()
    #: Per-step totals of a summarised trace, see :class:`StepTotals`.
    steps: tuple[StepTotals, ...] = ()
    #: What ran, for step totals: network, batch, phase, precision, framework, ... .
    workload: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))
        object.__setattr__(self, "timings", tuple(self.timings))
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "workload", MappingProxyType(dict(self.workload)))

    def launched(self, signature: LayerSignature) -> tuple[CalibrationRecord, ...]:
        """The kernels the library launched for a layer with this signature, in launch order.

        When the data hold several steps, the kernels of the first step that has the
        signature are returned (one layer's worth, not one per iteration).
        """
        hits = [r for r in self.records if r.signature == signature]
        if not hits:
            return ()
        first_step = hits[0].step
        return tuple(r for r in hits if r.step == first_step)

    def for_layer(self, layer_name: str) -> tuple[CalibrationRecord, ...]:
        """Every record attributed to the named layer (all steps)."""
        return tuple(r for r in self.records if r.layer_name == layer_name)

    def to_dict(self) -> dict[str, Any]:
        """The file format (``timings``, ``steps`` and ``workload`` only when present)."""
        out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                               "provenance": self.provenance.to_dict()}
        if self.workload:
            out["workload"] = dict(self.workload)
        if self.steps:
            out["steps"] = [s.to_dict() for s in self.steps]
        if self.timings:
            out["timings"] = [t.to_dict() for t in self.timings]
        out["records"] = [r.to_dict() for r in self.records]
        return out


def load_calibration_file(path: str | Path) -> CalibrationSet:
    """Read and validate one calibration file; errors name the file and record index."""
    path = Path(path)
    data = read_data_file(path, "calibration file")
    return calibration_from_dict(data, origin=f"calibration file {str(path)!r}", path=str(path))


def calibration_from_dict(data: Any, *, origin: str = "calibration data",
                          path: str = "") -> CalibrationSet:
    """Validate the file format held in ``data``; errors start with ``origin``."""
    if not isinstance(data, Mapping):
        raise GpusimError(f"{origin}: must hold a JSON object")
    if data.get("format") != FORMAT_NAME or data.get("version") != FORMAT_VERSION:
        raise GpusimError(f"{origin}: expected format {FORMAT_NAME!r} version "
                          f"{FORMAT_VERSION} (got {data.get('format')!r} "
                          f"{data.get('version')!r})")
    try:
        provenance = Provenance.from_dict(data.get("provenance"))
    except GpusimError as exc:
        raise GpusimError(f"{origin}: {exc}") from None
    unknown = sorted(set(data) - {"format", "version", "provenance", "records", "timings",
                                  "steps", "workload"})
    if unknown:
        raise GpusimError(f"{origin}: unknown key(s) {', '.join(unknown)}")
    raw_records = data.get("records")
    if not isinstance(raw_records, list):
        raise GpusimError(f"{origin}: 'records' must be a list")
    timings = _section(data, "timings", OpTiming.from_dict, origin)
    steps = _section(data, "steps", StepTotals.from_dict, origin)
    workload = data.get("workload") or {}
    if not isinstance(workload, Mapping):
        raise GpusimError(f"{origin}: 'workload' must be an object")
    records = []
    for index, raw in enumerate(raw_records):
        try:
            records.append(CalibrationRecord.from_dict(raw))
        except GpusimError as exc:
            raise GpusimError(f"{origin}: record {index}: {exc}") from None
        except TypeError as exc:
            raise GpusimError(f"{origin}: record {index}: {exc}") from None
    return CalibrationSet(provenance=provenance, records=tuple(records), path=path,
                          timings=timings, steps=steps, workload=workload)


def _section(data: Mapping[str, Any], key: str, parse: Callable[[Mapping[str, Any]], T],
             origin: str) -> tuple[T, ...]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise GpusimError(f"{origin}: {key!r} must be a list")
    out = []
    for index, item in enumerate(raw):
        try:
            out.append(parse(item))
        except GpusimError as exc:
            raise GpusimError(f"{origin}: {key} {index}: {exc}") from None
    return tuple(out)


def save_calibration_file(calibration: CalibrationSet, path: str | Path) -> None:
    """Write ``calibration`` as a calibration file: indented header, then one record (and
    one timing, one step) per line."""
    data = calibration.to_dict()
    lists = {key: data.pop(key) for key in ("steps", "timings", "records") if key in data}
    parts = [json.dumps(data, indent=1)[:-2]]  # drop the closing "\n}"
    for key, items in lists.items():
        rows = ",\n  ".join(json.dumps(item) for item in items)
        parts.append(f' "{key}": [\n  {rows}\n ]' if rows else f' "{key}": []')
    Path(path).write_text(",\n".join(parts) + "\n}\n", encoding="utf-8")


def list_calibration_files(directory: str | Path | None = None) -> tuple[Path, ...]:
    """The calibration files of a directory (default: the package's), sorted."""
    folder = calibration_dir() if directory is None else Path(directory)
    if not folder.is_dir():
        return ()
    return tuple(sorted(folder.glob("*.json")))


def load_gpu_calibration(gpu: str, directory: str | Path | None = None
                         ) -> tuple[CalibrationSet, ...]:
    """Every calibration file for ``gpu`` (matched on provenance ``gpu_preset``).

    Raises :class:`GpusimError` when there is none, listing the GPUs that have data.
    """
    sets = [load_calibration_file(p) for p in list_calibration_files(directory)]
    mine = tuple(s for s in sets if s.provenance.gpu_preset == gpu)
    if not mine:
        have = sorted({s.provenance.gpu_preset for s in sets if s.provenance.gpu_preset})
        folder = calibration_dir() if directory is None else Path(directory)
        raise GpusimError(
            f"no calibration data for GPU {gpu!r} in {folder} "
            f"(GPUs with data: {', '.join(have) if have else 'none yet'}); "
            "ingest a profiler trace with 'gpusim calibrate ingest' or pass records explicitly")
    return mine


def all_records(sets: Iterable[CalibrationSet]) -> tuple[CalibrationRecord, ...]:
    """The records of several sets, concatenated in order."""
    return tuple(r for s in sets for r in s.records)
