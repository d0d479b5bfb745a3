"""``gpusim reproduce``: regenerate every figure, table and trace of the analysis.

Writes ``figures/`` (PNG + PDF), ``tables/`` (CSV + Markdown), ``traces/`` (Chrome/Perfetto
JSON) and ``summary.json`` under ``--out`` (default ``./reproduce_out``), with a progress
bar on stderr; prints where everything went, or the summary itself with ``--json``.
See :mod:`sim.report.reproduce` for what each step shows.
"""

from __future__ import annotations

import argparse
from typing import Any

from sim.cli.common import (
    add_gpu_args,
    add_json_arg,
    add_sm_sharing_arg,
    print_json,
    print_table,
    sm_sharing_from_args,
)
from sim.cli.files import declare_files
from sim.report import DEFAULT_OUT_DIR


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` command."""
    p = subparsers.add_parser(
        "reproduce", help="regenerate the whole analysis: figures, tables, traces",
        description="Regenerate the analysis of concurrent layer scheduling: figures as PNG "
        "and PDF, tables as CSV and Markdown, Chrome traces and a summary.json.",
    )
    p.add_argument("--out", default=DEFAULT_OUT_DIR, metavar="DIR",
                   help=f"output directory, new, empty or a previous reproduce's (default: "
                   f"./{DEFAULT_OUT_DIR})")
    add_gpu_args(p)
    p.add_argument("--quick", action="store_true",
                   help="fewer networks and batch sizes: under a minute")
    p.add_argument("--workload", dest="networks", action="append", metavar="WORKLOAD",
                   help="a network to analyse instead of the plan's (repeatable; any form "
                   "--workload takes, see `gpusim workloads`); the first also gets the "
                   "whole-network timelines and the sweep")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sm_sharing_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_reproduce)
    declare_files(p, inputs=("gpu",), output_dirs=("out",))


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Handler of ``gpusim reproduce``."""
    # Imported here: it brings matplotlib, which no other command needs at start-up.
    from sim.report.reproduce import reproduce

    summary = reproduce(args.out, gpu=args.gpu, overrides=args.overrides, quick=args.quick,
                        progress=not args.no_progress, networks=args.networks,
                        sm_sharing=sm_sharing_from_args(args))
    if args.json:
        print_json(summary)
        return 0
    print_table([(a["kind"], a["name"], ", ".join(a["files"])) for a in summary["artifacts"]],
                ("kind", "name", "files"))
    for item in summary["skipped"]:
        print(f"skipped {item['name']}: {item['reason']}")
    print(f"wrote {len(summary['artifacts'])} artifacts and summary.json to {args.out} in "
          f"{summary['wall_s']:.1f} s")
    return 0
