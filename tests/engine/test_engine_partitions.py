"""SM partitions per stream (``StreamDef.sms``, as CUDA green contexts give): hand-computed
timelines on the H100 preset, validation, and the JSON form.

Defaults as in test_engine_scenarios: zero overheads, 256 threads, 32 registers, no shared
memory, 10 us blocks; an SM holds 8 such blocks, so a 66-SM half of an H100 holds 528."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, simulate

US = 1e-6
H100 = load_gpu("h100")
WAVE = 132 * 8
LOW, HIGH = tuple(range(66)), tuple(range(66, 132))
MODES = ("grouped", "exact")


def kernel(name: str, stream: str, grid: int, **kw: Any) -> Launch:
    fields: dict[str, Any] = {"threads": 256, "regs_per_thread": 32, "smem_per_block_B": 0,
                              "block_time_s": 10 * US}
    fields.update(kw)
    return Launch(name=name, stream=stream, grid=grid, **fields)


def program(kernels: list[Launch], streams: list[StreamDef]) -> Program:
    return Program(gpu=H100, streams=tuple(streams), kernels=tuple(kernels),
                   launch_overhead_s=0.0, event_overhead_s=0.0)


def us(seconds: float) -> float:
    return round(seconds / US, 6)


@pytest.mark.parametrize("mode", MODES)
def test_two_half_gpu_partitions_run_side_by_side(mode: str) -> None:
    """A full wave (1056 blocks) on a 66-SM half takes two block times; the younger
    kernel of the other half does not wait for the older one (leftover rule per SM)."""
    r = simulate(program([kernel("a", "a", WAVE), kernel("b", "b", WAVE)],
                         [StreamDef("a", sms=LOW), StreamDef("b", sms=HIGH)]), mode=mode)
    a, b = r.kernel("a"), r.kernel("b")
    assert (us(a.start_s), us(a.end_s), us(b.start_s), us(b.end_s)) == (0, 20, 0, 20)
    assert a.sm_blocks == (16,) * 66 + (0,) * 66
    assert b.sm_blocks == (0,) * 66 + (16,) * 66
    # Without partitions the same program is also 20 us, but b waits for a's wave.
    plain = simulate(program([kernel("a", "a", WAVE), kernel("b", "b", WAVE)],
                             [StreamDef("a"), StreamDef("b")]), mode=mode)
    assert (us(plain.kernel("b").start_s), us(plain.makespan_s)) == (10, 20)


@pytest.mark.parametrize("mode", MODES)
def test_unpartitioned_kernel_uses_the_sms_a_partition_leaves(mode: str) -> None:
    # a: 2112 blocks on 66 SMs = 4 waves (40 us), holding SMs 0-65 throughout; b (any SM,
    # launched later) takes 132 blocks on SMs 66-131 at once: 2 per SM, one block time.
    r = simulate(program([kernel("a", "a", 2 * WAVE), kernel("b", "b", 132)],
                         [StreamDef("a", sms=LOW), StreamDef("b")]), mode=mode)
    a, b = r.kernel("a"), r.kernel("b")
    assert (us(a.end_s), us(b.start_s), us(b.end_s)) == (40, 0, 10)
    assert b.sm_blocks == (0,) * 66 + (2,) * 66


@pytest.mark.parametrize("mode", MODES)
def test_older_unpartitioned_kernel_still_holds_every_sm(mode: str) -> None:
    # a (any SM) has blocks left until its second wave goes out at 10 us, so b (SMs 66-131)
    # gets none before then, and none at 10 us either (a takes every slot): b starts at 20.
    r = simulate(program([kernel("a", "a", 2 * WAVE), kernel("b", "b", 66)],
                         [StreamDef("a"), StreamDef("b", sms=HIGH)]), mode=mode)
    assert (us(r.kernel("a").end_s), us(r.kernel("b").start_s), us(r.makespan_s)) == (20, 20, 30)


@pytest.mark.parametrize("mode", MODES)
def test_priority_acts_within_a_partition(mode: str) -> None:
    # a and c share SMs 0-65; c (higher priority, launched last) goes before a's second
    # wave there; b on the other half is untouched.
    r = simulate(program([kernel("a", "a", WAVE), kernel("b", "b", WAVE // 2),
                          kernel("c", "c", WAVE // 2, after=("b",))],
                         [StreamDef("a", sms=LOW), StreamDef("b", sms=HIGH),
                          StreamDef("c", priority=-1, sms=LOW)]), mode=mode)
    a, b, c = r.kernel("a"), r.kernel("b"), r.kernel("c")
    assert (us(b.start_s), us(b.end_s)) == (0, 10)
    assert (us(c.start_s), us(c.end_s)) == (10, 20)
    assert (us(a.start_s), us(a.end_s)) == (0, 30)


def test_full_partition_equals_no_partition() -> None:
    kernels = [kernel("a", "a", 2 * WAVE + 5), kernel("b", "b", 300, regs_per_thread=64)]
    plain = simulate(program(kernels, [StreamDef("a"), StreamDef("b")]))
    full = simulate(program(kernels, [StreamDef("a", sms=tuple(range(132))), StreamDef("b")]))
    assert [(k.start_s, k.end_s, k.sm_blocks) for k in plain.kernels] == [
        (k.start_s, k.end_s, k.sm_blocks) for k in full.kernels]


def test_stream_sms_are_normalised() -> None:
    assert StreamDef("a", sms=[3, 1, 2]).sms == (1, 2, 3)
    assert StreamDef("a", sms="0-3,8").sms == (0, 1, 2, 3, 8)
    assert StreamDef("a", sms=range(2)).sms == (0, 1)


@pytest.mark.parametrize(("sms", "message"), [
    ([], "stream 'a': sms is empty"),
    ([1, 1], r"stream 'a': sms names SM\(s\) \[1\] more than once"),
    ([-1], "stream 'a': sms must hold SM ids >= 0"),
    ([1.5], "stream 'a': sms must hold SM ids >= 0"),
    (7, "stream 'a': sms must be a list of SM ids"),
    ("0-x", "stream 'a': sms '0-x' is not a list of SM ids"),
    ("5-2", "stream 'a': sms range '5-2' must be 'first-last'"),
])
def test_bad_sms_name_the_stream(sms: Any, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        StreamDef("a", sms=sms)


def test_sm_ids_are_checked_against_the_gpu() -> None:
    with pytest.raises(GpusimError, match=r"stream 'a': sms names SM 132 but h100 has 132 SMs "
                                          r"\(ids 0-131\)"):
        program([kernel("k", "a", 1)], [StreamDef("a", sms=[0, 132])])


def test_json_sms_as_list_or_ranges() -> None:
    doc = {"gpu": "h100", "launch_overhead_us": 0,
           "streams": [{"name": "a", "sms": "0-65"}, {"name": "b", "sms": [66, 67]},
                       {"name": "c"}],
           "kernels": [{"name": "k", "stream": "a", "grid": 1, "threads": 32, "regs": 0,
                        "block_time_us": 1}]}
    p = Program.from_dict(doc)
    assert p.stream("a").sms == LOW
    assert p.stream("b").sms == (66, 67)
    assert p.stream("c").sms is None
    doc["streams"][0]["sms"] = "0-200"
    with pytest.raises(GpusimError, match="stream 'a': sms names SM 200"):
        Program.from_dict(doc)
