"""Cost models: how long one block of a kernel runs on a GPU, and how many bytes it moves.

A cost model is a pure function ``(KernelSpec, GPUSpec) -> KernelCost`` that the engine
calls for every kernel (see :mod:`gpu_models.kernel`). Four are built in, selectable by
name; :data:`DEFAULT_COST_MODEL` (``analytic``) is the one used unless told otherwise::

    from gpu_models.cost import get_cost_model, isolated_time_s
    analytic = get_cost_model("analytic")             # any GPU, fitted per architecture
    roofline = get_cost_model("roofline")                       # any GPU, from its spec
    calibrated = get_cost_model("calibrated", gpu="a100")       # fitted to measured kernels
    scaled = get_cost_model("scaled", origin="a100")            # a100's data, any spec
    isolated_time_s(kernel, load_gpu("h100"), scaled)           # the kernel alone, seconds

* ``analytic`` (:mod:`gpu_models.cost.analytic`, the default): per block the slowest of
  compute at its achievable rate, K-loop iterations x iteration latency and bytes over the
  memory parallelism its warps give, and a per-kernel floor; parameters per architecture
  fitted to published measurements (``gpu_models/data/analytic.toml``); option ``params``
  (a parameter file).
* ``roofline`` (:mod:`gpu_models.cost.roofline`, the teaching baseline): peak rates and
  bandwidth with per-kind efficiencies, wave-aware; options ``efficiency`` and ``block_latency_s``.
* ``calibrated`` (:mod:`gpu_models.cost.calibrated`): exact measured durations where the
  calibration data hold the same launch, else a per-kind non-negative linear fit; options
  ``gpu`` (required), ``records``, ``work_fn``, ``directory``, ``fallback``,
  ``use_fallback``.
* ``scaled`` (:mod:`gpu_models.cost.scaled`): Habitat-style wave scaling of an origin GPU's
  model to any spec; options ``origin`` (required), ``origin_model``, ``records``,
  ``work_fn``, ``directory``.

Every model respects the physical floors: no kernel runs faster than its FLOPs at peak or
its bytes at full bandwidth.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from gpu_models.cost.analytic import (
    AnalyticModel,
    AnalyticParams,
    ParameterTable,
    analytic_model,
)
from gpu_models.cost.calibrated import (
    FEATURE_NAMES,
    CalibratedModel,
    FitError,
    KindFit,
    WorkFn,
    calibrated_model,
    cross_validate,
    features,
    fit_records,
)
from gpu_models.cost.roofline import (
    DEFAULT_BLOCK_LATENCY_S,
    DEFAULT_EFFICIENCY,
    TILED_KINDS,
    KindEfficiency,
    RooflineModel,
    roofline_model,
)
from gpu_models.cost.scaled import ScaledModel, memory_boundness, scaled_model
from gpu_models.cost.waves import (
    block_share_flop_per_s,
    block_sm_demand,
    blocks_per_sm,
    compute_floor_s,
    implied_bytes_in_flight_B,
    isolated_time_s,
    lone_kernel_time_s,
    memory_floor_s,
    physical_floor_s,
    resident_blocks_per_sm,
    sm_resource,
    wave_size,
    waves,
)
from gpu_models.errors import GpusimError, GpusimWarning
from gpu_models.kernel import CostModel
from gpu_models.spec import GPUSpec

#: Cost model factories by name; each takes keyword options and returns a cost model.
COST_MODELS: Mapping[str, Callable[..., CostModel]] = MappingProxyType({
    "analytic": analytic_model,
    "roofline": roofline_model,
    "calibrated": calibrated_model,
    "scaled": scaled_model,
})


def list_cost_models() -> tuple[str, ...]:
    """Names :func:`get_cost_model` accepts."""
    return tuple(COST_MODELS)


def resolve_cost_model(cost_model: str | CostModel, gpu: GPUSpec, *,
                       origin: str | GPUSpec | None = None) -> CostModel:
    """The cost model ``cost_model`` for ``gpu``: a name, or a cost model returned as is.

    ``calibrated`` is fitted to ``gpu``'s calibration data; ``scaled`` carries ``origin``'s
    calibrated model to ``gpu`` and needs ``origin``.
    """
    if not isinstance(cost_model, str):
        return cost_model
    if origin is not None and cost_model != "scaled":
        warnings.warn(GpusimWarning(
            f"the origin GPU {origin if isinstance(origin, str) else origin.name} is used "
            f"only by the 'scaled' cost model; ignored with cost model {cost_model!r}"),
            stacklevel=2)
    if cost_model == "calibrated":
        return get_cost_model("calibrated", gpu=gpu)
    if cost_model == "scaled":
        if origin is None:
            raise GpusimError("cost model 'scaled' needs an origin GPU (the measured one)")
        return get_cost_model("scaled", origin=origin)
    return get_cost_model(cost_model)


def get_cost_model(name: str, **options: Any) -> CostModel:
    """The cost model ``name`` built with ``options`` (see the module docstring)."""
    factory = COST_MODELS.get(name)
    if factory is None:
        raise GpusimError(f"unknown cost model {name!r}; expected one of "
                          f"{', '.join(COST_MODELS)}")
    try:
        return factory(**options)
    except TypeError as exc:  # a missing or unknown option
        raise GpusimError(f"cost model {name!r}: {exc}") from None


#: The cost model every command and function uses unless told otherwise.
DEFAULT_COST_MODEL = "analytic"

__all__ = [
    "COST_MODELS",
    "DEFAULT_BLOCK_LATENCY_S",
    "DEFAULT_COST_MODEL",
    "DEFAULT_EFFICIENCY",
    "FEATURE_NAMES",
    "TILED_KINDS",
    "AnalyticModel",
    "AnalyticParams",
    "CalibratedModel",
    "FitError",
    "KindEfficiency",
    "KindFit",
    "ParameterTable",
    "RooflineModel",
    "ScaledModel",
    "WorkFn",
    "analytic_model",
    "block_share_flop_per_s",
    "block_sm_demand",
    "blocks_per_sm",
    "calibrated_model",
    "compute_floor_s",
    "cross_validate",
    "features",
    "fit_records",
    "get_cost_model",
    "implied_bytes_in_flight_B",
    "isolated_time_s",
    "list_cost_models",
    "lone_kernel_time_s",
    "memory_boundness",
    "memory_floor_s",
    "physical_floor_s",
    "resident_blocks_per_sm",
    "resolve_cost_model",
    "roofline_model",
    "scaled_model",
    "sm_resource",
    "wave_size",
    "waves",
]
