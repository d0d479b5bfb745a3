"""The device campaign measures the schedule the simulator simulates: the streams the torch
harness puts each layer on (``assign_streams``) are the ``branches`` policy's, on every zoo
network, forward and (through autograd's rule) backward, whatever the GPU."""

from __future__ import annotations

import networkx as nx
import pytest

from gpu_models.presets import load_preset
from sim.analysis.workflow import kernel_graph_for
from sim.measure.netbench.torch_graph import assign_streams
from sim.scheduling import get_policy
from sim.scheduling.base import ScheduleContext
from sim.scheduling.dag import kernel_layer_dag
from workloads import build, workload_names
from workloads.analysis import launching_layer_dag


@pytest.mark.parametrize("workload", workload_names())
@pytest.mark.parametrize("phase", ["inference", "training"])
def test_measured_and_simulated_streams_are_equal(workload: str, phase: str) -> None:
    layers = build(workload, batch=1, phase=phase)
    measured = assign_streams(layers, "branches")
    for gpu in ("h100", "v100"):
        kernel_graph = kernel_graph_for(workload, batch=1, phase=phase, gpu=load_preset(gpu))
        # The policy reads the layers' structure, which lowering leaves as it was.
        assert nx.utils.graphs_equal(kernel_layer_dag(kernel_graph),
                                     launching_layer_dag(layers))
        schedule = get_policy("branches").schedule(
            ScheduleContext(kernel_graph, load_preset(gpu), costs={}, isolated_s={}))
        for kernel, attrs in kernel_graph.nodes(data=True):
            stream = schedule.stream_of[kernel]
            if attrs["layer"] in measured:
                assert stream == measured[attrs["layer"]], (gpu, kernel)
            elif attrs["phase"] == "backward" and attrs["forward_of"] in measured:
                # autograd runs a backward op on its forward op's stream
                assert stream == measured[attrs["forward_of"]], (gpu, kernel)
            else:  # loss, optimizer
                assert stream == 0, (gpu, kernel)


def test_googlenet_branches_get_four_streams() -> None:
    measured = assign_streams(build("googlenet", batch=1), "branches")
    module = {n: s for n, s in measured.items() if n.startswith("inception3a.")}
    assert {s for n, s in module.items() if ".branch" in n} == {0, 1, 2, 3}
