"""Evaluators: what a sweep computes for one point, and how the answer becomes a row.

An *evaluator* is any picklable callable ``(Point) -> dict``; it must be a deterministic
function of the point (executors run points in any order, in other processes or on other
machines, and their results must not depend on which). Bad input for one point — an unknown
field, a spec that fails validation, a kernel that fits no SM of that hypothetical GPU —
raises :class:`GpusimError`, which :func:`evaluate_point` turns into the row's ``error``.
Any other exception is a bug, but one point must not kill a sweep of thousands: it too
becomes the row's ``error``, as ``"<ExceptionType>: <message>"`` so that it stands out
from input errors (``KeyboardInterrupt`` and other non-``Exception`` signals still stop
the sweep).

Two evaluators ship:

* :func:`limits_evaluator` (the default) calls :func:`sim.analysis.limits.limits_for_workload` for
  the point: serial time, each policy's makespan, the bounds, the speedups, what binds;
* :func:`occupancy_evaluator` computes, for a fixed set of reference kernel shapes, the
  blocks per SM, occupancy and binding resource on the point's GPU, and how many waves a
  batch-sized grid takes. It ignores the workload, needs no simulation, and takes
  microseconds: it shows how a GPU parameter moves the occupancy limits, and it is what the
  tests use to exercise the sweep machinery.

A row is a flat dict: the point's ``key``, its input columns, the evaluator's result
flattened (nested dicts become dotted names; the ``policies`` map becomes one
``makespan_us.<policy>`` column per policy; lists become JSON text; keys that repeat an
input column are dropped), and ``error``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from sim.analysis.sweep.points import Point

#: One result row: column name -> a scalar (str, int, float, bool) or None.
Row = dict[str, Any]
#: What a sweep evaluates per point.
Evaluator = Callable[[Point], Mapping[str, Any]]

#: Result key whose ``{policy: us}`` map becomes ``makespan_us.<policy>`` columns.
_POLICY_MAP_KEY = "policies"
MAKESPAN_PREFIX = "makespan_us."


def evaluate_point(point: Point, evaluate: Evaluator) -> Row:
    """The row for ``point``: inputs, flattened result, and ``error`` (``None`` if it ran)."""
    row: Row = {"key": point.key, **point.input_columns()}
    try:
        result = evaluate(point)
    except GpusimError as exc:
        # One line: CSV rows are recovered line by line after a crash (see results).
        row["error"] = " ".join(str(exc).split())
        return row
    except Exception as exc:  # a bug in one point must not kill the sweep
        row["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
        return row
    # The inputs are the point's own: a result that echoes them (the limits report names
    # its workload and GPU, the latter as "h100*" once overridden) must not replace them.
    row.update((k, v) for k, v in flatten_result(result).items() if k not in row)
    row["error"] = None
    return row


def flatten_result(result: Mapping[str, Any], prefix: str = "") -> Row:
    """Nested dicts -> dotted column names; lists/tuples -> JSON text; scalars as they are."""
    flat: Row = {}
    for name, value in result.items():
        column = f"{prefix}{name}"
        if not prefix and name == _POLICY_MAP_KEY and isinstance(value, Mapping):
            flat.update({f"{MAKESPAN_PREFIX}{p}": us for p, us in value.items()})
        elif isinstance(value, Mapping):
            flat.update(flatten_result(value, prefix=f"{column}."))
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
            flat[column] = json.dumps(items)
        elif hasattr(value, "item") and not isinstance(value, (str, bytes)):
            flat[column] = value.item()  # numpy scalars: plain Python for CSV and Arrow
        else:
            flat[column] = value
    return flat


# ---------------------------------------------------------------------- limits (default)
def limits_evaluator(point: Point) -> dict[str, Any]:
    """:func:`sim.analysis.limits.limits_for_workload` for the point, as its ``to_dict()``."""
    limits_for_workload = _limits_function()
    report = limits_for_workload(
        point.workload,
        batch=point.batch,
        phase=point.phase,
        precision=point.precision,
        gpu=point.gpu_spec(),
        cost_model=point.cost_model,
        policies=None if point.policy is None else (point.policy,),
        sm_sharing=point.sm_sharing,
        options=point.workload_options(),
    )
    return dict(report.to_dict())


def _limits_function() -> Callable[..., Any]:
    # Imported per call, not at module import: sweeps with other evaluators, and the CLI's
    # --help, must not need the whole simulator; Python caches the module after the first.
    try:
        from sim.analysis.limits import limits_for_workload
    except ImportError as exc:
        raise RuntimeError(
            "sim.analysis.limits.limits_for_workload is not available in this installation "
            f"({exc}); use another evaluator"
        ) from exc
    return limits_for_workload


def limits_available() -> bool:
    """Whether the default evaluator can run here (``sim.analysis.limits`` is importable)."""
    try:
        _limits_function()
    except RuntimeError:
        return False
    return True


# ---------------------------------------------------------------------- occupancy
@dataclass(frozen=True)
class ReferenceKernel:
    """A kernel shape typical of CNN inference, for :func:`occupancy_evaluator`."""

    name: str
    threads: int
    regs_per_thread: int
    smem_per_block_B: int
    #: Thread blocks per sample of the batch (the grid is ``batch x blocks_per_sample``).
    blocks_per_sample: int

    def __post_init__(self) -> None:
        if min(self.threads, self.regs_per_thread, self.blocks_per_sample) < 1:
            raise GpusimError(f"reference kernel {self.name!r}: threads, registers and "
                              "blocks per sample must be positive")
        if self.smem_per_block_B < 0:
            raise GpusimError(f"reference kernel {self.name!r}: shared memory must be >= 0")


#: Shapes in the spirit of cuDNN implicit-GEMM tiles and framework elementwise kernels.
#: The blocks-per-sample figures are those of a 56x56x64 -> 64 3x3 convolution
#: (M = 3136 rows per sample over 128- or 256-row tiles) and a 64x56x56 elementwise op.
REFERENCE_KERNELS: tuple[ReferenceKernel, ...] = (
    ReferenceKernel("conv_128x64", threads=128, regs_per_thread=128,
                    smem_per_block_B=24_576, blocks_per_sample=25),
    ReferenceKernel("conv_256x128", threads=256, regs_per_thread=168,
                    smem_per_block_B=65_536, blocks_per_sample=13),
    ReferenceKernel("elementwise", threads=256, regs_per_thread=32,
                    smem_per_block_B=0, blocks_per_sample=784),
)


def occupancy_evaluator(point: Point) -> dict[str, Any]:
    """Occupancy of :data:`REFERENCE_KERNELS` on the point's GPU, and waves per batch.

    Columns per kernel: ``<kernel>.blocks_per_sm``, ``.occupancy`` (active warps / max),
    ``.limiter`` (the binding resource, or ``launch`` if it cannot run) and ``.waves``
    (``ceil(batch x blocks_per_sample / (sm_count x blocks_per_sm))``, ``None`` if it
    cannot run).
    """
    spec = point.gpu_spec()
    out: dict[str, Any] = {}
    for kernel in REFERENCE_KERNELS:
        occ = occupancy(spec, kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B)
        wave_blocks = spec.sm_count * occ.blocks_per_sm
        out[kernel.name] = {
            "blocks_per_sm": occ.blocks_per_sm,
            "occupancy": occ.occupancy,
            "limiter": occ.limiter,
            "waves": (math.ceil(point.batch * kernel.blocks_per_sample / wave_blocks)
                      if wave_blocks else None),
        }
    return out


#: Evaluators by the name the CLI and the benchmark use.
EVALUATORS: Mapping[str, Evaluator] = {
    "limits": limits_evaluator,
    "occupancy": occupancy_evaluator,
}


def get_evaluator(name: str) -> Evaluator:
    """The evaluator called ``name``; :class:`GpusimError` listing the valid names."""
    try:
        return EVALUATORS[name]
    except KeyError:
        raise GpusimError(f"unknown evaluator {name!r}; valid: {', '.join(EVALUATORS)}") from None
