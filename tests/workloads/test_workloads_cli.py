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
