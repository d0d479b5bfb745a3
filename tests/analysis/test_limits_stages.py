"""``stages`` never loses to ``serial``: the IOS-style search compares every slice with one
sequential stage and the whole schedule with ``serial`` under the simulator it searches
with, so on every zoo network (batch 1, inference and training) it is at most serial, with
and without host overhead. (The looser bound the review asked for, serial + event overhead
x events, follows: this one is tighter.)"""

from __future__ import annotations

import pytest

from gpu_models.cost import get_cost_model
from gpu_models.presets import load_preset
from sim.analysis.limits import compute_limits
from sim.analysis.workflow import kernel_graph_for
from sim.scheduling import Stages
from workloads import workload_names

ROOFLINE = get_cost_model("roofline")
H100 = load_preset("h100")
REL = 1e-9


@pytest.mark.parametrize("overhead", ["zero", "default"])
@pytest.mark.parametrize("phase", ["inference", "training"])
@pytest.mark.parametrize("workload", workload_names())
def test_stages_is_never_slower_than_serial(workload: str, phase: str, overhead: str) -> None:
    graph = kernel_graph_for(workload, batch=1, phase=phase, gpu=H100)
    zero = 0.0 if overhead == "zero" else None
    report = compute_limits(graph, H100, cost_model=ROOFLINE, policies=["serial", "stages"],
                            launch_overhead_s=zero, event_overhead_s=zero)
    serial_s, stages_s = report.policies_s["serial"], report.policies_s["stages"]
    event_s = 0.0 if zero == 0.0 else H100.event_overhead_s
    assert stages_s <= serial_s * (1 + REL) + event_s * report.events["stages"]
    assert stages_s <= serial_s * (1 + REL), (workload, phase, overhead, stages_s, serial_s)


def test_stages_fallback_is_sequential_without_budget() -> None:
    """A slice that cannot be searched and cannot be priced runs as one sequential stage."""
    graph = kernel_graph_for("googlenet", batch=1, gpu=H100)
    report = compute_limits(graph, H100, cost_model=ROOFLINE,
                            policies=["serial", Stages(max_total_evaluations=0)],
                            launch_overhead_s=5e-6)
    assert report.policies_s["stages"] <= report.policies_s["serial"] * (1 + REL)


def test_stages_budget_scales_with_the_graph() -> None:
    policy = Stages()
    assert policy.evaluation_budget(10) == policy.min_total_evaluations
    assert policy.evaluation_budget(900) == 900
    assert policy.evaluation_budget(10**6) == policy.max_total_evaluations
    assert Stages(total_evaluations=7).evaluation_budget(10**6) == 7
