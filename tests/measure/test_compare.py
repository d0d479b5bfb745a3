"""The lowering checked against a profiler trace's kernels (counts by kind, launch configs)."""

from __future__ import annotations

import json

import networkx as nx

from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.spec import GPUSpec
from sim.measure.compare import compare_to_trace
from sim.measure.ingest import TraceKernel
from workloads import build
from workloads.lowering import lower


def _main_kernel(kg: nx.DiGraph, layer: str) -> KernelSpec:
    return next(d["kernel"] for _, d in kg.nodes(data=True)
                if d["layer"] == layer and d["kernel"].kind is KernelKind.CONV_FWD)


def test_compare_to_trace(a100: GPUSpec) -> None:
    kg = lower(build("resnet18", batch=2), a100, precision="tf32")
    conv = _main_kernel(kg, "layer1.0.conv1")

    def traced(name: str, kind: KernelKind, grid: tuple[int, int, int], step: int,
               layer: str = "", config: tuple[int, int, int] = (128, 32, 0)) -> TraceKernel:
        return TraceKernel(name=name, ts_s=0.0, duration_s=1e-5, device=0, stream=7,
                           correlation=None, grid=grid, block=(config[0], 1, 1),
                           regs_per_thread=config[1], smem_per_block_B=config[2], kind=kind,
                           layer_name=layer, phase="forward", step=step)

    same = (conv.threads, conv.regs_per_thread, conv.smem_per_block_B)
    kernels = [
        traced("fprop", KernelKind.CONV_FWD, conv.grid, 1, "layer1.0.conv1", same),
        traced("fprop", KernelKind.CONV_FWD, (1, 1, 1), 1, "layer1.0.conv2"),
        traced("relu", KernelKind.ELEMENTWISE, (8, 1, 1), 1),
        traced("relu", KernelKind.ELEMENTWISE, (8, 1, 1), 2),  # another step: not counted
    ]
    result = compare_to_trace(kg, kernels)
    assert result.step == 1 and result.traced_kernels == 3
    assert result.lowered_kernels == kg.number_of_nodes()
    counts = {c.kind: (c.lowered, c.traced) for c in result.by_kind}
    assert counts["conv_fwd"][1] == 2 and counts["elementwise"][1] == 1
    matches = {m.layer: m for m in result.layers}
    assert matches["layer1.0.conv1"].same_config
    assert matches["layer1.0.conv1"].blocks_ratio == 1.0
    assert not matches["layer1.0.conv2"].same_config
    assert result.config_agreement == 0.5
    assert json.loads(json.dumps(result.to_dict()))["config_agreement"] == 0.5
