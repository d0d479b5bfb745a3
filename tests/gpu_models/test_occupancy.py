"""Occupancy against hand-computed answers (cuda_occupancy.h rules) and invariants.

Each expected value below is worked out by hand from the rules of
``cudaOccMaxActiveBlocksPerMultiprocessor`` (see gpu_models/occupancy.py's docstring):
warps = floor(max_warps / ceil(T/32)); regs_per_warp = roundup(R*32, 256), warps that fit =
floor((65536/4) / regs_per_warp) * 4, blocks = floor(that / warps_per_block); smem per block
= roundup(S + reserved, unit), blocks = floor(carveout / that); block slots.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.errors import GpusimError
from gpu_models.occupancy import block_footprint, occupancy
from gpu_models.presets import list_presets, load_preset, spec_from_mapping
from gpu_models.spec import GPUSpec


@pytest.fixture
def cc86() -> GPUSpec:
    """A cc 8.6 GPU (RTX 3090-like figures) built from the arch table, as a user file would."""
    return spec_from_mapping({
        "name": "rtx3090", "display_name": "GeForce RTX 3090", "compute_capability": [8, 6],
        "sm_count": 82, "clock_hz": 1.695e9, "l2_B": 6291456, "dram_B": 25769803776,
        "dram_bw_Bps": 936e9, "peak_fp32_flop_per_s": 35.6e12,
        "peak_tf32_tensor_flop_per_s": 35.6e12, "peak_fp16_tensor_flop_per_s": 71e12,
        "peak_bf16_tensor_flop_per_s": 71e12,
    })


# (gpu, threads, regs, smem, expected blocks/SM, expected limiter, how it was derived)
CASES = [
    # cc 9.0
    ("h100", 256, 32, 0, 8, "warps", "64/8 warps; regs 1024/warp -> 16/SP*4=64 warps -> 8"),
    ("h100", 64, 200, 0, 4, "registers",
     "6400 regs/warp: 16384//6400=2 per SP -> 8 warps -> 4 blocks (65536//12800=5 without SPs)"),
    ("h100", 256, 33, 0, 6, "registers",
     "33*32=1056 -> 1280/warp: 16384//1280=12 per SP -> 48 warps -> 6 (7 without granularity)"),
    ("h100", 128, 0, 58368, 3, "shared_memory",
     "58368+1024 reserved = 59392/block: 233472//59392=3 (4 without the reservation)"),
    ("h100", 1024, 64, 0, 1, "registers", "2048/warp*32 warps = 65536: one block"),
    ("h100", 32, 16, 0, 32, "blocks", "1 warp, tiny regs: 32 block slots bind"),
    # cc 8.0
    ("a100", 256, 32, 0, 8, "warps", "as h100: warps bind at 8"),
    ("a100", 128, 32, 41000, 3, "shared_memory",
     "roundup(41000+1024,128)=42112: 167936//42112=3 (4 without the reservation)"),
    ("a100", 128, 255, 0, 2, "registers",
     "255*32=8160 -> 8192/warp: 2 per SP -> 8 warps -> 2 blocks of 4 warps"),
    # cc 8.6 (48 warps, 16 blocks, 100 KB)
    ("cc86", 128, 0, 0, 12, "warps", "48/4 warps = 12 < 16 slots"),
    ("cc86", 32, 0, 0, 16, "blocks", "48 warps would allow 48; 16 slots bind"),
    ("cc86", 128, 32, 20000, 4, "shared_memory", "roundup(21024,128)=21120: 102400//21120=4"),
    # cc 7.0 (256 B smem unit, no reservation)
    ("v100", 32, 0, 3073, 29, "shared_memory",
     "3073 -> 3328 (256 B unit): 98304//3328=29 (31 without the unit)"),
    ("v100", 1024, 32, 0, 2, "warps", "64/32 = 2; registers also allow exactly 2 (tie)"),
    ("v100", 64, 255, 0, 4, "registers", "8192/warp: 2 per SP -> 8 warps -> 4 blocks"),
    # cc 6.0 (P100: 2 sub-partitions, 64 KB shared memory) against cc 6.1 (4, 96 KB)
    ("p100", 64, 200, 0, 5, "registers",
     "6400 regs/warp: 32768//6400=5 per SP x 2 SPs -> 10 warps -> 5 blocks (4 SPs: 4)"),
    ("titan-xp", 64, 200, 0, 4, "registers", "6400/warp: 16384//6400=2 per SP -> 8 warps -> 4"),
    ("p100", 128, 0, 20000, 3, "shared_memory", "roundup(20000,256)=20224: 65536//20224=3"),
    ("titan-xp", 128, 0, 20000, 4, "shared_memory", "20224: 98304//20224=4"),
]


@pytest.mark.parametrize(("gpu", "threads", "regs", "smem", "blocks", "limiter", "why"), CASES)
def test_hand_computed_cases(
    gpu: str, threads: int, regs: int, smem: int, blocks: int, limiter: str, why: str,
    cc86: GPUSpec,
) -> None:
    spec = cc86 if gpu == "cc86" else load_preset(gpu)
    occ = occupancy(spec, threads, regs, smem)
    assert occ.blocks_per_sm == blocks, why
    assert occ.limiter == limiter, why
    assert occ.active_warps == blocks * -(-threads // 32)


def test_tie_reports_every_binding_limit(v100: GPUSpec) -> None:
    occ = occupancy(v100, 1024, 32, 0)
    assert occ.limiters == ("warps", "registers")


@pytest.mark.parametrize(
    ("gpu", "threads", "regs", "smem", "reason_part"),
    [
        ("h100", 1025, 32, 0, "max_threads_per_block"),
        ("h100", 64, 256, 0, "max_regs_per_thread"),
        # 65 regs -> 2304/warp; hardware check 2304 * roundup(32 warps, 4) = 73728 > 65536
        ("h100", 1024, 65, 0, "regs_per_block"),
        ("h100", 64, 32, 232449, "max_smem_per_block_B"),
        ("v100", 64, 32, 98305, "max_smem_per_block_B"),
    ],
)
def test_impossible_launches_report_zero_and_reason(
    gpu: str, threads: int, regs: int, smem: int, reason_part: str
) -> None:
    occ = occupancy(load_preset(gpu), threads, regs, smem)
    assert occ.blocks_per_sm == 0
    assert occ.limiter == "launch"
    assert occ.reason is not None and reason_part in occ.reason


def test_register_hardware_check_rounds_warps_to_sub_partitions(h100: GPUSpec) -> None:
    # 5 warps at 255 regs: 8192 * roundup(5, 4) = 65536 fits exactly; 9 warps would not.
    assert occupancy(h100, 160, 255, 0).blocks_per_sm == 1
    occ = occupancy(h100, 288, 255, 0)  # 9 warps -> 12 -> 98304 > 65536
    assert occ.blocks_per_sm == 0 and "regs_per_block" in (occ.reason or "")


def test_preferred_carveout_rounds_up_to_a_supported_size(a100: GPUSpec) -> None:
    # 8192 + 1024 = 9216 B per block; a 30 KB preference rounds up to the 32 KB carveout.
    occ = occupancy(a100, 256, 32, 8192, preferred_carveout_B=30 * 1024)
    assert occ.carveout_B == 32768
    assert occ.blocks_per_sm == 3
    # A preference too small for one block is raised to the smallest carveout holding it.
    occ = occupancy(a100, 256, 32, 60000, preferred_carveout_B=8192)
    assert occ.carveout_B == 65536 and occ.blocks_per_sm == 1


def test_negative_inputs_are_errors(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match="threads"):
        occupancy(h100, 0, 32, 0)
    with pytest.raises(GpusimError, match="registers"):
        occupancy(h100, 32, -1, 0)
    with pytest.raises(GpusimError, match="shared memory"):
        occupancy(h100, 32, 1, -5)


PRESETS = list_presets()
shapes = st.tuples(
    st.sampled_from(PRESETS),
    st.integers(1, 1024),
    st.integers(0, 255),
    st.integers(0, 240 * 1024),
)


@settings(max_examples=300, deadline=None)
@given(shapes)
def test_resident_blocks_never_exceed_any_sm_limit(shape: tuple[str, int, int, int]) -> None:
    gpu, threads, regs, smem = shape
    spec = load_preset(gpu)
    occ = occupancy(spec, threads, regs, smem)
    fp = block_footprint(spec, threads, regs, smem)
    n = occ.blocks_per_sm
    assert n <= spec.max_blocks_per_sm
    assert n * fp.warps <= spec.max_warps_per_sm
    assert n * threads <= spec.max_threads_per_sm
    assert n * fp.smem_B <= occ.carveout_B <= spec.smem_per_sm_B
    # Registers: each sub-partition holds whole warps only.
    per_partition = spec.regs_per_sm // spec.sub_partitions
    if fp.regs_per_warp:
        warps_per_partition = per_partition // fp.regs_per_warp
        assert n * fp.warps <= warps_per_partition * spec.sub_partitions
    assert 0.0 <= occ.occupancy <= 1.0


@settings(max_examples=300, deadline=None)
@given(shapes, st.sampled_from(["threads", "regs", "smem"]), st.integers(1, 4096))
def test_occupancy_never_rises_when_a_per_block_resource_rises(
    shape: tuple[str, int, int, int], which: str, delta: int
) -> None:
    gpu, threads, regs, smem = shape
    spec = load_preset(gpu)
    before = occupancy(spec, threads, regs, smem).blocks_per_sm
    bigger = {
        "threads": (threads + delta, regs, smem),
        "regs": (threads, regs + delta % 64, smem),
        "smem": (threads, regs, smem + delta),
    }[which]
    assert occupancy(spec, *bigger).blocks_per_sm <= before
