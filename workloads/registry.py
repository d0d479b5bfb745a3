"""The workload registry: every network by name, and :func:`build` to make its graph.

``name`` is any workload source (:mod:`workloads.sources`): a zoo name, an ONNX file, a
layer-graph file or ``torchvision:NAME[?ARG=VALUE&...]``; :func:`workload_source` parses it.
``build(name, batch=..., resolution=..., phase=..., dtype=..., **options)`` returns the
networkx ``DiGraph`` of :mod:`workloads.graph` with graph-level metadata in ``graph.graph``:
``name``, ``batch``, ``resolution``, ``dtype``, ``phase`` (``"inference"`` or
``"training"``), ``outputs`` (output node names), ``params`` (the model's parameter count,
including parameters of heads that the phase skips) and ``options``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gpu_models.errors import GpusimError, GpusimWarning
from workloads import zoo
from workloads.graph import GraphBuilder
from workloads.sources import WorkloadSource, parse_source
from workloads.training import make_training_graph

PHASES: tuple[str, ...] = ("inference", "training")

Builder = Callable[..., None]


@dataclass(frozen=True)
class WorkloadInfo:
    """A registered workload: its builder, default resolution and a one-line description."""

    name: str
    builder: Builder
    default_resolution: int
    description: str
    torchvision: bool = True

    def __post_init__(self) -> None:
        if self.default_resolution < 1:
            raise GpusimError(f"workload {self.name!r}: default_resolution must be positive")

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the builder's keyword options (beyond batch/resolution/dtype/phase)."""
        sig = inspect.signature(self.builder)
        return tuple(p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY)


_WORKLOADS: tuple[WorkloadInfo, ...] = (
    WorkloadInfo("alexnet", zoo.alexnet, 224, "AlexNet: 5 convs + 3 FC layers, a chain"),
    WorkloadInfo("vgg16", zoo.vgg16, 224, "VGG-16: 13 3x3 convs + 3 FC layers, a chain"),
    WorkloadInfo("resnet18", zoo.resnet18, 224, "ResNet-18: basic residual blocks"),
    WorkloadInfo("resnet50", zoo.resnet50, 224, "ResNet-50 v1.5: bottleneck residual blocks"),
    WorkloadInfo("resnet101", zoo.resnet101, 224, "ResNet-101 v1.5: bottleneck residual blocks"),
    WorkloadInfo("resnet152", zoo.resnet152, 224, "ResNet-152 v1.5: bottleneck residual blocks"),
    WorkloadInfo("googlenet", zoo.googlenet, 224,
                 "GoogLeNet: 9 Inception modules of 4 parallel branches (no aux heads)"),
    WorkloadInfo("inception_v3", zoo.inception_v3, 299,
                 "Inception v3: 11 multi-branch modules; aux head in training only"),
    WorkloadInfo("densenet121", zoo.densenet121, 224,
                 "DenseNet-121: each layer reads the concat of all earlier ones"),
    WorkloadInfo("squeezenet1_1", zoo.squeezenet1_1, 224,
                 "SqueezeNet 1.1: Fire modules with 2 parallel expand convs"),
    WorkloadInfo("mobilenet_v2", zoo.mobilenet_v2, 224,
                 "MobileNetV2: inverted residuals with depthwise convs"),
    WorkloadInfo("pathnet", zoo.pathnet, 224,
                 "PathNet-style: L layers of M parallel modules, K active (synthetic)",
                 torchvision=False),
    WorkloadInfo("randwire", zoo.randwire, 224,
                 "RandWire-WS small regime: randomly wired stages (seeded, synthetic)",
                 torchvision=False),
)
_BY_NAME: dict[str, WorkloadInfo] = {w.name: w for w in _WORKLOADS}


def list_workloads() -> list[WorkloadInfo]:
    """Every registered workload, in a stable order."""
    return list(_WORKLOADS)


def workload_names() -> list[str]:
    """Names of every registered workload."""
    return [w.name for w in _WORKLOADS]


def get_workload(name: str) -> WorkloadInfo:
    """The registered workload ``name``; :class:`GpusimError` listing valid names if none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise GpusimError(
            f"unknown workload {name!r}; valid: {', '.join(workload_names())}"
        ) from None


def workload_source(name: str) -> WorkloadSource:
    """The parsed workload ``name``: a zoo name, a file or a torchvision model
    (:func:`workloads.sources.parse_source`); :class:`GpusimError` saying what is wrong."""
    return parse_source(name, workload_names())


def build(
    name: str, *, batch: int = 1, resolution: int | None = None, phase: str = "inference",
    dtype: str = "fp32", **options: Any,
) -> nx.DiGraph:
    """The layer graph of workload ``name`` for ``phase`` (``inference`` or ``training``).

    ``name`` is any workload source (see the module docstring). ``resolution`` defaults to
    the workload's own (224, or 299 for inception_v3; an imported model's input size).
    Options: ``optimizer`` (training: ``"per_layer"`` or ``"step"``) and a zoo builder's
    own keyword options (``pathnet``: layers, modules, active, channels, seed;
    ``randwire``: nodes, k, p, channels, seed).
    """
    source = workload_source(name)
    if phase not in PHASES:
        raise GpusimError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    if source.kind != "zoo":
        return _build_imported(source, batch=batch, resolution=resolution, phase=phase,
                               dtype=dtype, options=options)
    info = get_workload(name)
    res = info.default_resolution if resolution is None else resolution
    if not isinstance(res, int) or isinstance(res, bool) or res < 1:
        raise GpusimError(f"workload {name!r}: resolution must be a positive int, got {res!r}")
    if "optimizer" in options and phase != "training":
        warnings.warn(GpusimWarning(
            f"option optimizer={options['optimizer']} applies to training; ignored for "
            f"{phase}"), stacklevel=2)
    optimizer = options.pop("optimizer", "per_layer")
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join((*info.options, "optimizer"))
        raise GpusimError(
            f"workload {name!r}: unknown option(s) {', '.join(unknown)}; valid: {valid}"
        )
    options = _typed_options(info, options)
    b = GraphBuilder(name, batch=batch, resolution=res, dtype=dtype, training=phase == "training")
    info.builder(b, res, **options)
    graph = b.finish()
    graph.graph["params"] = param_count(graph)
    graph.graph["options"] = dict(options)
    if phase == "training":
        graph = make_training_graph(graph, optimizer=optimizer)
    return graph


def _build_imported(source: WorkloadSource, *, batch: int, resolution: int | None, phase: str,
                    dtype: str, options: dict[str, Any]) -> nx.DiGraph:
    """:func:`build` of an imported workload (file or torchvision model)."""
    optimizer = options.pop("optimizer", "per_layer")
    if options:
        where = ("model arguments of a torchvision model go after '?' "
                 "(torchvision:NAME?ARG=VALUE)" if source.kind == "torchvision"
                 else "an imported graph has no builder options")
        raise GpusimError(f"workload {source.text!r}: unknown option(s) "
                          f"{', '.join(sorted(options))}; valid: optimizer ({where})")
    graph = source.forward_graph(batch=batch, resolution=resolution, dtype=dtype,
                                 training=phase == "training")
    graph.graph["params"] = param_count(graph)
    graph.graph["options"] = {}
    graph.graph["source"] = source.text
    if phase == "training":
        graph = make_training_graph(graph, optimizer=optimizer)
    return graph


def _typed_options(info: WorkloadInfo, options: dict[str, Any]) -> dict[str, Any]:
    """Options checked against the type of the builder's default (an int is a float too)."""
    params = inspect.signature(info.builder).parameters
    typed: dict[str, Any] = {}
    for key, value in options.items():
        default = params[key].default
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(default, bool):
            ok, value_type = isinstance(value, bool), "a bool"
        elif isinstance(default, int):
            ok, value_type = is_int, "an int"
        elif isinstance(default, float):
            ok, value_type = is_int or isinstance(value, float), "a number"
            value = float(value) if ok else value
        else:
            ok, value_type = True, ""
        if not ok:
            raise GpusimError(f"workload {info.name!r}: option {key} must be {value_type}, "
                              f"got {value!r}")
        typed[key] = value
    return typed


def param_count(graph: nx.DiGraph) -> int:
    """The model's trainable parameters: forward ops' params plus heads the graph omits."""
    own = sum(
        layer.params for _, layer in graph.nodes(data="layer") if layer.phase == "forward"
    )
    return own + int(graph.graph.get("params_not_in_graph", 0))


def forward_macs(graph: nx.DiGraph) -> int:
    """Multiply-adds of the forward ops (torchvision's "GFLOPS" figure for inference)."""
    return sum(layer.macs for _, layer in graph.nodes(data="layer") if layer.phase == "forward")
