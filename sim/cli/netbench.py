"""``gpusim calibrate layers`` and ``gpusim calibrate import-layers``: device campaign 2.

``layers`` runs the campaign (:mod:`sim.measure.netbench.campaign`) on this machine's GPU;
``import-layers`` validates a campaign's output folder and writes it into the package's data
directories (:mod:`sim.measure.netbench.store`), ready to commit.
"""

from __future__ import annotations

import argparse
from typing import Any

from sim.cli.files import declare_files
from sim.measure.netbench.campaign import NETWORKS, PRECISIONS, run
from sim.measure.netbench.store import import_campaign


def register_calibrate(subparsers: Any) -> None:
    """Add ``layers`` and ``import-layers`` to the ``calibrate`` group."""
    p = subparsers.add_parser(
        "layers", help="measure the zoo's layer kernels and network runs on this GPU "
        "(needs torch, CUDA)",
        description="Device campaign 2: profile every layer kernel of the zoo's networks with "
        "torch.profiler and time whole network steps (eager and CUDA graphs, one stream and "
        "several) on this machine's GPU; writes a folder for 'calibrate import-layers'.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="a small subset (under 2 minutes)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--networks", nargs="*", help=f"default: {', '.join(NETWORKS)}")
    p.add_argument("--precisions", nargs="*", choices=PRECISIONS)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=420.0)
    p.set_defaults(func=cmd_layers)
    declare_files(p, output_dirs=("out",))

    p = subparsers.add_parser(
        "import-layers", help="check a 'calibrate layers' output folder and add it to the "
        "package's calibration and network-timing data")
    p.add_argument("folder", help="the folder 'calibrate layers' wrote")
    p.set_defaults(func=cmd_import)


def cmd_layers(args: argparse.Namespace) -> int:
    argv = ["--out", args.out, "--device", args.device, "--reps", str(args.reps),
            "--budget-s", str(args.budget_s)]
    if args.quick:
        argv.append("--quick")
    if args.networks:
        argv += ["--networks", *args.networks]
    if args.precisions:
        argv += ["--precisions", *args.precisions]
    return run(argv)


def cmd_import(args: argparse.Namespace) -> int:
    for path in import_campaign(args.folder):
        print(f"wrote {path}")
    return 0
