"""Lowering against a real trace: kernel counts by kind, and per-layer launch configurations.

A kernel graph (:func:`workloads.lowering.lower`) says which kernels a step should launch; a
profiler trace of the same network (:func:`sim.measure.ingest.ingest_trace`) says which ones a
library did launch. :func:`compare_to_trace` puts them side by side for one step:

- **by kind**: how many kernels of each :class:`~gpu_models.kernel.KernelKind` each side has
  (the trace's kinds are the ingester's, from library names: a 1x1 convolution that cuDNN
  ran as a plain GEMM counts as ``gemm`` there);
- **by layer** (for traces whose kernels carry layer names: the project's own measuring
  scripts record them, and the digests of public traces attribute them by op order,
  :mod:`sim.measure.attribution`): for each GEMM-like kernel of the kernel graph, the traced
  kernel of the same forward layer, phase and kind (the ``i``-th of them when both sides
  have as many, as a Winograd pass's four kernels do; else the longest), and whether the
  launch configuration (threads, registers, shared memory) and the block count agree.

:func:`compare_classes` puts the kernel counts per kernel class
(:mod:`sim.measure.kernel_classes`) of a kernel graph next to a digest's measured steps, and
:func:`trace_kernels_of` turns a digest's calibration records back into trace kernels for
:func:`compare_to_trace`. Nothing here reads a file: callers pass the kernels or records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gpu_models.calibration import CalibrationRecord, StepTotals
from gpu_models.kernel import KernelKind, KernelSpec
from sim.measure.ingest import TraceKernel
from sim.measure.kernel_classes import CLASSES, lowered_class

#: Kinds whose launch configuration lowering chooses from tile tables.
GEMM_KINDS: frozenset[KernelKind] = frozenset(
    {KernelKind.CONV_FWD, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD, KernelKind.GEMM}
)


@dataclass(frozen=True)
class KindCount:
    """Kernels of one kind in the kernel graph and in the traced step."""

    kind: str
    lowered: int
    traced: int


@dataclass(frozen=True)
class LayerMatch:
    """One lowered GEMM-like kernel and the traced kernel of the same layer, phase and kind."""

    kernel: str
    layer: str
    kind: str
    lowered_grid: tuple[int, int, int]
    lowered_config: tuple[int, int, int]
    traced_name: str
    traced_grid: tuple[int, int, int]
    traced_config: tuple[int, int, int]

    @property
    def same_config(self) -> bool:
        """Same threads, registers per thread and shared memory per block."""
        return self.lowered_config == self.traced_config

    @property
    def blocks_ratio(self) -> float:
        """Lowered blocks over traced blocks."""
        lx, ly, lz = self.lowered_grid
        tx, ty, tz = self.traced_grid
        return (lx * ly * lz) / (tx * ty * tz)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"kernel": self.kernel, "layer": self.layer, "kind": self.kind,
                "lowered_grid": list(self.lowered_grid),
                "lowered_config": list(self.lowered_config), "traced_name": self.traced_name,
                "traced_grid": list(self.traced_grid), "traced_config": list(self.traced_config),
                "same_config": self.same_config, "blocks_ratio": self.blocks_ratio}


@dataclass(frozen=True)
class TraceComparison:
    """A kernel graph against one traced step."""

    step: int | None
    lowered_kernels: int
    traced_kernels: int
    by_kind: tuple[KindCount, ...]
    layers: tuple[LayerMatch, ...]

    @property
    def config_agreement(self) -> float:
        """Fraction of matched layers whose launch configuration agrees (0 if none)."""
        if not self.layers:
            return 0.0
        return sum(m.same_config for m in self.layers) / len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"step": self.step, "lowered_kernels": self.lowered_kernels,
                "traced_kernels": self.traced_kernels,
                "by_kind": [vars(c) for c in self.by_kind],
                "config_agreement": self.config_agreement,
                "layers": [m.to_dict() for m in self.layers]}


def compare_to_trace(kernel_graph: nx.DiGraph, traced: Sequence[TraceKernel], *,
                     step: int | None = None) -> TraceComparison:
    """Compare ``kernel_graph`` with the traced kernels of ``step`` (default: the first)."""
    steps = sorted({k.step for k in traced if k.step is not None})
    if step is None and steps:
        step = steps[0]
    in_step = [k for k in traced if step is None or k.step == step]
    lowered: list[tuple[str, dict[str, Any]]] = list(kernel_graph.nodes(data=True))
    lowered_kinds = Counter(d["kernel"].kind.value for _, d in lowered)
    traced_kinds = Counter(k.kind.value for k in in_step)
    by_kind = tuple(KindCount(kind, lowered_kinds[kind], traced_kinds[kind])
                    for kind in sorted(set(lowered_kinds) | set(traced_kinds)))
    layers = []
    groups: dict[tuple[str, str, KernelKind], list[str]] = {}
    for name, data in lowered:
        if data["kernel"].kind in GEMM_KINDS:
            forward = data.get("forward_of") or data["layer"]
            phase = "backward" if data["phase"] == "backward" else "forward"
            groups.setdefault((forward, phase, data["kernel"].kind), []).append(name)
    for (forward, phase, kind), names in groups.items():
        hits = [k for k in in_step if k.layer_name == forward and k.kind is kind
                and k.phase in ("", phase)]
        for position, name in enumerate(names):
            if hits:
                layers.append(_match(name, kernel_graph.nodes[name]["kernel"], forward,
                                     hits[position] if len(hits) == len(names) else
                                     max(hits, key=lambda k: k.duration_s)))
    return TraceComparison(step, len(lowered), len(in_step), by_kind, tuple(layers))


def _match(name: str, kernel: KernelSpec, forward: str, best: TraceKernel) -> LayerMatch:
    threads = best.block[0] * best.block[1] * best.block[2]
    return LayerMatch(
        kernel=name, layer=forward, kind=kernel.kind.value, lowered_grid=kernel.grid,
        lowered_config=(kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B),
        traced_name=best.name, traced_grid=best.grid,
        traced_config=(threads, best.regs_per_thread, best.smem_per_block_B))


@dataclass(frozen=True)
class ClassCount:
    """Kernels of one class: in the kernel graph, and per measured step (mean)."""

    cls: str
    lowered: int
    traced: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"class": self.cls, "lowered": self.lowered, "traced": self.traced}


def compare_classes(kernel_graph: nx.DiGraph, steps: Sequence[StepTotals],
                    ) -> tuple[ClassCount, ...]:
    """Kernel counts per class (:data:`~sim.measure.kernel_classes.CLASSES` order) of the
    kernel graph and of the measured steps (their mean)."""
    lowered = Counter(lowered_class(d["kernel"], d["op"])
                      for _, d in kernel_graph.nodes(data=True))
    out = []
    for cls in CLASSES:
        traced = [s.classes.get(cls, (0, 0.0))[0] for s in steps] or [0]
        out.append(ClassCount(cls, lowered[cls], sum(traced) / len(traced)))
    return tuple(out)


def trace_kernels_of(records: Sequence[CalibrationRecord]) -> list[TraceKernel]:
    """Calibration records (a digest's step) as trace kernels, for :func:`compare_to_trace`;
    what records do not keep (timestamps, device) is zero."""
    return [TraceKernel(name=r.library_name, ts_s=0.0, duration_s=r.duration_s, device=0,
                        stream=r.stream or 0, correlation=None, grid=r.grid, block=r.block,
                        regs_per_thread=r.regs_per_thread, smem_per_block_B=r.smem_per_block_B,
                        kind=r.kind, layer_name=r.layer_name, phase=r.phase, step=r.step,
                        signature=r.signature, dtype=r.dtype, tensor_cores=r.tensor_cores,
                        batch=r.batch) for r in records]
