"""Degenerate GPUs give a clear error, not inf/nan; float noise is not a speedup."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from gpu_models.errors import GpusimError
from gpu_models.presets import load_preset
from sim.analysis.limits import LimitsReport, WorkBound, limits_for_workload
from sim.cli import main

H100 = load_preset("h100")


@pytest.mark.parametrize(("override", "field"), [
    ("clock_hz=1e-300", "clock_hz"),
    ("dram_bw_Bps=1e-300", "dram_bw_Bps"),
])
def test_non_finite_limits_raise_naming_the_field(override: str, field: str) -> None:
    with pytest.raises(GpusimError, match=f"not finite.*{field}"):
        limits_for_workload("resnet18", gpu=H100.with_overrides([override]),
                            policies=["serial"])


def test_cli_limits_degenerate_gpu_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits", "--workload", "resnet18", "--set", "clock_hz=1e-300",
                 "--policies", "serial", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "clock_hz" in err and "inf" not in out


def _report(serial_s: float, lower_s: float, best_s: float | None = None) -> LimitsReport:
    times = {"serial": serial_s}
    if best_s is not None:
        times["levels"] = best_s
    return LimitsReport(
        workload="w", batch=1, phase="inference", precision="fp32", gpu="h100",
        cost_model="roofline", kernels=1, serial_s=serial_s,
        policies_s=MappingProxyType(times), critical_path_s=lower_s,
        work_bound=WorkBound(MappingProxyType({"warps": lower_s / 2}), 0.0),
        binds="dependencies", binds_detail_s=MappingProxyType({}),
        streams=MappingProxyType({}), events=MappingProxyType({}))


def test_speedups_snap_float_noise_to_one() -> None:
    lower = 6.161e-3
    report = _report(lower * (1 + 2.2e-15), lower)
    assert report.speedup_ideal == 1.0 and report.speedup_achievable == 1.0
    assert _report(lower * (1 - 2e-16), lower).speedup_ideal == 1.0
    # A real speedup is kept as it is.
    real = _report(2e-3, 1e-3, best_s=1.5e-3)
    assert real.speedup_ideal == 2.0 and real.speedup_achievable == pytest.approx(4 / 3)


def test_speedup_ideal_of_a_serial_chain_is_exactly_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits", "--workload", "alexnet", "--policies", "serial", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["speedup_ideal"] >= 1.0 and report["speedup_achievable"] == 1.0
