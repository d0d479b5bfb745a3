"""The steps of one device-campaign pass: their order, time budgets and the dry run.

A pass (``scripts/device_campaign.sh [--quick]``) runs these steps in value order, so that a
pass cut short still leaves the data that matter most (issue 19's parts, numbered as there):

====  =================  ==============================================================
part  step               what
====  =================  ==============================================================
1     contention         two kernels on two streams sharing SMs (FMA, spin, sleep, copy)
2     waves              wave staircases of one kernel
2     concurrency        leftover, priorities, mixed resource shapes
2     queues             8 vs 32 hardware queues (child processes)
3     bandwidth          DRAM bandwidth vs resident warps, alone and in pairs
4     occupancy          CUDA's occupancy API against the calculator
5     launch_overhead    host and device cost of a launch, eager and in a CUDA graph
6     networks           GoogLeNet and Inception-v3, serial vs branches (PyTorch child)
====  =================  ==============================================================

Each step may *start* work (a case, a network configuration) until its budget is spent; the
pass as a whole stops at :data:`PASS_LIMIT_S` (2 and 8 minutes), and a step that would start
with too little time left is skipped and logged. :func:`dry_run` lists every case of a pass
with a time estimate, without a GPU, sized with the project's occupancy calculator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpu_models.occupancy import occupancy
from gpu_models.presets import load_gpu
from gpu_models.units import NS_PER_S
from sim.measure.micro import plans
from sim.measure.micro.schema import EXPERIMENTS

#: The steps of a pass, in run order.
RUN_ORDER: tuple[str, ...] = (*EXPERIMENTS, "networks")
#: Issue 19's part each step belongs to.
PART: dict[str, int] = {"contention": 1, "waves": 2, "concurrency": 2, "queues": 2,
                        "bandwidth": 3, "occupancy": 4, "launch_overhead": 5, "networks": 6}
#: Seconds each step may start new work for: (quick, full). Work in progress finishes.
BUDGETS_S: dict[str, tuple[float, float]] = {
    "contention": (10.0, 40.0),
    "waves": (6.0, 40.0),
    "concurrency": (5.0, 25.0),
    "queues": (14.0, 50.0),  # split between the child processes
    "bandwidth": (8.0, 45.0),
    "occupancy": (8.0, 45.0),
    "launch_overhead": (4.0, 15.0),
    "networks": (45.0, 190.0),
}
#: Wall-clock limit of a pass (quick, full): issue 19's 2 and 8 minutes. The script's own
#: hard timeout sits a little above it and well below the device tool's 10-minute limit.
PASS_LIMIT_S: tuple[float, float] = (120.0, 480.0)
#: Seconds of a pass outside the budgets: Python and CuPy start, the NVRTC compiles of the
#: five variants, the self-check, and the packing and summary at the end.
STARTUP_S = 12.0
#: A queue child process's own start (CuPy import, context, kernels from CuPy's disk cache).
QUEUE_CHILD_START_S = 4.0
#: Seconds kept free at the end of a pass for the summary and the last packing.
RESERVE_S = 3.0
#: A step that would start with less than this left before the pass limit is skipped.
MIN_START_S = 2.0
#: Seconds a child process (queues, networks) may run past its budget before it is stopped.
GRACE_S = 30.0


@dataclass(frozen=True)
class NetworkSettings:
    """What the networks step measures (campaign 2's code, :mod:`sim.measure.netbench`)."""

    networks: tuple[str, ...] = ("googlenet", "inception_v3")
    precisions: tuple[str, ...] = ("tf32",)
    phases: tuple[str, ...] = ("inference",)
    batches: tuple[int, ...] = (1,)
    reps: int = 10
    warmup: int = 3


#: Quick: both networks at batch 1, inference (eager and CUDA graph). Full: batch 1 and 32,
#: then training at batch 32 (the configurations are started in that order).
NETWORK_SETTINGS: tuple[NetworkSettings, NetworkSettings] = (
    NetworkSettings(),
    NetworkSettings(phases=("inference", "training"), batches=(1, 32), reps=20),
)


def limit_s(quick: bool, max_s: float | None = None) -> float:
    """A pass's wall-clock limit: the default, or ``max_s`` when given (a shorter pass when
    the device time left is short)."""
    default = PASS_LIMIT_S[0 if quick else 1]
    return default if max_s is None else float(max_s)


def budget_s(step: str, quick: bool, max_s: float | None = None) -> float:
    """A step's budget, scaled with the pass's limit when ``max_s`` differs from the default
    (down when device time is short; up on a slow stand-in, in the tests)."""
    default = PASS_LIMIT_S[0 if quick else 1]
    return BUDGETS_S[step][0 if quick else 1] * limit_s(quick, max_s) / default


# ---------------------------------------------------------------------- dry run
def calculator_slots(gpu_name: str) -> tuple[int, Callable[[plans.Shape], int], float, float]:
    """SM count, blocks per SM of a shape (the calculator with ptxas's sm_90 register counts),
    DRAM bandwidth and clock of preset ``gpu_name``: what the plans need, without a GPU."""
    spec = load_gpu(gpu_name)

    def slots(shape: plans.Shape) -> int:
        regs = plans.PTXAS_REGS_SM90[(shape.function, shape.variant)]
        return max(1, occupancy(spec, shape.threads, regs, shape.smem_dynamic_B).blocks_per_sm)

    return spec.sm_count, slots, spec.dram_bw_Bps, spec.clock_hz


def dry_run(gpu_name: str, quick: bool) -> dict[str, Any]:
    """Every case of a pass on preset ``gpu_name`` with a rough time estimate, per step with
    its budget, and the totals against the pass limit."""
    from sim.measure.netbench.campaign import EST_CONFIG_S, estimate_s, plan

    sm_count, slots, bw, clock_hz = calculator_slots(gpu_name)
    spec = load_gpu(gpu_name)
    timeline = {
        "contention": plans.contention_plan(sm_count, slots, quick, clock_hz,
                                            smem_per_sm_B=spec.smem_per_sm_B),
        "waves": plans.waves_plan(sm_count, slots, quick),
        "concurrency": plans.concurrency_plan(sm_count, slots, quick),
        "queues": [c for n in plans.QUEUE_CONNECTIONS for c in plans.queues_plan(n, quick)],
        "bandwidth": plans.bandwidth_plan(sm_count, slots, quick,
                                          smem_per_sm_B=spec.smem_per_sm_B),
    }
    steps: dict[str, Any] = {}
    for name, cases in timeline.items():
        estimates = {c.name: plans.estimate_case_s(c, sm_count, slots, bw) for c in cases}
        total = sum(estimates.values())
        if name == "queues":
            total += QUEUE_CHILD_START_S * len(plans.QUEUE_CONNECTIONS)
        steps[name] = {"cases": len(cases), "launches": sum(len(c.kernels) for c in cases),
                       "estimate_s": total, "case_estimates_s": estimates}
    shapes = plans.occupancy_shapes(quick, spec.max_smem_per_block_B)
    # Two launches per shape of at most two waves, plus a few ms of host work each.
    per_shape_s = 2 * (2 * plans.OCCUPANCY_SPIN_NS / NS_PER_S + 3e-3)
    steps["occupancy"] = {"cases": len(shapes), "estimate_s": len(shapes) * per_shape_s,
                          "case_estimates_s": {
                              f"t{s.threads}_{s.variant}_smem{s.smem_dynamic_B}": per_shape_s
                              for s in shapes}}
    lp = plans.launch_plan(quick)
    launch_s = (lp.repeats + 1) * (lp.host_launches * 10e-6 + 3 * lp.device_launches * 60e-6)
    steps["launch_overhead"] = {"cases": 4, "estimate_s": launch_s, "case_estimates_s": {
        n: launch_s / 4 for n in ("host_eager", "chain_eager", "chain_gated", "graph")}}
    net = NETWORK_SETTINGS[0 if quick else 1]
    configs = plan(quick, net.networks, net.precisions, phases=net.phases, batches=net.batches)
    steps["networks"] = {"cases": len(configs), "estimate_s": estimate_s(configs),
                         "case_estimates_s": {c.tag: EST_CONFIG_S[c.phase] for c in configs}}
    for name, info in steps.items():
        info["part"] = PART[name]
        info["budget_s"] = budget_s(name, quick)
    ordered = {name: steps[name] for name in RUN_ORDER}
    estimate_total = STARTUP_S + sum(s["estimate_s"] for s in ordered.values())
    return {"gpu": gpu_name, "quick": quick, "sm_count": sm_count, "steps": ordered,
            "startup_s": STARTUP_S, "estimate_total_s": estimate_total,
            "budget_total_s": STARTUP_S + sum(s["budget_s"] for s in ordered.values()),
            "limit_s": limit_s(quick)}


def format_dry_run(result: dict[str, Any], cases: bool = True) -> str:
    """The dry run as text: one line per step, and per case when ``cases``."""
    lines = [f"device campaign on {result['gpu']} ({result['sm_count']} SMs), "
             f"{'quick' if result['quick'] else 'full'} pass; sized with the calculator "
             "(estimates are guesses, not measurements)"]
    for name, info in result["steps"].items():
        lines.append(f"  part {info['part']} {name:16s} {info['cases']:4d} cases  "
                     f"estimate {info['estimate_s']:6.1f} s  budget {info['budget_s']:5.0f} s")
        if cases:
            for case, est in info["case_estimates_s"].items():
                lines.append(f"      {case:40s} {est * 1e3:9.1f} ms")
    lines.append(f"  start-up and packing {result['startup_s']:.0f} s; estimate "
                 f"{result['estimate_total_s']:.0f} s, budgets {result['budget_total_s']:.0f} s,"
                 f" pass limit {result['limit_s']:.0f} s")
    return "\n".join(lines)

