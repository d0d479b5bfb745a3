"""The cost model against the published measurements committed as calibration data.

Two kinds of committed files (``gpu_models/data/calibration/``, see its README) hold public
measurements:

* ``deepbench_<gpu>_<precision>.json``: Baidu DeepBench's timings of cuBLAS GEMMs and of the
  three passes of cuDNN convolutions (:class:`~gpu_models.calibration.OpTiming`);
* ``trace_<gpu>_<network>.json``: digests of public PyTorch profiler traces of training
  steps: per-step kernel time and per-kernel-class totals
  (:class:`~gpu_models.calibration.StepTotals`) and what ran (``workload``).

:func:`validate_deepbench` prices every timed call the one way gpusim prices a library call
(lowering, then :func:`sim.analysis.pricing.predicted_time_s` through the engine, as
``gpusim op --from`` does), each convolution pass with the faster of the algorithms lowering
can run it with, as DeepBench's harness picks its algorithm (``cudnnFind``:
:data:`~sim.measure.deepbench.DEEPBENCH_ALGORITHM_CHOICE`; ``gpusim op --from
--conv-algorithm fastest`` gives the same prices), and reports the error of each against
its measurement, summarised per GPU, precision, kind and pass as the mean absolute
percentage error (MAPE).
:func:`validate_traces` lowers each traced workload on its GPU (framework profile included),
prices every kernel (:meth:`sim.scheduling.base.ScheduleContext.priced`: its isolated time)
and compares the step's summed kernel time and each class's total with the measured ones
(kernel time summed over the step's kernels, averaged over the measured steps). Every
number is re-priced with the cost model named, so switching ``cost_model`` re-prices all.

Errors are ``predicted / measured - 1`` (signed; MAPE is the mean of their absolute values).
DeepBench's times were taken on the host around each call (one launch included), and they
are compared as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_models.calibration import (
    CalibrationSet,
    OpTiming,
    list_calibration_files,
    load_calibration_file,
)
from gpu_models.cost import DEFAULT_COST_MODEL
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel
from gpu_models.presets import load_gpu
from gpu_models.spec import GPUSpec
from gpu_models.units import MS_PER_S
from sim.analysis.workflow import resolve_cost_model
from sim.measure.deepbench import (
    CONV_COLUMNS,
    DEEPBENCH_ALGORITHM_CHOICE,
    GEMM_COLUMNS,
    PASS_COLUMNS,
    DeepBenchRow,
    price_row,
)
from sim.measure.kernel_classes import CLASSES, lowered_class
from sim.measure.trace_digest import TracedWorkload
from sim.scheduling.base import ScheduleContext

#: Kinds of timed calls, as the reports name them.
KINDS: tuple[str, ...] = ("gemm", "conv")


def relative_error(predicted: float, measured: float) -> float:
    """``predicted / measured - 1``."""
    return predicted / measured - 1


@dataclass(frozen=True)
class TimingComparison:
    """One timed library call, measured against predicted."""

    gpu: str
    precision: str
    kind: str
    pass_: str
    line: int | None
    label: str
    shape: Mapping[str, int | str]
    measured_s: float
    predicted_s: float

    @property
    def error(self) -> float:
        """``predicted / measured - 1``."""
        return relative_error(self.predicted_s, self.measured_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"gpu": self.gpu, "precision": self.precision, "kind": self.kind,
                "pass": self.pass_, "line": self.line, "label": self.label,
                "shape": dict(self.shape), "measured_s": self.measured_s,
                "predicted_s": self.predicted_s, "error": self.error}


@dataclass(frozen=True)
class ErrorSummary:
    """The errors of one group of comparisons (one GPU, precision, kind and pass)."""

    gpu: str
    precision: str
    kind: str
    pass_: str
    n: int
    #: Mean, median and largest ``|predicted / measured - 1|``.
    mape: float
    median_ape: float
    max_ape: float
    #: Mean signed error: > 0 when the model is too slow on average.
    mean_error: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"gpu": self.gpu, "precision": self.precision, "kind": self.kind,
                "pass": self.pass_, "n": self.n, "mape": self.mape,
                "median_ape": self.median_ape, "max_ape": self.max_ape,
                "mean_error": self.mean_error}


def summarise(comparisons: Sequence[TimingComparison]) -> tuple[ErrorSummary, ...]:
    """One :class:`ErrorSummary` per (GPU, precision, kind, pass), in first-seen order."""
    groups: dict[tuple[str, str, str, str], list[float]] = {}
    for c in comparisons:
        groups.setdefault((c.gpu, c.precision, c.kind, c.pass_), []).append(c.error)
    out = []
    for (gpu, precision, kind, pass_), errors in groups.items():
        absolute = [abs(e) for e in errors]
        out.append(ErrorSummary(gpu=gpu, precision=precision, kind=kind, pass_=pass_,
                                n=len(errors), mape=statistics.fmean(absolute),
                                median_ape=statistics.median(absolute), max_ape=max(absolute),
                                mean_error=statistics.fmean(errors)))
    return tuple(out)


@dataclass(frozen=True)
class Skipped:
    """A data set that could not be priced with the chosen cost model, and why."""

    gpu: str
    what: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"gpu": self.gpu, "what": self.what, "reason": self.reason}


@dataclass(frozen=True)
class DeepBenchReport:
    """Every committed DeepBench timing priced with one cost model."""

    cost_model: str
    comparisons: tuple[TimingComparison, ...]
    summaries: tuple[ErrorSummary, ...]
    skipped: tuple[Skipped, ...] = ()
    #: GPU preset -> the files' provenance (GPU name, CUDA, cuDNN, driver, source).
    provenance: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"cost_model": self.cost_model,
                "summaries": [s.to_dict() for s in self.summaries],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "skipped": [s.to_dict() for s in self.skipped],
                "provenance": {k: dict(v) for k, v in self.provenance.items()}}


def published_sets(directory: str | Path | None = None, *, kind: str,
                   gpus: Iterable[str] = ()) -> list[CalibrationSet]:
    """The committed sets holding ``kind`` data ("timings" or "steps"), optionally only
    those of some GPU presets, in file order."""
    wanted = set(gpus)
    sets = []
    for path in list_calibration_files(directory):
        calibration = load_calibration_file(path)
        if not getattr(calibration, kind):
            continue
        if wanted and calibration.provenance.gpu_preset not in wanted:
            continue
        sets.append(calibration)
    return sets


def _row_of(timing: OpTiming) -> DeepBenchRow:
    return DeepBenchRow(line=timing.line or 0, kind="gemm" if timing.op == "gemm" else "conv",
                        shape=timing.shape, app=timing.label)


def _shape_key(timing: OpTiming) -> tuple[Any, ...]:
    columns = GEMM_COLUMNS if timing.op == "gemm" else CONV_COLUMNS
    return (timing.op, timing.dtype, timing.layout, *(timing.shape[c] for c in columns))


def validate_deepbench(cost_model: str | CostModel = DEFAULT_COST_MODEL, *,
                       gpus: Iterable[str] = (), directory: str | Path | None = None,
                       origin: str | GPUSpec | None = None) -> DeepBenchReport:
    """Price every committed DeepBench timing (see the module docstring).

    ``cost_model``: a name (``roofline``, ``calibrated``, ``scaled`` with ``origin``) or a
    cost model. A GPU whose model cannot be built (no calibration data for ``calibrated``)
    is reported in :attr:`DeepBenchReport.skipped`.
    """
    name = cost_model if isinstance(cost_model, str) else type(cost_model).__name__
    comparisons: list[TimingComparison] = []
    skipped: list[Skipped] = []
    provenance: dict[str, Mapping[str, Any]] = {}
    for calibration in published_sets(directory, kind="timings", gpus=gpus):
        preset = calibration.provenance.gpu_preset
        gpu = load_gpu(preset)
        provenance.setdefault(preset, calibration.provenance.to_dict())
        try:
            model = resolve_cost_model(cost_model, gpu, origin=origin)
        except GpusimError as exc:
            skipped.append(Skipped(preset, Path(calibration.path).name, str(exc)))
            continue
        priced: dict[tuple[Any, ...], dict[str, float]] = {}
        for timing in calibration.timings:
            key = _shape_key(timing)
            if key not in priced:
                priced[key] = price_row(_row_of(timing), gpu, model, precision=timing.dtype,
                                        layout=timing.layout,
                                        algorithm_choice=DEEPBENCH_ALGORITHM_CHOICE)
            predicted_s = priced[key][PASS_COLUMNS[timing.pass_]] / MS_PER_S
            comparisons.append(TimingComparison(
                gpu=preset, precision=timing.dtype,
                kind="gemm" if timing.op == "gemm" else "conv", pass_=timing.pass_,
                line=timing.line, label=timing.label, shape=timing.shape,
                measured_s=timing.duration_s, predicted_s=predicted_s))
    return DeepBenchReport(cost_model=name, comparisons=tuple(comparisons),
                           summaries=summarise(comparisons), skipped=tuple(skipped),
                           provenance=provenance)


@dataclass(frozen=True)
class ClassComparison:
    """One kernel class of a traced step: kernels and summed kernel time, both sides."""

    cls: str
    measured_kernels: float
    lowered_kernels: int
    measured_s: float
    predicted_s: float

    @property
    def error(self) -> float | None:
        """``predicted / measured - 1`` (``None`` when nothing was measured)."""
        return relative_error(self.predicted_s, self.measured_s) if self.measured_s > 0 \
            else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"class": self.cls, "measured_kernels": self.measured_kernels,
                "lowered_kernels": self.lowered_kernels, "measured_s": self.measured_s,
                "predicted_s": self.predicted_s, "error": self.error}


@dataclass(frozen=True)
class TraceReport:
    """One traced training step, measured (every step) against predicted."""

    gpu: str
    workload: Mapping[str, Any]
    source: str
    cost_model: str
    #: step -> measured summed kernel time.
    measured_steps_s: Mapping[int, float]
    predicted_step_s: float
    lowered_kernels: int
    measured_kernels: float
    classes: tuple[ClassComparison, ...]

    @property
    def measured_step_s(self) -> float:
        """The mean of the measured steps' kernel time."""
        return statistics.fmean(self.measured_steps_s.values())

    @property
    def step_error(self) -> float:
        """Predicted against the mean measured step."""
        return relative_error(self.predicted_step_s, self.measured_step_s)

    @property
    def step_errors(self) -> dict[int, float]:
        """Predicted against each measured step."""
        return {step: relative_error(self.predicted_step_s, t)
                for step, t in self.measured_steps_s.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"gpu": self.gpu, "workload": dict(self.workload), "source": self.source,
                "cost_model": self.cost_model,
                "measured_steps_s": {str(k): v for k, v in self.measured_steps_s.items()},
                "measured_step_s": self.measured_step_s,
                "predicted_step_s": self.predicted_step_s, "step_error": self.step_error,
                "lowered_kernels": self.lowered_kernels,
                "measured_kernels": self.measured_kernels,
                "classes": [c.to_dict() for c in self.classes]}


def validate_trace(calibration: CalibrationSet, cost_model: str | CostModel = DEFAULT_COST_MODEL, *,
                   origin: str | GPUSpec | None = None) -> TraceReport:
    """One trace digest's steps and classes against its lowered, priced workload."""
    preset = calibration.provenance.gpu_preset
    gpu = load_gpu(preset)
    workload = TracedWorkload.from_dict(calibration.workload)
    model = resolve_cost_model(cost_model, gpu, origin=origin)
    kernel_graph = workload.kernel_graph(gpu)
    ctx = ScheduleContext.priced(kernel_graph, gpu, model)
    predicted: dict[str, float] = dict.fromkeys(CLASSES, 0.0)
    lowered: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for node, data in kernel_graph.nodes(data=True):
        cls = lowered_class(data["kernel"], data["op"])
        predicted[cls] += ctx.isolated_s[node]
        lowered[cls] += 1
    steps = calibration.steps
    classes = []
    for cls in CLASSES:
        measured = [s.classes.get(cls, (0, 0.0)) for s in steps]
        classes.append(ClassComparison(
            cls=cls, measured_kernels=statistics.fmean(n for n, _ in measured),
            lowered_kernels=lowered[cls],
            measured_s=statistics.fmean(t for _, t in measured), predicted_s=predicted[cls]))
    name = cost_model if isinstance(cost_model, str) else type(cost_model).__name__
    return TraceReport(
        gpu=preset, workload=calibration.workload, source=calibration.provenance.source,
        cost_model=name, measured_steps_s={s.step: s.kernel_time_s for s in steps},
        predicted_step_s=sum(ctx.isolated_s.values()),
        lowered_kernels=kernel_graph.number_of_nodes(),
        measured_kernels=statistics.fmean(s.kernels for s in steps), classes=tuple(classes))


def validate_traces(cost_model: str | CostModel = DEFAULT_COST_MODEL, *, gpus: Iterable[str] = (),
                    directory: str | Path | None = None, origin: str | GPUSpec | None = None,
                    ) -> tuple[tuple[TraceReport, ...], tuple[Skipped, ...]]:
    """Every committed trace digest (see :func:`validate_trace`), and those that could not
    be priced with ``cost_model`` (and why)."""
    reports, skipped = [], []
    for calibration in published_sets(directory, kind="steps", gpus=gpus):
        try:
            reports.append(validate_trace(calibration, cost_model, origin=origin))
        except GpusimError as exc:
            skipped.append(Skipped(calibration.provenance.gpu_preset,
                                   Path(calibration.path).name, str(exc)))
    return tuple(reports), tuple(skipped)


@dataclass(frozen=True)
class PublishedValidation:
    """Both validations with one cost model."""

    deepbench: DeepBenchReport
    traces: tuple[TraceReport, ...]
    trace_skipped: tuple[Skipped, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"deepbench": self.deepbench.to_dict(),
                "traces": [t.to_dict() for t in self.traces],
                "trace_skipped": [s.to_dict() for s in self.trace_skipped]}


def validate_published(cost_model: str | CostModel = DEFAULT_COST_MODEL, *,
                       gpus: Iterable[str] = (),
                       directory: str | Path | None = None,
                       origin: str | GPUSpec | None = None) -> PublishedValidation:
    """:func:`validate_deepbench` and :func:`validate_traces` with one cost model."""
    gpus = tuple(gpus)
    traces, skipped = validate_traces(cost_model, gpus=gpus, directory=directory,
                                      origin=origin)
    return PublishedValidation(
        deepbench=validate_deepbench(cost_model, gpus=gpus, directory=directory,
                                     origin=origin),
        traces=traces, trace_skipped=skipped)
