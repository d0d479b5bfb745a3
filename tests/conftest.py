"""Shared fixtures: GPU presets used across the suite."""

from __future__ import annotations

import pytest

from gpu_models.presets import load_preset
from gpu_models.spec import GPUSpec


@pytest.fixture
def h100() -> GPUSpec:
    return load_preset("h100")


@pytest.fixture
def a100() -> GPUSpec:
    return load_preset("a100")


@pytest.fixture
def v100() -> GPUSpec:
    return load_preset("v100")
