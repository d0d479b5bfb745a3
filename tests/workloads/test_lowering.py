"""Lowering: tile choice, per-op kernels, the kernel graph, fusion, calibration, `gpusim op`."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import networkx as nx
import pytest

from gpu_models.calibration import CalibrationRecord, CalibrationSet, Provenance
from gpu_models.cost import get_cost_model
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.occupancy import launch_failure, occupancy
from gpu_models.presets import list_presets, load_preset
from gpu_models.spec import GPUSpec
from sim.cli import main
from workloads import build, workload_names
from workloads.layers import OpType
from workloads.lowering import (
    conv_layer,
    gemm_layer,
    gemm_shape,
    kernels_in_order,
    load_table,
    lower,
    lower_layer,
    multi_tensor_launches,
    select_tile,
    table_for,
)
from workloads.lowering import ops as lowering_ops

# ---------------------------------------------------------------------- tables


@pytest.mark.parametrize("table", ["simt", "sm70", "sm80", "sm90"])
def test_every_tile_has_a_source_and_launches_on_its_architecture(table: str) -> None:
    gpu = {"simt": "titan-xp", "sm70": "v100", "sm80": "a100", "sm90": "h100"}[table]
    spec = load_preset(gpu)
    tiles = load_table(table)
    assert tiles
    for tile in tiles:  # own and inherited tiles
        assert tile.source
        assert launch_failure(spec, tile.threads, tile.regs, tile.smem_B) is None, tile.name


def test_architectures_map_to_tables() -> None:
    assert table_for(load_preset("titan-xp")) == "simt"
    assert table_for(load_preset("v100")) == "sm70"
    assert table_for(load_preset("a100")) == "sm80"
    assert table_for(load_preset("h100")) == "sm90"
    sm86 = load_preset("a100").replace(compute_capability=(8, 6))
    assert table_for(sm86) == "sm80"


# ---------------------------------------------------------------------- GEMM shapes
def test_implicit_gemm_shapes_of_the_three_passes() -> None:
    # 3x3 conv, batch 2, 64x56x56 -> 128 channels, stride 2: P = Q = 28.
    def shape(pass_: str) -> tuple[int, int, int]:
        g = gemm_shape(conv_layer(2, (64, 56, 56), 128, (3, 3), stride=(2, 2),
                                  padding=(1, 1), pass_=pass_))
        return (g.m, g.n, g.k)

    assert shape("fwd") == (2 * 28 * 28, 128, 64 * 9)
    assert shape("dgrad") == (2 * 56 * 56, 64, 128 * 9)
    assert shape("wgrad") == (128, 64 * 9, 2 * 28 * 28)
    linear = gemm_shape(gemm_layer(32, 1000, 2048))
    assert (linear.m, linear.n, linear.k) == (32, 1000, 2048)


# ---------------------------------------------------------------------- hand-computed grids
def test_3x3_conv_batch1_on_sm80_tf32(a100: GPUSpec) -> None:
    # M = 1*56*56 = 3136, N = 64, K = 64*9 = 576. Tiles with bn = 64 waste nothing in N;
    # the sm80 fprop table's only one is 256x64 -> ceil(3136/256) = 13 blocks < 0.9 x 108,
    # so K is split: min(108 // 13, 576 // (8 * bk=32)) = min(8, 2) = 2.
    ks = lower_layer(conv_layer(1, (64, 56, 56), 64, (3, 3), padding=(1, 1)), a100,
                     precision="tf32", layout="nhwc")
    main_k, reduce_k = ks
    assert main_k.library_name.startswith("sm80_xmma_fprop_256x64x32")
    assert main_k.grid == (13, 1, 2)
    assert (main_k.threads, main_k.regs_per_thread, main_k.smem_per_block_B) == (256, 193, 126976)
    assert main_k.tensor_cores and main_k.dtype == "tf32"
    assert main_k.flops == 2 * 3136 * 64 * 576
    # The split-K reduction: 3136 x 64 outputs, 128 threads x 4 elements per block.
    assert reduce_k.kind is KernelKind.REDUCTION
    assert reduce_k.grid == (3136 * 64 // 512, 1, 1)
    assert [k.name for k in ks] == ["conv#0", "conv#1"]


def test_3x3_conv_batch1_on_sm80_fp32_uses_simt_tiles(a100: GPUSpec) -> None:
    # SIMT tiles: 128x64 gives ceil(3136/128) = 25 blocks, 64x64 gives 49 (the most).
    # sgemm_64x64 (64 threads, 126 regs -> 4096/warp, 4 per SP -> 16 warps; 8 KiB smem) holds
    # 8 blocks per SM: a wave is 108 x 8 = 864 blocks. K = 576 allows 576 // (8 * 8) = 9
    # slices; none fills a wave to 0.9, so the best filling, 9 (441 / 864), is taken.
    main_k = lower_layer(conv_layer(1, (64, 56, 56), 64, (3, 3), padding=(1, 1)), a100)[0]
    assert main_k.library_name.startswith("sgemm_64x64")
    assert main_k.grid == (49, 1, 9)
    assert not main_k.tensor_cores


def test_gemm_narrow_uses_split_k(h100: GPUSpec) -> None:
    # M = 32, N = 1000, K = 2048 fp32: the 32x32 tile gives 1 x 32 tiles. It holds 5 blocks
    # per SM (86 regs -> 2816/warp, 5 warps per SP -> 20 warps = 5 blocks of 4; smem 6), a
    # wave of 660. Split-K for waves: 18 slices fill one to 576/660 = 0.87, 19 to 0.92
    # (>= 0.9; K allows 2048 // 64 = 32) -> grid 1 x 32 x 19 and a reduction kernel.
    gemm, reduce_k = lower_layer(gemm_layer(32, 1000, 2048), h100)
    assert gemm.grid == (1, 32, 19)
    assert gemm.kind is KernelKind.GEMM
    assert reduce_k.grid == (math.ceil(32 * 1000 / 512), 1, 1)


def test_large_gemm_fills_the_gpu_without_split(h100: GPUSpec) -> None:
    kernel, = lower_layer(gemm_layer(4096, 4096, 4096), h100, precision="bf16")
    # Hopper's own 2-warpgroup WGMMA tile, not an inherited Ampere one: 128x256 -> 32 x 16.
    assert kernel.library_name.startswith("sm90_xmma_128x256x64")
    assert kernel.grid == (32, 16, 1)
    assert (kernel.threads, kernel.regs_per_thread) == (384, 168)
    assert occupancy(h100, kernel.threads, kernel.regs_per_thread,
                     kernel.smem_per_block_B).blocks_per_sm == 1


def test_resnet50_forward_3x3_tiles_match_cudnn_on_a100(a100: GPUSpec) -> None:
    # cuDNN's choice for the four 3x3 stages of ResNet-50 at batch 32, TF32, on an A100, as
    # seen in a public profiler trace: 256x64 (392 blocks), 128x128 (196), 128x128 (98),
    # 64x128 (100 blocks).
    expected = {56: ("256x64", 392), 28: ("128x128", 196), 14: ("128x128", 98),
                7: ("64x128", 100)}
    for size, (tile, blocks) in expected.items():
        channels = {56: 64, 28: 128, 14: 256, 7: 512}[size]
        k = lower_layer(conv_layer(32, (channels, size, size), channels, (3, 3),
                                   padding=(1, 1)), a100, precision="tf32", layout="nhwc")[0]
        assert tile in k.library_name and k.blocks == blocks, (size, k.library_name, k.grid)


def test_pointwise_conv_is_a_batched_gemm(a100: GPUSpec) -> None:
    # 1x1 stride-1 conv 64 -> 256 on 56x56, batch 32, NCHW: one GEMM per image, M = 3136,
    # N = 256, K = 64, tile 256x64: 13 x 4 tiles per image, 32 images in grid z.
    layer = conv_layer(32, (64, 56, 56), 256, (1, 1))
    k = lower_layer(layer, a100, precision="tf32")[0]
    assert k.grid == (13, 4, 32)
    assert k.library_name.startswith("cutlass_80_tensorop_gemm_256x64")
    # Its wgrad: one partial weight gradient per image (M = 256, N = 64, K = 3136), summed
    # by a reduction kernel.
    wgrad, reduce_k = lower_layer(conv_layer(32, (64, 56, 56), 256, (1, 1), pass_="wgrad"),
                                  a100, precision="tf32")
    assert wgrad.grid[2] == 32 and reduce_k.kind is KernelKind.REDUCTION
    assert wgrad.flops == 2 * layer.macs
    # channels_last: a single GEMM over all N*H*W pixels.
    single = lower_layer(layer, a100, precision="tf32", layout="nhwc")[0]
    assert single.grid[2] == 1 and single.kind is KernelKind.CONV_FWD


def test_nchw_layout_adds_cudnn_transposes(a100: GPUSpec) -> None:
    layer = conv_layer(32, (256, 14, 14), 256, (3, 3), padding=(1, 1), pass_="dgrad")
    nchw = lower_layer(layer, a100, precision="tf32")
    labels = [k.library_name for k in nchw]
    # dy and the filter to NHWC, the dgrad kernel, dx back to NCHW.
    assert labels[:2] == ["nchwToNhwcKernel"] * 2 and labels[-1] == "nhwcToNchwKernel"
    assert nchw[0].grid == (math.ceil(196 / 32), 256 // 32, 32)   # dy: (n, c, h*w) tiles
    assert nchw[1].grid == (1, 256 // 32, 256)                    # filter: (K, C, R*S)
    assert [k.kind for k in nchw].count(KernelKind.CONV_DGRAD) == 1
    nhwc = lower_layer(layer, a100, precision="tf32", layout="nhwc")
    assert all(k.kind is not KernelKind.CONCAT_COPY for k in nhwc)
    # CUDA-core kernels and 1x1 stride-1 convs (batched GEMMs) need no transposes.
    assert len(lower_layer(layer, a100)) == 1
    assert len(lower_layer(conv_layer(32, (64, 56, 56), 256, (1, 1)), a100,
                           precision="tf32")) == 1


def test_rgb_input_conv_runs_on_cuda_cores(a100: GPUSpec) -> None:
    k = lower_layer(conv_layer(32, (3, 224, 224), 64, (7, 7), stride=(2, 2), padding=(3, 3)),
                    a100, precision="tf32")[0]
    assert not k.tensor_cores and k.library_name.startswith("scudnn")


def test_depthwise_conv_uses_a_direct_kernel(v100: GPUSpec) -> None:
    fwd = lower_layer(conv_layer(8, (32, 112, 112), 32, (3, 3), padding=(1, 1), groups=32),
                      v100)
    assert len(fwd) == 1 and fwd[0].library_name == "conv_depthwise2d_forward_kernel"
    assert fwd[0].grid == (math.ceil(8 * 32 * 112 * 112 / 256), 1, 1)
    wgrad = lower_layer(conv_layer(8, (32, 112, 112), 32, (3, 3), padding=(1, 1), groups=32,
                                   pass_="wgrad"), v100)
    assert wgrad[0].grid == (32 * 9, 1, 1)


def test_tile_choice_skips_tiles_that_cannot_launch(a100: GPUSpec) -> None:
    smaller = a100.replace(smem_per_sm_B=102400)
    choice = select_tile(smaller, "fprop", "tf32", 100352, 64, 576, 4)
    assert choice.tile.smem_B <= smaller.max_smem_per_block_B and "tf32" in choice.tile.math
    # No tensor-op tile fits at all: the CUDA-core tiles.
    tiny = a100.replace(smem_per_sm_B=49152)
    assert select_tile(tiny, "fprop", "tf32", 100352, 64, 576, 4).tile.math == ("simt",)


def test_multi_tensor_apply_launch_split() -> None:
    # 3 tensors of 2 chunks each, limit 320 blocks: one launch of 6 blocks.
    assert multi_tensor_launches([131072] * 3, 1) == [(6, 3 * 131072)]
    # 111 one-chunk tensors at depth 1 (110 tensors per launch): 2 launches.
    assert [b for b, _ in multi_tensor_launches([10] * 111, 1)] == [110, 1]
    # 400 chunks of one tensor: the 320-block limit splits it.
    assert [b for b, _ in multi_tensor_launches([400 * 65536], 3)] == [320, 80]


# ---------------------------------------------------------------------- kernel graphs
@pytest.fixture(scope="module")
def resnet50_train_a100() -> nx.DiGraph:
    graph = build("resnet50", batch=32, phase="training", optimizer="step")
    return lower(graph, load_preset("a100"), precision="tf32")


def test_kernel_graph_structure(resnet50_train_a100: nx.DiGraph) -> None:
    kg = resnet50_train_a100
    assert nx.is_directed_acyclic_graph(kg)
    assert kg.graph["workload"] == "resnet50"
    assert kg.graph["batch"] == 32 and kg.graph["phase"] == "training"
    assert kg.graph["precision"] == "tf32" and kg.graph["gpu"] == "a100"
    for name, data in kg.nodes(data=True):
        assert set(data) >= {"kernel", "layer", "module", "branch", "phase"}
        assert data["kernel"].name == name and data["kernel"].layer == data["layer"]
    # A multi-kernel layer is a chain: bn1#0 -> bn1#1; the conv feeds its first kernel.
    assert kg.has_edge("conv1", "bn1#0") and kg.has_edge("bn1#0", "bn1#1")
    # View ops launch nothing and pass dependencies through: flatten sits between the
    # average pool and the fc layer.
    assert "flatten" not in kg and kg.has_edge("avgpool", "fc#0")


def test_resnet50_training_kernel_mix(resnet50_train_a100: nx.DiGraph) -> None:
    kinds = Counter(d["kernel"].kind for _, d in resnet50_train_a100.nodes(data=True))
    assert kinds[KernelKind.CONV_FWD] == 53
    assert kinds[KernelKind.CONV_DGRAD] == 52      # the stem conv needs no input gradient
    assert kinds[KernelKind.CONV_WGRAD] == 53
    # cuDNN's one batch-norm kernel forward and one backward per BN layer; forward also
    # bumps num_batches_tracked (an elementwise kernel).
    assert kinds[KernelKind.NORMALIZATION] == 2 * 53
    layers = Counter(d["layer"] for _, d in resnet50_train_a100.nodes(data=True))
    assert layers["bn1"] == 2 and layers["bn1.bwd"] == 1
    assert kinds[KernelKind.OPTIMIZER] == 9            # 3 foreach passes x 3 launches
    # The public A100 trace of this step (DDP over 2 GPUs) has 893 compute kernels, 164 of
    # them DDP's per-gradient scaling, which a one-GPU step does not launch.
    assert 600 <= resnet50_train_a100.number_of_nodes() <= 893 - 164


def test_deterministic(a100: GPUSpec) -> None:
    graph = build("googlenet", batch=2)
    a = lower(graph, a100)
    b = lower(build("googlenet", batch=2), a100)
    assert list(a.nodes) == list(b.nodes) and list(a.edges) == list(b.edges)


@pytest.fixture(scope="module")
def zoo_graphs() -> list[tuple[str, nx.DiGraph]]:
    return [(name, build(name, batch=batch, phase=phase)) for name in workload_names()
            for phase, batch in (("inference", 1), ("training", 2))]


@pytest.mark.parametrize("gpu_name", list_presets())
def test_every_zoo_network_lowers_on_every_preset(
        gpu_name: str, zoo_graphs: list[tuple[str, nx.DiGraph]]) -> None:
    gpu = load_preset(gpu_name)
    precision = "fp16" if gpu.peak_fp16_tensor_flop_per_s else "fp32"
    for name, graph in zoo_graphs:
        kg = lower(graph, gpu, precision=precision)
        layers = {d["layer"] for _, d in kg.nodes(data=True)}
        for node, layer in graph.nodes(data="layer"):
            # Every op launches kernels except the views.
            assert (node in layers) != layer.is_view, (name, node)
        for _, data in kg.nodes(data=True):
            k = data["kernel"]
            assert launch_failure(gpu, k.threads, k.regs_per_thread,
                                  k.smem_per_block_B) is None


def test_inference_fusion_folds_bn_and_relu(h100: GPUSpec) -> None:
    graph = build("resnet50", batch=8)
    eager = lower(graph, h100, precision="fp16")
    fused = lower(graph, h100, precision="fp16", fusion="inference")
    assert fused.graph["fusion"] == "inference"
    fused_ops = Counter(d["op"] for _, d in fused.nodes(data=True))
    assert fused_ops["batchnorm"] == 0 and fused_ops["relu"] == 0 and fused_ops["add"] == 0
    assert Counter(d["op"] for _, d in eager.nodes(data=True))["batchnorm"] == 53
    conv3 = fused.nodes["layer1.0.conv3"]["kernel"]
    assert conv3.library_name.endswith("+bn+add+relu")
    assert nx.is_directed_acyclic_graph(fused)
    # The next block's convs depend on the fused conv (through the fused add and relu).
    assert nx.has_path(fused, "layer1.0.conv3", "layer1.1.conv1")


def test_inference_fusion_rejects_training_graphs(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="training"):
        lower(build("resnet18", batch=2, phase="training"), h100, fusion="inference")


def test_bad_options(h100: GPUSpec) -> None:
    graph = build("resnet18", batch=1)
    with pytest.raises(GpusimError, match="fusion"):
        lower(graph, h100, fusion="tensorrt")
    with pytest.raises(GpusimError, match="precision"):
        lower(graph, h100, precision="fp8")


def test_unknown_op_names_the_layer(h100: GPUSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(lowering_ops.RULES, OpType.MAXPOOL)
    with pytest.raises(GpusimError, match=r"layer 'maxpool'.*no lowering rule"):
        lower(build("resnet18", batch=1), h100)


def test_kernel_that_cannot_launch_names_the_layer(h100: GPUSpec) -> None:
    tiny = h100.replace(max_threads_per_block=64, max_threads_per_sm=64)
    with pytest.raises(GpusimError, match=r"layer '.*'"):
        lower(build("resnet18", batch=1), tiny)


def test_kernels_in_order_follow_the_framework(h100: GPUSpec) -> None:
    kg = lower(build("resnet18", batch=4), h100)
    assert kernels_in_order(kg)[0].name == "conv1"


def test_calibration_supplies_the_recorded_configuration(a100: GPUSpec) -> None:
    provenance = Provenance(gpu_name="NVIDIA A100", driver="unknown", cuda="unknown",
                            libraries={}, date="unknown", script="test", args=(),
                            gpu_preset="a100")
    record = CalibrationRecord(
        library_name="recorded_fprop_kernel", kind=KernelKind.CONV_FWD, grid=(7, 8, 1),
        block=(128, 1, 1), regs_per_thread=100, smem_per_block_B=4096, duration_s=5e-5,
        layer_name="layer1.0.conv2", phase="forward", dtype="tf32", tensor_cores=True)
    calib = CalibrationSet(provenance, (record,))
    graph = build("resnet50", batch=4)
    kg = lower(graph, a100, precision="tf32", calibration=calib)
    k = _main_kernel(kg, "layer1.0.conv2")
    assert (k.grid, k.threads, k.regs_per_thread, k.smem_per_block_B) == (
        (7, 8, 1), 128, 100, 4096)
    assert k.measured_time_s == 5e-5 and k.library_name == "recorded_fprop_kernel"
    # Data from another GPU do not apply.
    other = lower(graph, load_preset("h100"), precision="tf32", calibration=[calib])
    assert _main_kernel(other, "layer1.0.conv2").library_name != "recorded_fprop_kernel"


def _main_kernel(kg: nx.DiGraph, layer: str) -> KernelSpec:
    return next(d["kernel"] for _, d in kg.nodes(data=True)
                if d["layer"] == layer and d["kernel"].kind is KernelKind.CONV_FWD)


def test_cli_op_conv2d_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["op", "conv2d", "--batch", "1", "--in", "64,56,56", "--out", "64",
                 "--kernel", "3,3", "--pad", "1", "--gpu", "a100", "--precision", "tf32",
                 "--layout", "nhwc", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["time_us"] > 0
    first = out["kernels"][0]
    assert first["grid"] == [13, 1, 2] and first["blocks_per_sm"] >= 1
    assert {"limiter", "waves", "threads", "regs_per_thread", "smem_per_block_B"} <= set(first)
    # Back to back on one stream: at least the sum of... no less than the longest kernel.
    assert out["time_us"] >= max(k["isolated_time_us"] for k in out["kernels"]) * 0.99


def test_cli_op_table_and_passes(capsys: pytest.CaptureFixture[str]) -> None:
    for pass_ in ("fwd", "dgrad", "wgrad"):
        assert main(["op", "conv2d", "--batch", "8", "--in", "128,28,28", "--out", "128",
                     "--kernel", "3", "--pad", "1", "--pass", pass_, "--gpu", "v100",
                     "--precision", "fp16"]) == 0
    text = capsys.readouterr().out
    assert "predicted time" in text and "blocks/SM" in text


def test_cli_op_gemm_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["op", "gemm", "--m", "1024", "--n", "1024", "--k", "1024", "--gpu", "h100",
                 "--set", "sm_count=66", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kernels"][0]["kind"] == "gemm"


def test_cli_op_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["op", "conv2d", "--batch", "1", "--in", "3,4,4", "--out", "8",
                 "--kernel", "7"]) == 2
    assert "gpusim: error:" in capsys.readouterr().err


@pytest.mark.parametrize("net", ["resnet50", "inception_v3"])
@pytest.mark.parametrize("gpu_name", ["h100", "v100"])
@pytest.mark.parametrize("batch", [1, 64])
def test_resnet50_and_inception_look_like_library_launches(
        net: str, gpu_name: str, batch: int) -> None:
    gpu = load_preset(gpu_name)
    kg = lower(build(net, batch=batch), gpu, precision="fp16")
    convs = [d["kernel"] for _, d in kg.nodes(data=True) if d["kernel"].kind
             is KernelKind.CONV_FWD]
    assert len(convs) == {"resnet50": 53, "inception_v3": 94}[net]
    for k in convs:
        occ = occupancy(gpu, k.threads, k.regs_per_thread, k.smem_per_block_B)
        # Tensor-core GEMM kernels: 64-384 threads, heavy registers or shared memory, a few
        # blocks per SM at most (the RGB stem runs a CUDA-core kernel).
        assert k.threads in (64, 128, 256, 384)
        assert 1 <= occ.blocks_per_sm <= 8 and occ.limiter in ("registers", "shared_memory")
        assert k.tensor_cores or k.layer in ("conv1", "Conv2d_1a_3x3.conv")
    # At batch 64 every conv fills the GPU without split-K; at batch 1 narrow ones split K.
    if batch == 64:
        assert all(k.blocks >= 0.9 * gpu.sm_count for k in convs)
        assert not any("splitK" in k.library_name for k in convs)
    else:
        assert any("splitK" in k.library_name for k in convs)
    for _, d in kg.nodes(data=True):
        k = d["kernel"]
        if k.kind is KernelKind.ELEMENTWISE:
            assert k.threads == 128
        if k.kind is KernelKind.NORMALIZATION:
            assert k.threads in (128, 512)


# ---------------------------------------------------------------------- review fixes
@pytest.mark.parametrize("net", ["resnet50", "resnet18", "mobilenet_v2"])
def test_fused_kernels_depend_on_every_input_of_what_they_fuse(net: str, h100: GPUSpec) -> None:
    graph = build(net, batch=2)
    kg = lower(graph, h100, precision="fp16", fusion="inference")
    fused = kg.graph["fused"]
    assert fused and all(graph.nodes[conv]["layer"].op is OpType.CONV2D
                         for conv in fused.values())
    if net == "resnet50":
        # The residual add of layer1.0 reads the downsample branch: conv3 must wait for it.
        assert fused["layer1.0.add"] == "layer1.0.conv3"
        assert kg.nodes["layer1.0.conv3"]["kernel"].library_name.endswith("+bn+add+relu")
        assert nx.has_path(kg, "layer1.0.downsample.0", "layer1.0.conv3")
    kernels_of: dict[str, list[str]] = {}
    for name, data in kg.nodes(data=True):
        kernels_of.setdefault(data["layer"], []).append(name)
    for layer, conv in fused.items():
        conv_exit = kernels_of[conv][-1]
        before = nx.ancestors(kg, conv_exit) | {conv_exit}
        # Every kernel any input of the fused-away layer needs runs before the fused conv ends.
        for ancestor in nx.ancestors(graph, layer):
            missing = set(kernels_of.get(ancestor, ())) - before
            assert not missing, (layer, conv, ancestor, missing)
    # Node order stays a valid single-stream program (every edge points forward).
    index = {n: i for i, n in enumerate(kg.nodes)}
    assert all(index[u] < index[v] for u, v in kg.edges)
    assert [k.name for k in kernels_in_order(kg)] == list(kg.nodes)


def _provenance(preset: str) -> Provenance:
    return Provenance(gpu_name="NVIDIA A100", driver="unknown", cuda="unknown", libraries={},
                      date="unknown", script="test", args=(), gpu_preset=preset)


def _fprop_record(name: str, dtype: str, tensor_cores: bool, duration_s: float,
                  ) -> CalibrationRecord:
    return CalibrationRecord(
        library_name=name, kind=KernelKind.CONV_FWD, grid=(7, 8, 1), block=(128, 1, 1),
        regs_per_thread=100, smem_per_block_B=4096, duration_s=duration_s,
        layer_name="layer1.0.conv2", phase="forward", dtype=dtype, tensor_cores=tensor_cores)


def test_calibration_records_apply_only_at_their_precision(a100: GPUSpec) -> None:
    fp32 = _fprop_record("recorded_sgemm", "fp32", False, 4e-5)
    bf16 = _fprop_record("recorded_bf16_xmma", "bf16", True, 9e-5)  # longer: picked if mixed
    both = CalibrationSet(_provenance("a100"), (bf16, fp32))
    graph = build("resnet50", batch=4)
    k32 = _main_kernel(lower(graph, a100, precision="fp32", calibration=both), "layer1.0.conv2")
    assert (k32.library_name, k32.measured_time_s, k32.dtype, k32.tensor_cores) == (
        "recorded_sgemm", 4e-5, "fp32", False)
    k16 = _main_kernel(lower(graph, a100, precision="bf16", calibration=both), "layer1.0.conv2")
    assert (k16.library_name, k16.measured_time_s, k16.dtype, k16.tensor_cores) == (
        "recorded_bf16_xmma", 9e-5, "bf16", True)
    # Only a bf16 record: the fp32 kernel keeps lowering's own configuration.
    only_bf16 = CalibrationSet(_provenance("a100"), (bf16,))
    plain = _main_kernel(lower(graph, a100, precision="fp32"), "layer1.0.conv2")
    kept = _main_kernel(lower(graph, a100, precision="fp32", calibration=only_bf16),
                        "layer1.0.conv2")
    assert kept == plain and kept.measured_time_s is None


def test_precision_is_checked_once_against_the_spec_list(h100: GPUSpec) -> None:
    from gpu_models.spec import PRECISIONS
    from workloads.layers import DTYPE_BYTES
    from workloads.lowering import STORAGE_BYTES, check_precision, math_for

    graph = build("resnet18", batch=1)
    expected = "expected one of " + ", ".join(PRECISIONS)
    for call in (lambda: lower(graph, h100, precision="fp8"),
                 lambda: lower_layer(gemm_layer(8, 8, 8), h100, precision="fp8"),
                 lambda: math_for(h100, "fp8"), lambda: check_precision("fp8")):
        with pytest.raises(GpusimError, match=f"unknown precision 'fp8'; {expected}"):
            call()
    assert tuple(STORAGE_BYTES) == PRECISIONS
    assert all(STORAGE_BYTES[p] == DTYPE_BYTES[p] for p in DTYPE_BYTES)
    assert STORAGE_BYTES["tf32"] == DTYPE_BYTES["fp32"]


def test_kernel_shapes_are_read_only() -> None:
    shapes = lowering_ops.kernel_shapes()
    with pytest.raises(TypeError):
        shapes["elementwise"]["threads"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        shapes["new"] = {}  # type: ignore[index]
    assert isinstance(shapes["multi_tensor_apply"]["max_tensors"], tuple)
    assert lowering_ops.kernel_shapes() is shapes and shapes["elementwise"]["threads"] == 128


def test_cli_op_rejects_zero_stride_kernel_and_negative_padding(
        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["op", "conv2d", "--batch", "1", "--in", "3,8,8", "--out", "8"]
    for extra, option in ((["--kernel", "3", "--stride", "0"], "--stride"),
                          (["--kernel", "0"], "--kernel"),
                          (["--kernel", "3", "--pad", "-1"], "--pad"),
                          (["--kernel", "3", "--batch", "0"], "--batch"),
                          (["--kernel", "3", "--in", "3,0,8"], "--in")):
        with pytest.raises(SystemExit) as exit_:
            main(base + extra)
        assert exit_.value.code == 2, extra
        err = capsys.readouterr().err
        assert f"argument {option}" in err and "Traceback" not in err
    # Errors past the argument parser name the layer, not a "workload".
    assert main([*base, "--kernel", "9"]) == 2
    err = capsys.readouterr().err
    assert "layer 'conv'" in err and "workload" not in err
    for call, what in ((lambda: conv_layer(1, (3, 8, 8), 8, (3, 3), stride=(0, 1)), "stride"),
                       (lambda: conv_layer(0, (3, 8, 8), 8, (3, 3)), "batch"),
                       (lambda: conv_layer(1, (3, 8, 8), 0, (3, 3)), "out_channels"),
                       (lambda: gemm_layer(0, 8, 8), "GEMM shape")):
        with pytest.raises(GpusimError, match=f"layer '(conv|gemm)': {what}"):
            call()


def test_cli_op_cost_models_come_from_the_registry() -> None:
    import argparse

    from gpu_models.cost import list_cost_models
    from sim.cli import build_parser

    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    for form in ("conv2d", "gemm"):
        parser = sub(sub(build_parser(), "op"), form)
        cost = next(a for a in parser._actions if a.dest == "cost_model")
        assert tuple(cost.choices) == list_cost_models()


def test_cli_op_huge_gemm_is_timed_analytically_and_quickly(
        capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from sim.analysis.pricing import ENGINE_BLOCK_CAP, predicted_time_s

    start = time.perf_counter()
    assert main(["op", "gemm", "--m", "100000000", "--n", "100000", "--k", "100000",
                 "--gpu", "h100", "--json"]) == 0
    assert time.perf_counter() - start < 10
    out = json.loads(capsys.readouterr().out)
    assert out["timing"] == "analytic" and sum(k["blocks"] for k in out["kernels"]) > 1e8
    assert out["time_us"] == pytest.approx(sum(k["isolated_time_us"] for k in out["kernels"]))
    assert main(["op", "gemm", "--m", "100000000", "--n", "100000", "--k", "100000"]) == 0
    assert "analytic" in capsys.readouterr().out
    # Below the cap the engine times it, and for one kernel both give the same time.
    h100 = load_preset("h100")
    roofline = get_cost_model("roofline")
    kernels = lower_layer(gemm_layer(4096, 4096, 4096), h100)
    assert sum(k.blocks for k in kernels) <= ENGINE_BLOCK_CAP
    engine_s, timing = predicted_time_s(kernels, h100, roofline)
    assert timing == "engine"
    big = [dataclasses.replace(k, grid=(ENGINE_BLOCK_CAP + 1, 1, 1)) for k in kernels]
    analytic_s, timing = predicted_time_s(big, h100, roofline)
    assert timing == "analytic" and analytic_s > engine_s
