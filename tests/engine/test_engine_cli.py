"""``gpusim run`` on the example programs, its JSON and trace output, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim import load_program, simulate
from sim.cli import main
from sim.engine.trace import to_chrome_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"
#: Hand-computed makespans (us): see each file; two half waves overlap then a join wave;
#: leftover policy; s8 waits behind s0 in hardware queue 0; SM partitions: a full wave on
#: SMs 0-65 takes 20 us while two half waves run one after the other on SMs 66-131 (30 us
#: without the partitions: each half wave would wait for the full wave's blocks); SM sharing:
#: two kernels using their SMs' whole FP32 rate side by side take 100 us, then a sleep kernel
#: 50 us (docs/model.md §6.7).
EXPECTED_US = {"two_streams.json": 20.0, "leftover.json": 30.0, "false_dependency.json": 70.0,
               "sm_partition.json": 20.0, "sm_sharing.json": 150.0}


@pytest.mark.parametrize("name", sorted(EXPECTED_US))
def test_examples_run(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(EXAMPLES / name), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["makespan_us"] == pytest.approx(EXPECTED_US[name])
    first = out["kernels"][0]
    assert set(first) >= {"name", "stream", "launch_us", "start_us", "end_us", "blocks"}
    assert main(["run", str(EXAMPLES / name), "--exact"]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"makespan: {EXPECTED_US[name]:.3f} us")
    assert first["name"] in table


def test_examples_are_all_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED_US)


def test_trace_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trace.json"
    assert main(["run", str(EXAMPLES / "two_streams.json"), "--trace", str(out)]) == 0
    assert "trace written" in capsys.readouterr().out
    events = json.loads(out.read_text())["traceEvents"]
    kernels = [e for e in events if e["ph"] == "X" and e["pid"] == 1]
    assert sorted((e["name"], e["tid"], e["ts"], e["dur"]) for e in kernels) == [
        ("half_a", 1, 0.0, 10.0), ("half_b", 2, 0.0, 10.0), ("join", 1, 10.0, 10.0)]
    host = [e for e in events if e["ph"] == "X" and e["pid"] == 0]
    assert len(host) == 3
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {"busy SMs", "DRAM bandwidth"}
    names = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names == {"launch calls", "stream a", "stream b"}


def test_trace_counts_busy_sms() -> None:
    trace = to_chrome_trace(simulate(load_program(EXAMPLES / "leftover.json")))
    busy = [(e["ts"], e["args"]["SMs"]) for e in trace["traceEvents"]
            if e["name"] == "busy SMs"]
    assert busy == [(0.0, 132.0), (pytest.approx(30.0), 0.0)]


@pytest.mark.parametrize(("doc", "message"), [
    ({"gpu": "h100", "streams": [{"name": "a"}],
      "kernels": [{"name": "k", "stream": "b", "grid": 1, "threads": 32, "regs": 8,
                   "block_time_us": 1}]}, "kernel 'k': unknown stream 'b'"),
    ({"gpu": "h100", "streams": [{"name": "a"}],
      "kernels": [{"name": "k", "stream": "a", "grid": 1, "threads": 32, "regs": 8,
                   "smem": 10_000_000, "block_time_us": 1}]}, "kernel 'k' can never fit"),
    ({"gpu": {"base": "h100", "connections": 1}, "streams": [{"name": "a"}, {"name": "b"}],
      "kernels": [{"name": "k1", "stream": "a", "grid": 1, "threads": 32, "regs": 8,
                   "block_time_us": 1, "after": ["k2"]},
                  {"name": "k2", "stream": "b", "grid": 1, "threads": 32, "regs": 8,
                   "block_time_us": 1}]}, "'k1': after names kernel 'k2', which is launched "
                                          "later"),
])
def test_errors_exit_2_naming_the_item(doc: dict, message: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpusim: error: ")
    import re
    assert re.search(message, err)


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------- review fixes
def test_run_json_is_identical_across_runs_unless_timing(
        capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "two_streams.json")
    outs = []
    for _ in range(2):
        assert main(["run", path, "--json"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    assert "wall_s" not in json.loads(outs[0])["counters"]
    assert main(["run", path, "--json", "--timing"]) == 0
    assert json.loads(capsys.readouterr().out)["counters"]["wall_s"] >= 0
    assert main(["run", path]) == 0  # the table output is unchanged


def test_trace_write_failure_says_cannot_write(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "dir" / "t.json"
    assert main(["run", str(EXAMPLES / "two_streams.json"), "--trace", str(out)]) == 2
    err = capsys.readouterr().err
    # Refused before anything runs, naming the file, the option and the missing folder.
    assert err.startswith(f"gpusim: error: cannot write {out} (--trace): folder ")
    assert err.rstrip().endswith("does not exist")
    assert main(["simulate", "--workload", "alexnet", "--trace", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"gpusim: error: cannot write {out} (--trace)")


def test_main_says_cannot_write_for_output_args(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"

    def fail(*_args: object, **_kw: object) -> None:
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr("sim.cli.run.write_chrome_trace", fail)
    assert main(["run", str(EXAMPLES / "two_streams.json"), "--trace", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_simulate_events_use_the_policy_event_count(capsys: pytest.CaptureFixture[str]) -> None:
    from sim.analysis.workflow import simulate_workload
    from sim.scheduling import event_count

    assert main(["simulate", "--workload", "googlenet", "--policy", "levels", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["events"]
    run = simulate_workload("googlenet", policy="levels")
    assert shown == event_count(run.program) > 0


def test_validate_unknown_gpu_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--gpu", "zzz"]) == 2
    err = capsys.readouterr().err
    assert "unknown GPU 'zzz'" in err and "presets:" in err
    assert main(["validate", "--gpu", "h100"]) == 0  # a known GPU (with or without data)


def test_placement_option_and_its_older_name(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "leftover.json")
    assert main(["run", path, "--json", "--placement", "round-robin"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(["run", path, "--json", "--sm-policy", "round-robin"]) == 0
    assert json.loads(capsys.readouterr().out) == new
    assert new["placement"] == "round-robin"
    with pytest.raises(SystemExit) as exc:
        main(["run", path, "--placement", "best"])
    assert exc.value.code == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err
