"""Program validation beyond the basics: waits on later kernels, CUDA grid limits, runaway
inputs (huge SM ranges, infinite DRAM demand), duplicate waits, and errors that name the
JSON keys a user wrote."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef

H100 = load_gpu("h100")


def _k(name: str, stream: str = "a", **kw: Any) -> Launch:
    fields: dict[str, Any] = {"grid": 1, "threads": 256, "regs_per_thread": 32,
                              "smem_per_block_B": 0,
                              "block_time_s": 1e-5}
    fields.update(kw)
    return Launch(name=name, stream=stream, **fields)


def _program(*kernels: Launch) -> Program:
    return Program(H100, (StreamDef("a"), StreamDef("b")), kernels)


def _json_kernel(**changes: Any) -> dict[str, Any]:
    kernel: dict[str, Any] = {"name": "k", "stream": "a", "grid": 4, "threads": 256,
                              "regs": 32, "block_time_us": 10.0}
    kernel.update(changes)
    return {"gpu": "h100", "streams": [{"name": "a"}], "kernels": [kernel]}


# ---------------------------------------------------------------------- after
def test_after_naming_a_later_kernel_is_rejected_naming_both() -> None:
    with pytest.raises(GpusimError, match=r"kernel 'x': after names kernel 'y', which is "
                                          "launched later.*launch 'y' before 'x'"):
        _program(_k("x", after=("y",)), _k("y", stream="b"))


def test_after_naming_an_earlier_kernel_is_fine() -> None:
    p = _program(_k("y", stream="b"), _k("x", after=("y",)))
    assert p.kernel("x").after == ("y",)


def test_duplicate_after_entries_are_deduplicated_in_order() -> None:
    assert _k("k", after=("a", "b", "a", "b")).after == ("a", "b")
    p = Program.from_dict({"gpu": "h100", "streams": [{"name": "a"}, {"name": "b"}],
                           "kernels": [_json_kernel(name="k0", stream="b")["kernels"][0],
                                       _json_kernel(name="k1", after=["k0", "k0"])
                                       ["kernels"][0]]})
    assert p.kernel("k1").after == ("k0",)


# ---------------------------------------------------------------------- grids
@pytest.mark.parametrize(("grid", "message"), [
    ((100_000, 100_000, 1000), "grid y is 100000; CUDA allows at most 65535"),
    ((1, 1, 70_000), "grid z is 70000; CUDA allows at most 65535"),
    ((2**31, 1, 1), "grid x is 2147483648; CUDA allows at most 2147483647"),
    (2**31, "grid is 2147483648 blocks; CUDA allows at most 2147483647"),
    (10**23, f"grid is {10**23} blocks"),
    ((2**31 - 1, 65_535, 65_535), "blocks; at most 2147483648 \\(2\\^31\\) blocks per kernel"),
])
def test_grids_beyond_cuda_limits_are_rejected(grid: Any, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        _k("k", grid=grid)


def test_json_float_grid_is_rejected() -> None:
    with pytest.raises(GpusimError, match="kernel 'k': grid must be a positive integer"):
        Program.from_dict(_json_kernel(grid=1e23))


def test_largest_allowed_grid_is_accepted() -> None:
    assert _k("k", grid=(2**31 - 1,)).blocks == 2**31 - 1


# ---------------------------------------------------------------------- runaway inputs
def test_huge_sm_range_is_rejected_before_expanding() -> None:
    with pytest.raises(GpusimError, match="stream 'a': sms range '0-99999999999' names SM "
                                          "99999999999; SM ids must be below 65536"):
        StreamDef("a", sms="0-99999999999")
    with pytest.raises(GpusimError, match="SM ids >= 0 and < 65536"):
        StreamDef("a", sms=[10**12])


def test_sm_range_beyond_the_gpu_names_its_sm_count() -> None:
    with pytest.raises(GpusimError, match=r"stream 'a': sms names SM 999 but .* has 132 SMs"):
        Program(H100, (StreamDef("a", sms="0-999"),), (_k("k"),))


def test_infinite_dram_demand_is_rejected() -> None:
    with pytest.raises(GpusimError, match=r"kernel 'k': DRAM demand per block .* is not finite"):
        _k("k", block_time_s=1e-300, dram_bytes=1e10)
    with pytest.raises(GpusimError, match=r"DRAM demand .* block_time_us 1e-300 is too small "
                                          r"for dram_bytes 1000000.0") as info:
        Program.from_dict(_json_kernel(block_time_us=1e-300, dram_bytes=1e6))
    assert "1e-306" not in str(info.value)
    # A tiny block time with no DRAM traffic is fine (the demand is 0).
    assert _k("k", block_time_s=1e-300).dram_demand_Bps == 0.0


# ---------------------------------------------------------------------- JSON keys
@pytest.mark.parametrize(("changes", "message"), [
    ({"block_time_us": 0}, "kernel 'k': block_time_us must be a finite number > 0 \\(got 0\\)"),
    ({"block_time_us": -5}, "block_time_us must be a finite number > 0 \\(got -5\\)"),
    ({"block_time_us": 1e-320}, "block_time_us must be a finite number > 0 \\(got 1e-320\\)"),
    ({"smem": -1}, "kernel 'k': smem must be an integer >= 0 \\(got -1\\)"),
    ({"smem": 1.5}, "kernel 'k': smem must be an integer >= 0 \\(got 1.5\\)"),
])
def test_json_kernel_errors_name_the_json_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(GpusimError, match=message) as info:
        Program.from_dict(_json_kernel(**changes))
    assert "block_time_s" not in str(info.value) and "smem_B" not in str(info.value)


@pytest.mark.parametrize("key", ["launch_overhead_us", "event_overhead_us"])
@pytest.mark.parametrize("value", [-2, float("inf")])
def test_json_overhead_errors_name_the_json_key_and_value(key: str, value: float) -> None:
    with pytest.raises(GpusimError, match=f"program: {key} must be a finite number >= 0 "
                                          f"\\(got {value!r}\\)"):
        Program.from_dict({**_json_kernel(), key: value})
