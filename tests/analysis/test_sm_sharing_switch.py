"""The ``sm_sharing`` switch through the analysis layers: what binds names the new
mechanisms, sweeps take it as an option and an axis (keys of default points unchanged),
isolated times follow it, and calibrated or scaled kernels are not slowed twice."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from gpu_models.cost import RooflineModel, isolated_time_s, scaled_model, waves
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelSpec
from gpu_models.presets import load_gpu, load_preset
from sim import Launch, Program, StreamDef, simulate
from sim.analysis.limits import BINDS, what_binds
from sim.analysis.sweep import Point, SweepSpec
from sim.analysis.sweep.evaluate import evaluate_point, limits_evaluator
from sim.analysis.sweep.points import sweep_from_mapping

H100 = load_gpu("h100")


def pair(**kw: Any) -> Program:
    kernels = tuple(Launch(f"k{i}", s, grid=132, **kw) for i, s in enumerate("ab"))
    return Program(H100, (StreamDef("a"), StreamDef("b")), kernels, launch_overhead_s=0.0)


def test_what_binds_names_sm_throughput_and_memory_parallelism() -> None:
    assert {"sm_throughput", "memory_parallelism"} <= set(BINDS)
    compute = simulate(pair(threads=1024, regs_per_thread=32, smem_per_block_B=0,
                            block_time_s=50e-6, sm_throughput={"simt": 1.0}))
    assert what_binds(compute, 1e-9) == "sm_throughput"
    streaming = simulate(pair(threads=32, regs_per_thread=32, smem_per_block_B=0,
                              block_time_s=10e-6, dram_bytes=1e8))
    assert what_binds(streaming, 1e-9) == "memory_parallelism"
    assert streaming.counters.dram_saturated_s == 0  # held back short of the bandwidth
    off = simulate(pair(threads=32, regs_per_thread=32, smem_per_block_B=0,
                        block_time_s=10e-6, dram_bytes=1e8), sm_sharing=False)
    assert what_binds(off, 1e-9) == "dram_bandwidth"


def test_sweep_option_and_axis() -> None:
    # Default points keep the keys of sweeps made before the option existed.
    assert Point("resnet50").key == Point("resnet50", sm_sharing=True).key
    assert Point("resnet50", sm_sharing=False).key != Point("resnet50").key
    spec = SweepSpec.from_tables([{"sm_sharing": ("on", "off")}], {"workload": ("googlenet",)})
    points = spec.points()
    assert [p.sm_sharing for p in points] == [True, False]
    assert [p.input_columns()["sm_sharing"] for p in points] == ["on", "off"]
    toml = sweep_from_mapping({"sweep": {"workload": "googlenet"},
                               "grid": {"sm_sharing": [True, False]}})
    assert [p.sm_sharing for p in toml.points()] == [True, False]
    with pytest.raises(GpusimError, match="sm_sharing must be 'on' or 'off'"):
        SweepSpec.from_tables([{"sm_sharing": ("maybe",)}], {"workload": ("x",)}).points()


def test_limits_evaluator_passes_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class Report:
        def to_dict(self) -> dict[str, Any]:
            return {"serial_us": 2.0, "policies": {}, "sm_sharing": False}

    module = types.ModuleType("sim.analysis.limits")
    module.limits_for_workload = lambda name, **kw: calls.append(kw) or Report()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sim.analysis.limits", module)
    row = evaluate_point(Point("googlenet", sm_sharing=False), limits_evaluator)
    assert calls[0]["sm_sharing"] is False and row["sm_sharing"] == "off"


def test_calibrated_or_scaled_kernels_are_not_slowed_twice() -> None:
    # A scaled model's time already includes the memory side: its blocks declare the bytes
    # in flight that time implies, so alone the engine gives exactly the model's time, also
    # for a memory-bound kernel with few warps (one 1-warp block per SM).
    origin = load_preset("a100")
    model = scaled_model(origin, origin_model=RooflineModel())
    kernel = KernelSpec(name="relu", kind="elementwise", grid=(132, 1, 1), threads=32,
                        regs_per_thread=16, smem_per_block_B=0, flops=0.0, dram_bytes=5e8)
    cost = model(kernel, H100)
    assert cost.bytes_in_flight_B > 0
    own = waves(kernel, H100) * cost.block_time_s
    assert isolated_time_s(kernel, H100, model) == pytest.approx(own, rel=1e-9)
    program = Program(H100, (StreamDef("a"),), (Launch.from_kernel(kernel, cost, stream="a"),),
                      launch_overhead_s=0.0)
    assert simulate(program).makespan_s == pytest.approx(own, rel=1e-9)
    # The roofline leaves the memory side to the engine: its lone time is the parallelism's.
    assert isolated_time_s(kernel, H100, RooflineModel()) > isolated_time_s(
        kernel, H100, RooflineModel(), sm_sharing=False)
