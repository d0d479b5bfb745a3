"""``gpusim run``: simulate a kernel-level program file (see :mod:`sim.engine.program`)."""

from __future__ import annotations

import argparse
import warnings

from gpu_models.errors import GpusimError, GpusimWarning
from gpu_models.units import US_PER_S
from sim.analysis.limits import BIND_LABELS, binds_detail
from sim.cli.common import add_json_arg, engine_progress, print_json, print_table
from sim.cli.files import declare_files
from sim.engine.engine import simulate
from sim.engine.placement import PLACEMENTS
from sim.engine.program import load_program
from sim.engine.result import SimResult
from sim.engine.trace import write_chrome_trace


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` command."""
    p = subparsers.add_parser(
        "run", help="simulate a program of kernels on streams (JSON file) and show its timeline",
        description="Simulate a kernel-level program (a JSON file: a GPU, streams, and kernel "
        "launches in host order) and print every kernel's launch, start and end, and where "
        "the time went. See examples/programs/ and sim/engine/program.py for the format.")
    p.add_argument("program", help="program file (JSON: gpu, streams, kernels)")
    add_json_arg(p)
    p.add_argument("--trace", metavar="OUT.json",
                   help="also write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    p.add_argument("--exact", action="store_true",
                   help="per-block reference mode instead of grouped blocks (slower)")
    p.add_argument("--placement", "--sm-policy", dest="placement", choices=tuple(PLACEMENTS),
                   default="most-free",
                   help="block placement: which SM gets each block (default: most-free; "
                   "--sm-policy is an older name for this option)")
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
    program = load_program(args.program)
    with engine_progress(f"simulating {args.program}") as report:
        result = simulate(program, mode="exact" if args.exact else "grouped",
                          placement=args.placement, progress=report)
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
    rows = [
        (k.name, k.stream, f"{k.launch_s * US_PER_S:.3f}", f"{k.start_s * US_PER_S:.3f}",
         f"{k.end_s * US_PER_S:.3f}", k.blocks)
        for k in result.kernels
    ]
    print_table(rows, ("kernel", "stream", "launch_us", "start_us", "end_us", "blocks"))
    shown = [f"{BIND_LABELS[name]} {t * US_PER_S:.3f} us"
             for name, t in binds_detail(result).items() if t > 0]
    if shown:
        print("time spent: " + "; ".join(shown))
    if args.trace:
        print(f"trace written to {args.trace}")
    return 0
