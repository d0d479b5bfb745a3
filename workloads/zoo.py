"""The model zoo: CNNs as layer DAGs, layer for layer as torchvision defines them.

Each builder takes a :class:`~workloads.graph.GraphBuilder` (which fixes batch, dtype and
whether the forward pass runs in training mode) and a resolution, and adds the network's
forward operations with torchvision's module names (``layer1.0.conv1``, ``Mixed_5b.
branch5x5_1.conv``, ``features.denseblock1.denselayer3.conv2``). Parameter counts equal
torchvision's ``num_params``; multiply-adds match its published "GFLOPS" column.

Mode-dependent structure follows PyTorch eager semantics: dropout exists only in training
(in eval mode it launches no kernel), and Inception-v3's auxiliary classifier runs only in
training (torchvision skips ``AuxLogits`` in eval mode), so the inference graph of
``inception_v3`` has 27,161,264 - 3,326,696 parameters in its nodes; the reported parameter
count (:func:`workloads.registry.param_count`) is that of the whole model, aux head included,
as torchvision counts it.

Two synthetic networks exist for studying layer parallelism: :func:`pathnet` (PathNet-style
layers of parallel modules) and :func:`randwire` (RandWire-style randomly wired stages).
"""

from __future__ import annotations

import random

import networkx as nx

from gpu_models.errors import GpusimError
from workloads.graph import GraphBuilder, IntPair, Tensor

NUM_CLASSES = 1000


# ---------------------------------------------------------------------- helpers
def _conv_bn_relu(
    b: GraphBuilder, x: Tensor, in_ch: int, out_ch: int, kernel: IntPair, *,
    stride: IntPair = 1, padding: IntPair = 0, groups: int = 1, relu6: bool = False,
    names: tuple[str, str, str] = ("conv", "bn", "relu"),
) -> Tensor:
    x = b.conv2d(x, out_ch, kernel, stride=stride, padding=padding, groups=groups,
                 in_channels=in_ch, name=names[0])
    x = b.batchnorm(x, num_features=out_ch, name=names[1])
    return b.relu6(x, name=names[2]) if relu6 else b.relu(x, name=names[2])


def _classifier_dropout(b: GraphBuilder, x: Tensor, p: float, name: str) -> Tensor:
    return b.dropout(x, p=p, name=name) if b.training else x


# ---------------------------------------------------------------------- AlexNet
def alexnet(b: GraphBuilder, resolution: int) -> None:
    """AlexNet (torchvision's single-GPU variant, no LRN, adaptive 6x6 pool)."""
    x = b.input((b.batch, 3, resolution, resolution))
    with b.scope("features"):
        cfg = [  # (index, out, kernel, stride, padding, in)
            (0, 64, 11, 4, 2, 3), (3, 192, 5, 1, 2, 64), (6, 384, 3, 1, 1, 192),
            (8, 256, 3, 1, 1, 384), (10, 256, 3, 1, 1, 256),
        ]
        for idx, out, k, s, p, cin in cfg:
            x = b.conv2d(x, out, k, stride=s, padding=p, bias=True, in_channels=cin,
                         name=str(idx))
            x = b.relu(x, name=str(idx + 1))
            if idx in (0, 3, 10):
                x = b.maxpool(x, 3, 2, name=str(idx + 2))
    x = b.adaptive_avgpool(x, 6, name="avgpool")
    x = b.flatten(x, name="flatten")
    with b.scope("classifier"):
        x = _classifier_dropout(b, x, 0.5, "0")
        x = b.linear(x, 4096, in_features=256 * 6 * 6, name="1")
        x = b.relu(x, name="2")
        x = _classifier_dropout(b, x, 0.5, "3")
        x = b.linear(x, 4096, in_features=4096, name="4")
        x = b.relu(x, name="5")
        x = b.linear(x, NUM_CLASSES, in_features=4096, name="6")
    b.output(x)


# ---------------------------------------------------------------------- VGG
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def vgg16(b: GraphBuilder, resolution: int) -> None:
    """VGG-16 (configuration D, no batch norm)."""
    x = b.input((b.batch, 3, resolution, resolution))
    cin, idx = 3, 0
    with b.scope("features"):
        for v in _VGG16_CFG:
            if v == "M":
                x = b.maxpool(x, 2, 2, name=str(idx))
                idx += 1
            else:
                assert isinstance(v, int)
                x = b.conv2d(x, v, 3, padding=1, bias=True, in_channels=cin, name=str(idx))
                x = b.relu(x, name=str(idx + 1))
                cin, idx = v, idx + 2
    x = b.adaptive_avgpool(x, 7, name="avgpool")
    x = b.flatten(x, name="flatten")
    with b.scope("classifier"):
        x = b.linear(x, 4096, in_features=512 * 7 * 7, name="0")
        x = b.relu(x, name="1")
        x = _classifier_dropout(b, x, 0.5, "2")
        x = b.linear(x, 4096, in_features=4096, name="3")
        x = b.relu(x, name="4")
        x = _classifier_dropout(b, x, 0.5, "5")
        x = b.linear(x, NUM_CLASSES, in_features=4096, name="6")
    b.output(x)


# ---------------------------------------------------------------------- ResNet
def _basic_block(b: GraphBuilder, x: Tensor, inplanes: int, planes: int, stride: int) -> Tensor:
    identity = x
    with b.branch("main"):
        out = b.conv2d(x, planes, 3, stride=stride, padding=1, in_channels=inplanes, name="conv1")
        out = b.batchnorm(out, num_features=planes, name="bn1")
        out = b.relu(out, name="relu1")
        out = b.conv2d(out, planes, 3, padding=1, in_channels=planes, name="conv2")
        out = b.batchnorm(out, num_features=planes, name="bn2")
    if stride != 1 or inplanes != planes:
        with b.scope("downsample", branch=True):
            identity = b.conv2d(x, planes, 1, stride=stride, in_channels=inplanes, name="0")
            identity = b.batchnorm(identity, num_features=planes, name="1")
    out = b.add([out, identity], name="add")
    return b.relu(out, name="relu2")


def _bottleneck(b: GraphBuilder, x: Tensor, inplanes: int, planes: int, stride: int) -> Tensor:
    identity = x
    width, out_ch = planes, planes * 4
    with b.branch("main"):
        out = b.conv2d(x, width, 1, in_channels=inplanes, name="conv1")
        out = b.batchnorm(out, num_features=width, name="bn1")
        out = b.relu(out, name="relu1")
        # torchvision's ResNet v1.5: the stride sits on the 3x3 convolution.
        out = b.conv2d(out, width, 3, stride=stride, padding=1, in_channels=width, name="conv2")
        out = b.batchnorm(out, num_features=width, name="bn2")
        out = b.relu(out, name="relu2")
        out = b.conv2d(out, out_ch, 1, in_channels=width, name="conv3")
        out = b.batchnorm(out, num_features=out_ch, name="bn3")
    if stride != 1 or inplanes != out_ch:
        with b.scope("downsample", branch=True):
            identity = b.conv2d(x, out_ch, 1, stride=stride, in_channels=inplanes, name="0")
            identity = b.batchnorm(identity, num_features=out_ch, name="1")
    out = b.add([out, identity], name="add")
    return b.relu(out, name="relu3")


def _resnet(b: GraphBuilder, resolution: int, bottleneck: bool, blocks: tuple[int, ...]) -> None:
    x = b.input((b.batch, 3, resolution, resolution))
    x = _conv_bn_relu(b, x, 3, 64, 7, stride=2, padding=3, names=("conv1", "bn1", "relu"))
    x = b.maxpool(x, 3, 2, padding=1, name="maxpool")
    inplanes, expansion = 64, 4 if bottleneck else 1
    block = _bottleneck if bottleneck else _basic_block
    stages = zip((64, 128, 256, 512), blocks, strict=True)
    for stage, (planes, count) in enumerate(stages, start=1):
        with b.scope(f"layer{stage}"):
            for i in range(count):
                stride = 2 if (i == 0 and stage > 1) else 1
                with b.scope(i):
                    x = block(b, x, inplanes, planes, stride)
                inplanes = planes * expansion
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.linear(x, NUM_CLASSES, in_features=512 * expansion, name="fc")
    b.output(x)


def resnet18(b: GraphBuilder, resolution: int) -> None:
    """ResNet-18 (basic blocks 2-2-2-2)."""
    _resnet(b, resolution, False, (2, 2, 2, 2))


def resnet50(b: GraphBuilder, resolution: int) -> None:
    """ResNet-50 v1.5 (bottlenecks 3-4-6-3)."""
    _resnet(b, resolution, True, (3, 4, 6, 3))


def resnet101(b: GraphBuilder, resolution: int) -> None:
    """ResNet-101 v1.5 (bottlenecks 3-4-23-3)."""
    _resnet(b, resolution, True, (3, 4, 23, 3))


def resnet152(b: GraphBuilder, resolution: int) -> None:
    """ResNet-152 v1.5 (bottlenecks 3-8-36-3)."""
    _resnet(b, resolution, True, (3, 8, 36, 3))


# ---------------------------------------------------------------------- GoogLeNet
def _basic_conv(b: GraphBuilder, x: Tensor, cin: int, cout: int, kernel: IntPair, *,
                stride: IntPair = 1, padding: IntPair = 0) -> Tensor:
    """torchvision's ``BasicConv2d``: conv (no bias) + BN + ReLU, named ``conv``/``bn``/``relu``."""
    return _conv_bn_relu(b, x, cin, cout, kernel, stride=stride, padding=padding)


def _inception(b: GraphBuilder, x: Tensor, cin: int, ch1: int, ch3r: int, ch3: int,
               ch5r: int, ch5: int, pool_proj: int) -> Tensor:
    outs = []
    with b.scope("branch1", branch=True):
        outs.append(_basic_conv(b, x, cin, ch1, 1))
    with b.scope("branch2", branch=True):
        with b.scope(0):
            y = _basic_conv(b, x, cin, ch3r, 1)
        with b.scope(1):
            outs.append(_basic_conv(b, y, ch3r, ch3, 3, padding=1))
    with b.scope("branch3", branch=True):
        with b.scope(0):
            y = _basic_conv(b, x, cin, ch5r, 1)
        with b.scope(1):
            # torchvision uses a 3x3 here (a known deviation from the paper's 5x5).
            outs.append(_basic_conv(b, y, ch5r, ch5, 3, padding=1))
    with b.scope("branch4", branch=True):
        y = b.maxpool(x, 3, 1, padding=1, ceil_mode=True, name="0")
        with b.scope(1):
            outs.append(_basic_conv(b, y, cin, pool_proj, 1))
    return b.concat(outs, name="cat")


_GOOGLENET_CFG: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("inception3a", (192, 64, 96, 128, 16, 32, 32)),
    ("inception3b", (256, 128, 128, 192, 32, 96, 64)),
    ("maxpool3", ()),
    ("inception4a", (480, 192, 96, 208, 16, 48, 64)),
    ("inception4b", (512, 160, 112, 224, 24, 64, 64)),
    ("inception4c", (512, 128, 128, 256, 24, 64, 64)),
    ("inception4d", (512, 112, 144, 288, 32, 64, 64)),
    ("inception4e", (528, 256, 160, 320, 32, 128, 128)),
    ("maxpool4", ()),
    ("inception5a", (832, 256, 160, 320, 32, 128, 128)),
    ("inception5b", (832, 384, 192, 384, 48, 128, 128)),
)


def googlenet(b: GraphBuilder, resolution: int) -> None:
    """GoogLeNet (Inception v1) without the auxiliary classifiers, as torchvision ships it."""
    x = b.input((b.batch, 3, resolution, resolution))
    with b.scope("conv1"):
        x = _basic_conv(b, x, 3, 64, 7, stride=2, padding=3)
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="maxpool1")
    with b.scope("conv2"):
        x = _basic_conv(b, x, 64, 64, 1)
    with b.scope("conv3"):
        x = _basic_conv(b, x, 64, 192, 3, padding=1)
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="maxpool2")
    for name, cfg in _GOOGLENET_CFG:
        if name == "maxpool3":
            x = b.maxpool(x, 3, 2, ceil_mode=True, name=name)
        elif name == "maxpool4":
            x = b.maxpool(x, 2, 2, ceil_mode=True, name=name)
        else:
            with b.scope(name):
                x = _inception(b, x, *cfg)
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = _classifier_dropout(b, x, 0.2, "dropout")
    x = b.linear(x, NUM_CLASSES, in_features=1024, name="fc")
    b.output(x)


# ---------------------------------------------------------------------- Inception v3
def _bc(b: GraphBuilder, x: Tensor, name: str, cin: int, cout: int, kernel: IntPair, *,
        stride: IntPair = 1, padding: IntPair = 0) -> Tensor:
    with b.scope(name):
        return _basic_conv(b, x, cin, cout, kernel, stride=stride, padding=padding)


def _inception_a(b: GraphBuilder, x: Tensor, cin: int, pool_features: int) -> Tensor:
    with b.branch("branch1x1"):
        b1 = _bc(b, x, "branch1x1", cin, 64, 1)
    with b.branch("branch5x5"):
        b5 = _bc(b, x, "branch5x5_1", cin, 48, 1)
        b5 = _bc(b, b5, "branch5x5_2", 48, 64, 5, padding=2)
    with b.branch("branch3x3dbl"):
        b3 = _bc(b, x, "branch3x3dbl_1", cin, 64, 1)
        b3 = _bc(b, b3, "branch3x3dbl_2", 64, 96, 3, padding=1)
        b3 = _bc(b, b3, "branch3x3dbl_3", 96, 96, 3, padding=1)
    with b.branch("branch_pool"):
        bp = b.avgpool(x, 3, 1, padding=1, name="avg_pool")
        bp = _bc(b, bp, "branch_pool", cin, pool_features, 1)
    return b.concat([b1, b5, b3, bp], name="cat")


def _inception_b(b: GraphBuilder, x: Tensor, cin: int) -> Tensor:
    with b.branch("branch3x3"):
        b3 = _bc(b, x, "branch3x3", cin, 384, 3, stride=2)
    with b.branch("branch3x3dbl"):
        bd = _bc(b, x, "branch3x3dbl_1", cin, 64, 1)
        bd = _bc(b, bd, "branch3x3dbl_2", 64, 96, 3, padding=1)
        bd = _bc(b, bd, "branch3x3dbl_3", 96, 96, 3, stride=2)
    with b.branch("branch_pool"):
        bp = b.maxpool(x, 3, 2, name="max_pool")
    return b.concat([b3, bd, bp], name="cat")


def _inception_c(b: GraphBuilder, x: Tensor, cin: int, c7: int) -> Tensor:
    with b.branch("branch1x1"):
        b1 = _bc(b, x, "branch1x1", cin, 192, 1)
    with b.branch("branch7x7"):
        b7 = _bc(b, x, "branch7x7_1", cin, c7, 1)
        b7 = _bc(b, b7, "branch7x7_2", c7, c7, (1, 7), padding=(0, 3))
        b7 = _bc(b, b7, "branch7x7_3", c7, 192, (7, 1), padding=(3, 0))
    with b.branch("branch7x7dbl"):
        bd = _bc(b, x, "branch7x7dbl_1", cin, c7, 1)
        bd = _bc(b, bd, "branch7x7dbl_2", c7, c7, (7, 1), padding=(3, 0))
        bd = _bc(b, bd, "branch7x7dbl_3", c7, c7, (1, 7), padding=(0, 3))
        bd = _bc(b, bd, "branch7x7dbl_4", c7, c7, (7, 1), padding=(3, 0))
        bd = _bc(b, bd, "branch7x7dbl_5", c7, 192, (1, 7), padding=(0, 3))
    with b.branch("branch_pool"):
        bp = b.avgpool(x, 3, 1, padding=1, name="avg_pool")
        bp = _bc(b, bp, "branch_pool", cin, 192, 1)
    return b.concat([b1, b7, bd, bp], name="cat")


def _inception_d(b: GraphBuilder, x: Tensor, cin: int) -> Tensor:
    with b.branch("branch3x3"):
        b3 = _bc(b, x, "branch3x3_1", cin, 192, 1)
        b3 = _bc(b, b3, "branch3x3_2", 192, 320, 3, stride=2)
    with b.branch("branch7x7x3"):
        b7 = _bc(b, x, "branch7x7x3_1", cin, 192, 1)
        b7 = _bc(b, b7, "branch7x7x3_2", 192, 192, (1, 7), padding=(0, 3))
        b7 = _bc(b, b7, "branch7x7x3_3", 192, 192, (7, 1), padding=(3, 0))
        b7 = _bc(b, b7, "branch7x7x3_4", 192, 192, 3, stride=2)
    with b.branch("branch_pool"):
        bp = b.maxpool(x, 3, 2, name="max_pool")
    return b.concat([b3, b7, bp], name="cat")


def _inception_e(b: GraphBuilder, x: Tensor, cin: int) -> Tensor:
    with b.branch("branch1x1"):
        b1 = _bc(b, x, "branch1x1", cin, 320, 1)
    with b.branch("branch3x3"):
        b3 = _bc(b, x, "branch3x3_1", cin, 384, 1)
        b3a = _bc(b, b3, "branch3x3_2a", 384, 384, (1, 3), padding=(0, 1))
        b3b = _bc(b, b3, "branch3x3_2b", 384, 384, (3, 1), padding=(1, 0))
        b3 = b.concat([b3a, b3b], name="branch3x3_cat")
    with b.branch("branch3x3dbl"):
        bd = _bc(b, x, "branch3x3dbl_1", cin, 448, 1)
        bd = _bc(b, bd, "branch3x3dbl_2", 448, 384, 3, padding=1)
        bda = _bc(b, bd, "branch3x3dbl_3a", 384, 384, (1, 3), padding=(0, 1))
        bdb = _bc(b, bd, "branch3x3dbl_3b", 384, 384, (3, 1), padding=(1, 0))
        bd = b.concat([bda, bdb], name="branch3x3dbl_cat")
    with b.branch("branch_pool"):
        bp = b.avgpool(x, 3, 1, padding=1, name="avg_pool")
        bp = _bc(b, bp, "branch_pool", cin, 192, 1)
    return b.concat([b1, b3, bd, bp], name="cat")


def _inception_aux(b: GraphBuilder, x: Tensor, cin: int) -> Tensor:
    y = b.avgpool(x, 5, 3, name="avg_pool")
    y = _bc(b, y, "conv0", cin, 128, 1)
    y = _bc(b, y, "conv1", 128, 768, 5)
    y = b.adaptive_avgpool(y, 1, name="adaptive_avg_pool")
    y = b.flatten(y, name="flatten")
    return b.linear(y, NUM_CLASSES, in_features=768, name="fc")


#: Parameters of Inception-v3's AuxLogits head (counted by torchvision's num_params).
INCEPTION_V3_AUX_PARAMS = (
    768 * 128 + 2 * 128  # conv0 + bn
    + 128 * 768 * 25 + 2 * 768  # conv1 + bn
    + 768 * NUM_CLASSES + NUM_CLASSES  # fc
)


def inception_v3(b: GraphBuilder, resolution: int) -> None:
    """Inception v3; the AuxLogits head exists only in training graphs (eval skips it)."""
    x = b.input((b.batch, 3, resolution, resolution))
    x = _bc(b, x, "Conv2d_1a_3x3", 3, 32, 3, stride=2)
    x = _bc(b, x, "Conv2d_2a_3x3", 32, 32, 3)
    x = _bc(b, x, "Conv2d_2b_3x3", 32, 64, 3, padding=1)
    x = b.maxpool(x, 3, 2, name="maxpool1")
    x = _bc(b, x, "Conv2d_3b_1x1", 64, 80, 1)
    x = _bc(b, x, "Conv2d_4a_3x3", 80, 192, 3)
    x = b.maxpool(x, 3, 2, name="maxpool2")
    with b.scope("Mixed_5b"):
        x = _inception_a(b, x, 192, 32)
    with b.scope("Mixed_5c"):
        x = _inception_a(b, x, 256, 64)
    with b.scope("Mixed_5d"):
        x = _inception_a(b, x, 288, 64)
    with b.scope("Mixed_6a"):
        x = _inception_b(b, x, 288)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        with b.scope(name):
            x = _inception_c(b, x, 768, c7)
    aux: Tensor | None = None
    if b.training:
        with b.scope("AuxLogits", branch=True):
            aux = _inception_aux(b, x, 768)
    else:
        # Eval mode skips the head, but its parameters are part of the model.
        b.graph.graph["params_not_in_graph"] = INCEPTION_V3_AUX_PARAMS
    with b.scope("Mixed_7a"):
        x = _inception_d(b, x, 768)
    with b.scope("Mixed_7b"):
        x = _inception_e(b, x, 1280)
    with b.scope("Mixed_7c"):
        x = _inception_e(b, x, 2048)
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = _classifier_dropout(b, x, 0.5, "dropout")
    x = b.flatten(x, name="flatten")
    x = b.linear(x, NUM_CLASSES, in_features=2048, name="fc")
    b.output(x)
    if aux is not None:
        b.output(aux, "aux_logits")


# ---------------------------------------------------------------------- DenseNet
def _dense_layer(b: GraphBuilder, features: list[Tensor], cin: int, growth: int,
                 bn_size: int) -> Tensor:
    # torchvision concatenates all previous feature maps at the start of every dense layer.
    x = features[0] if len(features) == 1 else b.concat(features, name="cat")
    x = b.batchnorm(x, num_features=cin, name="norm1")
    x = b.relu(x, name="relu1")
    x = b.conv2d(x, bn_size * growth, 1, in_channels=cin, name="conv1")
    x = b.batchnorm(x, num_features=bn_size * growth, name="norm2")
    x = b.relu(x, name="relu2")
    return b.conv2d(x, growth, 3, padding=1, in_channels=bn_size * growth, name="conv2")


def densenet121(b: GraphBuilder, resolution: int) -> None:
    """DenseNet-121 (growth 32, blocks 6-12-24-16, bn_size 4, no dropout)."""
    growth, bn_size, blocks = 32, 4, (6, 12, 24, 16)
    x = b.input((b.batch, 3, resolution, resolution))
    with b.scope("features"):
        x = _conv_bn_relu(b, x, 3, 64, 7, stride=2, padding=3,
                          names=("conv0", "norm0", "relu0"))
        x = b.maxpool(x, 3, 2, padding=1, name="pool0")
        channels = 64
        for i, count in enumerate(blocks, start=1):
            with b.scope(f"denseblock{i}"):
                features = [x]
                for j in range(1, count + 1):
                    with b.scope(f"denselayer{j}"):
                        features.append(_dense_layer(b, features, channels, growth, bn_size))
                    channels += growth
                x = b.concat(features, name="cat")
            if i != len(blocks):
                with b.scope(f"transition{i}"):
                    x = b.batchnorm(x, num_features=channels, name="norm")
                    x = b.relu(x, name="relu")
                    x = b.conv2d(x, channels // 2, 1, in_channels=channels, name="conv")
                    x = b.avgpool(x, 2, 2, name="pool")
                channels //= 2
        x = b.batchnorm(x, num_features=channels, name="norm5")
    x = b.relu(x, name="relu")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.linear(x, NUM_CLASSES, in_features=channels, name="classifier")
    b.output(x)


# ---------------------------------------------------------------------- SqueezeNet
def _fire(b: GraphBuilder, x: Tensor, cin: int, squeeze: int, e1: int, e3: int) -> Tensor:
    s = b.conv2d(x, squeeze, 1, bias=True, in_channels=cin, name="squeeze")
    s = b.relu(s, name="squeeze_activation")
    with b.branch("expand1x1"):
        a = b.conv2d(s, e1, 1, bias=True, in_channels=squeeze, name="expand1x1")
        a = b.relu(a, name="expand1x1_activation")
    with b.branch("expand3x3"):
        c = b.conv2d(s, e3, 3, padding=1, bias=True, in_channels=squeeze, name="expand3x3")
        c = b.relu(c, name="expand3x3_activation")
    return b.concat([a, c], name="cat")


def squeezenet1_1(b: GraphBuilder, resolution: int) -> None:
    """SqueezeNet 1.1."""
    x = b.input((b.batch, 3, resolution, resolution))
    with b.scope("features"):
        x = b.conv2d(x, 64, 3, stride=2, bias=True, in_channels=3, name="0")
        x = b.relu(x, name="1")
        x = b.maxpool(x, 3, 2, ceil_mode=True, name="2")
        fires: dict[int, tuple[int, int, int, int]] = {
            3: (64, 16, 64, 64), 4: (128, 16, 64, 64), 6: (128, 32, 128, 128),
            7: (256, 32, 128, 128), 9: (256, 48, 192, 192), 10: (384, 48, 192, 192),
            11: (384, 64, 256, 256), 12: (512, 64, 256, 256),
        }
        for idx in range(3, 13):
            if idx in (5, 8):
                x = b.maxpool(x, 3, 2, ceil_mode=True, name=str(idx))
            else:
                with b.scope(idx):
                    x = _fire(b, x, *fires[idx])
    with b.scope("classifier"):
        x = _classifier_dropout(b, x, 0.5, "0")
        x = b.conv2d(x, NUM_CLASSES, 1, bias=True, in_channels=512, name="1")
        x = b.relu(x, name="2")
        x = b.adaptive_avgpool(x, 1, name="3")
    x = b.flatten(x, name="flatten")
    b.output(x)


# ---------------------------------------------------------------------- MobileNetV2
def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenet_v2(b: GraphBuilder, resolution: int) -> None:
    """MobileNetV2 (width 1.0): inverted residuals with depthwise convolutions, ReLU6."""
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    x = b.input((b.batch, 3, resolution, resolution))
    cin = _make_divisible(32)
    with b.scope("features"):
        with b.scope(0):
            x = _conv_bn_relu(b, x, 3, cin, 3, stride=2, padding=1, relu6=True,
                              names=("0", "1", "2"))
        idx = 1
        for t, c, n, s in settings:
            cout = _make_divisible(c)
            for i in range(n):
                stride = s if i == 0 else 1
                hidden = round(cin * t)
                with b.scope(idx), b.scope("conv"):
                    y, j = x, 0
                    if t != 1:
                        with b.scope(j):
                            y = _conv_bn_relu(b, y, cin, hidden, 1, relu6=True,
                                              names=("0", "1", "2"))
                        j += 1
                    with b.scope(j):
                        y = _conv_bn_relu(b, y, hidden, hidden, 3, stride=stride, padding=1,
                                          groups=hidden, relu6=True, names=("0", "1", "2"))
                    y = b.conv2d(y, cout, 1, in_channels=hidden, name=str(j + 1))
                    y = b.batchnorm(y, num_features=cout, name=str(j + 2))
                if stride == 1 and cin == cout:
                    with b.scope(idx):
                        y = b.add([x, y], name="add")
                x, cin, idx = y, cout, idx + 1
        with b.scope(idx):
            x = _conv_bn_relu(b, x, cin, 1280, 1, relu6=True, names=("0", "1", "2"))
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    with b.scope("classifier"):
        x = _classifier_dropout(b, x, 0.2, "0")
        x = b.linear(x, NUM_CLASSES, in_features=1280, name="1")
    b.output(x)


# ---------------------------------------------------------------------- PathNet
#: Bounds of the synthetic networks' size options. The graph analysis (maximum antichain,
#: a matching over the transitive closure) grows with the cube of the convolutions: at
#: these bounds a network is a few thousand ops and seconds of analysis; beyond them a
#: typo (``nodes=1000``) would run for many minutes.
MAX_PATHNET_LAYERS = 32
MAX_PATHNET_MODULES = 32
MAX_RANDWIRE_NODES = 128
MAX_CHANNELS = 4096


def pathnet(
    b: GraphBuilder, resolution: int, *, layers: int = 4, modules: int = 10, active: int = 4,
    channels: int = 64, seed: int = 0,
) -> None:
    """PathNet-style network: ``layers`` layers of ``modules`` parallel modules.

    A path activates ``active`` modules per layer (chosen with ``random.Random(seed)``); each
    active module (conv 3x3 + BN + ReLU, ``channels`` wide) reads the previous layer's output,
    and the layer's output is the sum of its active modules, as in Fernando et al. (2017).
    Inactive modules are not part of the graph: they do not run. A conv stem reduces the
    image by 4x first; global pooling and a linear classifier close the network.
    """
    for label, value, low, high in (("layers", layers, 1, MAX_PATHNET_LAYERS),
                                    ("modules", modules, 1, MAX_PATHNET_MODULES),
                                    ("active", active, 1, MAX_PATHNET_MODULES),
                                    ("channels", channels, 1, MAX_CHANNELS)):
        if not isinstance(value, int) or not low <= value <= high:
            raise GpusimError(f"pathnet: {label} must be an int from {low} to {high:,} "
                              f"(gpusim's bound), got {value!r}")
    if active > modules:
        raise GpusimError(f"pathnet: active={active} exceeds modules={modules}")
    rng = random.Random(seed)
    x = b.input((b.batch, 3, resolution, resolution))
    with b.scope("stem"):
        x = _conv_bn_relu(b, x, 3, channels, 7, stride=2, padding=3)
        x = b.maxpool(x, 3, 2, padding=1, name="maxpool")
    for i in range(layers):
        chosen = sorted(rng.sample(range(modules), active))
        with b.scope(f"layer{i}"):
            outs = []
            for m in chosen:
                with b.scope(f"module{m}", branch=True):
                    outs.append(_conv_bn_relu(b, x, channels, channels, 3, padding=1))
            x = outs[0] if len(outs) == 1 else b.add(outs, name="sum")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.linear(x, NUM_CLASSES, in_features=channels, name="fc")
    b.output(x)


# ---------------------------------------------------------------------- RandWire
def randwire_dag(nodes: int, k: int, p: float, seed: int) -> nx.DiGraph:
    """A Watts-Strogatz graph made acyclic by orienting every edge low -> high index."""
    if nodes < 2 or k < 2 or k >= nodes or not 0.0 <= p <= 1.0:
        raise GpusimError(
            f"randwire: need 2 <= k < nodes and 0 <= p <= 1, got nodes={nodes} k={k} p={p}"
        )
    if nodes > MAX_RANDWIRE_NODES:
        raise GpusimError(f"randwire: nodes must be <= {MAX_RANDWIRE_NODES} (gpusim's bound; "
                          f"the paper's networks have 32), got {nodes:,}")
    ws = nx.watts_strogatz_graph(nodes, k, p, seed=random.Random(seed))
    dag = nx.DiGraph()
    dag.add_nodes_from(range(nodes))
    dag.add_edges_from((min(u, v), max(u, v)) for u, v in ws.edges())
    return dag


def _sep_conv_node(b: GraphBuilder, x: Tensor, cin: int, cout: int, stride: int) -> Tensor:
    # RandWire node: ReLU -> 3x3 separable conv (depthwise + 1x1) -> BN.
    x = b.relu(x, name="relu")
    x = b.conv2d(x, cin, 3, stride=stride, padding=1, groups=cin, in_channels=cin,
                 name="depthwise")
    x = b.conv2d(x, cout, 1, in_channels=cin, name="pointwise")
    return b.batchnorm(x, num_features=cout, name="bn")


def _randwire_stage(b: GraphBuilder, x: Tensor, cin: int, cout: int, dag: nx.DiGraph) -> Tensor:
    outs: dict[int, Tensor] = {}
    for node in nx.topological_sort(dag):
        preds = sorted(dag.predecessors(node))
        with b.scope(f"node{node}", branch=True):
            if not preds:  # input node: reads the stage input, downsamples by 2
                outs[node] = _sep_conv_node(b, x, cin, cout, 2)
                continue
            agg = outs[preds[0]] if len(preds) == 1 else b.add(
                [outs[q] for q in preds], name="aggregate")
            outs[node] = _sep_conv_node(b, agg, cout, cout, 1)
    sinks = [outs[n] for n in sorted(dag.nodes) if dag.out_degree(n) == 0]
    return sinks[0] if len(sinks) == 1 else b.add(sinks, name="output")


def randwire(
    b: GraphBuilder, resolution: int, *, nodes: int = 32, k: int = 4, p: float = 0.75,
    channels: int = 78, seed: int = 0,
) -> None:
    """RandWire-WS small regime (Xie et al. 2019): three randomly wired stages.

    Every stage is an independent Watts-Strogatz WS(``nodes``, ``k``, ``p``) graph (seeded
    by ``seed`` + stage), oriented by node index; nodes aggregate their inputs by a sum and
    apply ReLU-separable conv-BN; input nodes downsample; the stage output is the sum of the
    output nodes. Stages have ``channels``, 2x and 4x channels at 1/8, 1/16 and 1/32 of the
    resolution, after two stride-2 conv stems; a 1x1 conv to 1280, pooling and a classifier
    follow. (The paper's learned sigmoid aggregation weights are scalars; not modelled.)
    """
    if not isinstance(channels, int) or not 2 <= channels <= MAX_CHANNELS:
        raise GpusimError(f"randwire: channels must be an int from 2 to {MAX_CHANNELS:,} "
                          f"(gpusim's bound), got {channels!r}")
    c = channels
    x = b.input((b.batch, 3, resolution, resolution))
    with b.scope("conv1"):
        x = b.conv2d(x, c // 2, 3, stride=2, padding=1, in_channels=3, name="conv")
        x = b.batchnorm(x, num_features=c // 2, name="bn")
    with b.scope("conv2"):
        x = b.relu(x, name="relu")
        x = b.conv2d(x, c, 3, stride=2, padding=1, in_channels=c // 2, name="conv")
        x = b.batchnorm(x, num_features=c, name="bn")
    cin = c
    for stage, cout in ((3, c), (4, 2 * c), (5, 4 * c)):
        with b.scope(f"conv{stage}"):
            x = _randwire_stage(b, x, cin, cout, randwire_dag(nodes, k, p, seed + stage))
        cin = cout
    with b.scope("classifier"):
        x = b.relu(x, name="relu")
        x = b.conv2d(x, 1280, 1, in_channels=cin, name="conv")
        x = b.batchnorm(x, num_features=1280, name="bn")
        x = b.relu(x, name="relu2")
    x = b.adaptive_avgpool(x, 1, name="avgpool")
    x = b.flatten(x, name="flatten")
    x = b.linear(x, NUM_CLASSES, in_features=1280, name="fc")
    b.output(x)
