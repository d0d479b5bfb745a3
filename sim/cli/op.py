"""``gpusim op``: the kernels one layer lowers to on a GPU, and how long they take.

``gpusim op conv2d --batch 32 --in 64,56,56 --out 64 --kernel 3,3 --pad 1 --gpu a100
--precision tf32`` prints each kernel's launch configuration (grid, threads, registers,
shared memory), its occupancy (blocks per SM and the limiting resource) and waves, and the
layer's predicted time: the kernels run back to back on one stream through the engine
(:func:`sim.simulate`, no launch overhead) with per-block times from the chosen cost model.
``gpusim op gemm --m M --n N --k K`` does the same for a matrix product (a cuBLAS GEMM).
``--layout nchw`` (default, PyTorch's) includes the layout copies cuDNN adds around
tensor-op convolutions; ``--layout nhwc`` is channels_last.
``--json`` prints ``{"time_us": ..., "timing": "engine" | "analytic", "kernels": [...]}``.

Every kernel is checked as a launch first (:class:`sim.engine.program.Launch`): a grid beyond
CUDA's limits (``--m 1000000000 --n 1000000000``) is an error, as it is for ``run`` and
``simulate``, not a predicted time. Bad input never hangs: when the kernels have more than
:data:`ENGINE_BLOCK_CAP` blocks in all (``--m 100000000`` makes ~6e8), the time is analytic
instead: the sum of each kernel's
:func:`~gpu_models.cost.isolated_time_s`. On one stream without launch overhead nothing
overlaps, so that is what the engine gives too (exactly for one kernel, up to the tail
overlap of a kernel with the next one's first blocks otherwise); the output says "analytic".
"""

from __future__ import annotations

import argparse
from typing import Any

from gpu_models.cost import isolated_time_s, list_cost_models, waves
from gpu_models.kernel import CostModel, KernelSpec
from gpu_models.occupancy import occupancy
from gpu_models.spec import PRECISIONS, GPUSpec
from gpu_models.units import GIGA, US_PER_S
from sim import Launch, Program, StreamDef, simulate
from sim.analysis.workflow import resolve_cost_model
from sim.cli.common import add_gpu_args, add_json_arg, gpu_from_args, print_json, print_table
from sim.cli.files import declare_files
from workloads.layers import Layer
from workloads.lowering import CONV_PASSES, LAYOUTS, conv_layer, gemm_layer, lower_layer

#: The measured GPU the 'scaled' cost model starts from unless --origin says otherwise.
DEFAULT_ORIGIN = "a100"
#: Most blocks (all kernels together) `gpusim op` runs through the engine; above it the time
#: is analytic. The engine takes about 0.5 us per block: 2e6 blocks are about a second.
ENGINE_BLOCK_CAP = 2_000_000


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``op`` command with its ``conv2d`` and ``gemm`` forms."""
    p = subparsers.add_parser(
        "op", help="kernels one layer lowers to, occupancy and time",
        description="The kernels one convolution or GEMM lowers to on a GPU (launch "
        "configuration, occupancy, waves) and the layer's predicted time.")
    ops = p.add_subparsers(dest="op_kind", metavar="OP", required=True)

    conv = ops.add_parser("conv2d", help="a 2-D convolution (or its data/weight gradient)")
    conv.add_argument("--batch", type=_positive, required=True, help="images in the batch")
    conv.add_argument("--in", dest="in_chw", type=_triple, required=True, metavar="C,H,W",
                      help="input channels, height, width")
    conv.add_argument("--out", type=_positive, required=True, help="output channels")
    conv.add_argument("--kernel", type=_pair, required=True, metavar="R,S",
                      help="filter height, width (one number for square; >= 1)")
    conv.add_argument("--stride", type=_pair, default=(1, 1), metavar="S",
                      help="stride (S or SH,SW; >= 1; default 1)")
    conv.add_argument("--pad", type=_padding, default=(0, 0), metavar="P",
                      help="padding (P or PH,PW; >= 0; default 0)")
    conv.add_argument("--groups", type=_positive, default=1, help="groups (default 1)")
    conv.add_argument("--pass", dest="pass_", choices=CONV_PASSES, default="fwd",
                      help="forward, data gradient or weight gradient (default fwd)")
    _common(conv)
    conv.set_defaults(func=cmd_op)

    gemm = ops.add_parser("gemm", help="a matrix product C[MxN] = A[MxK] B[KxN] (cuBLAS)")
    gemm.add_argument("--m", type=_positive, required=True, help="rows of A and C")
    gemm.add_argument("--n", type=_positive, required=True, help="columns of B and C")
    gemm.add_argument("--k", type=_positive, required=True, help="columns of A, rows of B")
    _common(gemm)
    gemm.set_defaults(func=cmd_op)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="math precision: fp32 (CUDA cores), tf32/fp16/bf16 (tensor cores "
                   "where the GPU has them); default fp32")
    add_gpu_args(p)
    p.add_argument("--layout", choices=LAYOUTS, default="nchw",
                   help="activation layout: nchw (PyTorch default: cuDNN adds layout copies "
                   "around tensor-op convs) or nhwc (channels_last); default nchw")
    p.add_argument("--cost-model", choices=list_cost_models(), default="roofline",
                   help="per-block time model (default roofline)")
    p.add_argument("--origin", default=None,
                   help="measured GPU the 'scaled' cost model scales from (default "
                   f"{DEFAULT_ORIGIN})")
    add_json_arg(p)
    declare_files(p, inputs=("gpu",))


def _ints(text: str, count: int, minimum: int = 1) -> tuple[int, ...]:
    # argparse prefixes the message with the option ("argument --stride: ...").
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from None
    if len(values) == 1 and count == 2:
        values = values * 2
    if len(values) != count or min(values) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        if count == 1:
            expected = f"a {kind} integer"
        else:
            number = "one or two" if count == 2 else str(count)
            expected = f"{number} {kind} integers separated by commas"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return values


def _positive(text: str) -> int:
    (value,) = _ints(text, 1)
    return value


def _pair(text: str) -> tuple[int, int]:
    a, b = _ints(text, 2)
    return (a, b)


def _padding(text: str) -> tuple[int, int]:
    a, b = _ints(text, 2, minimum=0)
    return (a, b)


def _triple(text: str) -> tuple[int, int, int]:
    a, b, c = _ints(text, 3)
    return (a, b, c)


def _layer(args: argparse.Namespace) -> Layer:
    if args.op_kind == "gemm":
        return gemm_layer(args.m, args.n, args.k)
    return conv_layer(args.batch, args.in_chw, args.out, args.kernel, stride=args.stride,
                      padding=args.pad, groups=args.groups, pass_=args.pass_)


def predicted_time_s(kernels: list[KernelSpec], gpu: GPUSpec, cost_model: CostModel,
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


def kernel_row(kernel: KernelSpec, gpu: GPUSpec, cost_model: CostModel) -> dict[str, Any]:
    """One kernel's launch configuration, occupancy, waves and isolated time."""
    occ = occupancy(gpu, kernel.threads, kernel.regs_per_thread, kernel.smem_per_block_B)
    return {
        "name": kernel.name, "kind": kernel.kind.value, "library_name": kernel.library_name,
        "grid": list(kernel.grid), "blocks": kernel.blocks, "threads": kernel.threads,
        "regs_per_thread": kernel.regs_per_thread, "smem_per_block_B": kernel.smem_per_block_B,
        "dtype": kernel.dtype, "tensor_cores": kernel.tensor_cores,
        "blocks_per_sm": occ.blocks_per_sm, "limiter": occ.limiter,
        "waves": waves(kernel, gpu), "flops": kernel.flops, "dram_bytes": kernel.dram_bytes,
        "isolated_time_us": isolated_time_s(kernel, gpu, cost_model) * US_PER_S,
    }


def cmd_op(args: argparse.Namespace) -> int:
    gpu = gpu_from_args(args)
    layer = _layer(args)
    kernels = lower_layer(layer, gpu, precision=args.precision, layout=args.layout)
    origin = args.origin
    if origin is None and args.cost_model == "scaled":
        origin = DEFAULT_ORIGIN
    model = resolve_cost_model(args.cost_model, gpu, origin=origin)
    rows = [kernel_row(k, gpu, model) for k in kernels]
    time_s, timing = predicted_time_s(kernels, gpu, model)
    time_us = time_s * US_PER_S
    if args.json:
        print_json({"gpu": gpu.name, "layer": layer.name, "op": layer.op.value,
                    "precision": args.precision, "cost_model": args.cost_model,
                    "time_us": time_us, "timing": timing, "kernels": rows})
        return 0
    print(f"{layer.name} ({layer.op.value}) on {gpu.display_name} ({gpu.name}), "
          f"{args.precision}, {layer.macs * 2 / GIGA:.3g} GFLOP")
    print_table(
        [(r["name"], r["library_name"], "x".join(str(g) for g in r["grid"]), r["threads"],
          r["regs_per_thread"], r["smem_per_block_B"], r["blocks_per_sm"], r["limiter"],
          r["waves"], f"{r['isolated_time_us']:.2f}") for r in rows],
        ("kernel", "library kernel", "grid", "threads", "regs", "smem B", "blocks/SM",
         "limiter", "waves", "alone us"),
    )
    how = ("through the engine" if timing == "engine" else
           f"analytic: over {ENGINE_BLOCK_CAP:,} blocks, isolated times summed")
    print(f"predicted time: {time_us:.2f} us ({args.cost_model} cost model, one stream, "
          f"no launch overhead, {how})")
    return 0
