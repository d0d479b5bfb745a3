"""The scaled cost model: one GPU's (calibrated) durations carried to another spec.

In the spirit of Habitat's wave scaling (Yu et al., USENIX ATC'21): a kernel measured (or
predicted) on the *origin* GPU in ``T_orig`` runs on the *destination* GPU in ::

    T_dest = T_orig x ((W_dest / W_orig) x (P_orig / P_dest)) ** (1 - g) x (bw_orig / bw_dest) ** g

``W`` are the kernel's waves on each GPU (occupancy and SM count both enter), ``bw`` the
DRAM bandwidths, ``P`` the *per-SM* peak rate for the kernel's precision (peak / sm_count:
the clock ratio within an architecture, and the per-SM throughput change across them), and
``g`` in [0, 1] the kernel's memory-boundness. Habitat derives ``g`` from the kernel's
arithmetic intensity against the origin's ridge point; here (our choice) it comes from the
origin's roofline times ``t_mem = bytes / bw`` and ``t_compute = flops / peak`` as
``g = t_mem^2 / (t_mem^2 + t_compute^2)``: 0.5 at the ridge point, near 0 or 1 well away
from it (a kernel with no work is pure latency and scales with the per-SM rate, g = 0).

The compute part of the time scales with the waves and the per-SM rate; the memory part
with the bandwidth *only*. This departs from Habitat, which multiplies the whole time by
the wave ratio: there a memory-bound kernel gets faster from more SMs at the same bandwidth
(a kernel measured at twice its memory floor would run ~2x faster on twice the SMs), which
no GPU does once its DRAM is saturated. So, at the extremes: doubling the SMs (``replace``
doubles the whole-GPU peaks with them) halves a compute-bound multi-wave kernel and leaves a
memory-bound one unchanged; doubling the bandwidth halves a memory-bound kernel and leaves a
compute-bound one unchanged; halving the clock doubles a compute-bound kernel.

The result is never below the destination's physical floors (FLOPs at peak, bytes at full
bandwidth). Scaling a GPU to itself is the identity; the destination may be any spec, a
preset or a hypothetical GPU (``spec.replace(...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpu_models.calibration import CalibrationRecord
from gpu_models.cost.calibrated import WorkFn, calibrated_model
from gpu_models.cost.waves import (
    block_sm_demand,
    compute_floor_s,
    implied_bytes_in_flight_B,
    isolated_time_s,
    memory_floor_s,
    peak_flop_per_s,
    physical_floor_s,
    waves,
)
from gpu_models.kernel import CostModel, KernelCost, KernelSpec
from gpu_models.presets import load_gpu
from gpu_models.spec import GPUSpec


def memory_boundness(kernel: KernelSpec, spec: GPUSpec) -> float:
    """``g = t_mem^2 / (t_mem^2 + t_compute^2)`` on ``spec`` (0 for a kernel with no work).

    A smooth version of the roofline's max: 0.5 at the ridge point, 1/65 at eight times
    the ridge's arithmetic intensity (a typical large convolution), 64/65 at an eighth.
    """
    t_mem = memory_floor_s(kernel, spec)
    t_compute = compute_floor_s(kernel, spec)
    total = t_mem ** 2 + t_compute ** 2
    return t_mem ** 2 / total if total > 0 else 0.0


@dataclass(frozen=True)
class ScaledModel:
    """Cost model for any GPU, from a cost model of the ``origin`` GPU."""

    origin: GPUSpec
    origin_model: CostModel

    def scaled_time_s(self, kernel: KernelSpec, spec: GPUSpec) -> float:
        """The kernel's isolated duration on ``spec`` (see the module docstring)."""
        time_orig = isolated_time_s(kernel, self.origin, self.origin_model)
        g = memory_boundness(kernel, self.origin)
        wave_ratio = waves(kernel, spec) / waves(kernel, self.origin)
        per_sm_ratio = ((peak_flop_per_s(kernel, self.origin) / self.origin.sm_count)
                        / (peak_flop_per_s(kernel, spec) / spec.sm_count))
        bw_ratio = self.origin.dram_bw_Bps / spec.dram_bw_Bps
        # Compute scales with waves x per-SM rate, memory with the bandwidth alone.
        scaled = time_orig * (wave_ratio * per_sm_ratio) ** (1 - g) * bw_ratio ** g
        return max(scaled, physical_floor_s(kernel, spec))

    def __call__(self, kernel: KernelSpec, spec: GPUSpec) -> KernelCost:
        if spec == self.origin:
            # Exactly the origin's cost, not a re-derivation that could differ by rounding.
            return self.origin_model(kernel, spec)
        block_time_s = self.scaled_time_s(kernel, spec) / waves(kernel, spec)
        return KernelCost(
            block_time_s=block_time_s, dram_bytes=kernel.dram_bytes,
            sm_throughput=block_sm_demand(kernel, spec, block_time_s),
            bytes_in_flight_B=implied_bytes_in_flight_B(kernel, spec, block_time_s,
                                                        kernel.dram_bytes))


def scaled_model(
    origin: str | GPUSpec,
    *,
    origin_model: CostModel | None = None,
    records: Sequence[CalibrationRecord] | None = None,
    work_fn: WorkFn | None = None,
    directory: str | None = None,
) -> ScaledModel:
    """A :class:`ScaledModel` from ``origin`` (preset name or spec).

    The origin's cost model is ``origin_model`` if given, else the calibrated model of the
    origin (from ``records`` or its calibration files; see :func:`calibrated_model`).
    """
    spec = load_gpu(origin) if isinstance(origin, str) else origin
    if origin_model is None:
        origin_model = calibrated_model(spec, records=records, work_fn=work_fn,
                                        directory=directory)
    return ScaledModel(origin=spec, origin_model=origin_model)
