"""The ``gpusim`` command line.

Every command lives in a module of this package that exposes ``register(subparsers)``; it
adds one or more sub-parsers whose ``func`` default is a handler ``(args) -> int``. The
conventions are the same for every command: a human-readable table by default, ``--json``
for machines, and exit code 2 with a one-line ``gpusim: error: ...`` message on bad input
(any :class:`gpu_models.errors.GpusimError`, or a file that cannot be read or written:
the message says "cannot write" when the file is one of the command's outputs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from gpu_models.errors import GpusimError

# Order here is the order of ``gpusim --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "sim.cli.gpus",
    "sim.cli.workloads",
    "sim.cli.op",
    "sim.cli.run",
    "sim.cli.simulate",
    "sim.cli.limits",
    "sim.cli.reproduce",
    "sim.cli.calib",
    "sim.cli.sweep",
    "sim.cli.validate",
)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error convention: one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gpusim: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command module registered."""
    parser = _Parser(
        prog="gpusim",
        description="Discrete-event GPU execution simulator: how fast would a network run "
        "if its independent layers ran concurrently, and what stops it?",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


#: Argument names that hold files a command writes.
OUTPUT_ARGS: tuple[str, ...] = ("trace", "out", "output", "out_dir")


def _is_output(args: argparse.Namespace, filename: object) -> bool:
    """Whether ``filename`` (from an OSError) is one of the command's output paths."""
    if filename is None:
        return False
    outputs = [getattr(args, name, None) for name in OUTPUT_ARGS]
    return any(out is not None and str(out) == str(filename) for out in outputs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpusim`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GpusimError as exc:
        print(f"gpusim: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        verb = "write" if _is_output(args, exc.filename) else "read"
        print(f"gpusim: error: cannot {verb} {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gpusim ... | head` is fine
        return 0
