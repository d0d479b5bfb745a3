"""Per-op lowering rules: one :class:`~workloads.layers.Layer` -> the kernels a library launches.

What each op becomes (eager PyTorch on cuDNN/cuBLAS; launch shapes from
``workloads/lowering/data/kernels.toml``, GEMM tiles from :mod:`workloads.lowering.tiles`):

- ``conv2d`` / ``conv2d_dgrad`` / ``conv2d_wgrad``: one implicit-GEMM kernel per pass,
  shapes (per group, ``g`` groups in grid z):

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

FLOPs are the useful FLOPs (``2 x MACs`` for GEMMs; the layer's elementwise estimate
otherwise): the padding waste of partial tiles is not counted (a cost model can derive it
from grid x tile). DRAM bytes of a GEMM kernel are tile-reuse aware: each operand is read
once when it fits in half the L2 (blocks re-reading it hit L2), else once per tile column
(A) or tile row (B); the output is written once (split-K: ``split`` fp32 partial tiles,
which the reduction kernel reads back). Never less than the layer's minimum traffic. Other
kernels move the layer's minimum bytes, rescaled from the graph's dtype to the precision's.
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
from gpu_models.spec import PRECISIONS, GPUSpec
from workloads.graph import GraphBuilder
from workloads.layers import DTYPE_BYTES, Layer, OpType, numel
from workloads.lowering.tiles import check_precision, data_dir, math_for, select_tile

#: Bytes per element each precision stores activations and weights in: the storage dtype's
#: (:data:`workloads.layers.DTYPE_BYTES`); tf32 is a math mode on fp32 tensors.
STORAGE_BYTES: Mapping[str, int] = MappingProxyType(
    {p: DTYPE_BYTES["fp32" if p == "tf32" else p] for p in PRECISIONS})
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


def gemm_shape(layer: Layer, elem_B: int = 4) -> GemmShape:
    """The GEMM a conv/linear layer (or its dgrad/wgrad) computes, per group."""
    g = layer.groups
    r, s = layer.kernel
    op = layer.op
    if op is OpType.CONV2D:
        x, y = layer.inputs[0], layer.output
        n, c, _, _ = x
        _, k, p, q = y
        w = k * (c // g) * r * s
        return GemmShape(n * p * q, k // g, c // g * r * s, g,
                         numel(x) * elem_B, w * elem_B, numel(y) * elem_B)
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
                         numel(y) * elem_B, numel(x) * elem_B, numel(layer.output) * elem_B)
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


def _kernel(layer: Layer, ctx: Context, kind: KernelKind, grid: tuple[int, int, int],
            threads: int, regs: int, smem_B: int, flops: float, dram_B: float,
            library_name: str, *, tensor_cores: bool = False) -> KernelSpec:
    # Math runs in the requested precision only on tensor cores; CUDA-core kernels compute
    # in the storage type (a tf32 request is fp32 there).
    return KernelSpec(
        name=layer.name, kind=kind, grid=grid, threads=threads, regs_per_thread=regs,
        smem_per_block_B=smem_B, flops=float(flops), dram_bytes=float(dram_B),
        dtype=ctx.precision if tensor_cores else ctx.storage, tensor_cores=tensor_cores,
        layer=layer.name, library_name=library_name,
    )


def _grid1(elements: int, per_block: int) -> tuple[int, int, int]:
    return (max(1, math.ceil(elements / per_block)), 1, 1)


def _elementwise(layer: Layer, ctx: Context, elements: int, *, binary: bool, flops: float,
                 dram_B: float, label: str, kind: KernelKind = KernelKind.ELEMENTWISE,
                 ) -> KernelSpec:
    e = kernel_shapes()["elementwise"]
    regs = e["regs_binary"] if binary else e["regs_unary"]
    return _kernel(layer, ctx, kind, _grid1(elements, e["threads"] * e["elems_per_thread"]),
                   e["threads"], regs, e["smem_B"], flops, dram_B,
                   f"vectorized_elementwise_kernel<4, {label}>")


def _shaped(layer: Layer, ctx: Context, entry: str, kind: KernelKind,
            grid: tuple[int, int, int], flops: float, dram_B: float, label: str,
            ) -> KernelSpec:
    e = kernel_shapes()[entry]
    return _kernel(layer, ctx, kind, grid, e["threads"], e["regs"], e["smem_B"], flops,
                   dram_B, label)


# ---------------------------------------------------------------------- GEMMs
def _operand_reads(bytes_: float, reuse: int, gpu: GPUSpec) -> float:
    # Blocks re-reading an operand that fits in (half) the L2 hit it there; a larger one is
    # streamed from DRAM again for every tile row/column that needs it.
    return bytes_ if bytes_ <= gpu.l2_B / 2 else bytes_ * reuse


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


def gemm_kernels(layer: Layer, ctx: Context, *, epilogue: str = "") -> list[KernelSpec]:
    """The GEMM kernel of a conv/linear layer (+ split-K reduction), tile chosen per arch."""
    pass_, kind = _PASS_OF[layer.op]
    work = gemm_shape(layer, ctx.elem_B)
    shape = work
    math_ = math_for(ctx.gpu, ctx.precision)
    if math_ != "simt" and not _tensor_aligned(layer, ctx.elem_B):
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
    tile = choice.tile
    tensor = "simt" not in tile.math
    flops = 2.0 * work.m * work.n * work.k * work.groups
    split = choice.split_k
    partial_B = float(split * shape.m * shape.n * shape.groups * _PARTIAL_B)
    reads = (_operand_reads(shape.a_B, choice.tiles_n, ctx.gpu)
             + _operand_reads(shape.b_B, choice.tiles_m, ctx.gpu))
    minimum = ctx.min_bytes(layer)
    label = f"{tile.name}{epilogue}" + (f" splitK{split}" if split > 1 else "")
    grid = (choice.tiles_m, choice.tiles_n, split * shape.groups)  # groups/images in z
    if split == 1:
        main = _kernel(layer, ctx, kind, grid, tile.threads, tile.regs, tile.smem_B, flops,
                       max(reads + shape.c_B, minimum), label,
                       tensor_cores=tensor)
        return [main]
    main = _kernel(layer, ctx, kind, grid, tile.threads, tile.regs, tile.smem_B, flops,
                   max(reads + partial_B, shape.a_B + shape.b_B), label,
                   tensor_cores=tensor)
    outputs = shape.m * shape.n * shape.groups
    e = kernel_shapes()["splitk_reduce"]
    reduce = _kernel(layer, ctx, KernelKind.REDUCTION,
                     _grid1(outputs, e["threads"] * e["elems_per_thread"]), e["threads"],
                     e["regs"], e["smem_B"], float((split - 1) * outputs),
                     partial_B + shape.c_B, "splitk_reduce")
    return [main, reduce]


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
    return _kernel(layer, ctx, KernelKind.CONCAT_COPY,
                   (math.ceil(hw / tile), math.ceil(c / tile), n), e["threads"], e["regs"],
                   e["smem_B"], 0.0, 2.0 * n * c * hw * ctx.elem_B, label)


def _layout_transposes(layer: Layer, ctx: Context) -> tuple[list[KernelSpec], list[KernelSpec]]:
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
    # cuDNN's tensor-op fprop kernels write NCHW themselves (`..._nhwckrsc_nchw`); dgrad and
    # wgrad results come back through a transpose.
    after: list[KernelSpec] = []
    if layer.op is OpType.CONV2D_DGRAD:
        after = [_transpose(layer, ctx, chw(layer.output), "nhwcToNchwKernel")]
    elif layer.op is OpType.CONV2D_WGRAD:
        k, c_g, _, _ = layer.output
        after = [_transpose(layer, ctx, (k, c_g, r * s), "nhwcToNchwKernel")]
    return before, after


def _conv(layer: Layer, ctx: Context, epilogue: str = "") -> list[KernelSpec]:
    if is_depthwise(layer):
        return [_depthwise(layer, ctx)]
    kernels = gemm_kernels(layer, ctx, epilogue=epilogue)
    if ctx.layout == "nchw" and kernels[0].tensor_cores and not _is_pointwise_conv(layer):
        # Tensor-op implicit-GEMM kernels read NHWC: on PyTorch's default NCHW tensors cuDNN
        # transposes their operands first (and dgrad/wgrad results back).
        before, after = _layout_transposes(layer, ctx)
        kernels = [*before, *kernels, *after]
    if layer.op is OpType.CONV2D and layer.bias and not epilogue:
        out = numel(layer.output)
        kernels.append(_elementwise(layer, ctx, out, binary=True, flops=out,
                                    dram_B=(2 * out + layer.out_channels) * ctx.elem_B,
                                    label="add (conv bias)"))
    if layer.op is OpType.CONV2D_WGRAD and layer.bias:
        kernels.append(_bias_grad(layer, ctx))
    return kernels


def _depthwise(layer: Layer, ctx: Context) -> KernelSpec:
    e = kernel_shapes()["depthwise"]
    kind = _PASS_OF[layer.op][1]
    dram = ctx.min_bytes(layer)
    if layer.op is OpType.CONV2D_WGRAD:
        taps = numel(layer.output)  # C x 1 x R x S weights, one block each
        return _kernel(layer, ctx, kind, (taps, 1, 1), e["wgrad_threads"], e["regs"],
                       e["wgrad_smem_B"], 2.0 * layer.macs, dram,
                       "conv_depthwise2d_grad_weight_kernel")
    out = numel(layer.output)
    return _kernel(layer, ctx, kind, _grid1(out, e["threads"]), e["threads"], e["regs"],
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
        return [_kernel(layer, ctx, KernelKind.NORMALIZATION,
                        _grid1(numel(x), e["threads"] * e["elems_per_thread"]), e["threads"],
                        e["regs"], e["smem_B"], layer.flops, dram, "bn_fw_inf_1C11")]
    # PyTorch bumps the int64 num_batches_tracked counter (8 B read, 8 B written) before
    # calling cuDNN.
    counter = _elementwise(layer, ctx, 1, binary=True, flops=1, dram_B=16,
                           label="add<long> (num_batches_tracked)")
    e = kernel_shapes()["batchnorm_fwd_training"]
    bn = _kernel(layer, ctx, KernelKind.NORMALIZATION,
                 (channels * e["blocks_per_channel"], 1, 1), e["threads"], e["regs"],
                 e["smem_B"], layer.flops, dram, "bn_fw_tr_1C11")
    return [counter, bn]


def _batchnorm_bwd(layer: Layer, ctx: Context) -> list[KernelSpec]:
    e = kernel_shapes()["batchnorm_bwd"]
    channels = layer.output[1]
    return [_kernel(layer, ctx, KernelKind.NORMALIZATION,
                    (channels * e["blocks_per_channel"], 1, 1), e["threads"], e["regs"],
                    e["smem_B"], layer.flops, ctx.min_bytes(layer), "bn_bw_1C11")]


# ---------------------------------------------------------------------- elementwise
def _unary(label: str) -> Callable[[Layer, Context], list[KernelSpec]]:
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        return [_elementwise(layer, ctx, numel(layer.output), binary=False, flops=layer.flops,
                             dram_B=ctx.min_bytes(layer), label=label)]
    return rule


def _binary(label: str) -> Callable[[Layer, Context], list[KernelSpec]]:
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        return [_elementwise(layer, ctx, numel(layer.output), binary=True, flops=layer.flops,
                             dram_B=ctx.min_bytes(layer), label=label)]
    return rule


def _sum_of(label: str) -> Callable[[Layer, Context], list[KernelSpec]]:
    # k tensors are summed pairwise: k - 1 binary kernels, each reading 2 and writing 1.
    def rule(layer: Layer, ctx: Context) -> list[KernelSpec]:
        out = numel(layer.output)
        count = max(1, len(layer.inputs) - 1)
        return [_elementwise(layer, ctx, out, binary=True, flops=out,
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
            kernels.append(_elementwise(layer, ctx, out, binary=False, flops=0,
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
    return [_shaped(layer, ctx, "elementwise_strided", KernelKind.POOLING,
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
    fill = _elementwise(layer, ctx, n, binary=False, flops=0, dram_B=n * ctx.elem_B,
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


def sgd_kernels(layer: Layer, ctx: Context, tensor_elems: Sequence[int]) -> list[KernelSpec]:
    """Momentum-SGD kernels over parameter tensors of these sizes (see the module doc)."""
    e = kernel_shapes()["multi_tensor_apply"]
    passes = (_FOREACH_SGD if layer.name == "optimizer.step"
              else (("_fused_sgd_ (param, grad, momentum_buffer)", 3, 3, 2, 4),))
    kernels: list[KernelSpec] = []
    for label, depth, reads, writes, flops in passes:
        for blocks, elems in multi_tensor_launches(tensor_elems, depth):
            kernels.append(_kernel(layer, ctx, KernelKind.OPTIMIZER, (blocks, 1, 1),
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
                epilogue: str = "") -> list[KernelSpec]:
    """The kernels one layer launches, named ``<layer>`` (one) or ``<layer>#<i>`` (several).

    ``layout``: ``"nchw"`` (PyTorch's default) or ``"nhwc"`` (channels_last).
    ``tensor_elems``: parameter tensor sizes an ``sgd_update`` covers (default: one tensor
    per input shape). ``epilogue``: for a forward conv, the ops fused into its epilogue
    (``"+bn+relu"``); its bias then needs no separate kernel. View ops give ``[]``.
    """
    check_options(precision, layout)
    warn_math_fallback(gpu, precision)
    return layer_kernels(layer, Context(gpu, precision, layout), tensor_elems=tensor_elems,
                         epilogue=epilogue)


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
    if len(kernels) == 1:
        return kernels
    return [_renamed(k, f"{layer.name}#{i}") for i, k in enumerate(kernels)]


def _renamed(kernel: KernelSpec, name: str) -> KernelSpec:
    return dataclasses.replace(kernel, name=name)


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
