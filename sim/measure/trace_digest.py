"""A profiler trace of a training run, digested into a small calibration file.

A Kineto trace of a few training steps holds thousands of kernels (the public A100
ResNet-50 trace: 2,700; the RTX 2080 Ti ResNet-18 one: 9,600) and is megabytes of JSON.
What validation and fitting need from it is much smaller:

- per step, its kernel count, summed kernel time, span, and kernel count and time per kernel
  class (:mod:`sim.measure.kernel_classes`): :class:`~gpu_models.calibration.StepTotals`;
- one representative step's kernels (the step whose kernel time is the median), each with
  its launch configuration and duration, the network layer it belongs to and the FLOPs and
  DRAM bytes lowering derives for that layer's matching kernel (:mod:`sim.measure.attribution`):
  calibration records a cost model can be fitted to;
- what ran (``workload``): network, batch, precision, framework profile, layout.

:func:`digest_trace` builds that :class:`~gpu_models.calibration.CalibrationSet` from an
ingested trace (:func:`sim.measure.ingest.parse_trace`); ``gpusim calibrate ingest TRACE
--workload NAME ...`` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_models.calibration import CalibrationRecord, CalibrationSet, Provenance, StepTotals
from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec
from sim.measure.attribution import Attribution, attribute_step
from sim.measure.ingest import IngestResult, TraceKernel
from sim.measure.kernel_classes import traced_class
from workloads import build
from workloads.lowering import STORAGE_DTYPE, lower


@dataclass(frozen=True)
class TracedWorkload:
    """What a trace ran: a zoo network's training step as the framework launched it."""

    network: str
    batch: int
    precision: str
    framework: str
    layout: str = "nchw"
    #: The training graph's optimizer (``step``: one optimizer.step after backward).
    optimizer: str = "step"

    def to_dict(self) -> dict[str, Any]:
        """The calibration file's ``workload`` object."""
        return {"network": self.network, "batch": self.batch, "phase": "training",
                "optimizer": self.optimizer, "precision": self.precision,
                "framework": self.framework, "layout": self.layout}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TracedWorkload:
        """Inverse of :meth:`to_dict` (raises :class:`GpusimError` on bad input)."""
        try:
            return cls(network=str(data["network"]), batch=int(data["batch"]),
                       precision=str(data["precision"]), framework=str(data["framework"]),
                       layout=str(data.get("layout", "nchw")),
                       optimizer=str(data.get("optimizer", "step")))
        except (KeyError, TypeError, ValueError) as exc:
            raise GpusimError(f"workload of a trace digest: missing or malformed {exc}") \
                from None

    def kernel_graph(self, gpu: GPUSpec) -> Any:
        """The lowered training step on ``gpu`` (what the trace should have launched)."""
        if self.precision not in STORAGE_DTYPE:
            raise GpusimError(f"workload precision {self.precision!r} is not one of "
                              f"{', '.join(STORAGE_DTYPE)}")
        graph = build(self.network, batch=self.batch, phase="training",
                      dtype=STORAGE_DTYPE[self.precision], optimizer=self.optimizer)
        return lower(graph, gpu, precision=self.precision, layout=self.layout,
                     framework=self.framework)


def step_totals(kernels: Sequence[TraceKernel]) -> list[StepTotals]:
    """Per-step totals of ingested kernels (kernels without a step are left out)."""
    by_step: dict[int, list[TraceKernel]] = {}
    for kernel in kernels:
        if kernel.step is not None:
            by_step.setdefault(kernel.step, []).append(kernel)
    out = []
    for step, group in sorted(by_step.items()):
        classes: dict[str, tuple[int, float]] = {}
        for kernel in group:
            n, t = classes.get(traced_class(kernel), (0, 0.0))
            classes[traced_class(kernel)] = (n + 1, t + kernel.duration_s)
        span = max(k.ts_s + k.duration_s for k in group) - min(k.ts_s for k in group)
        out.append(StepTotals(step=step, kernels=len(group),
                              kernel_time_s=sum(k.duration_s for k in group), span_s=span,
                              classes=dict(sorted(classes.items()))))
    return out


def representative_step(steps: Sequence[StepTotals]) -> int:
    """The step whose kernel time is the median (the lower one for an even count)."""
    if not steps:
        raise GpusimError("the trace has no steps: give --step-marker for a trace without "
                          "ProfilerStep ranges")
    ordered = sorted(steps, key=lambda s: (s.kernel_time_s, s.step))
    return ordered[(len(ordered) - 1) // 2].step


def digest_trace(result: IngestResult, workload: TracedWorkload, gpu: GPUSpec, *,
                 provenance: Provenance, step: int | None = None,
                 ) -> tuple[CalibrationSet, Attribution]:
    """The digest of an ingested trace (see the module docstring), and how its
    representative step's kernels were attributed."""
    steps = step_totals(result.kernels)
    chosen = representative_step(steps) if step is None else step
    in_step = [k for k in result.kernels if k.step == chosen]
    if not in_step:
        raise GpusimError(f"the trace has no kernels in step {chosen}")
    kernel_graph = workload.kernel_graph(gpu)
    attribution = attribute_step(kernel_graph, in_step)
    records = []
    for kernel, layer, node in zip(in_step, attribution.layers, attribution.nodes,
                                   strict=True):
        lowered = kernel_graph.nodes[node]["kernel"] if node else None
        records.append(CalibrationRecord(
            library_name=kernel.name, kind=kernel.kind, grid=kernel.grid, block=kernel.block,
            regs_per_thread=kernel.regs_per_thread, smem_per_block_B=kernel.smem_per_block_B,
            duration_s=kernel.duration_s, layer_name=layer, signature=kernel.signature,
            stream=kernel.stream, step=kernel.step, phase=kernel.phase, batch=kernel.batch,
            dtype=kernel.dtype, tensor_cores=kernel.tensor_cores,
            flops=lowered.flops if lowered else None,
            dram_bytes=lowered.dram_bytes if lowered else None))
    digest = CalibrationSet(provenance=provenance, records=tuple(records),
                            steps=tuple(steps), workload=workload.to_dict())
    return digest, attribution
