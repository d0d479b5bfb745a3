"""``gpusim calibrate micro``: the device campaign (block-level microbenchmarks with CuPy,
then the networks step with PyTorch).

The same sub-commands as ``python -m sim.measure.micro`` (``run``, ``plan``): see
:mod:`sim.measure.micro.campaign` and sim/measure/micro/README.md. Registered into the
``calibrate`` group through ``register_calibrate`` (see :mod:`sim.cli.calib`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sim.cli.files import declare_files, sub_parser
from sim.measure.micro.campaign import add_arguments, run_args


def register_calibrate(subparsers: Any) -> None:
    """Add ``calibrate micro``."""
    p = subparsers.add_parser(
        "micro", help="the device campaign on GPU 0: SM contention, block scheduling, "
        "bandwidth, occupancy, launch costs, networks (scripts/device_campaign.sh)",
        description="The device campaign: block-level microbenchmarks with CuPy (one JSON "
        "file per experiment, packed into micro.tar.gz), then network runs with PyTorch "
        "(`plan` is a dry run that needs no GPU).")
    add_arguments(p)
    p.set_defaults(func=_cmd_micro)
    declare_files(sub_parser(p, "run"), output_dirs=("out",))


def _cmd_micro(args: argparse.Namespace) -> int:
    return run_args(args, sys.argv[1:], "gpusim")
