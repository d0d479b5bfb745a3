"""Validation: replay measured microbenchmarks in the engine and compare (docs/model.md §9).

The device campaign (:mod:`sim.measure.micro`) commits one JSON file per experiment under
``sim/measure/data/micro/<gpu>/``. Every timeline case in them (streams, launches in host
order, the registers and shared memory the kernels really had) becomes a
:class:`~sim.engine.program.Program`, runs in the engine, and is compared with what the GPU did:
makespan, each kernel's first-block start and last-block end, and how many blocks each SM
ran.

Aligning the two clocks: both timelines start at their first block (the measured times
are already relative to the earliest block start; the simulated ones are shifted by the
earliest kernel start), so host-to-device latency, which the engine does not model,
drops out. Gated cases (every launch enqueued behind a gate kernel) start at the gate's end
on both sides, and their makespan is the time after it.

Replay inputs, taken from the data, never invented:

* a spin kernel's per-block time is the measured median of its blocks in that case (it spins
  on the global timer, so it is fixed by construction; what is validated is *where and
  when* blocks ran);
* a streaming kernel's unloaded block time is the block time of the ``alone_1block`` case
  and the GPU's DRAM bandwidth the one ``alone_full`` reached; those two cases are marked
  ``calibration`` in the report;
* an FMA, spin or sleep kernel that names its ``unimpeded`` case (the same kernel alone, one
  block per SM) replays with that case's median block time and its share of the SM's FP32
  pipe (FLOP rate alone over ``fma_peak``'s per-SM rate; 0 for spin and sleep): the
  engine's SM sharing must then give both the kernel alone at its own grid and the pair
  (:mod:`sim.measure.validate_contention`);
* a copy that names a ``reference`` case (the contention pairs and the bandwidth sweep: the
  same kernel alone) takes that case's median block time, and the DRAM bandwidth is the one
  the experiment's full-wave copy reached; cases of kernels alone are ``calibration``, and
  cases testing a mechanism the engine does not model yet are reported as *pending* it and
  held to no tolerance;
* host launch overhead is the case's median measured launch-call time; gated cases (every
  launch enqueued behind a gate kernel) replay with zero host overhead and the gate as a
  kernel;
* the GPU spec is the preset of the data folder's name, with the measured SM count.

Per-SM block counts are compared as sorted distributions (the engine's SM numbering and the
hardware's are unrelated): the distance is the fraction of blocks that would have to move
to turn one distribution into the other.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.presets import list_presets, load_gpu
from gpu_models.spec import GPUSpec
from gpu_models.units import US_PER_S
from sim.engine.engine import simulate
from sim.engine.program import Launch, Program, StreamDef
from sim.engine.result import SimResult
from sim.measure.micro.schema import (
    EXPERIMENTS,
    TIMELINE_EXPERIMENTS,
    check_result,
    default_data_dir,
)
from sim.measure.validate_contention import (
    ReplayInput,
    block_time_s,
    dram_bandwidth_Bps,
    pending,
    replay_inputs,
)

#: Cases the replay takes its inputs from (besides every case of a kernel alone).
CALIBRATION_CASES: dict[str, tuple[str, ...]] = {"bandwidth": ("alone_1block", "alone_full"),
                                                 "contention": ("fma_peak", "mem_peak")}


@dataclass(frozen=True)
class KernelComparison:
    """One kernel, measured against simulated (times relative to each run's first block)."""

    name: str
    blocks: int
    measured_start_s: float
    simulated_start_s: float
    measured_end_s: float
    simulated_end_s: float
    #: Fraction of blocks placed differently (sorted per-SM counts; 0 = same distribution).
    sm_distance: float
    #: SMs that ran at least one block, and the most blocks one SM ran.
    measured_sms_used: int = 0
    simulated_sms_used: int = 0
    measured_max_per_sm: int = 0
    simulated_max_per_sm: int = 0

    @property
    def start_error_s(self) -> float:
        return self.simulated_start_s - self.measured_start_s

    @property
    def end_error_s(self) -> float:
        return self.simulated_end_s - self.measured_end_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "blocks": self.blocks,
            "measured_start_s": self.measured_start_s,
            "simulated_start_s": self.simulated_start_s,
            "measured_end_s": self.measured_end_s, "simulated_end_s": self.simulated_end_s,
            "start_error_s": self.start_error_s, "end_error_s": self.end_error_s,
            "sm_distance": self.sm_distance,
            "measured_sms_used": self.measured_sms_used,
            "simulated_sms_used": self.simulated_sms_used,
            "measured_max_per_sm": self.measured_max_per_sm,
            "simulated_max_per_sm": self.simulated_max_per_sm,
        }


@dataclass(frozen=True)
class CaseComparison:
    """One replayed case."""

    experiment: str
    case: str
    measured_makespan_s: float
    simulated_makespan_s: float
    #: Spread (max - min) of the measured makespan over the repeats: the noise floor.
    measured_spread_s: float
    kernels: tuple[KernelComparison, ...]
    #: The case fed the replay's inputs, so agreement is by construction.
    calibration: bool = False
    note: str = ""
    #: A mechanism the case tests that the engine does not model yet ("" if none).
    pending: str = ""

    @property
    def makespan_error(self) -> float:
        """(simulated - measured) / measured."""
        return (self.simulated_makespan_s - self.measured_makespan_s) / self.measured_makespan_s

    @property
    def worst_edge_error(self) -> float | None:
        """Largest |start or end error| of any kernel, relative to the measured makespan
        (``None`` for cases compared on their span only)."""
        if not self.kernels:
            return None
        worst = max(max(abs(k.start_error_s), abs(k.end_error_s)) for k in self.kernels)
        return worst / self.measured_makespan_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "case": self.case, "note": self.note,
            "calibration": self.calibration, "pending": self.pending,
            "measured_makespan_s": self.measured_makespan_s,
            "simulated_makespan_s": self.simulated_makespan_s,
            "makespan_error": self.makespan_error,
            "measured_spread_s": self.measured_spread_s,
            "worst_edge_error": self.worst_edge_error,
            "kernels": [k.to_dict() for k in self.kernels],
        }


@dataclass(frozen=True)
class ScalarComparison:
    """A single measured number against the model's (occupancy, launch costs)."""

    experiment: str
    case: str
    quantity: str
    measured: float
    predicted: float

    @property
    def error(self) -> float:
        """(predicted - measured) / measured; absolute difference where measured is 0."""
        if self.measured == 0:
            return self.predicted - self.measured
        return (self.predicted - self.measured) / self.measured

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "case": self.case, "quantity": self.quantity,
                "measured": self.measured, "predicted": self.predicted, "error": self.error}


@dataclass(frozen=True)
class ReplayFailure:
    """A measured case the engine could not replay (the reason is a finding too)."""

    experiment: str
    case: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "case": self.case, "reason": self.reason}


@dataclass(frozen=True)
class ValidationReport:
    """Every comparison for one GPU's measured data."""

    gpu: str
    data_dir: str
    files: Mapping[str, str]
    missing: tuple[str, ...]
    cases: tuple[CaseComparison, ...] = ()
    scalars: tuple[ScalarComparison, ...] = ()
    failures: tuple[ReplayFailure, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: Per kernel of the contention and bandwidth cases, what the SM-sharing replay needs.
    replay_inputs: tuple[ReplayInput, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu, "data_dir": self.data_dir, "files": dict(self.files),
            "missing": list(self.missing), "provenance": dict(self.provenance),
            "cases": [c.to_dict() for c in self.cases],
            "scalars": [s.to_dict() for s in self.scalars],
            "failures": [f.to_dict() for f in self.failures],
            "replay_inputs": [i.to_dict() for i in self.replay_inputs],
        }


# ---------------------------------------------------------------------- finding data
def find_measured(data_dir: Path | None = None) -> dict[str, dict[str, Path]]:
    """``{gpu: {experiment: path}}`` for every result file under ``data_dir``."""
    root = default_data_dir() if data_dir is None else Path(data_dir)
    found: dict[str, dict[str, Path]] = {}
    if not root.is_dir():
        return found
    for gpu_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {e: gpu_dir / f"{e}.json" for e in EXPERIMENTS
                 if (gpu_dir / f"{e}.json").is_file()}
        if files:
            found[gpu_dir.name] = files
    return found


def load_measured(path: Path) -> dict[str, Any]:
    """Read and check one result file; errors name the file."""
    doc = read_data_file(path, "measured file")
    check_result(doc, where=str(path))
    return doc


def spec_for(doc: Mapping[str, Any]) -> GPUSpec:
    """The preset of the measured GPU with the SM count the device reported."""
    key = doc["gpu_key"]
    if key not in list_presets():
        raise GpusimError(f"measured GPU {doc['provenance'].get('gpu_name', key)!r} has no "
                          f"preset {key!r}; add gpu_models/data/gpus/{key}.toml to replay it")
    spec = load_gpu(key)
    sms = doc["provenance"]["device_properties"].get("multiProcessorCount")
    if isinstance(sms, int) and sms != spec.sm_count:
        spec = spec.replace(sm_count=sms)
    return spec


# ---------------------------------------------------------------------- replay
def _summary(case: Mapping[str, Any], kernel: str) -> Mapping[str, Any]:
    kernels: Mapping[str, Mapping[str, Any]] = case["detail"]["kernels"]
    return kernels[kernel]


def _launch(record: Mapping[str, Any], block_time_s: float, after: tuple[str, ...] = (),
            simt_share: float = 0.0) -> Launch:
    return Launch(name=record["name"], stream=record["stream"], grid=int(record["grid"]),
                  threads=int(record["threads"]), regs_per_thread=int(record["regs"]),
                  smem_per_block_B=int(record["smem_static_B"]) + int(record["smem_dynamic_B"]),
                  block_time_s=block_time_s, dram_bytes=float(record["dram_bytes"]),
                  after=after, kind="micro", sm_throughput={"simt": simt_share})


@dataclass(frozen=True)
class StreamCalibration:
    """Inputs of the streaming-kernel replay, from the bandwidth file's calibration cases."""

    block_time_s: float
    dram_bw_Bps: float


def stream_calibration(bandwidth_doc: Mapping[str, Any]) -> StreamCalibration:
    """Unloaded block time (``alone_1block``) and achieved bandwidth (``alone_full``)."""
    cases = {c["name"]: c for c in bandwidth_doc["cases"]}
    for name in CALIBRATION_CASES["bandwidth"]:
        if name not in cases:
            raise GpusimError(f"bandwidth data lack the calibration case {name!r}")
    one = _summary(cases["alone_1block"], "k0")
    full = cases["alone_full"]
    full_k = full["kernels"][0]
    span = _summary(full, "k0")["last_end_s"] - _summary(full, "k0")["first_start_s"]
    return StreamCalibration(block_time_s=float(one["block_time_s"]["median"]),
                             dram_bw_Bps=float(full_k["dram_bytes"]) / span)


def case_program(spec: GPUSpec, case: Mapping[str, Any],
                 stream_cal: StreamCalibration | None = None,
                 references: Mapping[str, Mapping[str, Any]] | None = None,
                 dram_bw_Bps: float | None = None,
                 physics: Mapping[str, ReplayInput] | None = None) -> Program:
    """The engine program that replays one measured timeline case.

    ``references``: the cases of the same file by name, for kernels that name the case where
    they ran alone; ``dram_bw_Bps``: the bandwidth their file's full-wave copy reached;
    ``physics``: the case's kernels by name that have a :class:`ReplayInput` with an SM
    share (FMA, spin and sleep kernels with an unimpeded case): each replays with its
    unimpeded block time and that share of the FP32 pipe, so the engine's SM sharing itself
    must reproduce the kernel at its own grid and beside another (docs/model.md §6.7)."""
    streams = tuple(StreamDef(s["name"], priority=int(s["cuda_priority"]))
                    for s in case["streams"])
    if case.get("connections"):
        spec = spec.replace(connections=int(case["connections"]))
    kernels: list[Launch] = []
    gate = case.get("gate")
    if gate:
        kernels.append(_launch(gate, _summary(case, "gate")["block_time_s"]["median"]))
    copies = [r for r in case["kernels"] if r["kernel"] == "stream"]
    if copies and all(r.get("reference") for r in copies) and dram_bw_Bps:
        spec = spec.replace(dram_bw_Bps=dram_bw_Bps)
    elif copies:
        if stream_cal is None:
            raise GpusimError(f"case {case['name']!r}: a streaming kernel needs the "
                              "bandwidth calibration cases")
        spec = spec.replace(dram_bw_Bps=stream_cal.dram_bw_Bps)
    waited: set[str] = {streams[0].name}
    for record in case["kernels"]:
        after: tuple[str, ...] = ()
        if gate and record["stream"] not in waited:  # each other stream waited once
            after = ("gate",)
            waited.add(record["stream"])
        physical = (physics or {}).get(record["name"])
        if physical is not None and physical.sm_throughput is not None:
            # A measured share a hair over 1 is noise in the two block times it divides.
            kernels.append(_launch(record, physical.unimpeded_block_time_s, after,
                                   simt_share=min(physical.sm_throughput, 1.0)))
            continue
        block_time = block_time_s(case, record, references or {})
        if block_time is None and record["kernel"] == "fma":
            raise GpusimError(f"case {case['name']!r} kernel {record['name']!r}: an FMA "
                              "kernel is replayed from its reference case, and names none")
        if block_time is None and record["kernel"] == "stream":
            block_time = stream_cal.block_time_s  # type: ignore[union-attr]
        elif block_time is None:  # spin and sleep blocks last what they were asked
            block_time = _summary(case, record["name"])["block_time_s"]["median"]
        kernels.append(_launch(record, block_time, after))
    launch_overhead = 0.0 if gate else float(case["host_launch_s"]["median"])
    return Program(gpu=spec, streams=streams, kernels=tuple(kernels),
                   launch_overhead_s=launch_overhead, event_overhead_s=0.0)


def _sorted_counts(counts: Iterable[int], sm_count: int) -> list[int]:
    values = sorted((int(c) for c in counts), reverse=True)
    return values + [0] * (sm_count - len(values))


def sm_distance(measured: Sequence[int], simulated: Sequence[int], sm_count: int) -> float:
    """Fraction of blocks placed differently between two per-SM count lists, compared as
    sorted distributions (0: same shape; 1: disjoint)."""
    a = _sorted_counts(measured, sm_count)
    b = _sorted_counts(simulated, sm_count)
    total = max(sum(a), sum(b), 1)
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / (2 * total)


def compare_case(experiment: str, case: Mapping[str, Any], result: SimResult,
                 sm_count: int, predicted_alone: bool = False) -> CaseComparison:
    """Measured against simulated for one case, both on first-block-aligned clocks.

    ``predicted_alone``: a kernel-alone case whose block times the replay took from another
    case (its unimpeded one): a prediction of SM sharing, not calibration.

    A gated case is compared from the gate's end on both sides (its kernels cannot start
    before it): the gate's own length, fixed by construction, would otherwise dilute every
    error."""
    detail = case["detail"]
    gated = bool(case.get("gate"))
    sim_t0 = min(k.start_s for k in result.kernels)
    meas_origin = float(detail["kernels"]["gate"]["last_end_s"]) if gated else 0.0
    sim_origin = sim_t0
    if gated:
        sim_origin = next(k.end_s for k in result.kernels if k.name == "gate")
    kernels = []
    for record in result.kernels:
        if gated and record.name == "gate":
            continue
        measured = detail["kernels"][record.name]
        measured_counts = [int(c) for _, c in measured["blocks_per_sm"]]
        kernels.append(KernelComparison(
            name=record.name, blocks=record.blocks,
            measured_start_s=measured["first_start_s"] - meas_origin,
            simulated_start_s=record.start_s - sim_origin,
            measured_end_s=measured["last_end_s"] - meas_origin,
            simulated_end_s=record.end_s - sim_origin,
            sm_distance=sm_distance(measured_counts, record.sm_blocks, sm_count),
            measured_sms_used=sum(1 for c in measured_counts if c),
            simulated_sms_used=sum(1 for c in record.sm_blocks if c),
            measured_max_per_sm=max(measured_counts, default=0),
            simulated_max_per_sm=max(record.sm_blocks, default=0),
        ))
    spans = [r["makespan_s"] - (r["kernels"]["gate"][1] if gated else 0.0)
             for r in case["runs"]]
    return CaseComparison(
        experiment=experiment, case=case["name"],
        measured_makespan_s=detail["makespan_s"] - meas_origin,
        simulated_makespan_s=max(k.end_s for k in result.kernels) - sim_origin,
        measured_spread_s=max(spans) - min(spans), kernels=tuple(kernels),
        calibration=(case["name"] in CALIBRATION_CASES.get(experiment, ())
                     or (case.get("mechanism") == "alone" and not predicted_alone)),
        note=case.get("note", ""), pending=pending(case),
    )


def occupancy_scalars(spec: GPUSpec, doc: Mapping[str, Any]) -> list[ScalarComparison]:
    """The calculator against CUDA's occupancy API and against the residency seen."""
    out = []
    for c in doc["cases"]:
        calc = occupancy(spec, int(c["threads"]), int(c["regs"]),
                         int(c["smem_static_B"]) + int(c["smem_dynamic_B"])).blocks_per_sm
        out.append(ScalarComparison("occupancy", c["name"], "blocks_per_sm vs CUDA API",
                                    float(c["cuda_api_blocks_per_sm"]), float(calc)))
        if c.get("resident_per_sm") is not None:
            out.append(ScalarComparison("occupancy", c["name"], "blocks_per_sm vs resident",
                                        float(c["resident_per_sm"]), float(calc)))
    return out


def _median_of_runs(case: Mapping[str, Any], key: str, stat: str | None = None) -> float:
    values = [r[key][stat] if stat else r[key] for r in case["runs"]]
    return float(statistics.median(values))


def launch_comparisons(spec: GPUSpec, doc: Mapping[str, Any], mode: str
                       ) -> tuple[list[CaseComparison], list[ScalarComparison]]:
    """Chains of one-block kernels replayed with the measured host cost per launch."""
    cases = {c["name"]: c for c in doc["cases"]}
    host = float(statistics.median(cases["host_eager"]["host_s_per_launch"]))
    scalars = [ScalarComparison("launch_overhead", "host_eager", "host s per launch vs spec",
                                host, spec.launch_overhead_s)]
    comparisons = []
    for name in ("chain_eager", "chain_gated", "graph"):
        if name not in cases:
            continue
        case = cases[name]
        # Host-paced chains replay with their own measured host time per launch; gated and
        # graph chains were enqueued before the GPU could start them.
        overhead = _median_of_runs(case, "host_s_per_launch") if name == "chain_eager" else 0.0
        m = int(case["launches"])
        kernel_s = _median_of_runs(case, "kernel_s", "median")
        kernels = tuple(Launch(f"k{i}", "s0", 1, int(case["threads"]), int(case["regs"]),
                               int(case["smem_static_B"]), kernel_s, kind="micro")
                        for i in range(m))
        program = Program(gpu=spec, streams=(StreamDef("s0"),), kernels=kernels,
                          launch_overhead_s=overhead, event_overhead_s=0.0)
        result = simulate(program, mode=mode)
        sim_span = max(k.end_s for k in result.kernels) - min(k.start_s for k in result.kernels)
        spans = [r["span_s"] for r in case["runs"]]
        comparisons.append(CaseComparison(
            experiment="launch_overhead", case=name,
            measured_makespan_s=float(statistics.median(spans)),
            simulated_makespan_s=sim_span, measured_spread_s=max(spans) - min(spans),
            kernels=(), note=f"{m} one-block kernels, host overhead {overhead * US_PER_S:.2f} us"))
        scalars.append(ScalarComparison("launch_overhead", name, "device gap s (engine: 0)",
                                        _median_of_runs(case, "gap_s", "median"), 0.0))
    return comparisons, scalars


def validate_gpu(gpu: str, files: Mapping[str, Path], data_dir: Path,
                 mode: str = "grouped") -> ValidationReport:
    """Replay and compare every measured file of one GPU."""
    docs = {e: load_measured(p) for e, p in files.items()}
    first = next(iter(docs.values()))
    spec = spec_for(first)
    stream_cal = stream_calibration(docs["bandwidth"]) if "bandwidth" in docs else None
    cases: list[CaseComparison] = []
    scalars: list[ScalarComparison] = []
    failures: list[ReplayFailure] = []
    inputs: list[ReplayInput] = []
    for experiment, doc in docs.items():
        if experiment in TIMELINE_EXPERIMENTS:
            references = {c["name"]: c for c in doc["cases"]}
            bandwidth = dram_bandwidth_Bps(experiment, doc)
            doc_inputs = replay_inputs(doc)
            inputs.extend(doc_inputs)
            for case in doc["cases"]:
                physics = {i.kernel: i for i in doc_inputs if i.case == case["name"]}
                try:
                    program = case_program(spec, case, stream_cal, references, bandwidth,
                                           physics)
                    result = simulate(program, mode=mode)
                except GpusimError as exc:  # e.g. a shape the calculator says cannot fit
                    failures.append(ReplayFailure(experiment, case["name"], str(exc)))
                    continue
                shared = {k for k, i in physics.items() if i.sm_throughput is not None}
                predicted_alone = any(r["name"] in shared and r["unimpeded"] != case["name"]
                                      for r in case["kernels"])
                cases.append(compare_case(experiment, case, result, spec.sm_count,
                                          predicted_alone))
        elif experiment == "occupancy":
            scalars.extend(occupancy_scalars(spec, doc))
        elif experiment == "launch_overhead":
            more_cases, more_scalars = launch_comparisons(spec, doc, mode)
            cases.extend(more_cases)
            scalars.extend(more_scalars)
    prov = first["provenance"]
    return ValidationReport(
        gpu=gpu, data_dir=str(data_dir), files={e: str(p) for e, p in files.items()},
        missing=tuple(e for e in EXPERIMENTS if e not in files), cases=tuple(cases),
        scalars=tuple(scalars), failures=tuple(failures), replay_inputs=tuple(inputs),
        provenance={k: prov.get(k) for k in ("gpu_name", "driver_version", "cupy_version",
                                              "date_utc")},
    )


def validate(data_dir: Path | None = None, gpus: Sequence[str] = (),
             mode: str = "grouped") -> list[ValidationReport]:
    """Reports for every GPU with measured data under ``data_dir`` (or only ``gpus``)."""
    root = default_data_dir() if data_dir is None else Path(data_dir)
    found = find_measured(root)
    unknown = [g for g in gpus if g not in found]
    if unknown:
        raise GpusimError(f"no measured data for {', '.join(unknown)} under {root}; "
                          f"found: {', '.join(found) or '(none)'}")
    chosen = list(gpus) or list(found)
    return [validate_gpu(g, found[g], root, mode) for g in chosen]
