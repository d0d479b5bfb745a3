"""Lowering against a real trace: kernel counts by kind, and per-layer launch configurations.

A kernel graph (:func:`workloads.lowering.lower`) says which kernels a step should launch; a
profiler trace of the same network (:func:`sim.measure.ingest.ingest_trace`) says which ones a
library did launch. :func:`compare_to_trace` puts them side by side for one step:

- **by kind**: how many kernels of each :class:`~gpu_models.kernel.KernelKind` each side has
  (the trace's kinds are the ingester's, from library names: a 1x1 convolution that cuDNN
  ran as a plain GEMM counts as ``gemm`` there);
- **by layer** (only for traces whose kernels carry layer names, as the project's own
  measuring scripts record them): for each GEMM-like kernel of the kernel graph, the traced
  kernel of the same forward layer, phase and kind with the longest duration, and whether
  the launch configuration (threads, registers, shared memory) and the block count agree.

Nothing here reads a file: callers pass the ingested kernels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gpu_models.kernel import KernelKind, KernelSpec
from sim.measure.ingest import TraceKernel

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
    for name, data in lowered:
        kernel: KernelSpec = data["kernel"]
        if kernel.kind not in GEMM_KINDS:
            continue
        forward = data.get("forward_of") or data["layer"]
        phase = "backward" if data["phase"] == "backward" else "forward"
        hits = [k for k in in_step if k.layer_name == forward and k.kind is kernel.kind
                and k.phase in ("", phase)]
        if not hits:
            continue
        best = max(hits, key=lambda k: k.duration_s)
        threads = best.block[0] * best.block[1] * best.block[2]
        layers.append(LayerMatch(
            kernel=name, layer=forward, kind=kernel.kind.value, lowered_grid=kernel.grid,
            lowered_config=(kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B),
            traced_name=best.name, traced_grid=best.grid,
            traced_config=(threads, best.regs_per_thread, best.smem_per_block_B),
        ))
    return TraceComparison(step, len(lowered), len(in_step), by_kind, tuple(layers))
