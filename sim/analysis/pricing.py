"""Pricing a short list of kernels: back to back on one stream, as one library call runs.

One layer (a GEMM, a convolution pass) lowers to a handful of kernels that a framework
launches on one stream. :func:`predicted_time_s` is the one way gpusim prices such a call
(``gpusim op``, ``gpusim op --from``, the published-data validation): the kernels run through
the engine (:func:`sim.simulate`) with no launch overhead, each block priced by the cost
model. Bad input never hangs: beyond :data:`ENGINE_BLOCK_CAP` blocks in all the time is
analytic, the sum of the kernels' :func:`~gpu_models.cost.isolated_time_s`. On one stream
without launch overhead nothing overlaps, so that is what the engine gives too (exactly for
one kernel, up to the tail overlap of a kernel with the next one's first blocks otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

from gpu_models.cost import isolated_time_s
from gpu_models.kernel import CostModel, KernelSpec
from gpu_models.spec import GPUSpec
from sim.engine.engine import simulate
from sim.engine.program import Launch, Program, StreamDef

#: Most blocks (all kernels together) priced through the engine; above it the time is
#: analytic. The engine takes about 0.5 us per block: 2e6 blocks are about a second.
ENGINE_BLOCK_CAP = 2_000_000


def predicted_time_s(kernels: Sequence[KernelSpec], gpu: GPUSpec, cost_model: CostModel,
                     ) -> tuple[float, str]:
    """The kernels back to back on one stream, no launch overhead: (seconds, how timed).

    Through the engine (``"engine"``) up to :data:`ENGINE_BLOCK_CAP` blocks in all, else
    analytic (``"analytic"``: the kernels' isolated times summed; see the module docstring).
    """
    # Built first in every case: Launch checks each grid against CUDA's limits.
    launches = tuple(Launch.from_kernel(k, cost_model(k, gpu), stream="s0") for k in kernels)
    if sum(k.blocks for k in kernels) > ENGINE_BLOCK_CAP:
        return sum(isolated_time_s(k, gpu, cost_model) for k in kernels), "analytic"
    program = Program(gpu, (StreamDef("s0"),), launches, launch_overhead_s=0.0,
                      event_overhead_s=0.0)
    return simulate(program).makespan_s, "engine"
