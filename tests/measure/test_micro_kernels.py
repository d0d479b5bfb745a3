"""The CUDA sources of the campaign compile with nvcc (skipped where nvcc is absent).

CuPy compiles kernels.cu with NVRTC on the device; compiling it here with nvcc for the
architectures the project models catches syntax and PTX errors without a GPU, and ptxas's
resource report shows the register variants do what plans.py says.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sim.measure.micro import plans
from sim.measure.micro.harness import KERNEL_SOURCE

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")


def _nvcc() -> str:
    assert NVCC is not None
    return NVCC


def _supported_archs() -> set[str]:
    out = subprocess.run([_nvcc(), "--list-gpu-arch"], capture_output=True, text=True,
                         check=True).stdout
    return {line.strip().replace("compute_", "sm_") for line in out.split()}


def _compile(tmp_path: Path, arch: str, options: tuple[str, ...]) -> str:
    result = subprocess.run(
        [_nvcc(), f"-arch={arch}", "-c", "-std=c++17", "-Xptxas", "-v", *options,
         str(KERNEL_SOURCE), "-o", str(tmp_path / "k.o")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return str(result.stderr)


@pytest.mark.parametrize("arch", ["sm_90", "sm_80", "sm_75", "sm_70"])
def test_sources_compile(tmp_path: Path, arch: str) -> None:
    if arch not in _supported_archs():
        pytest.skip(f"this nvcc does not target {arch}")
    report = _compile(tmp_path, arch, plans.VARIANTS["base"].options)
    for name in ("spin_kernel", "stream_kernel", "empty_kernel"):
        assert name in report


def _regs(report: str, kernel: str) -> tuple[int, int]:
    """(registers, spill store bytes) of ``kernel`` in a ptxas -v report."""
    block = report[report.index(f"Compiling entry function '{kernel}'"):]
    regs = int(re.search(r"Used (\d+) registers", block).group(1))  # type: ignore[union-attr]
    spills = int(re.search(r"(\d+) bytes spill stores", block).group(1))  # type: ignore[union-attr]
    return regs, spills


@pytest.mark.parametrize("variant", list(plans.VARIANTS))
def test_register_variants_sm90(tmp_path: Path, variant: str) -> None:
    v = plans.VARIANTS[variant]
    report = _compile(tmp_path, "sm_90", v.options)
    regs, spills = _regs(report, "spin_kernel")
    if v.max_regs is not None:
        assert regs <= v.max_regs
    assert spills == 0, "the padding must stay in registers, not local memory"
    # The dry run's table: same compiler major version expected; report drift clearly.
    assert regs == plans.PTXAS_REGS_SM90[("spin", variant)], (
        f"ptxas now gives {regs} registers for {variant}; update PTXAS_REGS_SM90")
    if variant == "base":
        assert _regs(report, "stream_kernel")[0] == plans.PTXAS_REGS_SM90[("stream", "base")]
