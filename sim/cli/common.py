"""Helpers shared by every CLI command: GPU selection, JSON output, plain tables (long
ones summarised), progress bars for long runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from gpu_models.errors import GpusimError
from gpu_models.presets import DEFAULT_GPU, resolve_gpu
from gpu_models.spec import GPUSpec

if TYPE_CHECKING:  # the engine is not imported by commands that never simulate (gpus)
    from sim.engine.engine import Progress


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


def parse_option(text: str) -> tuple[str, int | float | str]:
    """``KEY=VALUE`` (an ``--option``) -> (key, value as int, else float, else the text)."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    return key, raw


#: Keys ``--option`` may not take: each has its own flag.
_OWN_FLAGS = ("batch", "resolution", "phase", "dtype", "precision")

#: The help text of ``--option`` (one list of what the builders and the lowering take).
OPTION_HELP = ("a workload option, repeatable: pathnet: layers, modules, active, channels, "
               "seed; randwire: nodes, k, p, channels, seed; training: "
               "optimizer=per_layer|step; lowering: fusion=eager|inference, layout=nchw|nhwc")


def add_option_arg(parser: argparse.ArgumentParser) -> None:
    """``--option KEY=VALUE`` (repeatable): options of the workload's builder or lowering."""
    parser.add_argument("--option", dest="options", action="append", type=parse_option,
                        default=[], metavar="KEY=VALUE", help=OPTION_HELP)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--option`` pairs as a dict; a key given twice or one with its own flag is an
    error."""
    options: dict[str, Any] = {}
    for key, value in getattr(args, "options", []) or []:
        if key in _OWN_FLAGS:
            flag = "--precision" if key == "dtype" else f"--{key}"
            raise GpusimError(f"option {key!r} has its own flag: use {flag}")
        if key in options:
            raise GpusimError(f"option {key!r} is given twice")
        options[key] = value
    return options


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


#: Tables longer than this are summarised: their first :data:`TABLE_HEAD_ROWS` and last
#: :data:`TABLE_TAIL_ROWS` rows, and a line saying how many were left out (``--json`` has
#: them all). A 100,000-kernel program is not 100,000 lines of terminal.
MAX_TABLE_ROWS = 60
TABLE_HEAD_ROWS = 40
TABLE_TAIL_ROWS = 10


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *,
                 max_rows: int | None = MAX_TABLE_ROWS) -> str:
    """A plain left-aligned text table (numbers right-aligned). Over ``max_rows`` rows
    (``None``: no limit), the middle rows are left out and a line says how many. ``rows``
    are read once, and only those that may be shown are kept: a generator of a run's
    100,000 kernels is never held whole."""
    kept: list[Sequence[Any]] = []
    last: deque[Sequence[Any]] = deque(maxlen=TABLE_TAIL_ROWS)  # the latest beyond kept
    keep = None if max_rows is None else max(max_rows, TABLE_HEAD_ROWS)
    total = 0
    for row in rows:
        total += 1
        if keep is None or len(kept) < keep:
            kept.append(row)
        else:
            last.append(row)
    all_rows = kept
    left_out = 0
    if max_rows is not None and total > max_rows:
        left_out = total - TABLE_HEAD_ROWS - TABLE_TAIL_ROWS
        all_rows = kept[:TABLE_HEAD_ROWS] + (kept + list(last))[-TABLE_TAIL_ROWS:]
    text_rows = [[_cell(v) for v in row] for row in all_rows]
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
    body = [fmt(row) for row in text_rows]
    if left_out:
        body.insert(TABLE_HEAD_ROWS, f"... {left_out:,} more rows (use --json for all) ...")
    lines.extend(body)
    return "\n".join(lines)


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *,
                max_rows: int | None = MAX_TABLE_ROWS) -> None:
    """Print :func:`format_table` to stdout."""
    print(format_table(rows, headers, max_rows=max_rows))


#: A progress bar appears only once a run has taken this long (short runs stay quiet).
PROGRESS_DELAY_S = 2.0


def progress_bar(total: int | None, desc: str, unit: str) -> tqdm:
    """A progress bar on stderr that shows only on a terminal, and only after
    :data:`PROGRESS_DELAY_S`; use it as a context manager and ``update`` it."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                delay=PROGRESS_DELAY_S, disable=not sys.stderr.isatty(), dynamic_ncols=True)


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


@contextmanager
def engine_progress(desc: str) -> Iterator[Progress]:
    """A progress callback for :func:`sim.engine.engine.simulate` (blocks started of all
    blocks), drawing a :func:`progress_bar`."""
    with progress_bar(None, desc, "blocks") as bar:

        def report(started: int, total: int) -> None:
            bar.total = total
            bar.update(started - bar.n)

        yield report
