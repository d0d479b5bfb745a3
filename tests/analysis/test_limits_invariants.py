"""Invariants of every policy and of the bounds, on the zoo and on random DAGs.

* the lower bound is at most every policy's simulated time;
* with no host overhead (zero launch and event cost) and without SM sharing, serial is never
  faster than a policy that keeps the kernels as they are — on every zoo network, and on
  random DAGs whose blocks all have one footprint and move no DRAM bytes. On arbitrary
  random DAGs it is not a theorem of the execution model (the way hypothesis once found it
  to fail, before DRAM was shared max-min fairly, is pinned down in
  :func:`test_concurrency_can_share_dram`). With SM sharing it is not one either: blocks are
  placed by free warps, blind to throughput, so a concurrent kernel can push two blocks of
  a kernel onto one SM whose throughput they then share, where serial gave each block its
  own SM (:func:`test_concurrency_can_pack_blocks_onto_one_sm`);
  Grid capping (``+cap``) changes kernels: a capped kernel runs longer on fewer SMs, and
  when its isolated-time slack is not real it can end up slower than serial, so ``+cap``
  is held only to the lower bound;
* every policy respects every dependency on the simulated timeline.
"""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_models.cost import get_cost_model
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.occupancy import launch_failure
from gpu_models.presets import load_preset
from sim.analysis.limits import LimitsReport, compute_limits
from sim.analysis.workflow import kernel_graph_for
from sim.scheduling import DEFAULT_POLICIES, Stages
from workloads import workload_names

ROOFLINE = get_cost_model("roofline")
H100 = load_preset("h100")
#: Float noise: sums along different paths and the engine's fluid DRAM clock differ in the
#: last bits (seen: 8 ps in 68 us).
REL = 1e-6

#: One policy of each kind (stream assignment, barriers, list scheduling, stage search on a
#: small budget, modifiers): the zoo runs stay short. Random DAGs get every default policy.
POLICIES = ["serial", "branches", "min-streams", "levels", "critical-path",
            Stages(max_total_evaluations=30), "critical-path+priority+cap"]

def check_invariants(graph: nx.DiGraph, report: LimitsReport, *, no_host: bool) -> None:
    assert report.results is not None
    for name, t in report.policies_s.items():
        assert report.lower_bound_s <= t * (1 + REL), f"{name} beats the lower bound"
        if no_host and not report.sm_sharing and "cap" not in name.split("+"):
            assert report.serial_s >= t * (1 - REL), f"{name} slower than serial"
    for name, result in report.results.items():
        ends = {k.name: k.end_s for k in result.kernels}
        starts = {k.name: k.start_s for k in result.kernels}
        assert set(starts) == {str(n) for n in graph}, name
        for u, v in graph.edges:
            assert starts[v] >= ends[u] - 1e-15, f"{name}: {v} started before {u} ended"


@pytest.mark.parametrize("workload", workload_names())
def test_zoo_inference_without_host_overhead(workload: str) -> None:
    graph = kernel_graph_for(workload, batch=1, gpu=H100)
    for sharing in (True, False):
        report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=POLICIES,
                                launch_overhead_s=0.0, event_overhead_s=0.0,
                                keep_results=True, sm_sharing=sharing)
        check_invariants(graph, report, no_host=True)


@pytest.mark.parametrize(("workload", "phase", "batch"), [
    ("googlenet", "inference", 8), ("squeezenet1_1", "training", 1),
])
def test_zoo_with_host_overhead(workload: str, phase: str, batch: int) -> None:
    graph = kernel_graph_for(workload, batch=batch, phase=phase, gpu=H100)
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=POLICIES,
                            keep_results=True)
    check_invariants(graph, report, no_host=False)


@pytest.mark.parametrize("workload", ["squeezenet1_1", "pathnet"])
def test_zoo_training_without_host_overhead(workload: str) -> None:
    graph = kernel_graph_for(workload, batch=1, phase="training", gpu=H100)
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=POLICIES,
                            launch_overhead_s=0.0, event_overhead_s=0.0, keep_results=True)
    check_invariants(graph, report, no_host=True)


# ---------------------------------------------------------------------- random DAGs
@st.composite
def kernel_dags(draw: st.DrawFn, *, uniform: bool = False) -> nx.DiGraph:
    """Up to 9 kernels, random edges (forward in index order), random shapes and work;
    branch attributes on some, so ``branches`` has something to do. ``uniform``: every
    block has the same footprint (256 threads, 32 registers, no shared memory) and no
    kernel moves DRAM bytes."""
    count = draw(st.integers(2, 9))
    graph = nx.DiGraph()
    for i in range(count):
        threads, regs, smem = 256, 32, 0
        if not uniform:
            threads = draw(st.sampled_from([64, 128, 256, 512]))
            regs = draw(st.sampled_from([16, 32, 64, 128]))
            smem = draw(st.sampled_from([0, 8192, 49152]))
        if launch_failure(H100, threads, regs, smem) is not None:
            regs = 32
        kernel = KernelSpec(
            name=f"k{i}", kind=draw(st.sampled_from(["elementwise", "conv_fwd", "gemm"])),
            grid=(draw(st.integers(1, 3000)), 1, 1), threads=threads, regs_per_thread=regs,
            smem_per_block_B=smem, flops=draw(st.floats(0, 2e10)),
            dram_bytes=0.0 if uniform else draw(st.floats(0, 2e8)))
        graph.add_node(kernel.name, kernel=kernel, phase="forward",
                       branch=draw(st.sampled_from([None, "m.b0", "m.b1", "m.b2"])))
    for j in range(1, count):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                graph.add_edge(f"k{i}", f"k{j}")
    return graph


RANDOM_POLICIES = [*DEFAULT_POLICIES, "critical-path:2"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=kernel_dags(uniform=True), sharing=st.booleans())
def test_random_dags_without_host_overhead(graph: nx.DiGraph, sharing: bool) -> None:
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=RANDOM_POLICIES,
                            launch_overhead_s=0.0, event_overhead_s=0.0, keep_results=True,
                            sm_sharing=sharing)
    check_invariants(graph, report, no_host=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=kernel_dags(), launch_us=st.floats(0.5, 20), event_us=st.floats(0, 5))
def test_random_dags_with_host_overhead(graph: nx.DiGraph, launch_us: float,
                                        event_us: float) -> None:
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=RANDOM_POLICIES,
                            launch_overhead_s=launch_us * 1e-6,
                            event_overhead_s=event_us * 1e-6, keep_results=True)
    check_invariants(graph, report, no_host=False)


# ---------------------------------------------------------------------- known anomalies
def two_kernels(first: KernelSpec, second: KernelSpec) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_node(first.name, kernel=first)
    graph.add_node(second.name, kernel=second)
    return graph


def test_concurrency_can_share_dram() -> None:
    """Found by hypothesis when the fluid DRAM model slowed every block with any DRAM demand
    by the same factor: a streaming kernel just under the bandwidth alone runs unslowed;
    beside a kernel that moves almost nothing the sum tips over the bandwidth, both slowed a
    little, and the one block of the second kernel that did not fit the wave (339 + 718
    blocks, 1056 fit) started that much later than after the first kernel alone: the pair
    ended picoseconds after the serial run. With max-min fair sharing (docs/model.md §6.7) the
    small kernel gets all it asks and is not slowed, its last block starts when its own first
    blocks end (1 us) as in the serial run, and only the streaming kernel slows (by the small
    one's demand), finishing well before: both take 2 us.
    """
    efficiency = ROOFLINE.efficiency[KernelKind.ELEMENTWISE].memory
    just_under_B = H100.dram_bw_Bps * 1e-6 * 0.99999 * efficiency  # 1-us blocks
    stream = KernelSpec(name="stream", kind="elementwise", grid=(339, 1, 1), threads=256,
                        regs_per_thread=32, smem_per_block_B=0, flops=0,
                        dram_bytes=just_under_B)
    tiny = KernelSpec(name="tiny", kind="elementwise", grid=(718, 1, 1), threads=256,
                      regs_per_thread=32, smem_per_block_B=0, flops=0, dram_bytes=100)
    report = compute_limits(two_kernels(stream, tiny), H100, cost_model=ROOFLINE,
                            policies=("min-streams",), launch_overhead_s=0.0,
                            event_overhead_s=0.0, sm_sharing=False)  # the max-min rule alone
    assert report.policies_s["min-streams"] == report.policies_s["serial"] == pytest.approx(
        2e-6)


def test_concurrency_can_pack_blocks_onto_one_sm() -> None:
    """Found by hypothesis with SM sharing: k0 (1 block) and k1 (66 blocks asking almost no
    throughput) start together; k2 (67 blocks, 0.58 of an SM each) follows k0 on its stream.
    Serial: k2 runs alone from 2 us, one block per SM, 6 us. min-streams: k2 starts at 1 us
    while k1's blocks still hold SMs 1-66 (they end 60 fs later); most-free placement goes
    by free warps, so SM 0 and SMs 67-131 (all warps free) take the 67 blocks, two on SM 0.
    Those two ask 1.17 of SM 0: rate 1 / 1.17, 7 us: k2 ends at 8.00003 us, just after the
    serial 8.00002 us."""
    kernels = [KernelSpec(name="k0", kind="elementwise", grid=(1, 1, 1), threads=256,
                          regs_per_thread=32, smem_per_block_B=0, flops=0.0, dram_bytes=0.0),
               KernelSpec(name="k1", kind="elementwise", grid=(66, 1, 1), threads=256,
                          regs_per_thread=32, smem_per_block_B=0, flops=1.0, dram_bytes=0.0),
               KernelSpec(name="k2", kind="conv_fwd", grid=(67, 1, 1), threads=256,
                          regs_per_thread=32, smem_per_block_B=0, flops=118849343.0,
                          dram_bytes=0.0)]
    graph = nx.DiGraph()
    for k in kernels:
        graph.add_node(k.name, kernel=k)
    graph.add_edge("k0", "k2")
    on = compute_limits(graph, H100, cost_model=ROOFLINE, policies=("min-streams",),
                        launch_overhead_s=0.0, event_overhead_s=0.0, keep_results=True)
    assert on.results is not None
    k2 = on.results["min-streams"].kernel("k2")
    assert k2.sm_blocks[0] == 2 and k2.end_s == pytest.approx(8.000028e-6, rel=1e-6)
    assert on.policies_s["min-streams"] > on.serial_s == pytest.approx(8.00002e-6, rel=1e-6)
    off = compute_limits(graph, H100, cost_model=ROOFLINE, policies=("min-streams",),
                         launch_overhead_s=0.0, event_overhead_s=0.0, sm_sharing=False)
    assert off.policies_s["min-streams"] == pytest.approx(7.00002e-6, rel=1e-6)
