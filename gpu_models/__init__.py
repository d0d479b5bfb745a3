"""GPU models: hardware specs and presets, occupancy, kernel descriptions and cost models.

The layer every other part of gpusim stands on: :class:`GPUSpec` says what a GPU can hold
and how fast it runs, :func:`occupancy` says how many blocks of a kernel fit on one SM.
"""

from gpu_models.errors import GpusimError
from gpu_models.occupancy import BlockFootprint, Occupancy, block_footprint, occupancy
from gpu_models.presets import DEFAULT_GPU, list_presets, load_gpu, load_preset
from gpu_models.spec import GPUSpec

__all__ = [
    "DEFAULT_GPU",
    "BlockFootprint",
    "GPUSpec",
    "GpusimError",
    "Occupancy",
    "block_footprint",
    "list_presets",
    "load_gpu",
    "load_preset",
    "occupancy",
]
