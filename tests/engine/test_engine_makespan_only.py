"""Makespan-only runs (:func:`sim.engine.engine.simulate_makespan`): searching policies time
many candidates and keep one number of each, so the engine can skip the series, the "what
binds" clocks and the result. Skipping them must not move a single block: the monitor only
writes, the engine never reads it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim import Program
from sim.engine.engine import Engine, simulate, simulate_makespan


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("streams", "partitioned"), [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("sm_sharing", [True, False])
def test_makespan_only_runs_the_same_blocks(seed: int, streams: int, partitioned: bool,
                                            sm_sharing: bool,
                                            random_program: Callable[..., Program]) -> None:
    program = random_program(seed, streams, priorities=True, partitioned=partitioned)
    full = simulate(program, sm_sharing=sm_sharing)
    assert simulate_makespan(program, sm_sharing=sm_sharing) == full.makespan_s  # exactly
    # Every kernel's timeline and spread over the SMs, not just the end.
    bare = Engine(program, sm_sharing=sm_sharing, series=False).run()
    assert bare.kernels == full.kernels
    assert bare.counters.dispatch_passes == full.counters.dispatch_passes
    # ... while the series and clocks were not kept.
    assert len(bare.busy_sms.times_s) == 1 < len(full.busy_sms.times_s)
    assert not bare.counters.blocked_s and full.counters.blocked_s


def test_the_exact_mode_keeps_its_series(random_program: Callable[..., Program]) -> None:
    # The per-block reference checks the SMs' peak load from its series: never switched off.
    program = random_program(0, 2)
    engine = Engine(program, mode="exact", series=False)
    assert engine.series and engine.monitor.series
