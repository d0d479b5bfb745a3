"""``gpusim run`` with SM sharing and memory parallelism: ``--sm-sharing``, the program fields
``sm_throughput`` and ``work``, and their errors (exit 2 naming the kernel and field)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"


def program(*kernels: dict[str, Any], gpu: str = "h100") -> dict[str, Any]:
    base = {"stream": "a", "grid": 132, "threads": 1024, "regs": 32}
    return {"gpu": gpu, "launch_overhead_us": 0, "streams": [{"name": "a"}, {"name": "b"}],
            "kernels": [{**base, **k} for k in kernels]}


def run(doc: dict[str, Any], tmp_path: Path, *args: str) -> int:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    return main(["run", str(path), *args])


def test_sm_sharing_switch(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "sm_sharing.json")
    assert main(["run", path, "--json"]) == 0
    on = json.loads(capsys.readouterr().out)
    assert (on["makespan_us"], on["sm_sharing"]) == (pytest.approx(150), True)
    assert on["counters"]["sm_oversubscribed_s"]["simt"] == pytest.approx(100e-6)
    # Off: the two FP32 kernels overlap for free (twice the GPU's peak), the engine before.
    assert main(["run", path, "--json", "--sm-sharing", "off"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert (off["makespan_us"], off["sm_sharing"]) == (pytest.approx(100), False)
    assert main(["run", path]) == 0
    assert "SM throughput over-subscribed (simt) 100.000 us" in capsys.readouterr().out


def test_work_kernels_are_priced_by_the_cost_model(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # 132 blocks of 1 GFLOP each in fp32 at the roofline's micro efficiency (1.0): one block
    # per SM, so each block has its SM's FP32 rate: 1e9 / (66.9e12 / 132) s + 1 us latency.
    doc = program({"name": "k", "work": {"flop": 132e9, "math": "fp32"}})
    assert run(doc, tmp_path, "--json", "--cost-model", "roofline") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["makespan_us"] == pytest.approx(1e9 / (66.9e12 / 132) * 1e6 + 1.0, rel=1e-9)
    # Another cost model by name prices it too (calibrated needs data: it says so).
    assert run(doc, tmp_path, "--cost-model", "calibrated") == 2
    assert "calibrat" in capsys.readouterr().err


@pytest.mark.parametrize(("kernel", "gpu", "message"), [
    ({"block_time_us": 1, "sm_throughput": 1.5}, "h100",
     r"kernel 'k': sm_throughput must be a number in \[0, 1\]"),
    ({"block_time_us": 1, "sm_throughput": {"fp64": 0.5}}, "h100",
     r"kernel 'k': sm_throughput: unknown resource\(s\) 'fp64'"),
    ({"block_time_us": 1, "sm_throughput": {"tensor": -0.1}}, "h100",
     r"kernel 'k': sm_throughput: the tensor share must be a number in \[0, 1\]"),
    ({"work": {"flop": 1e9}, "block_time_us": 1}, "h100",
     r"kernel 'k': give either work .* not both \(also has block_time_us\)"),
    ({"work": {"flop": -1.0}}, "h100", r"kernel 'k': work.flop must be a finite number >= 0"),
    ({"work": {"flop": 1.0, "dram_bytes": "lots"}}, "h100",
     r"kernel 'k': work.dram_bytes must be a finite number >= 0"),
    ({"work": {"flop": 1.0, "math": "int8"}}, "h100", r"kernel 'k': work.math must be one of"),
    ({"work": {"flop": 1.0, "math": "tf32"}}, "v100",
     r"kernel 'k': work.math 'tf32' runs on tensor cores, which v100 lacks"),
    ({"work": {"flops": 1.0}}, "h100", r"kernel 'k': work: unknown key\(s\) 'flops'"),
    ({"work": 5}, "h100", r"kernel 'k': work must be an object"),
    ({}, "h100", r"kernel 'k': missing key\(s\) block_time_us \(or work\)"),
])
def test_bad_values_exit_2_naming_kernel_and_field(kernel: dict[str, Any], gpu: str,
                                                   message: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import re

    assert run(program({"name": "k", **kernel}, gpu=gpu), tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpusim: error: ") and re.search(message, err), err


def test_run_help_documents_the_program_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for word in ("sm_throughput", "work", '"flop"', "fp32|tf32|fp16|bf16", "--sm-sharing",
                 "--cost-model", "block_time_us"):
        assert word in text, word
