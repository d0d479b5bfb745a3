"""``gpusim limits``: the limits of concurrent layer scheduling for one workload and GPU."""

from __future__ import annotations

import argparse

from gpu_models.units import US_PER_S
from sim.analysis.limits import BINDS, limits_for_workload
from sim.analysis.processes import check_workers
from sim.cli.common import (
    add_json_arg,
    gpu_from_args,
    options_from_args,
    print_json,
    print_table,
    progress_bar,
    sm_sharing_from_args,
)
from sim.cli.files import declare_files
from sim.cli.simulate import add_workload_args, precision_label
from sim.scheduling import DEFAULT_POLICIES

#: What each work-bound resource means, for the bounds table.
_RESOURCES = {
    "warps": "warp slots", "registers": "registers", "shared_memory": "shared memory",
    "blocks": "block slots", "dram_bandwidth": "DRAM bandwidth",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``limits`` command."""
    p = subparsers.add_parser(
        "limits", help="serial time, each policy's time, critical-path and work bounds, "
        "ideal and achievable speedups, and what binds",
        description="How much faster could this network run if its independent layers ran "
        "concurrently? Simulates the serial schedule and each policy, computes the "
        "critical-path and work bounds no schedule can beat, and says what limits the best "
        "run.")
    add_workload_args(p)
    p.add_argument("--policies", metavar="A,B,...",
                   help=f"policies to compare (default: {','.join(DEFAULT_POLICIES)}); "
                   "serial is always included")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="simulate the policies in N worker processes at once (default 1; "
                   "the same report, sooner on a machine with the cores)")
    add_json_arg(p)
    p.set_defaults(func=cmd_limits)
    declare_files(p, inputs=("gpu",))


def _us(seconds: float) -> str:
    return f"{seconds * US_PER_S:,.1f}"


def cmd_limits(args: argparse.Namespace) -> int:
    gpu = gpu_from_args(args)
    check_workers(args.workers)  # before the workload is prepared
    policies = None
    if args.policies is not None:
        policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    with progress_bar(None, "limits", "policies") as bar:

        def report(policy: str, done: int, total: int) -> None:
            bar.total = total
            bar.set_description(f"limits: {policy}" if policy else "limits")
            bar.update(done - bar.n)

        report_ = limits_for_workload(
            args.workload, batch=args.batch, phase=args.phase, precision=args.precision,
            gpu=gpu, cost_model=args.cost_model, origin=args.origin, policies=policies,
            resolution=args.resolution, sm_sharing=sm_sharing_from_args(args),
            options=options_from_args(args), progress=report, workers=args.workers)
    if args.json:
        print_json(report_.to_dict())
        return 0
    print(f"{args.workload} {args.phase} batch {args.batch} "
          f"({precision_label(gpu, args.precision)}) on {gpu.display_name} ({gpu.name}), "
          f"cost model {args.cost_model}, SM sharing {args.sm_sharing}: "
          f"{report_.kernels} kernels")
    rows = [
        (name, _us(t), f"{report_.serial_s / t:.3f}", report_.streams[name],
         report_.events[name])
        for name, t in report_.policies_s.items()
    ]
    print_table(rows, ("policy", "time_us", "speedup", "streams", "events"))
    print()
    wb = report_.work_bound
    print_table(
        [
            ("critical path: every kernel alone, unlimited concurrency, the unavoidable "
             "launches", _us(report_.critical_path_s)),
            (f"work bound: the GPU's {_RESOURCES.get(wb.binding, wb.binding)} fully used",
             _us(report_.work_bound_s)),
            ("lower bound: the larger of the two; no schedule is faster",
             _us(report_.lower_bound_s)),
        ],
        ("bound", "time_us"),
    )
    print()
    print(f"best policy: {report_.best_policy}   speedup over serial: ideal "
          f"{report_.speedup_ideal:.3f}, achievable {report_.speedup_achievable:.3f}")
    print(f"what binds the best run: {report_.binds.replace('_', ' ')}: "
          f"{BINDS[report_.binds]}")
    return 0
