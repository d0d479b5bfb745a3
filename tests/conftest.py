"""Shared fixtures: GPU presets used across the suite, and the command line run in-process."""

from __future__ import annotations

from collections.abc import Callable

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


#: ``cli(*argv)``: run the ``gpusim`` command line in-process, giving (exit code, stdout, stderr).
CliRun = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRun:
    from sim.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run
