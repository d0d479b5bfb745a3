"""Campaign plans, provenance and the dry run (no GPU needed)."""

from __future__ import annotations

import json
import math

import pytest

from gpu_models.errors import GpusimError
from gpu_models.occupancy import block_footprint, occupancy
from gpu_models.presets import load_preset
from sim.measure.micro import campaign, plans, provenance, steps

H100_SMEM = load_preset("h100").smem_per_sm_B


def calc_slots(shape: plans.Shape) -> int:
    spec = load_preset("h100")
    regs = plans.PTXAS_REGS_SM90[(shape.function, shape.variant)]
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
    cases = {c.name: c for c in plans.bandwidth_plan(132, calc_slots, quick=False,
                                                     smem_per_sm_B=H100_SMEM)}
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
    with pytest.raises(GpusimError, match="one build"):
        plans.Shape("stream", 256, variant="r64")
    with pytest.raises(GpusimError, match="ilp"):
        plans.Shape("fma", 256, ilp=3)
    with pytest.raises(GpusimError, match="ilp"):
        plans.Shape("spin", 256, ilp=2)
    with pytest.raises(GpusimError, match="multiple"):
        plans.KernelPlan("k", "s0", plans.Shape("fma", 32, ilp=1), 1, iters=17)
    with pytest.raises(GpusimError, match="work per block"):
        plans.KernelPlan("k", "s0", plans.Shape("stream", 32), 1)
    with pytest.raises(GpusimError, match="mechanism"):
        plans.CasePlan("c", (plans.StreamPlan("s0"),), (), repeats=1, mechanism="magic")
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
    """Issue 19: a quick pass within 2 minutes, a full one within 8, networks included."""
    quick = steps.dry_run("h100", quick=True)
    full = steps.dry_run("h100", quick=False)
    for result, limit in ((quick, 120.0), (full, 480.0)):
        assert result["limit_s"] == limit
        assert result["estimate_total_s"] <= limit
        # The budgets (which bound when new work starts) leave room under the limit.
        assert result["budget_total_s"] <= limit
        assert list(result["steps"]) == list(steps.RUN_ORDER)
        for name, info in result["steps"].items():
            assert 0 < info["estimate_s"] < info["budget_s"], name
            assert info["cases"] == len(info["case_estimates_s"]) > 0, name
    assert quick["steps"]["networks"]["cases"] == 2  # GoogLeNet and Inception-v3, batch 1
    assert full["steps"]["networks"]["cases"] == 6  # + batch 32, + training at 32
    assert campaign.main(["plan", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "part 1 contention" in out and "fma_low_full" in out and "networks" in out
    assert "googlenet-inference-b1-tf32" in out


def test_every_step_has_a_budget_and_a_part() -> None:
    assert set(steps.BUDGETS_S) == set(steps.RUN_ORDER) == set(steps.PART)
    assert [steps.PART[s] for s in steps.RUN_ORDER] == sorted(steps.PART.values())
    assert steps.budget_s("networks", quick=False, max_s=240) == pytest.approx(95.0)
    assert steps.budget_s("networks", quick=True) == 45.0


def test_contention_plan_pins_down_the_sharing_rule() -> None:
    cases = {c.name: c for c in plans.contention_plan(132, calc_slots, False, 1.98e9,
                                                        smem_per_sm_B=H100_SMEM)}
    assert {"fma_peak", "mem_peak"} <= set(cases)
    pair = cases["fma_low_full"]
    assert pair.mechanism == "sm_throughput" and pair.gate_ns == plans.CONTENTION_GATE_NS
    low, full = pair.kernels
    # Demands differ, so max-min fair, demand- and warp-proportional sharing differ.
    assert plans.fma_model_demand(low.shape) == 0.25
    assert plans.fma_model_demand(full.shape) == 1.0
    assert low.shape.warps != full.shape.warps
    for k in (low, full):
        assert k.reference in cases and k.unimpeded in cases
        ref = cases[k.reference].kernels[0]
        assert (ref.shape, ref.grid, ref.iters) == (k.shape, k.grid, k.iters)
        assert cases[k.unimpeded].kernels[0].grid == 132  # one block per SM
    # Every pair's kernels fit one SM together (else the case would test placement).
    spec = load_preset("h100")
    for case in cases.values():
        if case.mechanism in ("sm_throughput", "latency", "mixed", "dram_sharing") \
                and len(case.kernels) == 2:
            held = [(block_footprint(spec, k.shape.threads,
                                     plans.PTXAS_REGS_SM90[(k.shape.function, "base")],
                                     k.shape.smem_dynamic_B), math.ceil(k.grid / 132))
                    for k in case.kernels]
            assert sum(f.warps * n for f, n in held) <= spec.max_warps_per_sm, case.name
            assert sum(f.regs_per_warp * f.warps * n for f, n in held) <= spec.regs_per_sm
            assert sum(f.smem_B * n for f, n in held) <= spec.smem_per_sm_B, case.name
    # Every ILP and both latency-bound kernels appear; the quick pass keeps a subset.
    ilps = {k.shape.ilp for c in cases.values() for k in c.kernels if k.shape.kernel == "fma"}
    assert ilps == set(plans.FMA_ILPS)
    kinds = {k.shape.kernel for c in cases.values() for k in c.kernels}
    assert kinds == set(plans.KERNEL_KINDS)
    quick = {c.name for c in plans.contention_plan(132, calc_slots, True, 1.98e9,
                                               smem_per_sm_B=H100_SMEM)}
    assert quick < set(cases) and {"fma_full_full", "mix_fma_spin", "mem_low_low"} <= quick


def test_fma_blocks_are_sized_to_the_target_time() -> None:
    # 8 warps x ILP 4: 2 warps per sub-partition, 8 FMAs in flight: issue-bound, 8 cycles
    # a step; 100 us at 2 GHz is 25,000 steps, 1562 loop trips of 16 (round half to even).
    assert plans.fma_iters(256, 4, 2e9) == 24_992
    # 4 warps x ILP 1: latency-bound, 4 cycles a step.
    assert plans.fma_iters(128, 1, 2e9) == 50_000
    assert plans.fma_model_demand(plans.Shape("fma", 32, ilp=1)) == 1 / 16
    k = plans.KernelPlan("k", "s0", plans.Shape("fma", 256, ilp=4), 132, iters=1600)
    assert k.flop_per_block == 2 * 4 * 1600 * 256 and k.dram_bytes == 0


def test_occupancy_sweep_spans_one_to_sixty_four_warps() -> None:
    cases = {c.name: c for c in plans.occupancy_sweep_plan(132, calc_slots, quick=False,
                                                              smem_per_sm_B=H100_SMEM)}
    warps = sorted({c.kernels[0].shape.warps * len(c.kernels) * (c.kernels[0].grid // 132)
                    for c in cases.values()})
    assert warps[0] == 1 and warps[-1] == 64
    for threads in plans.SWEEP_THREADS_FULL:
        assert calc_slots(cases[f"occ1_t{threads}"].kernels[0].shape) == 2  # the spoiler
        assert cases[f"occpair_t{threads}"].kernels[1].reference == f"occ1_t{threads}"
        # Enough bytes per kernel that L2 (50 MB on an H100) holds a small part of them.
        assert cases[f"occ1_t{threads}"].kernels[0].dram_bytes >= 4 * 50e6


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


@pytest.mark.parametrize("gpu", ["h100", "h200", "a100", "v100", "h100-pcie"])
def test_spoilers_fit_two_blocks_or_one_on_every_preset(gpu: str) -> None:
    """The sweep's spoiler leaves room for exactly 2 blocks per SM, the exclusive one for 1,
    on every preset the kernels build for (sm_70 and newer: nanosleep), whatever the block
    size (no size tuned to one GPU)."""
    spec = load_preset(gpu)
    for threads in (32, 1024):
        pair = occupancy(spec, threads, 18, plans.pair_spoiler_B(spec.smem_per_sm_B))
        alone = occupancy(spec, threads, 18, plans.exclusive_spoiler_B(spec.smem_per_sm_B))
        assert pair.blocks_per_sm == min(2, spec.max_warps_per_sm // (threads // 32)), threads
        assert alone.blocks_per_sm == 1
    assert plans.exclusive_spoiler_B(spec.smem_per_sm_B) <= spec.max_smem_per_block_B
