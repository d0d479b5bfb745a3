"""``gpusim limits``: the limits of concurrent layer scheduling for one workload and GPU."""

from __future__ import annotations

import argparse

from gpu_models.units import US_PER_S
from sim.analysis.limits import BINDS, limits_for_workload
from sim.cli.common import (
    add_json_arg,
    gpu_from_args,
    print_json,
    print_table,
    sm_sharing_from_args,
)
from sim.cli.simulate import add_workload_args
from sim.scheduling import DEFAULT_POLICIES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``limits`` command."""
    p = subparsers.add_parser(
        "limits", help="serial time, each policy's time, critical-path and work bounds, "
        "ideal and achievable speedups, and what binds")
    add_workload_args(p)
    p.add_argument("--policies", metavar="A,B,...",
                   help=f"policies to compare (default: {','.join(DEFAULT_POLICIES)}); "
                   "serial is always included")
    add_json_arg(p)
    p.set_defaults(func=cmd_limits)


def cmd_limits(args: argparse.Namespace) -> int:
    gpu = gpu_from_args(args)
    policies = None
    if args.policies is not None:
        policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    report = limits_for_workload(
        args.workload, batch=args.batch, phase=args.phase, precision=args.precision, gpu=gpu,
        cost_model=args.cost_model, origin=args.origin, policies=policies,
        resolution=args.resolution, sm_sharing=sm_sharing_from_args(args))
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"{args.workload} {args.phase} batch {args.batch} ({args.precision}) on "
          f"{gpu.display_name} ({gpu.name}), cost model {args.cost_model}, SM sharing "
          f"{args.sm_sharing}: {report.kernels} kernels")
    rows = [
        (name, round(t * US_PER_S, 1), round(report.serial_s / t, 3), report.streams[name],
         report.events[name])
        for name, t in report.policies_s.items()
    ]
    print_table(rows, ("policy", "time_us", "speedup", "streams", "events"))
    print()
    wb = report.work_bound
    print_table(
        [
            ("critical path (isolated kernels, unavoidable launches)",
             round(report.critical_path_s * US_PER_S, 1)),
            (f"work bound ({wb.binding})", round(report.work_bound_s * US_PER_S, 1)),
            ("lower bound", round(report.lower_bound_s * US_PER_S, 1)),
        ],
        ("bound", "time_us"),
    )
    print()
    print(f"best policy: {report.best_policy}   speedup ideal: {report.speedup_ideal:.3f}   "
          f"achievable: {report.speedup_achievable:.3f}")
    print(f"binds: {report.binds} ({BINDS[report.binds]})")
    return 0
