"""Per-op lowering rules: one :class:`~workloads.layers.Layer` -> the kernels a library launches.

What each op becomes (eager PyTorch on cuDNN/cuBLAS; launch shapes from
``workloads/lowering/data/kernels.toml``, GEMM tiles from :mod:`workloads.lowering.tiles`):

- ``conv2d`` / ``conv2d_dgrad`` / ``conv2d_wgrad``: the algorithm cuDNN runs for the pass
  (:mod:`workloads.lowering.algorithms`, rules in ``data/algorithms.toml``): on sm70/sm75
  an fp32 NCHW 3x3 stride-1 pass is Winograd (:func:`winograd_nonfused_kernels`: two
  transforms, 36 batched GEMMs, an inverse transform; :func:`winograd_fused_kernels` for a
  data gradient of at most 64 channels), a strided data gradient there first zeroes its
  output (``scalePackedTensor_kernel``), and on sm75 an fp32 NCHW 1x1 weight gradient runs
  cuDNN 7's ``wgrad_alg0_engine`` / ``wgrad_alg1_engine`` (:func:`wgrad_engine_kernel`; no
  implicit GEMM is offered for it); on sm60/sm61 (cuDNN 6) a strided data gradient's
  kernel multiplies the zero taps too (``stride^2`` x the MACs); on sm75 with fp16 tensor
  ops on NHWC tensors each filter tap's channels are padded to whole tiles (a weight
  gradient: one 128x128-tiled GEMM per tap, :func:`tap_gemm_kernels`; a forward pass or data
  gradient: whole ``bk`` slices per tap, :func:`gemm_kernels`), the padding executed;
  everything else is one implicit-GEMM kernel per pass, shapes (per group, ``g`` groups in
  grid z):

  ========  ===============  =============  ===============
  pass      M                N              K
  ========  ===============  =============  ===============
  forward   N*P*Q            K/g            C/g*R*S
  dgrad     N*H*W            C/g            K/g*R*S
  wgrad     K/g              C/g*R*S        N*P*Q
  ========  ===============  =============  ===============

  plus a split-K reduction kernel when the tile choice splits K, a bias-add kernel after a
  biased forward conv (``fusion="eager"``) and a bias-gradient reduction after its wgrad.
  A 1x1 stride-1 convolution on NCHW images of at least :data:`POINTWISE_GEMM_MIN_PIXELS`
  pixels runs, as cuDNN runs it, as one plain GEMM per image (grid z = images; M = H*W of
  one image); its wgrad computes one partial weight gradient per image and sums them in a
  reduction kernel (split-K by image). Tensor-op kernels need 16-byte aligned channel
  vectors (cuDNN's ``align4``/``alignc4`` kernels): a convolution whose channels are not
  (the RGB stem, C = 3) runs on CUDA cores.
  Layout (``layout="nchw"``, PyTorch's default): tensor-op implicit-GEMM kernels read NHWC,
  so cuDNN first transposes their two operands (``nchwToNhwcKernel``: activation and
  filter, or the two activations of a wgrad) and transposes dgrad/wgrad results back; the
  per-image GEMMs need no transposes. With ``layout="nhwc"`` (channels_last) there are no
  transposes and a 1x1 conv is an implicit GEMM like any other.
  Depthwise convolutions (``groups == C > 1``) use PyTorch's direct depthwise kernels (one
  thread per output element; weight gradient: one block per channel and filter tap).
- ``linear`` / ``linear_dgrad`` / ``linear_wgrad``: a cuBLAS GEMM (M = batch, N = out,
  K = in for forward; the analogous shapes backward) with the bias in the epilogue (or in
  the split-K reduction), plus a bias-gradient reduction after the wgrad.
- ``batchnorm``: training: the ``num_batches_tracked += 1`` kernel PyTorch launches, then
  cuDNN's one-kernel statistics + normalise (one block per channel); inference: one
  elementwise scale-and-shift kernel. ``batchnorm_bwd``: one cuDNN kernel (block per channel).
- elementwise ops (ReLU, ReLU6, add, dropout backward, ReLU backward, gradient
  accumulation): ATen's vectorised elementwise kernel, 128 threads x 4 elements; an add or
  an accumulation of ``k`` tensors is ``k - 1`` binary kernels. Dropout: ATen's fused dropout.
- pooling: max/avg pool kernels (one thread per output); max-pool backward zero-fills the
  input gradient then scatters (2 kernels); global average pool is a mean reduction.
- ``concat``: one ``CatArrayBatchedCopy`` kernel (grid y = inputs).
- ``softmax``: one warp-per-row kernel; ``cross_entropy``: log-softmax + NLL-loss kernels;
  backward: zero-fill, NLL backward, log-softmax backward.
- ``sgd_update`` (momentum SGD): ATen's ``multi_tensor_apply`` kernels, 65536-element
  chunks, one block per chunk, launches split at PyTorch's tensor and block limits. A
  per-layer update (``optimizer="per_layer"``) is ``torch.optim.SGD(fused=True)`` over the
  layer's tensors (one depth-3 pass: param, grad, momentum); the whole-model
  ``optimizer.step`` is the default foreach implementation: three passes (``buf *= m``;
  ``buf += grad``; ``param -= lr * buf``) over all parameters.
- view ops (flatten, add/concat/flatten backward) launch nothing.

- ``batchnorm`` (training) / ``batchnorm_bwd``: cuDNN's two-pass kernels read their
  activation inputs twice, the single-read variants (when one channel's values fit in 48 KiB
  of shared memory) once (:func:`_bn_kernel`).

FLOPs are the FLOPs a kernel executes: the useful ``2 x MACs`` of the layer for an implicit
GEMM (a strided data gradient's included: its GEMM over all input pixels has 1/stride^2 of
its taps non-zero; all of them where the algorithm rule says the kernel multiplies the zeros
too), the transformed GEMM's for Winograd (a quarter of the direct
convolution's for 4x4 tiles), the layer's elementwise estimate otherwise; the padding waste
of partial tiles is not counted (a cost model can derive it from grid x tile). DRAM bytes
of a GEMM kernel count each operand as the real tensor read at the resolution the filter
reads (:func:`read_fraction`: a 1x1 stride-2 convolution reads a quarter of its input) and
judge re-reads per wave and L2 (:func:`gemm_operand_dram_B`); the output is written once
(split-K: ``split`` fp32 partial tiles, which the reduction kernel reads back); never less
than each tensor once. Other kernels move the layer's minimum bytes, rescaled from the
graph's dtype to the precision's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gpu_models.errors import GpusimError, GpusimWarning
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.occupancy import occupancy
from gpu_models.spec import PRECISIONS, GPUSpec
from workloads.graph import GraphBuilder
from workloads.layers import DTYPE_BYTES, Layer, OpType, numel
from workloads.lowering.algorithms import ALGORITHMS, IMPLICIT_GEMM, AlgorithmRule, choose_algorithm
from workloads.lowering.tiles import (
    Tile,
    TileChoice,
    check_precision,
    data_dir,
    load_table,
    math_for,
    select_tile,
    split_for_waves,
    table_for,
)

#: The dtype each precision stores activations and weights in (tf32 is a math mode on fp32
#: tensors), and its bytes per element (:data:`workloads.layers.DTYPE_BYTES`).
STORAGE_DTYPE: Mapping[str, str] = MappingProxyType(
    {p: "fp32" if p == "tf32" else p for p in PRECISIONS})
STORAGE_BYTES: Mapping[str, int] = MappingProxyType(
    {p: DTYPE_BYTES[STORAGE_DTYPE[p]] for p in PRECISIONS})
#: Split-K partial sums are accumulated in fp32.
_PARTIAL_B = 4
#: A 1x1 stride-1 conv on NCHW images of at least this many pixels runs as per-image GEMMs.
#: In the A100 ResNet-50 trace cuDNN did so for 56x56, 28x28 and 14x14 images and used an
#: implicit-GEMM kernel for 7x7 ones; where between 49 and 196 the cut-off lies is unknown.
POINTWISE_GEMM_MIN_PIXELS = 128
#: Activation memory layouts: PyTorch's default (NCHW) and channels_last (NHWC).
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc")


@functools.cache
def kernel_shapes() -> Mapping[str, Mapping[str, Any]]:
    """The non-GEMM kernel launch shapes (``workloads/lowering/data/kernels.toml``).

    Read-only (tables become mappingproxies, arrays tuples): the result is cached and
    shared by every caller.
    """
    path = data_dir() / "kernels.toml"
    frozen: Mapping[str, Mapping[str, Any]] = _frozen(
        tomllib.loads(path.read_text(encoding="utf-8")))
    return frozen


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class GemmShape:
    """An (implicit) GEMM ``C[M x N] = A[M x K] @ B[K x N]``, ``groups`` times."""

    m: int
    n: int
    k: int
    groups: int = 1
    #: Bytes of the tensors behind A, B and C (the real tensors, not im2col copies).
    a_B: float = 0.0
    b_B: float = 0.0
    c_B: float = 0.0

    def __post_init__(self) -> None:
        if min(self.m, self.n, self.k, self.groups) < 1:
            raise GpusimError(f"GEMM shape must be positive (got M={self.m}, N={self.n}, "
                              f"K={self.k}, groups={self.groups})")


@dataclass(frozen=True)
class Context:
    """What every rule needs: the GPU, the precision and its derived values.

    Not validated here: the public entries (:func:`workloads.lowering.lower`,
    :func:`lower_layer`) check precision and layout once before building one.
    """

    gpu: GPUSpec
    precision: str
    layout: str = "nchw"
    #: The convolution algorithm to run instead of the rules' choice ("" = the rules'), one
    #: of :func:`conv_algorithm_candidates` (the fastest-algorithm search prices each).
    conv_algorithm: str = ""

    @property
    def elem_B(self) -> int:
        """Storage bytes per element."""
        return STORAGE_BYTES[self.precision]

    @property
    def storage(self) -> str:
        """The dtype non-GEMM kernels compute in (tf32 stores fp32)."""
        return "fp32" if self.precision == "tf32" else self.precision

    def scale(self, layer: Layer) -> float:
        """Factor from the layer's byte counts (its dtype) to this precision's."""
        return self.elem_B / layer.dtype_bytes

    def min_bytes(self, layer: Layer) -> float:
        """The layer's minimum DRAM traffic at this precision."""
        return layer.bytes * self.scale(layer)


def check_options(precision: str, layout: str) -> None:
    """:class:`GpusimError` for an unknown precision or layout (the public entries' check)."""
    check_precision(precision)
    if layout not in LAYOUTS:
        raise GpusimError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")


def warn_math_fallback(gpu: GPUSpec, precision: str) -> None:
    """A :class:`GpusimWarning` when ``gpu`` runs ``precision`` math on CUDA cores instead
    of tensor cores (tf32 or bf16 on a V100): the result is not what the precision name
    suggests, and must not pass silently."""
    note = gpu.math_fallback(precision)
    if note:
        warnings.warn(GpusimWarning(note), stacklevel=3)


def is_depthwise(layer: Layer) -> bool:
    """A convolution with one group per input channel (and more than one group)."""
    # The forward input's channels: input of the forward conv, output of its dgrad, second
    # input (the saved x) of its wgrad.
    forward_input = {OpType.CONV2D: layer.inputs[0], OpType.CONV2D_DGRAD: layer.output,
                     OpType.CONV2D_WGRAD: layer.inputs[-1]}.get(layer.op)
    return forward_input is not None and 1 < layer.groups == forward_input[1]


def read_fraction(layer: Layer) -> float:
    """Fraction of a convolution's input pixels its filter taps read.

    A filter narrower than its stride skips input rows and columns: a 1x1 stride-2
    convolution reads one pixel in four, so its input operand is a quarter of the tensor.
    Output row ``p`` reads rows ``p*s .. p*s + (R-1)*d``: ``min(R_eff, s)`` new rows per
    output row (``R_eff = (R-1)*d + 1``), at most all ``H``. Padding is ignored (it only
    trims the edges). Non-convolutions read everything (1.0).
    """
    if layer.op not in (OpType.CONV2D, OpType.CONV2D_DGRAD, OpType.CONV2D_WGRAD):
        return 1.0
    x = layer.output if layer.op is OpType.CONV2D_DGRAD else layer.inputs[-1]
    y = layer.inputs[0] if layer.op is not OpType.CONV2D else layer.output
    h, w = x[2], x[3]
    p, q = y[2], y[3]
    (r, s), (sh, sw), (dh, dw) = layer.kernel, layer.stride, layer.dilation
    rows = min(h, p * min((r - 1) * dh + 1, sh))
    cols = min(w, q * min((s - 1) * dw + 1, sw))
    return rows * cols / (h * w)


def gemm_shape(layer: Layer, elem_B: int = 4) -> GemmShape:
    """The GEMM a conv/linear layer (or its dgrad/wgrad) computes, per group.

    Operand bytes are the real tensors (not im2col copies), the input counted at the
    resolution the filter reads (:func:`read_fraction`); a data gradient writes all of its
    output (cuDNN writes the zeros of a strided one too)."""
    g = layer.groups
    r, s = layer.kernel
    op = layer.op
    if op is OpType.CONV2D:
        x, y = layer.inputs[0], layer.output
        n, c, _, _ = x
        _, k, p, q = y
        w = k * (c // g) * r * s
        return GemmShape(n * p * q, k // g, c // g * r * s, g,
                         numel(x) * read_fraction(layer) * elem_B, w * elem_B,
                         numel(y) * elem_B)
    if op is OpType.CONV2D_DGRAD:
        y, x = layer.inputs[0], layer.output
        n, c, h, wd = x
        k = y[1]
        w = k * (c // g) * r * s
        return GemmShape(n * h * wd, c // g, k // g * r * s, g,
                         numel(y) * elem_B, w * elem_B, numel(x) * elem_B)
    if op is OpType.CONV2D_WGRAD:
        y, x = layer.inputs[0], layer.inputs[1]
        n, k, p, q = y
        c = x[1]
        return GemmShape(k // g, c // g * r * s, n * p * q, g,
                         numel(y) * elem_B, numel(x) * read_fraction(layer) * elem_B,
                         numel(layer.output) * elem_B)
    if op is OpType.LINEAR:
        (n, f), out = layer.inputs[0], layer.output[1]
        return GemmShape(n, out, f, 1, n * f * elem_B, out * f * elem_B, n * out * elem_B)
    if op is OpType.LINEAR_DGRAD:
        (n, out), f = layer.inputs[0], layer.output[1]
        return GemmShape(n, f, out, 1, n * out * elem_B, out * f * elem_B, n * f * elem_B)
    if op is OpType.LINEAR_WGRAD:
        (n, out), (_, f) = layer.inputs[0], layer.inputs[1]
        return GemmShape(out, f, n, 1, n * out * elem_B, n * f * elem_B, out * f * elem_B)
    raise GpusimError(f"layer {layer.name!r}: op {op.value!r} is not a GEMM")


_PASS_OF: dict[OpType, tuple[str, KernelKind]] = {
    OpType.CONV2D: ("fprop", KernelKind.CONV_FWD),
    OpType.CONV2D_DGRAD: ("dgrad", KernelKind.CONV_DGRAD),
    OpType.CONV2D_WGRAD: ("wgrad", KernelKind.CONV_WGRAD),
    OpType.LINEAR: ("gemm", KernelKind.GEMM),
    OpType.LINEAR_DGRAD: ("gemm", KernelKind.GEMM),
    OpType.LINEAR_WGRAD: ("gemm", KernelKind.GEMM),
}


def make_kernel(layer: Layer, ctx: Context, kind: KernelKind, grid: tuple[int, int, int],
                threads: int, regs: int, smem_B: int, flops: float, dram_B: float,
                library_name: str, *, tensor_cores: bool = False,
                tile_mn: tuple[int, int] | None = None,
                mainloop_iterations: int = 0) -> KernelSpec:
    """One kernel of ``layer`` (named after it; :func:`layer_kernels` numbers several);
    a tiled GEMM kernel also carries its tile and main-loop iterations per block."""
    # Math runs in the requested precision only on tensor cores; CUDA-core kernels compute
    # in the storage type (a tf32 request is fp32 there).
    return KernelSpec(
        name=layer.name, kind=kind, grid=grid, threads=threads, regs_per_thread=regs,
        smem_per_block_B=smem_B, flops=float(flops), dram_bytes=float(dram_B),
        dtype=ctx.precision if tensor_cores else ctx.storage, tensor_cores=tensor_cores,
        layer=layer.name, library_name=library_name, tile_mn=tile_mn,
        mainloop_iterations=mainloop_iterations,
    )


def _grid1(elements: int, per_block: int) -> tuple[int, int, int]:
    return (max(1, math.ceil(elements / per_block)), 1, 1)


def elementwise_kernel(layer: Layer, ctx: Context, elements: int, *, binary: bool,
                       flops: float, dram_B: float, label: str,
                       kind: KernelKind = KernelKind.ELEMENTWISE) -> KernelSpec:
    """ATen's vectorised elementwise kernel over ``elements`` values (``kernels.toml``)."""
    e = kernel_shapes()["elementwise"]
    regs = e["regs_binary"] if binary else e["regs_unary"]
    return make_kernel(layer, ctx, kind, _grid1(elements, e["threads"] * e["elems_per_thread"]),
                       e["threads"], regs, e["smem_B"], flops, dram_B,
                       f"vectorized_elementwise_kernel<4, {label}>")


def _shaped(layer: Layer, ctx: Context, entry: str, kind: KernelKind,
            grid: tuple[int, int, int], flops: float, dram_B: float, label: str,
            ) -> KernelSpec:
    e = kernel_shapes()[entry]
    return make_kernel(layer, ctx, kind, grid, e["threads"], e["regs"], e["smem_B"], flops,
                       dram_B, label)


# ---------------------------------------------------------------------- GEMMs
def operand_dram_B(operand_B: float, uses: int, concurrent_uses: int, gpu: GPUSpec) -> float:
    """DRAM bytes of reading a GEMM operand that ``uses`` tiles read, ``concurrent_uses`` of
    them in the same wave.

    Blocks that read the same panel of an operand at about the same time share one DRAM
    read (the L2 serves the rest). An operand that fits in half the L2 stays there for the
    whole kernel: read once. A larger one is evicted between the waves that need it again,
    so it is read once per group of concurrent users: ``ceil(uses / concurrent_uses)``
    times (once when one wave holds all its users).
    """
    if operand_B <= gpu.l2_B / 2 or concurrent_uses >= uses:
        return operand_B
    return operand_B * math.ceil(uses / max(1, concurrent_uses))


def gemm_operand_dram_B(shape: GemmShape, choice: TileChoice, gpu: GPUSpec, *,
                        shared_b: bool = False) -> float:
    """DRAM bytes of a GEMM kernel's operand reads, judged per wave and L2
    (:func:`operand_dram_B`).

    Blocks run in raster order, M tiles fastest (grid x), then N tiles, then the K slices
    and groups of grid z. One wave of ``W = sm_count x blocks_per_sm`` blocks therefore
    covers ``min(tiles_m, W)`` tile rows and ``ceil(W / tiles_m)`` tile columns: an A panel
    (a tile row of A) has ``tiles_n`` users, ``ceil(W / tiles_m)`` of them in one wave; a B
    panel has ``tiles_m`` users, ``min(tiles_m, W)`` in one wave. Each group and split-K
    slice reads its own part of A and B (``shared_b``: every group reads the same B, as the
    per-image GEMMs of an NCHW 1x1 convolution read one filter).
    """
    occ = occupancy(gpu, choice.tile.threads, choice.tile.regs, choice.tile.smem_B)
    wave = gpu.sm_count * max(1, occ.blocks_per_sm)
    tiles_m, tiles_n = choice.tiles_m, choice.tiles_n
    rows = min(tiles_m, wave)
    cols = min(tiles_n, math.ceil(wave / tiles_m))
    parts = shape.groups * choice.split_k
    b_parts = choice.split_k if shared_b else parts
    a = operand_dram_B(shape.a_B / parts, tiles_n, cols, gpu) * parts
    b = operand_dram_B(shape.b_B / b_parts, tiles_m, rows, gpu) * b_parts
    return a + b


def _gemm_launch(layer: Layer, ctx: Context, kind: KernelKind, shape: GemmShape,
                 choice: TileChoice, *, flops: float, label: str,
                 shared_b: bool = False) -> list[KernelSpec]:
    """The kernel of one tiled GEMM (``groups`` of them in grid z) and its split-K reduction.

    DRAM bytes: the operand reads of :func:`gemm_operand_dram_B`, plus the output written
    once, or with split-K ``split`` fp32 partial tiles, which the reduction kernel reads back
    before writing the output; never less than each tensor once.
    """
    tile = choice.tile
    tensor = "simt" not in tile.math
    split = choice.split_k
    reads = gemm_operand_dram_B(shape, choice, ctx.gpu, shared_b=shared_b)
    minimum = shape.a_B + shape.b_B + shape.c_B
    grid = (choice.tiles_m, choice.tiles_n, split * shape.groups)  # groups/images in z
    label = label + (f" splitK{split}" if split > 1 else "")
    # Each block runs the K loop over its slice of K, one bk-deep stage per iteration.
    tile_mn = (tile.bm, tile.bn)
    iterations = math.ceil(math.ceil(shape.k / split) / tile.bk(ctx.elem_B))
    if split == 1:
        return [make_kernel(layer, ctx, kind, grid, tile.threads, tile.regs, tile.smem_B, flops,
                            max(reads + shape.c_B, minimum), label, tensor_cores=tensor,
                            tile_mn=tile_mn, mainloop_iterations=iterations)]
    partial_B = float(split * shape.m * shape.n * shape.groups * _PARTIAL_B)
    main = make_kernel(layer, ctx, kind, grid, tile.threads, tile.regs, tile.smem_B, flops,
                       max(reads + partial_B, shape.a_B + shape.b_B), label,
                       tensor_cores=tensor, tile_mn=tile_mn, mainloop_iterations=iterations)
    outputs = shape.m * shape.n * shape.groups
    e = kernel_shapes()["splitk_reduce"]
    reduce = make_kernel(layer, ctx, KernelKind.REDUCTION,
                         _grid1(outputs, e["threads"] * e["elems_per_thread"]), e["threads"],
                         e["regs"], e["smem_B"], float((split - 1) * outputs),
                         partial_B + shape.c_B, "splitk_reduce")
    return [main, reduce]


def _tensor_aligned(layer: Layer, elem_B: int) -> bool:
    # Tensor-op conv kernels need 16-byte aligned channel vectors (the `align4` / `alignc4`
    # suffixes of cuDNN's tf32 kernel names): an RGB input conv (C = 3) runs on CUDA cores.
    if layer.op not in (OpType.CONV2D, OpType.CONV2D_DGRAD, OpType.CONV2D_WGRAD):
        return True
    shape = gemm_shape(layer, elem_B)
    channels = {OpType.CONV2D: shape.k // (layer.kernel[0] * layer.kernel[1]),
                OpType.CONV2D_DGRAD: shape.n,
                OpType.CONV2D_WGRAD: shape.n // (layer.kernel[0] * layer.kernel[1])}[layer.op]
    return channels % max(1, 16 // elem_B) == 0


def _is_pointwise_conv(layer: Layer) -> bool:
    """A 1x1 stride-1 conv (pass) that cuDNN runs on NCHW tensors as per-image GEMMs."""
    if layer.op not in (OpType.CONV2D, OpType.CONV2D_DGRAD, OpType.CONV2D_WGRAD):
        return False
    image = layer.output if layer.op is OpType.CONV2D_DGRAD else layer.inputs[0]
    return (layer.kernel == (1, 1) and layer.stride == (1, 1) and layer.padding == (0, 0)
            and layer.groups == 1 and image[2] * image[3] >= POINTWISE_GEMM_MIN_PIXELS)


def gemm_kernels(layer: Layer, ctx: Context, *, epilogue: str = "",
                 multiplies_zero_taps: bool = False, tap_tile: str | None = None,
                 tap_channel_slices: bool = False) -> list[KernelSpec]:
    """The GEMM kernel of a conv/linear layer (+ split-K reduction), tile chosen per arch.

    ``multiplies_zero_taps``: a strided data gradient's kernel executes every tap of its
    GEMM over all input pixels, the zeros between the output gradient's pixels included
    (the algorithm rule says where). ``tap_tile``: a weight gradient run as one GEMM per
    filter tap in whole tiles of that tile (:func:`tap_gemm_kernels`).
    ``tap_channel_slices``: a forward pass (data gradient) whose K loop runs over each
    tap's C (K) reduced channels in whole ``bk``-deep slices, padded up per tap, and its
    produced K (C) channels up to the tile's ``bn``: its useful FLOPs times both padding
    factors, executed (tensor cores for any C). Example: the T4 fp16 forward pass of a 3x3
    conv, C = 1 -> K = 16, with a 64-wide tile (``bk`` = 32): 9 taps x 32 = 288 executed
    reduction steps per output instead of 9, on 64 filter columns instead of 16: 128x the
    MACs."""
    if tap_tile is not None and layer.op is OpType.CONV2D_WGRAD:
        return tap_gemm_kernels(layer, ctx, tap_tile)
    pass_, kind = _PASS_OF[layer.op]
    work = gemm_shape(layer, ctx.elem_B)
    shape = work
    math_ = math_for(ctx.gpu, ctx.precision)
    pads = tap_channel_slices and layer.op in (OpType.CONV2D, OpType.CONV2D_DGRAD)
    if math_ != "simt" and not pads and not _tensor_aligned(layer, ctx.elem_B):
        math_ = "simt"
    images = 0
    if ctx.layout == "nchw" and _is_pointwise_conv(layer):
        # cuDNN runs an NCHW 1x1 stride-1 conv as one GEMM per image (grid z): for fprop
        # and dgrad M = H*W of one image; for wgrad K = H*W of one image, and the images'
        # partial weight gradients are summed by a reduction kernel (split-K by image).
        pass_, images = "gemm", layer.inputs[0][0]
        if layer.op is OpType.CONV2D_WGRAD:
            shape = dataclasses.replace(shape, k=shape.k // images)
        else:
            shape = dataclasses.replace(shape, m=shape.m // images, groups=images)
    choice = select_tile(ctx.gpu, pass_, math_, shape.m, shape.n, shape.k, ctx.elem_B,
                         batch=shape.groups * (images if images and layer.op is
                                               OpType.CONV2D_WGRAD else 1),
                         allow_split_k=not images)
    if images and layer.op is OpType.CONV2D_WGRAD:
        choice = dataclasses.replace(choice, split_k=images)
    # The useful FLOPs: 2 x the layer's MACs (a strided data gradient's implicit GEMM over
    # all N*H*W input pixels has only 1/stride^2 of its taps non-zero), unless the kernel
    # multiplies the zero taps as well.
    flops = 2.0 * layer.macs if layer.macs else 2.0 * work.m * work.n * work.k * work.groups
    if multiplies_zero_taps and layer.op is OpType.CONV2D_DGRAD:
        flops = 2.0 * work.m * work.n * work.k * work.groups
    if pads and "simt" not in choice.tile.math:
        taps = layer.kernel[0] * layer.kernel[1]
        bk = choice.tile.bk(ctx.elem_B)
        shape = dataclasses.replace(shape, k=taps * math.ceil(work.k // taps / bk) * bk)
        flops *= choice.tiles_n * choice.tile.bn / work.n * shape.k / work.k
    return _gemm_launch(layer, ctx, kind, shape, choice, flops=flops,
                        label=f"{choice.tile.name}{epilogue}",
                        shared_b=bool(images) and layer.op is not OpType.CONV2D_WGRAD)


def tap_gemm_kernels(layer: Layer, ctx: Context, tile_name: str) -> list[KernelSpec]:
    """A weight gradient run as one GEMM per filter tap, in whole tiles of ``tile_name``
    (an algorithm rule's ``tap_tile``; cuDNN 7's tensor-op ALGO_1 on NHWC tensors).

    Each of the ``R*S`` taps (and groups: grid z, with the split-K slices) is a ``K x C``
    GEMM reduced over ``N*P*Q``; K and C are padded up to whole ``bm x bn`` tiles per tap,
    and the kernel executes the padding: ``2 * R*S * ceil(K/bm)*bm * ceil(C/bn)*bn * N*P*Q``
    FLOPs (C = 1 costs what C = bn does). The tiles are always split along N*P*Q to fill
    their waves (:func:`~workloads.lowering.tiles.split_for_waves`): the time per executed
    tile MAC is the same for 9 to 50 tiles on the T4's 40 SMs (``algorithms.toml``), where
    whole waves of unsplit tiles would make 50 tiles cost twice 40. Operand bytes are the
    tensors' own.

    Example: the T4 fp16 wgrad of a 3x3 conv, C = 1 -> K = 16 on 48x480 images, batch 16,
    with the 128x128 tile: 9 taps x 1 x 1 tiles, each reduced over 368,640 pixels; 9 blocks
    on 40 SMs, so split-K fills the waves; 2 x 9 x 128 x 128 x 368,640 = 108.7 GFLOP
    executed, 1024x the layer's 0.11 GFLOP.
    """
    tile = _named_tile(ctx, tile_name)
    work = gemm_shape(layer, ctx.elem_B)
    r, s = layer.kernel
    taps = r * s
    shape = dataclasses.replace(work, n=work.n // taps, groups=work.groups * taps)
    tiles_m, tiles_n = math.ceil(shape.m / tile.bm), math.ceil(shape.n / tile.bn)
    blocks = tiles_m * tiles_n * shape.groups
    choice = TileChoice(tile, tiles_m, tiles_n,
                        split_for_waves(ctx.gpu, tile, blocks, shape.k, ctx.elem_B))
    flops = 2.0 * choice.tiles_m * tile.bm * choice.tiles_n * tile.bn * shape.k * shape.groups
    return _gemm_launch(layer, ctx, KernelKind.CONV_WGRAD, shape, choice, flops=flops,
                        label=f"{tile.name} per-tap")


def _bias_grad(layer: Layer, ctx: Context) -> KernelSpec:
    # Sum of the output gradient over batch (and pixels): one output per channel/feature.
    y = layer.inputs[0]
    channels = y[1]
    e = kernel_shapes()["reduce"]
    return _shaped(layer, ctx, "reduce", KernelKind.REDUCTION,
                   _grid1(channels, e["outputs_per_block"]), float(numel(y)),
                   (numel(y) + channels) * ctx.elem_B, "reduce_kernel<sum> (bias grad)")


def _transpose(layer: Layer, ctx: Context, dims: tuple[int, int, int], label: str,
               ) -> KernelSpec:
    # cuDNN's layout kernels move 32 x 32 tiles of a (n, c, h*w) tensor: grid (h*w/32,
    # c/32, n); each element is read and written once.
    n, c, hw = dims
    e = kernel_shapes()["layout_transpose"]
    tile = e["tile"]
    return make_kernel(layer, ctx, KernelKind.CONCAT_COPY,
                       (math.ceil(hw / tile), math.ceil(c / tile), n), e["threads"], e["regs"],
                       e["smem_B"], 0.0, 2.0 * n * c * hw * ctx.elem_B, label)


def _layout_transposes(layer: Layer, ctx: Context, *, fprop_writes_nhwc: bool = False,
                       ) -> tuple[list[KernelSpec], list[KernelSpec]]:
    """NCHW -> NHWC copies of a tensor-op conv's two operands, and of its result back."""
    r, s = layer.kernel
    g = layer.groups

    def chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
        return (shape[0], shape[1], shape[2] * shape[3])

    if layer.op is OpType.CONV2D:
        x = layer.inputs[0]
        operands = [chw(x), (layer.output[1], x[1] // g, r * s)]
    elif layer.op is OpType.CONV2D_DGRAD:
        y = layer.inputs[0]
        operands = [chw(y), (y[1], layer.output[1] // g, r * s)]
    else:
        operands = [chw(layer.inputs[0]), chw(layer.inputs[1])]
    before = [_transpose(layer, ctx, dims, "nchwToNhwcKernel") for dims in operands]
    # Most of cuDNN's tensor-op fprop kernels write NCHW themselves (`..._nhwckrsc_nchw`),
    # those marked `writes_nhwc` do not; dgrad and wgrad results come back through a
    # transpose.
    after: list[KernelSpec] = []
    if (layer.op is OpType.CONV2D and fprop_writes_nhwc) or layer.op is OpType.CONV2D_DGRAD:
        after = [_transpose(layer, ctx, chw(layer.output), "nhwcToNchwKernel")]
    elif layer.op is OpType.CONV2D_WGRAD:
        k, c_g, _, _ = layer.output
        after = [_transpose(layer, ctx, (k, c_g, r * s), "nhwcToNchwKernel")]
    return before, after


def conv_algorithm(layer: Layer, ctx: Context) -> AlgorithmRule:
    """The algorithm cuDNN runs for this convolution pass (:mod:`workloads.lowering.algorithms`)."""
    pass_ = _PASS_OF[layer.op][0]
    math_ = math_for(ctx.gpu, ctx.precision)
    channels = layer.output[0] if layer.op is OpType.CONV2D_WGRAD else layer.output[1]

    def choose(math_: str) -> AlgorithmRule:
        return choose_algorithm(arch=ctx.gpu.arch, math=math_, layout=ctx.layout, pass_=pass_,
                                kernel=layer.kernel, stride=layer.stride, channels=channels)

    if math_ != "simt" and not _tensor_aligned(layer, ctx.elem_B):
        # A tensor-op kernel that pads the channels of each filter tap to its tile
        # (``tap_tile``, ``tap_channel_slices``) takes any channel count; others need
        # aligned channel vectors.
        rule = choose(math_)
        return rule if rule.pads_channels else choose("simt")
    return choose(math_)


def _candidates(layer: Layer, ctx: Context) -> tuple[AlgorithmRule, ...]:
    """The rules' choice for a convolution pass, then implicit GEMM if that differs."""
    rule = conv_algorithm(layer, ctx) if layer.groups == 1 and layer.dilation == (1, 1) \
        else IMPLICIT_GEMM
    if rule.algorithm == "implicit_gemm" or rule.sole_candidate:
        return (rule,)
    return (rule, IMPLICIT_GEMM)


def conv_algorithm_candidates(layer: Layer, gpu: GPUSpec, *, precision: str = "fp32",
                              layout: str = "nchw") -> tuple[str, ...]:
    """The algorithms lowering can run a convolution pass with, the rules' choice first:
    that choice (:func:`conv_algorithm`) and implicit GEMM, which cuDNN has for every pass
    (one algorithm when they are the same). A library that times its algorithms and keeps
    the fastest (``cudnnFind*Algorithm``, as Baidu DeepBench and ``torch.backends.cudnn
    .benchmark`` do) runs the faster of these; :func:`lower_layer` runs any one of them
    (``conv_algorithm=``). Empty for a layer that is not a (non-depthwise) convolution."""
    if layer.op not in (OpType.CONV2D, OpType.CONV2D_DGRAD, OpType.CONV2D_WGRAD) \
            or is_depthwise(layer):
        return ()
    check_options(precision, layout)
    return tuple(r.algorithm for r in _candidates(layer, Context(gpu, precision, layout)))


def _conv(layer: Layer, ctx: Context, epilogue: str = "") -> list[KernelSpec]:
    if is_depthwise(layer):
        return [_depthwise(layer, ctx)]
    candidates = _candidates(layer, ctx)
    rule = candidates[0]
    if ctx.conv_algorithm:
        chosen = [r for r in candidates if r.algorithm == ctx.conv_algorithm]
        if not chosen:
            raise GpusimError(
                f"layer {layer.name!r}: conv_algorithm {ctx.conv_algorithm!r} does not apply "
                f"to this pass on {ctx.gpu.name} (it runs "
                f"{' or '.join(r.algorithm for r in candidates)})")
        rule = chosen[0]
    if rule.algorithm == "winograd_nonfused":
        kernels = winograd_nonfused_kernels(layer, ctx, epilogue=epilogue)
    elif rule.algorithm == "winograd_fused":
        kernels = winograd_fused_kernels(layer, ctx, epilogue=epilogue)
    elif rule.algorithm == "wgrad_engine":
        kernels = [wgrad_engine_kernel(layer, ctx)]
    else:
        kernels = gemm_kernels(layer, ctx, epilogue=epilogue,
                               multiplies_zero_taps=rule.multiplies_zero_taps,
                               tap_tile=rule.tap_tile,
                               tap_channel_slices=rule.tap_channel_slices)
        if rule.zero_fill_output:
            kernels = [_zero_fill(layer, ctx), *kernels]
    if ctx.layout == "nchw" and kernels[-1].tensor_cores and not _is_pointwise_conv(layer):
        # Tensor-op implicit-GEMM kernels read NHWC: on PyTorch's default NCHW tensors cuDNN
        # transposes their operands first (and dgrad/wgrad results back).
        main = max(kernels, key=lambda k: k.flops)
        writes_nhwc = any(t.writes_nhwc for t in load_table(table_for(ctx.gpu))
                          if main.library_name.startswith(t.name))
        before, after = _layout_transposes(layer, ctx, fprop_writes_nhwc=writes_nhwc)
        kernels = [*before, *kernels, *after]
    if layer.op is OpType.CONV2D and layer.bias and not epilogue:
        out = numel(layer.output)
        kernels.append(elementwise_kernel(layer, ctx, out, binary=True, flops=out,
                                          dram_B=(2 * out + layer.out_channels) * ctx.elem_B,
                                          label="add (conv bias)"))
    if layer.op is OpType.CONV2D_WGRAD and layer.bias:
        kernels.append(_bias_grad(layer, ctx))
    return kernels


def _zero_fill(layer: Layer, ctx: Context) -> KernelSpec:
    """cuDNN's scalePackedTensor_kernel zeroing a strided data gradient before the scatter."""
    e = kernel_shapes()["scale_packed_tensor"]
    elements = numel(layer.output)
    blocks = min(math.ceil(elements / (e["threads"] * e["elems_per_thread"])),
                 e["max_blocks"])
    return make_kernel(layer, ctx, KernelKind.ELEMENTWISE, (max(1, blocks), 1, 1), e["threads"],
                       e["regs"], e["smem_B"], 0.0, 2.0 * elements * ctx.elem_B,
                       "scalePackedTensor_kernel (zero the data gradient)")


# ---------------------------------------------------------------------- Winograd
def _named_tile(ctx: Context, name: str) -> Tile:
    for tile in load_table(table_for(ctx.gpu)):
        if tile.name == name:
            return tile
    raise GpusimError(f"tile {name!r} is not in tile table {table_for(ctx.gpu)!r}")


def _images_per_block(e: Mapping[str, Any], images: int, tiles_per_image: int) -> int:
    # The largest power of two with images x tiles <= tiles_per_block, capped (kernels.toml).
    fit = max(1, e["tiles_per_block"] // tiles_per_image)
    return min(e["max_images_per_block"], images, 1 << (fit.bit_length() - 1))


def winograd_nonfused_kernels(layer: Layer, ctx: Context, *,
                              epilogue: str = "") -> list[KernelSpec]:
    """cuDNN's non-fused Winograd F(4x4, 3x3) for one pass of a 3x3 stride-1 convolution.

    Four kernels (``kernels.toml`` ``[winograd_nonfused]``): transforms of the two operands
    into 6x6 = 36-point tiles, 36 batched GEMMs (one per point), and the inverse transform.
    With ``T = N x ceil(P/4) x ceil(Q/4)`` output tiles (``P x Q`` the spatial size of the
    tensor being produced: y forward, dx for the data gradient, dy's for the weight
    gradient) and ``e`` bytes per element:

    ==========  =====================================  ====================================
    pass        GEMM (per point) M x N x K              transforms
    ==========  =====================================  ====================================
    forward     T x K x C                               x -> 36*T*C, w -> 36*K*C, out -> y
    dgrad       T x C x K                               dy -> 36*T*K, w -> 36*C*K, out -> dx
    wgrad       K x C x T                               x -> 36*T*C, dy -> 36*T*K, out -> dw
    ==========  =====================================  ====================================

    The GEMM's FLOPs are the ones it executes, ``2 x 36 x M x N x K``: a quarter of the
    direct convolution's for 4x4 output tiles (144 MACs per tile and channel pair become 36).
    """
    e = kernel_shapes()["winograd_nonfused"]
    kind = _PASS_OF[layer.op][1]
    points, tile4, eb = e["points"], e["output_tile"], ctx.elem_B
    n = layer.inputs[0][0]
    if layer.op is OpType.CONV2D:
        c, k = layer.inputs[0][1], layer.output[1]
        cin, cout = c, k
        spatial = layer.output[2:]
    elif layer.op is OpType.CONV2D_DGRAD:
        c, k = layer.output[1], layer.inputs[0][1]
        cin, cout = k, c
        spatial = layer.output[2:]
    else:
        k, c = layer.output[0], layer.output[1]
        spatial = layer.inputs[0][2:]
    tiles_per_image = math.ceil(spatial[0] / tile4) * math.ceil(spatial[1] / tile4)
    tiles = n * tiles_per_image
    gemm_tile = _named_tile(ctx, e["gemm_tile"])

    def shaped(label: str, grid: tuple[int, int, int], threads: int, regs: int, smem: int,
               flops: float, dram: float) -> KernelSpec:
        return make_kernel(layer, ctx, kind, grid, threads, regs, smem, flops, dram, label)

    def filter_grid() -> tuple[int, int, int]:
        return (math.ceil(k / e["filter_k_per_block"]), math.ceil(c / e["filter_c_per_block"]),
                1)

    filter_B = k * c * 9 * eb
    if layer.op is OpType.CONV2D_WGRAD:
        x_B = numel(layer.inputs[1]) * eb
        dy_B = numel(layer.inputs[0]) * eb
        vx, vdy, mw = points * tiles * c * eb, points * tiles * k * eb, points * k * c * eb

        def wgrad_grid(channels: int) -> tuple[int, int, int]:
            return (math.ceil(channels * tiles_per_image / e["tiles_per_block"]), n, 1)

        shape = GemmShape(k, c, tiles, points, vdy, vx, mw)
        choice = TileChoice(gemm_tile, math.ceil(k / gemm_tile.bm),
                            math.ceil(c / gemm_tile.bn), 1)
        return [
            shaped("winogradWgradData4x4", wgrad_grid(c), e["data_threads"],
                   e["wgrad_data_regs"], e["wgrad_data_smem_B"],
                   e["data_flop_per_tile"] * tiles * c, x_B + vx),
            shaped("winogradWgradDelta4x4", wgrad_grid(k), e["data_threads"],
                   e["wgrad_delta_regs"], e["wgrad_delta_smem_B"],
                   e["data_flop_per_tile"] * tiles * k, dy_B + vdy),
            *_gemm_launch(layer, ctx, kind, shape, choice,
                          flops=2.0 * points * k * c * tiles,
                          label=f"{gemm_tile.name} (winograd, {points} points)"),
            shaped("winogradWgradOutput4x4", filter_grid(), e["filter_threads"],
                   e["wgrad_output_regs"], e["wgrad_output_smem_B"],
                   e["filter_flop_per_filter"] * k * c, mw + filter_B),
        ]
    in_B = numel(layer.inputs[0]) * eb
    out_B = numel(layer.output) * eb
    ipb = _images_per_block(e, n, tiles_per_image)
    v, u, m = points * tiles * cin * eb, points * cin * cout * eb, points * tiles * cout * eb
    shape = GemmShape(tiles, cout, cin, points, v, u, m)
    choice = TileChoice(gemm_tile, math.ceil(tiles / gemm_tile.bm),
                        math.ceil(cout / gemm_tile.bn), 1)
    return [
        shaped("winogradForwardData4x4", (math.ceil(n / ipb), cin, 1), e["data_threads"],
               e["data_regs"], e["data_smem_B"], e["data_flop_per_tile"] * tiles * cin,
               in_B + v),
        shaped("winogradForwardFilter4x4", filter_grid(), e["filter_threads"],
               e["filter_regs"], e["filter_smem_B"], e["filter_flop_per_filter"] * k * c,
               filter_B + u),
        *_gemm_launch(layer, ctx, kind, shape, choice, flops=2.0 * points * tiles * cin * cout,
                      label=f"{gemm_tile.name} (winograd, {points} points)"),
        shaped(f"winogradForwardOutput4x4{epilogue}", (math.ceil(n / ipb), cout, 1),
               e["output_threads"], e["output_regs"], e["output_smem_B"],
               e["output_flop_per_tile"] * tiles * cout, m + out_B),
    ]


def winograd_fused_kernels(layer: Layer, ctx: Context, *,
                           epilogue: str = "") -> list[KernelSpec]:
    """cuDNN's fused Winograd F(2x2, 3x3) for the data gradient (or forward) of a 3x3
    stride-1 convolution: a filter transform into 4x4 = 16-point tiles, then one kernel that
    transforms the input tiles, multiplies and transforms back (``[winograd_fused]``).

    Its FLOPs are ``2 x 16 x N x ceil(H/2) x ceil(W/2) x C_in x C_out``: 16/36 of the direct
    convolution's. It reads its input once per ``channels_per_block`` slice of the output
    channels (grid z) unless the input fits in half the L2.
    """
    e = kernel_shapes()["winograd_fused"]
    kind = _PASS_OF[layer.op][1]
    eb = ctx.elem_B
    x_in, out = layer.inputs[0], layer.output
    n, cin = x_in[0], x_in[1]
    cout, h, w = out[1], out[2], out[3]
    tile2 = e["output_tile"]
    tiles = n * math.ceil(h / tile2) * math.ceil(w / tile2)
    transformed = e["points"] * cin * cout * eb
    z = math.ceil(cout / e["channels_per_block"])
    grid = (n * math.ceil(w / e["image_cols_per_block"]), math.ceil(h / e["rows_per_block"]), z)
    reads = operand_dram_B(numel(x_in) * eb, z, 1, ctx.gpu) + transformed
    return [
        make_kernel(layer, ctx, kind,
                    (math.ceil(cin / e["filter_k_per_block"]),
                 math.ceil(cout / e["filter_c_per_block"]), 1),
                    e["filter_threads"], e["filter_regs"], e["filter_smem_B"],
                    e["filter_flop_per_filter"] * cin * cout, cin * cout * 9 * eb + transformed,
                    "generateWinogradTilesKernel"),
        make_kernel(layer, ctx, kind, grid, e["threads"], e["regs"], e["smem_B"],
                    2.0 * e["points"] * tiles * cin * cout, reads + numel(out) * eb,
                    f"scudnn_winograd_128x128_tile148t{epilogue}"),
    ]


# ---------------------------------------------------------------------- wgrad engines
def wgrad_engine_variant(layer: Layer) -> str:
    """Which of cuDNN 7's 1x1 weight-gradient engines runs a pass: ``"alg1"``
    (``wgrad_alg1_engine``, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1) for output images of fewer
    than ``alg1_below_output_pixels`` pixels, else ``"alg0"`` (``wgrad_alg0_engine``,
    ALGO_0) (``kernels.toml`` ``[wgrad_engine]``)."""
    p, q = layer.inputs[0][2], layer.inputs[0][3]
    e = kernel_shapes()["wgrad_engine"]
    return "alg1" if p * q < e["alg1_below_output_pixels"] else "alg0"


def wgrad_engine_grid(layer: Layer) -> tuple[tuple[int, int, int], str, Mapping[str, Any]]:
    """The grid of cuDNN 7's wgrad engine for a 1x1 weight gradient, its variant and its
    launch entry (``kernels.toml`` ``[wgrad_engine]``).

    Each block computes a ``64 x k_tile`` tile of the ``C x K`` filter gradient (the
    template's ``6`` and ``7``/``8``: log2 of the tile sides) over one slice of the
    ``N x P x Q`` output-gradient pixels: grid ``(ceil(C/64), ceil(K/k_tile), slices)``.
    ALGO_0 (non-deterministic) adds its slices' partial sums with atomics; a slice is at
    most ``alg0_pixels_per_block`` pixels of one image (the template's last parameter,
    512): ``N x ceil(P*Q / 512)`` slices, its ``k_tile`` 128 for K <= 128, else 256.
    ALGO_1 (deterministic) uses ``k_tile`` 128 and ``ceil(N*P*Q / alg1_pixels_per_slice)``
    slices. RTX 2080 Ti trace (ResNet-18, N = 128): C=64, K=128, 28x28 -> alg0 (1, 1, 256);
    C=128, K=256, 14x14 -> alg0 (2, 1, 128); C=256, K=512, 7x7 -> alg1 (4, 4, 2).
    """
    e = kernel_shapes()["wgrad_engine"]
    n, k, p, q = layer.inputs[0]
    c = layer.inputs[1][1]
    variant = wgrad_engine_variant(layer)
    if variant == "alg0":
        launch = e["alg0_small_k"] if k <= e["alg0_small_k"]["k_tile"] else e["alg0_large_k"]
        slices = n * math.ceil(p * q / e["alg0_pixels_per_block"])
    else:
        launch = e["alg1"]
        slices = math.ceil(n * p * q / e["alg1_pixels_per_slice"])
    grid = (math.ceil(c / e["channels_per_block"]), math.ceil(k / launch["k_tile"]),
            max(1, slices))
    return grid, variant, launch


def wgrad_engine_kernel(layer: Layer, ctx: Context) -> KernelSpec:
    """cuDNN 7's weight-gradient engine for a 1x1 convolution (:func:`wgrad_engine_grid`):
    one kernel, no split-K reduction (ALGO_0's slices add atomically in L2, ALGO_1's in
    order); FLOPs those of its whole tiles (``2 x MACs`` with C and K rounded up to them);
    DRAM bytes the output gradient and the input at
    the resolution the filter reads (:func:`read_fraction`), each once, and the filter
    gradient written once. Family ``wgrad_engine``: the analytic model prices its math with
    its own fitted efficiency."""
    grid, variant, launch = wgrad_engine_grid(layer)
    e = kernel_shapes()["wgrad_engine"]
    shape = gemm_shape(layer, ctx.elem_B)
    name = {"alg0": "wgrad_alg0_engine", "alg1": "cudnn::cnn::wgrad_alg1_engine"}[variant]
    # A fixed-tile engine: every block computes its whole 64 x k_tile tile (partial tiles
    # at the C and K edges included) over its pixels.
    n, _, p, q = layer.inputs[0]
    flops = 2.0 * grid[0] * e["channels_per_block"] * grid[1] * launch["k_tile"] * n * p * q
    kernel = make_kernel(layer, ctx, KernelKind.CONV_WGRAD, grid, e["threads"], launch["regs"],
                         launch["smem_B"], flops,
                         shape.a_B + shape.b_B + shape.c_B,
                         f"{name}<{e['channels_per_block']}x{launch['k_tile']}>")
    return dataclasses.replace(kernel, family="wgrad_engine")


def _depthwise(layer: Layer, ctx: Context) -> KernelSpec:
    e = kernel_shapes()["depthwise"]
    kind = _PASS_OF[layer.op][1]
    dram = ctx.min_bytes(layer)
    if layer.op is OpType.CONV2D_WGRAD:
        taps = numel(layer.output)  # C x 1 x R x S weights, one block each
        return make_kernel(layer, ctx, kind, (taps, 1, 1), e["wgrad_threads"], e["regs"],
                           e["wgrad_smem_B"], 2.0 * layer.macs, dram,
                           "conv_depthwise2d_grad_weight_kernel")
    out = numel(layer.output)
    return make_kernel(layer, ctx, kind, _grid1(out, e["threads"]), e["threads"], e["regs"],
                       e["smem_B"], 2.0 * layer.macs, dram,
                       "conv_depthwise2d_forward_kernel" if layer.op is OpType.CONV2D
                       else "conv_depthwise2d_backward_kernel")


def _linear(layer: Layer, ctx: Context) -> list[KernelSpec]:
    kernels = gemm_kernels(layer, ctx, epilogue="+bias" if (
        layer.op is OpType.LINEAR and layer.bias) else "")
    if layer.op is OpType.LINEAR_WGRAD and layer.bias:
        kernels.append(_bias_grad(layer, ctx))
    return kernels


# ---------------------------------------------------------------------- normalisation
def _batchnorm(layer: Layer, ctx: Context) -> list[KernelSpec]:
    x = layer.inputs[0]
    channels = x[1]
    dram = ctx.min_bytes(layer)
    if not layer.training:
        e = kernel_shapes()["batchnorm_fwd_inference"]
        return [make_kernel(layer, ctx, KernelKind.NORMALIZATION,
                            _grid1(numel(x), e["threads"] * e["elems_per_thread"]), e["threads"],
                            e["regs"], e["smem_B"], layer.flops, dram, "bn_fw_inf_1C11")]
    # PyTorch bumps the int64 num_batches_tracked counter (8 B read, 8 B written) before
    # calling cuDNN.
    counter = elementwise_kernel(layer, ctx, 1, binary=True, flops=1, dram_B=16,
                                 label="add<long> (num_batches_tracked)")
    bn = _bn_kernel(layer, ctx, numel(x) // channels, channels, [numel(x)],
                    ("batchnorm_fwd_training", "bn_fw_tr_1C11_kernel_NCHW"),
                    ("batchnorm_fwd_singleread", "bn_fw_tr_1C11_singleread"))
    return [counter, bn]


def _batchnorm_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    x = layer.output
    channels = x[1]
    return [_bn_kernel(layer, ctx, numel(x) // channels, channels, [numel(x), numel(x)],
                       ("batchnorm_bwd", "bn_bw_1C11_kernel_new"),
                       ("batchnorm_bwd_singleread", "bn_bw_1C11_singleread"))]


def _bn_kernel(layer: Layer, ctx: Context, per_channel: int, channels: int,
               inputs: Sequence[int], two_pass: tuple[str, str],
               single_read: tuple[str, str]) -> KernelSpec:
    """cuDNN's training batch-norm kernel (one block per channel), forward or backward.

    The two-pass kernel reads its activation inputs (x forward; x and dy backward) twice,
    once for the per-channel reductions and once to normalise; when one channel's values fit
    in the 48 KiB of static shared memory cuDNN runs the single-read variant, which reads
    them once (``kernels.toml``: the traces' evidence). Bytes: the layer's minimum traffic
    plus the second read.
    """
    single = kernel_shapes()[single_read[0]]
    smem = per_channel * single["bytes_per_value"] + single["smem_overhead_B"]
    if smem <= kernel_shapes()["static_smem"]["limit_B"]:
        extra = (single["input_reads"] - 1) * sum(inputs) * ctx.elem_B
        return make_kernel(layer, ctx, KernelKind.NORMALIZATION, (channels, 1, 1),
                           single["threads"], single["regs"], smem, layer.flops,
                           ctx.min_bytes(layer) + extra, single_read[1])
    e = kernel_shapes()[two_pass[0]]
    extra = (e["input_reads"] - 1) * sum(inputs) * ctx.elem_B
    return make_kernel(layer, ctx, KernelKind.NORMALIZATION,
                       (channels * e["blocks_per_channel"], 1, 1), e["threads"], e["regs"],
                       e["smem_B"], layer.flops, ctx.min_bytes(layer) + extra, two_pass[1])


# ---------------------------------------------------------------------- elementwise
def _unary(label: str) -> Callable[[Layer, Context], list[KernelSpec]]:
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        return [elementwise_kernel(layer, ctx, numel(layer.output), binary=False, flops=layer.flops,
                                   dram_B=ctx.min_bytes(layer), label=label)]
    return rule


def _binary(label: str) -> Callable[[Layer, Context], list[KernelSpec]]:
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        return [elementwise_kernel(layer, ctx, numel(layer.output), binary=True, flops=layer.flops,
                                   dram_B=ctx.min_bytes(layer), label=label)]
    return rule


def _sum_of(label: str) -> Callable[[Layer, Context], list[KernelSpec]]:
    # k tensors are summed pairwise: k - 1 binary kernels, each reading 2 and writing 1.
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        out = numel(layer.output)
        count = max(1, len(layer.inputs) - 1)
        return [elementwise_kernel(layer, ctx, out, binary=True, flops=out,
                                   dram_B=3 * out * ctx.elem_B, label=label) for _ in range(count)]
    return rule


def _dropout(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["dropout"]
    n = numel(layer.output)
    cap = ctx.gpu.sm_count * (ctx.gpu.max_threads_per_sm // e["threads"])
    blocks = min(math.ceil(n / (e["threads"] * e["elems_per_thread"])), cap)
    return [_shaped(layer, ctx, "dropout", KernelKind.ELEMENTWISE, (max(1, blocks), 1, 1),
                    layer.flops, ctx.min_bytes(layer), "fused_dropout_kernel_vec")]


# ---------------------------------------------------------------------- pooling
def _pool(entry: str, label: str, *,
          zero_fill: bool = False) -> Callable[[Layer, Context], list[KernelSpec]]:
    # One thread per element the kernel writes: the pooled output forward, the input
    # gradient backward.
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        e = kernel_shapes()[entry]
        elements = numel(layer.output)
        kernels: list[KernelSpec] = []
        if zero_fill:  # the input gradient is zeroed before the scatter
            out = numel(layer.output)
            kernels.append(elementwise_kernel(layer, ctx, out, binary=False, flops=0,
                                              dram_B=out * ctx.elem_B, label="fill (zeros)"))
        kernels.append(_shaped(layer, ctx, entry, KernelKind.POOLING,
                               _grid1(elements, e["threads"] * e["elems_per_thread"]),
                               layer.flops, ctx.min_bytes(layer), label))
        return kernels
    return rule


def _adaptive_avgpool(layer: Layer, ctx: Context) -> list[KernelSpec]:
    n, c, oh, ow = layer.output
    if (oh, ow) == (1, 1):  # global average pool: a mean over H*W per (n, c)
        e = kernel_shapes()["reduce"]
        return [_shaped(layer, ctx, "reduce", KernelKind.POOLING,
                        _grid1(n * c, e["outputs_per_block"]), layer.flops,
                        ctx.min_bytes(layer), "reduce_kernel<mean>")]
    return _pool("avgpool", "adaptive_avg_pool2d")(layer, ctx)


def _adaptive_avgpool_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["elementwise_strided"]
    out = numel(layer.output)
    # Autograd's MeanBackward: an elementwise expand-and-divide kernel (aten::div in the
    # traces), not a pooling kernel.
    return [_shaped(layer, ctx, "elementwise_strided", KernelKind.ELEMENTWISE,
                    _grid1(out, e["threads"] * e["elems_per_thread"]), layer.flops,
                    ctx.min_bytes(layer), "elementwise_kernel<128, 2> (expand / divide)")]


# ---------------------------------------------------------------------- copy, loss
def _concat(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["concat"]
    largest = max(numel(s) for s in layer.inputs)
    x = min(math.ceil(largest / (e["threads"] * e["elems_per_thread"])),
            e["max_blocks_per_sm"] * ctx.gpu.sm_count)
    return [_shaped(layer, ctx, "concat", KernelKind.CONCAT_COPY,
                    (max(1, x), len(layer.inputs), 1), 0, ctx.min_bytes(layer),
                    "CatArrayBatchedCopy")]


def _rows(shape: tuple[int, ...]) -> int:
    return max(1, numel(shape) // shape[-1])


def _softmax(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["softmax_fwd"]
    return [_shaped(layer, ctx, "softmax_fwd", KernelKind.SOFTMAX_LOSS,
                    _grid1(_rows(layer.output), e["rows_per_block"]), layer.flops,
                    ctx.min_bytes(layer), "softmax_warp_forward")]


def _softmax_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["softmax_bwd"]
    return [_shaped(layer, ctx, "softmax_bwd", KernelKind.SOFTMAX_LOSS,
                    _grid1(_rows(layer.output), e["rows_per_block"]), layer.flops,
                    ctx.min_bytes(layer), "softmax_warp_backward")]


def _cross_entropy(layer: Layer, ctx: Context) -> list[KernelSpec]:
    logits = layer.inputs[0]
    n = numel(logits)
    fwd = kernel_shapes()["softmax_fwd"]
    log_softmax = _shaped(layer, ctx, "softmax_fwd", KernelKind.SOFTMAX_LOSS,
                          _grid1(_rows(logits), fwd["rows_per_block"]), 4.0 * n,
                          2 * n * ctx.elem_B, "softmax_warp_forward (log_softmax)")
    nll = _shaped(layer, ctx, "nll_loss", KernelKind.SOFTMAX_LOSS, (1, 1, 1), float(n),
                  logits[0] * (ctx.elem_B + 8), "nll_loss_forward_reduce_cuda_kernel_2d")
    return [log_softmax, nll]


def _cross_entropy_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    logits = layer.output
    n = numel(logits)
    fill = elementwise_kernel(layer, ctx, n, binary=False, flops=0, dram_B=n * ctx.elem_B,
                              label="fill (zeros)")
    nll = _shaped(layer, ctx, "nll_loss", KernelKind.SOFTMAX_LOSS, (1, 1, 1), float(logits[0]),
                  logits[0] * (ctx.elem_B + 8), "nll_loss_backward_reduce_cuda_kernel_2d")
    bwd = kernel_shapes()["softmax_bwd"]
    log_softmax = _shaped(layer, ctx, "softmax_bwd", KernelKind.SOFTMAX_LOSS,
                          _grid1(_rows(logits), bwd["rows_per_block"]), 2.0 * n,
                          3 * n * ctx.elem_B, "softmax_warp_backward (log_softmax)")
    return [fill, nll, log_softmax]


# ---------------------------------------------------------------------- optimizer
def multi_tensor_launches(tensor_elems: Sequence[int], depth: int) -> list[tuple[int, int]]:
    """``(blocks, elements)`` of each ``multi_tensor_apply`` launch over these tensors.

    PyTorch cuts each tensor into chunks of ``chunk_elems`` (one block each) and launches
    when a launch holds ``max_tensors[depth - 1]`` tensors or ``max_blocks`` chunks, or at
    the end; a tensor whose chunks straddle a launch continues in the next one.
    """
    e = kernel_shapes()["multi_tensor_apply"]
    chunk, max_blocks = e["chunk_elems"], e["max_blocks"]
    max_tensors = e["max_tensors"][depth - 1]
    launches: list[tuple[int, int]] = []
    tensors = blocks = elems = 0
    sizes = [t for t in tensor_elems if t > 0]
    for index, size in enumerate(sizes):
        tensors += 1
        chunks = math.ceil(size / chunk)
        for c in range(chunks):
            blocks += 1
            elems += min(chunk, size - c * chunk)
            last_chunk = c == chunks - 1
            if (tensors == max_tensors and last_chunk) or blocks == max_blocks or (
                    last_chunk and index == len(sizes) - 1):
                launches.append((blocks, elems))
                blocks = elems = 0
                tensors = 0 if last_chunk else 1
    return launches


#: Foreach passes of momentum SGD: (label, depth, reads/elem, writes/elem, FLOP/elem).
_FOREACH_SGD: tuple[tuple[str, int, int, int, int], ...] = (
    ("_foreach_mul_ (momentum_buffer *= momentum)", 1, 1, 1, 1),
    ("_foreach_add_ (momentum_buffer += grad)", 2, 2, 1, 1),
    ("_foreach_add_ (param -= lr * momentum_buffer)", 2, 2, 1, 2),
)


#: Out-of-place weight decay before foreach SGD: ``grads = grads + wd * params`` (depth 3:
#: grads, params and the new list), as torch.optim.SGD(foreach=True, weight_decay > 0) runs.
_FOREACH_WEIGHT_DECAY = ("_foreach_add (grad + weight_decay * param)", 3, 2, 1, 2)
#: Per-tensor SGD kernels of torch.optim.SGD(foreach=False) with momentum, after the
#: optional weight decay ``grad = grad.add(param, alpha=wd)``: (label, reads, writes, FLOP)
#: per element.
_SINGLE_TENSOR_WEIGHT_DECAY = ("add (grad + weight_decay * param)", 2, 1, 2)
_SINGLE_TENSOR_SGD: tuple[tuple[str, int, int, int], ...] = (
    ("mul_ (momentum_buffer *= momentum)", 1, 1, 1),
    ("add_ (momentum_buffer += grad)", 2, 1, 1),
    ("add_ (param -= lr * momentum_buffer)", 2, 1, 2),
)
#: How sgd_update ops can be lowered (see :func:`sgd_kernels`).
SGD_IMPLEMENTATIONS: tuple[str, ...] = ("graph", "foreach", "single_tensor")


def sgd_kernels(layer: Layer, ctx: Context, tensor_elems: Sequence[int], *,
                implementation: str = "graph", weight_decay: bool = False,
                ) -> list[KernelSpec]:
    """Momentum-SGD kernels over parameter tensors of these sizes (see the module doc).

    ``implementation``: ``"graph"`` follows the training graph's optimizer (a per-layer
    update is ``SGD(fused=True)``, the whole-model ``optimizer.step`` the foreach passes);
    ``"foreach"`` is ``torch.optim.SGD``'s default multi-tensor implementation for any
    update; ``"single_tensor"`` its ``foreach=False`` loop (the default before PyTorch 1.12):
    one elementwise kernel per tensor and pass. ``weight_decay`` adds the weight-decay pass
    (foreach and single-tensor only; the fused kernel folds it in).
    """
    if implementation not in SGD_IMPLEMENTATIONS:
        raise GpusimError(f"SGD implementation must be one of "
                          f"{', '.join(SGD_IMPLEMENTATIONS)} (got {implementation!r})")
    if implementation == "single_tensor":
        passes = ((_SINGLE_TENSOR_WEIGHT_DECAY,) if weight_decay else ()) + _SINGLE_TENSOR_SGD
        return [elementwise_kernel(layer, ctx, elems, binary=reads > 1, flops=flops * elems,
                                   dram_B=(reads + writes) * elems * ctx.elem_B, label=label,
                                   kind=KernelKind.OPTIMIZER)
                for elems in tensor_elems if elems > 0
                for label, reads, writes, flops in passes]
    e = kernel_shapes()["multi_tensor_apply"]
    foreach = implementation == "foreach" or layer.name == "optimizer.step"
    multi: tuple[tuple[str, int, int, int, int], ...] = (
        ((_FOREACH_WEIGHT_DECAY,) if weight_decay else ()) + _FOREACH_SGD if foreach
        else (("_fused_sgd_ (param, grad, momentum_buffer)", 3, 3, 2, 4),))
    kernels: list[KernelSpec] = []
    for label, depth, reads, writes, flops in multi:
        for blocks, elems in multi_tensor_launches(tensor_elems, depth):
            kernels.append(make_kernel(layer, ctx, KernelKind.OPTIMIZER, (blocks, 1, 1),
                                       e["threads"], e["regs"], e["smem_B"], flops * elems,
                                       (reads + writes) * elems * ctx.elem_B,
                                       f"multi_tensor_apply_kernel {label}"))
    return kernels


def param_tensors(layer: Layer) -> list[int]:
    """Element counts of a forward layer's parameter tensors (weight, bias, ...)."""
    if not layer.params:
        return []
    if layer.op is OpType.BATCHNORM:
        return [layer.params // 2, layer.params // 2]
    if layer.bias:
        return [layer.params - layer.out_channels, layer.out_channels]
    return [layer.params]


# ---------------------------------------------------------------------- dispatch
Rule = Callable[[Layer, Context], list[KernelSpec]]

RULES: dict[OpType, Rule] = {
    OpType.CONV2D: _conv,
    OpType.CONV2D_DGRAD: _conv,
    OpType.CONV2D_WGRAD: _conv,
    OpType.LINEAR: _linear,
    OpType.LINEAR_DGRAD: _linear,
    OpType.LINEAR_WGRAD: _linear,
    OpType.BATCHNORM: _batchnorm,
    OpType.BATCHNORM_BWD: _batchnorm_bwd,
    OpType.RELU: _unary("clamp_min (relu)"),
    OpType.RELU6: _unary("clamp (relu6)"),
    OpType.DROPOUT: _dropout,
    OpType.LRN: _binary("lrn"),
    OpType.ADD: _sum_of("add"),
    OpType.GRAD_ACCUMULATE: _sum_of("add (grad accumulate)"),
    OpType.RELU_BWD: _binary("threshold_backward"),
    OpType.RELU6_BWD: _binary("hardtanh_backward"),
    OpType.DROPOUT_BWD: _binary("masked_scale (dropout backward)"),
    OpType.LRN_BWD: _binary("lrn_backward"),
    OpType.MAXPOOL: _pool("maxpool_fwd", "max_pool_forward_nchw"),
    OpType.MAXPOOL_BWD: _pool("maxpool_bwd", "max_pool_backward_nchw", zero_fill=True),
    OpType.AVGPOOL: _pool("avgpool", "avg_pool2d_out_cuda_frame"),
    OpType.AVGPOOL_BWD: _pool("avgpool", "avg_pool2d_backward_out_cuda_frame"),
    OpType.ADAPTIVE_AVGPOOL: _adaptive_avgpool,
    OpType.ADAPTIVE_AVGPOOL_BWD: _adaptive_avgpool_bwd,
    OpType.CONCAT: _concat,
    OpType.SOFTMAX: _softmax,
    OpType.SOFTMAX_BWD: _softmax_bwd,
    OpType.CROSS_ENTROPY: _cross_entropy,
    OpType.CROSS_ENTROPY_BWD: _cross_entropy_bwd,
}


def lower_layer(layer: Layer, gpu: GPUSpec, *, precision: str = "fp32",
                layout: str = "nchw", tensor_elems: Sequence[int] | None = None,
                epilogue: str = "", conv_algorithm: str = "") -> list[KernelSpec]:
    """The kernels one layer launches, named ``<layer>`` (one) or ``<layer>#<i>`` (several).

    ``layout``: ``"nchw"`` (PyTorch's default) or ``"nhwc"`` (channels_last).
    ``tensor_elems``: parameter tensor sizes an ``sgd_update`` covers (default: one tensor
    per input shape). ``epilogue``: for a forward conv, the ops fused into its epilogue
    (``"+bn+relu"``); its bias then needs no separate kernel. ``conv_algorithm``: for a
    convolution pass, one of :func:`conv_algorithm_candidates` instead of the rules' choice
    (an error if it is not one of them); ignored for other layers. View ops give ``[]``.
    """
    check_options(precision, layout)
    if conv_algorithm and conv_algorithm not in ALGORITHMS:
        raise GpusimError(f"unknown conv_algorithm {conv_algorithm!r}; expected one of "
                          f"{', '.join(ALGORITHMS)}")
    warn_math_fallback(gpu, precision)
    return layer_kernels(layer, Context(gpu, precision, layout, conv_algorithm),
                         tensor_elems=tensor_elems, epilogue=epilogue)


def layer_kernels(layer: Layer, ctx: Context, *, tensor_elems: Sequence[int] | None = None,
                  epilogue: str = "") -> list[KernelSpec]:
    """:func:`lower_layer` with a (validated) :class:`Context`."""
    if layer.is_view:
        return []
    if layer.op is OpType.SGD_UPDATE:
        sizes = tensor_elems if tensor_elems is not None else [numel(s) for s in layer.inputs]
        kernels = sgd_kernels(layer, ctx, sizes)
    elif layer.op is OpType.CONV2D and epilogue:
        kernels = _conv(layer, ctx, epilogue)
    else:
        rule = RULES.get(layer.op)
        if rule is None:
            raise GpusimError(f"layer {layer.name!r}: no lowering rule for op "
                              f"{layer.op.value!r}")
        kernels = rule(layer, ctx)
    return name_kernels(layer.name, kernels)


def name_kernels(layer_name: str, kernels: Sequence[KernelSpec]) -> list[KernelSpec]:
    """The kernels of one layer named ``<layer>`` (one) or ``<layer>#<i>`` (several)."""
    if len(kernels) == 1:
        return [dataclasses.replace(kernels[0], name=layer_name)]
    return [dataclasses.replace(k, name=f"{layer_name}#{i}") for i, k in enumerate(kernels)]


# ---------------------------------------------------------------------- single layers
#: Convolution passes :func:`conv_layer` builds.
CONV_PASSES: tuple[str, ...] = ("fwd", "dgrad", "wgrad")


def conv_layer(
    batch: int, in_chw: tuple[int, int, int], out_channels: int, kernel: tuple[int, int], *,
    stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0), groups: int = 1,
    pass_: str = "fwd", dtype: str = "fp32", name: str = "conv",
) -> Layer:
    """A stand-alone conv layer (or its data/weight gradient), as a training graph has it."""
    if pass_ not in CONV_PASSES:
        raise GpusimError(f"layer {name!r}: conv pass must be one of {', '.join(CONV_PASSES)} "
                          f"(got {pass_!r})")
    # Checked here so that errors name the layer (the builder would name a "workload").
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise GpusimError(f"layer {name!r}: batch must be a positive int, got {batch!r}")
    if len(in_chw) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                               for v in in_chw):
        raise GpusimError(f"layer {name!r}: input C,H,W must be three positive ints, "
                          f"got {in_chw!r}")
    builder = GraphBuilder(name, batch=batch, dtype=dtype)
    x = builder.input((batch, *in_chw))
    builder.conv2d(x, out_channels, kernel, stride=stride, padding=padding, groups=groups,
                   name=name)
    fwd: Layer = builder.graph.nodes[name]["layer"]
    if pass_ == "fwd":
        return fwd
    y, xs, d = fwd.output, fwd.inputs[0], fwd.dtype_bytes
    common: dict[str, Any] = {
        "kernel": fwd.kernel, "stride": fwd.stride, "padding": fwd.padding,
        "dilation": fwd.dilation, "groups": groups, "dtype": dtype, "phase": "backward",
        "forward_of": name, "params": fwd.params, "macs": fwd.macs, "flops": 2 * fwd.macs,
    }
    if pass_ == "dgrad":
        return Layer(name=f"{name}.dgrad", op=OpType.CONV2D_DGRAD, inputs=(y,), output=xs,
                     bytes_read=(numel(y) + fwd.params) * d, bytes_written=numel(xs) * d,
                     **common)
    w_shape = (out_channels, xs[1] // groups, *fwd.kernel)
    return Layer(name=f"{name}.wgrad", op=OpType.CONV2D_WGRAD, inputs=(y, xs), output=w_shape,
                 bytes_read=(numel(y) + numel(xs)) * d, bytes_written=fwd.params * d, **common)


def gemm_layer(m: int, n: int, k: int, *, dtype: str = "fp32", name: str = "gemm") -> Layer:
    """A stand-alone ``M x N x K`` matrix product as a bias-free linear layer (M = batch)."""
    if min(m, n, k) < 1:
        raise GpusimError(f"layer {name!r}: GEMM shape must be positive (got M={m}, N={n}, "
                          f"K={k})")
    d = DTYPE_BYTES.get(dtype, 4)
    return Layer(name=name, op=OpType.LINEAR, inputs=((m, k),), output=(m, n), dtype=dtype,
                 params=n * k, macs=m * n * k, flops=2 * m * n * k,
                 bytes_read=(m * k + n * k) * d, bytes_written=m * n * d)


# ---------------------------------------------------------------------- imported networks
# Rules of the ops that imported networks add (SiLU, Hardswish, GELU, sigmoid, Hardsigmoid,
# mul, layer norm, mean, contiguous, slice, stochastic depth) and linear layers on inputs of
# any rank. Kept apart from the rules above, which they only extend:
#
# - activations: ATen's vectorised unary kernel; their backward a binary one (gradient and
#   the saved input or output);
# - mul: a binary elementwise kernel, or ATen's strided one where an operand is broadcast;
#   its backward: the product, then a sum reduction over the broadcast dims where the input
#   was broadcast (and, with a learned operand, a product and a reduction for its
#   gradient);
# - layernorm: one block per row (``[layernorm]`` in kernels.toml); backward: the input
#   gradient (same shape) and a column reduction for the scale and shift gradients;
# - mean: a mean reduction (as the global average pool); backward: expand and divide;
# - contiguous: ATen's strided copy; slice backward: a zero fill, then a strided copy into
#   the slice; stochastic depth (training): Bernoulli noise per sample, its scaling, and a
#   broadcast product; backward: the broadcast product;
# - linear on ``(N, ..., F)``: the GEMM of the rows folded into one dim, as
#   ``torch.matmul`` does (a view of a dense tensor).
def _strided(layer: Layer, ctx: Context, elements: int, flops: float, dram_B: float,
             label: str, kind: KernelKind = KernelKind.ELEMENTWISE) -> KernelSpec:
    e = kernel_shapes()["elementwise_strided"]
    return _shaped(layer, ctx, "elementwise_strided", kind,
                   _grid1(elements, e["threads"] * e["elems_per_thread"]), flops, dram_B,
                   f"elementwise_kernel<128, 2> ({label})")


def _reduction(layer: Layer, ctx: Context, outputs: int, inputs: int, label: str,
               kind: KernelKind = KernelKind.REDUCTION) -> KernelSpec:
    e = kernel_shapes()["reduce"]
    return _shaped(layer, ctx, "reduce", kind, _grid1(outputs, e["outputs_per_block"]),
                   float(inputs), (inputs + outputs) * ctx.elem_B, f"reduce_kernel<{label}>")


def _mul(layer: Layer, ctx: Context) -> list[KernelSpec]:
    out = numel(layer.output)
    if all(shape == layer.output for shape in layer.inputs) and not layer.attrs:
        return _binary("mul")(layer, ctx)
    return [_strided(layer, ctx, out, layer.flops, ctx.min_bytes(layer), "mul, broadcast")]


def _mul_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    grad = layer.inputs[0]
    g, x = numel(grad), numel(layer.output)
    e = ctx.elem_B
    other = (numel(layer.attrs) if layer.params else
             max((numel(s) for s in layer.inputs[1:]), default=g))
    kernels: list[KernelSpec]
    if x == g:
        kernels = [_strided(layer, ctx, g, g, (2 * g + other) * e, "mul (grad)")]
    else:  # input was broadcast: the product, then its sum over the broadcast dims
        kernels = [_strided(layer, ctx, g, g, (2 * g + other) * e, "mul (grad)"),
                   _reduction(layer, ctx, x, g, "sum (broadcast grad)")]
    if layer.params:  # the learned operand's gradient: grad x saved input, summed
        kernels += [_binary("mul (weight grad)")(dataclasses.replace(
                        layer, flops=g, bytes_read=2 * g * layer.dtype_bytes,
                        bytes_written=g * layer.dtype_bytes), ctx)[0],
                    _reduction(layer, ctx, layer.params, g, "sum (weight grad)")]
    return kernels


def _layernorm(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["layernorm"]
    rows = _rows(layer.output)
    return [_shaped(layer, ctx, "layernorm", KernelKind.NORMALIZATION,
                    _grid1(rows, e["rows_per_block"]), layer.flops, ctx.min_bytes(layer),
                    "vectorized_layer_norm_kernel")]


def _layernorm_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["layernorm"]
    y = layer.inputs[0]
    rows, n = _rows(y), numel(y)
    dx = _shaped(layer, ctx, "layernorm", KernelKind.NORMALIZATION,
                 _grid1(rows, e["rows_per_block"]), layer.flops,
                 ctx.min_bytes(layer) - layer.params * 2 * ctx.elem_B,
                 "layer_norm_grad_input_kernel")
    if not layer.params:
        return [dx]
    # d(scale), d(shift): grad and saved input summed over the rows, per feature
    gamma_beta = _reduction(layer, ctx, layer.params, 2 * n, "sum (GammaBetaBackward)",
                            KernelKind.NORMALIZATION)
    return [dx, gamma_beta]


def _mean(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["reduce"]
    return [_shaped(layer, ctx, "reduce", KernelKind.POOLING,
                    _grid1(numel(layer.output), e["outputs_per_block"]), layer.flops,
                    ctx.min_bytes(layer), "reduce_kernel<mean>")]


def _mean_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    out = numel(layer.output)
    return [_strided(layer, ctx, out, layer.flops, ctx.min_bytes(layer), "expand / divide",
                     KernelKind.POOLING)]


def _contiguous(layer: Layer, ctx: Context) -> list[KernelSpec]:
    return [_strided(layer, ctx, numel(layer.output), 0.0, ctx.min_bytes(layer),
                     "copy_, strided to dense", KernelKind.CONCAT_COPY)]


def _slice_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    whole, part = numel(layer.output), numel(layer.inputs[0])
    fill = elementwise_kernel(layer, ctx, whole, binary=False, flops=0,
                              dram_B=whole * ctx.elem_B, label="fill (zeros)")
    copy = _strided(layer, ctx, part, 0.0, 2 * part * ctx.elem_B, "copy_ into the slice",
                    KernelKind.CONCAT_COPY)
    return [fill, copy]


def _stochastic_depth(layer: Layer, ctx: Context) -> list[KernelSpec]:
    samples = layer.output[0]
    noise = elementwise_kernel(layer, ctx, samples, binary=False, flops=samples,
                               dram_B=samples * ctx.elem_B, label="bernoulli_ (noise)")
    scale = elementwise_kernel(layer, ctx, samples, binary=False, flops=samples,
                               dram_B=2 * samples * ctx.elem_B, label="div_ (noise / survival)")
    out = numel(layer.output)
    apply = _strided(layer, ctx, out, layer.flops, ctx.min_bytes(layer) + samples * ctx.elem_B,
                     "mul, broadcast (noise)")
    return [noise, scale, apply]


def _stochastic_depth_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    return [_strided(layer, ctx, numel(layer.output), layer.flops, ctx.min_bytes(layer),
                     "mul, broadcast (noise)")]


def _rows_folded(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if len(shape) <= 2 else (numel(shape[:-1]), shape[-1])


def _linear_rows(layer: Layer, ctx: Context) -> list[KernelSpec]:
    """A linear layer (or gradient) on ``(N, ..., F)``: the GEMM of its folded rows."""
    if all(len(s) <= 2 for s in (*layer.inputs, layer.output)):
        return _linear(layer, ctx)
    folded = dataclasses.replace(layer, inputs=tuple(_rows_folded(s) for s in layer.inputs),
                                 output=_rows_folded(layer.output))
    return _linear(folded, ctx)


RULES.update({
    OpType.LINEAR: _linear_rows,
    OpType.LINEAR_DGRAD: _linear_rows,
    OpType.LINEAR_WGRAD: _linear_rows,
    OpType.SILU: _unary("silu"),
    OpType.HARDSWISH: _unary("hardswish"),
    OpType.GELU: _unary("gelu (erf)"),
    OpType.SIGMOID: _unary("sigmoid"),
    OpType.HARDSIGMOID: _unary("hardsigmoid"),
    OpType.SILU_BWD: _binary("silu_backward"),
    OpType.HARDSWISH_BWD: _binary("hardswish_backward"),
    OpType.GELU_BWD: _binary("gelu_backward"),
    OpType.SIGMOID_BWD: _binary("sigmoid_backward"),
    OpType.HARDSIGMOID_BWD: _binary("hardsigmoid_backward"),
    OpType.MUL: _mul,
    OpType.MUL_BWD: _mul_bwd,
    OpType.LAYERNORM: _layernorm,
    OpType.LAYERNORM_BWD: _layernorm_bwd,
    OpType.MEAN: _mean,
    OpType.MEAN_BWD: _mean_bwd,
    OpType.CONTIGUOUS: _contiguous,
    OpType.SLICE_BWD: _slice_bwd,
    OpType.STOCHASTIC_DEPTH: _stochastic_depth,
    OpType.STOCHASTIC_DEPTH_BWD: _stochastic_depth_bwd,
})
