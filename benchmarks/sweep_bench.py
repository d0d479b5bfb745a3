"""Sweep throughput: points per second of a 200-point sweep, local process pool vs Dask.

The sweep is ``examples/sweeps/sms_vs_smem.toml``: 10 SM counts x 10 shared-memory sizes
over an H100, for ResNet-50 and Inception v3 at batch 32 (200 points). Each executor runs
the whole sweep from scratch (start-up included, as a user would see it) and the rows of
every executor are checked equal to the first one's.

    .venv/bin/python benchmarks/sweep_bench.py                      # local, dask
    .venv/bin/python benchmarks/sweep_bench.py --executors serial,local,dask --workers 2

The default evaluator is the limits report (``sim.analysis.limits``); ``--evaluator occupancy``
measures the sweep machinery alone (microseconds per point, so overhead dominates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sim.analysis.processes import available_cpus
from sim.analysis.sweep import (
    EVALUATORS,
    Dask,
    Executor,
    LocalPool,
    Serial,
    get_evaluator,
    limits_available,
    load_sweep_file,
    run_sweep,
)
from sim.cli.common import print_table

SWEEP_FILE = Path(__file__).resolve().parents[1] / "examples" / "sweeps" / "sms_vs_smem.toml"


def build_executor(name: str, workers: int) -> Executor:
    """The executor to time: Dask as a LocalCluster of worker processes, like a user's."""
    if name == "serial":
        return Serial()
    if name == "local":
        return LocalPool(workers=workers)
    if name == "dask":
        return Dask(workers=workers, processes=True)
    raise SystemExit(f"unknown executor {name!r}; choose from serial, local, dask")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", default="local,dask",
                        help="comma list of serial, local, dask (default: local,dask)")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="workers for local and dask (default: the CPU count)")
    parser.add_argument("--evaluator", choices=tuple(EVALUATORS), default=None,
                        help="default: limits if sim.analysis.limits is installed, else occupancy")
    args = parser.parse_args(argv)

    evaluator_name = args.evaluator or ("limits" if limits_available() else "occupancy")
    if evaluator_name == "limits" and not limits_available():
        raise SystemExit("sim.analysis.limits is not available here; use --evaluator occupancy")
    if args.evaluator is None and evaluator_name == "occupancy":
        print("note: sim.analysis.limits is not available; timing the occupancy evaluator",
              file=sys.stderr)
    evaluate = get_evaluator(evaluator_name)
    spec = load_sweep_file(SWEEP_FILE)
    n_points = len(spec.points())

    reference: dict[str, dict[str, Any]] | None = None
    table = []
    for name in args.executors.split(","):
        executor = build_executor(name.strip(), args.workers)
        outcome = run_sweep(spec, evaluate=evaluate, executor=executor)
        rows = {row["key"]: row for row in outcome.rows}
        if reference is None:
            reference = rows
        elif rows != reference:
            differing = {c for k, row in rows.items() for c in row
                         if row.get(c) != reference.get(k, {}).get(c)}
            count = sum(1 for k, row in rows.items() if row != reference.get(k))
            raise SystemExit(f"{name}: {count} of {len(rows)} rows differ from "
                             f"{table[0][0]}'s, in {', '.join(sorted(differing))}")
        workers = 1 if name == "serial" else args.workers
        table.append((name, workers, outcome.evaluated, outcome.errors,
                      round(outcome.elapsed_s, 2), round(outcome.points_per_s, 1)))
    print(f"sweep: {SWEEP_FILE.name}, {n_points} points, evaluator {evaluator_name}, "
          f"{available_cpus()} CPUs")
    print_table(table, ("executor", "workers", "points", "invalid", "seconds", "points/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
