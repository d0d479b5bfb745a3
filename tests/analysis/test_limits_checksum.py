"""The engine's results are bit-identical to the recorded checksum (benchmarks/limits_checksum.py).

The digests in tests/data/limits_checksum.json were written before the engine's speed work
(issue 18); every optimisation must leave them unchanged. The whole set (every zoo network x
batch 1/32, a few training runs) is compared by the script; here a quick subset with
parallel branches (multi-stream policies, cross-stream events, SM sharing) is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "limits_checksum.py"
QUICK_CASES = ("resnet18/inference/1", "squeezenet1_1/inference/32", "pathnet/inference/1",
               "pathnet/inference/32", "program/4-stream/100/1000/stress/grouped",
               "program/4-stream/60/1000/mixed/grouped", "program/4-stream/10/1000/stress/exact")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("limits_checksum", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("limits_checksum", module)
    spec.loader.exec_module(module)
    return module


checksum = _load_script()


def test_every_case_is_recorded() -> None:
    assert set(checksum.load_checksums()) == set(checksum.all_cases())


@pytest.mark.parametrize("case", QUICK_CASES)
def test_limits_report_matches_checksum(case: str) -> None:
    expected = checksum.load_checksums()[case]
    assert checksum.differences(expected, checksum.case_digest(case)) == []


def test_differences_names_what_moved() -> None:
    expected = {"policies": {"serial": {"makespan_s": (1.0).hex()}}, "binds": "warps"}
    actual = {"policies": {"serial": {"makespan_s": (1.0 + 2**-52).hex()}}, "binds": "warps"}
    diff = checksum.differences(expected, actual)
    assert len(diff) == 1 and diff[0].startswith("/policies/serial/makespan_s:")
