"""The CUDA sources of the campaign compile with nvcc (skipped where nvcc is absent).

CuPy compiles kernels.cu with NVRTC on the device; compiling it here with nvcc for the
architectures the project models, warnings as errors, catches syntax and PTX errors without
a GPU, and ptxas's resource report shows that every entry point of every variant keeps its
state in registers (no spills) and that the register counts the dry run sizes grids with
are the compiler's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest

from sim.measure.micro import plans
from sim.measure.micro.harness import FUNCTION_NAMES, KERNEL_SOURCE

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
#: Architectures the campaign's kernels must build for (Hopper, Ampere, Turing: the presets'
#: GPUs from the oldest with nanosleep to the newest).
ARCHS = ("sm_90", "sm_80", "sm_75")


def _nvcc() -> str:
    assert NVCC is not None
    return NVCC


@cache
def _supported_archs() -> frozenset[str]:
    out = subprocess.run([_nvcc(), "--list-gpu-arch"], capture_output=True, text=True,
                         check=True).stdout
    return frozenset(line.strip().replace("compute_", "sm_") for line in out.split())


@cache
def _report(arch: str, options: tuple[str, ...]) -> str:
    """ptxas's resource report of kernels.cu built for ``arch`` (compiled once per build)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [_nvcc(), f"-arch={arch}", "-c", "-std=c++17", "--Werror", "all-warnings",
             "-Xptxas", "-v", *options, str(KERNEL_SOURCE), "-o", str(Path(tmp) / "k.o")],
            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return str(result.stderr)


def _resources(report: str, entry: str) -> tuple[int, int, int]:
    """(registers, spill store bytes, stack frame bytes) of ``entry`` in a ptxas -v report."""
    block = report[report.index(f"Compiling entry function '{entry}'"):]
    block = block[: block.index("Compiling entry function", 1)] if block.count(
        "Compiling entry function") > 1 else block
    regs = int(re.search(r"Used (\d+) registers", block).group(1))  # type: ignore[union-attr]
    spills = int(re.search(r"(\d+) bytes spill stores", block).group(1))  # type: ignore[union-attr]
    stack = int(re.search(r"(\d+) bytes stack frame", block).group(1))  # type: ignore[union-attr]
    return regs, spills, stack


def _builds() -> list[tuple[str, str]]:
    """(function, variant) of every build the campaign launches."""
    spin = [("spin", v) for v in plans.VARIANTS]
    others = [(f, "base") for f in FUNCTION_NAMES if f not in ("spin", "empty")]
    return spin + others


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", list(plans.VARIANTS))
def test_every_entry_point_compiles_without_spills(arch: str, variant: str) -> None:
    if arch not in _supported_archs():
        pytest.skip(f"this nvcc does not target {arch}")
    v = plans.VARIANTS[variant]
    report = _report(arch, v.options)
    for function, entry in FUNCTION_NAMES.items():
        regs, spills, stack = _resources(report, entry)
        assert spills == 0 and stack == 0, f"{entry} ({variant}, {arch}) spills to local memory"
        if function == "spin" and v.max_regs is not None:
            assert regs <= v.max_regs


@pytest.mark.parametrize(("function", "variant"), _builds())
def test_register_counts_sm90_match_the_dry_run_table(function: str, variant: str) -> None:
    """The dry run sizes grids with these counts; the device reads its own back."""
    report = _report("sm_90", plans.VARIANTS[variant].options)
    regs, _, _ = _resources(report, FUNCTION_NAMES[function])
    assert regs == plans.PTXAS_REGS_SM90[(function, variant)], (
        f"ptxas now gives {regs} registers for {function}/{variant}; update PTXAS_REGS_SM90")


def test_fma_entry_points_match_the_planned_ilps() -> None:
    source = KERNEL_SOURCE.read_text()
    assert sorted(int(n) for n in re.findall(r"^FMA_KERNEL\((\d+)\)", source, re.M)) == \
        sorted(plans.FMA_ILPS)
    assert f"#define FMA_UNROLL {plans.FMA_UNROLL}" in source
