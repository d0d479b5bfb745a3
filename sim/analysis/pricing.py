"""Pricing a short list of kernels: back to back on one stream, as one library call runs.

One layer (a GEMM, a convolution pass) lowers to a handful of kernels that a framework
launches on one stream. :func:`predicted_time_s` is the one way gpusim prices such a call
(``gpusim op``, ``gpusim op --from``, the published-data validation): the kernels run through
the engine (:func:`sim.simulate`) with no launch overhead, each block priced by the cost
model. Bad input never hangs: beyond :data:`ENGINE_BLOCK_CAP` blocks in all the time is
analytic, the sum of the kernels' :func:`~gpu_models.cost.isolated_time_s`. On one stream
without launch overhead nothing overlaps, so that is what the engine gives too (exactly for
one kernel, up to the tail overlap of a kernel with the next one's first blocks otherwise).

Which algorithm a convolution pass runs (:func:`lower_priced`): ``"rules"`` is what cuDNN's
heuristics pick, as the public traces show it (the rules of
``workloads/lowering/data/algorithms.toml``; eager PyTorch's default); ``"fastest"`` is the
faster of the algorithms lowering can run the pass with
(:func:`workloads.lowering.conv_algorithm_candidates`) under the cost model, as a library
that times its algorithms picks (``cudnnFind*Algorithm``: Baidu DeepBench,
``torch.backends.cudnn.benchmark = True``).
"""

from __future__ import annotations

from collections.abc import Sequence

from gpu_models.cost import isolated_time_s
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel, KernelSpec
from gpu_models.spec import GPUSpec
from sim.engine.engine import simulate_makespan
from sim.engine.program import Launch, Program, StreamDef
from workloads.layers import Layer
from workloads.lowering import conv_algorithm_candidates, lower_layer

#: How a convolution pass's algorithm is chosen (module docstring).
ALGORITHM_CHOICES: tuple[str, ...] = ("rules", "fastest")

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
    return simulate_makespan(program), "engine"


def algorithms_to_try(layer: Layer, gpu: GPUSpec, *, precision: str, layout: str,
                      algorithm_choice: str) -> tuple[str, ...]:
    """The ``conv_algorithm`` values ``algorithm_choice`` prices a layer with (module
    docstring): every candidate for ``"fastest"``, else ``("",)`` (the rules' choice; also
    for a layer that is not a convolution)."""
    if algorithm_choice not in ALGORITHM_CHOICES:
        raise GpusimError(f"unknown algorithm choice {algorithm_choice!r}; expected one of "
                          f"{', '.join(ALGORITHM_CHOICES)}")
    candidates = (conv_algorithm_candidates(layer, gpu, precision=precision, layout=layout)
                  if algorithm_choice == "fastest" else ())
    return candidates or ("",)


def lower_priced(layer: Layer, gpu: GPUSpec, cost_model: CostModel, *, precision: str,
                 layout: str, algorithm_choice: str = "rules",
                 ) -> tuple[list[KernelSpec], float, str]:
    """One layer lowered and priced (:func:`predicted_time_s`): (kernels, seconds, how timed),
    its convolution algorithm chosen by ``algorithm_choice`` (:func:`algorithms_to_try`; the
    first wins a tie)."""
    best: tuple[list[KernelSpec], float, str] | None = None
    for algorithm in algorithms_to_try(layer, gpu, precision=precision, layout=layout,
                                       algorithm_choice=algorithm_choice):
        kernels = lower_layer(layer, gpu, precision=precision, layout=layout,
                              conv_algorithm=algorithm)
        time_s, timing = predicted_time_s(kernels, gpu, cost_model)
        if best is None or time_s < best[1]:
            best = (kernels, time_s, timing)
    assert best is not None
    return best
