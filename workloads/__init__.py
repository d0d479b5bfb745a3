"""Workloads: CNNs as layer DAGs (networkx), their training graphs, analysis and importers.

- :mod:`workloads.layers`: the :class:`Layer` record on every node, :class:`OpType`.
- :mod:`workloads.graph`: :class:`GraphBuilder` (validated construction) and checks.
- :mod:`workloads.zoo`: torchvision-exact CNNs plus PathNet and RandWire.
- :mod:`workloads.training`: forward graph -> training graph (loss, backward, optimizer).
- :mod:`workloads.analysis`: op counts, critical paths, widths, conv antichains.
- :mod:`workloads.importers`: torch.fx (:mod:`workloads.fx_import`) and ONNX models ->
  layer graphs; :mod:`workloads.graphfile`: gpusim's JSON/TOML layer-graph format.
- :mod:`workloads.sources`: every form a workload can be named in (zoo name, ONNX file,
  graph file, ``torchvision:NAME``); :func:`build` takes any of them.

Most callers need only :func:`build` and :func:`list_workloads`.
"""

from workloads.graph import GraphBuilder, Tensor, validate_graph
from workloads.layers import Layer, OpType
from workloads.registry import (
    WorkloadInfo,
    build,
    forward_macs,
    get_workload,
    list_workloads,
    param_count,
    workload_names,
    workload_source,
)
from workloads.training import make_training_graph

__all__ = [
    "GraphBuilder",
    "Layer",
    "OpType",
    "Tensor",
    "WorkloadInfo",
    "build",
    "forward_macs",
    "get_workload",
    "list_workloads",
    "make_training_graph",
    "param_count",
    "validate_graph",
    "workload_names",
    "workload_source",
]
