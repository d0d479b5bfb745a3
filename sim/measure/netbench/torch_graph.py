"""Run a gpusim layer graph as a real PyTorch network, serially or on several CUDA streams.

The device campaign measures the networks of the model zoo with cuDNN, so that the kernels
it records belong to exactly the layers gpusim simulates. :class:`GraphNet` is an
``nn.Module`` built from the forward nodes of a layer graph (``workloads.build``): each node
becomes the matching torch op with parameters of the node's shapes, executed in the graph's
topological order. Two things make it a measuring instrument:

* **layer labels** – with ``label_layers=True`` every node runs inside
  ``torch.profiler.record_function("layer:<name>")``, so a profiler trace attributes each
  kernel to its gpusim layer (the ingester reads the ``layer:`` prefix);
* **streams** – with a stream assignment (``assign_streams``) each node runs on its
  stream; a node waits, through CUDA events, only for predecessors on *other* streams, and
  every side stream joins the caller's stream at the end, so the module can also be
  captured in a CUDA graph. On the CPU the assignment is ignored.

Input order of a node's tensors is the order its in-edges were added (the builder adds
them in argument order, which is what concat order needs); a node reading the network input
gets it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from gpu_models.errors import GpusimError
from sim.scheduling.dag import branch_streams
from workloads.analysis import launching_layer_dag
from workloads.layers import Layer, OpType


def forward_nodes(graph: nx.DiGraph) -> list[str]:
    """Forward-phase nodes of ``graph`` in a deterministic topological order."""
    forward = [n for n, layer in graph.nodes(data="layer") if layer.phase == "forward"]
    sub = graph.subgraph(forward)
    return list(nx.lexicographical_topological_sort(sub, key=lambda n: forward.index(n)))


def assign_streams(graph: nx.DiGraph, mode: str) -> dict[str, int]:
    """Stream index (0 = the caller's stream) of every forward node.

    ``serial``: everything on stream 0. ``branches``: the streams of the simulated
    ``branches`` policy (:func:`sim.scheduling.dag.branch_streams` of the layers that launch
    kernels), so that a measured run and its simulation follow the same schedule; a view
    (which launches nothing) runs on the stream of its first input. Backward ops need no
    assignment: autograd runs each on its forward op's stream, as the policy does.
    """
    nodes = forward_nodes(graph)
    if mode == "serial":
        return dict.fromkeys(nodes, 0)
    if mode != "branches":
        raise GpusimError(f"unknown stream mode {mode!r}; expected 'serial' or 'branches'")
    # A copy, not graph.subgraph(): a subgraph view may iterate its nodes in set order.
    forward = nx.DiGraph()
    forward.add_nodes_from((n, graph.nodes[n]) for n in nodes)
    forward.add_edges_from((p, n) for n in nodes for p in graph.predecessors(n) if p in forward)
    streams = branch_streams(launching_layer_dag(forward))
    for node in nodes:
        if node not in streams:
            preds = [p for p in graph.predecessors(node) if p in streams]
            streams[node] = streams[preds[0]] if preds else 0
    return {node: streams[node] for node in nodes}


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise GpusimError("PyTorch is needed here: pip install 'gpusim[torch]'") from None
    return torch


def _make_module(layer: Layer) -> Any:
    torch = _torch()
    nn = torch.nn
    if layer.op is OpType.CONV2D:
        return nn.Conv2d(layer.inputs[0][1], layer.output[1], layer.kernel, layer.stride,
                         layer.padding, layer.dilation, layer.groups, bias=layer.bias)
    if layer.op is OpType.LINEAR:
        return nn.Linear(layer.inputs[0][-1], layer.output[-1], bias=layer.bias)
    if layer.op is OpType.BATCHNORM:
        channels = layer.inputs[0][1]
        return nn.BatchNorm2d(channels) if len(layer.inputs[0]) == 4 else nn.BatchNorm1d(channels)
    return None


def _apply(layer: Layer, module: Any, args: list[Any], training: bool) -> Any:
    torch = _torch()
    f = torch.nn.functional
    op = layer.op
    if module is not None:
        return module(args[0])
    if op is OpType.RELU:
        return f.relu(args[0])
    if op is OpType.RELU6:
        return f.relu6(args[0])
    if op is OpType.MAXPOOL:
        return f.max_pool2d(args[0], layer.kernel, layer.stride, layer.padding,
                            layer.dilation, ceil_mode=layer.ceil_mode)
    if op is OpType.AVGPOOL:
        return f.avg_pool2d(args[0], layer.kernel, layer.stride, layer.padding,
                            ceil_mode=layer.ceil_mode)
    if op is OpType.ADAPTIVE_AVGPOOL:
        return f.adaptive_avg_pool2d(args[0], layer.output[2:])
    if op is OpType.ADD:
        out = args[0]
        for other in args[1:]:
            out = out + other
        return out
    if op is OpType.CONCAT:
        return torch.cat(args, dim=1)
    if op is OpType.DROPOUT:
        # The layer record keeps no drop probability; the kernel is the same for any p.
        return f.dropout(args[0], 0.5, training)
    if op is OpType.FLATTEN:
        return torch.flatten(args[0], 1)
    if op is OpType.LRN:
        return f.local_response_norm(args[0], 5)
    if op is OpType.SOFTMAX:
        return f.softmax(args[0], dim=1)
    raise GpusimError(f"layer {layer.name!r}: op {op.value} has no torch equivalent here")


def build_net(graph: nx.DiGraph, streams: Mapping[str, int] | None = None,
              label_layers: bool = False) -> Any:
    """A :class:`GraphNet` (an ``nn.Module``) for the forward nodes of ``graph``."""
    torch = _torch()

    class GraphNet(torch.nn.Module):  # type: ignore[name-defined]
        """The forward pass of a gpusim layer graph (see the module docstring)."""

        def __init__(self) -> None:
            super().__init__()
            self.graph = graph
            self.order = forward_nodes(graph)
            self.stream_of = dict(streams or dict.fromkeys(self.order, 0))
            self.label_layers = label_layers
            self.ops = torch.nn.ModuleDict()
            self._keys: dict[str, str] = {}
            for i, node in enumerate(self.order):
                module = _make_module(graph.nodes[node]["layer"])
                if module is not None:
                    key = f"n{i}"
                    self.ops[key] = module
                    self._keys[node] = key
            self.outputs = list(graph.graph.get("outputs", [])) or [self.order[-1]]
            self._side: dict[int, Any] = {}

        def _side_stream(self, index: int) -> Any:
            if index not in self._side:
                self._side[index] = torch.cuda.Stream()
            return self._side[index]

        def forward(self, x: Any) -> Any:
            values: dict[str, Any] = {}
            events: dict[str, Any] = {}
            use_streams = x.is_cuda and any(self.stream_of.values())
            main: Any = torch.cuda.current_stream() if use_streams else None
            if use_streams:  # side streams start after the input is ready
                for index in sorted(set(self.stream_of.values()) - {0}):
                    self._side_stream(index).wait_stream(main)
            for node in self.order:
                layer: Layer = self.graph.nodes[node]["layer"]
                preds = [p for p in self.graph.predecessors(node) if p in values]
                args = [values[p] for p in preds]
                if len(args) < len(layer.inputs):
                    args.insert(0, x)
                stream: Any = None
                if use_streams:
                    index = self.stream_of[node]
                    stream = main if index == 0 else self._side_stream(index)
                    for p in preds:
                        if self.stream_of[p] != index:
                            stream.wait_event(events[p])
                            values[p].record_stream(stream)
                module = self.ops[self._keys[node]] if node in self._keys else None
                with (torch.cuda.stream(stream) if stream is not None else _null()), \
                        (torch.profiler.record_function(f"layer:{node}")
                         if self.label_layers else _null()):
                    values[node] = _apply(layer, module, args, self.training)
                    if use_streams and any(self.stream_of[s] != self.stream_of[node]
                                           for s in self.graph.successors(node)):
                        events[node] = torch.cuda.Event()
                        events[node].record(stream)
            if use_streams:  # join every side stream back into the caller's stream
                for side in self._side.values():
                    main.wait_stream(side)
            outs = [values[o] for o in self.outputs]
            return outs[0] if len(outs) == 1 else tuple(outs)

    return GraphNet()


class _null:
    """A do-nothing context manager (cheaper than contextlib.nullcontext in a hot loop)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
