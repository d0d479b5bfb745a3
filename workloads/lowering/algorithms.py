"""Which convolution algorithm a library runs for a pass: the rules of ``data/algorithms.toml``.

cuDNN chooses per call among implicit GEMM, precomputed implicit GEMM, Winograd (fused and
non-fused), FFT, ... by heuristics or, under ``cudnn.benchmark``, by timing them. Lowering
cannot run those heuristics; it follows what the public profiler traces show cuDNN ran,
written down as data: each rule names an algorithm and the architectures, math classes,
layouts, passes and shapes it applies to, with its source. The first matching rule wins;
no match means implicit GEMM, whose tiles the tile tables give
(:mod:`workloads.lowering.tiles`).

A rule marked ``sole_candidate`` says cuDNN has no implicit-GEMM kernel for the pass, so
even a search for the fastest algorithm runs the rule's (sm75's 1x1 weight gradients:
cuDNN 7's ``wgrad_alg0_engine`` / ``wgrad_alg1_engine``, algorithm ``wgrad_engine``).

Example: on the RTX 2080 Ti (sm75) an fp32 3x3 stride-1 convolution runs the non-fused
Winograd transform + batched-GEMM kernels for its forward pass, and its data gradient runs
the fused Winograd kernel when it produces 64 channels or fewer::

    choose_algorithm(arch="sm75", math="simt", layout="nchw", pass_="dgrad",
                     kernel=(3, 3), stride=(1, 1), channels=64).algorithm
    # -> "winograd_fused"
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass

from gpu_models.errors import GpusimError
from workloads.lowering.tiles import MATHS, data_dir

#: Algorithms lowering knows how to launch.
ALGORITHMS: tuple[str, ...] = ("implicit_gemm", "winograd_nonfused", "winograd_fused",
                               "wgrad_engine")
#: Convolution passes a rule can name (the tile tables' names for them).
CONV_PASS_NAMES: tuple[str, ...] = ("fprop", "dgrad", "wgrad")


@dataclass(frozen=True)
class AlgorithmRule:
    """One row of ``data/algorithms.toml``: an algorithm and where it applies."""

    algorithm: str
    arch: tuple[str, ...]
    math: tuple[str, ...]
    layout: tuple[str, ...]
    passes: tuple[str, ...]
    source: str
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    #: Matches only strides above one (in either dimension).
    stride_above_one: bool = False
    #: The channels the pass produces (K for fprop, C for dgrad) must be at most this.
    max_channels: int | None = None
    #: cuDNN zeroes the data gradient first (scalePackedTensor_kernel).
    zero_fill_output: bool = False
    #: The strided data gradient's implicit GEMM multiplies the zeros between the output
    #: gradient's pixels too: it executes ``stride^2`` times the layer's MACs.
    multiplies_zero_taps: bool = False
    #: cuDNN has no implicit-GEMM kernel for the pass: the rule's algorithm is its only
    #: candidate, also where the fastest algorithm is searched for (``cudnnFind``).
    sole_candidate: bool = False
    #: The filter has at most this many taps (R*S).
    max_taps: int | None = None
    #: The weight gradient's implicit GEMM runs one ``K x C`` GEMM per filter tap (reduced
    #: over N*P*Q), each in whole tiles of this tile (a name of the GPU's tile table), its
    #: K and C padded up to the tile, so it executes ``R*S * ceil(K/bm)*bm * ceil(C/bn)*bn
    #: * N*P*Q`` MACs; the padding makes channels of any count run on the tensor cores.
    tap_tile: str | None = None
    #: The forward (data-gradient) implicit GEMM's K loop runs over each filter tap's C (K)
    #: reduced channels in whole ``bk``-deep slices of its tile, padded up per tap, and its
    #: tile's ``bn`` covers the K (C) channels it produces padded up: a forward pass executes
    #: ``N*P*Q * ceil(K/bn)*bn * R*S * ceil(C/bk)*bk`` MACs (a data gradient its useful MACs
    #: padded alike); the padding makes channels of any count run on the tensor cores.
    tap_channel_slices: bool = False

    @property
    def pads_channels(self) -> bool:
        """Whether the rule's kernel pads the channels of each filter tap (``tap_tile``,
        ``tap_channel_slices``), so that it takes any channel count on the tensor cores."""
        return self.tap_tile is not None or self.tap_channel_slices

    def __post_init__(self) -> None:
        for name in ("arch", "math", "layout", "passes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("kernel", "stride"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

        def fail(what: str) -> None:
            raise GpusimError(f"algorithm rule {self.algorithm!r}: {what}")

        if self.algorithm not in ALGORITHMS:
            fail(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if not self.passes or set(self.passes) - set(CONV_PASS_NAMES):
            fail(f"passes must be a non-empty subset of {CONV_PASS_NAMES}")
        if not self.math or set(self.math) - set(MATHS):
            fail(f"math must be a non-empty subset of {MATHS}")
        if not self.arch or not self.layout:
            fail("arch and layout must be non-empty")
        if not self.source:
            fail("every rule needs a source")
        for flag in ("zero_fill_output", "multiplies_zero_taps"):
            if getattr(self, flag) and (self.passes != ("dgrad",)
                                        or self.algorithm != "implicit_gemm"):
                fail(f"{flag} applies to implicit_gemm dgrad rules only")
        if self.algorithm == "wgrad_engine" and (self.passes != ("wgrad",)
                                                 or self.kernel != (1, 1)):
            fail("wgrad_engine applies to 1x1 wgrad rules only (kernel = [1, 1])")
        if self.tap_tile is not None and (self.passes != ("wgrad",)
                                          or self.algorithm != "implicit_gemm"):
            fail("tap_tile applies to implicit_gemm wgrad rules only")
        if self.tap_channel_slices and (set(self.passes) - {"fprop", "dgrad"}
                                        or self.algorithm != "implicit_gemm"):
            fail("tap_channel_slices applies to implicit_gemm fprop and dgrad rules only")
        if self.sole_candidate and self.algorithm == "implicit_gemm":
            fail("sole_candidate applies to rules of another algorithm than implicit_gemm")

    def matches(self, *, arch: str, math: str, layout: str, pass_: str,
                kernel: tuple[int, int], stride: tuple[int, int], channels: int) -> bool:
        """Whether this rule applies to the pass described."""
        return (arch in self.arch and math in self.math and layout in self.layout
                and pass_ in self.passes
                and (self.kernel is None or tuple(kernel) == self.kernel)
                and (self.stride is None or tuple(stride) == self.stride)
                and (not self.stride_above_one or max(stride) > 1)
                and (self.max_channels is None or channels <= self.max_channels)
                and (self.max_taps is None or kernel[0] * kernel[1] <= self.max_taps))


#: What a pass runs when no rule matches.
IMPLICIT_GEMM = AlgorithmRule(
    algorithm="implicit_gemm", arch=("any",), math=MATHS, layout=("any",),
    passes=CONV_PASS_NAMES, source="default: implicit GEMM with the tile tables' tiles")


@functools.cache
def load_rules() -> tuple[AlgorithmRule, ...]:
    """The rules of ``data/algorithms.toml``, in file order."""
    path = data_dir() / "algorithms.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rules = []
    for index, row in enumerate(data.get("rule", [])):
        try:
            rules.append(AlgorithmRule(**row))
        except TypeError as exc:
            raise GpusimError(f"algorithms.toml, rule {index}: {exc}") from None
    return tuple(rules)


def choose_algorithm(*, arch: str, math: str, layout: str, pass_: str,
                     kernel: tuple[int, int], stride: tuple[int, int],
                     channels: int) -> AlgorithmRule:
    """The first rule matching the pass, else :data:`IMPLICIT_GEMM`."""
    for rule in load_rules():
        if rule.matches(arch=arch, math=math, layout=layout, pass_=pass_, kernel=kernel,
                        stride=stride, channels=channels):
            return rule
    return IMPLICIT_GEMM
