"""``gpusim validate``: the engine against block-level measurements of real GPUs.

Replays every case of the committed device-campaign data (``sim/measure/data/micro/<gpu>/``)
in the engine and prints measured against simulated makespan, each kernel's start and end,
and per-SM block counts, with the error of each (see :mod:`sim.measure.validate`). With no data it
says what is missing and how to measure it, and never makes numbers up.

It also compares simulated network step times and multi-stream speedups with the committed
network runs of device campaign 2 (``sim/measure/data/netbench/<gpu>.json``; see
:mod:`sim.measure.validate_networks`).

``gpusim validate --published [--cost-model NAME]`` instead prices the public measurements
committed as calibration data (:mod:`sim.measure.published`): Baidu DeepBench's GEMM and
convolution timings (MAPE per GPU, precision, kind and pass) and the traced training steps
(step kernel time and per-kernel-class totals, measured against predicted).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from gpu_models.cost import DEFAULT_COST_MODEL, list_cost_models
from gpu_models.errors import GpusimError, GpusimWarning
from gpu_models.presets import list_presets
from gpu_models.units import MS_PER_S, US_PER_S
from sim.cli.common import add_json_arg, print_json, print_table
from sim.engine.engine import MODES
from sim.measure.micro.schema import EXPERIMENTS, default_data_dir
from sim.measure.published import PublishedValidation, validate_published
from sim.measure.validate import ValidationReport, find_measured, validate
from sim.measure.validate_networks import NetworkValidation, find_network_data, validate_networks


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` command."""
    p = subparsers.add_parser(
        "validate", help="replay measured microbenchmarks in the engine; show the errors",
        description="Hold the simulator to measurements: replay every committed block-level "
        "microbenchmark case of real GPUs in the engine (makespan, each kernel's start and "
        "end, blocks per SM), and compare simulated network step times and multi-stream "
        "speedups with committed network runs. Without data it says what to measure.")
    p.add_argument("--data", type=Path, default=None,
                   help="measured data folder (default: sim/measure/data/micro)")
    p.add_argument("--gpu", action="append", default=[], metavar="KEY",
                   help="only this GPU's data (repeatable; a folder name under --data)")
    p.add_argument("--mode", choices=MODES, default="grouped",
                   help="engine mode (default: grouped)")
    p.add_argument("--require-data", action="store_true",
                   help="exit 2 when no measured data are found")
    p.add_argument("--kernels", action="store_true",
                   help="also print every kernel's start and end")
    p.add_argument("--network-data", type=Path, default=None,
                   help="network timing folder (default: sim/measure/data/netbench)")
    p.add_argument("--network", action="append", default=[], metavar="NAME",
                   help="only this network's runs (repeatable)")
    p.add_argument("--published", action="store_true",
                   help="price the committed public measurements instead (DeepBench "
                   "timings, traced training steps) and print their errors")
    p.add_argument("--cost-model", choices=list_cost_models(), default=DEFAULT_COST_MODEL,
                   help=f"cost model --published prices with (default {DEFAULT_COST_MODEL})")
    p.add_argument("--origin", default=None,
                   help="measured GPU the 'scaled' cost model scales from (--published)")
    add_json_arg(p)
    p.set_defaults(func=cmd_validate)


def _no_data_message(root: Path) -> str:
    return (f"no measured data under {root}: expected <gpu>/<experiment>.json for "
            f"experiments {', '.join(EXPERIMENTS)}.\n"
            "Measure them on a GPU with `bash scripts/device_campaign.sh` and unpack its "
            "micro.tar.gz there; see sim/measure/micro/README.md. Nothing was simulated.")


def _check_folder(flag: str, folder: Path | None) -> None:
    """A folder the user names must exist: "no data" would hide a typo."""
    if folder is not None and not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise GpusimError(f"{flag} {folder} {what}")


def cmd_validate(args: argparse.Namespace) -> int:
    _check_folder("--data", args.data)
    _check_folder("--network-data", args.network_data)
    if args.kernels and args.json:
        warnings.warn(GpusimWarning("--kernels adds the per-kernel table; --json always has "
                                    "every kernel, so it is ignored"), stacklevel=1)
    if args.published:
        return _cmd_published(args)
    root = default_data_dir() if args.data is None else args.data
    micro = find_measured(root)
    networks = find_network_data(args.network_data)
    known = {*list_presets(), *micro, *networks}
    unknown = [g for g in args.gpu if g not in known]
    if unknown:
        raise GpusimError(
            f"validate: unknown GPU {unknown[0]!r}: not a GPU preset and no data for it "
            f"under {root}; presets: {', '.join(list_presets())}; with data: "
            f"{', '.join(sorted({*micro, *networks})) or '(none)'}")
    if not micro and not networks:
        if args.json:
            print_json({"data_dir": str(root), "reports": [], "missing": list(EXPERIMENTS),
                        "networks": []})
        else:
            print(_no_data_message(root))
            print(_NO_NETWORK_DATA)
        return 2 if args.require_data else 0
    reports = validate(root, args.gpu, args.mode) if micro else []
    gpus = [g for g in args.gpu if g in networks]
    net_reports = validate_networks(args.network_data, gpus, networks=args.network) \
        if networks else []
    if args.json:
        print_json({"data_dir": str(root), "reports": [r.to_dict() for r in reports],
                    "networks": [n.to_dict() for n in net_reports]})
        return 0
    if not micro:
        print(_no_data_message(root))
    for report in reports:
        _print_report(report, args.kernels)
    if not networks:
        print(_NO_NETWORK_DATA)
    for net in net_reports:
        _print_networks(net)
    return 0


_NO_NETWORK_DATA = (
    "no network timings under sim/measure/data/netbench: measure them on a GPU with "
    "`bash scripts/device_campaign.sh` (its networks step) and add them with "
    "`gpusim calibrate import-layers DIR`. Nothing was simulated.")


def _print_networks(net: NetworkValidation) -> None:
    prov = net.provenance
    print(f"{net.gpu}: network runs on {prov.get('gpu_name')} (driver {prov.get('driver')}, "
          f"measured {prov.get('date')}), cost model {net.cost_model}")
    rows = [(c.network, c.phase, c.batch, c.precision, c.mode,
             round(c.measured_serial_s * US_PER_S, 1), round(c.simulated_serial_s * US_PER_S, 1),
             _pct(c.serial_error), f"{c.measured_speedup:.3f}", f"{c.simulated_speedup:.3f}",
             f"{c.speedup_error:+.3f}") for c in net.comparisons]
    print_table(rows, ("network", "phase", "batch", "precision", "host", "serial_meas_us",
                       "serial_sim_us", "serial_err_%", "speedup_meas", "speedup_sim",
                       "speedup_err"))


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}"


def _print_report(report: ValidationReport, kernels: bool) -> None:
    prov = report.provenance
    print(f"{report.gpu}: {prov.get('gpu_name')} (driver {prov.get('driver_version')}, "
          f"CuPy {prov.get('cupy_version')}, measured {prov.get('date_utc')})")
    if report.missing:
        print(f"  missing experiments: {', '.join(report.missing)}")
    rows = [(c.experiment, c.case + (" (calibration)" if c.calibration else "")
             + (f" (pending: {c.pending})" if c.pending else ""),
             round(c.measured_makespan_s * US_PER_S, 2),
             round(c.simulated_makespan_s * US_PER_S, 2),
             _pct(c.makespan_error), round(c.measured_spread_s * US_PER_S, 2),
             "-" if c.worst_edge_error is None else _pct(c.worst_edge_error),
             f"{max((k.sm_distance for k in c.kernels), default=0.0):.3f}")
            for c in report.cases]
    if rows:
        print_table(rows, ("experiment", "case", "measured_us", "simulated_us", "error_%",
                           "noise_us", "worst_edge_%", "sm_dist"))
    for f in report.failures:
        print(f"  NOT REPLAYED {f.experiment}/{f.case}: {f.reason}")
    by_experiment: dict[str, list[float]] = {}
    pending: dict[str, int] = {}
    for c in report.cases:
        if c.pending:
            pending[c.experiment] = pending.get(c.experiment, 0) + 1
        elif not c.calibration:
            by_experiment.setdefault(c.experiment, []).append(abs(c.makespan_error))
    for experiment, errors in by_experiment.items():
        errors.sort()
        print(f"  {experiment}: {len(errors)} cases, |makespan error| median "
              f"{100 * errors[len(errors) // 2]:.1f}%, max {100 * errors[-1]:.1f}%"
              + (f"; {pending[experiment]} more pending a mechanism the engine lacks"
                 if experiment in pending else ""))
    if kernels:
        krows = [(c.case, k.name, k.blocks, round(k.measured_start_s * US_PER_S, 2),
                  round(k.simulated_start_s * US_PER_S, 2), round(k.measured_end_s * US_PER_S, 2),
                  round(k.simulated_end_s * US_PER_S, 2),
                  f"{k.measured_sms_used}/{k.simulated_sms_used}",
                  f"{k.measured_max_per_sm}/{k.simulated_max_per_sm}", f"{k.sm_distance:.3f}")
                 for c in report.cases for k in c.kernels]
        print_table(krows, ("case", "kernel", "blocks", "start_meas_us", "start_sim_us",
                            "end_meas_us", "end_sim_us", "SMs meas/sim", "max/SM meas/sim",
                            "sm_dist"))
    occ = [s for s in report.scalars if s.experiment == "occupancy"]
    if occ:
        for quantity in sorted({s.quantity for s in occ}):
            same = [s for s in occ if s.quantity == quantity]
            wrong = [s for s in same if s.measured != s.predicted]
            print(f"  occupancy, calculator {quantity}: {len(same) - len(wrong)}/{len(same)} "
                  "agree" + (f"; differ: {', '.join(s.case for s in wrong[:8])}"
                             f"{' ...' if len(wrong) > 8 else ''}" if wrong else ""))
    for s in report.scalars:
        if s.experiment == "launch_overhead":
            print(f"  launch: {s.case} {s.quantity}: measured {s.measured * US_PER_S:.3f} us, "
                  f"model {s.predicted * US_PER_S:.3f} us")


def _cmd_published(args: argparse.Namespace) -> int:
    unknown = [g for g in args.gpu if g not in list_presets()]
    if unknown:
        raise GpusimError(f"validate: unknown GPU {unknown[0]!r}; presets: "
                          f"{', '.join(list_presets())}")
    result = validate_published(args.cost_model, gpus=args.gpu, origin=args.origin)
    if args.json:
        print_json(result.to_dict())
        return 0
    _print_published(result)
    return 0


def _print_published(result: PublishedValidation) -> None:
    db = result.deepbench
    print(f"DeepBench (published training results), {db.cost_model} cost model: "
          "|predicted / measured - 1| per GPU, precision, kind and pass")
    for preset, prov in db.provenance.items():
        libraries = ", ".join(f"{k} {v}" for k, v in dict(prov.get("libraries", {})).items())
        print(f"  {preset}: {prov.get('gpu_name')} (CUDA {prov.get('cuda')}"
              f"{', ' + libraries if libraries else ''}, driver {prov.get('driver')})")
    print_table([(s.gpu, s.precision, s.kind, s.pass_, s.n, f"{100 * s.mape:.1f}",
                  f"{100 * s.median_ape:.1f}", f"{100 * s.max_ape:.1f}", _signed(s.mean_error))
                 for s in db.summaries],
                ("gpu", "precision", "kind", "pass", "n", "MAPE_%", "median_%", "max_%",
                 "mean_err_%"))
    for skipped in (*db.skipped, *result.trace_skipped):
        print(f"  NOT PRICED {skipped.gpu} ({skipped.what}): {skipped.reason}")
    for trace in result.traces:
        w = trace.workload
        print(f"\n{trace.gpu}: {w.get('network')} training, batch {w.get('batch')}, "
              f"{w.get('precision')}, framework {w.get('framework')}; "
              f"{trace.cost_model} cost model; source {trace.source}")
        print(f"  step kernel time: measured {trace.measured_step_s * MS_PER_S:.2f} ms (mean of "
              f"{len(trace.measured_steps_s)} steps), predicted "
              f"{trace.predicted_step_s * MS_PER_S:.2f} ms, error {_signed(trace.step_error)}%; "
              f"kernels {trace.measured_kernels:.0f} measured, {trace.lowered_kernels} lowered")
        print_table([(c.cls, f"{c.measured_kernels:.0f}", c.lowered_kernels,
                      f"{c.measured_s * MS_PER_S:.3f}", f"{c.predicted_s * MS_PER_S:.3f}",
                      "-" if c.error is None else _signed(c.error))
                     for c in trace.classes if c.measured_kernels or c.lowered_kernels],
                    ("class", "kernels_meas", "kernels_low", "measured_ms", "predicted_ms",
                     "error_%"))


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}"
