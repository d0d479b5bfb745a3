"""``gpusim workloads`` and ``gpusim graph``."""

from __future__ import annotations

import json

import pytest

from sim.cli import main


def test_workloads_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workloads", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet50"]["params"] == 25_557_032
    assert abs(by_name["resnet50"]["macs"] / 1e9 - 4.09) < 0.05
    assert by_name["inception_v3"]["resolution"] == 299
    assert all(r["description"] for r in rows)


def test_workloads_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workloads"]) == 0
    out = capsys.readouterr().out
    assert "googlenet" in out and "6,624,904" in out and "randwire" in out


def test_graph_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--workload", "googlenet", "--batch", "4", "--phase", "training",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["phase"] == "training" and data["batch"] == 4
    assert data["max_conv_antichain"] >= 57
    assert [p["phase"] for p in data["profile"]] == ["forward", "backward"]
    assert main(["graph", "--workload", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "max antichain of convolutions" in out and "critical path (ops)" in out


def test_unknown_workload_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--workload", "lenet"]) == 2
    err = capsys.readouterr().err
    assert "unknown workload 'lenet'" in err and "resnet50" in err


def test_graph_options_reach_the_builder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--workload", "pathnet", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main(["graph", "--workload", "pathnet", "--option", "layers=2", "--option",
                 "modules=3", "--option", "active=2", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["convs"] == 1 + 2 * 2 < default["convs"]
    assert main(["graph", "--workload", "randwire", "--option", "nodes=8", "--option",
                 "p=0.5", "--option", "seed=3"]) == 0
    capsys.readouterr()
    assert main(["graph", "--workload", "resnet18", "--phase", "training", "--option",
                 "optimizer=step", "--json"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("options", "message"), [
    (["nodes=8"], "unknown option(s) nodes"),
    (["layers=two"], "option layers must be an int"),
    (["layers=2.5"], "option layers must be an int"),
    (["batch=4"], "use --batch"),
    (["layers=2", "layers=3"], "given twice"),
])
def test_graph_bad_options_exit_2(options: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["graph", "--workload", "pathnet"]
    for option in options:
        argv += ["--option", option]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_graph_malformed_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["graph", "--workload", "pathnet", "--option", "layers"])
    assert exit_.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err
