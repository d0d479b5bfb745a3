"""``gpusim calibrate import-deepbench``: DeepBench's published CSV rows -> a calibration file.

``gpusim calibrate import-deepbench t4_fp32_gemm.csv t4_fp32_conv.csv --gpu-name t4
--precision fp32 --specs t4_specs.txt --source "..." --out deepbench_t4_fp32.json`` reads the
rows (:mod:`sim.measure.deepbench`) and writes them as calibration *timings*
(:class:`gpu_models.calibration.OpTiming`), with provenance: the GPU, CUDA, cuDNN and driver
versions from the sheet's system description (``--specs``), where the numbers come from
(``--source``) and this command line. A time cell holding a note instead of a number is
reported and left out (``--notes-in-times``); any other bad row is an error naming its line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gpu_models.calibration import UNKNOWN, CalibrationSet, Provenance, save_calibration_file
from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from gpu_models.spec import PRECISIONS
from sim.cli.common import add_json_arg, print_json
from sim.measure.deepbench import DeepBenchRow, read_deepbench_csv, timings
from workloads.lowering import LAYOUTS

#: Keys of a DeepBench ``*_specs.txt`` system description -> provenance fields.
_SPEC_KEYS = {"GPU Model": "gpu_name", "CUDA Version": "cuda", "Nvidia Driver": "driver",
              "Cudnn Version": "cudnn"}


def register_calibrate(subparsers: Any) -> None:
    """The ``import-deepbench`` subcommand of ``gpusim calibrate``."""
    p = subparsers.add_parser(
        "import-deepbench", help="DeepBench result CSVs -> calibration file (timings)",
        description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="+", help="DeepBench CSV files (GEMM and/or convolution)")
    p.add_argument("--out", required=True, help="calibration file to write (.json)")
    p.add_argument("--gpu-name", required=True, help="gpusim preset of the measured GPU")
    p.add_argument("--precision", choices=PRECISIONS, required=True,
                   help="precision the sheet measured (P100 'fp16' is fp16 storage, fp32 math)")
    p.add_argument("--layout", choices=LAYOUTS, default="nchw",
                   help="tensor layout the benchmark used (DeepBench: nchw for FP32, nhwc for "
                   "tensor-core FP16); default nchw")
    p.add_argument("--specs", default=None,
                   help="the sheet's system description (*_specs.txt): GPU, CUDA, cuDNN, "
                   "driver")
    p.add_argument("--source", default="", help="where the numbers come from")
    p.add_argument("--date", default="", help="measurement date (default: unknown)")
    p.add_argument("--notes-in-times", action="store_true",
                   help="leave out (and report) time cells that hold a note, not a number")
    add_json_arg(p)
    p.set_defaults(func=cmd_import)


def _specs(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in _SPEC_KEYS:
            out[_SPEC_KEYS[key.strip()]] = value.strip()
    return out


def cmd_import(args: argparse.Namespace) -> int:
    load_gpu(args.gpu_name)  # an unknown preset is an error here, not a file that loads badly
    specs = _specs(args.specs)
    rows: list[tuple[str, DeepBenchRow]] = []
    for path in args.csv:
        rows.extend((path, row) for row in read_deepbench_csv(
            path, notes_in_times=args.notes_in_times))
    noted = [(path, row.line, column, text) for path, row in rows
             for column, text in row.notes.items()]
    found = timings([row for _, row in rows], dtype=args.precision, layout=args.layout)
    if not found:
        raise GpusimError("no timings in " + ", ".join(args.csv))
    provenance = Provenance(
        gpu_name=specs.get("gpu_name", UNKNOWN), gpu_preset=args.gpu_name,
        driver=specs.get("driver", UNKNOWN), cuda=specs.get("cuda", UNKNOWN),
        libraries={"cudnn": specs["cudnn"]} if "cudnn" in specs else {},
        date=args.date or UNKNOWN, script="gpusim calibrate import-deepbench",
        args=tuple(_argv(args)), source=args.source)
    save_calibration_file(CalibrationSet(provenance=provenance, records=(), timings=found),
                          args.out)
    if args.json:
        print_json({"out": args.out, "timings": len(found), "rows": len(rows),
                    "left_out": [{"file": p, "line": n, "column": c, "text": t}
                                 for p, n, c, t in noted],
                    "provenance": provenance.to_dict()})
        return 0
    for path, line, column, text in noted:
        print(f"{path}: line {line}: {column} holds {text!r}, not a time: left out")
    print(f"wrote {len(found)} timings of {len(rows)} rows ({provenance.gpu_name}, "
          f"{args.precision}, {args.layout}) to {args.out}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    argv = [*args.csv, "--out", args.out, "--gpu-name", args.gpu_name, "--precision",
            args.precision, "--layout", args.layout]
    for option in ("specs", "source", "date"):
        value = getattr(args, option)
        if value:
            argv += [f"--{option}", str(value)]
    if args.notes_in_times:
        argv.append("--notes-in-times")
    return argv
