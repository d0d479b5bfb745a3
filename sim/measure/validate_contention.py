"""Replaying the contention and bandwidth-vs-occupancy cases: which inputs, from which cases.

The device campaign's contention experiment (``sim/measure/micro/plans.py``,
``contention_plan``) runs pairs of kernels whose blocks share SMs, and every kernel of a pair
also alone: at the pair's grid (``reference``) and with one block per SM (``unimpeded``).
Two replays follow from that, and this module holds what both read from the data:

* **the physics replay** (:func:`replay_inputs`): each FMA, spin or sleep kernel's
  unimpeded block time (alone, one block per SM) and its demand on the SM
  (``sm_throughput``: its FLOP rate alone over the SM's peak FP32 rate measured by
  ``fma_peak``; 0 for the latency-bound spin and sleep), so the engine's SM sharing must
  reproduce both the kernel alone at its own grid (several of its blocks per SM) and beside
  another kernel. ``gpusim validate --json`` lists these inputs;
* **copies** (:func:`block_time_s`): each kernel's block time is the median block time of
  its ``reference`` case (the same kernel alone, same grid), so a kernel alone keeps its
  measured time and what a pair adds is the engine's prediction of DRAM sharing.

Pure data handling (no engine): the validation (:mod:`sim.measure.validate`) builds and runs
the programs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gpu_models.errors import GpusimError

#: Mechanisms the engine does not model, with what they are: a case testing one is replayed
#: and reported, but not held to a tolerance. Empty since SM throughput sharing (issue 14)
#: replays the ``sm_throughput`` cases; a campaign experiment that tests a mechanism the
#: engine lacks (e.g. issue-slot contention) is listed here until the engine has it.
PENDING_MECHANISMS: dict[str, str] = {}
#: Calibration cases of each experiment: the replay takes inputs from them.
PEAK_FMA_CASE = "fma_peak"
PEAK_DRAM_CASES: dict[str, str] = {"contention": "mem_peak", "bandwidth": "alone_full"}


def pending(case: Mapping[str, Any]) -> str:
    """The mechanism of ``case`` the engine does not model yet, or ""."""
    mechanism = str(case.get("mechanism", ""))
    return mechanism if mechanism in PENDING_MECHANISMS else ""


def _k0(case: Mapping[str, Any]) -> Mapping[str, Any]:
    kernels: Mapping[str, Mapping[str, Any]] = case["detail"]["kernels"]
    return kernels["k0"]


def reference_block_time_s(cases: Mapping[str, Mapping[str, Any]], name: str,
                           where: str) -> float:
    """Median block time of the one kernel of the alone case ``name``."""
    if name not in cases:
        raise GpusimError(f"{where}: its reference case {name!r} was not measured (the run "
                          "was cut short?)")
    return float(_k0(cases[name])["block_time_s"]["median"])


def block_time_s(case: Mapping[str, Any], record: Mapping[str, Any],
                 cases: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The block time today's replay gives a kernel of ``case``: its reference case's median
    (``None`` when the record names no reference: the caller's older rules apply)."""
    if not record.get("reference"):
        return None
    return reference_block_time_s(cases, str(record["reference"]),
                                  f"case {case['name']!r} kernel {record['name']!r}")


def dram_bandwidth_Bps(experiment: str, doc: Mapping[str, Any]) -> float | None:
    """The DRAM bandwidth a full wave of copies reached in the experiment's calibration case
    (``None`` where there is none)."""
    name = PEAK_DRAM_CASES.get(experiment)
    case = next((c for c in doc["cases"] if c["name"] == name), None)
    if case is None:
        return None
    k0 = _k0(case)
    span = float(k0["last_end_s"]) - float(k0["first_start_s"])
    return float(case["kernels"][0]["dram_bytes"]) / span if span > 0 else None


def peak_fp32_per_sm(doc: Mapping[str, Any]) -> float | None:
    """FLOP/s of one SM at the measured peak: ``fma_peak``'s blocks per SM x FLOPs per block
    over its median block time (``None`` without that case)."""
    case = next((c for c in doc["cases"] if c["name"] == PEAK_FMA_CASE), None)
    if case is None:
        return None
    k0 = _k0(case)
    record = case["kernels"][0]
    return (float(record["flop_per_block"]) * int(k0["max_resident_per_sm"])
            / float(k0["block_time_s"]["median"]))


@dataclass(frozen=True)
class ReplayInput:
    """What the physics replay needs of one kernel of a measured case."""

    experiment: str
    case: str
    kernel: str
    mechanism: str
    function: str
    grid: int
    threads: int
    regs: int
    smem_B: int
    ilp: int
    flop_per_block: int
    dram_bytes_per_block: int
    #: Median block time in the kernel's reference case (alone, same grid).
    alone_block_time_s: float
    #: Median block time alone with one block per SM: the block's unimpeded time.
    unimpeded_block_time_s: float
    #: FMA kernels: FLOP rate alone / the SM's peak FP32 rate; 0 for spin and sleep (pure
    #: latency); None for copies (their demand is on DRAM) or without a peak measurement.
    sm_throughput: float | None
    #: Copies: bytes per second one block moves alone (None otherwise).
    dram_Bps_per_block: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_inputs(doc: Mapping[str, Any]) -> list[ReplayInput]:
    """Every kernel of ``doc`` (a contention or bandwidth result) that names its reference
    cases, with the inputs the physics replay takes; kernels whose references were not
    measured are left out."""
    cases = {c["name"]: c for c in doc["cases"]}
    peak = peak_fp32_per_sm(doc)
    out = []
    for case in doc["cases"]:
        for record in case["kernels"]:
            if not record.get("reference") or not record.get("unimpeded"):
                continue
            where = f"case {case['name']!r} kernel {record['name']!r}"
            try:
                alone = reference_block_time_s(cases, record["reference"], where)
                unimpeded = reference_block_time_s(cases, record["unimpeded"], where)
            except GpusimError:
                continue
            kind = record["kernel"]
            share: float | None = None
            if kind in ("spin", "sleep"):
                share = 0.0
            elif kind == "fma" and peak:
                share = float(record["flop_per_block"]) / unimpeded / peak
            dram = (float(record["dram_bytes_per_block"]) / unimpeded
                    if kind == "stream" else None)
            out.append(ReplayInput(
                experiment=str(doc["experiment"]), case=case["name"], kernel=record["name"],
                mechanism=str(case.get("mechanism", "")), function=str(record["function"]),
                grid=int(record["grid"]), threads=int(record["threads"]),
                regs=int(record["regs"]),
                smem_B=int(record["smem_static_B"]) + int(record["smem_dynamic_B"]),
                ilp=int(record["ilp"]), flop_per_block=int(record["flop_per_block"]),
                dram_bytes_per_block=int(record["dram_bytes_per_block"]),
                alone_block_time_s=alone, unimpeded_block_time_s=unimpeded,
                sm_throughput=share, dram_Bps_per_block=dram))
    return out
