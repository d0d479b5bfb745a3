"""``gpusim op``: the kernels one layer lowers to on a GPU, and how long they take.

``gpusim op conv2d --batch 32 --in 64,56,56 --out 64 --kernel 3,3 --pad 1 --gpu a100
--precision tf32`` prints each kernel's launch configuration (grid, threads, registers,
shared memory), its occupancy (blocks per SM and the limiting resource) and waves, and the
layer's predicted time: the kernels run back to back on one stream through the engine
(:func:`sim.simulate`, no launch overhead) with per-block times from the chosen cost model.
``gpusim op gemm --m M --n N --k K`` does the same for a matrix product (a cuBLAS GEMM).
``--layout nchw`` (default, PyTorch's) includes the layout copies cuDNN adds around
tensor-op convolutions; ``--layout nhwc`` is channels_last.
``--conv-algorithm fastest`` runs a convolution pass with the faster of the algorithms
lowering has for it (:func:`sim.analysis.pricing.lower_priced`), as cudnnFind picks (Baidu
DeepBench, ``torch.backends.cudnn.benchmark``); the default, ``rules``, is what cuDNN's
heuristics run in eager PyTorch.
``--json`` prints ``{"time_us": ..., "timing": "engine" | "analytic", "kernels": [...]}``.

``gpusim op --from FILE.csv --gpu t4 --precision fp16 --layout nhwc`` prices every row of a
file in Baidu DeepBench's CSV columns (:mod:`sim.measure.deepbench`; GEMM: ``M, N, K,
a_transpose, b_transpose``; convolution: ``W, H, C, N, K, S, R, pad_w, pad_h, stride_w,
stride_h``) and prints one row per input row with the predicted ``time_ms`` (GEMM) or
``fwd_ms``, ``bwd_data_ms``, ``bwd_filter_ms`` (convolution); ``--json`` prints a list of row
objects carrying the input columns plus those (a time the input gave is kept as
``measured_<column>``). A bad row is an error naming its line (exit 2); a time cell that
holds a note instead of a number is reported on stderr and left without a measured value.

Every kernel is checked as a launch first (:class:`sim.engine.program.Launch`): a grid beyond
CUDA's limits (``--m 1000000000 --n 1000000000``) is an error, as it is for ``run`` and
``simulate``, not a predicted time. Bad input never hangs: when the kernels have more than
:data:`~sim.analysis.pricing.ENGINE_BLOCK_CAP` blocks in all (``--m 100000000`` makes ~6e8),
the time is analytic instead (:func:`sim.analysis.pricing.predicted_time_s`); the output says
"analytic".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpu_models.cost import DEFAULT_COST_MODEL, isolated_time_s, list_cost_models, waves
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel, KernelSpec
from gpu_models.occupancy import occupancy
from gpu_models.spec import PRECISIONS, GPUSpec
from gpu_models.units import GIGA, US_PER_S
from sim.analysis.pricing import ALGORITHM_CHOICES, ENGINE_BLOCK_CAP, lower_priced
from sim.analysis.workflow import resolve_cost_model
from sim.cli.common import add_gpu_args, add_json_arg, gpu_from_args, print_json, print_table
from sim.cli.files import declare_files
from sim.measure.deepbench import (
    CONV_COLUMNS,
    CONV_TIMES,
    GEMM_COLUMNS,
    GEMM_TIMES,
    price_row,
    read_deepbench_csv,
)
from workloads.layers import Layer
from workloads.lowering import CONV_PASSES, LAYOUTS, conv_layer, gemm_layer

#: The measured GPU the 'scaled' cost model starts from unless --origin says otherwise.
DEFAULT_ORIGIN = "a100"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``op`` command with its ``conv2d`` and ``gemm`` forms and ``--from``."""
    p = subparsers.add_parser(
        "op", help="kernels one layer lowers to, occupancy and time",
        description="The kernels one convolution or GEMM lowers to on a GPU (launch "
        "configuration, occupancy, waves) and the layer's predicted time; or, with --from, "
        "every row of a DeepBench CSV file priced.")
    p.add_argument("--from", dest="from_csv", default=None, metavar="FILE.csv",
                   help="price every row of a CSV file in DeepBench's columns instead of "
                   "one layer (GEMM: M,N,K,a_transpose,b_transpose; conv: W,H,C,N,K,S,R,"
                   "pad_w,pad_h,stride_w,stride_h)")
    _common(p)
    declare_files(p, inputs=("gpu", "from_csv"))
    p.set_defaults(func=cmd_op)
    ops = p.add_subparsers(dest="op_kind", metavar="OP", required=False)

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
    _common(conv, inherit=True)
    conv.set_defaults(func=cmd_op)

    gemm = ops.add_parser("gemm", help="a matrix product C[MxN] = A[MxK] B[KxN] (cuBLAS)")
    gemm.add_argument("--m", type=_positive, required=True, help="rows of A and C")
    gemm.add_argument("--n", type=_positive, required=True, help="columns of B and C")
    gemm.add_argument("--k", type=_positive, required=True, help="columns of A, rows of B")
    _common(gemm, inherit=True)
    gemm.set_defaults(func=cmd_op)


def _common(p: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    """The options every form takes. ``inherit``: a subcommand's copy, whose defaults are
    suppressed so that an option given before the subcommand (``gpusim op --gpu a100 gemm
    ...``) is not overwritten by the subcommand's default."""
    first = len(p._actions)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="math precision: fp32 (CUDA cores), tf32/fp16/bf16 (tensor cores "
                   "where the GPU has them); default fp32")
    add_gpu_args(p)
    p.add_argument("--layout", choices=LAYOUTS, default="nchw",
                   help="activation layout: nchw (PyTorch default: cuDNN adds layout copies "
                   "around tensor-op convs) or nhwc (channels_last); default nchw")
    p.add_argument("--cost-model", choices=list_cost_models(), default=DEFAULT_COST_MODEL,
                   help=f"per-block time model (default {DEFAULT_COST_MODEL})")
    p.add_argument("--conv-algorithm", choices=ALGORITHM_CHOICES, default="rules",
                   help="how a convolution pass's algorithm is chosen: rules (what cuDNN's "
                   "heuristics run, as the public traces show; eager PyTorch) or fastest (the "
                   "faster of the algorithms lowering has for it, as cudnnFind picks: "
                   "DeepBench, cudnn.benchmark); default rules")
    p.add_argument("--origin", default=None,
                   help="measured GPU the 'scaled' cost model scales from (default "
                   f"{DEFAULT_ORIGIN})")
    add_json_arg(p)
    declare_files(p, inputs=("gpu",))
    if inherit:
        for action in p._actions[first:]:
            action.default = argparse.SUPPRESS


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
    if args.from_csv is not None:
        if args.op_kind is not None:
            raise GpusimError(f"op: give either --from FILE.csv or {args.op_kind} options, "
                              "not both")
        return cmd_from_csv(args)
    if args.op_kind is None:
        raise GpusimError("op: give an op (conv2d or gemm) or --from FILE.csv "
                          "(see 'gpusim op --help')")
    gpu = gpu_from_args(args)
    layer = _layer(args)
    model = _cost_model(args, gpu)
    # Priced first: building the launches checks every grid against CUDA's limits.
    kernels, time_s, timing = lower_priced(layer, gpu, model, precision=args.precision,
                                           layout=args.layout,
                                           algorithm_choice=args.conv_algorithm)
    rows = [kernel_row(k, gpu, model) for k in kernels]
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


def _cost_model(args: argparse.Namespace, gpu: GPUSpec) -> CostModel:
    origin = args.origin
    if origin is None and args.cost_model == "scaled":
        origin = DEFAULT_ORIGIN
    return resolve_cost_model(args.cost_model, gpu, origin=origin)


def cmd_from_csv(args: argparse.Namespace) -> int:
    """``gpusim op --from FILE.csv``: one priced row per input row (see the module doc)."""
    gpu = gpu_from_args(args)
    model = _cost_model(args, gpu)
    # Only the shape columns are needed; a time column is carried along, and a note in it
    # (DeepBench's Pascal GEMM sheets, line 42) is reported rather than fatal.
    rows = read_deepbench_csv(args.from_csv, notes_in_times=True)
    for row in rows:
        for column, text in row.notes.items():
            print(f"gpusim: note: {args.from_csv}: line {row.line}: {column} holds {text!r}, "
                  "not a time: no measured value", file=sys.stderr)
    if not rows:
        raise GpusimError(f"{args.from_csv}: no rows to price")
    kind = rows[0].kind
    columns = GEMM_COLUMNS if kind == "gemm" else CONV_COLUMNS
    times = GEMM_TIMES if kind == "gemm" else CONV_TIMES
    out = []
    for row in rows:
        try:
            predicted = price_row(row, gpu, model, precision=args.precision,
                                  layout=args.layout, algorithm_choice=args.conv_algorithm)
        except GpusimError as exc:
            message = str(exc)
            prefix = "" if message.startswith("line ") else f"line {row.line}: "
            raise GpusimError(f"{args.from_csv}: {prefix}{message}") from None
        item: dict[str, Any] = {"line": row.line}
        if row.app:
            item["app"] = row.app
        item.update(row.shape)
        item.update(predicted)
        item.update({f"measured_{k}": v for k, v in row.times_ms.items() if v is not None})
        out.append(item)
    if args.json:
        print_json(out)
        return 0
    measured = [f"measured_{t}" for t in times if any(f"measured_{t}" in r for r in out)]
    headers = ["line", *(["app"] if any("app" in r for r in out) else []), *columns,
               *times, *measured]
    print(f"{args.from_csv}: {len(out)} {'GEMMs' if kind == 'gemm' else 'convolutions'} on "
          f"{gpu.display_name} ({gpu.name}), {args.precision}, {args.layout}, "
          f"{args.cost_model} cost model; milliseconds")
    print_table([[_cell(r.get(h)) for h in headers] for r in out], headers)
    return 0


def _cell(value: Any) -> Any:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else value
