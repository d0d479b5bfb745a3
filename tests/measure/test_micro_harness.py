"""The campaign's CuPy code, run end to end against a stand-in for CuPy (no GPU here).

``FakeCupy`` (``fake_cupy.py``) implements the few CuPy calls the harness makes and runs the
kernels on a synthetic GPU whose physics it states (leftover dispatch, proportional FP32
sharing per SM, Little's-law DRAM rates). The numbers are synthetic (they test plumbing and
analysis, not GPUs) and only ever land in pytest's tmp folders. What this catches: wrong
call sequences, bad argument layouts, files that fail the schema or the device tool's
return limits, a campaign that cannot be replayed by ``sim.measure.validate``, and an
analysis that does not recover the physics it was fed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.measure.micro import campaign, packing, plans, provenance, steps
from sim.measure.micro.harness import Gpu
from sim.measure.micro.schema import EXPERIMENTS, check_result

sys.path.insert(0, str(Path(__file__).parent))
from fake_cupy import SPEC as _SPEC
from fake_cupy import FakeCupy, fma_share


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCupy]:
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake.cuda)
    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    monkeypatch.setattr(provenance, "nvidia_smi", lambda fields: {})
    yield fake


def _run_child_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for the queue experiment's child processes (they would import real CuPy)."""
    def fake_run(cmd: list[str], env: dict[str, str], check: bool, timeout: float) -> Any:
        args = cmd[cmd.index("queues-child") + 1:]
        monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", env["CUDA_DEVICE_MAX_CONNECTIONS"])
        assert campaign.main(["queues-child", *args]) == 0
        monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)  # the campaign's call of it


MICRO_STEPS = list(EXPERIMENTS)


def _micro_files(out: Path, into: Path) -> dict[str, Path]:
    """Unpack ``out/micro.tar.gz`` into ``into``; ``{name: path}`` of what it held."""
    files = packing.unpack(out / packing.MICRO_ARCHIVE, into)
    return {str(f.relative_to(into)): f for f in files}


@pytest.fixture(scope="module")
def quick_pass(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One quick pass of every block-level step on the stand-in: (output folder, the
    unpacked data folder). Shared by the tests below: it takes a few seconds."""
    mp = pytest.MonkeyPatch()
    fake = FakeCupy()
    mp.setitem(sys.modules, "cupy", fake)
    mp.setitem(sys.modules, "cupy.cuda", fake.cuda)
    mp.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    mp.setattr(provenance, "nvidia_smi", lambda fields: {})
    _run_child_in_process(mp)
    out = tmp_path_factory.mktemp("out")
    try:
        # Budgets ten times the device's: the stand-in is slower than a GPU, and a busy test
        # machine slower still; no step may be cut short here.
        assert campaign.main(["run", "--quick", "--out", str(out), "--max-s", "1200",
                              "--only", *MICRO_STEPS]) == 0
    finally:
        mp.undo()
    data = tmp_path_factory.mktemp("data")
    _micro_files(out, data)
    return out, data


def test_quick_campaign_writes_valid_files(quick_pass: tuple[Path, Path]) -> None:
    out, data = quick_pass
    files = sorted(p.name for p in (data / "h100").iterdir())
    assert files == sorted([f"{e}.json" for e in EXPERIMENTS] + ["blocks.npz"])
    for f in (data / "h100").glob("*.json"):
        doc = json.loads(f.read_text())
        check_result(doc)
        assert doc["provenance"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
        assert doc["provenance"]["argv"][:2] == ["run", "--quick"]
        assert doc["provenance"]["nvrtc_version"] == "13.0"
        assert set(doc["provenance"]["sources_sha256"]) >= {"kernels.cu", "plans.py"}
        # CUDA 13 has no clockRate property: it comes from cudaDeviceGetAttribute.
        assert doc["provenance"]["device_properties"]["clockRate"] == 1_980_000
        assert f.stat().st_size < campaign.MAX_FILE_B
    queues = json.loads((data / "h100" / "queues.json").read_text())
    assert {c["connections"] for c in queues["cases"]} == set(plans.QUEUE_CONNECTIONS)
    assert set(queues["parameters"]["child_processes"]) == {"8", "32"}
    gated = queues["cases"][0]
    assert gated["gate"]["name"] == "gate" and "gate" in gated["detail"]["kernels"]
    occ = json.loads((data / "h100" / "occupancy.json").read_text())
    case = next(c for c in occ["cases"] if c["variant"] == "r255" and c["threads"] == 256)
    assert case["regs"] == 244 and case["cuda_api_blocks_per_sm"] == 1
    assert case["resident_per_sm"] == 1
    summary = json.loads((out / "campaign.json").read_text())
    assert [s["step"] for s in summary["steps"]] == MICRO_STEPS
    assert all(s["status"] == "ran" for s in summary["steps"]), summary["steps"]
    assert summary["provenance"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert packing.return_problems(out) == []
    selfcheck = json.loads((data / "h100" / "waves.json").read_text())["provenance"]["selfcheck"]
    assert selfcheck["regs"]["fma_ilp8/base"] == plans.PTXAS_REGS_SM90[("fma_ilp8", "base")]
    assert selfcheck["local_B_nonzero"] == {}
    # The stand-in's dependent FMA takes 4 cycles at 1.755 GHz: the self-check reads that.
    assert selfcheck["fma_ilp1_ns_per_step"] == pytest.approx(4 / 1.755, rel=0.05)


def test_contention_file_carries_the_replay_inputs(quick_pass: tuple[Path, Path]) -> None:
    _, data = quick_pass
    doc = json.loads((data / "h100" / "contention.json").read_text())
    cases = {c["name"]: c for c in doc["cases"]}
    planned = doc["parameters"]["planned_cases"]
    assert list(cases) == planned  # nothing cut by the budget
    pair = cases["fma_low_full"]
    assert pair["mechanism"] == "sm_throughput" and pair["gate_ns"] > 0
    low, full = pair["kernels"]
    assert (low["ilp"], low["threads"], full["ilp"], full["threads"]) == (1, 128, 4, 256)
    assert full["flop_per_block"] == 2 * 4 * full["iters"] * 256
    assert low["reference"] in cases and full["unimpeded"] in cases
    share = pair["co_residency"]
    # One block of each kernel per SM, started together: every block shared its SM.
    assert share["k0"]["shared_blocks"] == low["grid"] == 132
    assert share["k1"]["mean_other_blocks"] == pytest.approx(1.0, abs=0.05)
    mem = cases["mem_low_low"]["kernels"][0]
    assert mem["dram_bytes_per_block"] == 32 * mem["elems_per_block"] > 0
    # Synthetic physics, proportional sharing: low (1/4) + full (1) on one SM run at 1/1.25.
    alone = cases[full["reference"]]["detail"]["kernels"]["k0"]["block_time_s"]["median"]
    shared = share["k1"]["block_time_shared_s"]["median"]
    assert shared / alone == pytest.approx(1.25, rel=0.05)
    blocks = np.load(data / "h100" / "blocks.npz")
    assert "contention/fma_low_full/k1" in blocks.files
    assert blocks["contention/fma_low_full/k1"].shape == (132, 3)


def test_contention_demands_recover_the_synthetic_physics(quick_pass: tuple[Path, Path]
                                                          ) -> None:
    """The replay's inputs, read back from the stand-in's data, are the shares it ran with."""
    from sim.measure.validate_contention import replay_inputs

    _, data = quick_pass
    doc = json.loads((data / "h100" / "contention.json").read_text())
    inputs = {(i.case, i.kernel): i for i in replay_inputs(doc)}
    low = inputs[("fma_low_full", "k0")]
    full = inputs[("fma_low_full", "k1")]
    assert low.sm_throughput == pytest.approx(fma_share(128, 1), rel=0.02)
    assert full.sm_throughput == pytest.approx(fma_share(256, 4), rel=0.02)
    spin = inputs[("spin_spin", "k0")]
    assert spin.sm_throughput == 0.0 and spin.flop_per_block == 0
    mem = inputs[("mem_low_low", "k0")]
    assert mem.sm_throughput is None
    assert mem.dram_Bps_per_block == pytest.approx(2 * 512 / 700e-9, rel=0.02)


def test_campaign_refuses_a_preset_connection_setting(fake_cupy: FakeCupy, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "8")
    assert campaign.main(["run", "--quick", "--out", str(tmp_path)]) == 2


def test_kernel_attributes_are_set(fake_cupy: FakeCupy) -> None:
    gpu = Gpu(fake_cupy)
    fn = gpu.kernel("spin", "r64")
    assert fn.attrs[8] == _SPEC.max_smem_per_block_B  # dynamic smem opt-in
    assert fn.attrs[9] == 100  # carveout preference
    assert gpu.build_info("spin", "r64").regs == plans.PTXAS_REGS_SM90[("spin", "r64")]
    assert gpu.build_info("fma_ilp4").regs == plans.PTXAS_REGS_SM90[("fma_ilp4", "base")]
    assert gpu.priorities == {"low": 0, "high": -5}
    assert gpu.clock_hz == 1.98e9


def test_fake_campaign_replays_in_the_engine(quick_pass: tuple[Path, Path]) -> None:
    """The files the harness writes are what sim.measure.validate reads (plumbing, not accuracy)."""
    from sim.cli import main as gpusim
    from sim.measure.validate import validate

    _, data = quick_pass
    (report,) = validate(data)
    assert report.gpu == "h100" and not report.missing and not report.failures
    names = {(c.experiment, c.case) for c in report.cases}
    assert ("waves", "t256_g1") in names and ("concurrency", "leftover") in names
    assert ("queues", "c8_depth_s16") in names and ("launch_overhead", "graph") in names
    assert ("contention", "fma_full_full") in names and ("bandwidth", "occpair_t128") in names
    assert gpusim(["validate", "--data", str(data), "--json"]) == 0
    assert gpusim(["validate", "--data", str(data), "--kernels"]) == 0
    by_name = {(c.experiment, c.case): c for c in report.cases}
    # A lone one-wave spin kernel: the engine must give its measured single-wave time.
    one = by_name[("waves", "t256_g1056")]
    assert one.simulated_makespan_s == pytest.approx(one.measured_makespan_s, rel=1e-6)
    # Two saturating FMA blocks per SM: the stand-in shares the pipe equally (2x), and so
    # does the engine's SM sharing, fed each kernel's unimpeded block time and share.
    full = by_name[("contention", "fma_full_full")]
    assert abs(full.makespan_error) < 0.05
    assert full.pending == ""
    # Latency-bound and memory-bound pairs too.
    for case in ("spin_spin", "mem_low_low", "mem_high_high", "fma_disjoint"):
        assert abs(by_name[("contention", case)].makespan_error) < 0.05, case
        assert by_name[("contention", case)].pending == ""


def _fake_cupy_site(tmp_path: Path) -> Path:
    """A ``cupy`` package that installs the stand-in, for subprocesses."""
    fake_pkg = tmp_path / "site" / "cupy"
    fake_pkg.mkdir(parents=True)
    fake_pkg.joinpath("__init__.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from fake_cupy import FakeCupy\n"
        "sys.modules['cupy'] = fake = FakeCupy()\n"
        "sys.modules['cupy.cuda'] = fake.cuda\n")
    return tmp_path / "site"


def test_device_script_runs_end_to_end_with_fake_cupy(tmp_path: Path) -> None:
    """scripts/device_campaign.sh as the device runs it: every step, queue children and the
    networks child included (real subprocesses), CuPy stood in for and the networks on the
    CPU; the output within the device tool's return limits."""
    pytest.importorskip("torch", reason="the networks step runs PyTorch (the torch extra)")
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable,
           "OUT": str(out), "PYTHONPATH": f"{_fake_cupy_site(tmp_path)}:{repo}",
           "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "device_campaign.sh"), "--quick", "--max-s", "1200",
         "--net-device", "cpu", "--net-reps", "1", "--net-warmup", "0",
         "--net-resolution", "80"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert packing.return_problems(out) == []
    names = sorted(f.path for f in packing.listing(out))
    assert names == sorted(["campaign.json", "campaign.log", "calibration.tar.gz", "log.txt",
                            "micro.tar.gz", "netbench_runs.json"])
    assert len(names) <= packing.MAX_FILES
    summary = json.loads((out / "campaign.json").read_text())
    assert [s["step"] for s in summary["steps"]] == list(steps.RUN_ORDER)
    assert all(s["status"] == "ran" for s in summary["steps"]), summary["steps"]
    assert "torch" in summary["provenance"]["networks"]["libraries"]
    runs = json.loads((out / "netbench_runs.json").read_text())["runs"]
    assert {(r["config"]["network"], r["config"]["batch"]) for r in runs} == {
        ("googlenet", 1), ("inception_v3", 1)}
    log = (out / "campaign.log").read_text()
    for step in steps.RUN_ORDER:
        assert f"[{step}] part {steps.PART[step]}, budget" in log, step
    assert "== exit 0" in log and "return limits: ok" in log
    data = tmp_path / "data"
    assert len(_micro_files(out, data)) == len(EXPERIMENTS) + 1


def test_a_short_pass_skips_what_does_not_fit_and_says_so(fake_cupy: FakeCupy, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """With too little time, later steps are skipped with a reason, earlier results kept."""
    from sim.measure.micro import harness

    now = [0.0]  # a clock that moves 1 s per case run, and only then
    monkeypatch.setattr(campaign, "_clock", lambda: now[0])
    for name in ("run_timeline_case", "run_occupancy_shape"):
        real = getattr(harness, name)

        def timed(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            now[0] += 1.0
            return _real(*args, **kwargs)

        monkeypatch.setattr(harness, name, timed)
    # 7 s in all, 3 kept in reserve: contention, waves and occupancy get one case each (their
    # scaled budgets are under a second), then 1 s is left and launch_overhead is skipped.
    code = campaign.main(["run", "--quick", "--out", str(tmp_path), "--max-s", "7",
                          "--only", "contention", "waves", "occupancy", "launch_overhead"])
    summary = json.loads((tmp_path / "campaign.json").read_text())
    status = {s["step"]: (s["status"], s["cases"], s["note"]) for s in summary["steps"]}
    assert status["contention"][:2] == ("truncated", 1)
    assert status["waves"][:2] == ("truncated", 1)
    assert status["launch_overhead"][0] == "skipped"
    assert "left before the pass limit" in status["launch_overhead"][2]
    assert code == 0  # skipping for time is not a failure
    held = _micro_files(tmp_path, tmp_path / "data")
    assert "h100/contention.json" in held and "h100/launch_overhead.json" not in held


def test_raw_block_logs_on_request(fake_cupy: FakeCupy, tmp_path: Path) -> None:
    assert campaign.main(["run", "--quick", "--raw", "--max-s", "1200", "--only", "waves",
                          "--out", str(tmp_path)]) == 0
    data = tmp_path / "data"
    _micro_files(tmp_path, data)
    raw = np.load(data / "h100" / "blocks.npz")
    assert "waves/t256_g1/k" in raw.files
    rows = raw["waves/t256_g1057/k"]
    assert rows.shape == (1057, 3)
    waves = json.loads((data / "h100" / "waves.json").read_text())
    case = next(c for c in waves["cases"] if c["name"] == "t256_g1057")
    # The raw log is the committed (median) repeat: same makespan as its summary.
    span_s = (rows[:, 1].max() - rows[:, 0].min()) * 1e-9
    assert span_s == pytest.approx(case["detail"]["makespan_s"])
    assert not (data / "h100" / "occupancy.json").exists()  # --only
