"""Campaign plans, provenance and the dry run (no GPU needed)."""

from __future__ import annotations

import json

import pytest

from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.presets import load_preset
from sim.measure.micro import campaign, plans, provenance


def calc_slots(shape: plans.Shape) -> int:
    spec = load_preset("h100")
    regs = plans.PTXAS_REGS_SM90[(shape.kernel, shape.variant)]
    return occupancy(spec, shape.threads, regs, shape.smem_dynamic_B).blocks_per_sm


def test_waves_plan_spans_one_block_to_past_four_waves() -> None:
    for quick in (True, False):
        cases = plans.waves_plan(132, calc_slots, quick)
        grids = {c.kernels[0].grid for c in cases if c.name.startswith("t256_")}
        wave = 132 * 8  # 256 threads, 12 registers: 8 blocks per SM by warps
        assert 1 in grids and wave in grids and wave + 1 in grids
        assert max(grids) > 4 * wave
        assert len({c.name for c in cases}) == len(cases)


def test_concurrency_plan_cases() -> None:
    cases = {c.name: c for c in plans.concurrency_plan(132, calc_slots, quick=True)}
    assert {"half_half", "leftover", "leftover_priority", "shapes_regs"} <= set(cases)
    leftover = cases["leftover"]
    assert [k.grid for k in leftover.kernels] == [4 * 1056 + 528, 528]
    assert [s.priority for s in cases["leftover_priority"].streams] == ["low", "high"]
    # The register-heavy kernel of shapes_regs fills the register file: one block per SM.
    reg_heavy = cases["shapes_regs"].kernels[0]
    assert calc_slots(reg_heavy.shape) == 1
    assert reg_heavy.grid == 132


def test_bandwidth_plan_bytes_are_by_construction() -> None:
    cases = {c.name: c for c in plans.bandwidth_plan(132, calc_slots, quick=False)}
    k = cases["alone_full"].kernels[0]
    assert k.dram_bytes == k.grid * plans.STREAM_ELEMS_PER_BLOCK * 32
    assert "alone_1block" in cases and "two_half" in cases
    assert cases["copy_and_spin"].kernels[1].dram_bytes == 0


def test_queue_plan_orders() -> None:
    depth = plans.queues_plan(8, quick=True)
    assert all(c.gate_ns > 0 and c.connections == 8 for c in depth)
    s16 = next(c for c in depth if c.name == "c8_depth_s16")
    assert [k.name for k in s16.kernels[:3]] == ["s0k0", "s0k1", "s1k0"]
    full = plans.queues_plan(32, quick=False)
    breadth = next(c for c in full if c.name == "c32_breadth_s32")
    assert [k.name for k in breadth.kernels[:2]] == ["s0k0", "s1k0"]
    assert len(breadth.kernels) == 32 * 3


def test_plan_validation_errors() -> None:
    with pytest.raises(GpusimError, match="variant"):
        plans.Shape("spin", 256, variant="r999")
    with pytest.raises(GpusimError, match="stream kernel"):
        plans.Shape("stream", 256, smem_dynamic_B=1024)
    k = plans.KernelPlan("k", "nowhere", plans.Shape("spin", 32), 1, spin_ns=1)
    with pytest.raises(GpusimError, match="unknown stream"):
        plans.CasePlan("c", (plans.StreamPlan("s0"),), (k,), repeats=1)
    with pytest.raises(GpusimError, match="priority"):
        plans.StreamPlan("s", "urgent")


def test_variant_options() -> None:
    assert plans.VARIANTS["base"].options == ("-DPAD_REGS=0",)
    assert plans.VARIANTS["r64"].options == ("-DPAD_REGS=56", "--maxrregcount=64")


def test_occupancy_shapes_respect_the_opt_in_limit() -> None:
    shapes = plans.occupancy_shapes(quick=False, max_smem_dynamic_B=232448)
    assert max(s.smem_dynamic_B for s in shapes) == 232448
    assert len(shapes) == 8 * 5 * 8
    small = plans.occupancy_shapes(quick=True, max_smem_dynamic_B=16384)
    assert max(s.smem_dynamic_B for s in small) <= 16384


def test_gpu_key_names_presets() -> None:
    assert provenance.gpu_key("NVIDIA H100 80GB HBM3") == "h100"
    assert provenance.gpu_key("NVIDIA H100 PCIe") == "h100-pcie"
    assert provenance.gpu_key("NVIDIA H200") == "h200"
    assert provenance.gpu_key("NVIDIA A100-SXM4-80GB") == "a100"
    assert provenance.gpu_key("NVIDIA TITAN Xp") == "titan-xp"
    assert provenance.gpu_key("NVIDIA L4") == "nvidia-l4"


def test_provenance_record_is_json_and_filters() -> None:
    props = {"name": b"NVIDIA H100 80GB HBM3\0\0", "multiProcessorCount": 132,
             "uuid": b"secret", "major": 9}
    rec = provenance.build(
        gpu_name="NVIDIA H100 80GB HBM3", driver_version="580.1", cuda_driver_api_version=13000,
        cuda_runtime_version=13000, cupy_version="14.2.0", nvrtc_version=(13, 0), props=props,
        argv=["run", "--quick"], script="python -m sim.measure.micro",
        env={"CUDA_DEVICE_MAX_CONNECTIONS": "8", "HOME": "/root"},
        date_utc="2026-11-26T00:00:00+00:00")
    json.dumps(rec)
    assert rec["device_properties"] == {"name": "NVIDIA H100 80GB HBM3",
                                         "multiProcessorCount": 132, "major": 9}
    assert rec["env"] == {"CUDA_DEVICE_MAX_CONNECTIONS": "8"}
    assert rec["nvrtc_version"] == "13.0"


def test_dry_run_fits_the_time_limits(capsys: pytest.CaptureFixture[str]) -> None:
    quick = campaign.dry_run("h100", quick=True)
    full = campaign.dry_run("h100", quick=False)
    # The budgets (which bound when new cases start) leave room under 2 and 8 minutes.
    assert quick["budget_total_s"] <= 90
    assert full["budget_total_s"] <= 400
    for result in (quick, full):
        for name, info in result["experiments"].items():
            assert info["estimate_s"] < info["budget_s"], name
    assert campaign.main(["plan", "--quick"]) == 0
    assert "waves" in capsys.readouterr().out


def test_measuring_code_imports_neither_the_engine_nor_cupy() -> None:
    """The device has no SimPy, and these modules must import where CuPy is absent."""
    import subprocess
    import sys

    code = ("import sys; import sim.measure.micro.campaign, sim.measure.micro.harness; "
            "bad = [m for m in sys.modules if m in ('simpy', 'cupy') "
            "or m.startswith(('sim.engine', 'sim.analysis'))]; print(bad); "
            "sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
