"""``gpusim simulate`` and ``gpusim limits``: JSON shape, tables, traces, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture



def test_simulate_resnet50_training_batch64_json_in_seconds(
        cli: CliRun) -> None:
    start = time.perf_counter()
    code, out, _ = cli("simulate", "--workload", "resnet50", "--phase", "training",
                       "--batch", "64", "--gpu", "h100", "--json")
    elapsed = time.perf_counter() - start
    assert code == 0
    data = json.loads(out)
    assert data["makespan_us"] > 0 and data["kernels"] > 500
    assert data["policy"] == "serial" and data["streams"] == 1 and data["events"] == 0
    assert 0 < data["busy_sm_fraction"] <= 1 and 0 < data["dram_utilisation"] <= 1
    assert elapsed < 30  # "completes in seconds" (a few on a laptop; slack for slow CI)


def test_simulate_table_policy_overrides_and_trace(cli: CliRun,
                                                   tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    code, out, _ = cli("simulate", "--workload", "googlenet", "--policy",
                       "min-streams+priority", "--gpu", "v100", "--set", "sm_count=40",
                       "--precision", "fp16", "--trace", str(trace))
    assert code == 0
    assert "makespan:" in out and "busy SMs:" in out and "min-streams+priority" in out
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)


def test_simulate_applies_overrides(cli: CliRun) -> None:
    code, out, _ = cli("simulate", "--workload", "resnet18", "--gpu", "v100",
                       "--set", "launch_overhead_s=0", "--json")
    assert code == 0
    fast = json.loads(out)
    code, out, _ = cli("simulate", "--workload", "resnet18", "--gpu", "v100", "--json")
    slow = json.loads(out)
    assert fast["gpu"] == "v100*" and slow["gpu"] == "v100"
    # Batch 1 is launch-bound: removing the host's launch cost shortens the run.
    assert fast["makespan_us"] < slow["makespan_us"]


@pytest.mark.parametrize(("argv", "fragment"), [
    (("simulate", "--workload", "nonet"), "nonet"),
    (("simulate", "--workload", "alexnet", "--policy", "fastest"), "'fastest'"),
    (("simulate", "--workload", "alexnet", "--set", "sm_count=0"), "sm_count"),
    (("simulate", "--workload", "alexnet", "--cost-model", "scaled"), "origin"),
    (("limits", "--workload", "alexnet", "--policies", "serial,bogus"), "'bogus'"),
])
def test_bad_input_exits_2_naming_the_item(cli: CliRun,
                                           argv: tuple[str, ...], fragment: str) -> None:
    code, _, err = cli(*argv)
    assert code == 2
    assert err.startswith("gpusim: error:") and fragment in err


def test_limits_json(cli: CliRun) -> None:
    code, out, _ = cli("limits", "--workload", "squeezenet1_1", "--batch", "4",
                       "--gpu", "h100", "--policies", "branches,critical-path:2", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"serial_us", "critical_path_us", "work_bound_us", "lower_bound_us", "policies",
            "best_policy", "speedup_ideal", "speedup_achievable", "binds"} <= set(data)
    assert list(data["policies"]) == ["serial", "branches", "critical-path:2"]
    assert data["best_policy"] in data["policies"]
    assert data["lower_bound_us"] <= min(data["policies"].values()) * (1 + 1e-9)


def test_limits_table(cli: CliRun) -> None:
    code, out, _ = cli("limits", "--workload", "googlenet", "--policies",
                       "min-streams", "--phase", "inference")
    assert code == 0
    for text in ("serial", "min-streams", "critical path", "work bound", "lower bound",
                 "best policy:", "what binds the best run:"):
        assert text in out
    # In words, not engine counter names; every speedup with the same three decimals.
    assert "blocked_s" not in out and "_s[" not in out
    speedups = [line.split()[2] for line in out.splitlines()[3:5]]
    assert speedups[0] == "1.000" and all(len(s.split(".")[1]) == 3 for s in speedups)
