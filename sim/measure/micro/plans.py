"""What each experiment of device campaign 1 launches: pure plans, no CUDA.

An experiment is a list of *cases*; a case is a set of streams and kernel launches (in host
order) that run together and are timed together, repeated a few times. Plans are built from
the GPU's SM count and a ``slots`` function giving how many blocks of a kernel shape fit
on one SM: on the device that is CUDA's occupancy API, in a dry run (``plan``) the
project's own calculator. Grids are sized in *waves* (SM count x blocks per SM) so the same
plan means the same thing on any GPU.

The register count of a kernel is set by compiling ``kernels.cu`` as a *variant*: a
register-hungry array of ``pad_regs`` floats kept live in the spin loop, capped with
``-maxrregcount``. The count the compiler actually chose is read back on the device
(``num_regs``) and recorded; the names below only say what was asked for (register counts
seen with nvcc 13.0 for sm_90 are noted as leads, not data).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gpu_models.errors import GpusimError
from gpu_models.units import NS_PER_S

#: Per-block duration of spin kernels in the block-level experiments. Long against launch
#: overhead (~5 us) and timer resolution (~32 ns to 1 us), short enough that a 5-wave case
#: takes half a millisecond.
SPIN_NS = 100_000
#: Spin kernels of the occupancy experiment only need to overlap, not to be long.
OCCUPANCY_SPIN_NS = 30_000
#: float4 elements each block of the streaming kernel copies: 1 MiB read + 1 MiB written.
STREAM_ELEMS_PER_BLOCK = 65_536
#: Bytes one float4 element moves through DRAM in the copy: 16 read + 16 written.
BYTES_PER_ELEM = 32
#: Gate length for cases that enqueue everything before the GPU may start (queues): long
#: enough for the host to enqueue a few hundred launches and event waits.
GATE_NS = 5_000_000
#: CUDA_DEVICE_MAX_CONNECTIONS settings of the queue experiment (default 8, maximum 32).
QUEUE_CONNECTIONS: tuple[int, ...] = (8, 32)


@dataclass(frozen=True)
class Variant:
    """One compiled build of ``kernels.cu``."""

    pad_regs: int
    max_regs: int | None

    @property
    def options(self) -> tuple[str, ...]:
        """Compiler options (valid for NVRTC and nvcc)."""
        opts = [f"-DPAD_REGS={self.pad_regs}"]
        if self.max_regs is not None:
            opts.append(f"--maxrregcount={self.max_regs}")
        return tuple(opts)


#: Register variants; the device reads back the count each really got.
VARIANTS: dict[str, Variant] = {
    "base": Variant(0, None),
    "r32": Variant(24, 32),
    "r64": Variant(56, 64),
    "r128": Variant(112, 128),
    "r255": Variant(232, 255),
}

def compile_options(variant: str) -> tuple[str, ...]:
    """NVRTC options of a variant (recorded in every result file)."""
    return ("-std=c++17", *VARIANTS[variant].options)


#: Registers per thread of each kernel and variant in ptxas's report (``nvcc 13.0 -arch=sm_90
#: -Xptxas -v``, read on the development machine; a test re-reads them where nvcc exists).
#: Only the dry run (``plan``) uses them, to size grids without a GPU.
PTXAS_REGS_SM90: dict[tuple[str, str], int] = {
    ("spin", "base"): 12,
    ("spin", "r32"): 30,
    ("spin", "r64"): 62,
    ("spin", "r128"): 124,
    ("spin", "r255"): 244,
    ("stream", "base"): 18,
}


@dataclass(frozen=True)
class Shape:
    """A kernel's launch shape: which kernel, threads per block, variant, dynamic smem."""

    kernel: str  # "spin" or "stream"
    threads: int
    variant: str = "base"
    smem_dynamic_B: int = 0

    def __post_init__(self) -> None:
        if self.kernel not in ("spin", "stream"):
            raise GpusimError(f"shape kernel must be 'spin' or 'stream' (got {self.kernel!r})")
        if self.variant not in VARIANTS:
            raise GpusimError(f"unknown variant {self.variant!r}; known: {', '.join(VARIANTS)}")
        if self.kernel == "stream" and (self.variant != "base" or self.smem_dynamic_B):
            raise GpusimError("the stream kernel has one build (base) and no dynamic smem")


@dataclass(frozen=True)
class StreamPlan:
    """A stream of a case. ``high`` gets CUDA's greatest priority, ``low`` its least (the
    default of every stream)."""

    name: str
    priority: str = "low"

    def __post_init__(self) -> None:
        if self.priority not in ("low", "high"):
            raise GpusimError(f"stream {self.name!r}: priority must be 'low' or 'high'")


@dataclass(frozen=True)
class KernelPlan:
    """One launch of a case."""

    name: str
    stream: str
    shape: Shape
    grid: int
    #: Spin kernels: nanoseconds each block spins.
    spin_ns: int = 0
    #: Stream kernels: float4 elements each block copies.
    elems_per_block: int = 0

    @property
    def dram_bytes(self) -> int:
        """DRAM bytes the kernel moves by construction (0 for spin kernels)."""
        return self.grid * self.elems_per_block * BYTES_PER_ELEM


@dataclass(frozen=True)
class CasePlan:
    """Streams and launches (in host order) that run and are timed together."""

    name: str
    streams: tuple[StreamPlan, ...]
    kernels: tuple[KernelPlan, ...]
    repeats: int
    #: > 0: a one-block gate kernel spinning this long runs first on the first stream and
    #: every other stream waits for it, so every launch is enqueued before any runs.
    gate_ns: int = 0
    note: str = ""
    #: CUDA_DEVICE_MAX_CONNECTIONS the process ran with (queues only; None = unset).
    connections: int | None = None

    def __post_init__(self) -> None:
        names = {s.name for s in self.streams}
        for k in self.kernels:
            if k.stream not in names:
                raise GpusimError(f"case {self.name!r}: kernel {k.name!r} on unknown stream")
        if len({k.name for k in self.kernels}) != len(self.kernels):
            raise GpusimError(f"case {self.name!r}: duplicate kernel names")
        if self.gate_ns and any(k.name == "gate" for k in self.kernels):
            raise GpusimError(f"case {self.name!r}: 'gate' is reserved for the gate kernel")


#: How many blocks of a shape fit on one SM (CUDA's occupancy API on the device).
SlotsFn = Callable[[Shape], int]


def occupancy_shapes(quick: bool, max_smem_dynamic_B: int) -> list[Shape]:
    """The (threads, registers, shared memory) grid compared against the calculator."""
    threads = (64, 256, 1024) if quick else (32, 64, 128, 256, 384, 512, 768, 1024)
    variants = ("base", "r64", "r255") if quick else tuple(VARIANTS)
    smem = (0, 32 * 1024, max_smem_dynamic_B) if quick else (
        0, 1024, 8 * 1024, 32 * 1024, 48 * 1024, 100 * 1024, 160 * 1024, max_smem_dynamic_B)
    return [Shape("spin", t, v, s) for t in threads for v in variants
            for s in sorted(set(smem)) if s <= max_smem_dynamic_B]


def waves_plan(sm_count: int, slots: SlotsFn, quick: bool) -> list[CasePlan]:
    """Duration vs grid size, one block to past four waves: the staircase."""
    shapes = {"t256": Shape("spin", 256)}
    if not quick:
        shapes["t1024"] = Shape("spin", 1024)
        shapes["t128_smem100k"] = Shape("spin", 128, smem_dynamic_B=100 * 1024)
    cases = []
    for label, shape in shapes.items():
        wave = sm_count * slots(shape)
        if quick:
            grids = {1, wave // 2, wave, wave + 1, 2 * wave, 2 * wave + 1, 4 * wave, 4 * wave + 1}
        else:
            grids = {1, 2, sm_count // 2, sm_count, sm_count + 1}
            grids |= {max(1, k * wave // 4) for k in range(1, 19)}
            grids |= {k * wave + d for k in range(1, 5) for d in (-1, 1)}
        for grid in sorted(g for g in grids if g >= 1):
            kernel = KernelPlan("k", "s0", shape, grid, spin_ns=SPIN_NS)
            cases.append(CasePlan(f"{label}_g{grid}", (StreamPlan("s0"),), (kernel,),
                                  repeats=3 if quick else 5))
    return cases


def concurrency_plan(sm_count: int, slots: SlotsFn, quick: bool) -> list[CasePlan]:
    """Two kernels on two streams: half waves, leftover, priorities, mixed shapes."""
    repeats = 3 if quick else 7
    a = Shape("spin", 256)
    wave_a = sm_count * slots(a)
    two = (StreamPlan("s0"), StreamPlan("s1"))
    hi_second = (StreamPlan("s0"), StreamPlan("s1", "high"))
    hi_first = (StreamPlan("s0", "high"), StreamPlan("s1"))

    def spin(name: str, stream: str, shape: Shape, grid: int) -> KernelPlan:
        return KernelPlan(name, stream, shape, grid, spin_ns=SPIN_NS)

    big = spin("k0", "s0", a, 4 * wave_a + wave_a // 2)
    small = spin("k1", "s1", a, wave_a // 2)
    wide = Shape("spin", 1024)                                   # 32 warps: half an SM's warps
    smem_heavy = Shape("spin", 128, smem_dynamic_B=100 * 1024)   # 2 per SM by shared memory
    smem_huge = Shape("spin", 128, smem_dynamic_B=160 * 1024)    # 1 per SM by shared memory
    reg_heavy = Shape("spin", 256, variant="r255")               # fills the register file
    cases = [
        CasePlan("half_half", two, (spin("k0", "s0", a, wave_a // 2),
                                    spin("k1", "s1", a, wave_a // 2)), repeats,
                 note="two half-wave kernels: expected to overlap fully"),
        CasePlan("leftover", two, (big, small), repeats,
                 note="4.5-wave kernel then a half-wave one: the second gets leftover slots"),
        CasePlan("leftover_priority", hi_second, (big, small), repeats,
                 note="as leftover, the second kernel's stream has the higher priority"),
        CasePlan("leftover_priority_first", hi_first, (big, small), repeats,
                 note="as leftover, the first kernel's stream has the higher priority"),
        CasePlan("shapes_wide_smem", two, (spin("k0", "s0", wide, sm_count),
                                          spin("k1", "s1", smem_heavy, 2 * sm_count)), repeats,
                 note="1024-thread blocks and 100 KiB-smem blocks: both fit one SM together"),
        CasePlan("shapes_regs", two, (spin("k0", "s0", reg_heavy, sm_count * slots(reg_heavy)),
                                      spin("k1", "s1", a, wave_a // 2)), repeats,
                 note="a register-file-filling kernel then a light one: no room to share"),
        CasePlan("shapes_smem", two, (spin("k0", "s0", smem_huge, sm_count),
                                      spin("k1", "s1", smem_heavy, sm_count)), repeats,
                 note="160 KiB + 100 KiB blocks exceed one SM's shared memory: no sharing"),
    ]
    return cases


def bandwidth_plan(sm_count: int, slots: SlotsFn, quick: bool) -> list[CasePlan]:
    """Memory-streaming kernels alone and concurrently.

    ``alone_1block`` gives a block's unloaded duration and ``alone_full`` the bandwidth a
    full GPU reaches; the replay takes both from the data (they are its calibration) and
    predicts the rest.
    """
    repeats = 3 if quick else 5
    s = Shape("stream", 256)
    wave = sm_count * slots(s)
    spin = Shape("spin", 256)
    two = (StreamPlan("s0"), StreamPlan("s1"))
    one = (StreamPlan("s0"),)
    n = STREAM_ELEMS_PER_BLOCK

    def copy(name: str, stream: str, grid: int) -> KernelPlan:
        return KernelPlan(name, stream, s, grid, elems_per_block=n)

    cases = [
        CasePlan("alone_1block", one, (copy("k0", "s0", 1),), repeats,
                 note="calibration: one block alone (unloaded block time)"),
        CasePlan("alone_full", one, (copy("k0", "s0", wave),), repeats,
                 note="calibration: one full wave alone (achieved bandwidth)"),
        CasePlan("alone_half", one, (copy("k0", "s0", wave // 2),), repeats),
        CasePlan("alone_sm", one, (copy("k0", "s0", sm_count),), repeats,
                 note="one block per SM"),
        CasePlan("two_half", two, (copy("k0", "s0", wave // 2), copy("k1", "s1", wave // 2)),
                 repeats, note="two half-wave copies share the bandwidth"),
        CasePlan("copy_and_spin", two, (copy("k0", "s0", wave // 2),
                                        KernelPlan("k1", "s1", spin, sm_count * slots(spin) // 2,
                                                   spin_ns=SPIN_NS)),
                 repeats, note="a spin kernel beside a copy: the spin should not slow"),
    ]
    if not quick:
        cases.append(CasePlan("alone_2waves", one, (copy("k0", "s0", 2 * wave),), repeats))
        cases.append(CasePlan(
            "two_full", two, (copy("k0", "s0", wave), copy("k1", "s1", wave)), repeats,
            note="two full-wave copies: the second gets leftover slots and shared bandwidth"))
    return cases


def queues_plan(connections: int, quick: bool) -> list[CasePlan]:
    """Many streams of small kernels, enqueued behind a gate, under one connections setting.

    ``depth`` order launches all of stream 0's kernels, then stream 1's, ...: with more
    streams than hardware queues, a stream sharing a queue waits behind another stream's
    whole chain (false dependency). ``breadth`` order interleaves them.
    """
    shape = Shape("spin", 64)
    per_stream = 2 if quick else 3
    counts = (4, 8, 16) if quick else (4, 8, 16, 32)
    orders = ("depth",) if quick else ("depth", "breadth")
    cases = []
    for order in orders:
        for n_streams in counts:
            streams = tuple(StreamPlan(f"s{i}") for i in range(n_streams))
            pairs = ([(s, k) for s in range(n_streams) for k in range(per_stream)]
                     if order == "depth" else
                     [(s, k) for k in range(per_stream) for s in range(n_streams)])
            kernels = tuple(KernelPlan(f"s{s}k{k}", f"s{s}", shape, 1, spin_ns=SPIN_NS)
                            for s, k in pairs)
            cases.append(CasePlan(f"c{connections}_{order}_s{n_streams}", streams, kernels,
                                  repeats=2 if quick else 3, gate_ns=GATE_NS,
                                  connections=connections))
    return cases


@dataclass(frozen=True)
class LaunchPlan:
    """Sizes of the launch-overhead experiment."""

    host_launches: int
    device_launches: int
    repeats: int


def launch_plan(quick: bool) -> LaunchPlan:
    """Host launches timed per pass, and chained tiny kernels whose device gaps are read."""
    return LaunchPlan(host_launches=500 if quick else 2000,
                      device_launches=100 if quick else 200,
                      repeats=3 if quick else 5)


def estimate_case_s(case: CasePlan, sm_count: int, slots: SlotsFn, dram_bw_Bps: float,
                    per_run_overhead_s: float = 3e-3) -> float:
    """Rough device + host seconds a case costs (for budgets and the dry run): the kernels
    run one after another at their wave count, plus a per-run overhead, warm-up included."""
    total = case.gate_ns / NS_PER_S
    for k in case.kernels:
        if k.shape.kernel == "spin":
            waves = math.ceil(k.grid / (sm_count * max(1, slots(k.shape))))
            total += waves * k.spin_ns / NS_PER_S
        else:
            total += k.dram_bytes / dram_bw_Bps
    return (case.repeats + 1) * (total + per_run_overhead_s)
