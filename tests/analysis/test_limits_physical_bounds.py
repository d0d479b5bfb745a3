"""No schedule beats the GPU's peak (issue 14): over the zoo at batch 1 and 32, every policy of
the limits report takes at least the network's FLOPs at the peak FLOP/s of the pipes they run
on, and its DRAM bytes at the full bandwidth; so does the report's lower bound.

Before SM throughput was shared, two kernels each using their SMs' whole FP32 rate overlapped
for free (tests/engine/test_engine_sm_sharing.py shows the V100 case, and that
``sm_sharing=False`` still gives it).
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from gpu_models.cost import sm_resource
from sim.analysis.limits import limits_for_workload
from sim.analysis.workflow import kernel_graph_for
from workloads import workload_names

#: Concurrent policies of each kind (stream per path, list scheduling with priorities and
#: capped grids): the most overlap at the least search cost.
POLICIES = ("min-streams", "critical-path+priority+cap")
REL = 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("workload", workload_names())
def test_no_policy_beats_flops_over_peak_or_bytes_over_bandwidth(workload: str,
                                                                 batch: int) -> None:
    report = limits_for_workload(workload, batch=batch, policies=POLICIES, keep_results=True)
    assert report.results is not None
    gpu = report.results["serial"].program.gpu
    kernels = [k for _, k in kernel_graph_for(workload, batch=batch, gpu=gpu).nodes(data="kernel")]
    flop_s: dict[str, float] = defaultdict(float)
    for k in kernels:
        flop_s[sm_resource(k, gpu)] += k.flops / gpu.peak_flop_per_s(
            k.dtype, tensor_cores=k.tensor_cores)
    floor_s = max([*flop_s.values(), sum(k.dram_bytes for k in kernels) / gpu.dram_bw_Bps])
    for name, makespan in report.policies_s.items():
        assert makespan >= floor_s * (1 - REL), (name, makespan, dict(flop_s))
    assert report.lower_bound_s >= max(flop_s.values()) * (1 - REL)
