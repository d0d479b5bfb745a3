"""GPUSpec validation, overrides, presets and user spec files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_models.errors import GpusimError
from gpu_models.presets import list_presets, load_gpu, load_preset
from gpu_models.spec import GPUSpec, field_names

EXPECTED_PRESETS = {"v100", "a100", "h100", "h100-pcie", "h200", "titan-xp",
                    # the GPUs of the public measurements (shared/reference: DeepBench, traces)
                    "t4", "p100", "gtx-1080ti", "rtx-2080ti", "a100-40gb"}


def test_every_required_preset_exists_and_loads() -> None:
    assert set(list_presets()) >= EXPECTED_PRESETS
    for name in list_presets():
        spec = load_preset(name)
        assert spec.name == name
        assert spec.sources, f"{name} carries no sources"


@pytest.mark.parametrize(
    ("name", "sms", "cc", "bw"),
    [("v100", 80, (7, 0), 900e9), ("a100", 108, (8, 0), 2.039e12), ("h100", 132, (9, 0), 3.35e12),
     ("h100-pcie", 114, (9, 0), 2.0e12), ("h200", 132, (9, 0), 4.8e12),
     ("titan-xp", 30, (6, 1), 547.7e9), ("t4", 40, (7, 5), 320e9), ("p100", 56, (6, 0), 732e9),
     ("gtx-1080ti", 28, (6, 1), 484e9), ("rtx-2080ti", 68, (7, 5), 616e9),
     ("a100-40gb", 108, (8, 0), 1.555e12)],
)
def test_preset_key_figures(name: str, sms: int, cc: tuple[int, int], bw: float) -> None:
    spec = load_preset(name)
    assert (spec.sm_count, spec.compute_capability, spec.dram_bw_Bps) == (sms, cc, bw)


def test_arch_limits_come_from_the_arch_table(h100: GPUSpec, v100: GPUSpec) -> None:
    assert h100.smem_per_sm_B == 228 * 1024 and h100.max_smem_per_block_B == 227 * 1024
    assert h100.smem_reserved_per_block_B == 1024 and h100.smem_alloc_unit_B == 128
    assert v100.smem_reserved_per_block_B == 0 and v100.smem_alloc_unit_B == 256
    assert "Programming Guide" in h100.sources["max_warps_per_sm"]
    assert h100.sources["dram_bw_Bps"].startswith("datasheet")


def test_measured_gpu_presets_carry_their_sources() -> None:
    # The trace GPUs' memory sizes are the traces' own deviceProperties (totalGlobalMem).
    assert load_preset("a100-40gb").dram_B == 42297524224
    assert load_preset("rtx-2080ti").dram_B == 11554586624
    for name in ("a100-40gb", "rtx-2080ti"):
        assert load_preset(name).sources["dram_B"].startswith("measured")
    # No tensor cores before Volta, none for TF32/BF16 on Turing: those precisions run on the
    # FP32 pipe (P100's DeepBench "fp16" sheets are pseudo-FP16: fp16 storage, fp32 math).
    p100, t4 = load_preset("p100"), load_preset("t4")
    assert p100.peak_flop_per_s("fp16") == p100.peak_fp32_flop_per_s == 9.3e12
    assert t4.peak_flop_per_s("fp16") == 65e12 and t4.peak_flop_per_s("tf32") == 8.1e12
    # cc 6.0 has its own per-SM limits: 64 KB of shared memory, two sub-partitions.
    assert (p100.smem_per_sm_B, p100.sub_partitions, p100.max_smem_per_block_B) == (
        64 * 1024, 2, 48 * 1024)
    for name in ("t4", "p100", "gtx-1080ti", "rtx-2080ti", "a100-40gb"):
        spec = load_preset(name)
        for field_name in ("sm_count", "clock_hz", "l2_B", "dram_bw_Bps",
                           "peak_fp32_flop_per_s"):
            assert spec.sources.get(field_name), f"{name}.{field_name} has no source"


def test_specs_are_frozen_and_hashable(h100: GPUSpec) -> None:
    with pytest.raises(AttributeError):
        h100.sm_count = 1  # type: ignore[misc]
    assert hash(h100) == hash(load_preset("h100"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sm_count": -1}, "sm_count"),
        ({"sm_count": 0}, "sm_count"),
        ({"dram_bw_Bps": 0.0}, "dram_bw_Bps"),
        ({"max_threads_per_block": 4096}, "max_threads_per_block"),
        ({"regs_per_block": 131072}, "regs_per_block"),
        ({"max_smem_per_block_B": 300_000}, "max_smem_per_block_B"),
        ({"connections": 33}, "connections"),
        ({"launch_overhead_s": -1e-6}, "launch_overhead_s"),
        ({"sm_count": 1.5}, "sm_count"),
        ({"smem_carveouts_B": (0, 65536)}, "smem_carveouts_B"),
    ],
)
def test_validation_names_the_field(h100: GPUSpec, changes: dict, field: str) -> None:
    with pytest.raises(GpusimError, match=field):
        h100.replace(**changes)


def test_replace_revalidates_and_marks_overrides(h100: GPUSpec) -> None:
    big = h100.replace(sm_count=264)
    assert big.sm_count == 264 and big.sources["sm_count"] == "override"
    assert big != h100 and big.name == "h100*"
    assert h100.sm_count == 132  # the original is untouched


def test_shrinking_shared_memory_clips_dependent_fields(h100: GPUSpec) -> None:
    small = h100.replace(smem_per_sm_B=65536)
    assert small.smem_carveouts_B == (0, 8192, 16384, 32768, 65536)
    assert small.max_smem_per_block_B == 65536 - 1024


def test_unknown_field_is_an_error_listing_valid_ones(h100: GPUSpec) -> None:
    with pytest.raises(GpusimError, match=r"unknown GPUSpec field.*sm_cnt.*valid fields"):
        h100.replace(sm_cnt=3)


def test_with_overrides_parses_by_field_type(h100: GPUSpec) -> None:
    spec = h100.with_overrides(["sm_count=264", "dram_bw_Bps=6.7e12", "connections=32"])
    assert (spec.sm_count, spec.dram_bw_Bps, spec.connections) == (264, 6.7e12, 32)
    with pytest.raises(GpusimError, match="sm_count"):
        h100.with_overrides(["sm_count=many"])
    with pytest.raises(GpusimError, match="FIELD=VALUE"):
        h100.with_overrides(["sm_count"])


def test_unknown_gpu_lists_presets() -> None:
    with pytest.raises(GpusimError, match=r"unknown GPU .h1000.*h100"):
        load_gpu("h1000")


def test_user_spec_file_toml_with_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('base = "h100"\nname = "h100-2x"\nsm_count = 264\n')
    spec = load_gpu(str(path))
    assert spec.name == "h100-2x" and spec.sm_count == 264
    assert spec.max_warps_per_sm == 64


def test_user_spec_file_json_full(tmp_path: Path, a100: GPUSpec) -> None:
    data = a100.to_dict()
    data["name"] = "my-a100"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    spec = load_gpu(path)
    assert spec.replace(name="a100") == a100.replace(name="a100")


@pytest.mark.parametrize(
    ("text", "suffix", "match"),
    [
        ("sm_count = ", ".toml", "malformed"),
        ('{"base": "h100", "sm_count": -4}', ".json", "sm_count"),
        ('{"base": "h100", "smcount": 4}', ".json", "smcount"),
        ('{"name": "x", "sm_count": 4}', ".json", "compute_capability"),
        ('{"name": "x", "compute_capability": [9, 0], "sm_count": 4}', ".json", "missing"),
        ("[1, 2]", ".json", "table/object"),
    ],
)
def test_malformed_spec_files(tmp_path: Path, text: str, suffix: str, match: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(GpusimError, match=match):
        load_gpu(path)


def test_missing_spec_file() -> None:
    with pytest.raises(GpusimError, match="does not exist"):
        load_gpu("/nonexistent/gpu.toml")


def test_field_names_cover_the_issue_list() -> None:
    required = {
        "name", "compute_capability", "sm_count", "clock_hz", "max_threads_per_sm",
        "max_warps_per_sm", "max_blocks_per_sm", "max_threads_per_block", "regs_per_sm",
        "regs_per_block", "max_regs_per_thread", "reg_alloc_unit", "sub_partitions",
        "smem_per_sm_B", "smem_carveouts_B", "max_smem_per_block_B", "smem_alloc_unit_B",
        "smem_reserved_per_block_B", "l2_B", "dram_bw_Bps", "peak_fp32_flop_per_s",
        "peak_tf32_tensor_flop_per_s", "peak_fp16_tensor_flop_per_s",
        "peak_bf16_tensor_flop_per_s", "connections", "max_resident_grids", "launch_overhead_s",
    }
    assert required <= set(field_names())


def test_peak_rates_fall_back_to_cuda_cores(v100: GPUSpec, h100: GPUSpec) -> None:
    assert v100.peak_flop_per_s("bf16") == v100.peak_fp32_flop_per_s  # no BF16 tensor cores
    assert v100.peak_flop_per_s("fp16") == 125e12
    assert h100.peak_flop_per_s("tf32") == 494.7e12
    assert h100.peak_flop_per_s("tf32", tensor_cores=False) == h100.peak_fp32_flop_per_s
    with pytest.raises(GpusimError, match="precision"):
        h100.peak_flop_per_s("fp8")


def test_peaks_follow_sm_count_and_clock(h100: GPUSpec) -> None:
    double = h100.replace(sm_count=264)
    assert double.peak_fp32_flop_per_s == pytest.approx(2 * h100.peak_fp32_flop_per_s)
    assert double.peak_bf16_tensor_flop_per_s == pytest.approx(
        2 * h100.peak_bf16_tensor_flop_per_s)
    assert double.sources["peak_fp32_flop_per_s"] == "derived from an override"
    slow = h100.replace(clock_hz=0.99e9)
    assert slow.peak_tf32_tensor_flop_per_s == pytest.approx(
        h100.peak_tf32_tensor_flop_per_s / 2)
    # An explicit peak wins over the derived one.
    assert h100.replace(sm_count=264, peak_fp32_flop_per_s=1e14).peak_fp32_flop_per_s == 1e14


def test_preset_identity_survives_overrides_and_is_not_equality(h100: GPUSpec) -> None:
    variant = h100.replace(connections=32)
    assert variant.preset == "h100" and h100.preset == "h100"
    assert variant.name == "h100*"
    assert "preset" not in h100.to_dict() and "preset" not in field_names()


def test_sources_of_a_cached_preset_are_read_only(h100: GPUSpec) -> None:
    with pytest.raises(TypeError):
        h100.sources["sm_count"] = "hacked"  # type: ignore[index]


def test_warps_and_threads_per_sm_follow_each_other(h100: GPUSpec) -> None:
    assert h100.replace(max_warps_per_sm=32).max_threads_per_sm == 1024
    assert h100.replace(max_threads_per_sm=1024).max_warps_per_sm == 32
    # A warp size of 0 derives nothing (no ZeroDivisionError): the field itself is refused.
    with pytest.raises(GpusimError, match="warp_size must be > 0"):
        h100.replace(max_threads_per_sm=1024, warp_size=0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('name = "x"\ncompute_capability = "9.0"\n', "compute_capability"),
        ('base = "h100"\nsmem_per_sm_B = "abc"\n', "smem_per_sm_B"),
        ('base = "h100"\nsource = 5\n', "source"),
        ('base = "h100"\nsmem_carveouts_B = [1.5, 233472.0]\n', "smem_carveouts_B"),
        ('base = "h100"\ndram_bw_Bps = inf\n', "dram_bw_Bps"),
        ('base = "h100"\nsm_count = true\n', "sm_count"),
    ],
)
def test_wrong_types_in_spec_files_are_clear_errors(tmp_path: Path, text: str,
                                                    match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GpusimError, match=match):
        load_gpu(path)


@pytest.mark.parametrize(("cc", "threads"), [([7, 5], 1024), ([8, 9], 1536)])
def test_user_files_for_turing_and_ada_use_the_arch_table(tmp_path: Path, cc: list[int],
                                                          threads: int) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({
        "name": "mine", "compute_capability": cc, "sm_count": 68, "clock_hz": 1.545e9,
        "l2_B": 5767168, "dram_B": 11811160064, "dram_bw_Bps": 616e9,
        "peak_fp32_flop_per_s": 13.4e12, "peak_tf32_tensor_flop_per_s": 0,
        "peak_fp16_tensor_flop_per_s": 107e12, "peak_bf16_tensor_flop_per_s": 0}))
    spec = load_gpu(path)
    assert spec.max_threads_per_sm == threads and spec.preset == ""


def test_specs_pickle_and_deepcopy(h100: GPUSpec) -> None:
    # Process pools (sweeps) pickle specs; the engine's tests deep-copy them.
    import copy
    import pickle

    variant = h100.replace(sm_count=264)
    for clone in (pickle.loads(pickle.dumps(variant)), copy.deepcopy(variant)):
        assert clone == variant and clone.preset == "h100"
        assert dict(clone.sources) == dict(variant.sources)
