"""Workload sources: every form a workload can be named in, and how each becomes a graph.

:func:`workloads.build` (and so ``--workload`` in every command, sweep points,
``prepare_workload`` and ``gpusim reproduce``) accepts:

- a **zoo name** (``resnet50``; ``gpusim workloads`` lists them);
- ``PATH.onnx`` — an ONNX model (:func:`workloads.importers.from_onnx`; needs ``onnx``);
- ``PATH.json`` / ``PATH.toml`` — a layer graph in gpusim's format
  (:mod:`workloads.graphfile`, ``workloads/data/layer_graph.schema.json``);
- ``torchvision:NAME`` or ``torchvision:NAME?ARG=VALUE&ARG=VALUE`` — a torchvision
  classification model built with those model arguments (``torchvision:resnet50?
  width_per_group=128``), weights left uninitialised on the meta device (nothing is
  downloaded or allocated), traced with torch.fx (:mod:`workloads.fx_import`; needs the
  ``torch`` extra). Values read as int, float, ``true``/``false``, ``none``, else text.

:func:`parse_source` turns the text into a :class:`WorkloadSource` (and says what is wrong
with it: an unknown name, a missing file, a malformed argument); its
:meth:`~WorkloadSource.forward_graph` builds the forward graph for a batch size, resolution,
dtype and mode. The batch size replaces an imported model's own; the resolution (input
height = width) applies where the input is an image batch. Imported graphs are cached per
process (keyed by the file's modification time and size), so a sweep imports a model once.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from gpu_models.errors import GpusimError

#: The prefix of torchvision model sources.
TORCHVISION_PREFIX = "torchvision:"
#: File suffixes and the kind of source they are.
FILE_KINDS: dict[str, str] = {".onnx": "onnx", ".json": "graph", ".toml": "graph"}
#: The forms a workload can take, for help texts and error messages.
FORMS = ("a zoo name", "PATH.onnx", "PATH.json or PATH.toml (gpusim layer-graph format)",
         "torchvision:NAME[?ARG=VALUE&...]")


@dataclass(frozen=True)
class WorkloadSource:
    """A parsed workload name: its ``kind`` (``zoo``, ``onnx``, ``graph``, ``torchvision``),
    its ``target`` (zoo name, file path, torchvision model name) and model ``args``."""

    text: str
    kind: str
    target: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """A short name for tables and file names: the zoo or model name, or the file's stem
        (with the torchvision arguments, ``resnet50-width_per_group=128``)."""
        if self.kind == "zoo":
            return self.target
        if self.kind == "torchvision":
            return "-".join([self.target, *(f"{k}={v}" for k, v in self.args)])
        return Path(self.target).stem

    def forward_graph(self, *, batch: int, resolution: int | None, dtype: str,
                      training: bool) -> nx.DiGraph:
        """The forward layer graph (a fresh copy: callers may change it)."""
        if self.kind == "zoo":
            raise GpusimError("zoo workloads are built by workloads.build")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise GpusimError(f"workload {self.text!r}: batch must be a positive int, "
                              f"got {batch!r}")
        if resolution is not None and (isinstance(resolution, bool)
                                       or not isinstance(resolution, int) or resolution < 1):
            raise GpusimError(f"workload {self.text!r}: resolution must be a positive int, "
                              f"got {resolution!r}")
        stamp: tuple[int, int] | None = None
        if self.kind in ("onnx", "graph"):
            try:
                st = Path(self.target).stat()
            except FileNotFoundError:
                raise GpusimError(f"workload file {self.target!r} does not exist") from None
            stamp = (st.st_mtime_ns, st.st_size)
        graph = _cached_forward(self, batch, resolution, dtype, training, stamp)
        return _copy(graph)


def parse_source(text: str, zoo_names: Sequence[str]) -> WorkloadSource:
    """The :class:`WorkloadSource` ``text`` names; :class:`GpusimError` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise GpusimError(f"workload must be a non-empty name, got {text!r}")
    text = text.strip()
    if text in zoo_names:
        return WorkloadSource(text, "zoo", text)
    if text.startswith(TORCHVISION_PREFIX):
        name, _, query = text[len(TORCHVISION_PREFIX):].partition("?")
        if not name:
            raise GpusimError(f"workload {text!r}: name a torchvision model, e.g. "
                              "torchvision:resnext50_32x4d")
        return WorkloadSource(text, "torchvision", name, _model_args(text, query))
    kind = FILE_KINDS.get(Path(text).suffix.lower())
    if kind is not None:
        if not Path(text).is_file():
            raise GpusimError(f"workload file {text!r} does not exist")
        return WorkloadSource(text, kind, text)
    raise GpusimError(f"unknown workload {text!r}; valid: {', '.join(zoo_names)}; or "
                      f"{', '.join(FORMS[1:])}")


def _model_args(text: str, query: str) -> tuple[tuple[str, Any], ...]:
    if not query:
        return ()
    args: dict[str, Any] = {}
    for item in query.split("&"):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or not raw.strip():
            raise GpusimError(f"workload {text!r}: model arguments are ARG=VALUE joined by "
                              f"'&', got {item!r}")
        if key in args:
            raise GpusimError(f"workload {text!r}: model argument {key!r} is given twice")
        if key == "weights":
            raise GpusimError(f"workload {text!r}: weights are never loaded (the model is "
                              "built on the meta device)")
        args[key] = _value(raw.strip())
    return tuple(args.items())


def _value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw


def _copy(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy that keeps every node's predecessors in input order (``DiGraph.copy`` orders
    them by their producers instead)."""
    out = nx.DiGraph()
    out.graph.update({k: (list(v) if isinstance(v, list) else v)
                      for k, v in graph.graph.items()})
    out.add_nodes_from(graph.nodes(data=True))
    for v in graph:
        out.add_edges_from((u, v, dict(graph.edges[u, v])) for u in graph.predecessors(v))
    return out


@functools.lru_cache(maxsize=32)
def _cached_forward(source: WorkloadSource, batch: int, resolution: int | None, dtype: str,
                    training: bool, stamp: tuple[int, int] | None) -> nx.DiGraph:
    del stamp  # part of the cache key only: a changed file is read again
    if source.kind == "onnx":
        from workloads.importers import from_onnx

        return from_onnx(source.target, name=source.label, dtype=dtype, training=training,
                         batch=batch, resolution=resolution)
    if source.kind == "graph":
        from workloads.graphfile import load_graph_file

        return load_graph_file(source.target, batch=batch, resolution=resolution, dtype=dtype,
                               training=training)
    from workloads.fx_import import from_torch

    model, traced, default = _torchvision_traced(source.target, source.args, training)
    res = default if resolution is None else resolution
    graph = from_torch(model, (batch, 3, res, res), name=source.label, dtype=dtype,
                       training=training, traced=traced)
    graph.graph["source"] = source.text
    return graph


def torchvision_models() -> list[str]:
    """The classification models of the installed torchvision (``torchvision.models``)."""
    torchvision = _import_torchvision()
    return list(torchvision.models.list_models(module=torchvision.models))


def _import_torchvision() -> Any:
    try:
        import torchvision
    except ImportError as exc:
        raise GpusimError("torchvision: workloads need torch and torchvision installed "
                          "(pip install 'gpusim[torch]')") from exc
    except Exception as exc:  # a torch/torchvision pair that does not match
        raise GpusimError(f"torchvision does not import here ({exc}); install a matching "
                          "pair with pip install 'gpusim[torch]'") from exc
    return torchvision


def torchvision_default_resolution(name: str) -> int:
    """The crop size of the model's default torchvision weights (224 where it has none);
    read from the weights' metadata, nothing is downloaded."""
    torchvision = _import_torchvision()
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        crop = weights.transforms.keywords.get("crop_size")
    except (AttributeError, KeyError, ValueError):
        crop = None
    if isinstance(crop, (list, tuple)):
        crop = crop[0]
    return int(crop) if isinstance(crop, int) else 224


@functools.lru_cache(maxsize=8)
def _torchvision_traced(name: str, args: tuple[tuple[str, Any], ...],
                        training: bool) -> tuple[Any, Any, int]:
    """A torchvision model (parameters on the meta device), its torch.fx trace and its
    default resolution."""
    import torch
    import torch.fx

    names = torchvision_models()
    if name not in names:
        raise GpusimError(f"unknown torchvision classification model {name!r}; e.g. "
                          f"{', '.join(names[:6])}, ... ({len(names)} models: "
                          "torchvision.models.list_models())")
    torchvision = _import_torchvision()
    with _parameters_on_meta(torch), warnings.catch_warnings():
        # Builders warn about weight initialisation, which meta tensors skip.
        warnings.simplefilter("ignore")
        try:
            model = torchvision.models.get_model(name, weights=None, **dict(args))
        except Exception as exc:  # builders raise TypeError, ValueError, AssertionError
            shown = "&".join(f"{k}={v}" for k, v in args)
            raise GpusimError(f"torchvision:{name}: cannot build the model"
                              f"{' with ' + shown if shown else ''}: {exc}") from exc
    model.train(training)
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise GpusimError(f"torch.fx cannot trace torchvision:{name}: {exc}") from exc
    return model, traced, torchvision_default_resolution(name)


@contextlib.contextmanager
def _parameters_on_meta(torch: Any) -> Iterator[None]:
    """Parameters and buffers of modules built inside go to the meta device as they are
    registered: shapes without memory (their initialisers then run on meta, for free),
    while a builder's own arithmetic (RegNet's widths) still runs on real tensors."""
    module_cls = torch.nn.Module
    register_parameter = module_cls.register_parameter
    register_buffer = module_cls.register_buffer

    def parameter_on_meta(self: Any, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer_on_meta(self: Any, name: str, tensor: Any, persistent: bool = True) -> None:
        if tensor is not None and tensor.device.type != "meta":
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent)

    module_cls.register_parameter = parameter_on_meta
    module_cls.register_buffer = buffer_on_meta
    try:
        yield
    finally:
        module_cls.register_parameter = register_parameter
        module_cls.register_buffer = register_buffer
