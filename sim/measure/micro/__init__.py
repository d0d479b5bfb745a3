"""The device campaign: microbenchmarks of how a real GPU runs blocks, then the networks.

The kernels in ``kernels.cu`` record, for every block, the SM it ran on and when it started
and ended, so a measurement shows where and when each block ran, not only total times: two
kernels whose blocks share SMs (compute-, latency- and memory-bound), wave staircases, two
kernels on two streams (leftover policy, priorities, mixed resource shapes), DRAM bandwidth
against resident warps, more streams than hardware queues, occupancy, and the host and
device cost of a launch; the networks step runs campaign 2 (:mod:`sim.measure.netbench`).
Each experiment writes one JSON file with its provenance; ``gpusim validate`` replays them
in the engine.

Layout: :mod:`~sim.measure.micro.plans` (what to launch), :mod:`~sim.measure.micro.steps`
(the steps of a pass, budgets, dry run), :mod:`~sim.measure.micro.blocklog` (summaries of
per-block logs), :mod:`~sim.measure.micro.schema` (file layout),
:mod:`~sim.measure.micro.packing` (the device tool's return limits),
:mod:`~sim.measure.micro.provenance` and :mod:`~sim.measure.micro.campaign` (the run) are
importable without CuPy; :mod:`~sim.measure.micro.harness` is the CuPy part. See README.md.
"""

from sim.measure.micro.schema import EXPERIMENTS, FORMAT, check_result, default_data_dir

__all__ = ["EXPERIMENTS", "FORMAT", "check_result", "default_data_dir"]
