"""Fitting the analytic cost model's parameters to the committed published measurements.

What is fitted (:mod:`gpu_models.cost.analytic`): per architecture, the compute efficiency
of each kind on each kind of unit and of each kernel family that has its own
(:data:`~gpu_models.cost.analytic.FAMILIES`), the memory efficiency of each kind, the K-loop
iteration latency, the per-kernel floor and the tile overhead. The memory-parallelism curve the
memory term uses is not fitted here: it comes from the microbenchmarks
(``gpu_models/data/memory.toml``, ``scripts/fit_memory_model.py``).

What it is fitted to (:func:`collect`): every committed DeepBench timing (one point per
timed call: the sum of the times of the kernels its pass lowers to) and every kernel class
of every committed trace digest (one point per class: the summed time of the lowered
kernels of the class against the measured class total, averaged over the steps). Each
point's model time is the sum of its kernels' lone times, ``waves x block_time_s`` (what
the engine gives each kernel alone, :func:`gpu_models.cost.isolated_time_s`); a DeepBench
convolution pass is lowered once per algorithm lowering can run it with
(:func:`workloads.lowering.conv_algorithm_candidates`) and takes the fastest, as DeepBench's
harness does (:data:`~sim.measure.deepbench.DEEPBENCH_ALGORITHM_CHOICE`).

How (:func:`fit_table`): a weighted least-squares fit of ``predicted / measured - 1`` by
Levenberg-Marquardt (numpy, a numerical Jacobian), efficiencies through a logistic map (so
they stay in (0, 1)) and the other parameters through ``exp`` (so they stay > 0). Each
group of points (one GPU, precision, kind and pass; or one trace class) weighs the same in
all, however many points it has, so that the fit aims at every group's error rather than at
the largest group's. First one ``default`` entry is fitted to all GPUs together; then each
architecture's entry to its GPUs, pulled weakly towards the default (a small ridge term).
A parameter that no point of an entry's data exercises (its Jacobian column is zero at the
fit: no kernel of those points is bound by the term it scales, e.g. a kind they never
measured, or tensor-core efficiencies on a GPU without them) takes the default entry's value
exactly (the default's own: the fit's start value), the same for every entry and parameter,
in-sample and left out; the table's provenance lists them per entry (:data:`UNEXERCISED`).
A parameter that a few points exercise is fitted to them, shrunk towards the default by the
ridge term: setting those to the default's value as well (fewer than 2, 3, 5 or 10 points,
or a Jacobian column or posterior-variance share under a threshold) raised the in-sample
errors (the A100's trace classes are one point each) for at most 0.6 points of held-out
DeepBench MAPE, and raised the T4's held-out GEMM errors (README, "Validation").
:func:`leave_one_gpu_out` fits without one GPU and prices it as an unmeasured GPU
would be: with the entry of its architecture when other GPUs of that architecture remain,
else of the nearest one of its generation (the P100 with the TITAN Xp's and GTX 1080 Ti's),
else with the default.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gpu_models.cost.analytic import (
    DEFAULT_ENTRY,
    FAMILIES,
    RESOURCES,
    AnalyticParams,
    ParameterTable,
    compute_key,
    kernel_terms,
)
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.memory import MemorySystem
from gpu_models.presets import load_gpu
from gpu_models.spec import GPUSpec
from sim.analysis.pricing import algorithms_to_try
from sim.measure.deepbench import DEEPBENCH_ALGORITHM_CHOICE, row_layers
from sim.measure.kernel_classes import CLASSES, lowered_class
from sim.measure.published import _row_of, published_sets
from sim.measure.trace_digest import TracedWorkload
from workloads.lowering import STORAGE_DTYPE, lower_layer

#: The command that writes the committed parameter file.
COMMAND = "gpusim calibrate fit --model analytic --output gpu_models/data/analytic.toml"

_KINDS: tuple[KernelKind, ...] = tuple(KernelKind)
_KIND_COMPUTE_KEYS: tuple[str, ...] = tuple(compute_key(k, r) for k in _KINDS
                                             for r in RESOURCES)
#: Compute efficiencies fitted: per kind and unit, then per kernel family (``family:NAME``).
_COMPUTE_KEYS: tuple[str, ...] = _KIND_COMPUTE_KEYS + tuple(f"family:{f}" for f in FAMILIES)
_SCALARS: tuple[str, ...] = ("iteration_latency_s", "kernel_floor_s", "tile_overhead")
#: Where the fit starts, and what the default entry is pulled towards: roofline's
#: assumptions (compute 0.6, memory 0.8), 0.3 us per K-loop iteration, the 2 us of the
#: shortest traced kernels, an overhead of 8 elements per tile edge.
_START: Mapping[str, float] = {"compute": 0.6, "memory": 0.8, "iteration_latency_s": 0.3e-6,
                               "kernel_floor_s": 2.0e-6, "tile_overhead": 8.0}
#: Weight of the ridge term per parameter (in the fitted, unconstrained coordinates).
RIDGE = 0.05
#: Micro-benchmark kernels state their own work: not fitted, efficiency 1.
_FIXED_KIND = KernelKind.MICRO
#: The fitted parameters, in the order of the encoded vector: as the data file names them.
PARAMETER_NAMES: tuple[str, ...] = (
    tuple(f"family_efficiency.{k.partition(':')[2]}" if k.startswith("family:")
          else f"compute_efficiency.{k}" for k in _COMPUTE_KEYS)
    + tuple(f"memory_efficiency.{k.value}" for k in _KINDS) + _SCALARS)
#: Parameters the fit reports on (the micro-benchmark kind's are fixed at 1).
_REPORTED = np.array([f".{_FIXED_KIND.value}" not in n for n in PARAMETER_NAMES])


@dataclass(frozen=True)
class FitPoint:
    """One measurement the model is fitted to."""

    gpu: str
    #: Compute capability ``"major.minor"``: the entry that prices it.
    arch: str
    #: What its error is summarised under: (gpu, precision, kind, pass) for DeepBench,
    #: (gpu, "trace", "class", class) for a trace class.
    group: tuple[str, str, str, str]
    measured_s: float


@dataclass(frozen=True)
class FitData:
    """Points and the parameter-free terms of their kernels, as arrays."""

    points: tuple[FitPoint, ...]
    #: Per kernel: the alternative it belongs to, and its :class:`~gpu_models.cost.analytic
    #: .KernelTerms` fields. An alternative is one way of running a point's call (one
    #: convolution algorithm); a point's model time is that of its fastest alternative.
    alternative: np.ndarray
    #: Per alternative: the point it belongs to.
    alternative_point: np.ndarray
    compute_s: np.ndarray
    tile_factor: np.ndarray
    iterations: np.ndarray
    memory_s: np.ndarray
    waves: np.ndarray
    #: Index into :data:`_COMPUTE_KEYS` and into the kinds.
    compute_index: np.ndarray
    kind_index: np.ndarray
    #: What the data came from (file names).
    sources: tuple[str, ...]

    @property
    def gpus(self) -> tuple[str, ...]:
        """The GPUs measured, in first-seen order."""
        return tuple(dict.fromkeys(p.gpu for p in self.points))

    def subset(self, keep: Callable[[FitPoint], bool]) -> FitData:
        """The points ``keep`` accepts, with their kernels."""
        chosen = np.array([keep(p) for p in self.points], dtype=bool)
        alternatives = chosen[self.alternative_point]
        point_number = np.cumsum(chosen) - 1
        alternative_number = np.cumsum(alternatives) - 1
        mask = alternatives[self.alternative]
        return FitData(
            points=tuple(p for p, c in zip(self.points, chosen, strict=True) if c),
            alternative=alternative_number[self.alternative[mask]],
            alternative_point=point_number[self.alternative_point[alternatives]],
            compute_s=self.compute_s[mask],
            tile_factor=self.tile_factor[mask], iterations=self.iterations[mask],
            memory_s=self.memory_s[mask], waves=self.waves[mask],
            compute_index=self.compute_index[mask], kind_index=self.kind_index[mask],
            sources=self.sources)


class _Builder:
    def __init__(self) -> None:
        self.points: list[FitPoint] = []
        self.alternative_point: list[int] = []
        self.rows: list[tuple[int, float, float, int, float, int, int, int]] = []
        self.sources: list[str] = []
        self._memory: dict[str, MemorySystem] = {}

    def add(self, point: FitPoint, alternatives: Iterable[Iterable[KernelSpec]],
            gpu: GPUSpec) -> None:
        """A point and the kernels of each of its alternatives."""
        memory = self._memory.setdefault(gpu.name, MemorySystem.for_gpu(gpu))
        self.points.append(point)
        for kernels in alternatives:
            index = len(self.alternative_point)
            self.alternative_point.append(len(self.points) - 1)
            for kernel in kernels:
                t = kernel_terms(kernel, gpu, memory)
                self.rows.append((index, t.compute_s, t.tile_factor, t.iterations,
                                  t.memory_s, t.waves,
                                  _COMPUTE_KEYS.index(
                                      f"family:{t.family}" if t.family
                                      else compute_key(t.kind, t.resource)),
                                  _KINDS.index(t.kind)))

    def build(self) -> FitData:
        if not self.points:
            raise GpusimError("no published measurements to fit (no DeepBench timings or "
                              "trace digests in the calibration directory)")
        columns = list(zip(*self.rows, strict=True))
        ints = {0, 3, 5, 6, 7}
        arrays = [np.asarray(c, dtype=np.int64 if i in ints else np.float64)
                  for i, c in enumerate(columns)]
        alternative, compute, tile, iterations, memory, waves, compute_index, kind_index = arrays
        return FitData(tuple(self.points), alternative,
                       np.asarray(self.alternative_point, dtype=np.int64), compute, tile,
                       iterations, memory, waves, compute_index, kind_index,
                       sources=tuple(self.sources))


def _where(field: str, value: str, *, equal: bool = True) -> Callable[[FitPoint], bool]:
    """A test of whether a point's ``field`` is (``equal``) or is not ``value``."""
    def test(point: FitPoint) -> bool:
        return (getattr(point, field) == value) == equal
    return test


def _arch(gpu: GPUSpec) -> str:
    return f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"


def collect(directory: str | Path | None = None, *, gpus: Iterable[str] = ()) -> FitData:
    """Every committed DeepBench timing and trace class as fit points (module docstring)."""
    gpus = tuple(gpus)
    builder = _Builder()
    for calibration in published_sets(directory, kind="timings", gpus=gpus):
        gpu = load_gpu(calibration.provenance.gpu_preset)
        builder.sources.append(Path(calibration.path).name)
        lowered: dict[tuple[Any, ...], list[list[KernelSpec]]] = {}
        for timing in calibration.timings:
            row = _row_of(timing)
            key = (timing.op, timing.pass_, timing.dtype, timing.layout,
                   tuple(sorted(timing.shape.items())))
            if key not in lowered:
                layer = row_layers(row, dtype=STORAGE_DTYPE[timing.dtype])[timing.pass_]
                # As DeepBench chose each convolution pass's algorithm: one alternative each.
                algorithms = algorithms_to_try(layer, gpu, precision=timing.dtype,
                                               layout=timing.layout,
                                               algorithm_choice=DEEPBENCH_ALGORITHM_CHOICE)
                lowered[key] = [lower_layer(layer, gpu, precision=timing.dtype,
                                            layout=timing.layout, conv_algorithm=algorithm)
                                for algorithm in algorithms]
            kind = "gemm" if timing.op == "gemm" else "conv"
            builder.add(FitPoint(gpu.name, _arch(gpu),
                                 (gpu.name, timing.dtype, kind, timing.pass_),
                                 timing.duration_s), lowered[key], gpu)
    for calibration in published_sets(directory, kind="steps", gpus=gpus):
        gpu = load_gpu(calibration.provenance.gpu_preset)
        builder.sources.append(Path(calibration.path).name)
        graph = TracedWorkload.from_dict(calibration.workload).kernel_graph(gpu)
        by_class: dict[str, list[KernelSpec]] = {}
        for _, data in graph.nodes(data=True):
            by_class.setdefault(lowered_class(data["kernel"], data["op"]), []).append(
                data["kernel"])
        for cls in CLASSES:
            measured = statistics.fmean(s.classes.get(cls, (0, 0.0))[1]
                                        for s in calibration.steps)
            if measured > 0 and by_class.get(cls):
                builder.add(FitPoint(gpu.name, _arch(gpu), (gpu.name, "trace", "class", cls),
                                     measured), [by_class[cls]], gpu)
    return builder.build()


# ---------------------------------------------------------------------- the model on arrays
def _n_params() -> int:
    return len(_COMPUTE_KEYS) + len(_KINDS) + len(_SCALARS)


def _encode(params: AnalyticParams) -> np.ndarray:
    def logit(p: float) -> float:
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    def compute(key: str) -> float:
        if key.startswith("family:"):
            return params.family_efficiency.get(key.partition(":")[2], _START["compute"])
        return params.compute_efficiency[key]

    return np.array([logit(compute(k)) for k in _COMPUTE_KEYS]
                    + [logit(params.memory_efficiency[k.value]) for k in _KINDS]
                    + [math.log(max(getattr(params, s), 1e-12)) for s in _SCALARS])


def _decode(theta: np.ndarray, source: str) -> AnalyticParams:
    nc, nk = len(_COMPUTE_KEYS), len(_KINDS)
    eff = 1 / (1 + np.exp(-theta[:nc + nk]))
    fitted = {k: float(v) for k, v in zip(_COMPUTE_KEYS, eff[:nc], strict=True)}
    compute = {k: fitted[k] for k in _KIND_COMPUTE_KEYS}
    family = {k.partition(":")[2]: v for k, v in fitted.items() if k.startswith("family:")}
    memory = {k.value: float(v) for k, v in zip(_KINDS, eff[nc:], strict=True)}
    for key in compute:
        if key.startswith(_FIXED_KIND.value + "."):
            compute[key] = 1.0
    memory[_FIXED_KIND.value] = 1.0
    scalars = np.exp(theta[nc + nk:])
    return AnalyticParams(compute_efficiency=compute, memory_efficiency=memory,
                          iteration_latency_s=float(scalars[0]),
                          kernel_floor_s=float(scalars[1]), tile_overhead=float(scalars[2]),
                          source=source, family_efficiency=family)


def _start() -> AnalyticParams:
    return AnalyticParams(
        compute_efficiency=dict.fromkeys(_KIND_COMPUTE_KEYS, _START["compute"]),
        memory_efficiency=dict.fromkeys((k.value for k in _KINDS), _START["memory"]),
        iteration_latency_s=_START["iteration_latency_s"],
        kernel_floor_s=_START["kernel_floor_s"], tile_overhead=_START["tile_overhead"],
        source="start", family_efficiency=dict.fromkeys(FAMILIES, _START["compute"]))


def _predict(data: FitData, theta: np.ndarray) -> np.ndarray:
    """Model time of every point with one entry's parameters ``theta`` (encoded)."""
    nc, nk = len(_COMPUTE_KEYS), len(_KINDS)
    eff = 1 / (1 + np.exp(-theta[:nc + nk]))
    e_compute, e_memory = eff[:nc], eff[nc:]
    latency, floor, overhead = np.exp(theta[nc + nk:])
    compute = (data.compute_s * (1 + overhead * data.tile_factor)
               / e_compute[data.compute_index])
    block = np.maximum.reduce([compute, data.iterations * latency,
                               data.memory_s / e_memory[data.kind_index],
                               floor / data.waves])
    per_alternative = np.bincount(data.alternative, weights=data.waves * block,
                                  minlength=len(data.alternative_point))
    out = np.full(len(data.points), np.inf)
    np.minimum.at(out, data.alternative_point, per_alternative)
    return out


def predict(data: FitData, table: ParameterTable) -> np.ndarray:
    """Model time of every point, each priced by the entry of ``table`` its architecture
    takes (:meth:`~gpu_models.cost.analytic.ParameterTable.entry_key`)."""
    out = np.zeros(len(data.points))
    for arch in dict.fromkeys(p.arch for p in data.points):
        entry = table.entries[table.entry_key(arch)]
        part = data.subset(_where('arch', arch))
        where = [i for i, p in enumerate(data.points) if p.arch == arch]
        out[where] = _predict(part, _encode(entry))
    return out


def _weights(points: Sequence[FitPoint]) -> np.ndarray:
    sizes: dict[tuple[str, ...], int] = {}
    for p in points:
        sizes[p.group] = sizes.get(p.group, 0) + 1
    return np.array([1 / math.sqrt(sizes[p.group]) for p in points])


def _levenberg_marquardt(residuals: Callable[[np.ndarray], np.ndarray], theta: np.ndarray,
                         *, free: np.ndarray | None = None, iterations: int = 200,
                         tolerance: float = 1e-10) -> np.ndarray:
    """Minimise ``|residuals(theta)|^2`` (forward-difference Jacobian) over the parameters
    ``free`` marks (default: all); the others keep their values."""
    index = np.flatnonzero(np.ones(theta.size, dtype=bool) if free is None else free)
    r = residuals(theta)
    cost = float(r @ r)
    damping = 1e-3
    step_h = 1e-5
    for _ in range(iterations):
        jacobian = np.empty((r.size, index.size))
        for column, j in enumerate(index):
            moved = theta.copy()
            moved[j] += step_h
            jacobian[:, column] = (residuals(moved) - r) / step_h
        a = jacobian.T @ jacobian
        g = jacobian.T @ r
        improved, gain = False, 0.0
        while damping < 1e10:
            step = np.linalg.solve(a + damping * (np.diag(np.diag(a)) + np.eye(index.size)),
                                   -g)
            trial = theta.copy()
            trial[index] += step
            r_trial = residuals(trial)
            cost_trial = float(r_trial @ r_trial)
            if cost_trial < cost:
                improved = True
                gain = (cost - cost_trial) / max(cost, 1e-300)
                theta, r, cost = trial, r_trial, cost_trial
                damping = max(damping / 3, 1e-9)
                break
            damping *= 4
        if not improved or gain < tolerance:
            break
    return theta


def _exercised(data: FitData, theta: np.ndarray) -> np.ndarray:
    """Per parameter (encoded, ``theta``): whether any point's model time depends on it,
    i.e. whether its column of the Jacobian is non-zero: some kernel of some point is bound
    by the term it scales (the slowest of compute, K loop, memory and floor) in the
    fastest alternative of its point."""
    base = _predict(data, theta)
    out = np.zeros(theta.size, dtype=bool)
    for j in range(theta.size):
        moved = theta.copy()
        moved[j] += 1e-5
        out[j] = bool(np.any(_predict(data, moved) != base))
    return out


def _fit_entry(data: FitData, prior: AnalyticParams,
               source: str) -> tuple[AnalyticParams, tuple[str, ...]]:
    """An entry fitted to ``data``, pulled towards ``prior``; and the parameters no point
    exercises (:func:`_exercised`), which take ``prior``'s values exactly."""
    measured = np.array([p.measured_s for p in data.points])
    weights = _weights(data.points)
    theta0 = _encode(prior)

    def residuals(theta: np.ndarray) -> np.ndarray:
        error = weights * (_predict(data, theta) / measured - 1)
        return np.concatenate([error, RIDGE * (theta - theta0)])

    theta = _levenberg_marquardt(residuals, theta0.copy())
    idle = ~_exercised(data, theta) & _REPORTED
    if np.any(theta[idle] != theta0[idle]):
        # Moved on the way while it bound some kernel, then left unbound: back to the prior,
        # and the rest refitted with it held there.
        theta[idle] = theta0[idle]
        theta = _levenberg_marquardt(residuals, theta, free=~idle)
        idle = ~_exercised(data, theta) & _REPORTED & (theta == theta0)
    return (_decode(theta, source),
            tuple(name for name, i in zip(PARAMETER_NAMES, idle, strict=True) if i))


#: Where the table's provenance lists each entry's parameters that no point exercises.
UNEXERCISED = "unexercised_parameters"
_UNEXERCISED_RULE = (
    "per entry, the parameters no fitted point exercises (their column of the fit's "
    "Jacobian is zero: no kernel of the entry's points is bound by the term they scale): "
    "an architecture's entry holds them at the default entry's value, the default entry "
    "at the fit's start value (sim/measure/analytic_fit.py)")


def fit_table(data: FitData, *, provenance: Mapping[str, Any] | None = None) -> ParameterTable:
    """The default entry fitted to every point, then one entry per architecture (module
    docstring); the provenance lists each entry's unexercised parameters (:data:`UNEXERCISED`)."""
    gpus = ", ".join(data.gpus)
    default, idle = _fit_entry(data, _start(), f"fitted: every measured GPU together ({gpus}); "
                               "the entry of architectures without measurements")
    entries = {DEFAULT_ENTRY: default}
    unexercised = {DEFAULT_ENTRY: list(idle)}
    for arch in sorted(dict.fromkeys(p.arch for p in data.points)):
        part = data.subset(_where('arch', arch))
        entries[arch], idle = _fit_entry(
            part, default, f"fitted: {', '.join(part.gpus)} (parameters their data do not "
            f"exercise: the default's values, [provenance.{UNEXERCISED}])")
        unexercised[arch] = list(idle)
    return ParameterTable(entries=entries,
                          provenance={**dict(provenance or {}),
                                      "unexercised": _UNEXERCISED_RULE,
                                      UNEXERCISED: unexercised})


# ---------------------------------------------------------------------- errors
@dataclass(frozen=True)
class GroupError:
    """The error of one group of points under one fit."""

    group: tuple[str, str, str, str]
    n: int
    #: Mean absolute ``predicted / measured - 1`` (for a trace class: its one error).
    mape: float
    mean_error: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"group": list(self.group), "n": self.n, "mape": self.mape,
                "mean_error": self.mean_error}


def group_errors(data: FitData, predicted: np.ndarray) -> tuple[GroupError, ...]:
    """Per group: MAPE and mean signed error, in first-seen order."""
    groups: dict[tuple[str, str, str, str], list[float]] = {}
    for p, pred in zip(data.points, predicted, strict=True):
        groups.setdefault(p.group, []).append(float(pred) / p.measured_s - 1)
    return tuple(GroupError(g, len(e), statistics.fmean(abs(x) for x in e),
                            statistics.fmean(e)) for g, e in groups.items())


def leave_one_gpu_out(data: FitData) -> np.ndarray:
    """Every point priced by a fit that did not see its GPU (module docstring)."""
    out = np.zeros(len(data.points))
    for gpu in data.gpus:
        table = fit_table(data.subset(_where('gpu', gpu, equal=False)))
        held = data.subset(_where('gpu', gpu))
        where = [i for i, p in enumerate(data.points) if p.gpu == gpu]
        out[where] = predict(held, table)
    return out


@dataclass(frozen=True)
class FitReport:
    """A fit, with its in-sample and leave-one-GPU-out errors per group."""

    table: ParameterTable
    data: FitData
    in_sample: tuple[GroupError, ...]
    leave_one_out: tuple[GroupError, ...]
    #: Traced GPU -> error of its step's kernel time (:func:`step_errors`).
    in_sample_steps: Mapping[str, float] = field(default_factory=dict)
    leave_one_out_steps: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"entries": {k: {**v.to_dict(), "source": v.source}
                            for k, v in self.table.entries.items()},
                "provenance": dict(self.table.provenance),
                "in_sample": [g.to_dict() for g in self.in_sample],
                "leave_one_gpu_out": [g.to_dict() for g in self.leave_one_out],
                "in_sample_steps": dict(self.in_sample_steps),
                "leave_one_gpu_out_steps": dict(self.leave_one_out_steps)}


def step_errors(data: FitData, predicted: np.ndarray) -> dict[str, float]:
    """Per traced GPU: its kernel classes' predicted total against their measured total, - 1
    (the step's summed kernel time, as far as lowering produces kernels of its classes)."""
    sums: dict[str, list[float]] = {}
    for p, pred in zip(data.points, predicted, strict=True):
        if p.group[1] == "trace":
            pair = sums.setdefault(p.gpu, [0.0, 0.0])
            pair[0] += float(pred)
            pair[1] += p.measured_s
    return {gpu: pred / measured - 1 for gpu, (pred, measured) in sums.items()}


def fit_published(directory: str | Path | None = None, *, gpus: Iterable[str] = (),
                  command: str = COMMAND) -> FitReport:
    """Fit to the committed data, with in-sample and leave-one-GPU-out errors; the table's
    provenance names the data, the command and the errors (its residuals)."""
    data = collect(directory, gpus=gpus)
    table = fit_table(data)
    fitted = predict(data, table)
    in_sample = group_errors(data, fitted)
    held = leave_one_gpu_out(data) if len(data.gpus) > 1 else None
    held_out = group_errors(data, held) if held is not None else ()
    provenance = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "data": list(data.sources),
        "memory_model": "gpu_models/data/memory.toml (microbenchmarks, "
                        "scripts/fit_memory_model.py)",
        "method": "weighted least squares of predicted/measured - 1, Levenberg-Marquardt; "
                  "each group weighs the same (sim/measure/analytic_fit.py)",
        "residual_in_sample_mape": {_group_name(g.group): round(g.mape, 4) for g in in_sample},
        "residual_leave_one_gpu_out_mape": {_group_name(g.group): round(g.mape, 4)
                                            for g in held_out},
        "unexercised": table.provenance["unexercised"],
        UNEXERCISED: table.provenance[UNEXERCISED],
    }
    table = ParameterTable(entries=table.entries, provenance=provenance)
    return FitReport(table=table, data=data, in_sample=in_sample, leave_one_out=held_out,
                     in_sample_steps=step_errors(data, fitted),
                     leave_one_out_steps=step_errors(data, held) if held is not None else {})


def _group_name(group: Sequence[str]) -> str:
    return "/".join(group)


# ---------------------------------------------------------------------- the file
def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(f"{value:.6g}"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def table_toml(table: ParameterTable) -> str:
    """The parameter file's text (TOML), as ``gpusim calibrate fit --model analytic``
    writes it."""
    lines = ["# Parameters of the analytic cost model (gpu_models/cost/analytic.py), per",
             "# architecture (compute capability). Written by the command in",
             "# [provenance]; do not edit by hand: re-run it.", ""]

    def section(name: str, values: Mapping[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        for key, value in values.items():
            if key not in nested:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
        for key, value in nested.items():
            section(f"{name}.{_toml_key(key)}", value)

    section("provenance", dict(table.provenance))
    for name, params in table.entries.items():
        key = DEFAULT_ENTRY if name == DEFAULT_ENTRY else f'arch."{name}"'
        section(key, {"source": params.source, **params.to_dict()})
    return "\n".join(lines).rstrip() + "\n"
