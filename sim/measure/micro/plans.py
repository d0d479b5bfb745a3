"""What each experiment of the device campaign launches: pure plans, no CUDA.

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

Four kernels (``kernels.cu``): ``spin`` (polls the global timer: latency-bound), ``sleep``
(nanosleeps: latency-bound and nearly silent), ``fma`` (FP32 FMAs in ``ilp`` independent
chains: compute-bound, with a demand on the SM set by warps x ILP) and ``stream`` (copies a
fixed number of bytes: memory-bound, with a parallelism set by its resident warps).

Every case says which *mechanism* of the execution model it tests (:data:`MECHANISMS`), and
every kernel of a pair names the case where it ran alone (``reference``) and the case where
each of its blocks had an SM to itself (``unimpeded``): the replay takes block times from
those, so what a pair adds is a prediction, not a fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gpu_models.errors import GpusimError
from gpu_models.units import KIB, NS_PER_S

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
#: Gate of the contention pairs: long enough to enqueue both kernels, so that both become
#: ready at the same instant (the gate's end) instead of one launch call apart.
CONTENTION_GATE_NS = 200_000
#: Alone time each FMA block is sized for (on the planning model below; measured anyway).
FMA_TARGET_NS = 100_000
#: FMA chain steps per loop trip in ``kernels.cu`` (``iters`` is a multiple of it).
FMA_UNROLL = 16
#: ILPs compiled into ``kernels.cu`` (one ``fma_ilp<N>`` entry point each).
FMA_ILPS: tuple[int, ...] = (1, 2, 4, 8)
#: Planning model of an FMA block, only to size ``iters``: a dependent FP32 FMA waits about
#: this many cycles, and each of an SM's 4 sub-partitions issues one warp instruction per
#: cycle, so a step of the ILP chains takes max(latency, warps per sub-partition x ILP)
#: cycles. The measured alone time is what the replay uses.
FMA_LATENCY_CYCLES = 4
SM_SUB_PARTITIONS = 4
#: ``mul`` and ``add`` of the FMA chains (a fixed point at 10: no overflow, no denormals).
FMA_MUL = 0.9
FMA_ADD = 1.0
#: float4 elements per thread the streaming kernel copies in the contention and occupancy
#: cases (8 KiB per thread), at least STREAM_ELEMS_PER_BLOCK per block: wide blocks copy
#: more, so block times stay long against launch costs at any occupancy.
STREAM_ELEMS_PER_THREAD = 256

def pair_spoiler_B(smem_per_sm_B: int) -> int:
    """Dynamic shared memory with which 2 blocks fit on an SM and 3 do not, whatever their
    size (the bandwidth sweep's spoiler, as in gpu-benches' gpu-stream): just under half the
    SM's shared memory, less the per-block reservation, in whole KiB."""
    return (smem_per_sm_B // 2 - 2 * KIB) // KIB * KIB


def exclusive_spoiler_B(smem_per_sm_B: int) -> int:
    """Dynamic shared memory with which only 1 block fits on an SM: just over half of it."""
    return (smem_per_sm_B // 2 + KIB) // KIB * KIB

#: Block sizes of the sweep (resident warps per SM = blocks per SM x threads / 32).
SWEEP_THREADS_QUICK: tuple[int, ...] = (32, 128, 512, 1024)
SWEEP_THREADS_FULL: tuple[int, ...] = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
#: Bytes/s one resident warp of the streaming kernel is assumed to move, for time estimates
#: only (pessimistic; Little's law with one 512 B load in flight per warp and ~700 ns).
EST_BYTES_PER_S_PER_WARP = 0.5e9

#: What a case tests, and whether the engine models it today (the replay reports every
#: case; the tests hold the engine only to the mechanisms it has):
#: ``alone``: one kernel alone, the replay's input for the cases that name it;
#: ``sm_throughput``: co-resident compute-bound blocks share their SM's FP32 pipe (issue 14);
#: ``latency``: co-resident latency-bound blocks, expected not to slow each other;
#: ``dram_sharing``: memory-bound kernels whose summed demand may exceed the bandwidth;
#: ``mixed``: blocks of different kinds sharing SMs (compute beside memory or latency);
#: ``placement``: blocks of two kernels that cannot, or need not, share an SM.
MECHANISMS: tuple[str, ...] = ("alone", "sm_throughput", "latency", "dram_sharing", "mixed",
                               "placement")


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
    "r32": Variant(23, 32),  # 24 spills on sm_75
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
#: Keys are (``Shape.function``, variant).
PTXAS_REGS_SM90: dict[tuple[str, str], int] = {
    ("spin", "base"): 12,
    ("spin", "r32"): 29,
    ("spin", "r64"): 62,
    ("spin", "r128"): 124,
    ("spin", "r255"): 244,
    ("stream", "base"): 18,
    ("sleep", "base"): 12,
    ("fma_ilp1", "base"): 12,
    ("fma_ilp2", "base"): 14,
    ("fma_ilp4", "base"): 18,
    ("fma_ilp8", "base"): 24,
}
#: Kernel kinds of a Shape.
KERNEL_KINDS: tuple[str, ...] = ("spin", "sleep", "fma", "stream")


@dataclass(frozen=True)
class Shape:
    """A kernel's launch shape: which kernel, threads per block, variant, dynamic smem
    (held, not used: a spoiler that sets how many blocks fit an SM) and, for ``fma``, the
    number of independent FMA chains per thread."""

    kernel: str  # one of KERNEL_KINDS
    threads: int
    variant: str = "base"
    smem_dynamic_B: int = 0
    ilp: int = 0

    def __post_init__(self) -> None:
        if self.kernel not in KERNEL_KINDS:
            raise GpusimError(f"shape kernel must be one of {', '.join(KERNEL_KINDS)} "
                              f"(got {self.kernel!r})")
        if self.variant not in VARIANTS:
            raise GpusimError(f"unknown variant {self.variant!r}; known: {', '.join(VARIANTS)}")
        if self.kernel != "spin" and self.variant != "base":
            raise GpusimError(f"the {self.kernel} kernel has one build (base); register "
                              "variants are for spin")
        if (self.kernel == "fma") != (self.ilp != 0):
            raise GpusimError("ilp is set for fma shapes only")
        if self.kernel == "fma" and self.ilp not in FMA_ILPS:
            raise GpusimError(f"fma ilp must be one of {FMA_ILPS} (got {self.ilp})")

    @property
    def function(self) -> str:
        """The entry point's short name: ``spin``, ``sleep``, ``stream`` or ``fma_ilp<N>``."""
        return f"fma_ilp{self.ilp}" if self.kernel == "fma" else self.kernel

    @property
    def warps(self) -> int:
        return math.ceil(self.threads / 32)

    @property
    def label(self) -> str:
        """A short name for case names: ``fma4_t256``, ``stream_t64_smem100k``."""
        head = f"fma{self.ilp}" if self.kernel == "fma" else self.kernel
        tail = f"_smem{self.smem_dynamic_B // KIB}k" if self.smem_dynamic_B else ""
        var = "" if self.variant == "base" else f"_{self.variant}"
        return f"{head}_t{self.threads}{var}{tail}"


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
    #: Spin and sleep kernels: nanoseconds each block spins or sleeps.
    spin_ns: int = 0
    #: Stream kernels: float4 elements each block copies.
    elems_per_block: int = 0
    #: FMA kernels: chain steps per thread (a multiple of FMA_UNROLL).
    iters: int = 0
    #: Case whose measured block time the replay gives this kernel: the same kernel alone
    #: (at the same grid, except where the case tests what more blocks per SM change);
    #: "" for none (the older experiments' own rules apply).
    reference: str = ""
    #: Case where this kernel's shape ran alone with one block per SM; "" for none.
    unimpeded: str = ""

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise GpusimError(f"kernel {self.name!r}: grid must be >= 1")
        needs = {"spin": self.spin_ns, "sleep": self.spin_ns, "stream": self.elems_per_block,
                 "fma": self.iters}[self.shape.kernel]
        if self.shape.kernel != "spin" and needs <= 0:
            raise GpusimError(f"kernel {self.name!r}: a {self.shape.kernel} kernel needs its "
                              "work per block (spin_ns, elems_per_block or iters) > 0")
        if self.iters % FMA_UNROLL:
            raise GpusimError(f"kernel {self.name!r}: iters must be a multiple of {FMA_UNROLL}")

    @property
    def dram_bytes(self) -> int:
        """DRAM bytes the kernel moves by construction (0 for all but stream kernels)."""
        return self.grid * self.dram_bytes_per_block

    @property
    def dram_bytes_per_block(self) -> int:
        return self.elems_per_block * BYTES_PER_ELEM

    @property
    def flop_per_block(self) -> int:
        """FP32 FLOPs one block does by construction (an FMA is 2; 0 for non-fma kernels)."""
        return 2 * self.shape.ilp * self.iters * self.shape.threads


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
    #: What the case tests (one of MECHANISMS; "" for the scheduling experiments).
    mechanism: str = ""

    def __post_init__(self) -> None:
        if self.mechanism and self.mechanism not in MECHANISMS:
            raise GpusimError(f"case {self.name!r}: unknown mechanism {self.mechanism!r}")
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


def bandwidth_plan(sm_count: int, slots: SlotsFn, quick: bool, *,
                   smem_per_sm_B: int) -> list[CasePlan]:
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
    return cases + occupancy_sweep_plan(sm_count, slots, quick, smem_per_sm_B=smem_per_sm_B)


def stream_elems(threads: int) -> int:
    """float4 elements per block of the contention and sweep streaming kernels."""
    return max(STREAM_ELEMS_PER_BLOCK, threads * STREAM_ELEMS_PER_THREAD)


def occupancy_sweep_plan(sm_count: int, slots: SlotsFn, quick: bool, *,
                         smem_per_sm_B: int) -> list[CasePlan]:
    """DRAM bandwidth against resident warps per SM, alone and in pairs.

    Every block size runs with a shared-memory spoiler (:func:`pair_spoiler_B`: at most 2
    blocks per SM), as three
    cases: ``occ1_t<N>`` one block per SM (the reference: each block alone on its SM),
    ``occ2_t<N>`` one kernel with two blocks per SM, and ``occpair_t<N>`` two kernels of one
    block per SM each on two streams (behind a gate, so both start together). The GPU-wide
    rate of occ1 against the resident warps is the memory-level-parallelism curve; occ2 and
    occpair, replayed from occ1's block time, show whether two blocks' worth of warps on an
    SM add their bandwidth the same way within one kernel and across two.
    """
    repeats = 3 if quick else 4
    one = (StreamPlan("s0"),)
    two = (StreamPlan("s0"), StreamPlan("s1"))
    cases = []
    for threads in (SWEEP_THREADS_QUICK if quick else SWEEP_THREADS_FULL):
        shape = Shape("stream", threads, smem_dynamic_B=pair_spoiler_B(smem_per_sm_B))
        per_sm = slots(shape)
        if per_sm < 2:  # a GPU whose SM cannot hold two spoiled blocks: no pair to measure
            continue
        ref = f"occ1_t{threads}"

        def copy(name: str, stream: str, grid: int, reference: str,
                 shape: Shape = shape, threads: int = threads, ref: str = ref) -> KernelPlan:
            return KernelPlan(name, stream, shape, grid, elems_per_block=stream_elems(threads),
                              reference=reference, unimpeded=ref)

        warps = shape.warps
        cases += [
            CasePlan(ref, one, (copy("k0", "s0", sm_count, ref),), repeats, mechanism="alone",
                     note=f"{warps} resident warps per SM: the reference"),
            CasePlan(f"occ2_t{threads}", one, (copy("k0", "s0", 2 * sm_count, ref),), repeats,
                     mechanism="dram_sharing",
                     note=f"{2 * warps} resident warps per SM, one kernel"),
            CasePlan(f"occpair_t{threads}", two, (copy("k0", "s0", sm_count, ref),
                                                  copy("k1", "s1", sm_count, ref)), repeats,
                     gate_ns=CONTENTION_GATE_NS, mechanism="dram_sharing",
                     note=f"{2 * warps} resident warps per SM, two kernels of {warps} each"),
        ]
    return cases


def fma_iters(threads: int, ilp: int, clock_hz: float, target_ns: int = FMA_TARGET_NS) -> int:
    """Chain steps per thread that make one block of ``threads`` x ``ilp`` run about
    ``target_ns`` alone on its SM under the planning model (FMA_LATENCY_CYCLES)."""
    per_partition = math.ceil(math.ceil(threads / 32) / SM_SUB_PARTITIONS)
    cycles_per_step = max(FMA_LATENCY_CYCLES, per_partition * ilp)
    steps = target_ns / NS_PER_S * clock_hz / cycles_per_step
    return max(FMA_UNROLL, round(steps / FMA_UNROLL) * FMA_UNROLL)


def fma_model_demand(shape: Shape) -> float:
    """The planning model's share of an SM's FP32 issue one block of ``shape`` uses alone
    (1 = saturating): its warps are spread over the 4 sub-partitions, each of which issues
    one warp FMA per cycle at most and has warps x ILP FMAs in flight per FMA latency. Used
    to pick and describe cases; the replay measures it (alone FLOP rate / the SM's peak)."""
    per = [shape.warps // SM_SUB_PARTITIONS + (i < shape.warps % SM_SUB_PARTITIONS)
           for i in range(SM_SUB_PARTITIONS)]
    return sum(min(1.0, w * shape.ilp / FMA_LATENCY_CYCLES) for w in per) / SM_SUB_PARTITIONS


#: Shapes of the contention experiment, by label used in case names.
def _contention_shapes(smem_per_sm_B: int) -> dict[str, Shape]:
    return {
        "fma1_t128": Shape("fma", 128, ilp=1),
        "fma2_t128": Shape("fma", 128, ilp=2),
        "fma8_t128": Shape("fma", 128, ilp=8),
        "fma1_t256": Shape("fma", 256, ilp=1),
        "fma4_t256": Shape("fma", 256, ilp=4),
        "fma4_t1024": Shape("fma", 1024, ilp=4),
        "fma8_t1024": Shape("fma", 1024, ilp=8),
        "fma4_t256_excl": Shape("fma", 256, ilp=4,
                                smem_dynamic_B=exclusive_spoiler_B(smem_per_sm_B)),
        "spin_t256": Shape("spin", 256),
        "sleep_t256": Shape("sleep", 256),
        "stream_t64": Shape("stream", 64),
        "stream_t1024": Shape("stream", 1024),
    }


#: The contention pairs: (name, shape A, blocks of A per SM, shape B, per SM of B, mechanism,
#: in the quick pass, note). "per SM" is a grid size in SMs: 1 = one block per SM, 0.5 = half
#: the SMs, "half" = half a wave of that shape. Grouped by what they pin down.
_PAIRS: tuple[tuple[str, str, float | str, str, float | str, str, bool, str], ...] = (
    # compute-bound, one block of each per SM: how two blocks share the FP32 pipe
    ("fma_low_low", "fma1_t128", 1, "fma1_t128", 1, "sm_throughput", True,
     "two low-demand blocks (~1/4 of the FP32 pipe each): room for both"),
    ("fma_full_full", "fma4_t256", 1, "fma4_t256", 1, "sm_throughput", True,
     "two saturating blocks: each expected at about half speed"),
    ("fma_low_full", "fma1_t128", 1, "fma4_t256", 1, "sm_throughput", True,
     "low beside saturating: max-min fair, demand-proportional and warp-proportional "
     "sharing differ here"),
    ("fma_half_half", "fma1_t256", 1, "fma1_t256", 1, "sm_throughput", False,
     "two blocks of ~1/2 demand: the sum just fills the pipe"),
    ("fma_half_full", "fma1_t256", 1, "fma4_t256", 1, "sm_throughput", False,
     "half-demand beside saturating"),
    ("fma_ilp2_ilp8", "fma2_t128", 1, "fma8_t128", 1, "sm_throughput", False,
     "same 4 warps, ILP 2 against ILP 8"),
    ("fma_wide_full", "fma4_t1024", 1, "fma4_t256", 1, "sm_throughput", False,
     "32 warps against 8 warps, both saturating alone"),
    ("fma_low_wide", "fma1_t128", 1, "fma4_t1024", 1, "sm_throughput", False,
     "4 low-demand warps beside 32 saturating warps"),
    # several blocks of each per SM
    ("fma_full_full_half", "fma4_t256", "half", "fma4_t256", "half", "sm_throughput", True,
     "half a wave each: 4 saturating blocks of each kernel per SM"),
    ("fma_low_low_half", "fma1_t128", "half", "fma1_t128", "half", "sm_throughput", False,
     "half a wave each of low-demand blocks: together over the pipe"),
    # blocks that do not share an SM
    ("fma_disjoint", "fma4_t256", 0.5, "fma4_t256", 0.5, "placement", True,
     "half the SMs each: if blocks go to the emptiest SMs, none share"),
    ("fma_exclusive", "fma4_t256_excl", 1, "fma4_t256_excl", 1, "placement", False,
     "one block per SM by shared memory: the second kernel runs after the first"),
    # latency-bound
    ("spin_spin", "spin_t256", 1, "spin_t256", 1, "latency", True,
     "two timer-polling blocks per SM: expected not to slow each other"),
    ("spin_spin_half", "spin_t256", "half", "spin_t256", "half", "latency", False,
     "half a wave each of timer-polling blocks"),
    ("sleep_sleep", "sleep_t256", 1, "sleep_t256", 1, "latency", False,
     "two sleeping blocks per SM"),
    # memory-bound
    ("mem_low_low", "stream_t64", 1, "stream_t64", 1, "dram_sharing", True,
     "2 warps per SM each: far below the bandwidth, expected to add up"),
    ("mem_high_high", "stream_t1024", 1, "stream_t1024", 1, "dram_sharing", True,
     "32 warps per SM each: the pair is bandwidth-bound and shares it"),
    ("mem_low_high", "stream_t64", 1, "stream_t1024", 1, "dram_sharing", False,
     "low-occupancy copy beside a high-occupancy one"),
    # mixed
    ("mix_fma_mem", "fma4_t256", 1, "stream_t1024", 1, "mixed", True,
     "saturating FMA beside a high-occupancy copy: different pipes"),
    ("mix_fma_spin", "fma4_t256", 1, "spin_t256", 1, "mixed", True,
     "saturating FMA beside a timer-polling spin: do the polls take issue slots?"),
    ("mix_fma_sleep", "fma4_t256", 1, "sleep_t256", 1, "mixed", False,
     "saturating FMA beside a sleeping block (issues almost nothing)"),
    ("mix_fma_memlow", "fma4_t256", 1, "stream_t64", 1, "mixed", False,
     "saturating FMA beside a low-occupancy copy"),
    ("mix_lowfma_spin", "fma1_t128", 1, "spin_t256", 1, "mixed", False,
     "low-demand FMA beside a timer-polling spin"),
)


def contention_plan(sm_count: int, slots: SlotsFn, quick: bool, clock_hz: float, *,
                    smem_per_sm_B: int) -> list[CasePlan]:
    """Two kernels on two streams whose blocks share SMs (or not), and each alone.

    First the calibration cases (the SM's FP32 peak, the achieved DRAM bandwidth), then every
    kernel of the pairs alone at its grid and at one block per SM (the replay's inputs), then
    the pairs. Both kernels of a pair wait behind a short gate kernel, so they become ready at
    the same instant and the first one's blocks are all placed before the second's (the
    leftover rule), whatever the host's launch gap.
    """
    repeats = 3 if quick else 6
    shapes = _contention_shapes(smem_per_sm_B)
    pairs = [p for p in _PAIRS if p[6] or not quick]
    one = (StreamPlan("s0"),)
    two = (StreamPlan("s0"), StreamPlan("s1"))

    def grid_of(label: str, per_sm: float | str) -> int:
        if per_sm == "half":
            return max(1, sm_count * slots(shapes[label]) // 2)
        return max(1, round(sm_count * float(per_sm)))

    def alone_name(label: str, grid: int) -> str:
        return f"alone_{label}_g{grid}"

    def kernel(name: str, stream: str, label: str, grid: int, reference: str = "",
               unimpeded: str = "") -> KernelPlan:
        shape = shapes[label]
        work: dict[str, int] = {"spin": {"spin_ns": SPIN_NS}, "sleep": {"spin_ns": SPIN_NS},
                                "stream": {"elems_per_block": stream_elems(shape.threads)},
                                "fma": {"iters": fma_iters(shape.threads, shape.ilp,
                                                           clock_hz)}}[shape.kernel]
        return KernelPlan(name, stream, shape, grid, reference=reference, unimpeded=unimpeded,
                          **work)

    # Kernels alone: every (shape, grid) of a pair, and every shape at one block per SM.
    alone: dict[tuple[str, int], None] = {}
    for _, a, ga, b, gb, *_rest in pairs:
        for label, per_sm in ((a, ga), (b, gb)):
            alone[(label, sm_count)] = None
            alone[(label, grid_of(label, per_sm))] = None
    cases = [
        CasePlan("fma_peak", one, (kernel("k0", "s0", "fma8_t1024",
                                          sm_count * slots(shapes["fma8_t1024"]), "fma_peak"),),
                 repeats, mechanism="alone",
                 note="calibration: a full wave of 32-warp ILP-8 blocks, the SM's FP32 rate"),
        CasePlan("mem_peak", one, (kernel("k0", "s0", "stream_t1024",
                                          sm_count * slots(shapes["stream_t1024"]),
                                          "mem_peak"),),
                 repeats, mechanism="alone",
                 note="calibration: a full wave of 1024-thread copies, the DRAM bandwidth"),
    ]
    for label, grid in alone:
        name = alone_name(label, grid)
        unimpeded = alone_name(label, sm_count)
        cases.append(CasePlan(name, one, (kernel("k0", "s0", label, grid, name, unimpeded),),
                              repeats, mechanism="alone",
                              note=f"{label} alone, {grid} blocks (reference)"))
    for name, a, ga, b, gb, mechanism, _quick, note in pairs:
        grid_a, grid_b = grid_of(a, ga), grid_of(b, gb)
        cases.append(CasePlan(
            name, two,
            (kernel("k0", "s0", a, grid_a, alone_name(a, grid_a), alone_name(a, sm_count)),
             kernel("k1", "s1", b, grid_b, alone_name(b, grid_b), alone_name(b, sm_count))),
            repeats, gate_ns=CONTENTION_GATE_NS, mechanism=mechanism, note=note))
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
                    per_run_overhead_s: float = 3e-3, clock_hz: float = 1.5e9) -> float:
    """Rough device + host seconds a case costs (for budgets and the dry run): the kernels
    run one after another at their wave count, plus a per-run overhead, warm-up included.
    Streaming kernels move their bytes at the bandwidth their resident warps can reach
    (EST_BYTES_PER_S_PER_WARP each); FMA kernels take the planning model's time at a low
    clock (a pessimistic guess for a throttled GPU)."""
    total = case.gate_ns / NS_PER_S
    for k in case.kernels:
        per_sm = max(1, slots(k.shape))
        waves = math.ceil(k.grid / (sm_count * per_sm))
        if k.shape.kernel in ("spin", "sleep"):
            total += waves * k.spin_ns / NS_PER_S
        elif k.shape.kernel == "fma":
            resident = min(per_sm, math.ceil(k.grid / sm_count))
            per_partition = math.ceil(k.shape.warps / SM_SUB_PARTITIONS)
            cycles = max(FMA_LATENCY_CYCLES, resident * per_partition * k.shape.ilp)
            total += waves * k.iters * cycles / clock_hz
        else:
            warps = min(k.grid, sm_count * per_sm) * k.shape.warps
            total += k.dram_bytes / min(dram_bw_Bps, warps * EST_BYTES_PER_S_PER_WARP)
    return (case.repeats + 1) * (total + per_run_overhead_s)
