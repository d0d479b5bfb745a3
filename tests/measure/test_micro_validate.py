"""``sim.measure.validate`` / ``gpusim validate``: replaying campaign files in the engine.

Two kinds of test:

* on synthetic result files this test writes into pytest's tmp folders (block logs made up
  from an ideal wave model, labelled synthetic, never under gpu_models/data): the replay, the
  alignment of the clocks and the error arithmetic;
* on the committed measurements (``sim/measure/data/micro/<gpu>/``), when there are any:
  the engine held to the real GPU within the tolerances stated below. Without committed
  data those tests skip and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_models.presets import load_preset
from sim.cli import main as gpusim
from sim.measure.micro import campaign, provenance
from sim.measure.micro.blocklog import BlockLog, summarize_run
from sim.measure.micro.schema import default_data_dir, timeline_case
from sim.measure.validate import (
    case_program,
    find_measured,
    sm_distance,
    stream_calibration,
    validate,
)

T0 = 1_700_000_000_000_000_000
SMS = 132


def _prov() -> dict[str, Any]:
    return provenance.build(
        gpu_name="NVIDIA H100 80GB HBM3", driver_version="synthetic", cuda_driver_api_version=0,
        cuda_runtime_version=0, cupy_version="synthetic", nvrtc_version=(0,),
        props={"multiProcessorCount": SMS}, argv=["synthetic test data"],
        script="tests/gpu_models/test_micro_validate.py", env={}, date_utc="synthetic")


def _log(grid: int, per_sm: int, block_ns: int, t0: int = T0) -> BlockLog:
    i = np.arange(grid)
    start = t0 + (i // (SMS * per_sm)) * block_ns
    raw = np.stack([start, start + block_ns, i % SMS], axis=1).astype(np.uint64)
    return BlockLog.from_raw(raw.reshape(-1))


def _kernel(name: str, stream: str, grid: int, threads: int = 256, regs: int = 12,
            kind: str = "spin", dram_bytes: int = 0, ilp: int = 0, iters: int = 0,
            reference: str = "", unimpeded: str = "") -> dict[str, Any]:
    elems = 0 if kind in ("spin", "fma") else 65536
    return {"name": name, "stream": stream, "kernel": kind,
            "function": f"fma_ilp{ilp}" if kind == "fma" else f"{kind}_kernel", "grid": grid,
            "threads": threads, "variant": "base", "regs": regs, "smem_static_B": 0,
            "smem_dynamic_B": 0, "local_B": 0, "spin_ns": 100_000 if kind == "spin" else 0,
            "elems_per_block": elems, "ilp": ilp, "iters": iters,
            "flop_per_block": 2 * ilp * iters * threads,
            "dram_bytes_per_block": 32 * elems, "dram_bytes": dram_bytes,
            "reference": reference, "unimpeded": unimpeded}


def _case(name: str, kernels: list[dict[str, Any]], logs: dict[str, BlockLog],
          streams: tuple[str, ...] = ("s0",), gate: dict[str, Any] | None = None,
          connections: int | None = None, mechanism: str = "") -> dict[str, Any]:
    run = summarize_run(logs)
    return timeline_case(
        name=name, note="synthetic", gate=gate, connections=connections,
        streams=[{"name": s, "priority": "low", "cuda_priority": 0} for s in streams],
        kernels=kernels, host_launch_s={"median": 0.0}, host_enqueue_s=[0.0],
        runs=[run, run], mechanism=mechanism)


def _write(root: Path, experiment: str, cases: list[dict[str, Any]]) -> Path:
    doc = campaign.document(experiment, "h100", _prov(),
                            campaign.Outcome({"synthetic": True}, cases, False), quick=True)
    return campaign.write_document(doc, root)


def test_no_data_is_said_not_simulated(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    assert gpusim(["validate", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no measured data" in out and "Nothing was simulated" in out
    assert gpusim(["validate", "--data", str(tmp_path), "--require-data"]) == 2
    capsys.readouterr()
    assert gpusim(["validate", "--data", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reports"] == []


def test_wave_staircase_replays_exactly(tmp_path: Path) -> None:
    # 2.5 waves of 256-thread blocks (8 per SM on an H100), 100 us each: 300 us.
    grid = int(2.5 * SMS * 8)
    _write(tmp_path, "waves", [_case("t256", [_kernel("k", "s0", grid)],
                                     {"k": _log(grid, 8, 100_000)})])
    (report,) = validate(tmp_path)
    assert report.missing == ("contention", "concurrency", "queues", "bandwidth",
                              "occupancy", "launch_overhead")
    (case,) = report.cases
    assert case.measured_makespan_s == pytest.approx(300e-6)
    assert case.simulated_makespan_s == pytest.approx(300e-6)
    assert abs(case.makespan_error) < 1e-9
    (k,) = case.kernels
    assert k.sm_distance == pytest.approx(0.0)


def test_errors_are_reported_not_hidden(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Pretend the GPU held only 4 blocks per SM (a synthetic disagreement): 5 waves measured
    # where the engine (8 per SM) gives 3, so the makespan error is 300/500 - 1 = -40 %.
    grid = int(2.5 * SMS * 8)
    _write(tmp_path, "waves", [_case("t256", [_kernel("k", "s0", grid)],
                                     {"k": _log(grid, 4, 100_000)})])
    (report,) = validate(tmp_path)
    (case,) = report.cases
    assert case.makespan_error == pytest.approx(-0.4)
    assert case.worst_edge_error == pytest.approx(0.4)
    assert gpusim(["validate", "--data", str(tmp_path), "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "-40.0" in out and "missing experiments" in out


def test_gated_case_program(tmp_path: Path) -> None:
    gate = _kernel("gate", "s0", 1, threads=32)
    kernels = [_kernel("a", "s0", 1, threads=64), _kernel("b", "s1", 1, threads=64),
               _kernel("c", "s1", 1, threads=64)]
    logs = {"gate": _log(1, 1, 5_000_000),
            "a": _log(1, 1, 100_000, T0 + 5_000_000), "b": _log(1, 1, 100_000, T0 + 5_000_000),
            "c": _log(1, 1, 100_000, T0 + 5_100_000)}
    case = _case("c8_depth_s2", kernels, logs, streams=("s0", "s1"), gate=gate, connections=8)
    program = case_program(load_preset("h100"), case)
    names = [k.name for k in program.kernels]
    assert names == ["gate", "a", "b", "c"]
    assert program.kernel("b").after == ("gate",)  # the other stream waited once
    assert program.kernel("c").after == ()
    assert program.launch_overhead == 0.0
    assert program.gpu.connections == 8
    assert program.kernel("gate").block_time_s == pytest.approx(5e-3)
    _write(tmp_path, "queues", [case])
    (report,) = validate(tmp_path)
    (cmp,) = report.cases
    # Compared from the gate's end (5 ms by construction): a, b in parallel, then c.
    assert cmp.measured_makespan_s == pytest.approx(0.2e-3)
    assert cmp.simulated_makespan_s == pytest.approx(0.2e-3)
    assert cmp.makespan_error == pytest.approx(0.0, abs=1e-9)
    assert [k.name for k in cmp.kernels] == ["a", "b", "c"]
    assert cmp.kernels[2].measured_start_s == pytest.approx(0.1e-3)


def test_stream_calibration_from_bandwidth_cases(tmp_path: Path) -> None:
    per_block = 65536 * 32
    full_grid = SMS * 8
    cases = [
        _case("alone_1block", [_kernel("k0", "s0", 1, kind="stream", dram_bytes=per_block)],
              {"k0": _log(1, 1, 20_000)}),
        _case("alone_full", [_kernel("k0", "s0", full_grid, kind="stream",
                                     dram_bytes=per_block * full_grid)],
              {"k0": _log(full_grid, 8, 700_000)}),
    ]
    path = _write(tmp_path, "bandwidth", cases)
    cal = stream_calibration(json.loads(path.read_text()))
    assert cal.block_time_s == pytest.approx(20e-6)
    assert cal.dram_bw_Bps == pytest.approx(per_block * full_grid / 700e-6)
    (report,) = validate(tmp_path)
    assert all(c.calibration for c in report.cases)


def test_sm_distance() -> None:
    assert sm_distance([2, 2, 0], [0, 2, 2], 3) == 0.0  # numbering does not matter
    assert sm_distance([4, 0], [2, 2], 2) == pytest.approx(0.5)
    assert sm_distance([3], [0, 0, 3], 3) == 0.0


# ---------------------------------------------------------------------- committed data
COMMITTED = find_measured(default_data_dir())
#: Tolerances the engine is held to on real measurements. They are first targets set before
#: any data existed; a failure is a finding to report and explain, not to loosen silently.
#: Issue 19: two-kernel contention within 10 %; waves, leftover, priorities and queues within
#: 5 %. Cases testing a mechanism the engine does not model yet (``pending``) are reported by
#: ``gpusim validate`` and not held to these until that mechanism lands.
TOLERANCE = {
    "contention": 0.10,
    "waves": 0.05,        # |makespan error| of each grid size
    "concurrency": 0.05,
    "queues": 0.05,       # measured from the gate's end
    "bandwidth": 0.30,    # fluid bandwidth sharing is the coarsest mechanism
}


@pytest.mark.skipif(not COMMITTED, reason="no measured campaign data committed under "
                    "sim/measure/data/micro (see sim/measure/micro/README.md)")
@pytest.mark.parametrize("gpu", sorted(COMMITTED))
def test_engine_matches_committed_measurements(gpu: str) -> None:
    (report,) = validate(gpus=[gpu])
    failures = [f"{f.experiment}/{f.case}: not replayed: {f.reason}" for f in report.failures]
    for case in report.cases:
        limit = TOLERANCE.get(case.experiment)
        if limit is None or case.calibration or case.pending:
            continue
        if abs(case.makespan_error) > limit:
            failures.append(f"{case.experiment}/{case.case}: makespan "
                            f"{100 * case.makespan_error:+.1f}% (limit {100 * limit:.0f}%)")
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not COMMITTED, reason="no measured campaign data committed")
@pytest.mark.parametrize("gpu", sorted(COMMITTED))
def test_calculator_matches_cuda_occupancy_api(gpu: str) -> None:
    if "occupancy" not in COMMITTED[gpu]:
        pytest.skip(f"{gpu}: no occupancy data")
    (report,) = validate(gpus=[gpu])
    wrong = [s.case for s in report.scalars
             if s.quantity == "blocks_per_sm vs CUDA API" and s.measured != s.predicted]
    assert not wrong, f"calculator differs from CUDA's occupancy API for {wrong}"


def test_per_sm_counts_are_reported(tmp_path: Path) -> None:
    # Half a wave, 4 blocks on each of the 132 SMs in both the synthetic log and the engine.
    grid = SMS * 4
    _write(tmp_path, "waves", [_case("half", [_kernel("k", "s0", grid)],
                                     {"k": _log(grid, 8, 100_000)})])
    (report,) = validate(tmp_path)
    (k,) = report.cases[0].kernels
    assert (k.measured_sms_used, k.measured_max_per_sm) == (SMS, 4)
    assert k.simulated_sms_used == SMS and k.simulated_max_per_sm == 4
    assert report.to_dict()["cases"][0]["kernels"][0]["simulated_sms_used"] == SMS


def test_a_case_the_engine_cannot_replay_is_reported(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # A synthetic record claiming 300 registers per thread: the calculator says it can never
    # run, so the replay fails; the report must say so and go on with the other cases.
    good = _case("ok", [_kernel("k", "s0", SMS)], {"k": _log(SMS, 8, 100_000)})
    bad = _case("bad", [_kernel("k", "s0", SMS, regs=300)], {"k": _log(SMS, 8, 100_000)})
    _write(tmp_path, "waves", [good, bad])
    (report,) = validate(tmp_path)
    assert [c.case for c in report.cases] == ["ok"]
    (failure,) = report.failures
    assert failure.case == "bad" and "registers" in failure.reason
    assert gpusim(["validate", "--data", str(tmp_path)]) == 0
    assert "NOT REPLAYED waves/bad" in capsys.readouterr().out


# ---------------------------------------------------------------------- contention replay
def _fma_log(grid: int, block_ns: int, t0: int = T0) -> BlockLog:
    return _log(grid, 1, block_ns, t0)


def _contention_doc_cases() -> list[dict[str, Any]]:
    """Synthetic contention cases: one saturating FMA block per SM takes 100 us alone, two
    beside each other take 200 us (the pipe shared), and a timer-spin beside one costs it
    nothing. The peak case: two such blocks per SM, 200 us each, 2 x 2 x 4 x 1000 x 256 FLOP
    per SM in 200 us = 20.48 GFLOP/s per SM."""
    fma = {"kind": "fma", "ilp": 4, "iters": 1000, "threads": 256}
    gate = _kernel("gate", "s0", 1, threads=32)
    alone = "alone_fma4_t256_g132"
    pair_kernels = [_kernel("k0", "s0", SMS, **fma, reference=alone, unimpeded=alone),
                    _kernel("k1", "s1", SMS, **fma, reference=alone, unimpeded=alone)]
    gated_t0 = T0 + 200_000
    return [
        _case("fma_peak", [_kernel("k0", "s0", 2 * SMS, **fma, reference="fma_peak")],
              {"k0": _log(2 * SMS, 2, 200_000)}, mechanism="alone"),
        _case(alone, [_kernel("k0", "s0", SMS, **fma, reference=alone, unimpeded=alone)],
              {"k0": _fma_log(SMS, 100_000)}, mechanism="alone"),
        _case("fma_full_full", pair_kernels,
              {"gate": _log(1, 1, 200_000), "k0": _fma_log(SMS, 200_000, gated_t0),
               "k1": _fma_log(SMS, 200_000, gated_t0)},
              streams=("s0", "s1"), gate=gate, mechanism="sm_throughput"),
        _case("mix_fma_spin",
              [pair_kernels[0], _kernel("k1", "s1", SMS, reference="alone_spin_t256_g132",
                                       unimpeded="alone_spin_t256_g132")],
              {"gate": _log(1, 1, 200_000), "k0": _fma_log(SMS, 100_000, gated_t0),
               "k1": _fma_log(SMS, 100_000, gated_t0)},
              streams=("s0", "s1"), gate=gate, mechanism="mixed"),
        _case("alone_spin_t256_g132", [_kernel("k0", "s0", SMS)], {"k0": _log(SMS, 1, 100_000)},
              mechanism="alone"),
        # The same FMA kernel alone at two blocks per SM: 200 us, the pipe shared with itself.
        _case("alone_fma4_t256_g264",
              [_kernel("k0", "s0", 2 * SMS, **fma, reference="alone_fma4_t256_g264",
                       unimpeded=alone)],
              {"k0": _log(2 * SMS, 2, 200_000)}, mechanism="alone"),
    ]


def test_contention_pairs_replay_from_their_alone_cases(tmp_path: Path) -> None:
    _write(tmp_path, "contention", _contention_doc_cases())
    (report,) = validate(tmp_path)
    assert not report.failures
    cases = {c.case: c for c in report.cases}
    # Alone and peak cases feed the replay: calibration, agreement by construction.
    assert cases["fma_peak"].calibration and cases["alone_fma4_t256_g132"].calibration
    # Each FMA block alone takes 100 us and asks for the whole FP32 pipe (share 1.0): two of
    # them on every SM each get half, so the pair ends 200 us after the gate, as measured.
    pair = cases["fma_full_full"]
    assert (pair.measured_makespan_s, pair.simulated_makespan_s) == (
        pytest.approx(200e-6), pytest.approx(200e-6))
    assert pair.pending == "" and not pair.calibration
    # A timer-spin asks nothing of the pipe (share 0): the FMA blocks beside it keep 100 us.
    mixed = cases["mix_fma_spin"]
    assert mixed.simulated_makespan_s == pytest.approx(100e-6)
    assert mixed.makespan_error == pytest.approx(0.0, abs=1e-9) and mixed.pending == ""
    # A kernel alone at its own grid, replayed from its one-block-per-SM case, is a
    # prediction of SM sharing (two of its blocks per SM, half the pipe each), not calibration.
    own = cases["alone_fma4_t256_g264"]
    assert own.simulated_makespan_s == pytest.approx(200e-6) and not own.calibration


def test_contention_replay_inputs(tmp_path: Path) -> None:
    _write(tmp_path, "contention", _contention_doc_cases())
    (report,) = validate(tmp_path)
    inputs = {(i.case, i.kernel): i for i in report.replay_inputs}
    k0 = inputs[("fma_full_full", "k0")]
    # 2 x 4 x 1000 x 256 FLOP in 100 us alone, over the peak of 20.48 GFLOP/s per SM: 1.0.
    assert k0.flop_per_block == 2_048_000
    assert k0.unimpeded_block_time_s == pytest.approx(100e-6)
    assert k0.sm_throughput == pytest.approx(1.0)
    spin = inputs[("mix_fma_spin", "k1")]
    assert spin.sm_throughput == 0.0
    assert ("fma_peak", "k0") not in inputs  # names no unimpeded case: a calibration only
    assert report.to_dict()["replay_inputs"][0]["function"] == "fma_ilp4"


def test_a_pair_whose_reference_is_missing_is_reported(tmp_path: Path) -> None:
    cases = [c for c in _contention_doc_cases() if c["name"] != "alone_fma4_t256_g132"]
    _write(tmp_path, "contention", cases)
    (report,) = validate(tmp_path)
    reasons = {f.case: f.reason for f in report.failures}
    assert "was not measured" in reasons["fma_full_full"]
