"""Program validation and the JSON program format: errors name the item at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpu_models.errors import GpusimError
from gpu_models.presets import load_gpu
from sim import Launch, Program, StreamDef, load_program

H100 = load_gpu("h100")


def _k(name: str, stream: str = "a", **kw: Any) -> Launch:
    fields: dict[str, Any] = {"grid": 1, "threads": 256, "regs_per_thread": 32,
                              "smem_per_block_B": 0,
                              "block_time_s": 1e-5}
    fields.update(kw)
    return Launch(name=name, stream=stream, **fields)


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "gpu": "h100",
        "streams": [{"name": "a", "priority": -1}, {"name": "b"}],
        "kernels": [{"name": "k0", "stream": "a", "grid": [4, 2], "threads": 256, "regs": 32,
                     "smem": 1024, "block_time_us": 10.0, "dram_bytes": 1e6},
                    {"name": "k1", "stream": "b", "grid": 3, "threads": 128, "regs": 16,
                     "block_time_us": 2.5, "after": ["k0"]}],
    }
    doc.update(changes)
    return doc


def test_from_dict_converts_units_and_defaults() -> None:
    p = Program.from_dict(_doc(launch_overhead_us=3))
    k0, k1 = p.kernels
    assert (k0.blocks, k0.smem_per_block_B, k0.block_time_s, k0.dram_bytes) == (8, 1024, 1e-5, 1e6)
    assert (k1.smem_per_block_B, k1.after, k1.block_time_s) == (0, ("k0",), 2.5e-6)
    assert p.streams == (StreamDef("a", -1), StreamDef("b", 0))
    assert p.launch_overhead == pytest.approx(3e-6)
    assert p.event_overhead == H100.event_overhead_s


def test_gpu_overrides_and_spec_files(tmp_path: Path) -> None:
    p = Program.from_dict(_doc(gpu={"base": "h100", "sm_count": 2, "connections": 4}))
    assert (p.gpu.sm_count, p.gpu.connections) == (2, 4)
    (tmp_path / "my.json").write_text(json.dumps({"base": "a100", "sm_count": 7}))
    (tmp_path / "prog.json").write_text(json.dumps(_doc(gpu="my.json")))
    assert load_program(tmp_path / "prog.json").gpu.sm_count == 7


@pytest.mark.parametrize(("kernels", "streams", "message"), [
    ([_k("k", stream="zz")], None, "kernel 'k': unknown stream 'zz'"),
    ([_k("k"), _k("k")], None, "duplicate kernel name 'k'"),
    ([_k("k", after=("ghost",))], None, "kernel 'k': after names unknown kernel 'ghost'"),
    # A wait on a kernel launched later (a CUDA no-op) is rejected; it also rules out cycles.
    ([_k("x", after=("y",)), _k("y", stream="b", after=("x",))], None,
     "kernel 'x': after names kernel 'y', which is launched later"),
    ([_k("x", after=("y",)), _k("y")], None, "'x': after names kernel 'y', which is launched"),
    ([_k("x", after=("y",)), _k("y", stream="b")], None, "launch 'y' before 'x'"),
    ([_k("fat", smem_per_block_B=300_000)], None,
     "kernel 'fat' can never fit an SM.*shared memory"),
    ([_k("wide", threads=2048)], None, "kernel 'wide' can never fit.*threads"),
    ([_k("k")], [StreamDef("a"), StreamDef("a")], "duplicate stream 'a'"),
])
def test_program_errors_name_the_item(kernels: list[Launch], streams: list[StreamDef] | None,
                                      message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        Program(H100, tuple(streams or [StreamDef("a"), StreamDef("b")]), tuple(kernels))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("grid", 0, "kernel 'k': grid must be a positive integer"),
    ("grid", (2, 0), "kernel 'k': grid must be"),
    ("threads", 1.5, "kernel 'k': threads must be an integer"),
    ("block_time_s", 0.0, "kernel 'k': block_time_s must be a finite number > 0"),
    ("dram_bytes", -1.0, "kernel 'k': dram_bytes must be"),
    ("after", ("k",), "kernel 'k': after names the kernel itself"),
])
def test_launch_fields_are_validated(field: str, value: Any, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        _k("k", **{field: value})


@pytest.mark.parametrize(("doc", "message"), [
    (_doc(extra=1), "program: unknown key\\(s\\) 'extra'"),
    ({"gpu": "h100", "streams": []}, "program: missing key 'kernels'"),
    (_doc(gpu="b200"), "unknown GPU 'b200'"),
    (_doc(gpu={"base": "h100", "sm_cnt": 3}), "unknown GPUSpec field\\(s\\) sm_cnt"),
    (_doc(streams=[{"name": "a", "prio": 1}]), "stream 'a': unknown key\\(s\\) 'prio'"),
    (_doc(kernels=[{"name": "k", "stream": "a", "grid": 1, "threads": 32, "regs": 8,
                    "block_time_us": 1, "smem_B": 4}]), "kernel 'k': unknown key\\(s\\) 'smem_B'"),
    (_doc(kernels=[{"name": "k", "stream": "a", "grid": 1}]),
     "kernel 'k': missing key\\(s\\) threads, regs, block_time_us"),
    (_doc(kernels=[{"name": "k", "stream": "a", "grid": 1, "threads": 32, "regs": 8,
                    "block_time_us": "fast"}]), "kernel 'k': block_time_us must be a number"),
    (_doc(launch_overhead_us=-1), "launch_overhead_us must be a finite number >= 0 "
                                  "\\(got -1\\)"),
    ([1, 2], "a program must be a JSON object"),
])
def test_malformed_programs_name_the_item(doc: Any, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        Program.from_dict(doc)


def test_load_program_reports_bad_files(tmp_path: Path) -> None:
    with pytest.raises(GpusimError, match="does not exist"):
        load_program(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GpusimError, match=r"bad\.json' is not valid JSON"):
        load_program(bad)
