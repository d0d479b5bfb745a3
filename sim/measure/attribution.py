"""Which layer each kernel of a traced step belongs to, for traces without layer labels.

The project's own measuring scripts wrap every layer in a ``layer:<name>`` range, so the
ingester names each kernel's layer. Public traces have no such ranges, and recorded no
tensor shapes either. Their kernels can still be attributed by *order*: eager PyTorch calls
one aten op per layer, in the framework's launch order, so the ``i``-th ``aten::conv2d`` of
a step is the ``i``-th convolution of the network in module order, the ``i``-th
``aten::convolution_backward`` the ``i``-th convolution in autograd's order, and so on.

:func:`attribute_step` does that per *family* of ops (convolutions, convolution backwards,
batch norms and their backwards, ReLUs, residual adds, gradient accumulations, pooling, the
classifier, the loss, the optimizer step): the traced op instances of a family, in launch
order, are paired with the kernel graph's layers of that family in its node order, when the
two counts agree; a family whose counts differ is left unattributed and reported. Inside
each paired instance, traced kernels are paired with the layer's lowered kernels class by
class (:mod:`sim.measure.kernel_classes`) in order when the class holds as many kernels on
both sides, else only the longest traced kernel with the lowered kernel of most work.
Kernels launched after the optimizer step (the training loop's own, such as a running-loss
sum) are not the network's and stay unattributed.

The result gives each traced kernel its layer (the forward layer's name, as the ingester
names backward kernels) and, where paired, the lowered kernel whose FLOPs and bytes describe
its work: what a fit of a cost model to traced durations needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx

from gpu_models.kernel import KernelSpec
from sim.measure.ingest import TraceKernel
from sim.measure.kernel_classes import lowered_class, traced_class
from workloads.layers import OpType

#: Traced (outermost aten op, phase) -> family.
_TRACED_FAMILY: dict[tuple[str, str], str] = {
    ("aten::conv2d", "forward"): "conv", ("aten::convolution", "forward"): "conv",
    ("aten::convolution_backward", "backward"): "conv_bwd",
    ("aten::batch_norm", "forward"): "bn",
    ("aten::cudnn_batch_norm_backward", "backward"): "bn_bwd",
    ("aten::native_batch_norm_backward", "backward"): "bn_bwd",
    ("aten::relu_", "forward"): "relu", ("aten::relu", "forward"): "relu",
    ("aten::threshold_backward", "backward"): "relu_bwd",
    ("aten::add_", "forward"): "add", ("aten::add", "forward"): "add",
    ("aten::add_", "backward"): "grad_accum", ("aten::add", "backward"): "grad_accum",
    ("aten::max_pool2d", "forward"): "maxpool",
    ("aten::max_pool2d_with_indices_backward", "backward"): "maxpool_bwd",
    ("aten::adaptive_avg_pool2d", "forward"): "avgpool",
    ("aten::linear", "forward"): "linear",
    ("aten::mm", "backward"): "linear_bwd",
    ("aten::sum", "backward"): "linear_bias",
    ("aten::cross_entropy_loss", "forward"): "loss",
    ("aten::nll_loss_backward", "backward"): "loss_bwd",
    ("aten::_log_softmax_backward_data", "backward"): "loss_bwd",
}
#: Lowered layer op -> family.
_LOWERED_FAMILY: dict[OpType, str] = {
    OpType.CONV2D: "conv", OpType.CONV2D_DGRAD: "conv_bwd", OpType.CONV2D_WGRAD: "conv_bwd",
    OpType.BATCHNORM: "bn", OpType.BATCHNORM_BWD: "bn_bwd", OpType.RELU: "relu",
    OpType.RELU_BWD: "relu_bwd", OpType.ADD: "add", OpType.GRAD_ACCUMULATE: "grad_accum",
    OpType.MAXPOOL: "maxpool", OpType.MAXPOOL_BWD: "maxpool_bwd",
    OpType.ADAPTIVE_AVGPOOL: "avgpool", OpType.LINEAR: "linear",
    OpType.LINEAR_DGRAD: "linear_bwd", OpType.LINEAR_WGRAD: "linear_bwd",
    OpType.CROSS_ENTROPY: "loss", OpType.CROSS_ENTROPY_BWD: "loss_bwd",
    OpType.SGD_UPDATE: "optimizer",
}
#: Families whose consecutive op instances are one lowered layer (the optimizer step's
#: foreach ops; the loss backward's nll_loss_backward + _log_softmax_backward_data).
_MERGED = frozenset({"optimizer", "loss_bwd"})
#: PyTorch's batch-norm counter (``num_batches_tracked += 1``): its own ``aten::add_`` in
#: the trace, the first kernel of the batch-norm layer in lowering.
_COUNTER_MARK = "add<long>"


@dataclass(frozen=True)
class Attribution:
    """The layers and lowered kernels of one traced step's kernels."""

    #: Per traced kernel (same order as given): its forward layer's name, or "".
    layers: tuple[str, ...]
    #: Per traced kernel: the kernel graph node whose work describes it, or "".
    nodes: tuple[str, ...]
    #: family -> (traced op instances, lowered layer units) of families left unattributed.
    unmatched: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def attributed(self) -> int:
        """Traced kernels given a layer."""
        return sum(1 for name in self.layers if name)


def _traced_family(kernel: TraceKernel) -> str:
    if kernel.op.startswith("aten::_foreach_") or kernel.kind.value == "optimizer":
        return "optimizer"
    if kernel.op in ("aten::add_", "aten::add") and _COUNTER_MARK in kernel.name:
        return "bn_counter"
    return _TRACED_FAMILY.get((kernel.op, kernel.phase), "")


def _lowered_units(kernel_graph: nx.DiGraph) -> dict[str, list[tuple[str, list[str]]]]:
    """family -> [(forward layer, [kernel nodes])] in the graph's node order."""
    units: dict[str, dict[str, list[str]]] = {}
    for node, data in kernel_graph.nodes(data=True):
        op = OpType(data["op"])
        family = _LOWERED_FAMILY.get(op, "")
        if not family:
            continue
        forward = data.get("forward_of") or data["layer"]
        if op is OpType.BATCHNORM and _COUNTER_MARK in data["kernel"].library_name:
            family = "bn_counter"
        key = forward if family in ("conv_bwd", "optimizer", "loss_bwd") else data["layer"]
        units.setdefault(family, {}).setdefault(key, []).append(node)
    return {family: list(by_key.items()) for family, by_key in units.items()}


def attribute_step(kernel_graph: nx.DiGraph, traced: Sequence[TraceKernel]) -> Attribution:
    """Attribute one traced step's kernels (launch order) to ``kernel_graph``'s layers."""
    instances: dict[str, list[list[int]]] = {}
    current: tuple[int | None, str] = (None, "")
    families = [_traced_family(k) for k in traced]
    # What the training loop launches after optimizer.step() (a running-loss sum, ...) is
    # not part of the network: such kernels stay unattributed.
    last_step = max((i for i, f in enumerate(families) if f == "optimizer"), default=None)
    for index, family in enumerate(families):
        if last_step is not None and index > last_step:
            break
        if not family:
            current = (None, "")
            continue
        if family in _MERGED and current[1] == family:
            instances[family][-1].append(index)
            continue
        op_seq = traced[index].op_seq
        key = (op_seq, family)
        if op_seq is None or key != current:
            instances.setdefault(family, []).append([])
            current = key
        instances[family][-1].append(index)
    units = _lowered_units(kernel_graph)
    # A linear layer's backward is two aten::mm (data gradient first) and the bias sum.
    if "linear_bwd" in units:
        units["linear_bias"] = [(forward, [n for n in nodes if _is_bias_grad(kernel_graph, n)])
                                for forward, nodes in units["linear_bwd"]
                                if any(_is_bias_grad(kernel_graph, n) for n in nodes)]
        units["linear_bwd"] = [(forward, [n for n in nodes if not _is_bias_grad(kernel_graph, n)])
                               for forward, nodes in units["linear_bwd"]]
        units["linear_bwd"] = _split_by_layer(kernel_graph, units["linear_bwd"])
    layers = [""] * len(traced)
    nodes = [""] * len(traced)
    unmatched: dict[str, tuple[int, int]] = {}
    for family in sorted(set(instances) | set(units)):
        traced_instances = instances.get(family, [])
        lowered_units = units.get(family, [])
        if len(traced_instances) != len(lowered_units):
            unmatched[family] = (len(traced_instances), len(lowered_units))
            continue
        for positions, (forward, unit_nodes) in zip(traced_instances, lowered_units,
                                                    strict=True):
            for position in positions:
                layers[position] = forward
            for position, node in _pair_kernels(kernel_graph, traced, positions, unit_nodes):
                nodes[position] = node
    return Attribution(tuple(layers), tuple(nodes), unmatched)


def _is_bias_grad(kernel_graph: nx.DiGraph, node: str) -> bool:
    data = kernel_graph.nodes[node]
    return data["op"] == OpType.LINEAR_WGRAD.value and "bias grad" in \
        data["kernel"].library_name


def _split_by_layer(kernel_graph: nx.DiGraph, units: list[tuple[str, list[str]]],
                    ) -> list[tuple[str, list[str]]]:
    """One unit per lowered layer (a linear layer's dgrad and wgrad are two aten::mm)."""
    out: list[tuple[str, list[str]]] = []
    for forward, unit_nodes in units:
        by_layer: dict[str, list[str]] = {}
        for node in unit_nodes:
            by_layer.setdefault(kernel_graph.nodes[node]["layer"], []).append(node)
        out.extend((forward, group) for group in by_layer.values())
    return out


def _pair_kernels(kernel_graph: nx.DiGraph, traced: Sequence[TraceKernel],
                  positions: Sequence[int], unit_nodes: Sequence[str],
                  ) -> list[tuple[int, str]]:
    """(traced position, lowered node) pairs of one op instance (see the module docstring)."""
    by_class_traced: dict[str, list[int]] = {}
    for position in positions:
        by_class_traced.setdefault(traced_class(traced[position]), []).append(position)
    by_class_lowered: dict[str, list[str]] = {}
    for node in unit_nodes:
        data = kernel_graph.nodes[node]
        by_class_lowered.setdefault(lowered_class(data["kernel"], data["op"]), []).append(node)
    pairs: list[tuple[int, str]] = []
    for cls, traced_positions in by_class_traced.items():
        lowered_nodes = by_class_lowered.get(cls, [])
        if not lowered_nodes:
            continue
        if len(traced_positions) == len(lowered_nodes):
            pairs.extend(zip(traced_positions, lowered_nodes, strict=True))
            continue
        longest = max(traced_positions, key=lambda p: traced[p].duration_s)
        heaviest = max(lowered_nodes, key=lambda n: _work(kernel_graph.nodes[n]["kernel"]))
        pairs.append((longest, heaviest))
    return pairs


def _work(kernel: KernelSpec) -> tuple[float, float]:
    return (kernel.flops, kernel.dram_bytes)
