"""Lowering: a layer graph -> the kernel graph a GPU library would launch for it.

Every operation of a workload graph (:mod:`workloads.registry`) becomes one or more GPU
kernels (:class:`~gpu_models.kernel.KernelSpec`) chosen the way cuDNN, cuBLAS and eager
PyTorch choose them on the GPU's architecture: convolutions with the algorithm cuDNN runs
there (:mod:`workloads.lowering.algorithms`: Winograd for fp32 3x3 stride-1 passes on
sm70/sm75), else as implicit GEMMs tiled with the architecture's thread-block tiles
(:mod:`workloads.lowering.tiles`, tables in ``workloads/lowering/data/``), with split-K for
wave utilisation and a reduction kernel where the GEMM is narrow;
linear layers as cuBLAS GEMMs; batch norm, pooling, elementwise, concat, loss and optimizer
ops as the ATen/cuDNN kernels they launch (:mod:`workloads.lowering.ops` lists each rule)::

    from workloads import build
    from workloads.lowering import lower
    kg = lower(build("resnet50", batch=32, phase="training"), load_gpu("a100"),
               precision="tf32")

The **kernel graph** is a networkx ``DiGraph``: one node per kernel, named ``<layer>`` when
the layer launches one kernel and ``<layer>#<i>`` when it launches several; node attributes
``kernel`` (the KernelSpec), ``layer`` (the layer's name), ``op``, ``module``, ``branch``,
``phase`` and ``forward_of`` (copied from the layer). Edges are dependencies: a layer's
kernels form a chain, and its first kernel depends on the last kernel of each predecessor
layer; layers that launch nothing (views, ops fused away) pass their predecessors'
dependencies through.
Nodes are added in eager launch order (the layer graph's node order: forward in module
order, backward as autograd runs it), so ``list(kg.nodes)`` is the single-stream program.
``graph.graph`` keeps ``workload``, ``batch``, ``resolution``, ``phase``, ``precision``,
``fusion``, ``layout``, ``gpu``, ``fused`` (each layer fused away -> the convolution it
runs in; empty without fusion) and ``framework`` (the profile's name, "" without one).

Framework: ``framework="pytorch"`` (or ``pytorch-wd``, ``pytorch-ddp``,
``pytorch-legacy``; :mod:`workloads.lowering.framework`) adds the framework's own kernels:
its optimizer implementation, zero_grad fills, AccumulateGrad adds and DDP's kernels.

Layout: ``layout="nchw"`` (default, PyTorch's default memory format) adds the NCHW <-> NHWC
copies cuDNN launches around tensor-op convolution kernels and runs 1x1 convolutions as
per-image GEMMs; ``layout="nhwc"`` is ``channels_last`` (no copies).

Fusion: ``fusion="eager"`` (default) is what eager PyTorch launches: conv, batch norm and
ReLU as separate kernels. ``fusion="inference"`` (inference graphs only) is what TensorRT or
cuDNN's fusion runtime does: a batch norm that follows a convolution is folded into its
weights, and a following ReLU/ReLU6 and a residual add (with its ReLU) run in the
convolution's epilogue; those layers launch nothing. A fused residual add reads the add's
other input, so the fused convolution depends on that input's producer too (ResNet's
``layer1.0.conv3`` runs ``+bn+add+relu`` after ``layer1.0.downsample.0``) and, as such a
runtime orders it, launches after it. Such runtimes keep tensors in NHWC: combine it with
``layout="nhwc"`` for an engine without layout copies.

Calibration: where calibration data (:mod:`gpu_models.calibration`) recorded the kernel a
library actually launched for a layer on this GPU (same preset, the layer's name, the
pass's kernel kind, and the same dtype and math units -- tensor cores or not -- as the
lowered kernel: a bf16 measurement says nothing about an fp32 kernel), the GEMM kernel of
that layer takes the recorded launch configuration (grid, threads, registers, shared
memory, library name) and its measured duration; FLOPs and bytes stay lowering's.
Lowering needs no calibration data.

Checking a kernel graph against the kernels of a real profiler trace is measurement work:
:func:`sim.measure.compare.compare_to_trace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx

from gpu_models.calibration import CalibrationRecord, CalibrationSet
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.occupancy import launch_failure
from gpu_models.spec import GPUSpec
from workloads.graph import framework_order
from workloads.layers import Layer, OpType
from workloads.lowering.framework import (
    PARAM_GRAD_OPS,
    Framework,
    list_frameworks,
    load_framework,
)
from workloads.lowering.ops import (
    CONV_PASSES,
    LAYOUTS,
    STORAGE_BYTES,
    STORAGE_DTYPE,
    Context,
    GemmShape,
    check_options,
    conv_algorithm_candidates,
    conv_layer,
    gemm_layer,
    gemm_shape,
    is_depthwise,
    layer_kernels,
    lower_layer,
    multi_tensor_launches,
    name_kernels,
    param_tensors,
    warn_math_fallback,
)
from workloads.lowering.tiles import (
    Tile,
    TileChoice,
    check_precision,
    load_table,
    math_for,
    select_tile,
    table_for,
)

#: Fusion modes of :func:`lower`.
FUSIONS: tuple[str, ...] = ("eager", "inference")

_MAIN_KINDS: frozenset[KernelKind] = frozenset(
    {KernelKind.CONV_FWD, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD, KernelKind.GEMM}
)


def lower(
    graph: nx.DiGraph, gpu: GPUSpec, *, precision: str = "fp32", fusion: str = "eager",
    layout: str = "nchw", calibration: CalibrationSet | Sequence[CalibrationSet] | None = None,
    framework: str | Framework | None = None,
) -> nx.DiGraph:
    """The kernel graph of a layer graph on ``gpu`` (see the module docstring).

    ``framework`` (a profile of :mod:`workloads.lowering.framework`, e.g. ``"pytorch-ddp"``)
    adds the framework's own kernels: its optimizer implementation, zero_grad,
    AccumulateGrad and DDP kernels. Without one, the graph's optimizer ops launch as the
    training graph names them and no framework kernel is added.

    Raises :class:`GpusimError` naming the layer for an op without a lowering rule or a
    kernel that cannot launch on ``gpu``.
    """
    if fusion not in FUSIONS:
        raise GpusimError(f"fusion must be one of {', '.join(FUSIONS)} (got {fusion!r})")
    # The one precision/layout check of the whole lowering: the rules below trust them.
    check_options(precision, layout)
    warn_math_fallback(gpu, precision)
    ctx = Context(gpu, precision, layout)
    meta = graph.graph
    if fusion == "inference" and meta.get("phase") == "training":
        raise GpusimError("fusion='inference' folds batch norm into convolutions: it applies "
                          "to inference graphs, not training graphs")
    sets = _calibration_sets(calibration, gpu)
    plan = _fusion_plan(graph) if fusion == "inference" else _FusionPlan()
    profile = load_framework(framework) if framework is not None else None
    step_start: list[KernelSpec] = []
    if profile is not None:
        bn_channels = [graph.nodes[n]["layer"].inputs[0][1] for n in framework_order(graph)
                       if graph.nodes[n]["layer"].op is OpType.BATCHNORM
                       and graph.nodes[n]["layer"].training]
        step_start = profile.step_start_kernels(
            next(graph.nodes[n]["layer"] for n in framework_order(graph)), ctx, bn_channels)

    kg = nx.DiGraph()
    kg.graph.update(
        workload=meta.get("name", ""), batch=meta.get("batch"),
        resolution=meta.get("resolution"), phase=meta.get("phase", "inference"),
        precision=precision, fusion=fusion, layout=layout, gpu=gpu.name,
        fused=dict(plan.owner), framework=profile.name if profile else "",
    )
    exits: dict[str, tuple[str, ...]] = {}
    for node in framework_order(_with_extra_inputs(graph, plan.extra_inputs)):
        layer: Layer = graph.nodes[node]["layer"]
        deps: list[str] = []
        # A conv with a fused residual add also reads the add's other input(s).
        for pred in (*graph.predecessors(node), *plan.extra_inputs.get(node, ())):
            deps.extend(d for d in exits[pred] if d not in deps)
        if node in plan.owner:
            kernels: list[KernelSpec] = []
        else:
            try:
                kernels = _layer_kernels(graph, node, layer, ctx, plan, profile)
            except GpusimError as exc:
                message = str(exc)
                if f"layer {node!r}" in message:
                    raise
                raise GpusimError(f"layer {node!r}: {message}") from None
            if kernels and step_start:
                kernels = name_kernels(node, [*step_start, *kernels])
                step_start = []
        if sets:
            kernels = [_calibrated(k, layer, gpu, sets) for k in kernels]
        if not kernels:
            exits[node] = tuple(deps)
            continue
        previous: Sequence[str] = deps
        for kernel in kernels:
            failure = launch_failure(gpu, kernel.threads, kernel.regs_per_thread,
                                     kernel.smem_per_block_B)
            if failure:
                raise GpusimError(f"layer {node!r}: kernel {kernel.name!r} "
                                  f"({kernel.library_name}) cannot launch on {gpu.name}: "
                                  f"{failure}")
            kg.add_node(kernel.name, kernel=kernel, layer=node, op=layer.op.value,
                        module=layer.module, branch=layer.branch, phase=layer.phase,
                        forward_of=layer.forward_of)
            for dep in previous:
                kg.add_edge(dep, kernel.name)
            previous = (kernel.name,)
        exits[node] = (kernels[-1].name,)
    return kg


def kernels_in_order(kernel_graph: nx.DiGraph) -> list[KernelSpec]:
    """The kernel graph's KernelSpecs in eager launch order
    (:func:`~workloads.graph.framework_order`)."""
    return [kernel_graph.nodes[n]["kernel"] for n in framework_order(kernel_graph)]


# ---------------------------------------------------------------------- fusion
#: Ops an inference runtime fuses into a preceding convolution, with their epilogue tag.
_FUSABLE: dict[OpType, str] = {
    OpType.BATCHNORM: "bn", OpType.RELU: "relu", OpType.RELU6: "relu6", OpType.ADD: "add",
}


@dataclass(frozen=True)
class _FusionPlan:
    """What ``fusion="inference"`` fuses (empty: nothing)."""

    #: conv -> its epilogue label (``"+bn+add+relu"``).
    epilogues: Mapping[str, str] = field(default_factory=dict)
    #: layer fused away -> the conv it runs in.
    owner: Mapping[str, str] = field(default_factory=dict)
    #: conv -> the other inputs of the residual add fused into it (it reads them too).
    extra_inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _with_extra_inputs(graph: nx.DiGraph, extra: Mapping[str, tuple[str, ...]],
                       ) -> nx.DiGraph:
    """``graph``'s structure plus an edge from each extra input to the conv reading it."""
    if not extra:
        return graph
    order = nx.DiGraph()
    order.add_nodes_from(graph)
    order.add_edges_from(graph.edges)
    order.add_edges_from((p, conv) for conv, inputs in extra.items() for p in inputs)
    return order


def _fusion_plan(graph: nx.DiGraph) -> _FusionPlan:
    """Convs with their epilogue label, the layers fused into them, their extra inputs."""
    owner: dict[str, str] = {}        # layer -> the conv whose output it now is
    epilogue: dict[str, list[str]] = {}
    extra: dict[str, tuple[str, ...]] = {}

    for node in nx.topological_sort(graph):
        layer: Layer = graph.nodes[node]["layer"]
        if layer.op is OpType.CONV2D:
            owner[node] = node
            epilogue[node] = []
            continue
        tag = _FUSABLE.get(layer.op)
        if tag is None or layer.training:
            continue
        preds = list(graph.predecessors(node))
        # The conv's output (or what it became) must feed this op alone.
        candidates = [p for p in preds if p in owner and graph.out_degree(p) == 1]
        if not candidates:
            continue
        conv = owner[candidates[0]]
        done = epilogue[conv]
        if tag == "bn" and done:
            continue  # batch norm folds into the weights only straight after the conv
        if tag == "add" and (len(preds) != 2 or "add" in done):
            continue
        if tag in ("relu", "relu6") and done and done[-1] in ("relu", "relu6"):
            continue
        if tag == "add":
            # The epilogue reads the add's other input: the conv now depends on its producer
            # (ResNet: the downsample branch). No cycle: every path out of the conv runs
            # through its single-consumer chain into this add.
            extra[conv] = tuple(p for p in preds if p != candidates[0])
        owner[node] = conv
        done.append(tag)
    fused = {n: c for n, c in owner.items() if n != c}
    labels = {c: "+" + "+".join(ops) for c, ops in epilogue.items() if ops}
    return _FusionPlan(labels, fused, extra)


def _layer_kernels(graph: nx.DiGraph, node: str, layer: Layer, ctx: Context,
                   plan: _FusionPlan, profile: Framework | None) -> list[KernelSpec]:
    """One layer's kernels, with the framework's kernels for it (see :func:`lower`)."""
    if layer.op is OpType.SGD_UPDATE:
        tensors = _sgd_tensors(graph, node, layer)
        if profile is not None:
            return name_kernels(node, profile.optimizer_kernels(layer, ctx, tensors))
        return layer_kernels(layer, ctx, tensor_elems=tensors)
    kernels = layer_kernels(layer, ctx, epilogue=plan.epilogues.get(node, ""))
    if profile is not None and layer.op in PARAM_GRAD_OPS and layer.forward_of in graph:
        forward: Layer = graph.nodes[layer.forward_of]["layer"]
        hooks = profile.param_grad_kernels(layer, ctx, param_tensors(forward))
        if hooks:
            kernels = name_kernels(node, [*kernels, *hooks])
    return kernels


# ---------------------------------------------------------------------- optimizer
def _sgd_tensors(graph: nx.DiGraph, node: str, layer: Layer) -> list[int]:
    """Parameter tensor sizes an sgd_update covers, from the forward layers it updates."""
    forwards: list[Layer] = []
    if layer.forward_of in graph and graph.nodes[layer.forward_of]["layer"].params:
        forwards.append(graph.nodes[layer.forward_of]["layer"])
    else:  # the whole-model step: one weight_grad edge per parameterised layer
        names = {graph.nodes[pred]["layer"].forward_of for pred in graph.predecessors(node)}
        # In model.parameters() order (the forward layers' module order), as the optimizer
        # holds them: that decides where multi_tensor_apply splits its launches (the A100
        # trace's _foreach_mul_ launches hold 180, 320 and 8 chunks).
        forwards = [graph.nodes[n]["layer"] for n in graph if n in names]
    sizes = [t for f in forwards for t in param_tensors(f)]
    return sizes or [layer.params]


# ---------------------------------------------------------------------- calibration
def _calibration_sets(calibration: CalibrationSet | Sequence[CalibrationSet] | None,
                      gpu: GPUSpec) -> list[CalibrationSet]:
    if calibration is None:
        return []
    sets: Iterable[CalibrationSet] = (
        [calibration] if isinstance(calibration, CalibrationSet) else calibration)
    # A library chooses per GPU: only data measured on this very preset apply.
    return [s for s in sets if s.provenance.gpu_preset == (gpu.preset or gpu.name)]


def _calibrated(kernel: KernelSpec, layer: Layer, gpu: GPUSpec,
                sets: Sequence[CalibrationSet]) -> KernelSpec:
    if kernel.kind not in _MAIN_KINDS:
        return kernel
    record = _recorded_launch(layer, kernel, sets)
    if record is None:
        return kernel
    if launch_failure(gpu, record.threads, record.regs_per_thread, record.smem_per_block_B):
        return kernel
    # dtype and tensor cores already agree (see _recorded_launch).
    return dataclasses.replace(
        kernel, grid=record.grid, threads=record.threads,
        regs_per_thread=record.regs_per_thread, smem_per_block_B=record.smem_per_block_B,
        library_name=record.library_name, measured_time_s=record.duration_s,
    )


def _recorded_launch(layer: Layer, kernel: KernelSpec, sets: Sequence[CalibrationSet],
                     ) -> CalibrationRecord | None:
    """The longest recorded kernel like ``kernel`` for this layer (first step that has one).

    Like: the same kind, dtype and math units (tensor cores or not); a launch measured at
    another precision chose its own kernel and ran for its own time.
    """
    forward_name = layer.forward_of or layer.name
    phase = "backward" if layer.phase == "backward" else "forward"
    batch = layer.inputs[0][0] if layer.inputs else None
    for calibration_set in sets:
        hits = [r for r in calibration_set.for_layer(forward_name)
                if r.kind is kernel.kind and r.dtype == kernel.dtype
                and r.tensor_cores == kernel.tensor_cores and r.phase in ("", phase)
                and (r.batch is None or r.batch == batch)]
        if hits:
            step = hits[0].step
            same_step = [r for r in hits if r.step == step]
            return max(same_step, key=lambda r: r.duration_s)
    return None


__all__ = [
    "CONV_PASSES",
    "FUSIONS",
    "LAYOUTS",
    "STORAGE_BYTES",
    "STORAGE_DTYPE",
    "Framework",
    "GemmShape",
    "Tile",
    "TileChoice",
    "check_precision",
    "conv_algorithm_candidates",
    "conv_layer",
    "gemm_layer",
    "gemm_shape",
    "is_depthwise",
    "kernels_in_order",
    "list_frameworks",
    "load_framework",
    "load_table",
    "lower",
    "lower_layer",
    "math_for",
    "multi_tensor_launches",
    "param_tensors",
    "select_tile",
    "table_for",
]
