"""Sweep executors: the process pool and Dask give exactly the serial loop's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpu_models.errors import GpusimError
from sim.analysis.sweep import (
    Dask,
    LocalPool,
    Serial,
    SweepSpec,
    make_executor,
    occupancy_evaluator,
    read_results,
    run_sweep,
)
from sim.analysis.sweep.executors import MAX_CHUNK_POINTS, chunked
from sim.analysis.sweep.points import parse_set_axes


def sweep_with_invalid_points() -> SweepSpec:
    # (4 x 3 + 3) x 2 x 2 = 60 points; sm_count=0 and connections=64 fail validation and
    # "lots" does not parse: 28 error rows.
    return SweepSpec.from_tables(
        [parse_set_axes(["sm_count=0,66,264,lots", "smem_per_sm_B=65536,131072,233472"]),
         parse_set_axes(["connections=8,32,64"])],
        {"workload": ("resnet50", "inception_v3"), "batch": ("1", "64")},
    )


def by_key(rows: Any) -> dict[str, dict[str, Any]]:
    return {row["key"]: dict(row) for row in rows}


def cells(rows: Any) -> dict[str, dict[str, Any]]:
    """Rows without empty cells (a file has every column in every row; a row only its own)."""
    return {row["key"]: {k: v for k, v in row.items() if v is not None} for row in rows}


@pytest.fixture(scope="module")
def serial_rows() -> dict[str, dict[str, Any]]:
    outcome = run_sweep(sweep_with_invalid_points(), evaluate=occupancy_evaluator,
                        executor=Serial())
    assert outcome.errors == 2 * 2 * (2 * 3 + 1)  # sm_count 0 and "lots"; connections 64
    return by_key(outcome.rows)


def test_local_pool_equals_serial(serial_rows: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "pool.csv"
    outcome = run_sweep(sweep_with_invalid_points(), evaluate=occupancy_evaluator,
                        executor=LocalPool(workers=2), out=out)
    assert outcome.executor == "local"
    assert by_key(outcome.rows) == serial_rows
    assert cells(read_results(out)) == cells(serial_rows.values())


def test_dask_local_cluster_equals_serial(serial_rows: dict[str, dict[str, Any]],
                                          tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "dask.parquet"
    outcome = run_sweep(sweep_with_invalid_points(), evaluate=occupancy_evaluator,
                        executor=Dask(workers=2, processes=False), out=out)
    assert outcome.executor == "dask"
    assert by_key(outcome.rows) == serial_rows
    assert cells(read_results(out)) == cells(serial_rows.values())


def test_chunks_cover_every_point_once_and_stay_small() -> None:
    points = sweep_with_invalid_points().points()
    for workers in (1, 2, 16):
        chunks = chunked(points, workers)
        assert [p for chunk in chunks for p in chunk] == points
        assert max(len(c) for c in chunks) <= MAX_CHUNK_POINTS


def test_make_executor_checks_its_settings() -> None:
    assert isinstance(make_executor("serial"), Serial)
    assert make_executor("local", workers=3) == LocalPool(workers=3)
    assert make_executor("dask", scheduler="tcp://10.0.0.1:8786") == \
        Dask(scheduler="tcp://10.0.0.1:8786")
    with pytest.raises(GpusimError, match="--executor dask"):
        make_executor("local", scheduler="tcp://10.0.0.1:8786")
    with pytest.raises(GpusimError, match="workers"):
        make_executor("local", workers=0)
    with pytest.raises(GpusimError, match="its own"):
        make_executor("dask", scheduler="tcp://10.0.0.1:8786", workers=2)
    with pytest.raises(GpusimError, match="unknown executor"):
        make_executor("ray")


def test_limits_sweep_is_the_same_serially_and_in_a_pool() -> None:
    pytest.importorskip("sim.analysis.limits")
    spec = SweepSpec.from_tables(
        [parse_set_axes(["sm_count=66,264", "connections=1,32"])],
        {"workload": ("squeezenet1_1",), "policy": ("critical-path",)},
    )
    serial = run_sweep(spec, executor=Serial())
    pooled = run_sweep(spec, executor=LocalPool(workers=2))
    assert serial.errors == 0
    assert by_key(pooled.rows) == by_key(serial.rows)
    row = serial.rows[0]
    assert row["speedup_achievable"] > 0 and "makespan_us.critical-path" in row
