"""``gpusim calibrate``: turn profiler traces into calibration data and fit cost models.

Subcommands::

    gpusim calibrate ingest TRACE --out FILE.json [--gpu-name PRESET] [--driver V] ...
        [--workload NETWORK --batch B --precision P --framework F] [--step-marker RANGE]
    gpusim calibrate fit --gpu NAME [--file FILE.json ...] [--work MODULE:FUNC] [--force] [--json]
    gpusim calibrate fit --model analytic [--output FILE.toml [--overwrite]] [--dir D] [--json]

``ingest`` reads a ``torch.profiler`` Chrome trace (``.json`` or ``.json.gz``), prints a
summary (kernels per step, time per stream, kinds) and writes a calibration file whose
provenance records this command line. With ``--workload`` it writes a *digest*
(:mod:`sim.measure.trace_digest`): the totals of every step and the kernels of the median
step, each attributed to the network's layer and given the FLOPs and bytes lowering derives
for it, so that ``fit`` needs no ``--work`` function. ``fit`` fits the calibrated cost
model to one GPU's calibration data and prints each kind's k-fold held-out error. The data
must have been measured on that GPU: a ``--file`` whose provenance ``gpu_preset`` is
another preset (or none), or a ``--gpu`` spec that differs from its preset in more than
host-side settings, is an error unless ``--force`` is given. ``fit --model analytic`` (the
default without ``--gpu``) fits the analytic cost model's per-architecture parameters to
every committed DeepBench timing and trace digest (:mod:`sim.measure.analytic_fit`), prints
each group's in-sample and leave-one-GPU-out error, and with ``--output`` writes the
parameter file (an existing file only with ``--overwrite``); the committed
``gpu_models/data/analytic.toml`` is its output.

``calibrate`` is a group other modules extend: a module that adds subcommands defines
``register_calibrate(subparsers)`` (it receives the group's ``add_subparsers`` object,
exactly like a top-level command module's ``register``) and lists itself in
:data:`CALIBRATE_MODULES` below. This module stays the only top-level registration of
``calibrate`` (its line in ``sim.cli.COMMANDS``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpu_models.calibration import (
    CalibrationRecord,
    CalibrationSet,
    Provenance,
    all_records,
    list_calibration_files,
    load_calibration_file,
    load_gpu_calibration,
    save_calibration_file,
)
from gpu_models.cost.calibrated import (
    FEATURE_NAMES,
    WorkFn,
    cross_validate,
    timing_differences,
    work_kernels,
)
from gpu_models.errors import GpusimError
from gpu_models.presets import list_presets, load_gpu
from gpu_models.spec import PRECISIONS
from gpu_models.units import MS_PER_S, US_PER_S
from sim.cli.common import add_json_arg, print_json, print_table
from sim.cli.files import declare_files
from sim.measure.attribution import Attribution
from sim.measure.ingest import (
    DEFAULT_LAYER_PREFIX,
    DEFAULT_STEP_PREFIX,
    IngestResult,
    TraceSummary,
    parse_trace,
    to_calibration,
    trace_provenance,
)
from sim.measure.trace_digest import TracedWorkload, digest_trace
from workloads.lowering import list_frameworks

#: Modules adding ``calibrate`` subcommands through ``register_calibrate(subparsers)``.
CALIBRATE_MODULES: tuple[str, ...] = ("sim.cli.calib", "sim.cli.deepbench", "sim.cli.micro",
                                      "sim.cli.netbench")


def register(subparsers: Any) -> None:
    """Add the ``calibrate`` group and every subcommand of :data:`CALIBRATE_MODULES`."""
    parser = subparsers.add_parser(
        "calibrate", help="ingest profiler traces into calibration data; fit cost models",
        description=__doc__.split("\n\n")[0])
    group = parser.add_subparsers(dest="calibrate_command", metavar="SUBCOMMAND",
                                  required=True)
    for module_name in CALIBRATE_MODULES:
        importlib.import_module(module_name).register_calibrate(group)


def register_calibrate(subparsers: Any) -> None:
    """This module's ``calibrate`` subcommands: ``ingest`` and ``fit``."""
    ingest = subparsers.add_parser(
        "ingest", help="profiler trace -> calibration file (with provenance)",
        description="Read a torch.profiler Chrome trace, summarise it and write its kernels "
        "as a calibration file.")
    ingest.add_argument("trace", help="trace file (.json or .json.gz)")
    ingest.add_argument("--out", required=True, help="calibration file to write (.json)")
    ingest.add_argument("--gpu-name", default="",
                        help="gpusim preset the GPU corresponds to (default: the preset "
                        "whose name and memory size match the trace's device, if any)")
    ingest.add_argument("--driver", default="", help="driver version (if the trace lacks it)")
    ingest.add_argument("--cuda", default="", help="CUDA version (if the trace lacks it)")
    ingest.add_argument("--library", action="append", default=[], metavar="NAME=VERSION",
                        help="library version, repeatable (e.g. torch=2.3.0, cudnn=8.9.7)")
    ingest.add_argument("--source", default="",
                        help="where the trace comes from, for the provenance (default: its "
                        "file name), e.g. 'repo/path (licence)'")
    ingest.add_argument("--date", default="",
                        help="measurement date (default: from the trace's clock, else "
                        "'unknown')")
    ingest.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="precision the workload ran at (for kernels whose names do "
                        "not say)")
    ingest.add_argument("--batch", type=int, default=None, help="the workload's batch size")
    ingest.add_argument("--layer-prefix", default=DEFAULT_LAYER_PREFIX,
                        help=f"prefix of layer ranges (default {DEFAULT_LAYER_PREFIX!r})")
    ingest.add_argument("--step-prefix", default=DEFAULT_STEP_PREFIX,
                        help=f"prefix of iteration ranges (default {DEFAULT_STEP_PREFIX!r})")
    ingest.add_argument("--step-marker", default="", metavar="RANGE",
                        help="for traces without ProfilerStep ranges: a range that opens "
                        "every iteration (e.g. 'Optimizer.zero_grad'); each starts a step")
    ingest.add_argument("--workload", default=None, metavar="NETWORK",
                        help="the zoo network the trace trained: write a digest (step "
                        "totals, the median step's kernels with layers and work) instead "
                        "of every kernel; needs --batch, --precision and a preset")
    ingest.add_argument("--framework", default="pytorch", choices=list_frameworks(),
                        help="framework profile the traced run used, for --workload "
                        "(default pytorch)")
    ingest.add_argument("--step", type=int, default=None,
                        help="the step whose kernels a digest keeps (default: the median)")
    add_json_arg(ingest)
    ingest.set_defaults(func=_cmd_ingest)
    declare_files(ingest, inputs=("trace",), outputs=("out",))

    fit = subparsers.add_parser(
        "fit", help="fit a cost model (analytic, or calibrated for --gpu) and report its "
        "errors",
        description="Fit the analytic cost model's per-architecture parameters to the "
        "published measurements (printing in-sample and leave-one-GPU-out errors, writing "
        "the parameter file with --output), or with --gpu the per-kind calibrated cost "
        "model to a GPU's calibration data (printing each kind's k-fold held-out error).")
    fit.add_argument("--model", choices=("analytic", "calibrated"), default=None,
                     help="the model to fit (default: calibrated with --gpu, else analytic)")
    fit.add_argument("--output", default=None, metavar="FILE.toml",
                     help="analytic: write the fitted parameter file here")
    fit.add_argument("--overwrite", action="store_true",
                     help="analytic: replace an existing --output file")
    fit.add_argument("--gpu", default=None,
                     help="calibrated: preset name or spec file of the GPU")
    fit.add_argument("--file", action="append", default=[], dest="files",
                     help="calibration file(s) to fit (default: the GPU's files in the "
                     "calibration directory)")
    fit.add_argument("--dir", default=None, help="calibration directory to search")
    fit.add_argument("--work", default=None, metavar="MODULE:FUNC",
                     help="function record -> (flops, dram_bytes) or None, for records "
                     "without them (digests of 'ingest --workload' carry them); shipped: "
                     "sim.measure.work:signature_work, from recorded shapes")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fold shuffle")
    fit.add_argument("--force", action="store_true",
                     help="fit even when a --file's provenance gpu_preset is not --gpu's "
                     "preset, or --gpu changes its preset beyond host-side settings (the "
                     "features are computed on --gpu: only right if the data were measured "
                     "on such a GPU)")
    add_json_arg(fit)
    fit.set_defaults(func=_cmd_fit)
    declare_files(fit, inputs=("gpu", "files"), outputs=("output",))


def _cmd_ingest(args: argparse.Namespace) -> int:
    libraries = {}
    for text in args.library:
        name, sep, version = text.partition("=")
        if not sep or not name.strip():
            raise GpusimError(f"--library expects NAME=VERSION, got {text!r}")
        libraries[name.strip()] = version.strip()
    if args.gpu_name and args.gpu_name not in list_presets():
        raise GpusimError(f"--gpu-name {args.gpu_name!r} is not a gpusim preset; presets: "
                          f"{', '.join(list_presets())}")
    result = parse_trace(args.trace, layer_prefix=args.layer_prefix,
                         step_prefix=args.step_prefix, precision=args.precision,
                         batch=args.batch, step_marker=args.step_marker)
    if not result.kernels:
        s = result.summary
        raise GpusimError(
            f"{args.trace}: no usable kernels, nothing written: {s.n_zero_duration} with zero "
            f"duration, {s.n_negative_duration} with a negative duration, "
            f"{s.n_communication} communication kernels, {s.n_cpu_ops} CPU ops (was the "
            "trace recorded with ProfilerActivity.CUDA?)")
    preset = args.gpu_name or _guess_preset(result.summary)
    provenance = trace_provenance(
        result, script="gpusim calibrate ingest", args=_argv_of(args), date=args.date,
        gpu_preset=preset, driver=args.driver, cuda=args.cuda, libraries=libraries,
        source=args.source or Path(args.trace).name)
    attribution = None
    if args.workload is not None:
        calibration, attribution = _digest(args, result, provenance, preset)
    else:
        calibration = to_calibration(result, provenance)
    save_calibration_file(calibration, args.out)
    summary = result.summary
    if args.json:
        out: dict[str, Any] = {"out": args.out, "records": len(calibration.records),
                               "provenance": provenance.to_dict(),
                               "summary": summary.to_dict()}
        if attribution is not None:
            out["attributed"] = attribution.attributed
            out["unmatched_families"] = {k: list(v) for k, v in attribution.unmatched.items()}
        print_json(out)
        return 0
    print(f"{args.trace}: GPU {summary.gpu_name or '(none recorded)'}"
          f"{f' (preset {preset})' if preset else ''}; {summary.n_kernels} kernels, "
          f"{summary.n_cpu_ops} CPU ops, {summary.n_launches} runtime calls, "
          f"{summary.n_communication} communication kernels skipped, "
          f"{summary.n_zero_duration} zero-duration kernels dropped"
          + (f", {summary.n_negative_duration} kernels with a negative duration (damaged "
             "events) dropped" if summary.n_negative_duration else ""))
    steps = summary.steps or {s.step: (s.kernels, s.kernel_time_s) for s in calibration.steps}
    if steps:
        print_table([(step, n, t * MS_PER_S) for step, (n, t) in steps.items()],
                    ["step", "kernels", "kernel ms"])
    if summary.stream_time_s:
        print_table([(s, t * MS_PER_S) for s, t in summary.stream_time_s.items()],
                    ["stream", "kernel ms"])
    if summary.kinds:
        print_table(list(summary.kinds.items()), ["kind", "kernels"])
    if attribution is not None:
        unmatched = ", ".join(f"{family} (trace {t}, lowering {lw})"
                              for family, (t, lw) in attribution.unmatched.items())
        print(f"digest: {len(calibration.steps)} steps; kept step "
              f"{calibration.records[0].step if calibration.records else '-'}: "
              f"{attribution.attributed} of {len(calibration.records)} kernels attributed to "
              f"{args.workload}'s layers, "
              f"{sum(1 for r in calibration.records if r.flops is not None)} with work"
              + (f"; op families left unattributed: {unmatched}" if unmatched else ""))
    if attribution is None:
        print(f"{summary.n_with_layer} kernels attributed to {len(summary.layers)} layer "
              "ranges; ", end="")
    print(f"wrote {len(calibration.records)} records to {args.out}")
    return 0


def _digest(args: argparse.Namespace, result: IngestResult, provenance: Provenance,
            preset: str) -> tuple[CalibrationSet, Attribution]:
    if not preset:
        raise GpusimError("--workload needs the GPU's preset: the trace's GPU matches none; "
                          "give --gpu-name PRESET")
    if args.batch is None or args.precision is None:
        raise GpusimError("--workload needs --batch and --precision (what the traced run "
                          "used)")
    workload = TracedWorkload(network=args.workload, batch=args.batch,
                              precision=args.precision, framework=args.framework)
    return digest_trace(result, workload, load_gpu(preset), provenance=provenance,
                        step=args.step)


def _argv_of(args: argparse.Namespace) -> list[str]:
    """The command's arguments, rebuilt from what was parsed (defaults left out)."""
    argv = [args.trace, "--out", args.out]
    for option in ("gpu_name", "driver", "cuda", "source", "date", "precision", "batch",
                   "step_marker", "workload", "step"):
        value = getattr(args, option)
        if value not in ("", None):
            argv += [f"--{option.replace('_', '-')}", str(value)]
    for text in args.library:
        argv += ["--library", text]
    if args.layer_prefix != DEFAULT_LAYER_PREFIX:
        argv += ["--layer-prefix", args.layer_prefix]
    if args.step_prefix != DEFAULT_STEP_PREFIX:
        argv += ["--step-prefix", args.step_prefix]
    if args.workload is not None:
        argv += ["--framework", args.framework]
    return argv


def _guess_preset(summary: TraceSummary) -> str:
    """The preset the trace's GPU is, when both its name and its memory size match one.

    Names are compared without spaces or dashes ("rtx-2080ti" matches "GeForce RTX 2080 Ti",
    "titan-xp" "TITAN Xp"); the longest matching preset name wins ("h100-pcie" before
    "h100"). The memory check keeps a 40 GB A100 (1.6 TB/s) from passing for the 80 GB
    preset: a preset of the same family ("a100-40gb") whose memory size matches is taken
    instead. Without a recorded memory size the name alone decides.
    """
    def plain(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    name = plain(summary.gpu_name)
    memory_B = summary.device_properties.get("totalGlobalMem")

    def memory_fits(preset: str) -> bool:
        if not isinstance(memory_B, (int, float)) or isinstance(memory_B, bool):
            return True
        return abs(memory_B / load_gpu(preset).dram_B - 1) < 0.1

    presets = sorted(list_presets(), key=len, reverse=True)
    named = [p for p in presets if all(plain(part) in name for part in p.split("-"))]
    family = [p for p in presets if plain(p.split("-")[0]) in name]
    for preset in (*named, *family):
        if memory_fits(preset):
            return preset
    return ""


def _presets_with_records(directory: str | None) -> list[str]:
    """The presets whose calibration files hold kernel records."""
    presets = set()
    for path in list_calibration_files(directory):
        calibration = load_calibration_file(path)
        if calibration.records and calibration.provenance.gpu_preset:
            presets.add(calibration.provenance.gpu_preset)
    return sorted(presets) or ["none"]


def _load_work_fn(text: str | None) -> WorkFn | None:
    if text is None:
        return None
    module_name, sep, func_name = text.partition(":")
    if not sep:
        raise GpusimError(f"--work expects MODULE:FUNC, got {text!r}")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise GpusimError(f"--work {text!r}: {exc}") from None
    if not callable(func):
        raise GpusimError(f"--work {text!r} is not a function")

    def checked(record: CalibrationRecord) -> tuple[float, float]:
        # A user's function: whatever it raises or returns, the command exits 2 naming it.
        try:
            result = func(record)
            flops, dram_bytes = result
            values = (float(flops), float(dram_bytes))
        except Exception as exc:
            raise GpusimError(f"--work {text!r} failed on record {record.library_name!r}: "
                              f"{type(exc).__name__}: {exc} (it must take a calibration "
                              "record and return (flops, dram_bytes))") from None
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise GpusimError(f"--work {text!r} returned {result!r} for record "
                              f"{record.library_name!r}; expected two finite numbers >= 0")
        return values

    return checked


def _cmd_fit_analytic(args: argparse.Namespace) -> int:
    from sim.measure.analytic_fit import fit_published, table_toml

    for flag in ("gpu", "work", "files"):
        if getattr(args, flag):
            raise GpusimError(f"--{flag} is for --model calibrated; the analytic model is "
                              "fitted to every committed measurement (--dir to choose them)")
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise GpusimError(f"--output {args.output} exists: pass --overwrite to replace it")
    report = fit_published(args.dir)
    if args.output:
        Path(args.output).write_text(table_toml(report.table), encoding="utf-8")
    if args.json:
        print_json({**report.to_dict(), "output": args.output})
        return 0
    held = {g.group: g for g in report.leave_one_out}
    rows = []
    for g in report.in_sample:
        out = held.get(g.group)
        rows.append((*g.group, g.n, f"{100 * g.mape:.1f}",
                     f"{100 * g.mean_error:+.1f}",
                     "-" if out is None else f"{100 * out.mape:.1f}",
                     "-" if out is None else f"{100 * out.mean_error:+.1f}"))
    print(f"analytic cost model fitted to {len(report.data.points)} measurements of "
          f"{', '.join(report.data.gpus)}: |predicted / measured - 1| in % (MAPE; a trace "
          "class: its one error), in-sample and leave-one-GPU-out (fit without the GPU)")
    print_table(rows, ["gpu", "data", "kind", "pass/class", "n", "in-sample %", "mean %",
                       "held-out %", "mean %"])
    for gpu, error in report.in_sample_steps.items():
        held_step = report.leave_one_out_steps.get(gpu)
        print(f"{gpu} traced step (kernel time): in-sample {100 * error:+.1f}%"
              + ("" if held_step is None else f", held out {100 * held_step:+.1f}%"))
    print("entries: " + "; ".join(f"{name}: {p.source}"
                                  for name, p in report.table.entries.items()))
    if args.output:
        print(f"wrote {args.output}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    if (args.model or ("calibrated" if args.gpu else "analytic")) == "analytic":
        return _cmd_fit_analytic(args)
    if args.output or args.overwrite:
        raise GpusimError("--output/--overwrite are for --model analytic")
    if not args.gpu:
        raise GpusimError("--model calibrated needs --gpu (the GPU whose data to fit)")
    spec = load_gpu(args.gpu)
    measured = spec.preset or spec.name
    if not args.force and measured in list_presets():
        changed = timing_differences(spec, load_gpu(measured))
        if changed:
            raise GpusimError(
                f"--gpu {args.gpu} differs from preset {measured} (on which its calibration "
                f"data were measured) in {', '.join(changed)}; fit on {measured} and use the "
                "'scaled' cost model for other hardware (or pass --force)")
    records: tuple[CalibrationRecord, ...]
    if args.files:
        sets = [load_calibration_file(f) for f in args.files]
        for calibration in sets:
            preset = calibration.provenance.gpu_preset
            if preset != measured and not args.force:
                raise GpusimError(
                    f"calibration file {calibration.path!r} was measured on "
                    f"{calibration.provenance.gpu_name!r} (preset "
                    f"{preset or '(none recorded)'}), not on {measured}: fitting it for "
                    f"{spec.name} would compute its features on the wrong GPU; "
                    + ("pass the matching --gpu" if preset else
                       "re-ingest it with --gpu-name PRESET")
                    + ", or --force if you know it was measured on this GPU")
        records = all_records(sets)
    else:
        sets = list(load_gpu_calibration(measured, args.dir))
        records = all_records(sets)
    if not records:
        timed = sum(len(c.timings) for c in sets)
        raise GpusimError(
            f"no kernel records to fit for {spec.name}"
            + (f": its data are {timed} op-level timings (a benchmark's library calls), "
               "which the calibrated model, fitted per kernel, does not use; GPUs with kernel "
               "records: " + ", ".join(_presets_with_records(args.dir)) if timed else ""))
    work_fn = _load_work_fn(args.work)
    fitted = len(work_kernels(records, work_fn))
    report = cross_validate(records, spec, rng=np.random.default_rng(args.seed),
                            folds=args.folds, work_fn=work_fn)
    if args.json:
        print_json({"gpu": spec.name, "records": len(records), "fitted_records": fitted,
                    "folds": args.folds, "seed": args.seed,
                    "kinds": [e.to_dict() for e in report.values()]})
        return 0
    print(f"{spec.name}: {len(records)} records, {fitted} with FLOPs and bytes fitted; "
          f"relative error |pred - meas| / meas, {args.folds}-fold held out "
          f"(seed {args.seed})")

    def pct(value: float) -> str:
        return "-" if math.isnan(value) else f"{100 * value:.1f}"

    rows = []
    for err in report.values():
        a, b, c, d = err.coefficients
        rows.append((err.kind.value, err.n_records, pct(err.heldout_median),
                     pct(err.heldout_mean), pct(err.heldout_max), pct(err.insample_mean),
                     f"{a:.3g}", f"{b:.3g}", f"{c * US_PER_S:.3g}", f"{d * US_PER_S:.3g}"))
    print_table(rows, ["kind", "n", "median %", "mean %", "max %", "in-sample %",
                       f"{FEATURE_NAMES[0]}", f"{FEATURE_NAMES[1]}", "us/wave", "us/kernel"])
    return 0
