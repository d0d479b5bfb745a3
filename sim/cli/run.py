"""``gpusim run``: simulate a kernel-level program file (see :mod:`sim.engine.program`)."""

from __future__ import annotations

import argparse
import warnings

from gpu_models.cost import DEFAULT_COST_MODEL, list_cost_models
from gpu_models.errors import GpusimError, GpusimWarning
from gpu_models.units import US_PER_S
from sim.analysis.limits import BIND_LABELS, binds_detail
from sim.cli.common import (
    add_json_arg,
    add_sm_sharing_arg,
    engine_progress,
    print_json,
    print_table,
    sm_sharing_from_args,
)
from sim.cli.files import declare_files
from sim.engine.engine import simulate
from sim.engine.placement import PLACEMENTS
from sim.engine.program import load_program
from sim.engine.result import SimResult
from sim.engine.trace import write_chrome_trace

PROGRAM_FORMAT = """\
program file (JSON; times in microseconds):
  {"gpu": "h100",                      preset, spec file, or {"base": ..., FIELD: VALUE}
   "launch_overhead_us": 5, "event_overhead_us": 2,       optional (default: the GPU's)
   "streams": [{"name": "a", "priority": 0, "sms": "0-65"}, ...],
   "kernels": [{"name": "k0", "stream": "a", "grid": 264, "threads": 1024, "regs": 32,
                "smem": 0, "after": ["k"], "kind": "", "layer": "",
                ...then either the timing:
                "block_time_us": 50, "dram_bytes": 0, "sm_throughput": 0.5},
                ...or the work, priced by --cost-model:
                "work": {"flop": 2e9, "dram_bytes": 1e8, "math": "fp32"}}, ...]}

  sm_throughput  share of its SM's throughput one block uses when it runs unimpeded: a
                 number in [0, 1] (the FP32/SIMT pipes) or {"simt": x, "tensor": y};
                 absent = 0: pure latency (a sleep kernel). Blocks sharing an SM beyond 1.0
                 share it max-min fairly (--sm-sharing on).
  dram_bytes     the whole kernel's DRAM traffic, spread over its blocks' run time.
  work           {"flop": F, "dram_bytes": B, "math": fp32|tf32|fp16|bf16} for the whole
                 kernel: the cost model prices its blocks (time and demands); fp32 runs on
                 the CUDA cores, tf32/fp16/bf16 on tensor cores. Not with block_time_us,
                 dram_bytes or sm_throughput. A kind naming a kernel kind (gemm, conv_fwd,
                 elementwise, ...) picks its efficiencies; other kernels are priced as micro.
A bad value exits with status 2 and names the kernel and field."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` command."""
    p = subparsers.add_parser(
        "run", help="simulate a program of kernels on streams (JSON file) and show its timeline",
        description="Simulate a kernel-level program (a JSON file: a GPU, streams, and kernel "
        "launches in host order) and print every kernel's launch, start and end, and where "
        "the time went. See examples/programs/ for examples; the format is below.",
        epilog=PROGRAM_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("program", help="program file (JSON: gpu, streams, kernels; format below)")
    add_json_arg(p)
    p.add_argument("--trace", metavar="OUT.json",
                   help="also write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    p.add_argument("--exact", action="store_true",
                   help="per-block reference mode instead of grouped blocks (slower)")
    p.add_argument("--placement", "--sm-policy", dest="placement", choices=tuple(PLACEMENTS),
                   default="most-free",
                   help="block placement: which SM gets each block (default: most-free; "
                   "--sm-policy is an older name for this option)")
    add_sm_sharing_arg(p)
    p.add_argument("--cost-model", choices=list_cost_models(), default=DEFAULT_COST_MODEL,
                   help=f"cost model that prices kernels given as work "
                   f"(default {DEFAULT_COST_MODEL})")
    p.add_argument("--origin", metavar="GPU",
                   help="measured GPU whose calibration the 'scaled' cost model carries")
    p.add_argument("--timing", action="store_true",
                   help="with --json, include the simulation's wall time (counters.wall_s); "
                   "left out by default so that identical runs print identical JSON")
    p.set_defaults(func=cmd_run)
    declare_files(p, inputs=("program",), outputs=("trace",))


def write_trace(result: SimResult, path: str) -> None:
    """:func:`write_chrome_trace`, with a write failure as a :class:`GpusimError`."""
    try:
        write_chrome_trace(result, path)
    except OSError as exc:
        raise GpusimError(f"cannot write trace {path}: {exc.strerror or exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    if args.timing and not args.json:
        warnings.warn(GpusimWarning("--timing adds the wall time to the --json output; "
                                    "ignored without --json"), stacklevel=1)
    program = load_program(args.program, cost_model=args.cost_model, origin=args.origin)
    with engine_progress(f"simulating {args.program}") as report:
        result = simulate(program, mode="exact" if args.exact else "grouped",
                          placement=args.placement, sm_sharing=sm_sharing_from_args(args),
                          progress=report)
    if args.trace:
        write_trace(result, args.trace)
    if args.json:
        data = result.to_dict()
        if not args.timing and isinstance(data.get("counters"), dict):
            data["counters"].pop("wall_s", None)
        print_json(data)
        return 0
    print(f"makespan: {result.makespan_s * US_PER_S:.3f} us on {program.gpu.name} "
          f"({len(result.kernels)} kernels, {result.counters.blocks} blocks, {result.mode})")
    rows = (  # a generator: print_table keeps only the rows it shows
        (k.name, k.stream, f"{k.launch_s * US_PER_S:.3f}", f"{k.start_s * US_PER_S:.3f}",
         f"{k.end_s * US_PER_S:.3f}", k.blocks)
        for k in result.kernels
    )
    print_table(rows, ("kernel", "stream", "launch_us", "start_us", "end_us", "blocks"))
    shown = [f"{BIND_LABELS[name]} {t * US_PER_S:.3f} us"
             for name, t in binds_detail(result).items()
             if t > 0 and name != "sm_throughput"]
    # Which execution unit was over-subscribed matters to a hand-written program: each apart.
    shown += [f"{BIND_LABELS['sm_throughput']} ({unit}) {t * US_PER_S:.3f} us"
              for unit, t in result.counters.sm_oversubscribed_s.items() if t > 0]
    if shown:
        print("time spent: " + "; ".join(shown))
    if args.trace:
        print(f"trace written to {args.trace}")
    return 0
