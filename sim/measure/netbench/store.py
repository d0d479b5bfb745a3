"""Committing device campaign 2's output: from the run's ``$OUT`` to the package's data.

The campaign (:mod:`sim.measure.netbench.campaign`) writes a handful of files, as the device
tool's transfer limits require. :func:`import_campaign` validates them and lays them out
where gpusim reads them:

* each configuration's kernels -> ``gpu_models/data/calibration/<preset>-<tag>.json``
  (one calibration file each, read by the calibrated cost model and by lowering);
* the network timings -> ``sim/measure/data/netbench/<preset>.json`` (read by validation).

Nothing is changed on the way but the layout: the numbers are the measured ones.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

from gpu_models.calibration import calibration_dir, calibration_from_dict, save_calibration_file
from gpu_models.datafile import decode_text, parse_data, read_data_file
from gpu_models.errors import GpusimError

RUNS_FORMAT = "gpusim-netbench"


def netbench_dir() -> Path:
    """Where committed network timings live (one file per GPU preset)."""
    return Path(str(resources.files("sim.measure") / "data" / "netbench"))


def load_runs(path: str | Path) -> dict[str, Any]:
    """A network-timing file, checked for its format, provenance and run records."""
    path = Path(path)
    data = read_data_file(path, "network timing file")
    if not isinstance(data, dict) or data.get("format") != RUNS_FORMAT:
        raise GpusimError(f"{path}: not a {RUNS_FORMAT} file")
    prov = data.get("provenance")
    if not isinstance(prov, dict) or not prov.get("gpu_name") or not prov.get("date"):
        raise GpusimError(f"{path}: provenance with gpu_name and date is required")
    runs = data.get("runs")
    if not isinstance(runs, list):
        raise GpusimError(f"{path}: 'runs' must be a list")
    for i, run in enumerate(runs):
        times = run.get("times_s") if isinstance(run, dict) else None
        config = run.get("config") if isinstance(run, dict) else None
        if not isinstance(config, dict) or not isinstance(times, dict) or not times:
            raise GpusimError(f"{path}: run {i} needs 'config' and 'times_s'")
        for key in ("network", "phase", "batch", "precision"):
            if key not in config:
                raise GpusimError(f"{path}: run {i}: config lacks {key!r}")
        for mode, value in times.items():
            if not isinstance(value, (int, float)) or not value > 0:
                raise GpusimError(f"{path}: run {i}: time {mode!r} must be > 0 (got {value!r})")
    return data


def _tar_members(path: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every regular file in a (gzipped) tar archive."""
    try:
        with tarfile.open(path) as tar:
            members = []
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is not None:
                    members.append((Path(member.name).name, handle.read()))
            return members
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise GpusimError(f"{path} is not a readable tar.gz archive: {exc}") from None


def import_campaign(out_dir: str | Path, *, calibration_root: str | Path | None = None,
                    netbench_root: str | Path | None = None) -> list[Path]:
    """Validate a campaign's output folder and write it into the data directories."""
    out = Path(out_dir)
    runs_path = out / "netbench_runs.json"
    runs = load_runs(runs_path)
    preset = runs["provenance"].get("gpu_preset") or ""
    if not preset:
        raise GpusimError(f"{runs_path}: GPU {runs['provenance']['gpu_name']!r} matches no "
                          "gpusim preset; add a preset first")
    cal_root = Path(calibration_root) if calibration_root else calibration_dir()
    nb_root = Path(netbench_root) if netbench_root else netbench_dir()
    cal_root.mkdir(parents=True, exist_ok=True)
    nb_root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    tar_path = out / "calibration.tar.gz"
    if not tar_path.is_file():
        raise GpusimError(f"{tar_path} is missing")
    for name, raw in _tar_members(tar_path):
        if not name.endswith(".json"):
            continue
        origin = f"{tar_path}:{name}"
        text = decode_text(raw, "calibration file", repr(origin))
        calib = calibration_from_dict(parse_data(text, "calibration file", repr(origin), "json"),
                                      origin=origin)
        if not calib.records:
            continue  # a CPU smoke run measures no kernels; nothing to commit
        target = cal_root / name
        save_calibration_file(calib, target)
        written.append(target)
    target = nb_root / f"{preset}.json"
    target.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    written.append(target)
    return written
