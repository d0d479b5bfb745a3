"""Sweeps: points and their keys, grid expansion (CLI and TOML), rows, results files, resume."""

from __future__ import annotations

import csv
import hashlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.presets import load_preset
from sim.analysis.sweep import (
    Point,
    Serial,
    SweepSpec,
    evaluate_point,
    limits_evaluator,
    occupancy_evaluator,
    read_results,
    run_sweep,
    sweep_from_mapping,
)
from sim.analysis.sweep.evaluate import REFERENCE_KERNELS, flatten_result
from sim.analysis.sweep.points import load_sweep_file, parse_set_axes
from sim.analysis.sweep.results import open_results
from sim.scheduling import get_policy


def grid_spec(sms: str = "66,132,264", smem: str = "65536,233472",
              batches: tuple[str, ...] = ("1", "32")) -> SweepSpec:
    return SweepSpec.from_tables(
        [parse_set_axes([f"sm_count={sms}", f"smem_per_sm_B={smem}"])],
        {"workload": ("resnet50",), "batch": batches},
    )


def by_key(rows: Any) -> dict[str, dict[str, Any]]:
    return {row["key"]: dict(row) for row in rows}


class CountingEvaluator:
    """The occupancy evaluator, counting calls; raises KeyboardInterrupt on call ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.stop_at = stop_at

    def __call__(self, point: Point) -> dict[str, Any]:
        self.calls.append(point.key)
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        return occupancy_evaluator(point)


# ---------------------------------------------------------------------- points and keys
def test_key_is_canonical_over_value_spelling_and_override_order() -> None:
    a = Point("resnet50", overrides=(("sm_count", "264"), ("connections", "32")))
    b = Point("resnet50", overrides=(("connections", "32.0"), ("sm_count", "264")))
    c = Point("resnet50", overrides=(("sm_count", "132"), ("connections", "32")))
    assert a.key == b.key != c.key
    assert len(a.key) == 16 and int(a.key, 16) >= 0
    assert Point("resnet50").key != Point("resnet50", batch=2).key
    assert Point("resnet50").key != Point("resnet50", policy="leftover").key


def test_key_is_stable_across_releases() -> None:
    # Resume depends on keys never changing: this value is part of the file format. (The
    # cost model is named: a point of the default model, now analytic, is another point.)
    point = Point("inception_v3", gpu="h100", overrides=(("sm_count", "264"),), batch=32,
                  cost_model="roofline")
    canonical = ('{"batch":32,"cost_model":"roofline","fields":{"sm_count":264},"gpu":"h100",'
                 '"phase":"inference","policy":null,"precision":"fp32",'
                 '"workload":"inception_v3"}')
    assert point.key == hashlib.sha256(canonical.encode()).hexdigest()[:16] == "a46e9ab1b32bd4b6"


def test_point_validates_its_options() -> None:
    with pytest.raises(GpusimError, match="batch"):
        Point("resnet50", batch=0)
    with pytest.raises(GpusimError, match="given twice"):
        Point("resnet50", overrides=(("sm_count", "1"), ("sm_count", "2")))
    with pytest.raises(GpusimError, match="policy"):
        Point("resnet50", policy="all")


def test_cli_grid_is_the_cartesian_product_in_row_major_order() -> None:
    spec = SweepSpec.from_tables(
        [parse_set_axes(["sm_count=66,132", "connections=8,32"])],
        {"workload": ("resnet50", "inception_v3"), "batch": ("1", "8"),
         "policy": ("all", "leftover")},
    )
    points = spec.points()
    assert len(points) == 2 * 2 * 2 * 2 * 2
    assert len({p.key for p in points}) == len(points)
    assert points[0].overrides == (("sm_count", "66"), ("connections", "8"))
    assert points[1].workload == "resnet50" and points[1].batch == 1
    assert {p.policy for p in points} == {None, "leftover"}


def test_parse_set_axes_rejects_malformed_assignments() -> None:
    for bad in (["sm_count"], ["=1"], ["sm_count="], ["sm_count=1,,2"]):
        with pytest.raises(GpusimError):
            parse_set_axes(bad)
    with pytest.raises(GpusimError, match="twice"):
        parse_set_axes(["sm_count=1", "sm_count=2"])
    with pytest.raises(GpusimError, match="--workload"):
        parse_set_axes(["workload=resnet50"])


def test_toml_grid_and_points_expand_over_sweep_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
[sweep]
gpu = "h100"
workload = ["resnet50", "inception_v3"]
batch = 32

[grid]
sm_count = [66, 132]
smem_per_sm_B = [116736, 233472]

[[points]]
connections = 32
policy = ["all", "leftover"]

[[points]]
workload = "googlenet"
smem_carveouts_B = [0, 8192, 233472]
dram_bw_Bps = 6.7e12
""",
        encoding="utf-8",
    )
    points = load_sweep_file(path).points()
    assert len(points) == 2 * 2 * 2 + 2 * 2 + 1
    last = points[-1]
    assert last.workload == "googlenet" and last.batch == 32
    assert dict(last.overrides) == {"smem_carveouts_B": "0:8192:233472",
                                    "dram_bw_Bps": "6700000000000.0"}
    assert last.gpu_spec().smem_carveouts_B == (0, 8192, 233472)
    assert evaluate_point(last, occupancy_evaluator)["smem_carveouts_B"] == "0:8192:233472"
    # The TOML number and the CLI text are the same point.
    cli = SweepSpec.from_tables([parse_set_axes(["sm_count=66", "smem_per_sm_B=116736"])],
                                {"workload": ("resnet50",), "batch": ("32",)}).points()[0]
    assert cli.key == points[0].key


def test_toml_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(GpusimError, match="unknown section"):
        sweep_from_mapping({"sweep": {"workload": "resnet50"}, "grids": {}})
    with pytest.raises(GpusimError, match="workload"):
        sweep_from_mapping({"grid": {"sm_count": [1, 2]}})
    with pytest.raises(GpusimError, match="empty list"):
        sweep_from_mapping({"sweep": {"workload": "resnet50"}, "grid": {"sm_count": []}})
    with pytest.raises(GpusimError, match="not a number"):
        sweep_from_mapping({"sweep": {"workload": "resnet50"}, "grid": {"sm_count": True}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\n", encoding="utf-8")
    with pytest.raises(GpusimError, match="malformed"):
        load_sweep_file(bad)
    with pytest.raises(GpusimError, match="does not exist"):
        load_sweep_file(tmp_path / "missing.toml")


def test_example_sweep_files_load() -> None:
    examples = sorted((Path(__file__).parents[2] / "examples" / "sweeps").glob("*.toml"))
    assert examples
    for path in examples:
        points = load_sweep_file(path).points()
        assert points, path
        for point in points:  # every example point is a valid GPU under a known policy
            point.gpu_spec()
            if point.policy is not None:
                get_policy(point.policy)


# ---------------------------------------------------------------------- rows
def test_invalid_points_become_error_rows_not_failures() -> None:
    unknown = Point("resnet50", overrides=(("sm_counts", "264"),))
    invalid = Point("resnet50", overrides=(("connections", "64"),))
    unparsable = Point("resnet50", overrides=(("sm_count", "many"),))
    for point, message in ((unknown, "unknown GPUSpec field 'sm_counts'"),
                           (invalid, "connections exceeds max_connections"),
                           (unparsable, "bad value for sm_count")):
        row = evaluate_point(point, occupancy_evaluator)
        assert message in row["error"]
        assert row["key"] == point.key and row["workload"] == "resnet50"
    # The row keeps the value the user gave, even one that does not parse.
    assert evaluate_point(unparsable, occupancy_evaluator)["sm_count"] == "many"
    assert evaluate_point(unknown, occupancy_evaluator)["sm_counts"] == "264"


def test_unexpected_exceptions_are_recorded_per_point_with_their_type() -> None:
    def broken(point: Point) -> dict[str, Any]:
        raise ZeroDivisionError("float division\nby zero")

    row = evaluate_point(Point("resnet50"), broken)
    assert row["error"] == "ZeroDivisionError: float division by zero"
    assert row["key"] == Point("resnet50").key


def test_occupancy_evaluator_is_the_occupancy_calculator_on_the_points_gpu() -> None:
    point = Point("resnet50", overrides=(("smem_per_sm_B", "65536"),), batch=8)
    row = evaluate_point(point, occupancy_evaluator)
    spec = load_preset("h100").replace(smem_per_sm_B=65536)
    for kernel in REFERENCE_KERNELS:
        occ = occupancy(spec, kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B)
        assert row[f"{kernel.name}.blocks_per_sm"] == occ.blocks_per_sm
        assert row[f"{kernel.name}.limiter"] == occ.limiter
    # 64 KiB + the 1 KiB reservation no longer fits: that kernel cannot launch at all.
    assert row["conv_256x128.limiter"] == "launch" and row["conv_256x128.waves"] is None
    assert row["conv_128x64.waves"] == -(-8 * 25 // (spec.sm_count * 2))


def test_flatten_result_names_policy_columns_and_encodes_lists() -> None:
    flat = flatten_result({
        "serial_us": 10.0, "policies": {"serial": 10.0, "leftover": 7.5},
        "binds": ["sm_resources", "host"], "detail": {"waves": np.int64(3)},
    })
    assert flat == {"serial_us": 10.0, "makespan_us.serial": 10.0,
                    "makespan_us.leftover": 7.5, "binds": '["sm_resources", "host"]',
                    "detail.waves": 3}
    assert type(flat["detail.waves"]) is int


def test_limits_evaluator_calls_limits_for_workload_with_the_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Report:
        def to_dict(self) -> dict[str, Any]:
            return {"serial_us": 2.0, "policies": {"leftover": 1.0}}

    def limits_for_workload(name: str, **kwargs: Any) -> Report:
        calls.append((name, kwargs))
        return Report()

    module = types.ModuleType("sim.analysis.limits")
    module.limits_for_workload = limits_for_workload  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sim.analysis.limits", module)
    point = Point("googlenet", overrides=(("sm_count", "264"),), batch=4, phase="training",
                  precision="fp16", policy="leftover")
    row = evaluate_point(point, limits_evaluator)
    name, kwargs = calls[0]
    assert name == "googlenet"
    assert kwargs["gpu"] == load_preset("h100").replace(sm_count=264)
    assert (kwargs["batch"], kwargs["phase"], kwargs["precision"], kwargs["cost_model"],
            kwargs["policies"]) == (4, "training", "fp16", "analytic", ("leftover",))
    assert row["makespan_us.leftover"] == 1.0 and row["error"] is None


# ---------------------------------------------------------------------- results and resume
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_interrupted_sweep_resumes_without_recomputing(tmp_path: Path, suffix: str) -> None:
    spec = grid_spec()
    points = spec.points()
    out = tmp_path / f"results{suffix}"
    first = CountingEvaluator(stop_at=5)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, evaluate=first, executor=Serial(), out=out, progress=True)
    done = by_key(read_results(out))
    assert set(done) == {p.key for p in points[:4]}  # the 4 that finished were saved

    second = CountingEvaluator()
    outcome = run_sweep(spec, evaluate=second, executor=Serial(), out=out, resume=True)
    assert second.calls == [p.key for p in points[4:]]  # only the rest were evaluated
    assert (outcome.skipped, outcome.evaluated, outcome.remaining) == (4, len(points) - 4, 0)

    reference = run_sweep(spec, evaluate=occupancy_evaluator, executor=Serial())
    assert by_key(read_results(out)) == by_key(reference.rows)


def test_max_points_runs_a_sweep_in_slices(tmp_path: Path) -> None:
    spec = grid_spec()
    out = tmp_path / "r.csv"
    counts = []
    for _ in range(3):
        evaluator = CountingEvaluator()
        outcome = run_sweep(spec, evaluate=evaluator, executor=Serial(), out=out,
                            resume=True, max_points=5)
        counts.append((len(evaluator.calls), outcome.remaining))
    assert counts == [(5, 7), (5, 2), (2, 0)]
    assert len(read_results(out)) == 12


def test_existing_results_need_resume_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    spec = grid_spec(sms="66", smem="65536", batches=("1",))
    run_sweep(spec, evaluate=occupancy_evaluator, executor=Serial(), out=out)
    with pytest.raises(GpusimError, match="--resume"):
        run_sweep(spec, evaluate=occupancy_evaluator, executor=Serial(), out=out)
    outcome = run_sweep(spec, evaluate=occupancy_evaluator, executor=Serial(), out=out,
                        overwrite=True)
    assert outcome.evaluated == 1 and len(read_results(out)) == 1
    with pytest.raises(GpusimError, match=r"\.csv or \.parquet"):
        open_results(tmp_path / "r.txt")


def test_csv_grows_its_header_and_round_trips_types(tmp_path: Path) -> None:
    # Invalid points first: the result columns only appear with the first valid row.
    points = [Point("resnet50", overrides=(("sm_count", v),)) for v in ("0", "x", "132")]
    out = tmp_path / "r.csv"
    outcome = run_sweep(points, evaluate=occupancy_evaluator, executor=Serial(), out=out)
    with out.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header[-1] == "error" and "conv_128x64.waves" in header
    written = by_key(read_results(out))
    expected = by_key(outcome.rows)
    for key, row in expected.items():
        assert {k: v for k, v in written[key].items() if v is not None} == \
            {k: v for k, v in row.items() if v is not None}


def test_csv_resume_drops_a_partial_last_line(tmp_path: Path) -> None:
    spec = grid_spec(batches=("1",))
    out = tmp_path / "r.csv"
    run_sweep(spec, evaluate=occupancy_evaluator, executor=Serial(), out=out)
    text = out.read_text(encoding="utf-8")
    cut = text[: text.rstrip().rfind("\n") + 20]  # the last row torn mid-line
    out.write_text(cut, encoding="utf-8")
    evaluator = CountingEvaluator()
    run_sweep(spec, evaluate=evaluator, executor=Serial(), out=out, resume=True)
    assert len(evaluator.calls) == 1
    assert len(read_results(out)) == len(spec.points())


def test_parquet_parts_of_a_killed_run_are_read_and_merged(tmp_path: Path) -> None:
    spec = grid_spec(batches=("1",))
    points = spec.points()
    out = tmp_path / "r.parquet"
    # A run killed outright: parts written, close() (the merge) never called.
    killed = open_results(out)
    killed.append([evaluate_point(p, occupancy_evaluator) for p in points[:2]])
    killed.append([evaluate_point(p, occupancy_evaluator) for p in points[2:3]])
    assert not out.exists() and len(read_results(out)) == 3
    evaluator = CountingEvaluator()
    run_sweep(spec, evaluate=evaluator, executor=Serial(), out=out, resume=True)
    assert evaluator.calls == [p.key for p in points[3:]]
    assert out.is_file() and not (tmp_path / "r.parquet.parts").exists()
    reference = run_sweep(spec, evaluate=occupancy_evaluator, executor=Serial())
    assert by_key(read_results(out)) == by_key(reference.rows)
