"""``gpusim sweep`` and ``gpusim plot-sweep``: sweeps of hypothetical GPUs, and their heatmaps.

``gpusim sweep`` takes the grid from options (``--set FIELD=V1,V2,...`` repeated, and comma
lists for ``--gpu``, ``--workload``, ``--batch``, ``--phase``, ``--precision``,
``--cost-model``, ``--sm-sharing``, ``--policy``; the grid is their Cartesian product) or from
a TOML file (see :mod:`sim.analysis.sweep.points`). With ``--out`` it writes rows to
CSV/Parquet as they finish and prints a summary; without, it prints the rows. Ctrl-C stops it
with the finished rows saved; ``--resume`` continues.

Before anything runs, the values every point shares the meaning of are checked: GPU
presets or spec files, and, for the limits evaluator, workload names, phases, precisions
and policy names (through the policy registry). A bad one is a mistake in the command, not
a hypothetical GPU, so it exits 2 naming it. Points whose GPUSpec overrides fail stay
per-point errors; if every evaluated point ends in an error the command exits 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from gpu_models.cost import DEFAULT_COST_MODEL
from gpu_models.errors import GpusimError, GpusimWarning
from gpu_models.presets import load_gpu
from sim.analysis.sweep.evaluate import EVALUATORS, get_evaluator, limits_available
from sim.analysis.sweep.executors import EXECUTOR_NAMES, make_executor
from sim.analysis.sweep.points import (
    OPTION_DEFAULTS,
    OPTION_PREFIX,
    Point,
    SweepSpec,
    load_sweep_file,
    parse_option_axes,
    parse_set_axes,
    split_values,
)
from sim.analysis.sweep.results import column_order, read_results
from sim.analysis.sweep.runner import SweepOutcome, run_sweep
from sim.cli import EXIT_INTERRUPTED
from sim.cli.common import OPTION_HELP, print_json, print_table
from sim.cli.files import declare_files

#: Grid options: (flag, option name). Each takes a comma list.
_GRID_OPTIONS: tuple[tuple[str, str], ...] = (
    ("--gpu", "gpu"),
    ("--workload", "workload"),
    ("--batch", "batch"),
    ("--phase", "phase"),
    ("--precision", "precision"),
    ("--cost-model", "cost_model"),
    ("--sm-sharing", "sm_sharing"),
    ("--policy", "policy"),
)
#: Result columns the table shows for a limits sweep (when present).
_SUMMARY_COLUMNS: tuple[str, ...] = (
    "serial_us", "lower_bound_us", "best_policy", "speedup_ideal", "speedup_achievable",
    "binds", "error",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``plot-sweep`` commands."""
    p = subparsers.add_parser(
        "sweep",
        help="evaluate many hypothetical GPUs / workloads / policies (a grid), in parallel",
        description="Evaluate the limits of concurrent layer scheduling over a grid of GPU "
        "parameters, workloads, batch sizes and policies. Invalid points (an unknown field, "
        "a spec that fails validation) become rows with an error, not a failed sweep.",
    )
    p.add_argument("spec", nargs="?", metavar="SWEEP.toml",
                   help="sweep file ([sweep] defaults, [grid], [[points]]); replaces the "
                   "grid options below")
    grid = p.add_argument_group("grid (comma lists; the grid is their Cartesian product)")
    grid.add_argument("--gpu", help=f"base preset(s) or spec file(s) (default: "
                      f"{OPTION_DEFAULTS['gpu']})")
    grid.add_argument("--set", dest="axes", action="append", default=[],
                      metavar="FIELD=V1,V2,...",
                      help="a GPUSpec field and its values (repeatable), e.g. "
                      "--set sm_count=66,132,264")
    grid.add_argument("--workload", help="workload(s), e.g. resnet50,inception_v3: zoo "
                      "names, PATH.onnx, PATH.json/.toml, torchvision:NAME[?ARG=VALUE&...]")
    grid.add_argument("--batch", help="batch size(s) (default: 1)")
    grid.add_argument("--phase", help="inference and/or training (default: inference)")
    grid.add_argument("--precision", help="fp32, tf32, fp16, bf16 (default: fp32)")
    grid.add_argument("--cost-model", help=f"cost model(s) (default: {DEFAULT_COST_MODEL})")
    grid.add_argument("--sm-sharing", metavar="on|off",
                      help="SM throughput sharing and the memory-parallelism bound in the "
                      "engine: on, off or on,off as an axis (default: on)")
    grid.add_argument("--policy", help="policy name(s), or 'all' for every policy in one "
                      "row (default: all)")
    grid.add_argument("--option", dest="option_axes", action="append", default=[],
                      metavar="KEY=V1,V2,...",
                      help=OPTION_HELP.replace("a workload option, repeatable",
                                               "a workload option and its values, repeatable"))
    run = p.add_argument_group("running")
    run.add_argument("--out", type=Path, metavar="FILE",
                     help="results file, .csv or .parquet, written as points finish")
    run.add_argument("--resume", action="store_true",
                     help="continue the sweep in --out: skip points already there")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    run.add_argument("--executor", choices=EXECUTOR_NAMES, default=None,
                     help="local process pool (default), serial loop, or Dask distributed")
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes (local) or LocalCluster workers (dask); "
                     "default: the CPU count")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="join this Dask scheduler (implies --executor dask)")
    run.add_argument("--max-points", type=int, default=None, metavar="N",
                     help="evaluate at most N new points, then stop (resume later)")
    run.add_argument("--evaluator", choices=tuple(EVALUATORS), default="limits",
                     help="what to compute per point: the limits report (default) or the "
                     "occupancy of reference kernel shapes (fast, no simulation)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_sweep)
    declare_files(p, inputs=("spec", "gpu"), outputs=("out",))

    p = subparsers.add_parser(
        "plot-sweep",
        help="heatmap of a sweep metric over two swept parameters",
        description="Draw a heatmap of one metric of a sweep results file over two of its "
        "columns; pick one slice of other varying columns with --where.",
    )
    p.add_argument("results", type=Path, metavar="RESULTS", help="a .csv or .parquet file "
                   "written by gpusim sweep")
    p.add_argument("--x", required=True, metavar="COLUMN", help="column for the x axis")
    p.add_argument("--y", required=True, metavar="COLUMN", help="column for the y axis")
    p.add_argument("--metric", default="speedup_achievable",
                   help="column to colour by (default: speedup_achievable)")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only rows with this value (repeatable)")
    p.add_argument("--title", help="figure title (default: the metric and fixed inputs)")
    p.add_argument("--out", type=Path, metavar="FIG",
                   help="image file (default: RESULTS with the metric and .png)")
    p.add_argument("--json", action="store_true", help="print the grid as JSON")
    p.set_defaults(func=cmd_plot_sweep)
    declare_files(p, inputs=("results",), outputs=("out",))


def sweep_spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep the arguments describe: the TOML file, or the grid options."""
    given = {name: getattr(args, name) for _, name in _GRID_OPTIONS
             if getattr(args, name) is not None}
    if args.spec is not None:
        if given or args.axes or args.option_axes:
            flags = [flag for flag, name in _GRID_OPTIONS if name in given]
            flags += ["--set"] * bool(args.axes) + ["--option"] * bool(args.option_axes)
            raise GpusimError(f"{args.spec} defines the grid; drop {', '.join(flags)} "
                              "(or put them in the file)")
        return load_sweep_file(args.spec)
    defaults = {name: split_values(text) for name, text in given.items()}
    return SweepSpec.from_tables(
        [{**parse_set_axes(args.axes), **parse_option_axes(args.option_axes)}], defaults)


#: Exit status when every evaluated point ended in an error.
EXIT_ALL_INVALID = 1


def check_global_values(points: list[Point], evaluator: str) -> None:
    """Raise :class:`GpusimError` naming the first GPU base, workload, phase, precision or
    policy of ``points`` that no point could run with."""
    for gpu in dict.fromkeys(p.gpu for p in points):
        try:
            load_gpu(gpu)
        except GpusimError as exc:
            raise GpusimError(f"sweep: --gpu {gpu!r}: {exc}") from None
    if evaluator != "limits":
        return
    from sim.analysis.workflow import PRECISIONS
    from sim.scheduling import get_policy
    from workloads import workload_source
    from workloads.registry import PHASES

    for workload in dict.fromkeys(p.workload for p in points):
        try:
            workload_source(workload)  # a zoo name, an existing file, torchvision:NAME
        except GpusimError as exc:
            raise GpusimError(f"sweep: --workload {workload!r}: {exc}") from None
    for phase in dict.fromkeys(p.phase for p in points):
        if phase not in PHASES:
            raise GpusimError(f"sweep: unknown phase {phase!r}; phases: {', '.join(PHASES)}")
    for precision in dict.fromkeys(p.precision for p in points):
        if precision not in PRECISIONS:
            raise GpusimError(f"sweep: unknown precision {precision!r}; precisions: "
                              f"{', '.join(PRECISIONS)}")
    for policy in dict.fromkeys(p.policy for p in points if p.policy is not None):
        try:
            get_policy(policy)
        except GpusimError as exc:
            raise GpusimError(f"sweep: --policy {policy!r}: {exc}") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = sweep_spec_from_args(args)
    if args.evaluator == "limits" and not limits_available():
        raise GpusimError("the limits evaluator needs sim.analysis.limits, which this installation "
                          "lacks; use --evaluator occupancy")
    check_global_values(spec.points(), args.evaluator)
    if args.resume and args.out is None:
        raise GpusimError("--resume continues a results file: give it with --out")
    if args.resume and not args.out.exists() and not args.out.with_name(
            args.out.name + ".parts").exists():
        warnings.warn(GpusimWarning(f"--resume: {args.out} does not exist yet; starting a "
                                    "new sweep"), stacklevel=1)
    executor = make_executor(
        "dask" if args.scheduler and args.executor is None else (args.executor or "local"),
        workers=args.workers, scheduler=args.scheduler,
    )
    try:
        outcome = run_sweep(
            spec, evaluate=get_evaluator(args.evaluator), executor=executor, out=args.out,
            resume=args.resume, overwrite=args.overwrite, max_points=args.max_points,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        where = f"; finished points are in {args.out}, rerun with --resume to go on" \
            if args.out else ""
        print(f"gpusim: sweep interrupted{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.out is not None:
        _print_summary(outcome, args.out, as_json=args.json)
    elif args.json:
        print_json(list(outcome.rows))
    else:
        _print_rows(outcome)
    if outcome.evaluated and outcome.errors == outcome.evaluated:
        print(f"gpusim: every evaluated point ({outcome.evaluated}) ended in an error",
              file=sys.stderr)
        return EXIT_ALL_INVALID
    return 0


def _print_summary(outcome: SweepOutcome, out: Path, *, as_json: bool) -> None:
    summary: dict[str, Any] = {
        "out": str(out), "points": outcome.total, "evaluated": outcome.evaluated,
        "invalid": outcome.errors, "skipped": outcome.skipped,
        "remaining": outcome.remaining, "elapsed_s": round(outcome.elapsed_s, 3),
        "points_per_s": round(outcome.points_per_s, 2), "executor": outcome.executor,
    }
    # One example of what made points invalid (often one cause: a misspelt workload).
    first_error = next((row["error"] for row in outcome.rows if row.get("error")), None)
    summary["first_error"] = first_error
    if as_json:
        print_json(summary)
        return
    print(f"{outcome.total} points: {outcome.evaluated} evaluated ({outcome.errors} invalid), "
          f"{outcome.skipped} already in {out}, {outcome.remaining} left")
    print(f"{outcome.elapsed_s:.2f} s, {outcome.points_per_s:.1f} points/s "
          f"({outcome.executor} executor)")
    if first_error:
        print(f"first invalid point: {first_error}")


def _print_rows(outcome: SweepOutcome) -> None:
    rows = outcome.rows
    columns = [c for c in column_order(c for row in rows for c in row) if c != "key"]
    if "serial_us" in columns:
        # The limits report has ~60 columns: show the inputs that vary and the headline
        # figures; --json or --out has everything.
        inputs = columns[: columns.index("policy") + 1] + [
            c for c in columns if c.startswith(OPTION_PREFIX)]
        varying = [c for c in inputs if len({str(row.get(c)) for row in rows}) > 1]
        columns = varying + [c for c in _SUMMARY_COLUMNS if c in columns]
    print_table([[_shown(c, row.get(c)) for c in columns] for row in rows], columns)


def _shown(column: str, value: Any) -> Any:
    """A cell of the rows table: empty for None, speedups with three decimals."""
    if value is None:
        return ""
    if column.startswith("speedup") and isinstance(value, float):
        return f"{value:.3f}"
    return value


def check_numeric_metric(rows: list[dict[str, Any]], metric: str) -> None:
    """Raise :class:`GpusimError` when ``metric`` is a column of ``rows`` that holds a value
    that is not a number, or no number at all (``error``, ``binds``, ``best_policy``:
    nothing to colour by). A column that is absent is left to :func:`pivot_sweep`."""
    if not any(metric in row for row in rows):
        return
    values = [row.get(metric) for row in rows if row.get(metric) is not None]
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))),
               None)
    if bad is not None or not values:
        numeric = sorted({c for r in rows for c, v in r.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
        what = f"is not numeric (e.g. {bad!r})" if bad is not None else "has no values"
        raise GpusimError(f"--metric {metric!r} {what}; numeric columns: "
                          f"{', '.join(numeric[:20])}{' ...' if len(numeric) > 20 else ''}")


def check_image_name(path: Path) -> None:
    """Raise :class:`GpusimError` unless ``path`` ends in an image format matplotlib
    writes (``.png``, ``.pdf``, ``.svg``, ...); matplotlib would otherwise add ``.png`` to a
    name without one, or fail with a traceback on an unknown one."""
    from matplotlib.figure import Figure

    formats = sorted(Figure().canvas.get_supported_filetypes())
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        what = f"format {path.suffix!r}" if suffix else "no format suffix"
        raise GpusimError(f"--out {path}: {what}; give a name ending in one of "
                          f"{', '.join('.' + f for f in formats)}")


def cmd_plot_sweep(args: argparse.Namespace) -> int:
    # The plotting stack is imported only by the command that draws.
    from sim.report.plots_sweep import heatmap_figure, pivot_sweep

    where: dict[str, str] = {}
    for text in args.where:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise GpusimError(f"--where expects COLUMN=VALUE, got {text!r}")
        where[name.strip()] = value.strip()
    out = args.out or args.results.with_name(f"{args.results.stem}-{args.metric}.png")
    check_image_name(out)
    rows = read_results(args.results)
    check_numeric_metric(rows, args.metric)
    grid = pivot_sweep(rows, x=args.x, y=args.y, metric=args.metric, where=where)
    heatmap_figure(grid, title=args.title).savefig(out, dpi=150)
    if args.json:
        print_json({"out": str(out), "x": grid.x, "y": grid.y, "metric": grid.metric,
                    "x_values": grid.x_values, "y_values": grid.y_values,
                    "values": grid.values, "fixed": dict(grid.fixed)})
        return 0
    print(f"wrote {out}")
    print_table(
        [[f"{grid.y}={yv}", *(("n/a" if v is None else v) for v in row)]
         for yv, row in zip(grid.y_values, grid.values, strict=True)],
        [f"{grid.metric}", *(f"{grid.x}={xv}" for xv in grid.x_values)],
    )
    return 0
