"""Helpers shared by every CLI command: GPU selection, JSON output, plain tables."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from gpu_models.presets import DEFAULT_GPU, resolve_gpu
from gpu_models.spec import GPUSpec


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output instead of a table."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_gpu_args(parser: argparse.ArgumentParser, *, with_set: bool = True) -> None:
    """``--gpu NAME|PATH`` and, optionally, repeated ``--set FIELD=VALUE`` overrides."""
    parser.add_argument(
        "--gpu",
        default=DEFAULT_GPU,
        help=f"preset name or path to a TOML/JSON spec file (default: {DEFAULT_GPU})",
    )
    if with_set:
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="override a GPUSpec field (repeatable), e.g. --set sm_count=264",
        )


def add_sm_sharing_arg(parser: argparse.ArgumentParser) -> None:
    """``--sm-sharing on|off``: the engine's SM throughput sharing and memory-parallelism
    bound (docs/model.md §6.7)."""
    parser.add_argument(
        "--sm-sharing", choices=("on", "off"), default="on",
        help="co-resident blocks share their SM's throughput and DRAM follows the memory "
        "parallelism of the resident warps (default: on); off: neither, the engine without "
        "these mechanisms, for teaching and ablation")


def sm_sharing_from_args(args: argparse.Namespace) -> bool:
    """``--sm-sharing`` as a bool (on when the command has no such option)."""
    return bool(getattr(args, "sm_sharing", "on") == "on")


def gpu_from_args(args: argparse.Namespace) -> GPUSpec:
    """The GPU the command runs on: ``--gpu`` (preset or file) with ``--set`` overrides."""
    overrides: Sequence[str] = getattr(args, "overrides", []) or []
    return resolve_gpu(args.gpu, overrides)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=_json_default)
    sys.stdout.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain left-aligned text table (numbers right-aligned)."""
    text_rows = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        all(_is_number(row[i]) for row in text_rows) if text_rows else False
        for i in range(len(headers))
    ]

    def fmt(cells: Sequence[str]) -> str:
        columns = zip(cells, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in columns).rstrip()

    lines = [fmt(list(headers)), fmt(["-" * w for w in widths])]
    lines.extend(fmt(row) for row in text_rows)
    return "\n".join(lines)


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print :func:`format_table` to stdout."""
    print(format_table(rows, headers))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
