"""Sweeps of hypothetical GPUs: many limits evaluations, in parallel, resumable.

"What if the GPU had twice the SMs, half the shared memory, 32 hardware queues?" A sweep
answers it over hundreds or thousands of configurations: every combination of some
GPUSpec fields (over a base preset), workloads, batch sizes, phases, precisions, cost
models and policies is a :class:`Point`; each point is evaluated (by default with
:func:`sim.analysis.limits.limits_for_workload`) into one result row; rows are written to CSV or
Parquet as they arrive, so an interrupted sweep resumes where it stopped.

The pieces, each swappable:

* :mod:`sim.analysis.sweep.points` – :class:`Point` (with a stable :attr:`Point.key`) and
  :class:`SweepSpec` (axis tables from the CLI or a TOML file, expanded to points);
* :mod:`sim.analysis.sweep.evaluate` – evaluators ``(Point) -> dict`` and the row format;
* :mod:`sim.analysis.sweep.executors` – :class:`Serial`, :class:`LocalPool` (default),
  :class:`Dask`; results do not depend on which runs them;
* :mod:`sim.analysis.sweep.results` – incremental, crash-tolerant CSV/Parquet files;
* :mod:`sim.analysis.sweep.runner` – :func:`run_sweep`, which ties them together.

Example::

    from sim.analysis.sweep import SweepSpec, run_sweep
    spec = SweepSpec.from_tables(
        [{"sm_count": ["66", "132", "264"], "connections": ["8", "32"]}],
        defaults={"gpu": ["h100"], "workload": ["inception_v3"], "batch": ["1", "32"]},
    )
    outcome = run_sweep(spec, out="results.csv", resume=True)
"""

from sim.analysis.sweep.evaluate import (
    EVALUATORS,
    Evaluator,
    Row,
    evaluate_point,
    get_evaluator,
    limits_available,
    limits_evaluator,
    occupancy_evaluator,
)
from sim.analysis.sweep.executors import Dask, Executor, LocalPool, Serial, make_executor
from sim.analysis.sweep.points import Point, SweepSpec, load_sweep_file, sweep_from_mapping
from sim.analysis.sweep.results import open_results, read_results
from sim.analysis.sweep.runner import SweepOutcome, run_sweep

__all__ = [
    "EVALUATORS",
    "Dask",
    "Evaluator",
    "Executor",
    "LocalPool",
    "Point",
    "Row",
    "Serial",
    "SweepOutcome",
    "SweepSpec",
    "evaluate_point",
    "get_evaluator",
    "limits_available",
    "limits_evaluator",
    "load_sweep_file",
    "make_executor",
    "occupancy_evaluator",
    "open_results",
    "read_results",
    "run_sweep",
    "sweep_from_mapping",
]
