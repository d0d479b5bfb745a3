"""Thread-block tiles of implicit-GEMM and GEMM kernels, and how lowering picks one.

Convolution and matrix-product libraries (cuDNN, cuBLAS, CUTLASS) compute ``C[M x N] =
A[M x K] @ B[K x N]`` in thread-block tiles: each block owns a ``bm x bn`` tile of C and
walks K in slices of ``bk``, staging A and B slices through shared memory in a pipeline of
``stages``. The launch grid is ``ceil(M / bm) x ceil(N / bn) x split_k``; threads, registers
and shared memory per block are properties of the compiled kernel.

The tile families each library ships for an architecture are *data*:
``workloads/lowering/data/<table>.toml`` (``simt``, ``sm70``, ``sm80``, ``sm90``), each row
with its source. A table may ``inherit`` others (Hopper runs Ampere kernels; every table
keeps the SIMT kernels for FP32). :func:`table_for` maps a GPU to its table: sm60/sm61 -> simt,
sm70/sm75 -> sm70, sm80/sm86/sm89 -> sm80, sm90 -> sm90 (newer: the newest table).

Which tile a library picks is decided by proprietary heuristics (cuDNN's) or autotuning.
:func:`select_tile` approximates them with a documented rule:

1. candidates: the table's tiles for the pass (fprop/dgrad/wgrad/gemm) and math (simt,
   tf32, f16) that can launch on the GPU at all (none: the simt tiles of the pass);
2. keep the tiles whose padding waste is small: tile utilisation ``M*N / (padded M *
   padded N)`` at least :data:`UTILISATION_SLACK` of the best candidate's;
3. among those, the largest tile (``bm*bn``; on a tie the GPU's own architecture's kernel
   before an inherited one, then the squarer tile, then fewer threads) whose grid has at least
   :data:`WAVE_FILL` x ``sm_count`` blocks (about one block on every SM);
4. if none fills the GPU, the tile with the most blocks, and then **split-K** chosen for
   wave utilisation (:func:`split_for_waves`): the fewest K slices whose blocks fill the
   waves they occupy to at least :data:`WAVE_FILL` (a wave is ``sm_count x blocks_per_sm``
   blocks), each slice at least ``MIN_K_ITERATIONS * bk`` deep, so a narrow GEMM with a
   long K (weight gradients, batch-1 layers) still fills the GPU; the partial tiles are
   summed by a separate reduction kernel, as cuDNN and cuBLAS do. (cuDNN's own choices in
   the RTX 2080 Ti trace: 36 tiles -> 14 slices, 10 -> 28, 2 -> 112, i.e. 2.5, 1.4 and 1.1
   waves of 204 blocks; the rule gives 11, 19 and 92.) A weight gradient
   (:data:`SPLIT_TO_FILL_WAVES`) is split so too when step 3's tile gives every SM a block
   but fills less than one full wave: the trace's 3x3 stride-2 weight gradients run 144
   tiles in 7 slices.

Checked against a public A100 ResNet-50 TF32 training trace (batch 32): with the per-op rules
of :mod:`workloads.lowering.ops` it gives cuDNN's tile to 48 of the step's 54 forward GEMM
kernels (all 3x3 stages included); the misses are five 1x1 convs where cuDNN took a smaller
tile for more blocks, and the classifier (cuBLAS runs it in FP32, not TF32, by default).
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpu_models.errors import GpusimError
from gpu_models.occupancy import launch_failure, occupancy
from gpu_models.spec import PRECISIONS, GPUSpec

#: GEMM passes a tile can serve.
PASSES: tuple[str, ...] = ("fprop", "dgrad", "wgrad", "gemm")
#: Math classes: CUDA-core FP32, TF32 tensor cores, FP16/BF16 tensor cores.
MATHS: tuple[str, ...] = ("simt", "tf32", "f16")
#: A tile is a candidate if its utilisation is at least this fraction of the best one's.
UTILISATION_SLACK = 0.75
#: A grid "fills the GPU" when it has at least this many blocks per SM.
WAVE_FILL = 0.9
#: Each split-K slice runs at least this many K iterations (bk deep each).
MIN_K_ITERATIONS = 8
#: Passes whose tile is split along K whenever its grid fills less than one full wave (every
#: SM at its occupancy), not only when it leaves SMs without a block: cuDNN's weight
#: gradients (``..._stridedB_splitK`` in the RTX 2080 Ti trace split 36 and 144 tiles, more
#: than one per SM, into 14 and 7 slices).
SPLIT_TO_FILL_WAVES: frozenset[str] = frozenset({"wgrad"})

#: Architecture tag -> tile table, for the architectures the tables were made for.
_ARCH_TABLES: dict[str, str] = {
    "sm60": "simt", "sm61": "simt", "sm70": "sm70", "sm75": "sm70", "sm80": "sm80", "sm86": "sm80",
    "sm87": "sm80", "sm89": "sm80", "sm90": "sm90",
}


@dataclass(frozen=True)
class Tile:
    """One tile family of a library kernel (a row of a tile table)."""

    name: str
    math: tuple[str, ...]
    passes: tuple[str, ...]
    bm: int
    bn: int
    #: Bytes of K one pipeline stage holds per row: bk = bk_B / element size.
    bk_B: int
    stages: int
    threads: int
    regs: int
    smem_B: int
    source: str
    #: The table the row comes from.
    table: str = ""
    #: A forward kernel that writes its output in NHWC (``..._nhwckrsc_nhwc``): on NCHW
    #: tensors cuDNN transposes the result back (nhwcToNchwKernel).
    writes_nhwc: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "math", tuple(self.math))
        object.__setattr__(self, "passes", tuple(self.passes))

        def fail(what: str) -> None:
            raise GpusimError(f"tile {self.name!r} ({self.table or 'table'}): {what}")

        if not self.name:
            fail("name must not be empty")
        if not self.math or set(self.math) - set(MATHS):
            fail(f"math must be a non-empty subset of {MATHS} (got {self.math!r})")
        if not self.passes or set(self.passes) - set(PASSES):
            fail(f"passes must be a non-empty subset of {PASSES} (got {self.passes!r})")
        for field_name in ("bm", "bn", "bk_B", "stages", "threads"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"{field_name} must be a positive integer (got {value!r})")
        for field_name in ("regs", "smem_B"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(f"{field_name} must be an integer >= 0 (got {value!r})")
        if not self.source:
            fail("every tile needs a source")

    def bk(self, elem_B: int) -> int:
        """K depth of one stage for elements of ``elem_B`` bytes."""
        return max(1, self.bk_B // elem_B)


@dataclass(frozen=True)
class TileChoice:
    """The tile picked for one GEMM, with its grid and split-K."""

    tile: Tile
    tiles_m: int
    tiles_n: int
    split_k: int

    @property
    def blocks(self) -> int:
        """Blocks of the GEMM kernel (one per tile and K slice)."""
        return self.tiles_m * self.tiles_n * self.split_k


def data_dir() -> Any:
    """The folder of the lowering's data tables (tiles per architecture, kernel shapes)."""
    return resources.files("workloads.lowering") / "data"


@functools.cache
def load_table(name: str) -> tuple[Tile, ...]:
    """The tiles of table ``name`` followed by those of the tables it inherits."""
    path = data_dir() / f"{name}.toml"
    if not path.is_file():
        raise GpusimError(f"unknown tile table {name!r}")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    own: list[Tile] = []
    for index, row in enumerate(data.get("tile", [])):
        try:
            own.append(Tile(table=name, **row))
        except TypeError as exc:
            raise GpusimError(f"tile table {name!r}, tile {index}: {exc}") from None
    inherited: list[Tile] = []
    for parent in data.get("inherit", []):
        inherited.extend(load_table(parent))
    return (*own, *inherited)


def table_for(gpu: GPUSpec) -> str:
    """The tile table of ``gpu``'s architecture (the newest table for unknown newer ones)."""
    arch = gpu.arch
    if arch in _ARCH_TABLES:
        return _ARCH_TABLES[arch]
    major = gpu.compute_capability[0]
    if major >= 9:
        return "sm90"
    if major == 8:
        return "sm80"
    if major == 7:
        return "sm70"
    return "simt"


def check_precision(precision: str) -> None:
    """:class:`GpusimError` unless ``precision`` is one of ``gpu_models.spec.PRECISIONS``."""
    if precision not in PRECISIONS:
        raise GpusimError(f"unknown precision {precision!r}; expected one of "
                          f"{', '.join(PRECISIONS)}")


def math_for(gpu: GPUSpec, precision: str) -> str:
    """The math class a library uses for ``precision`` on ``gpu``.

    Tensor cores where the GPU has them for that precision (its tensor peak is > 0), CUDA
    cores (simt) otherwise and always for fp32. A table without tensor-op tiles for the
    pass falls back to its simt tiles in :func:`select_tile`.
    """
    tensor_peak = {
        "fp32": 0.0,
        "tf32": gpu.peak_tf32_tensor_flop_per_s,
        "fp16": gpu.peak_fp16_tensor_flop_per_s,
        "bf16": gpu.peak_bf16_tensor_flop_per_s,
    }.get(precision)
    if tensor_peak is None:
        check_precision(precision)  # raises: the one message for an unknown precision
    if not tensor_peak or tensor_peak <= 0:
        return "simt"
    return "tf32" if precision == "tf32" else "f16"


@functools.lru_cache(maxsize=256)
def _launchable(gpu: GPUSpec, pass_: str, math_: str) -> tuple[Tile, ...]:
    """The tiles of ``gpu``'s table for this pass and math that can launch on it."""
    return tuple(t for t in load_table(table_for(gpu)) if pass_ in t.passes and math_ in t.math
                 and launch_failure(gpu, t.threads, t.regs, t.smem_B) is None)


def select_tile(
    gpu: GPUSpec, pass_: str, math_: str, m: int, n: int, k: int, elem_B: int,
    *, batch: int = 1, allow_split_k: bool = True,
) -> TileChoice:
    """The tile, grid and split-K for ``batch`` independent ``M x N x K`` GEMMs.

    See the module docstring for the rule; ``batch`` GEMMs (grid z) count towards filling
    the GPU.
    """
    if min(m, n, k) < 1:
        raise GpusimError(f"GEMM shape must be positive (got M={m}, N={n}, K={k})")
    # A library without a tensor-op kernel that fits falls back to its CUDA-core kernels.
    candidates = _launchable(gpu, pass_, math_) or _launchable(gpu, pass_, "simt")
    if not candidates:
        raise GpusimError(f"no {math_} {pass_} tile of table {table_for(gpu)!r} can launch on "
                          f"{gpu.name} (shared memory or registers per block too small)")

    def utilisation(t: Tile) -> float:
        return (m * n) / (math.ceil(m / t.bm) * t.bm * math.ceil(n / t.bn) * t.bn)

    def blocks(t: Tile) -> int:
        return math.ceil(m / t.bm) * math.ceil(n / t.bn) * batch

    best = max(utilisation(t) for t in candidates)
    kept = [t for t in candidates if utilisation(t) >= UTILISATION_SLACK * best]
    native = table_for(gpu)
    kept.sort(key=lambda t: (-t.bm * t.bn, t.table != native, max(t.bm, t.bn) / min(t.bm, t.bn),
                             t.threads, t.name))
    fill = WAVE_FILL * gpu.sm_count
    for t in kept:
        if blocks(t) >= fill:
            split = 1
            if allow_split_k and pass_ in SPLIT_TO_FILL_WAVES and blocks(t) < fill * max(
                    1, occupancy(gpu, t.threads, t.regs, t.smem_B).blocks_per_sm):
                split = split_for_waves(gpu, t, blocks(t), k, elem_B)
            return TileChoice(t, math.ceil(m / t.bm), math.ceil(n / t.bn), split)
    small = max(kept, key=lambda t: (blocks(t), t.bm * t.bn))
    split = split_for_waves(gpu, small, blocks(small), k, elem_B) if allow_split_k else 1
    return TileChoice(small, math.ceil(m / small.bm), math.ceil(n / small.bn), split)


def split_for_waves(gpu: GPUSpec, tile: Tile, blocks: int, k: int, elem_B: int) -> int:
    """The split-K that fills the waves of ``blocks`` tiles: the smallest split ``s`` with
    wave utilisation ``blocks*s / (ceil(blocks*s / W) * W) >= WAVE_FILL`` (``W`` blocks in a
    wave), else the split with the best utilisation (the smallest on a tie). Each slice is
    at least ``MIN_K_ITERATIONS`` ``bk``-deep iterations long, so ``s <= K // (8 * bk)``.

    Example: 36 tiles of a 3-blocks-per-SM kernel on 68 SMs (``W = 204``): 5 slices fill
    one wave to 0.88, 11 slices fill two to 0.97, so the split is 11 (396 blocks).
    """
    occ = occupancy(gpu, tile.threads, tile.regs, tile.smem_B)
    wave = gpu.sm_count * max(1, occ.blocks_per_sm)
    most = max(1, k // (MIN_K_ITERATIONS * tile.bk(elem_B)))
    # Past ten waves any split fills them to >= 0.9: no need to look further.
    most = min(most, max(1, math.ceil(10 * wave / blocks)))
    best, best_fill = 1, 0.0
    for split in range(1, most + 1):
        total = blocks * split
        fill = total / (math.ceil(total / wave) * wave)
        if fill >= WAVE_FILL:
            return split
        if fill > best_fill:
            best, best_fill = split, fill
    return best
