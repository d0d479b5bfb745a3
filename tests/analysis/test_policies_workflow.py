"""The workflow helpers the policies, limits and CLI share."""

from __future__ import annotations

import pytest

from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec
from sim.analysis.workflow import (
    busy_sm_fraction,
    dram_utilisation,
    kernel_graph_for,
    simulate_workload,
    time_average,
)
from workloads import build
from workloads.graph import framework_order


def test_time_average_of_a_step_function() -> None:
    # 2 on [0, 1), 4 on [1, 3), cut at 4: (2 + 8 + 4) / 4.
    assert time_average((0.0, 1.0, 3.0), (2.0, 4.0, 4.0), 4.0) == pytest.approx(3.5)
    assert time_average((0.0, 1.0), (2.0, 0.0), 0.5) == pytest.approx(2.0)
    assert time_average((), (), 1.0) == 0.0


def test_kernel_graph_follows_the_framework_order(h100: GPUSpec) -> None:
    layers = build("googlenet", batch=1)
    kernel_graph = kernel_graph_for("googlenet", batch=1, gpu=h100)
    index = {name: i for i, name in enumerate(layers.nodes)}
    positions = [index[kernel_graph.nodes[n]["layer"]] for n in kernel_graph.nodes]
    assert positions == sorted(positions)
    # The insertion order is the framework's launch order (a topological order).
    assert list(kernel_graph.nodes) == framework_order(kernel_graph)


def test_simulate_workload_summary(v100: GPUSpec) -> None:
    run = simulate_workload("resnet18", batch=4, gpu=v100, policy="critical-path:3")
    assert run.run.policy == "critical-path:3"
    assert len({k.stream for k in run.program.kernels}) <= 3
    assert run.result.makespan_s > 0
    assert 0 < busy_sm_fraction(run.result) <= 1
    assert 0 < dram_utilisation(run.result) <= 1


def test_bad_precision_names_it(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="fp64"):
        kernel_graph_for("alexnet", precision="fp64", gpu=h100)
