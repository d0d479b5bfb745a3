"""``gpusim simulate``: one workload, one scheduling policy, simulated on one GPU."""

from __future__ import annotations

import argparse

from gpu_models.cost import DEFAULT_COST_MODEL, list_cost_models
from gpu_models.spec import PRECISIONS, GPUSpec
from gpu_models.units import US_PER_S
from sim.analysis.workflow import (
    busy_sm_fraction,
    dram_utilisation,
    simulate_workload,
    sm_throughput_in_use,
)
from sim.cli.common import (
    add_gpu_args,
    add_json_arg,
    add_option_arg,
    add_sm_sharing_arg,
    engine_progress,
    gpu_from_args,
    options_from_args,
    print_json,
    sm_sharing_from_args,
)
from sim.cli.files import declare_files
from sim.scheduling import event_count
from workloads import workload_names


def add_workload_source_args(parser: argparse.ArgumentParser) -> None:
    """``--workload`` in any of its forms (:mod:`workloads.sources`), ``--batch`` and
    ``--resolution``: what every command that builds a network takes."""
    parser.add_argument(
        "--workload", required=True, metavar="WORKLOAD",
        help=f"a zoo network ({', '.join(workload_names())}), PATH.onnx, PATH.json or "
        "PATH.toml (gpusim layer graph), or torchvision:NAME[?ARG=VALUE&...]; see "
        "`gpusim workloads`")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--resolution", type=int, default=None, metavar="PIXELS",
                        help="input height = width (default: the workload's own)")


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """``--workload`` and the options that pick its graph, GPU and cost model."""
    add_workload_source_args(parser)
    parser.add_argument("--phase", choices=("inference", "training"), default="inference",
                        help="inference (forward) or a training step (default inference)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="math precision (default fp32)")
    add_gpu_args(parser)
    parser.add_argument("--cost-model", choices=list_cost_models(), default=DEFAULT_COST_MODEL,
                        help=f"per-kernel cost model (default {DEFAULT_COST_MODEL})")
    parser.add_argument("--origin", metavar="GPU",
                        help="measured GPU whose calibration the 'scaled' cost model carries")
    add_sm_sharing_arg(parser)
    add_option_arg(parser)


def precision_label(gpu: GPUSpec, precision: str) -> str:
    """``precision`` for a header, saying so when the GPU runs it on CUDA cores."""
    return f"{precision}, on CUDA cores" if gpu.math_fallback(precision) else precision


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    p = subparsers.add_parser(
        "simulate", help="simulate a workload under a scheduling policy (makespan, SM and "
        "DRAM use)",
        description="Build a network of the model zoo, lower its layers to kernels on a GPU, "
        "schedule them onto streams with a policy and simulate the step: makespan, kernels, "
        "streams, events, busy SMs and DRAM utilisation.")
    add_workload_args(p)
    p.add_argument("--policy", default="serial",
                   help="scheduling policy, e.g. serial, min-streams, critical-path:8, "
                   "min-streams+priority (default serial)")
    add_json_arg(p)
    p.add_argument("--trace", metavar="OUT.json",
                   help="also write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    p.set_defaults(func=cmd_simulate)
    declare_files(p, inputs=("gpu",), outputs=("trace",))


def cmd_simulate(args: argparse.Namespace) -> int:
    gpu = gpu_from_args(args)
    with engine_progress(f"simulating {args.workload}") as report:
        run = simulate_workload(
            args.workload, batch=args.batch, phase=args.phase, precision=args.precision,
            gpu=gpu, cost_model=args.cost_model, origin=args.origin, policy=args.policy,
            resolution=args.resolution, sm_sharing=sm_sharing_from_args(args),
            options=options_from_args(args), progress=report)
    result = run.result
    if args.trace:
        from sim.cli.run import write_trace

        write_trace(result, args.trace)
    summary = {
        "workload": args.workload,
        "batch": args.batch,
        "phase": args.phase,
        "precision": args.precision,
        "gpu": gpu.name,
        "cost_model": args.cost_model,
        "sm_sharing": args.sm_sharing,
        "policy": run.run.policy,
        "makespan_us": result.makespan_s * US_PER_S,
        "kernels": len(result.kernels),
        "streams": len(run.program.streams),
        "events": event_count(run.program),
        "busy_sm_fraction": busy_sm_fraction(result),
        "dram_utilisation": dram_utilisation(result),
        "sm_throughput_in_use": sm_throughput_in_use(result),
    }
    if args.json:
        print_json(summary)
    else:
        print(f"{args.workload} {args.phase} batch {args.batch} "
              f"({precision_label(gpu, args.precision)}) on "
              f"{gpu.display_name} ({gpu.name}), policy {summary['policy']}, "
              f"cost model {args.cost_model}")
        print(f"makespan: {summary['makespan_us']:,.1f} us   kernels: {summary['kernels']}   "
              f"streams: {summary['streams']}   events: {summary['events']}")
        throughput = "   ".join(f"{r} throughput: {v:.1%}"
                                   for r, v in summary["sm_throughput_in_use"].items() if v)
        print(f"busy SMs: {summary['busy_sm_fraction']:.1%}   "
              f"DRAM utilisation: {summary['dram_utilisation']:.1%}"
              + (f"   {throughput}" if throughput else ""))
    if args.trace and not args.json:
        print(f"trace written to {args.trace}")
    return 0
