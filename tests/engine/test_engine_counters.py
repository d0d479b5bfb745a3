"""The "what binds" counters of the engine, hand-computed on the H100 preset (1056 blocks of
256 threads fill it; every kernel below fits at once)."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, simulate

US = 1e-6
H100 = load_gpu("h100")


def kernel(name: str, stream: str, block_us: float = 10, **kw: Any) -> Launch:
    return Launch(name=name, stream=stream, grid=14, threads=256, regs_per_thread=32,
                  smem_per_block_B=0, block_time_s=block_us * US, **kw)


def run(kernels: list[Launch], connections: int):
    streams = tuple(StreamDef(n) for n in dict.fromkeys(k.stream for k in kernels))
    return simulate(Program(H100.replace(connections=connections), streams, tuple(kernels),
                            launch_overhead_s=0.0, event_overhead_s=0.0))


def us(seconds: float) -> float:
    return round(seconds / US, 6)


@pytest.mark.parametrize("connections", [1, 2])
def test_no_false_dependency_when_the_kernel_behind_waits_too(connections: int) -> None:
    # One queue holds k0, k1 (stream a) and k2 (stream b, after k0). k1 waits at the head for
    # k0 until t=100, but k2 behind it also waits for k0: another connection would not let
    # k2 go any earlier. Both start at 100; no false-dependency time.
    r = run([kernel("k0", "a", 100), kernel("k1", "a"), kernel("k2", "b", after=("k0",))],
            connections)
    assert [(us(k.start_s), us(k.end_s)) for k in r.kernels] == [(0, 100), (100, 110),
                                                                (100, 110)]
    assert r.counters.false_dependency_s == 0


def test_false_dependency_while_the_kernel_behind_could_go() -> None:
    # Same, but k2 has no dependency: blocked behind k1 from 0 to 100, it starts at 100 on one
    # connection (100 us of false dependency) and at 0 on two.
    ks = [kernel("k0", "a", 100), kernel("k1", "a"), kernel("k2", "b")]
    one, two = run(ks, 1), run(ks, 2)
    assert (us(one.kernel("k2").start_s), us(one.counters.false_dependency_s)) == (100, 100)
    assert (us(two.kernel("k2").start_s), two.counters.false_dependency_s) == (0, 0)


def test_false_dependency_counts_from_when_the_kernel_behind_becomes_ready() -> None:
    # One queue: k0 (a, 100 us), g (c, 30 us), k1 (a), k2 (b, after g). Queue order k0, g,
    # k1, k2: k0 and g are handed at 0; k1 waits at the head for k0 until 100. k2 waits for
    # g until 30 and could go from then: 70 us of false dependency.
    ks = [kernel("k0", "a", 100), kernel("g", "c", 30), kernel("k1", "a"),
          kernel("k2", "b", after=("g",))]
    r = run(ks, 1)
    assert us(r.kernel("k2").start_s) == 100
    assert us(r.counters.false_dependency_s) == 70


def test_host_charges_one_wait_per_distinct_cross_stream_edge() -> None:
    # 5 us per launch, 2 us per cross-stream wait edge. b0 names a0 twice: one edge (2 us).
    # c0 awaits a0 too: its own edge (2 us; a0's record is not charged again). c1 awaits a0
    # (cross-stream) and b0 (cross-stream): 2 edges (4 us), and c0 (same stream): free.
    #   a0: 0-5; b0: waits 5-7, launch 7-12; c0: 12-14, 14-19; c1: 19-23, 23-28.
    ks = [kernel("a0", "a"), kernel("b0", "b", after=("a0", "a0")),
          kernel("c0", "c", after=("a0",)), kernel("c1", "c", after=("a0", "b0", "c0"))]
    streams = tuple(StreamDef(n) for n in ("a", "b", "c"))
    r = simulate(Program(H100, streams, tuple(ks), launch_overhead_s=5 * US,
                         event_overhead_s=2 * US))
    assert [(us(k.launch_begin_s), us(k.launch_s)) for k in r.kernels] == [
        (0, 5), (7, 12), (14, 19), (23, 28)]
