"""The "limits of concurrent layer scheduling" table, and how it moves with batch size.

For each GPU, workload, phase and batch size: the serial (framework) time, the best policy
and its time, the lower bound, the ideal and achievable speedups and what binds the best
policy; then, per GPU / workload / phase, the achievable speedup at each batch size. Each
row is one :func:`sim.analysis.limits.limits_for_workload` call, run in a process pool; the
wall time of every row is printed so slow workloads show. Usage::

    .venv/bin/python benchmarks/limits_table.py                    # the full table
    .venv/bin/python benchmarks/limits_table.py --jobs 4 --json out.json
    .venv/bin/python benchmarks/limits_table.py --launch-overhead-us 1 --event-overhead-us 0.5
    .venv/bin/python benchmarks/limits_table.py --sm-sharing off   # the engine without SM
                                                                   # sharing (ablation)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from sim.analysis.limits import limits_for_workload
from sim.cli.common import format_table

WORKLOADS = ("googlenet", "inception_v3", "resnet50", "densenet121", "randwire", "pathnet")
GPUS = ("h100", "v100")
PHASES = ("inference", "training")
BATCHES = (1, 32)


def row(gpu: str, workload: str, phase: str, batch: int, policies: tuple[str, ...] | None,
        launch_us: float | None, event_us: float | None,
        sm_sharing: bool = True) -> dict[str, Any]:
    """One limits report as a dict, with the seconds it took."""
    start = time.perf_counter()
    report = limits_for_workload(
        workload, batch=batch, phase=phase, gpu=gpu, policies=policies,
        launch_overhead_s=None if launch_us is None else launch_us * 1e-6,
        event_overhead_s=None if event_us is None else event_us * 1e-6, sm_sharing=sm_sharing)
    out = report.to_dict()
    out["wall_s"] = time.perf_counter() - start
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", default=",".join(GPUS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--policies", default=None,
                        help="comma-separated policies (default: the limits defaults)")
    parser.add_argument("--launch-overhead-us", type=float, default=None,
                        help="host time per launch (default: each GPU spec's)")
    parser.add_argument("--event-overhead-us", type=float, default=None,
                        help="host time per cross-stream event (default: each GPU spec's)")
    parser.add_argument("--sm-sharing", choices=("on", "off"), default="on",
                        help="SM throughput sharing and the memory-parallelism bound in the "
                        "engine (default on)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--json", metavar="OUT", help="also write every report as JSON")
    args = parser.parse_args(argv)

    policies = tuple(args.policies.split(",")) if args.policies else None
    points = list(itertools.product(args.gpus.split(","), args.workloads.split(","),
                                    args.phases.split(","),
                                    [int(b) for b in args.batches.split(",")]))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(row, *p, policies, args.launch_overhead_us,
                               args.event_overhead_us, args.sm_sharing == "on") for p in points]
        reports = [f.result() for f in futures]
    total_s = time.perf_counter() - start

    print(format_table(
        [(r["gpu"], r["workload"], r["phase"], r["batch"], r["kernels"],
          round(r["serial_us"]), r["best_policy"], round(r["policies"][r["best_policy"]]),
          round(r["lower_bound_us"]), round(r["speedup_ideal"], 2),
          round(r["speedup_achievable"], 2), r["binds"], round(r["wall_s"], 1))
         for r in reports],
        ("gpu", "workload", "phase", "batch", "kernels", "serial_us", "best policy",
         "best_us", "bound_us", "ideal", "achievable", "binds", "wall_s")))
    print()
    batches = sorted({r["batch"] for r in reports})
    by_key: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in reports:
        by_key.setdefault((r["gpu"], r["workload"], r["phase"]), {})[r["batch"]] = (
            r["speedup_achievable"])
    print(format_table(
        [(*key, *(round(v[b], 2) if b in v else "-" for b in batches))
         for key, v in by_key.items()],
        ("gpu", "workload", "phase", *(f"achievable b{b}" for b in batches))))
    print(f"\n{len(reports)} reports in {total_s:.0f} s with {args.jobs} worker(s); slowest: "
          + ", ".join(f"{r['gpu']}/{r['workload']}/{r['phase']}/b{r['batch']} "
                      f"{r['wall_s']:.0f} s"
                      for r in sorted(reports, key=lambda r: -r["wall_s"])[:3]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(reports, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
