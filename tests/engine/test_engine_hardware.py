"""SM resource accounting and register pools: residency equals the occupancy calculator,
bulk register allocation equals the warp-by-warp greedy rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.occupancy import block_footprint, launch_failure, occupancy
from gpu_models.presets import list_presets, load_preset
from sim import Launch, Program, StreamDef, simulate
from sim.engine.resources import SMArray, greedy_register_warps, take_register_warps

shapes = st.tuples(
    st.sampled_from(list_presets()),
    st.integers(1, 1024),
    st.integers(0, 255),
    st.integers(0, 230_000),
)


@settings(max_examples=300, deadline=None)
@given(shapes)
def test_empty_sm_capacity_equals_occupancy(shape: tuple[str, int, int, int]) -> None:
    name, threads, regs, smem = shape
    spec = load_preset(name)
    occ = occupancy(spec, threads, regs, smem)
    fp = block_footprint(spec, threads, regs, smem)
    if occ.reason is None:
        assert int(SMArray(spec).capacity(fp)[0]) == occ.blocks_per_sm


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_simulated_residency_equals_occupancy(shape: tuple[str, int, int, int]) -> None:
    # One SM, 2 x occupancy + 1 blocks: three waves, and never more than occupancy at once.
    name, threads, regs, smem = shape
    spec = load_preset(name).replace(sm_count=1)
    if launch_failure(spec, threads, regs, smem) is not None:
        return
    per_sm = occupancy(spec, threads, regs, smem).blocks_per_sm
    launch = Launch("k", "s", 2 * per_sm + 1, threads, regs, smem, 1e-5)
    result = simulate(Program(spec, (StreamDef("s"),), (launch,), 0.0, 0.0), mode="exact")
    assert result.makespan_s == pytest.approx(3e-5)
    starts = [b.start_s for b in result.blocks or ()]
    assert max(starts.count(t) for t in set(starts)) == per_sm


def test_sub_partitions_bind_below_the_register_total() -> None:
    # 192 regs/thread -> 6144 per warp; a 16384-register pool holds 2 warps, so 8 warps per
    # SM, not 65536 // 6144 = 10. Blocks of 2 warps: 4 per SM.
    spec = load_preset("h100")
    fp = block_footprint(spec, 64, 192, 0)
    assert int(SMArray(spec).capacity(fp)[0]) == 4 == occupancy(spec, 64, 192).blocks_per_sm


pools = st.lists(st.integers(0, 70).map(lambda n: n * 256), min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(pools, min_size=1, max_size=6), st.integers(1, 12).map(lambda n: n * 256),
       st.data())
def test_bulk_register_take_equals_greedy(rows: list[list[int]], rpw: int,
                                          data: st.DataObject) -> None:
    free = np.array(rows, dtype=np.int64)
    slots = (free // rpw).sum(axis=1)
    warps = np.array([data.draw(st.integers(0, int(s))) for s in slots], dtype=np.int64)
    expected = np.array([greedy_register_warps(row, rpw, int(k)) for row, k in
                         zip(free, warps, strict=True)])
    assert take_register_warps(free, rpw, warps).tolist() == expected.tolist()


def test_greedy_register_rule_prefers_the_pool_with_most_free() -> None:
    assert greedy_register_warps(np.array([512, 1024, 1024, 256]), 256, 3).tolist() == [
        0, 2, 1, 0]


def test_release_restores_everything() -> None:
    spec = load_preset("a100")
    sms = SMArray(spec)
    fp = block_footprint(spec, 96, 40, 3000)
    ids = np.array([0, 5, 7])
    counts = np.array([3, 1, 2])
    pools = sms.allocate(fp, ids, counts)
    assert sms.free_slots[5] == spec.max_blocks_per_sm - 1
    sms.release(ids, pools)
    fresh = SMArray(spec)
    for name in ("free_warps", "free_slots", "free_smem_B", "free_regs"):
        assert np.array_equal(getattr(sms, name), getattr(fresh, name))
