"""Microbenchmarks that measure how a real GPU schedules blocks (device campaign 1).

The kernels in ``kernels.cu`` record, for every block, the SM it ran on and when it started
and ended, so a measurement shows where and when each block ran, not only total times:
wave staircases, two kernels on two streams (leftover policy, priorities, mixed resource
shapes), memory-bound kernels sharing bandwidth, more streams than hardware queues, and the
host and device cost of a launch. Each experiment writes one JSON file with its provenance;
``gpusim validate`` replays them in the engine.

Layout: :mod:`~sim.measure.micro.plans` (what to launch), :mod:`~sim.measure.micro.blocklog`
(summaries of per-block logs), :mod:`~sim.measure.micro.schema` (file layout),
:mod:`~sim.measure.micro.provenance` and :mod:`~sim.measure.micro.campaign` (the run) are
importable without CuPy; :mod:`~sim.measure.micro.harness` is the CuPy part. See README.md.
"""

from sim.measure.micro.schema import EXPERIMENTS, FORMAT, check_result, default_data_dir

__all__ = ["EXPERIMENTS", "FORMAT", "check_result", "default_data_dir"]
