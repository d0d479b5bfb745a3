"""The calibrated cost model: kernel durations fitted to measurements on one GPU.

Two sources of truth, tried in order for each kernel:

1. **Exact match.** When the calibration data hold a launch with the same library kernel
   name, grid, threads, registers and shared memory, its measured duration (the median over
   repeats) is the answer.
2. **Per-kind fit.** Otherwise a small non-negative linear model of the kernel's kind
   predicts its duration from four features computed on the measured GPU::

       T = a * compute_s + b * memory_s + c * waves + d      (a, b, c, d >= 0)

   ``compute_s`` is the wave-aware compute time at full peak (``waves`` x one block's FLOPs
   at its share ``peak / (sm_count x resident blocks per SM)``), ``memory_s`` is
   ``dram_bytes / dram_bw_Bps``, ``waves`` counts waves and the constant is per-kernel
   overhead. So ``1/a`` and ``1/b`` are the compute and memory efficiencies the kind
   reaches, ``c`` a per-wave latency, ``d`` a per-kernel one; because the features scale with
   FLOPs, bytes and grid size, the model interpolates to shapes and batch sizes it has not
   seen. Coefficients minimise the *relative* squared error (durations span orders of
   magnitude) and are exact non-negative least squares: with four features every support set
   is tried (16 small solves), and the best feasible one wins.

Kinds without records fall back to another cost model (the roofline by default; say
``fallback=None`` to make that an error). Predictions are clamped to the physical floors
(FLOPs / peak, bytes / bandwidth), so a measured duration below them (a sign that the
kernel's derived work is overstated) cannot make the engine beat the hardware.

Records from profiler traces carry no FLOPs or bytes (a trace does not record them); they
are derived from the layer signature by a *work function* ``record -> (flops, dram_bytes)``
that lowering provides, or read from the record when its producer filled them in. Records
with neither serve exact matches only, so a model built from raw trace data gives measured
durations for the launches it saw and the fallback (roofline) for everything else.
Lowering's ``KernelSpec.measured_time_s`` is not read: the exact match on the launch
configuration finds the same measurement, and only for the GPU the model belongs to.

:func:`cross_validate` reports the held-out error per kind (k-fold, folds drawn with a
seeded generator passed in). The committed digests of two public traces (a100-40gb,
rtx-2080ti; ``gpu_models/data/calibration/``) carry records with derived work, so those GPUs
have a fitted model; the unit tests fit records generated from known coefficients and check
that the fitter recovers them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from gpu_models.calibration import CalibrationRecord, all_records, load_gpu_calibration
from gpu_models.cost.roofline import RooflineModel
from gpu_models.cost.waves import (
    block_share_flop_per_s,
    block_sm_demand,
    implied_bytes_in_flight_B,
    isolated_time_s,
    memory_floor_s,
    physical_floor_s,
    waves,
)
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel, KernelCost, KernelKind, KernelSpec
from gpu_models.presets import list_presets, load_gpu, load_preset
from gpu_models.spec import GPUSpec

#: Names of the fitted features, in coefficient order.
FEATURE_NAMES: tuple[str, ...] = ("compute_s", "memory_s", "waves", "constant")

#: Derives a record's (flops, dram_bytes) from its layer signature and launch; ``None`` when
#: it cannot (the record then serves exact matches only).
WorkFn = Callable[[CalibrationRecord], "tuple[float, float] | None"]

#: GPUSpec fields that do not change how long a kernel takes once it runs (host-side
#: settings, names, memory capacity): a calibrated model answers for a spec that differs
#: from its own only in these.
HOST_FIELDS = frozenset({
    "name", "display_name", "dram_B", "connections", "max_connections",
    "max_resident_grids", "stream_priority_levels", "launch_overhead_s", "event_overhead_s",
})


def timing_differences(spec: GPUSpec, other: GPUSpec) -> tuple[str, ...]:
    """Fields, outside :data:`HOST_FIELDS`, in which ``spec`` and ``other`` differ."""
    return tuple(f.name for f in dataclasses.fields(GPUSpec)
                 if f.compare and f.name not in HOST_FIELDS
                 and getattr(spec, f.name) != getattr(other, f.name))


def features(kernel: KernelSpec, spec: GPUSpec) -> tuple[float, float, float, float]:
    """The fitted features of ``kernel`` on ``spec`` (see :data:`FEATURE_NAMES`)."""
    n_waves = waves(kernel, spec)
    compute_s = n_waves * kernel.flops / kernel.blocks / block_share_flop_per_s(kernel, spec)
    return (compute_s, memory_floor_s(kernel, spec), float(n_waves), 1.0)


def nnls(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares for a handful of columns, by trying every support.

    The optimum of ``min |Ax - y|, x >= 0`` is the unconstrained least-squares solution on
    its own support; with p columns there are 2^p supports, cheap for p = 4.
    """
    n_cols = matrix.shape[1]
    # Columns differ by orders of magnitude (seconds vs wave counts): solve on unit columns.
    norms = np.linalg.norm(matrix, axis=0)
    norms[norms == 0] = 1.0
    scaled = matrix / norms
    best = np.zeros(n_cols)
    best_residual = float(np.sum(target ** 2))
    for size in range(1, n_cols + 1):
        for support in itertools.combinations(range(n_cols), size):
            cols = list(support)
            solution, *_ = np.linalg.lstsq(scaled[:, cols], target, rcond=None)
            if np.any(solution < 0):
                continue
            residual = float(np.sum((scaled[:, cols] @ solution - target) ** 2))
            # Prefer the smaller support on ties so unused features stay exactly zero.
            if residual < best_residual * (1 - 1e-12):
                best = np.zeros(n_cols)
                best[cols] = solution
                best_residual = residual
    return best / norms


@dataclass(frozen=True)
class KindFit:
    """The fitted model of one kernel kind on one GPU."""

    kind: KernelKind
    #: Coefficients of :data:`FEATURE_NAMES`, all >= 0.
    coefficients: tuple[float, float, float, float]
    n_records: int

    def __post_init__(self) -> None:
        if len(self.coefficients) != len(FEATURE_NAMES) or min(self.coefficients) < 0:
            raise GpusimError(f"fit for {self.kind}: need {len(FEATURE_NAMES)} coefficients "
                              f">= 0 (got {self.coefficients!r})")

    def predict_s(self, feats: Sequence[float]) -> float:
        """Predicted duration for one kernel's features."""
        return float(np.dot(self.coefficients, feats))


def fit_kind(kind: KernelKind, rows: Sequence[Sequence[float]],
             durations_s: Sequence[float]) -> KindFit:
    """Fit one kind's coefficients to feature rows and measured durations (relative error)."""
    if not rows:
        raise GpusimError(f"no records of kind {kind} to fit")
    matrix = np.asarray(rows, dtype=float)
    target = np.asarray(durations_s, dtype=float)
    # Dividing each row by its duration turns absolute into relative residuals.
    coefs = nnls(matrix / target[:, None], np.ones_like(target))
    return KindFit(kind=kind, coefficients=tuple(float(c) for c in coefs),  # type: ignore[arg-type]
                   n_records=len(rows))


def work_kernels(records: Sequence[CalibrationRecord],
                 work_fn: WorkFn | None = None) -> list[KernelSpec]:
    """The records that can be fitted, as kernels with their work and measured duration.

    A record's FLOPs and bytes come from the record when it carries them, else from
    ``work_fn`` when given; a record with neither (or whose ``work_fn`` gives ``None``) is
    left out (it still serves exact matches).
    """
    kernels = []
    for record in records:
        if record.flops is not None and record.dram_bytes is not None:
            kernels.append(record.to_kernel_spec())
        elif work_fn is not None:
            work = work_fn(record)
            if work is not None:
                kernels.append(record.to_kernel_spec(flops=work[0], dram_bytes=work[1]))
    return kernels


def fit_records(records: Sequence[CalibrationRecord], spec: GPUSpec, *,
                work_fn: WorkFn | None = None) -> dict[KernelKind, KindFit]:
    """Per-kind fits of the fittable ``records`` (see :func:`work_kernels`) measured on ``spec``."""
    kernels = work_kernels(records, work_fn)
    by_kind: dict[KernelKind, list[KernelSpec]] = {}
    for kernel in kernels:
        by_kind.setdefault(kernel.kind, []).append(kernel)
    return {
        kind: fit_kind(kind, [features(k, spec) for k in group],
                       [k.measured_time_s or 0.0 for k in group])
        for kind, group in by_kind.items()
    }


@dataclass(frozen=True)
class FitError:
    """Relative error of a kind's fit: |predicted - measured| / measured."""

    kind: KernelKind
    n_records: int
    folds: int
    #: Held-out error (each record predicted by a fit that did not see it).
    heldout_median: float
    heldout_mean: float
    heldout_max: float
    #: In-sample error of the fit on all records.
    insample_mean: float
    coefficients: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly view (a missing held-out error is ``None``, not NaN)."""
        out = {k: (None if isinstance(v, float) and math.isnan(v) else v)
               for k, v in dataclasses.asdict(self).items()}
        out["kind"] = self.kind.value
        out["coefficients"] = dict(zip(FEATURE_NAMES, self.coefficients, strict=True))
        return out


def cross_validate(records: Sequence[CalibrationRecord], spec: GPUSpec, *,
                   rng: np.random.Generator, folds: int = 5,
                   work_fn: WorkFn | None = None) -> dict[KernelKind, FitError]:
    """k-fold held-out relative error of the per-kind fit, per kind.

    Records of a kind are shuffled with ``rng`` and split into ``min(folds, n)`` folds; a
    kind with a single record has no held-out error (reported as NaN).
    """
    if folds < 2:
        raise GpusimError(f"folds must be >= 2 (got {folds})")
    kernels = work_kernels(records, work_fn)
    if not kernels:
        raise GpusimError(
            f"none of the {len(records)} calibration records carries flops/dram_bytes and no "
            "work function derived them: ingest the trace with --workload (its digest carries "
            "them), or pass a work function (CLI: --work sim.measure.work:signature_work, "
            "for traces recorded with shapes)")
    by_kind: dict[KernelKind, list[KernelSpec]] = {}
    for kernel in kernels:
        by_kind.setdefault(kernel.kind, []).append(kernel)
    report = {}
    for kind, group in sorted(by_kind.items()):
        rows = np.array([features(k, spec) for k in group])
        measured = np.array([k.measured_time_s or 0.0 for k in group])
        full = fit_kind(kind, rows.tolist(), measured.tolist())
        insample = np.abs(rows @ np.array(full.coefficients) - measured) / measured
        n_folds = min(folds, len(group))
        errors: list[float] = []
        if n_folds >= 2:
            order = rng.permutation(len(group))
            for held in np.array_split(order, n_folds):
                train = np.setdiff1d(order, held)
                fit = fit_kind(kind, rows[train].tolist(), measured[train].tolist())
                predicted = rows[held] @ np.array(fit.coefficients)
                errors.extend((np.abs(predicted - measured[held]) / measured[held]).tolist())
        nan = float("nan")
        report[kind] = FitError(
            kind=kind, n_records=len(group), folds=n_folds,
            heldout_median=statistics.median(errors) if errors else nan,
            heldout_mean=statistics.fmean(errors) if errors else nan,
            heldout_max=max(errors) if errors else nan,
            insample_mean=float(np.mean(insample)), coefficients=full.coefficients)
    return report


@dataclass(frozen=True)
class CalibratedModel:
    """Cost model for the GPU the data were measured on (see the module docstring)."""

    spec: GPUSpec
    # Mappings are left out of the hash so that models stay hashable.
    fits: Mapping[KernelKind, KindFit] = field(hash=False)
    #: Median measured duration per launch configuration (:attr:`CalibrationRecord.config_key`).
    measured_s: Mapping[tuple[str, tuple[int, int, int], int, int, int], float] = field(
        default_factory=lambda: MappingProxyType({}), hash=False)
    #: Used for kinds with no fit; ``None`` makes such kernels an error.
    fallback: CostModel | None = field(default_factory=RooflineModel)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fits", MappingProxyType(dict(self.fits)))
        object.__setattr__(self, "measured_s", MappingProxyType(dict(self.measured_s)))

    def _check_spec(self, spec: GPUSpec) -> None:
        """Raise unless ``spec`` is this model's GPU up to host-side settings."""
        if spec == self.spec:
            return
        changed = timing_differences(spec, self.spec)
        if changed:
            raise GpusimError(
                f"calibrated model of {self.spec.name} asked about {spec.name}, which differs in "
                f"{', '.join(changed)}; use the 'scaled' cost model to carry it to other hardware")

    def predict_s(self, kernel: KernelSpec) -> tuple[float, str]:
        """Duration of ``kernel`` running alone, and how it was found: measured, fit, fallback."""
        floor = physical_floor_s(kernel, self.spec)
        key = (kernel.library_name, kernel.grid, kernel.threads, kernel.regs_per_thread,
               kernel.smem_per_block_B)
        if kernel.library_name and key in self.measured_s:
            return max(self.measured_s[key], floor), "measured"
        fit = self.fits.get(kernel.kind)
        if fit is not None:
            return max(fit.predict_s(features(kernel, self.spec)), floor), "fit"
        if self.fallback is None:
            raise GpusimError(f"calibrated model of {self.spec.name} has no records of kind "
                              f"{kernel.kind} (kernel {kernel.name!r}) and no fallback")
        time_s = isolated_time_s(kernel, self.spec, self.fallback)
        return max(time_s, floor), "fallback"

    def __call__(self, kernel: KernelSpec, spec: GPUSpec) -> KernelCost:
        self._check_spec(spec)
        time_s, _ = self.predict_s(kernel)
        # The whole duration goes into the block time (waves x block time = the duration);
        # the bytes pass through. Since time_s >= bytes / bandwidth and the blocks keep the
        # bytes in flight that time implies, the engine does not stretch a lone kernel
        # beyond its calibrated duration.
        block_time_s = time_s / waves(kernel, self.spec)
        return KernelCost(
            block_time_s=block_time_s, dram_bytes=kernel.dram_bytes,
            sm_throughput=block_sm_demand(kernel, spec, block_time_s),
            bytes_in_flight_B=implied_bytes_in_flight_B(kernel, spec, block_time_s,
                                                        kernel.dram_bytes))


def calibrated_model(
    gpu: str | GPUSpec,
    *,
    records: Sequence[CalibrationRecord] | None = None,
    work_fn: WorkFn | None = None,
    directory: str | None = None,
    fallback: CostModel | None = None,
    use_fallback: bool = True,
) -> CalibratedModel:
    """Fit a :class:`CalibratedModel` for ``gpu`` (a preset name or a spec).

    ``records`` default to the calibration files of the preset ``gpu`` derives from
    (``spec.preset``, else its name; an error names the GPU when there are none). Those
    were measured on the preset itself, so ``gpu`` may differ from it only in host-side
    settings (:data:`HOST_FIELDS`, e.g. ``connections`` or ``launch_overhead_s``); a spec
    with other changes (SMs, clock, bandwidth, ...) raises, pointing to the ``scaled``
    model. Records passed explicitly are taken as measured on ``gpu``. ``work_fn`` derives
    each record's FLOPs and bytes when the records lack them. Kinds without records use
    ``fallback`` (default: the roofline model) unless ``use_fallback`` is false.
    """
    spec = load_gpu(gpu) if isinstance(gpu, str) else gpu
    if records is None:
        measured = spec.preset or spec.name
        if measured in list_presets():
            changed = timing_differences(spec, load_preset(measured))
            if changed:
                raise GpusimError(
                    f"calibration data of {measured} were measured on {measured}, but "
                    f"{spec.name} differs from it in {', '.join(changed)}; use the 'scaled' "
                    f"cost model (origin={measured!r}) to carry them to other hardware")
        records = all_records(load_gpu_calibration(measured, directory))
    if not records:
        raise GpusimError(f"no calibration records for GPU {spec.name!r}")
    durations: dict[tuple[str, tuple[int, int, int], int, int, int], list[float]] = {}
    for record in records:
        durations.setdefault(record.config_key, []).append(record.duration_s)
    return CalibratedModel(
        spec=spec,
        fits=fit_records(records, spec, work_fn=work_fn),
        measured_s={k: statistics.median(v) for k, v in durations.items()},
        fallback=(fallback or RooflineModel()) if use_fallback else None,
    )
