"""Invariants of every policy and of the bounds, on the zoo and on random DAGs.

* the work bound is at most every policy's simulated time, and so, nearly, is the
  critical-path bound (every kernel at its isolated time): a kernel's time alone is not the
  least it can take, as a neighbour can better its block placement
  (:func:`test_a_neighbour_can_shorten_a_dram_bound_kernel`), so a policy may come in a
  little (:data:`REL_CRITICAL_PATH`) below it;
* with no host overhead (zero launch and event cost) and without SM sharing, serial is never
  faster than a policy that keeps the kernels as they are — on every zoo network, and on
  random DAGs whose blocks all have one footprint and move no DRAM bytes. On arbitrary
  random DAGs it is not a theorem of the execution model (the way hypothesis once found it
  to fail, before DRAM was shared max-min fairly, is pinned down in
  :func:`test_concurrency_can_share_dram`). With SM sharing it is not one either: blocks are
  placed by free warps, blind to throughput, so a concurrent kernel can push two blocks of
  a kernel onto one SM whose throughput they then share, where serial gave each block its
  own SM (:func:`test_concurrency_can_pack_blocks_onto_one_sm`). Nor with stream priorities
  (``+priority``): a later kernel of a higher-priority stream takes every slot an earlier
  kernel's blocks leave, so the earlier one's last blocks can start so late that serial wins
  (:func:`test_priority_can_hold_back_an_earlier_kernel_s_last_blocks`, found by hypothesis);
  Grid capping (``+cap``) changes kernels: a capped kernel runs longer on fewer SMs, and
  when its isolated-time slack is not real it can end up slower than serial; and, a
  persistent kernel having no partial last wave, a capped memory-bound kernel can also run
  faster than the isolated time the critical-path bound charges it
  (:func:`test_a_capped_grid_can_beat_its_isolated_time`, found by hypothesis), so a ``+cap``
  policy is held to the work bound only;
* every policy respects every dependency on the simulated timeline.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_models.cost import get_cost_model, isolated_time_s
from gpu_models.cost.waves import lone_kernel_time_s, wave_size
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.occupancy import launch_failure
from gpu_models.presets import load_preset
from sim.analysis.limits import LimitsReport, compute_limits
from sim.analysis.workflow import kernel_graph_for
from sim.scheduling import DEFAULT_POLICIES, Stages, capped_launch
from workloads import workload_names

ROOFLINE = get_cost_model("roofline")
H100 = load_preset("h100")
#: Float noise: sums along different paths and the engine's fluid DRAM clock differ in the
#: last bits (seen: 8 ps in 68 us).
REL = 1e-6
#: How far below the critical-path bound a policy that keeps the kernels may come: a
#: neighbour can improve a DRAM-bound kernel's block placement, so that it ends sooner than
#: alone (:func:`test_a_neighbour_can_shorten_a_dram_bound_kernel`; hypothesis found 1.9e-4
#: on a random DAG). The work bound holds strictly.
REL_CRITICAL_PATH = 1e-3

#: One policy of each kind (stream assignment, barriers, list scheduling, stage search on a
#: small budget, modifiers): the zoo runs stay short. Random DAGs get every default policy.
POLICIES = ["serial", "branches", "min-streams", "levels", "critical-path",
            Stages(max_total_evaluations=30), "critical-path+priority+cap"]

def check_invariants(graph: nx.DiGraph, report: LimitsReport, *, no_host: bool) -> None:
    assert report.results is not None
    for name, t in report.policies_s.items():
        assert report.work_bound_s <= t * (1 + REL), f"{name} beats the work bound"
        if "cap" not in name.split("+"):
            assert report.critical_path_s <= t * (1 + REL_CRITICAL_PATH), \
                f"{name} beats the critical-path bound"
        keeps_order = not {"cap", "priority"} & set(name.split("+"))
        if no_host and not report.sm_sharing and keeps_order:
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
def test_a_neighbour_can_shorten_a_dram_bound_kernel() -> None:
    # Found by hypothesis (test_random_dags_with_host_overhead, shrunk): 265 blocks of a
    # DRAM-bound kernel, two per SM by registers: a wave of 264 at the bandwidth plateau,
    # then one block alone, latency-bound. Next to a one-block kernel on another stream, the
    # SM that block sits on has room for one of them only, so 263 go in the first wave and
    # two in the tail: the bandwidth-bound wave is a block lighter and the tail, already
    # latency-bound, takes no longer with two. The kernel ends 0.14% sooner than alone,
    # below the isolated time the critical-path bound charges it.
    wide = KernelSpec(name="wide", kind="elementwise", grid=(265, 1, 1), threads=256,
                      regs_per_thread=128, smem_per_block_B=0, flops=0.0,
                      dram_bytes=184443042.0)
    small = KernelSpec(name="small", kind="elementwise", grid=(1, 1, 1), threads=64,
                       regs_per_thread=16, smem_per_block_B=0, flops=0.0,
                       dram_bytes=3513617.0)
    graph = nx.DiGraph()
    graph.add_node("small", kernel=small)
    graph.add_node("wide", kernel=wide)
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=["critical-path"],
                            launch_overhead_s=0.0, event_overhead_s=0.0, keep_results=True)
    assert report.results is not None
    run = {k.name: k for k in report.results["critical-path"].kernels}
    assert run["wide"].start_s == run["small"].start_s == 0.0
    alone = isolated_time_s(wide, H100, ROOFLINE)
    assert run["wide"].end_s < alone * (1 - 1e-3)
    assert run["wide"].end_s > alone * (1 - REL_CRITICAL_PATH - 1e-3)
    # The step as a whole is still bounded: small, slowed by wide's traffic, ends last.
    assert report.policies_s["critical-path"] >= report.lower_bound_s


def test_priority_can_hold_back_an_earlier_kernel_s_last_blocks() -> None:
    # Found by hypothesis (test_random_dags_without_host_overhead, SM sharing off): one
    # footprint (8 blocks per SM: 1,056 slots), no DRAM. Serial runs k0, k1, k2 (1,188
    # blocks of 34.5 us: two waves), k3, k4 (925 blocks of 64.8 us: one wave), 136.8 us.
    # min-streams puts k4 on a stream of its own from the start; k0's 136 blocks leave it
    # 920 slots, and its last 5 blocks wait for the next free ones. Without priorities they
    # go first (k4 was handed over first): 111.5 us, faster than serial. With priorities
    # the chain k0 -> k1 -> k2 -> k3 (the critical path) has the higher one, so k2, handed
    # over later, takes every slot that frees until all its blocks are out, and k4's last
    # blocks start only after k2's first blocks have ended: 139.8 us, slower than serial.
    graph = nx.DiGraph()
    for name, blocks, flops in (("k0", 136, 0.0), ("k1", 676, 0.0), ("k2", 1188, 1260999695.0),
                                ("k3", 1, 0.0), ("k4", 925, 1869861509.0)):
        graph.add_node(name, kernel=KernelSpec(
            name=name, kind="elementwise", grid=(blocks, 1, 1), threads=256,
            regs_per_thread=32, smem_per_block_B=0, flops=flops, dram_bytes=0.0))
    graph.add_edges_from([("k0", "k1"), ("k0", "k2"), ("k0", "k3"), ("k1", "k2"),
                          ("k1", "k3"), ("k2", "k3")])
    report = compute_limits(graph, H100, cost_model=ROOFLINE,
                            policies=["min-streams", "min-streams+priority"],
                            launch_overhead_s=0.0, event_overhead_s=0.0, keep_results=True,
                            sm_sharing=False)
    assert report.results is not None
    times = report.policies_s
    assert times["min-streams"] < times["serial"] < times["min-streams+priority"]
    block_s = {n: report.results["serial"].program.kernel(n).block_time_s for n in graph}
    plain = {k.name: k for k in report.results["min-streams"].kernels}
    prioritised = {k.name: k for k in report.results["min-streams+priority"].kernels}
    # k4 starts at 0 either way; without priority its last blocks start when k0's end.
    assert plain["k4"].start_s == prioritised["k4"].start_s == 0.0
    assert plain["k4"].end_s == pytest.approx(block_s["k0"] + block_s["k4"], rel=1e-12)
    assert prioritised["k4"].end_s - block_s["k4"] > prioritised["k2"].start_s + block_s["k2"]
    assert prioritised["k4"].end_s == report.policies_s["min-streams+priority"]


def test_a_capped_grid_can_beat_its_isolated_time() -> None:
    # The kernel hypothesis found (test_random_dags_with_host_overhead): 2,461 blocks of a
    # DRAM-bound elementwise kernel, 264 to a wave (9.3 waves). Alone, its last wave of 85
    # blocks keeps a third of a wave's bytes in flight, so it draws less bandwidth (memory
    # parallelism) for bytes it must still move. Capped to 263 persistent blocks of
    # ceil(2461 / 263) = 10 block times each, a nearly full wave stays in flight to the end:
    # 2.4% faster than the isolated time the critical-path bound charges it (which is why
    # +cap is held to the work bound only).
    kernel = KernelSpec(name="k2", kind="elementwise", grid=(2461, 1, 1), threads=256,
                        regs_per_thread=128, smem_per_block_B=49152, flops=1.05,
                        dram_bytes=184443392.3)
    cost = ROOFLINE(kernel, H100)
    assert wave_size(kernel, H100) == 264
    isolated = isolated_time_s(kernel, H100, ROOFLINE)
    grid, block_time_s = capped_launch(kernel, cost, 263)
    assert (grid, block_time_s) == (263, 10 * cost.block_time_s)
    capped = lone_kernel_time_s(replace(kernel, grid=(grid, 1, 1)), H100,
                                replace(cost, block_time_s=block_time_s))
    assert capped < isolated * 0.98
    # Its work is the same: the work bound still holds it (a capped block holds its SM share
    # for 10 block times, so 263 x 10 >= 2461 block-times of resources).
    assert grid * block_time_s >= kernel.blocks * cost.block_time_s


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
