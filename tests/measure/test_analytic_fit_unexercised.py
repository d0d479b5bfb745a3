"""The analytic fit on a tiny synthetic data set: a parameter no point of an entry exercises
takes the default entry's value, exactly, and the table's provenance says so."""

from __future__ import annotations

import numpy as np
import pytest

import sim.measure.analytic_fit as analytic_fit
from gpu_models.cost.analytic import DEFAULT_ENTRY
from gpu_models.kernel import KernelKind
from sim.measure.analytic_fit import (
    UNEXERCISED,
    FitData,
    FitPoint,
    fit_table,
    predict,
    table_toml,
)

GEMM = analytic_fit._COMPUTE_KEYS.index("gemm.simt")
GEMM_KIND = analytic_fit._KINDS.index(KernelKind.GEMM)
ELEMENTWISE = analytic_fit._KINDS.index(KernelKind.ELEMENTWISE)


def _data() -> FitData:
    """GPU "a" (arch 1.0): three compute-bound GEMMs at 90% of the peak. GPU "b" (arch
    2.0): three GEMMs at 60% and three memory-bound elementwise kernels at 50% of the
    bandwidth. One kernel per point, one wave, no tiles, no K loop; every time is >= 1 ms,
    far above the 2 us floor."""
    points, compute, memory, compute_index = [], [], [], []
    for gpu, arch, efficiency in (("a", "1.0", 0.9), ("b", "2.0", 0.6)):
        for base_s in (1e-3, 2e-3, 3e-3):
            points.append(FitPoint(gpu, arch, (gpu, "fp32", "gemm", "gemm"),
                                   base_s / efficiency))
            compute.append(base_s)
            memory.append(0.0)
            compute_index.append(GEMM)
    for base_s in (1e-3, 2e-3, 4e-3):
        points.append(FitPoint("b", "2.0", ("b", "fp32", "elementwise", "-"), base_s / 0.5))
        compute.append(0.0)
        memory.append(base_s)
        compute_index.append(analytic_fit._COMPUTE_KEYS.index("elementwise.simt"))
    n = len(points)
    kinds = [GEMM_KIND if m == 0 else ELEMENTWISE for m in memory]
    return FitData(points=tuple(points), alternative=np.arange(n),
                   alternative_point=np.arange(n), compute_s=np.array(compute),
                   tile_factor=np.zeros(n), iterations=np.zeros(n, dtype=np.int64),
                   memory_s=np.array(memory), waves=np.ones(n),
                   compute_index=np.array(compute_index), kind_index=np.array(kinds),
                   sources=("synthetic",))


def test_an_unexercised_parameter_takes_the_default_entrys_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A negligible ridge: the fitted values are then what the data say (hand-computed).
    monkeypatch.setattr(analytic_fit, "RIDGE", 1e-6)
    table = fit_table(_data())
    default, a, b = (table.entries[k] for k in (DEFAULT_ENTRY, "1.0", "2.0"))
    # Each GPU's GEMMs give its own entry's efficiency.
    assert a.compute_efficiency["gemm.simt"] == pytest.approx(0.9, rel=1e-3)
    assert b.compute_efficiency["gemm.simt"] == pytest.approx(0.6, rel=1e-3)
    # Only GPU b measured elementwise kernels: the default (fitted to both GPUs) takes its
    # 50%; GPU a's entry has no point that exercises it, so it is the default's, exactly.
    assert default.memory_efficiency["elementwise"] == pytest.approx(0.5, rel=1e-3)
    assert b.memory_efficiency["elementwise"] == pytest.approx(0.5, rel=1e-3)
    assert a.memory_efficiency["elementwise"] == default.memory_efficiency["elementwise"]
    # The floor binds no kernel anywhere: the default keeps the fit's start value (2 us),
    # the entries the default's.
    assert default.kernel_floor_s == pytest.approx(2e-6, rel=1e-12)
    assert a.kernel_floor_s == b.kernel_floor_s == default.kernel_floor_s
    # The provenance lists them per entry, and only them.
    listed = table.provenance[UNEXERCISED]
    assert "memory_efficiency.elementwise" in listed["1.0"]
    assert "memory_efficiency.elementwise" not in listed["2.0"]
    assert "memory_efficiency.elementwise" not in listed[DEFAULT_ENTRY]
    assert "compute_efficiency.gemm.simt" not in listed["1.0"] + listed["2.0"]
    assert "kernel_floor_s" in listed["1.0"] and "kernel_floor_s" in listed[DEFAULT_ENTRY]
    assert "compute_efficiency.conv_fwd.simt" in listed[DEFAULT_ENTRY]
    assert not any("micro" in name for names in listed.values() for name in names)
    assert "unexercised" in table.provenance
    # ... and the data file carries them.
    text = table_toml(table)
    assert f"[provenance.{UNEXERCISED}]" in text and '"1.0" = [' in text
    # The fit prices its own points.
    data = _data()
    measured = np.array([p.measured_s for p in data.points])
    assert np.allclose(predict(data, table), measured, rtol=1e-3)


def test_a_parameter_left_unbound_after_moving_is_put_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A fit that moves a parameter while it binds a kernel and ends with it binding none
    # must not keep the moved value: the entry's value is its prior's.
    monkeypatch.setattr(analytic_fit, "RIDGE", 1e-6)
    data = _data()
    prior = fit_table(data).entries[DEFAULT_ENTRY]
    part = data.subset(lambda p: p.arch == "1.0")
    calls = []
    real = analytic_fit._levenberg_marquardt

    def moving(residuals, theta, **kw):  # type: ignore[no-untyped-def]
        out = real(residuals, theta, **kw)
        calls.append(kw.get("free"))
        if len(calls) == 1:
            out = out.copy()
            out[analytic_fit.PARAMETER_NAMES.index("memory_efficiency.elementwise")] += 1.0
        return out

    monkeypatch.setattr(analytic_fit, "_levenberg_marquardt", moving)
    entry, idle = analytic_fit._fit_entry(part, prior, "test")
    assert entry.memory_efficiency["elementwise"] == pytest.approx(
        prior.memory_efficiency["elementwise"], rel=1e-12)
    assert "memory_efficiency.elementwise" in idle
    assert len(calls) == 2 and calls[1] is not None
    assert not calls[1][analytic_fit.PARAMETER_NAMES.index("memory_efficiency.elementwise")]
