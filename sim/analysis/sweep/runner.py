"""The sweep runner: points in, rows out, written as they arrive, resumable.

:func:`run_sweep` expands the sweep, drops the points whose key is already in the results
file (on resume), hands the rest to an executor, and writes each row as it comes back,
updating a progress bar. ``max_points`` stops after that many new points (a sweep can be
run in slices); an exception or Ctrl-C stops it too — in every case the rows that came back
are in the file and the next ``resume`` starts from there (a process killed outright loses
at most the rows of the last :data:`FLUSH_INTERVAL_S`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm import tqdm

from gpu_models.errors import GpusimError
from sim.analysis.sweep.evaluate import Evaluator, Row, evaluate_point, limits_evaluator
from sim.analysis.sweep.executors import Executor, LocalPool
from sim.analysis.sweep.points import Point, SweepSpec
from sim.analysis.sweep.results import ResultsFile, open_results

#: Rows reach the results file in batches of at most this many rows, or at least this
#: often: one file write per point would dominate cheap evaluations (and make thousands of
#: Parquet parts), while a killed process loses at most one interval of work.
FLUSH_ROWS = 256
FLUSH_INTERVAL_S = 2.0


@dataclass(frozen=True)
class SweepOutcome:
    """What one :func:`run_sweep` call did."""

    #: Points in the sweep.
    total: int
    #: Points skipped because their key was already in the results file.
    skipped: int
    #: Rows this call produced, in the sweep's point order (whatever order they finished
    #: in), invalid points included.
    rows: tuple[Row, ...]
    #: Wall time of the evaluation phase (executor start-up included).
    elapsed_s: float
    executor: str

    def __post_init__(self) -> None:
        if min(self.total, self.skipped) < 0 or self.skipped + len(self.rows) > self.total:
            raise GpusimError(f"inconsistent sweep outcome: {self.total} points, "
                              f"{self.skipped} skipped, {len(self.rows)} evaluated")

    @property
    def evaluated(self) -> int:
        """Points evaluated by this call."""
        return len(self.rows)

    @property
    def errors(self) -> int:
        """Evaluated points that are invalid (their row has an ``error``)."""
        return sum(1 for row in self.rows if row.get("error"))

    @property
    def remaining(self) -> int:
        """Points still to do (after ``max_points`` or an interruption)."""
        return self.total - self.skipped - self.evaluated

    @property
    def points_per_s(self) -> float:
        """Evaluated points per second of wall time."""
        return self.evaluated / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_sweep(
    sweep: SweepSpec | Sequence[Point],
    *,
    evaluate: Evaluator = limits_evaluator,
    executor: Executor | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_points: int | None = None,
    progress: bool = False,
) -> SweepOutcome:
    """Evaluate every point of ``sweep`` (or the first ``max_points`` not yet done).

    ``executor`` defaults to a :class:`LocalPool` over all cores. With ``out``, rows are
    written to that ``.csv``/``.parquet`` file as they arrive; ``resume`` skips points
    already there, ``overwrite`` replaces an existing file. ``progress`` shows a tqdm bar
    on stderr (only when stderr is a terminal).
    """
    if max_points is not None and (isinstance(max_points, bool) or max_points < 0):
        raise GpusimError(f"max_points must be >= 0 (got {max_points!r})")
    points = sweep.points() if isinstance(sweep, SweepSpec) else list(sweep)
    chosen: Executor = executor if executor is not None else LocalPool()
    results: ResultsFile | None = (
        open_results(out, resume=resume, overwrite=overwrite) if out is not None else None
    )
    done = results.existing_keys if results is not None else frozenset()
    pending = [p for p in points if p.key not in done]
    todo = pending if max_points is None else pending[:max_points]
    skipped = len(points) - len(pending)
    rows: list[Row] = []
    buffered: list[Row] = []
    bar = tqdm(total=len(points), initial=skipped, unit="pt", file=sys.stderr, desc="sweep",
               disable=not (progress and sys.stderr.isatty()))
    start = last_flush = time.perf_counter()
    try:
        # closing(): stopping early shuts the executor's workers down now, not at GC.
        with closing(chosen.run(partial(evaluate_point, evaluate=evaluate), todo)) as stream:
            for row in stream:
                rows.append(row)
                buffered.append(row)
                bar.update(1)
                now = time.perf_counter()
                if results is not None and (len(buffered) >= FLUSH_ROWS
                                            or now - last_flush >= FLUSH_INTERVAL_S):
                    results.append(buffered)
                    buffered, last_flush = [], now
    finally:
        elapsed = time.perf_counter() - start
        bar.close()
        if results is not None:
            try:
                results.append(buffered)
            finally:
                results.close()
    order = {point.key: i for i, point in enumerate(points)}
    rows.sort(key=lambda row: order[row["key"]])
    return SweepOutcome(total=len(points), skipped=skipped, rows=tuple(rows),
                        elapsed_s=elapsed, executor=chosen.name)
