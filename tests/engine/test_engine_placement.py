"""Block placements: bulk placement equals the per-block rule applied block by block."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.errors import GpusimError
from gpu_models.occupancy import block_footprint, launch_failure
from gpu_models.presets import load_preset
from sim import PLACEMENTS, FirstFit, MostFreeResources, RoundRobin
from sim.engine.placement import make_placement
from sim.engine.resources import SMArray

SPEC = load_preset("h100")
block_shapes = st.tuples(st.sampled_from([32, 64, 96, 128, 256, 384, 512, 1024]),
                         st.sampled_from([0, 16, 32, 40, 64, 96, 128, 168, 255]),
                         st.sampled_from([0, 1000, 16_384, 48_000, 100_000]))


def _fits(shape: tuple[int, int, int]) -> bool:
    return launch_failure(SPEC, *shape) is None


@settings(max_examples=150, deadline=None)
@given(policy=st.sampled_from(sorted(PLACEMENTS)), sm_count=st.integers(1, 9),
       history=st.lists(st.tuples(block_shapes.filter(_fits), st.integers(0, 100)),
                        max_size=12),
       shape=block_shapes.filter(_fits), n_blocks=st.integers(0, 300),
       cursor=st.integers(0, 50))
def test_bulk_place_equals_one_by_one(policy: str, sm_count: int,
                                      history: list[tuple[tuple[int, int, int], int]],
                                      shape: tuple[int, int, int], n_blocks: int,
                                      cursor: int) -> None:
    spec = SPEC.replace(sm_count=sm_count)
    sms = SMArray(spec)
    # A random earlier state: blocks of assorted kernels on assorted SMs.
    for (threads, regs, smem), sm in history:
        fp = block_footprint(spec, threads, regs, smem)
        if sms.capacity(fp)[sm % sm_count] > 0:
            sms.allocate_one(fp, sm % sm_count)
    fp = block_footprint(spec, *shape)
    bulk_policy, rule_policy = make_placement(policy), make_placement(policy)
    if isinstance(bulk_policy, RoundRobin) and isinstance(rule_policy, RoundRobin):
        bulk_policy.cursor = rule_policy.cursor = cursor % sm_count
    bulk_sms, rule_sms = copy.deepcopy(sms), copy.deepcopy(sms)

    placement = bulk_policy.place(fp, n_blocks, bulk_sms)
    expected = np.zeros(sm_count, dtype=np.int64)
    for _ in range(n_blocks):
        sm = rule_policy.choose(fp, rule_sms)
        if sm is None:
            break
        rule_sms.allocate_one(fp, sm)
        expected[sm] += 1
    assert placement == [(i, int(expected[i])) for i in np.flatnonzero(expected)]
    if placement:
        ids = np.array([i for i, _ in placement])
        bulk_sms.allocate(fp, ids, np.array([n for _, n in placement]))
    for name in ("free_warps", "free_slots", "free_smem_B", "free_regs"):
        assert np.array_equal(getattr(bulk_sms, name), getattr(rule_sms, name)), name
    bulk_sms.check()
    assert getattr(bulk_policy, "cursor", None) == getattr(rule_policy, "cursor", None)


def test_most_free_picks_most_free_warps_then_lowest_id() -> None:
    sms = SMArray(SPEC.replace(sm_count=3))
    fp = block_footprint(SPEC, 256, 32, 0)
    sms.allocate_one(fp, 0)
    policy = MostFreeResources()
    assert policy.choose(fp, sms) == 1
    assert policy.place(fp, 5, sms) == [(0, 1), (1, 2), (2, 2)]


def test_most_free_on_an_idle_gpu_deals_blocks_round_by_round() -> None:
    # Every SM alike: 300 blocks on 132 SMs are two rounds (264) and 36 more on SMs 0-35,
    # as the sorted items give them (the closed form answers without sorting).
    sms = SMArray(SPEC)
    fp = block_footprint(SPEC, 256, 32, 0)
    policy = MostFreeResources()
    counts = policy.place_counts(sms.capacity(fp), 300, fp, sms)
    assert counts.tolist() == [3] * 36 + [2] * 96
    by_sorting = np.bincount(policy._order(sms.capacity(fp), fp, sms)[:300], minlength=132)
    assert np.array_equal(counts, by_sorting)


def test_first_fit_packs_low_sms() -> None:
    sms = SMArray(SPEC.replace(sm_count=3))
    assert FirstFit().place(block_footprint(SPEC, 256, 32, 0), 10, sms) == [(0, 8), (1, 2)]


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(GpusimError, match="unknown block placement 'best'"):
        make_placement("best")
