"""The SM bookkeeping's shortcuts give what the plain formulas give.

:class:`~sim.engine.resources.SMArray` skips work while every SM's register pools are equal (one
pool divided instead of all in ``limits``, no per-SM pool check in ``allocate``) and
``blocking_resource`` stops counting early. Grouped and exact mode share these shortcuts,
so their agreement cannot catch a wrong one: here each is checked against the plain
formula on random SM states (random blocks placed and released, some with uneven warps).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.occupancy import LIMITERS, block_footprint, launch_failure
from gpu_models.presets import load_preset
from sim.engine.engine import Engine
from sim.engine.program import Launch, Program, StreamDef
from sim.engine.resources import SHARE_UNITS, SMArray, SMThroughput, take_register_warps

SPEC = load_preset("h100").replace(sm_count=6)
shapes = st.tuples(st.sampled_from([32, 64, 96, 128, 160, 256, 384, 512, 1024]),
                   st.sampled_from([0, 16, 32, 40, 64, 96, 128, 168, 255]),
                   st.sampled_from([0, 0, 1000, 16_384, 48_000])).filter(
                       lambda s: launch_failure(SPEC, *s) is None)
#: (footprint shape, SM, blocks, place one by one?) or None to release the oldest placement.
steps = st.lists(st.one_of(st.none(), st.tuples(shapes, st.integers(0, SPEC.sm_count - 1),
                                                st.integers(1, 8), st.booleans())),
                 max_size=25)


def _plain_limits(sms: SMArray, threads: int, regs: int, smem: int) -> np.ndarray:
    """Every resource's limit, straight from the free resources (every pool divided)."""
    fp = block_footprint(SPEC, threads, regs, smem)
    free = sms.free
    no_limit = np.full(sms.count, SPEC.max_blocks_per_sm)
    return np.array([
        free[:, 0] // fp.warps,
        (free[:, 3:] // fp.regs_per_warp).sum(axis=1) // fp.warps if fp.regs_per_warp
        else no_limit,
        free[:, 2] // fp.smem_B if fp.smem_B else no_limit,
        free[:, 1],
    ])


def _replay(history: list) -> SMArray:
    """An SM array after placing and releasing blocks as ``history`` says."""
    sms = SMArray(SPEC)
    live: list[tuple[np.ndarray, np.ndarray]] = []
    for step in history:
        if step is None:
            if live:
                sms.release(*live.pop(0))
            continue
        shape, sm, blocks, one_by_one = step
        fp = block_footprint(SPEC, *shape)
        blocks = min(blocks, int(sms.capacity(fp)[sm]))
        if one_by_one:
            for _ in range(blocks):
                live.append((np.array([sm]), sms.allocate_one(fp, sm)))
        elif blocks:
            ids = np.array([sm])
            live.append((ids, sms.allocate(fp, ids, np.array([blocks]))))
    sms.check()
    return sms


@settings(max_examples=200, deadline=None)
@given(steps, shapes)
def test_limits_and_allocate_match_the_plain_formulas(history: list,
                                                      shape: tuple[int, int, int]) -> None:
    sms = _replay(history)
    pools = sms.free_regs
    if not sms._uneven_takes:
        assert (pools == pools[:, :1]).all()
    assert np.array_equal(sms.limits(block_footprint(SPEC, *shape)), _plain_limits(sms, *shape))
    # Filling every SM: the rows taken are the greedy rule's, however allocate got them.
    fp = block_footprint(SPEC, *shape)
    cap = sms.capacity(fp)
    ids = np.flatnonzero(cap)
    if len(ids):
        expected = take_register_warps(pools[ids], fp.regs_per_warp or 1, cap[ids] * fp.warps)
        taken = sms.allocate(fp, ids, cap[ids])
        assert np.array_equal(taken[:, 3:], expected * fp.regs_per_warp)
    sms.check()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(0, 5), min_size=4,
                                                      max_size=4)), min_size=1, max_size=12))
def test_blocking_resource_counts_each_sm_at_its_first_zero(sms: list) -> None:
    # Each SM: one resource forced to zero, the others random (some zero too).
    limits = np.array([[0 if r == zero else v for r, v in enumerate(values)]
                       for zero, values in sms]).T
    first_zero = (limits == 0).argmax(axis=0)
    expected = LIMITERS[int(np.bincount(first_zero, minlength=len(LIMITERS)).argmax())]
    assert SMArray.blocking_resource(limits) == expected


@settings(max_examples=200, deadline=None)
@given(steps, shapes, st.integers(1, 8))
def test_a_known_retake_is_what_placing_the_blocks_again_takes(history: list,
                                                               shape: tuple[int, int, int],
                                                               blocks: int) -> None:
    # The replay shortcut: SMArray answers "the same blocks placed again would take exactly
    # this" from remembered takes; then releasing and allocating must agree.
    sms = _replay(history)
    fp = block_footprint(SPEC, *shape)
    cap = sms.capacity(fp)
    ids = np.flatnonzero(cap)
    if not len(ids):
        return
    counts = np.minimum(cap[ids], blocks)
    taken = sms.allocate(fp, ids, counts)
    known = sms.known_retake(fp, ids, counts, taken)
    sms.release(ids, taken)
    again = sms.allocate(fp, ids, counts)
    if known:
        assert again is taken  # the remembered take itself
    sms.check()


def test_an_uneven_take_is_remembered_for_the_replay() -> None:
    # 3 warps a block over 4 register pools: every take is uneven. Placed, the same blocks
    # are known to take the same again; after another kernel took registers there, not.
    sms = SMArray(SPEC)
    fp = block_footprint(SPEC, 96, 40, 0)
    ids, counts = np.arange(SPEC.sm_count), np.full(SPEC.sm_count, 2)
    taken = sms.allocate(fp, ids, counts)
    assert sms.uneven_takes and sms.known_retake(fp, ids, counts, taken)
    sms.allocate(block_footprint(SPEC, 32, 64, 0), ids[:1], np.array([1]))
    assert not sms.known_retake(fp, ids, counts, taken)


def test_sm_loads_rebuilt_exactly_when_over_subscription_becomes_possible() -> None:
    # While every mix fits (8 x 0.1 of FP32 per SM), loads are not kept; a kernel that could
    # over-subscribe (2 x 0.6 more) makes them count every resident block again.
    sm = SMThroughput(4)
    a = sm.acquire(0, [0.1, 0.0], max_per_sm=8)
    sm.add(a, np.array([0, 1, 2]), np.array([8, 3, 1]))
    sm.remove(a, np.array([1]), np.array([1]))
    assert sm.settle() == []
    b = sm.acquire(1, [0.6, 0.0], max_per_sm=2)
    unit = round(0.1 * SHARE_UNITS)
    assert sm.loads[0].tolist() == [8 * unit, 2 * unit, unit, 0]
    sm.add(b, np.array([0, 3]), np.array([2, 1]))
    assert sm.settle() == [a, b]  # SM 0: 0.8 + 1.2 of its FP32 pipes
    assert sm.sigma[a, 0] < 1 and sm.sigma[b, 0] < 1 and sm.sigma[b, 3] == 1


def test_dependency_counts_follow_completions() -> None:
    # b waits for a on its stream and by an event (one dependency, counted once); c waits for
    # a and b. The counts replace scans of the dependencies on every pass.
    program = Program(SPEC, (StreamDef("s0"), StreamDef("s1")), (
        Launch("a", "s0", 6, 128, 32, 0, 1e-6),
        Launch("b", "s0", 6, 128, 32, 0, 1e-6, after=("a",)),
        Launch("c", "s1", 6, 128, 32, 0, 1e-6, after=("a", "b")),
    ))
    engine = Engine(program)
    a, b, c = engine.kernels
    assert (a.waiting_on, b.waiting_on, c.waiting_on) == (0, 1, 2)
    assert a.dependents == [b, c] and b.dependents == [c]
    engine.run()
    assert all(k.done and k.waiting_on == 0 and not k.unmet() for k in engine.kernels)
