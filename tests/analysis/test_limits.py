"""The limits report: bounds by hand, JSON shape, and what binds."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest

from gpu_models.cost import get_cost_model, isolated_time_s
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelSpec
from gpu_models.occupancy import block_footprint
from gpu_models.spec import GPUSpec
from sim.analysis import limits
from sim.analysis.limits import (
    BINDS,
    compute_limits,
    critical_path_bound_s,
    limits_for_workload,
    work_bound,
)
from sim.engine.engine import simulate
from sim.engine.program import Program
from sim.engine.result import SimResult
from sim.scheduling import Schedule, ScheduleContext

ROOFLINE = get_cost_model("roofline")

JSON_KEYS = {"serial_us", "critical_path_us", "work_bound_us", "lower_bound_us", "policies",
             "best_policy", "speedup_ideal", "speedup_achievable", "binds"}


def kernel(name: str, blocks: int = 264, flops: float = 1e9) -> KernelSpec:
    return KernelSpec(name=name, kind="gemm", grid=(blocks, 1, 1), threads=256,
                      regs_per_thread=64, smem_per_block_B=16384, flops=flops,
                      dram_bytes=1e6)


def dag(edges: list[tuple[str, str]], flops: dict[str, float] | None = None) -> nx.DiGraph:
    g = nx.DiGraph()
    for n in dict.fromkeys(x for e in edges for x in e):
        g.add_node(n, kernel=kernel(n, flops=(flops or {}).get(n, 1e9)))
    g.add_edges_from(edges)
    return g


def ctx_of(g: nx.DiGraph, gpu: GPUSpec) -> ScheduleContext:
    return ScheduleContext(
        g, gpu, {n: ROOFLINE(k, gpu) for n, k in g.nodes(data="kernel")},
        {n: isolated_time_s(k, gpu, ROOFLINE) for n, k in g.nodes(data="kernel")})


def test_critical_path_bound_without_host_is_the_longest_path(h100: GPUSpec) -> None:
    g = dag([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], flops={"c": 5e9})
    ctx = ctx_of(g, h100)
    iso = ctx.isolated_s
    assert critical_path_bound_s(ctx, 0.0) == pytest.approx(iso["a"] + iso["c"] + iso["d"])


def test_critical_path_bound_counts_only_unavoidable_launches(h100: GPUSpec) -> None:
    # A fork: x, then 3 independent kernels. The best order still launches 4 kernels.
    g = dag([("x", "p"), ("x", "q"), ("x", "r")], flops={"p": 1e11})
    ctx = ctx_of(g, h100)
    iso = ctx.isolated_s
    launch = 1e-3  # host-dominated
    expected = max(2 * launch + iso["p"],                         # p right after x
                   4 * launch + min(iso["p"], iso["q"], iso["r"]))  # the last launch
    assert critical_path_bound_s(ctx, launch) == pytest.approx(expected)


def test_work_bound_is_resource_time_over_capacity(h100: GPUSpec) -> None:
    g = dag([("a", "b")])
    ctx = ctx_of(g, h100)
    wb = work_bound(ctx)
    fp = block_footprint(h100, 256, 64, 16384)
    block_s = 2 * 264 * ctx.costs["a"].block_time_s
    assert wb.sm_resource_s["registers"] == pytest.approx(
        block_s * fp.regs_per_warp * fp.warps / h100.regs_per_sm / h100.sm_count)
    assert wb.sm_resource_s["warps"] == pytest.approx(
        block_s * fp.warps / h100.max_warps_per_sm / h100.sm_count)
    assert wb.dram_s == pytest.approx(2 * ctx.costs["a"].dram_bytes / h100.dram_bw_Bps)
    assert wb.value_s == max(*wb.sm_resource_s.values(), wb.dram_s)


def test_report_json_and_invariants(h100: GPUSpec) -> None:
    g = dag([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    g.graph.update(workload="toy", batch=1, phase="inference", precision="fp32")
    report = compute_limits(g, h100, cost_model=ROOFLINE,
                            policies=("min-streams", "critical-path:2"), keep_results=True)
    d = report.to_dict()
    assert set(d) >= JSON_KEYS
    assert list(d["policies"]) == ["serial", "min-streams", "critical-path:2"]
    assert d["serial_us"] == pytest.approx(report.serial_s * 1e6)
    assert d["lower_bound_us"] == pytest.approx(max(d["critical_path_us"], d["work_bound_us"]))
    assert d["speedup_achievable"] == pytest.approx(
        d["serial_us"] / min(d["policies"].values()))
    assert d["speedup_ideal"] >= d["speedup_achievable"] * (1 - 1e-9)
    assert d["binds"] in BINDS
    assert d["workload"] == "toy"
    assert set(report.results) == set(d["policies"])
    assert report.results["serial"].makespan_s == report.serial_s


def test_binds_dependencies_for_a_chain_of_small_kernels(h100: GPUSpec) -> None:
    g = dag([("a", "b"), ("b", "c")])
    report = compute_limits(g, h100, cost_model=ROOFLINE, policies=("serial",),
                            launch_overhead_s=0.0, event_overhead_s=0.0)
    assert report.binds == "dependencies"
    assert report.results is None


def test_binds_host_launch_when_launches_dominate(h100: GPUSpec) -> None:
    g = dag([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    report = compute_limits(g, h100, cost_model=ROOFLINE, policies=("min-streams",),
                            launch_overhead_s=1e-3)
    assert report.binds == "host_launch"
    assert report.best_policy == "serial"  # events cost the host more than overlap gains


def test_each_policy_is_simulated_once(h100: GPUSpec) -> None:
    report = compute_limits(dag([("a", "b")]), h100, cost_model=ROOFLINE,
                            policies=("serial", "critical-path:4", "critical-path"),
                            keep_results=True)
    assert list(report.policies_s) == ["serial", "critical-path"]


def test_empty_policy_list_is_an_error(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="at least one policy"):
        compute_limits(dag([("a", "b")]), h100, cost_model=ROOFLINE, policies=())


def test_limits_for_workload_labels_and_results(v100: GPUSpec) -> None:
    report = limits_for_workload("squeezenet1_1", batch=2, gpu=v100,
                                 policies=("branches",), keep_results=True)
    d = report.to_dict()
    assert (d["workload"], d["batch"], d["phase"], d["gpu"], d["cost_model"]) == (
        "squeezenet1_1", 2, "inference", "v100", "analytic")  # the default cost model
    assert set(report.results) == {"serial", "branches"}
    assert d["lower_bound_us"] <= min(d["policies"].values()) * (1 + 1e-9)


def test_limits_for_workload_bad_input_names_the_item() -> None:
    with pytest.raises(GpusimError, match="nonet"):
        limits_for_workload("nonet")
    with pytest.raises(GpusimError, match="'warp-speed'"):
        limits_for_workload("alexnet", policies=("warp-speed",))
    with pytest.raises(GpusimError, match="origin"):
        limits_for_workload("alexnet", cost_model="scaled")


def test_a_launch_bound_run_reports_host_launch() -> None:
    # GoogLeNet at batch 1 on an H100: 213 small kernels at 5 us of host time each keep the
    # GPU waiting on the host; without launch overhead something on the GPU binds instead.
    from sim.analysis.limits import limits_for_workload

    eager = limits_for_workload("googlenet", batch=1, policies=("serial",))
    assert eager.binds == "host_launch"
    free = limits_for_workload("googlenet", batch=1, policies=("serial",),
                               launch_overhead_s=0.0, event_overhead_s=0.0)
    assert free.binds != "host_launch"


def test_policies_in_worker_processes_give_the_same_report() -> None:
    one = limits_for_workload("googlenet", batch=2, gpu="h100", cost_model="roofline",
                              keep_results=True)
    seen: list[tuple[str, int, int]] = []
    two = limits_for_workload("googlenet", batch=2, gpu="h100", cost_model="roofline",
                              keep_results=True, workers=2,
                              progress=lambda *step: seen.append(step))
    assert two.to_dict() == one.to_dict()
    assert one.results is not None and two.results is not None
    for name, result in one.results.items():
        assert [k.end_s for k in two.results[name].kernels] == [k.end_s for k in result.kernels]
    # Progress: what is still running, then done.
    assert seen[0][1] == 0 and seen[-1] == ("", len(one.policies_s), len(one.policies_s))


def test_policies_are_timed_makespan_only_and_the_best_simulated_in_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    options: dict[str, Any] = {"batch": 2, "gpu": "h100", "cost_model": "roofline"}
    kept = limits_for_workload("googlenet", keep_results=True, **options)
    assert kept.results is not None
    full_runs: list[Program] = []

    def counting(program: Program, **kwargs: Any) -> SimResult:
        full_runs.append(program)
        return simulate(program, **kwargs)

    monkeypatch.setattr(limits, "simulate", counting)
    plain = limits_for_workload("googlenet", **options)
    assert plain.results is None
    assert plain.to_dict() == kept.to_dict()
    assert plain.binds_detail_s == kept.binds_detail_s
    best = kept.results[plain.best_policy].program
    assert [p.timing_key() for p in full_runs] == [best.timing_key()]
    # Worker processes simulate every policy in full (side by side): the same report.
    full_runs.clear()
    assert limits_for_workload("googlenet", workers=2, **options).to_dict() == plain.to_dict()
    assert full_runs == []


def test_workers_must_be_a_positive_integer_and_policies_picklable(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="workers must be a positive integer"):
        compute_limits(dag([("a", "b")]), h100, cost_model=ROOFLINE, workers=0)

    class Local:  # a policy defined in a function cannot be pickled by reference
        name = "local"

        def schedule(self, ctx: ScheduleContext) -> Schedule:
            order = tuple(ctx.graph.nodes)
            return Schedule(order=order, stream_of=dict.fromkeys(order, 0))

    with pytest.raises(GpusimError, match=r"cannot be pickled.*workers=1"):
        compute_limits(dag([("a", "b")]), h100, cost_model=ROOFLINE, policies=(Local(),),
                       workers=2)
