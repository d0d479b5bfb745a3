"""Validation at network level: simulated step times against real multi-stream runs.

Device campaign 2 (:mod:`sim.measure.netbench`) measures each zoo network on a real GPU,
serially on one stream and with every parallel branch on its own stream, eager and captured
in a CUDA graph, and commits the timings as ``sim/measure/data/netbench/<preset>.json``.
:func:`validate_networks` simulates the same configurations and compares:

* the serial step time (``serial`` policy) with the measured serial time — relative error;
* the multi-stream step time (``branches`` policy, which mirrors the campaign's stream
  assignment: one stream per branch of a module) with the measured one — relative error;
* the multi-stream speedup (serial / multi-stream) — absolute difference.

Cost model: ``calibrated`` on the measured GPU when calibration data for it are committed
(the same campaign commits them), otherwise the default (``analytic``) — the report says
which one ran.
Host launch overhead: eager runs use the GPU spec's ``launch_overhead_s``; CUDA-graph runs
use :data:`GRAPH_LAUNCH_OVERHEAD_S` (docs/model.md §6.1: ~1-2 us per kernel inside a graph).
Those two host figures are model inputs, not measurements; the device campaign's launch
overhead experiment measures them and is the place to take them from once committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_models.calibration import load_gpu_calibration
from gpu_models.cost import DEFAULT_COST_MODEL
from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from gpu_models.units import US_PER_S
from sim.analysis.limits import limits_for_workload
from sim.measure.netbench.store import load_runs, netbench_dir

#: Host time per kernel launch inside a CUDA graph (docs/model.md §6.1), seconds.
GRAPH_LAUNCH_OVERHEAD_S = 1.5e-6

#: How the measured runs launched their kernels: eagerly, or replayed from a CUDA graph.
LAUNCH_MODES: tuple[str, ...] = ("eager", "graph")


@dataclass(frozen=True)
class NetworkComparison:
    """One configuration (network, phase, batch, precision, host mode), measured vs simulated."""

    network: str
    phase: str
    batch: int
    precision: str
    mode: str
    measured_serial_s: float
    measured_streams_s: float
    simulated_serial_s: float
    simulated_streams_s: float

    @property
    def serial_error(self) -> float:
        """(simulated - measured) / measured of the serial step time."""
        return self.simulated_serial_s / self.measured_serial_s - 1

    @property
    def streams_error(self) -> float:
        """(simulated - measured) / measured of the multi-stream step time."""
        return self.simulated_streams_s / self.measured_streams_s - 1

    @property
    def measured_speedup(self) -> float:
        return self.measured_serial_s / self.measured_streams_s

    @property
    def simulated_speedup(self) -> float:
        return self.simulated_serial_s / self.simulated_streams_s

    @property
    def speedup_error(self) -> float:
        """simulated - measured multi-stream speedup (absolute)."""
        return self.simulated_speedup - self.measured_speedup

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view, times in microseconds."""
        return {
            "network": self.network, "phase": self.phase, "batch": self.batch,
            "precision": self.precision, "mode": self.mode,
            "measured_serial_us": self.measured_serial_s * US_PER_S,
            "simulated_serial_us": self.simulated_serial_s * US_PER_S,
            "serial_error": self.serial_error,
            "measured_streams_us": self.measured_streams_s * US_PER_S,
            "simulated_streams_us": self.simulated_streams_s * US_PER_S,
            "streams_error": self.streams_error,
            "measured_speedup": self.measured_speedup,
            "simulated_speedup": self.simulated_speedup,
            "speedup_error": self.speedup_error,
        }


@dataclass(frozen=True)
class NetworkValidation:
    """Every comparison for one GPU's committed network timings."""

    gpu: str
    cost_model: str
    provenance: dict[str, Any]
    comparisons: tuple[NetworkComparison, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "cost_model": self.cost_model,
                "provenance": self.provenance,
                "comparisons": [c.to_dict() for c in self.comparisons]}


def find_network_data(directory: str | Path | None = None) -> dict[str, Path]:
    """Committed network-timing files by GPU preset (empty when none are committed)."""
    folder = netbench_dir() if directory is None else Path(directory)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def choose_cost_model(preset: str, calibration_dir: str | Path | None = None) -> str:
    """``calibrated`` where calibration data for ``preset`` exist, else the default cost
    model."""
    try:
        load_gpu_calibration(preset, calibration_dir)
    except GpusimError:
        return DEFAULT_COST_MODEL
    return "calibrated"


def validate_network_file(path: str | Path, *, cost_model: str | None = None,
                          calibration_dir: str | Path | None = None,
                          networks: Sequence[str] = ()) -> NetworkValidation:
    """Simulate every run of one network-timing file and compare it with the measurement."""
    data = load_runs(path)
    preset = Path(path).stem
    spec = load_gpu(preset)
    measured_sms = data["provenance"].get("libraries", {}).get("sm_count")
    if measured_sms and int(measured_sms) != spec.sm_count:
        spec = spec.replace(sm_count=int(measured_sms))
    model = cost_model or choose_cost_model(preset, calibration_dir)
    comparisons = []
    for run in data["runs"]:
        cfg = run["config"]
        if networks and cfg["network"] not in networks:
            continue
        times = run["times_s"]
        for mode in LAUNCH_MODES:
            serial_key, streams_key = f"serial_{mode}", f"branches_{mode}"
            if serial_key not in times or streams_key not in times:
                continue
            overhead = spec.launch_overhead_s if mode == "eager" else GRAPH_LAUNCH_OVERHEAD_S
            report = limits_for_workload(
                cfg["network"], batch=int(cfg["batch"]), phase=cfg["phase"],
                precision=cfg["precision"], gpu=spec, cost_model=model,
                policies=("serial", "branches"), launch_overhead_s=overhead)
            simulated = report.to_dict()["policies"]
            comparisons.append(NetworkComparison(
                network=cfg["network"], phase=cfg["phase"], batch=int(cfg["batch"]),
                precision=cfg["precision"], mode=mode,
                measured_serial_s=float(times[serial_key]),
                measured_streams_s=float(times[streams_key]),
                simulated_serial_s=simulated["serial"] / US_PER_S,
                simulated_streams_s=simulated["branches"] / US_PER_S))
    return NetworkValidation(gpu=preset, cost_model=model, provenance=data["provenance"],
                             comparisons=tuple(comparisons))


def validate_networks(directory: str | Path | None = None, gpus: Sequence[str] = (),
                      *, cost_model: str | None = None,
                      networks: Sequence[str] = ()) -> list[NetworkValidation]:
    """:func:`validate_network_file` for every committed GPU (or those named)."""
    found = find_network_data(directory)
    unknown = sorted(set(gpus) - set(found))
    if unknown:
        raise GpusimError(f"no network timings for {', '.join(unknown)}; "
                          f"have: {', '.join(found) or 'none'}")
    return [validate_network_file(path, cost_model=cost_model, networks=networks)
            for gpu, path in found.items() if not gpus or gpu in gpus]
