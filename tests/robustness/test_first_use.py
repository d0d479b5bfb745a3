"""First use: every command explains itself, takes the same options, says what it ignored
or fell back to, and is never silently wrong (issue 17, "silently wrong or questionable"
and "first-use friction")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sim.cli import build_parser

if TYPE_CHECKING:
    from conftest import CliRun  # tests/conftest.py: the cli fixture

DATA = Path(__file__).resolve().parent.parent / "data"


def every_command(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                  ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest for a in action._choices_actions}
            for name, sub in action.choices.items():
                if name in listed:  # commands --help lists (not internal child processes)
                    found.append(((*prefix, name), sub))
                    found += every_command(sub, (*prefix, name))
    return found


COMMANDS = every_command(build_parser())


@pytest.mark.parametrize("parser", [p for _, p in COMMANDS],
                         ids=[" ".join(n) for n, _ in COMMANDS])
def test_every_command_has_a_description_and_clean_help(
        parser: argparse.ArgumentParser) -> None:
    assert parser.description and len(parser.description) > 20
    text = parser.format_help()
    assert "==SUPPRESS==" not in text


def test_the_commands_the_issue_named_have_descriptions_of_their_own() -> None:
    named = {n: p for n, p in COMMANDS}
    for command in (("gpus",), ("occupancy",), ("run",), ("simulate",), ("limits",),
                    ("validate",), ("calibrate", "layers")):
        assert named[command].description, command
    assert "==SUPPRESS==" not in named[("calibrate", "micro")].format_help()


def test_option_reaches_the_builder_in_simulate_limits_and_sweep(
        cli: CliRun) -> None:
    def kernels(*argv: str) -> Any:
        code, out, err = cli(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    small = kernels("simulate", "--workload", "randwire", "--option", "nodes=8")["kernels"]
    default = kernels("simulate", "--workload", "randwire")["kernels"]
    assert small < default
    assert kernels("limits", "--workload", "randwire", "--option", "nodes=8", "--policies",
                   "branches")["kernels"] == small
    rows = kernels("sweep", "--workload", "randwire", "--option", "nodes=8,12", "--policy",
                   "branches", "--executor", "serial")
    assert [r["option.nodes"] for r in rows] == [8, 12]
    assert rows[0]["kernels"] == small and rows[1]["kernels"] > small
    # Lowering options too: fusion=inference folds batch norm into the convolutions.
    fused = kernels("simulate", "--workload", "resnet18", "--option", "fusion=inference")
    assert fused["kernels"] < kernels("simulate", "--workload", "resnet18")["kernels"]
    code, _, err = cli("simulate", "--workload", "randwire", "--option", "nodez=8")
    assert code == 2 and "unknown option(s) nodez" in err


def test_graph_takes_precision_like_every_other_command(
        cli: CliRun) -> None:
    code, out, _ = cli("graph", "--workload", "alexnet", "--precision", "fp16",
                       "--json")
    fp16 = json.loads(out)
    assert code == 0
    code, out, _ = cli("graph", "--workload", "alexnet", "--dtype", "fp16", "--json")
    assert code == 0 and json.loads(out) == fp16  # the older name still works
    code, out, _ = cli("graph", "--workload", "alexnet", "--json")
    assert json.loads(out)["bytes"] == 2 * fp16["bytes"]
    assert "--precision" in dict(COMMANDS)[("graph",)].format_help()


def test_origin_without_the_scaled_cost_model_is_a_warning(
        cli: CliRun) -> None:
    code, _, err = cli("simulate", "--workload", "alexnet", "--origin", "a100")
    assert code == 0
    assert err == ("gpusim: warning: the origin GPU a100 is used only by the 'scaled' cost "
                   "model; ignored with cost model 'analytic'\n")
    code, _, err = cli("op", "gemm", "--m", "64", "--n", "64", "--k", "64",
                       "--origin", "v100")
    assert code == 0 and "ignored" in err
    code, _, err = cli("op", "gemm", "--m", "64", "--n", "64", "--k", "64")
    assert code == 0 and err == ""


def test_optimizer_on_inference_is_a_warning(cli: CliRun) -> None:
    code, _, err = cli("graph", "--workload", "alexnet", "--option", "optimizer=step")
    assert code == 0
    assert "gpusim: warning: option optimizer=step applies to training; ignored" in err


def test_occupancy_carveout(cli: CliRun) -> None:
    base = ("occupancy", "--threads", "256", "--regs", "32")
    code, _, err = cli(*base, "--carveout", "-5")
    assert code == 2 and "carveout must be a number of bytes >= 0" in err
    code, _, err = cli(*base, "--carveout", "5000")
    assert code == 0 and "not a carveout h100 supports" in err and "using 8192 B" in err
    code, _, err = cli(*base, "--carveout", "8192")
    assert code == 0 and err == ""


def test_bf16_on_a_v100_warns_and_says_so_in_the_header(
        cli: CliRun) -> None:
    code, out, err = cli("simulate", "--workload", "alexnet", "--gpu", "v100",
                         "--precision", "bf16")
    assert code == 0
    assert "v100 has no bf16 tensor cores: bf16 math runs on CUDA cores" in err
    assert "(bf16, on CUDA cores)" in out.splitlines()[0]
    code, out, err = cli("simulate", "--workload", "alexnet", "--gpu", "v100",
                         "--precision", "fp16")
    assert err == "" and "(fp16)" in out
    code, _, err = cli("op", "gemm", "--m", "512", "--n", "512", "--k", "512",
                       "--gpu", "v100", "--precision", "tf32")
    assert code == 0 and "no tf32 tensor cores" in err


def test_op_refuses_grids_beyond_cudas_limits(cli: CliRun) -> None:
    code, out, err = cli("op", "gemm", "--m", "1000000000", "--n", "1000000000",
                         "--k", "1000000000")
    assert code == 2 and out == "" and "CUDA allows at most" in err


def _trace(tmp_path: Path, durations: list[float]) -> Path:
    data = json.loads((DATA / "tiny_profiler_trace.json").read_text())
    kernels = [e for e in data["traceEvents"] if e.get("cat") in ("kernel", "Kernel")]
    for event, duration in zip(kernels, durations * len(kernels), strict=False):
        event["dur"] = duration
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("duration", [0.0, -3.0])
def test_ingest_of_a_trace_without_usable_kernels_writes_nothing(
        tmp_path: Path, cli: CliRun, duration: float) -> None:
    out = tmp_path / "c.json"
    code, _, err = cli("calibrate", "ingest", str(_trace(tmp_path, [duration])),
                       "--out", str(out))
    assert code == 2 and "no usable kernels, nothing written" in err
    which = "with zero duration" if duration == 0 else "with a negative duration"
    assert f"7 {which}" in err
    assert not out.exists()
    cpu_only = tmp_path / "cpu.json"
    cpu_only.write_text('{"traceEvents": []}')
    code, _, err = cli("calibrate", "ingest", str(cpu_only), "--out", str(out))
    assert code == 2 and not out.exists()


def test_negative_durations_are_counted_apart_from_zero_ones(
        tmp_path: Path, cli: CliRun) -> None:
    code, out, _ = cli("calibrate", "ingest", str(_trace(tmp_path, [5.0, -1.0, 0.0])),
                       "--out", str(tmp_path / "c.json"), "--json")
    summary = json.loads(out)["summary"]
    assert code == 0 and summary["n_negative_duration"] == 2
    assert summary["n_zero_duration"] == 2
    assert summary["n_kernels"] + summary["n_communication"] == 3


def test_ingest_refuses_an_unknown_preset(tmp_path: Path,
                                          cli: CliRun) -> None:
    out = tmp_path / "c.json"
    code, _, err = cli("calibrate", "ingest", str(DATA / "tiny_profiler_trace.json"),
                       "--out", str(out), "--gpu-name", "nosuch")
    assert code == 2 and "--gpu-name 'nosuch' is not a gpusim preset" in err
    assert not out.exists()


def test_validate_names_a_data_folder_that_does_not_exist(
        cli: CliRun) -> None:
    code, out, err = cli("validate", "--data", "/nonexistent/micro")
    assert code == 2 and out == "" and "--data /nonexistent/micro does not exist" in err


def test_ignored_flags_are_warnings(tmp_path: Path, cli: CliRun) -> None:
    program = Path(__file__).resolve().parents[2] / "examples" / "programs" / "leftover.json"
    code, _, err = cli("run", str(program), "--timing")
    assert code == 0 and "--timing adds the wall time to the --json output; ignored" in err
    code, _, err = cli("sweep", "--workload", "resnet50", "--evaluator", "occupancy",
                       "--executor", "serial", "--out", str(tmp_path / "new.csv"),
                       "--resume")
    assert code == 0 and "does not exist yet; starting a new sweep" in err


def test_run_explains_where_the_time_went_in_words(cli: CliRun) -> None:
    program = Path(__file__).resolve().parents[2] / "examples" / "programs" / \
        "false_dependency.json"
    code, out, _ = cli("run", str(program))
    assert code == 0 and "time spent: false dependency in a hardware queue" in out
    assert "_s" not in out.splitlines()[-1]


def test_each_command_line_builds_the_parser_of_its_own_command_only() -> None:
    # sim.cli.COMMANDS (which module registers each command) is what the modules register;
    # a command line builds the parser of its module alone, the same for that command.
    from sim.cli import COMMANDS as REGISTRY

    full = {names[0]: parser for names, parser in COMMANDS if len(names) == 1}
    assert list(full) == list(REGISTRY)
    for command, module in REGISTRY.items():
        alone = build_parser(command)
        found = {names[0]: p for names, p in every_command(alone) if len(names) == 1}
        assert command in found, (command, module)
        assert set(found) == {c for c, m in REGISTRY.items() if m == module}
        assert found[command].format_help() == full[command].format_help()
