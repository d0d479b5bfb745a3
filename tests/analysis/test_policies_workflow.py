"""The workflow helpers the policies, limits and CLI share."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_models.cost import get_cost_model
from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec
from sim.analysis import workflow
from sim.analysis.workflow import (
    busy_sm_fraction,
    dram_utilisation,
    kernel_graph_for,
    run_policy,
    schedule_context,
    simulate_workload,
    time_average,
    time_policy,
)
from sim.engine.engine import simulate, simulate_makespan
from sim.engine.program import Launch, Program, StreamDef
from sim.scheduling import Schedule, ScheduleContext
from workloads import build
from workloads.graph import framework_order


def test_time_average_of_a_step_function() -> None:
    # 2 on [0, 1), 4 on [1, 3), cut at 4: (2 + 8 + 4) / 4.
    assert time_average((0.0, 1.0, 3.0), (2.0, 4.0, 4.0), 4.0) == pytest.approx(3.5)
    assert time_average((0.0, 1.0), (2.0, 0.0), 0.5) == pytest.approx(2.0)
    assert time_average((), (), 1.0) == 0.0


def test_kernel_graph_follows_the_framework_order(h100: GPUSpec) -> None:
    layers = build("googlenet", batch=1)
    kernel_graph = kernel_graph_for("googlenet", batch=1, gpu=h100)
    index = {name: i for i, name in enumerate(layers.nodes)}
    positions = [index[kernel_graph.nodes[n]["layer"]] for n in kernel_graph.nodes]
    assert positions == sorted(positions)
    # The insertion order is the framework's launch order (a topological order).
    assert list(kernel_graph.nodes) == framework_order(kernel_graph)


def test_simulate_workload_summary(v100: GPUSpec) -> None:
    run = simulate_workload("resnet18", batch=4, gpu=v100, policy="critical-path:3")
    assert run.run.policy == "critical-path:3"
    assert len({k.stream for k in run.program.kernels}) <= 3
    assert run.result.makespan_s > 0
    assert 0 < busy_sm_fraction(run.result) <= 1
    assert 0 < dram_utilisation(run.result) <= 1


def test_bad_precision_names_it(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="fp64"):
        kernel_graph_for("alexnet", precision="fp64", gpu=h100)


def _two_kernel_program(gpu: GPUSpec, names: tuple[str, str], block_time_s: float = 1e-5,
                        priority: int = 0) -> Program:
    a, b = names
    return Program(gpu, (StreamDef("s0", priority), StreamDef("s1")), (
        Launch(a, "s0", 264, 256, 32, 0, block_time_s, dram_bytes=1e6),
        Launch(b, "s1", 132, 128, 64, 0, 2e-5, after=(a,), kind="conv_fwd", layer="x"),
    ))


def test_timing_key_ignores_names_and_labels_only(h100: GPUSpec) -> None:
    base = _two_kernel_program(h100, ("a", "b"))
    renamed = _two_kernel_program(h100, ("conv7", "relu9"))
    assert base.timing_key() == renamed.timing_key()
    assert simulate(base).makespan_s == simulate(renamed).makespan_s
    # Anything the engine times by makes another key.
    assert _two_kernel_program(h100, ("a", "b"), block_time_s=2e-5).timing_key() \
        != base.timing_key()
    assert _two_kernel_program(h100, ("a", "b"), priority=-1).timing_key() != base.timing_key()


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> list[Program]:
    """The programs the candidate evaluator simulates, in order, from now on."""
    calls: list[Program] = []

    def counting(program: Program, **kwargs: Any) -> float:
        calls.append(program)
        return simulate_makespan(program, **kwargs)

    monkeypatch.setattr(workflow, "simulate_makespan", counting)
    return calls


def test_searching_policies_simulate_a_candidate_seen_before_once(
        h100: GPUSpec, simulated: list[Program]) -> None:
    calls = simulated
    graph = kernel_graph_for("resnet18", batch=1, gpu=h100)
    ctx = schedule_context(graph, h100, get_cost_model("roofline"))
    assert ctx.evaluate is not None
    order = tuple(framework_order(graph))
    serial = Schedule(order=order, stream_of=dict.fromkeys(order, 0))
    first = ctx.evaluate(serial)
    # The same schedule again, and one on stream 1 instead of 0 (the same program but for
    # the stream's name): answered without simulating.
    assert ctx.evaluate(serial) == first
    assert ctx.evaluate(Schedule(order=order, stream_of=dict.fromkeys(order, 1))) == first
    assert len(calls) == 1


def test_a_policy_run_spares_a_later_search_simulating_its_program(
        h100: GPUSpec, simulated: list[Program]) -> None:
    calls = simulated
    graph = kernel_graph_for("resnet18", batch=1, gpu=h100)

    def fresh() -> ScheduleContext:
        return schedule_context(graph, h100, get_cost_model("roofline"))

    alone = run_policy(fresh(), "stages")
    searched_alone = [p.timing_key() for p in calls]
    ctx = fresh()
    serial = run_policy(ctx, "serial")
    calls.clear()
    after_serial = run_policy(ctx, "stages")
    # stages times the serial schedule against its own: the serial run answered that one.
    assert serial.program.timing_key() in searched_alone
    assert [p.timing_key() for p in calls] == [
        k for k in searched_alone if k != serial.program.timing_key()]
    assert after_serial.schedule == alone.schedule
    assert after_serial.result.makespan_s == alone.result.makespan_s
    # Another engine setting than the evaluator's is not remembered.
    other = fresh()
    run_policy(other, "serial", mode="exact")
    calls.clear()
    run_policy(other, "stages")
    assert serial.program.timing_key() in [p.timing_key() for p in calls]


def test_timing_a_policy_gives_its_run_s_makespan_and_simulates_each_program_once(
        h100: GPUSpec, simulated: list[Program]) -> None:
    graph = kernel_graph_for("resnet18", batch=1, gpu=h100)
    ctx = schedule_context(graph, h100, get_cost_model("roofline"))
    serial = time_policy(ctx, "serial")
    stages = time_policy(ctx, "stages")
    keys = [p.timing_key() for p in simulated]
    # The serial timing answered the search's comparison with serial, and the search's
    # own simulation of the schedule it chose answered its timing: nothing twice.
    assert len(keys) == len(set(keys))
    assert serial.program.timing_key() in keys and stages.program.timing_key() in keys
    fresh = schedule_context(graph, h100, get_cost_model("roofline"))
    for timed in (serial, stages):
        run = run_policy(fresh, timed.policy)
        assert (run.schedule, run.result.makespan_s) == (timed.schedule, timed.makespan_s)
    # Without an evaluator (or under other physics) the program is simulated directly.
    bare = schedule_context(graph, h100, get_cost_model("roofline"), evaluate=False)
    simulated.clear()
    assert time_policy(bare, "serial").makespan_s == serial.makespan_s
    assert [p.timing_key() for p in simulated] == [serial.program.timing_key()]
