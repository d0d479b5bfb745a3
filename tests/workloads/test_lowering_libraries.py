"""Lowering launches what the libraries launch (issue 15): work counts, cuDNN's algorithm
choice, split-K for waves, batch norm's reads and the framework's own kernels.

Expected grids below are the ones the public RTX 2080 Ti ResNet-18 b128 and A100 ResNet-50
b32 profiler traces recorded (shared/reference/traces), or worked out by hand from the rules.
"""

from __future__ import annotations

import math
from collections import Counter

import networkx as nx
import pytest

from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.presets import load_preset
from gpu_models.spec import GPUSpec
from workloads import build
from workloads.layers import Layer
from workloads.lowering import (
    conv_algorithm_candidates,
    conv_layer,
    gemm_layer,
    gemm_shape,
    lower,
    lower_layer,
    select_tile,
)
from workloads.lowering.algorithms import AlgorithmRule, choose_algorithm
from workloads.lowering.ops import operand_dram_B, read_fraction
from workloads.lowering.tiles import load_table, split_for_waves


@pytest.fixture
def rtx() -> GPUSpec:
    return load_preset("rtx-2080ti")


# ---------------------------------------------------------------------- work counts
def test_strided_dgrad_flops_agree_with_layer_macs(a100: GPUSpec) -> None:
    # 1x1 stride-2 downsample, 256 -> 512 channels, 56x56 -> 28x28, batch 8: MACs =
    # 8 * 28 * 28 * 512 * 256. The dgrad's implicit GEMM runs over all 8 * 56 * 56 input
    # pixels (4x the output's), but only a quarter of its taps are non-zero.
    macs = 8 * 28 * 28 * 512 * 256
    for pass_ in ("fwd", "dgrad", "wgrad"):
        layer = conv_layer(8, (256, 56, 56), 512, (1, 1), stride=(2, 2), pass_=pass_)
        assert layer.macs == macs
        main = max(lower_layer(layer, a100, precision="tf32"), key=lambda k: k.flops)
        assert main.flops == 2 * macs, pass_


def test_strided_inputs_are_counted_at_the_resolution_read() -> None:
    one_by_one = conv_layer(8, (256, 56, 56), 512, (1, 1), stride=(2, 2))
    assert read_fraction(one_by_one) == 0.25  # 28 of 56 rows, 28 of 56 columns
    three = conv_layer(8, (64, 56, 56), 128, (3, 3), stride=(2, 2), padding=(1, 1))
    assert read_fraction(three) == 1.0  # 3 >= 2: every row is read
    assert gemm_shape(one_by_one, 4).a_B == 8 * 256 * 56 * 56 * 4 / 4
    wgrad = conv_layer(8, (256, 56, 56), 512, (1, 1), stride=(2, 2), pass_="wgrad")
    assert gemm_shape(wgrad, 4).b_B == 8 * 256 * 28 * 28 * 4
    # The data gradient writes every input pixel (cuDNN writes the zeros too).
    dgrad = conv_layer(8, (256, 56, 56), 512, (1, 1), stride=(2, 2), pass_="dgrad")
    assert gemm_shape(dgrad, 4).c_B == 8 * 256 * 56 * 56 * 4


def test_operand_rereads_are_judged_per_wave(a100: GPUSpec) -> None:
    half_l2 = a100.l2_B / 2
    assert operand_dram_B(half_l2, uses=8, concurrent_uses=1, gpu=a100) == half_l2
    big = 3 * a100.l2_B
    # Too big for the L2: read again by each group of concurrent users...
    assert operand_dram_B(big, uses=8, concurrent_uses=3, gpu=a100) == big * 3
    # ...once when one wave holds all of them.
    assert operand_dram_B(big, uses=8, concurrent_uses=8, gpu=a100) == big


def test_a_large_gemm_reads_its_operands_once_per_wave_column(h100: GPUSpec) -> None:
    # 16384^3 bf16: A and B are 512 MiB each, far beyond the L2. The 128x256 tile gives
    # 128 x 64 tiles, one block per SM: a wave of 132 blocks covers all 128 tile rows and
    # ceil(132 / 128) = 2 tile columns. A is read ceil(64 / 2) = 32 times, B
    # ceil(128 / 128) = once; C (512 MiB) is written once.
    n = 16384
    kernel, = lower_layer(gemm_layer(n, n, n, dtype="bf16"), h100, precision="bf16")
    a_B = b_B = n * n * 2
    assert kernel.grid == (128, 64, 1)
    assert kernel.dram_bytes == 32 * a_B + b_B + n * n * 2


# ---------------------------------------------------------------------- batch norm
def _bn(gpu: GPUSpec, batch: int, channels: int, hw: int, *, backward: bool,
        ) -> tuple[Layer, KernelSpec]:
    graph = build("resnet18", batch=batch, phase="training")
    name = next(n for n, d in graph.nodes(data=True)
                if d["layer"].op.value == ("batchnorm_bwd" if backward else "batchnorm")
                and d["layer"].inputs[0][1:] == (channels, hw, hw))
    layer = graph.nodes[name]["layer"]
    kernels = lower_layer(layer, gpu)
    return layer, next(k for k in kernels if k.kind is KernelKind.NORMALIZATION)


def test_batchnorm_reads_its_input_twice_unless_a_channel_fits_shared_memory(
        rtx: GPUSpec) -> None:
    # 7x7 at batch 128: 6,272 fp32 values per channel, 25,088 B + 1,680 <= 48 KiB ->
    # singleread, shared memory 26,768 B as profiled in both traces; one read.
    layer, bn = _bn(rtx, 128, 512, 7, backward=False)
    assert bn.library_name == "bn_fw_tr_1C11_singleread"
    assert (bn.grid, bn.smem_per_block_B) == ((512, 1, 1), 26768)
    assert bn.dram_bytes == layer.bytes
    # 14x14 at batch 128: 25,088 values (100 KB) do not fit: the two-pass kernel reads x
    # twice: the layer's minimum bytes plus x once more.
    layer, bn = _bn(rtx, 128, 256, 14, backward=False)
    assert bn.library_name == "bn_fw_tr_1C11_kernel_NCHW"
    assert bn.dram_bytes == layer.bytes + 128 * 256 * 14 * 14 * 4


def test_batchnorm_backward_keeps_x_and_dy_only_when_both_fit(rtx: GPUSpec) -> None:
    # Backward keeps 8 B per value: 6,272 x 8 = 50,176 B > 48 KiB -> two passes over x and
    # dy (the 2080 Ti trace's bn_bw_1C11_kernel_new at 7x7, batch 128)...
    layer, bn = _bn(rtx, 128, 512, 7, backward=True)
    assert bn.library_name == "bn_bw_1C11_kernel_new"
    assert bn.dram_bytes == layer.bytes + 2 * 128 * 512 * 7 * 7 * 4
    # ...but 1,568 values (7x7 at batch 32, the A100 trace) fit: 12,544 + 4,112 = 16,656 B.
    layer, bn = _bn(rtx, 32, 512, 7, backward=True)
    assert bn.library_name == "bn_bw_1C11_singleread"
    assert bn.smem_per_block_B == 16656 and bn.dram_bytes == layer.bytes


# ---------------------------------------------------------------------- algorithms
@pytest.mark.parametrize(("arch", "math_", "layout", "pass_", "kernel", "stride", "channels",
                          "algorithm"), [
    ("sm75", "simt", "nchw", "fprop", (3, 3), (1, 1), 64, "winograd_nonfused"),
    ("sm75", "simt", "nchw", "dgrad", (3, 3), (1, 1), 64, "winograd_fused"),
    ("sm75", "simt", "nchw", "dgrad", (3, 3), (1, 1), 128, "winograd_nonfused"),
    ("sm70", "simt", "nchw", "wgrad", (3, 3), (1, 1), 512, "winograd_nonfused"),
    ("sm75", "simt", "nchw", "fprop", (3, 3), (2, 2), 128, "implicit_gemm"),
    ("sm75", "simt", "nhwc", "fprop", (3, 3), (1, 1), 64, "implicit_gemm"),
    ("sm75", "f16", "nchw", "fprop", (3, 3), (1, 1), 64, "implicit_gemm"),
    ("sm80", "simt", "nchw", "fprop", (3, 3), (1, 1), 64, "implicit_gemm"),
    # Pascal: inferred from DeepBench's timings (faster than the direct FLOPs at peak).
    ("sm61", "simt", "nchw", "fprop", (3, 3), (1, 1), 64, "winograd_nonfused"),
    ("sm60", "simt", "nchw", "dgrad", (3, 3), (1, 1), 256, "winograd_nonfused"),
    ("sm61", "simt", "nchw", "fprop", (3, 3), (2, 2), 64, "implicit_gemm"),
    ("sm61", "simt", "nhwc", "fprop", (3, 3), (1, 1), 64, "implicit_gemm"),
])
def test_cudnn_algorithm_choice(arch: str, math_: str, layout: str, pass_: str,
                                kernel: tuple[int, int], stride: tuple[int, int],
                                channels: int, algorithm: str) -> None:
    rule = choose_algorithm(arch=arch, math=math_, layout=layout, pass_=pass_, kernel=kernel,
                            stride=stride, channels=channels)
    assert rule.algorithm == algorithm
    assert rule.source


def _shapes(kernels: list[KernelSpec]) -> list[tuple[str, tuple[int, int, int], int, int, int]]:
    return [(k.library_name, k.grid, k.threads, k.regs_per_thread, k.smem_per_block_B)
            for k in kernels]


def test_winograd_nonfused_forward_launches_the_traced_kernels(rtx: GPUSpec) -> None:
    # ResNet-18 layer1 (64 -> 64, 56x56, batch 128) on the RTX 2080 Ti, as traced:
    # T = 128 * 14 * 14 = 25,088 tiles; one image of 196 tiles per data-transform block.
    kernels = lower_layer(conv_layer(128, (64, 56, 56), 64, (3, 3), padding=(1, 1)), rtx)
    assert _shapes(kernels) == [
        ("winogradForwardData4x4", (128, 64, 1), 256, 108, 22656),
        ("winogradForwardFilter4x4", (2, 8, 1), 256, 64, 9216),
        ("sgemm_64x64 (winograd, 36 points)", (392, 1, 36), 64, 126, 8192),
        ("winogradForwardOutput4x4", (128, 64, 1), 256, 80, 16640),
    ]
    # The GEMM executes a quarter of the direct convolution's FLOPs: 36 * 196 = 7,056
    # products per image and channel pair against 9 * 3,136 = 28,224.
    direct = 2 * 128 * 56 * 56 * 64 * 64 * 9
    assert kernels[2].flops == direct / 4
    # The transformed input: 36 * 25,088 tiles * 64 channels * 4 B written, then read.
    assert kernels[0].dram_bytes == 128 * 64 * 56 * 56 * 4 + 36 * 25088 * 64 * 4
    # layer2 (128 channels, 28x28): 4 images of 49 tiles per block -> 32 blocks in x.
    layer2 = lower_layer(conv_layer(128, (128, 28, 28), 128, (3, 3), padding=(1, 1)), rtx)
    assert [k.grid for k in layer2] == [(32, 128, 1), (4, 16, 1), (98, 2, 36), (32, 128, 1)]


def test_winograd_weight_gradient_and_fused_data_gradient(rtx: GPUSpec) -> None:
    wgrad = lower_layer(conv_layer(128, (512, 7, 7), 512, (3, 3), padding=(1, 1),
                                   pass_="wgrad"), rtx)
    assert [k.library_name for k in wgrad] == [
        "winogradWgradData4x4", "winogradWgradDelta4x4", "sgemm_64x64 (winograd, 36 points)",
        "winogradWgradOutput4x4"]
    # GEMM over K = 512 out, C = 512 in, 36 points, as traced; transforms' output (16, 64).
    assert wgrad[2].grid == (8, 8, 36) and wgrad[3].grid == (16, 64, 1)
    assert all(k.kind is KernelKind.CONV_WGRAD for k in wgrad)
    fused = lower_layer(conv_layer(128, (64, 56, 56), 64, (3, 3), padding=(1, 1),
                                   pass_="dgrad"), rtx)
    assert _shapes(fused) == [
        ("generateWinogradTilesKernel", (2, 16, 1), 128, 56, 8704),
        ("scudnn_winograd_128x128_tile148t", (256, 7, 4), 256, 126, 49152),
    ]
    # F(2x2, 3x3): 16 products per 2x2 output tile: 16/36 of the direct FLOPs.
    assert fused[1].flops == 2 * 16 * 128 * 28 * 28 * 64 * 64


def test_strided_dgrad_on_turing_zeroes_the_gradient_first(rtx: GPUSpec) -> None:
    # scalePackedTensor: one element per thread, 256 threads, at most 65,535 blocks: the
    # trace's 25,088 blocks for 128 x 256 x 14 x 14 and 65,535 for 128 x 64 x 56 x 56.
    small = lower_layer(conv_layer(128, (256, 14, 14), 512, (1, 1), stride=(2, 2),
                                   pass_="dgrad"), rtx)
    assert small[0].library_name.startswith("scalePackedTensor")
    assert small[0].grid == (25088, 1, 1)
    big = lower_layer(conv_layer(128, (64, 56, 56), 128, (3, 3), stride=(2, 2),
                                 padding=(1, 1), pass_="dgrad"), rtx)
    assert big[0].grid == (65535, 1, 1)
    # No zero fill for stride 1, none on the A100 (cuDNN's sm80 kernels there do not).
    a100 = load_preset("a100-40gb")
    assert not any("scalePacked" in k.library_name for k in lower_layer(
        conv_layer(32, (64, 56, 56), 128, (3, 3), stride=(2, 2), padding=(1, 1),
                   pass_="dgrad"), a100, precision="tf32"))



def test_strided_dgrad_on_pascal_multiplies_the_zero_taps() -> None:
    # The same downsample as above on the P100 (cuDNN 6): the dgrad GEMM over all 8 x 56 x
    # 56 input pixels executes every tap, 4x the layer's MACs; its forward pass does not,
    # nor does a stride-1 dgrad, nor the T4's (cuDNN 7.6) strided dgrad.
    p100, t4 = load_preset("p100"), load_preset("t4")
    macs = 8 * 28 * 28 * 512 * 256

    def main_flops(gpu: GPUSpec, pass_: str, stride: int) -> float:
        size = 28 * stride
        layer = conv_layer(8, (256, size, size), 512, (1, 1), stride=(stride, stride),
                           pass_=pass_)
        return max(k.flops for k in lower_layer(layer, gpu))

    assert main_flops(p100, "dgrad", 2) == 4 * 2 * macs
    assert main_flops(p100, "fwd", 2) == 2 * macs
    assert main_flops(p100, "dgrad", 1) == 2 * macs
    assert main_flops(t4, "dgrad", 2) == 2 * macs
    rule = choose_algorithm(arch="sm61", math="simt", layout="nchw", pass_="dgrad",
                            kernel=(3, 3), stride=(2, 2), channels=64)
    assert rule.multiplies_zero_taps and "DeepBench" in rule.source


def test_zero_tap_and_zero_fill_flags_belong_to_implicit_gemm_dgrad_rules() -> None:
    for flag in ("multiplies_zero_taps", "zero_fill_output"):
        for algorithm, passes in (("implicit_gemm", ["fprop"]), ("winograd_nonfused", ["dgrad"])):
            with pytest.raises(GpusimError, match=flag):
                AlgorithmRule(algorithm=algorithm, arch=["sm60"], math=["simt"],
                              layout=["nchw"], passes=passes, source="test", **{flag: True})



def test_one_by_one_wgrad_on_turing_runs_cudnn7s_wgrad_engines(rtx: GPUSpec) -> None:
    # A small shape by hand: N = 4, C = 96, K = 160, 1x1 stride 2, 32x32 -> 16x16 output
    # (256 pixels per image >= 128: ALGO_0). Blocks tile C by 64 (ceil(96/64) = 2) and K by
    # 256 (K > 128; ceil(160/256) = 1); slices of at most 512 pixels of one image:
    # 4 x ceil(256/512) = 4. One kernel, no reduction.
    layer = conv_layer(4, (96, 32, 32), 160, (1, 1), stride=(2, 2), pass_="wgrad")
    kernel, = lower_layer(layer, rtx)
    assert kernel.library_name.startswith("wgrad_alg0_engine")
    assert kernel.grid == (2, 1, 4) and kernel.threads == 256
    assert (kernel.regs_per_thread, kernel.smem_per_block_B) == (121, 10496)
    assert kernel.family == "wgrad_engine" and kernel.kind is KernelKind.CONV_WGRAD
    # FLOPs of the whole tiles it computes: 2 x (2 x 64) x (1 x 256) x 4 x 256 pixels.
    assert kernel.flops == 2 * 128 * 256 * 4 * 256 > 2 * layer.macs
    # Stride 1 too, and small images run ALGO_1: 7x7 output (49 < 128 pixels), C = 128,
    # K = 64: grid (ceil(128/64), ceil(64/128), ceil(4 * 49 / 4096)) = (2, 1, 1).
    small = conv_layer(4, (128, 7, 7), 64, (1, 1), pass_="wgrad")
    kernel, = lower_layer(small, rtx)
    assert kernel.library_name.startswith("cudnn::cnn::wgrad_alg1_engine")
    assert kernel.grid == (2, 1, 1) and kernel.regs_per_thread == 70
    # cuDNN 7 offers no implicit GEMM for it: the only candidate, also for cudnnFind.
    assert conv_algorithm_candidates(layer, rtx) == ("wgrad_engine",)
    assert conv_algorithm_candidates(layer, load_preset("t4")) == ("wgrad_engine",)
    with pytest.raises(GpusimError, match="does not apply"):
        lower_layer(layer, rtx, conv_algorithm="implicit_gemm")
    # Not on other architectures, nor for tensor-op math, other passes or other filters.
    for gpu, precision in ((load_preset("a100-40gb"), "tf32"), (load_preset("p100"), "fp32"),
                           (load_preset("titan-xp"), "fp32"), (load_preset("t4"), "fp16")):
        assert not any(k.family for k in lower_layer(layer, gpu, precision=precision))
    for other in (conv_layer(4, (96, 32, 32), 160, (1, 1), stride=(2, 2), pass_="fwd"),
                  conv_layer(4, (96, 32, 32), 160, (1, 1), stride=(2, 2), pass_="dgrad"),
                  conv_layer(4, (96, 32, 32), 160, (3, 3), stride=(2, 2), padding=(1, 1),
                             pass_="wgrad")):
        assert not any(k.family or "wgrad_alg" in k.library_name
                       for k in lower_layer(other, rtx))
    with pytest.raises(GpusimError, match="1x1 wgrad"):
        AlgorithmRule(algorithm="wgrad_engine", arch=["sm75"], math=["simt"],
                      layout=["nchw"], passes=["wgrad"], kernel=[3, 3], source="test")


def test_turing_fp16_nhwc_wgrad_runs_one_padded_128x128_gemm_per_tap() -> None:
    # By hand: N = 8, C = 3 -> K = 64, 3x3 pad 1 on 32x32 (T4 fp16, NHWC, tensor ops). Each
    # of the 9 taps is a K x C = 64 x 3 GEMM reduced over N*P*Q = 8192 pixels, in whole
    # 128x128 tiles: 1 x 1 tile per tap, 9 blocks on 40 SMs (one 128x128 block per SM):
    # split 4 fills a wave (36 / 40 = 0.9), 2048 pixels = 64 iterations of 32 per slice.
    # FLOPs executed: 2 x 128 x 128 x 8192 x 9, where the layer has 2 x 64 x 3 x 9 x 8192.
    t4 = load_preset("t4")
    layer = conv_layer(8, (3, 32, 32), 64, (3, 3), padding=(1, 1), pass_="wgrad",
                       dtype="fp16")
    main, reduce = lower_layer(layer, t4, precision="fp16", layout="nhwc")
    assert main.library_name == "volta_s884_128x128x32 per-tap splitK4"
    assert main.grid == (1, 1, 36) and main.mainloop_iterations == 64
    assert main.tensor_cores and main.tile_mn == (128, 128)  # C = 3: padded, not SIMT
    assert main.flops == 2 * 128 * 128 * 8192 * 9 == 2_415_919_104
    assert 2 * layer.macs == 2 * 64 * 3 * 9 * 8192
    assert reduce.library_name == "splitk_reduce" and reduce.flops == 3 * 64 * 3 * 9
    assert conv_algorithm_candidates(layer, t4, precision="fp16",
                                     layout="nhwc") == ("implicit_gemm",)
    # Channels beyond one tile take more: C = 192 -> ceil(192/128) = 2 tiles per tap.
    wide = conv_layer(8, (192, 32, 32), 64, (3, 3), padding=(1, 1), pass_="wgrad",
                      dtype="fp16")
    assert max(k.flops for k in lower_layer(wide, t4, precision="fp16", layout="nhwc")) == (
        2 * 128 * 256 * 8192 * 9)
    # Scope: not fp32, NCHW, more than 50 taps (5x20), other passes, nor sm70 (V100).
    for gpu, precision, layout, other in (
            (t4, "fp32", "nhwc", layer), (t4, "fp16", "nchw", layer),
            (t4, "fp16", "nhwc", conv_layer(8, (3, 32, 64), 64, (5, 20), pass_="wgrad",
                                            dtype="fp16")),
            (t4, "fp16", "nhwc", conv_layer(8, (3, 32, 32), 64, (3, 3), padding=(1, 1),
                                            pass_="dgrad", dtype="fp16")),
            (load_preset("v100"), "fp16", "nhwc", layer)):
        assert not any("per-tap" in k.library_name
                       for k in lower_layer(other, gpu, precision=precision, layout=layout))
    with pytest.raises(GpusimError, match="tap_tile"):
        AlgorithmRule(algorithm="implicit_gemm", arch=["sm75"], math=["f16"],
                      layout=["nhwc"], passes=["fprop"], tap_tile="volta_s884_128x128x32",
                      source="test")


def test_turing_fp16_nhwc_forward_and_dgrad_run_each_taps_channels_in_whole_slices(
) -> None:
    # By hand: N = 8, C = 3 -> K = 64, 3x3 pad 1 on 32x32: M = 8192 pixels, N = 64 filters
    # in one 64-wide column of the 128x64 tile; the K loop runs each tap's 3 channels in one
    # 32-deep slice: 9 iterations, 2 x 8192 x 64 x (9 x 32) FLOPs executed, 32/3 the MACs.
    t4 = load_preset("t4")
    layer = conv_layer(8, (3, 32, 32), 64, (3, 3), padding=(1, 1), dtype="fp16")
    kernel, = lower_layer(layer, t4, precision="fp16", layout="nhwc")
    assert kernel.library_name == "volta_s884_128x64x32" and kernel.grid == (64, 1, 1)
    assert kernel.tensor_cores and kernel.mainloop_iterations == 9
    assert kernel.flops == 2 * 8192 * 64 * 9 * 32 == 2 * layer.macs * 32 / 3
    # C = 64 fills two slices per tap exactly: 18 iterations, FLOPs the layer's.
    full = conv_layer(8, (64, 32, 32), 64, (3, 3), padding=(1, 1), dtype="fp16")
    kernel, = lower_layer(full, t4, precision="fp16", layout="nhwc")
    assert kernel.mainloop_iterations == 18 and kernel.flops == 2 * full.macs
    # Data gradients alike, reduced K and produced C swapped: C = 16 <- K = 32 (stride 1,
    # 32x32 images) produces 16 channels in the tile's 64 columns, K = 32 is one slice per
    # tap: 4x the layer's FLOPs, 9 iterations. K = 16 pads each tap's slice to 32: 2x, and
    # a strided one pads its useful FLOPs alike (it skips the zero taps).
    for c, k, stride, factor in ((16, 32, 1, 4), (64, 16, 1, 2), (64, 16, 2, 2)):
        dgrad = conv_layer(8, (c, 32, 32), k, (3, 3), stride=(stride, stride),
                           padding=(1, 1), pass_="dgrad", dtype="fp16")
        kernel, = lower_layer(dgrad, t4, precision="fp16", layout="nhwc")
        assert kernel.library_name == "volta_s884_128x64x32" and kernel.grid == (64, 1, 1)
        assert kernel.flops == factor * 2 * dgrad.macs and kernel.mainloop_iterations == 9
    # Scope: not fp32 nor NCHW (C = 3 runs on CUDA cores there, unpadded: an implicit GEMM
    # of the layer's FLOPs, or the NCHW rules' Winograd).
    kernel, = lower_layer(layer, t4, precision="fp32", layout="nhwc")
    assert kernel.flops == 2 * layer.macs and not kernel.tensor_cores
    assert not any(k.tensor_cores for k in lower_layer(layer, t4, precision="fp16"))
    for algorithm, passes in (("implicit_gemm", ["wgrad"]), ("winograd_nonfused", ["fprop"])):
        with pytest.raises(GpusimError, match="tap_channel_slices"):
            AlgorithmRule(algorithm=algorithm, arch=["sm75"], math=["f16"],
                          layout=["nhwc"], passes=passes, tap_channel_slices=True,
                          source="test")


def test_the_wgrad_engine_grids_are_the_traced_ones(rtx: GPUSpec) -> None:
    # RTX 2080 Ti ResNet-18 b128: the three 1x1 stride-2 downsample weight gradients.
    for (c, size, k), grid, regs, smem in (
            ((64, 56, 128), (1, 1, 256), 77, 6400),
            ((128, 28, 256), (2, 1, 128), 121, 10496),
            ((256, 14, 512), (4, 4, 2), 70, 6404)):
        layer = conv_layer(128, (c, size, size), k, (1, 1), stride=(2, 2), pass_="wgrad")
        kernel, = lower_layer(layer, rtx)
        assert (kernel.grid, kernel.regs_per_thread, kernel.smem_per_block_B) == (
            grid, regs, smem), (c, k)


def test_a_kernel_family_is_priced_with_its_own_efficiency(rtx: GPUSpec) -> None:
    from dataclasses import replace

    from gpu_models.cost.analytic import AnalyticModel, default_table

    kernel, = lower_layer(conv_layer(128, (64, 56, 56), 128, (1, 1), stride=(2, 2),
                                     pass_="wgrad"), rtx)
    table = default_table()
    entry = table.for_gpu(rtx)
    assert 0 < entry.family_efficiency["wgrad_engine"] < 1
    halved = replace(entry, family_efficiency={
        "wgrad_engine": entry.family_efficiency["wgrad_engine"] / 2})
    key = table.entry_key("7.5")
    slower = replace(table, entries={**table.entries, key: halved})
    base, half = AnalyticModel(table)(kernel, rtx), AnalyticModel(slower)(kernel, rtx)
    assert half.block_time_s == pytest.approx(2 * base.block_time_s)  # compute-bound
    # Without a family the kernel is priced by its kind's efficiency.
    plain = replace(kernel, family="")
    assert AnalyticModel(slower)(plain, rtx) == AnalyticModel(table)(plain, rtx)
    with pytest.raises(GpusimError, match="family_efficiency"):
        replace(entry, family_efficiency={"fft": 0.5})


def test_conv_algorithm_candidates_and_a_chosen_algorithm(rtx: GPUSpec) -> None:
    # The rules' algorithm first, then implicit GEMM (cuDNN has it for every pass).
    three = conv_layer(32, (64, 56, 56), 64, (3, 3), padding=(1, 1))
    assert conv_algorithm_candidates(three, rtx) == ("winograd_nonfused", "implicit_gemm")
    small = conv_layer(32, (64, 56, 56), 64, (3, 3), padding=(1, 1), pass_="dgrad")
    assert conv_algorithm_candidates(small, rtx) == ("winograd_fused", "implicit_gemm")
    one = conv_layer(32, (64, 56, 56), 256, (1, 1))
    assert conv_algorithm_candidates(one, rtx) == ("implicit_gemm",)
    assert conv_algorithm_candidates(gemm_layer(64, 64, 64), rtx) == ()
    assert conv_algorithm_candidates(three, load_preset("a100-40gb"),
                                     precision="tf32") == ("implicit_gemm",)
    direct = lower_layer(three, rtx, conv_algorithm="implicit_gemm")
    assert not any("winograd" in k.library_name for k in direct)
    assert max(k.flops for k in direct) == 2 * three.macs  # the direct FLOPs
    assert lower_layer(three, rtx, conv_algorithm="winograd_nonfused") == lower_layer(three, rtx)
    # A strided dgrad keeps its rule's extras (Turing's zero fill) when chosen by name.
    strided = conv_layer(128, (256, 14, 14), 512, (1, 1), stride=(2, 2), pass_="dgrad")
    assert lower_layer(strided, rtx, conv_algorithm="implicit_gemm") == lower_layer(strided,
                                                                                   rtx)
    with pytest.raises(GpusimError, match="does not apply"):
        lower_layer(one, rtx, conv_algorithm="winograd_nonfused")
    with pytest.raises(GpusimError, match="unknown conv_algorithm"):
        lower_layer(three, rtx, conv_algorithm="fft")


# ---------------------------------------------------------------------- split-K
@pytest.mark.parametrize(("tiles", "split"), [(36, 11), (10, 19), (2, 92)])
def test_split_k_fills_the_waves(rtx: GPUSpec, tiles: int, split: int) -> None:
    # scudnn_128x64 (128 threads, 160 registers) holds 3 blocks per SM: waves of 204 on 68
    # SMs. 36 tiles: 5 slices fill one wave to 180/204 = 0.88, 11 fill two to 396/408 =
    # 0.97; 10 tiles: 19 -> 190/204 = 0.93; 2 tiles: 92 -> 184/204 = 0.90.
    tile = next(t for t in load_table("simt") if t.name == "scudnn_128x64")
    assert split_for_waves(rtx, tile, tiles, 10**7, 4) == split
    fill = tiles * split / (math.ceil(tiles * split / 204) * 204)
    assert fill >= 0.9
    # A short K caps the slices: K = 640 allows 640 // (8 * 8) = 10.
    assert split_for_waves(rtx, tile, tiles, 640, 4) <= 10


def test_weight_gradients_are_not_left_below_a_wave(rtx: GPUSpec) -> None:
    # ResNet-18 layer2's 3x3 stride-2 wgrad (M = 128, N = 64 * 9, K = 128 * 28 * 28):
    # before, 36 blocks of 64x64 on 68 SMs (split = 68 // 36 = 1).
    layer = conv_layer(128, (64, 56, 56), 128, (3, 3), stride=(2, 2), padding=(1, 1),
                       pass_="wgrad")
    main = next(k for k in lower_layer(layer, rtx) if k.kind is KernelKind.CONV_WGRAD)
    choice = select_tile(rtx, "wgrad", "simt", 128, 576, 128 * 28 * 28, 4)
    assert choice.split_k > 1 and main.blocks == choice.blocks >= rtx.sm_count



def test_weight_gradients_are_split_to_fill_a_whole_wave(rtx: GPUSpec) -> None:
    # ResNet-18 layer3's 3x3 stride-2 wgrad (M = 256, N = 128 * 9, K = 128 * 14 * 14):
    # 4 x 18 = 72 tiles of sgemm_64x64 give each of the 68 SMs a block, but that kernel fits
    # 8 blocks per SM (a wave of 544): split 7 fills 504 / 544 = 0.93 of it, split 6 only
    # 0.79. cuDNN splits this weight gradient too (7 and 14 slices in the trace). The
    # forward pass and a GEMM of the same shape are not split.
    choice = select_tile(rtx, "wgrad", "simt", 256, 1152, 128 * 14 * 14, 4)
    assert (choice.tile.name, choice.tiles_m, choice.tiles_n) == ("sgemm_64x64", 4, 18)
    assert choice.split_k == 7
    assert select_tile(rtx, "fprop", "simt", 256, 1152, 128 * 14 * 14, 4).split_k == 1
    assert select_tile(rtx, "gemm", "simt", 256, 1152, 128 * 14 * 14, 4).split_k == 1
    layer = conv_layer(128, (128, 28, 28), 256, (3, 3), stride=(2, 2), padding=(1, 1),
                       pass_="wgrad")
    main = next(k for k in lower_layer(layer, rtx) if k.kind is KernelKind.CONV_WGRAD)
    assert main.grid == (4, 18, 7)


# ---------------------------------------------------------------------- framework
def _step(gpu: GPUSpec, framework: str, network: str = "resnet18") -> nx.DiGraph:
    graph = build(network, batch=4, phase="training", optimizer="step")
    return lower(graph, gpu, framework=framework)


def test_framework_legacy_adds_per_parameter_kernels(rtx: GPUSpec) -> None:
    # ResNet-18 has 62 parameter tensors (20 convs, 20 batch norms x 2, fc weight + bias).
    base = lower(build("resnet18", batch=4, phase="training", optimizer="step"), rtx)
    legacy = _step(rtx, "pytorch-legacy")
    labels = Counter(d["kernel"].library_name for _, d in legacy.nodes(data=True))
    assert labels["vectorized_elementwise_kernel<4, fill (zero_grad)>"] == 62
    assert labels["vectorized_elementwise_kernel<4, add_ (AccumulateGrad into the zeroed "
                  "gradient)>"] == 62
    optimizer = [d["kernel"] for _, d in legacy.nodes(data=True)
                 if d["kernel"].kind is KernelKind.OPTIMIZER]
    assert len(optimizer) == 3 * 62  # mul_, add_, add_ per tensor
    # The foreach step (3 launches over 62 tensors) is replaced by those 186 + 62 fills;
    # 62 AccumulateGrad adds join the backward.
    base_opt = sum(1 for _, d in base.nodes(data=True) if d["op"] == "sgd_update")
    assert legacy.number_of_nodes() == base.number_of_nodes() - base_opt + 186 + 62 + 62


def test_framework_optimizer_launches_match_the_traces(rtx: GPUSpec) -> None:
    # RTX 2080 Ti ResNet-18 trace (SGD with weight decay): _foreach_add over 62 tensors in
    # two depth-3 launches of 48 + 14 tensors (100 and 127 chunks), then _foreach_mul_,
    # _foreach_add_, _foreach_add_ (227 chunks each).
    wd = _step(rtx, "pytorch-wd")
    grids = [d["kernel"].grid[0] for _, d in wd.nodes(data=True) if d["op"] == "sgd_update"]
    b128 = lower(build("resnet18", batch=128, phase="training", optimizer="step"), rtx,
                 framework="pytorch-wd")
    assert grids == [d["kernel"].grid[0] for _, d in b128.nodes(data=True)
                     if d["op"] == "sgd_update"] == [100, 127, 227, 227, 227]
    # A100 ResNet-50 trace: 3 _foreach_mul_ launches of 180, 320 and 8 chunks, then 2 x 3
    # _foreach_add_ launches of 71, 155 and 282 (parameters in model.parameters() order).
    ddp = _step(load_preset("a100-40gb"), "pytorch-ddp", "resnet50")
    assert [d["kernel"].grid[0] for _, d in ddp.nodes(data=True)
            if d["op"] == "sgd_update"] == [180, 320, 8, 71, 155, 282, 71, 155, 282]


def test_framework_ddp_kernels(a100: GPUSpec) -> None:
    ddp = _step(a100, "pytorch-ddp", "resnet50")
    kernels = [d["kernel"] for _, d in ddp.nodes(data=True)]
    muls = [k for k in kernels if "DDP reducer" in k.library_name]
    assert len(muls) == 161  # one per parameter tensor, as the A100 trace's reducer
    first, second = kernels[0], kernels[1]
    # Buffer broadcast: 53 batch norms' running mean and variance (106 tensors, the largest
    # 2,048 values -> 4 blocks of 512) and their 53 counters, as the trace's two cats.
    assert (first.grid, second.grid) == ((4, 106, 1), (1, 53, 1))
    with pytest.raises(GpusimError, match="unknown framework"):
        _step(a100, "tensorflow")
