"""Fuzzing the files users hand to gpusim: any file gives exit 0 or exit 2 with one line.

Each kind of input file is a :class:`FileKind`: a hypothesis strategy of file contents (a
valid file mutated at one place with a hostile value, or raw bytes: truncated, corrupted,
deeply nested, not text) and the command that reads it. The property is the CLI's promise:
the command either runs (exit 0: a mutation can leave the file valid) or exits 2 with one
``gpusim: error: ...`` line; it never raises (which would be a traceback) and never hangs
(hostile numbers are either beyond a documented bound, so rejected at once, or small).

To fuzz another kind of file (the layer-graph files of ``--workload FILE``), add a
:class:`FileKind` to :data:`FILE_KINDS`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_models.spec import field_names
from sim.cli import main

#: Values that break parsers and validators: wrong types, non-finite and huge numbers,
#: integers past Python's digit limit (written into the JSON as text), empty containers.
#: No valid-but-slow value (a 2^31-block grid runs for minutes by design).
HOSTILE: tuple[Any, ...] = (
    0, -1, 1, 2.5, -0.0, 1e308, -1e308, 5e-324, 10**20, 2**63, -(2**63), float("nan"),
    float("inf"), "", "x", "0-3", None, True, False, [], {}, [1, 2, 3, 4], {"a": 1},
    [[[[[1]]]]], "h100", "9" * 300,
)
#: Marks a value to be written as a 5000-digit integer (over Python's conversion limit).
HUGE_INT = "<5000-digit integer>"

VALID_PROGRAM: dict[str, Any] = {
    "gpu": "h100",
    "launch_overhead_us": 1.0,
    "streams": [{"name": "a", "priority": 0}, {"name": "b", "sms": "0-65"}],
    "kernels": [
        {"name": "k0", "stream": "a", "grid": 264, "threads": 256, "regs": 32, "smem": 0,
         "block_time_us": 10.0, "dram_bytes": 1e6},
        {"name": "k1", "stream": "b", "grid": [4, 2, 1], "threads": 128, "regs": 64,
         "smem": 1024, "block_time_us": 5.0, "after": ["k0"], "kind": "gemm", "layer": "l"},
    ],
}
VALID_SPEC: dict[str, Any] = {"base": "h100", "name": "mine", "sm_count": 66}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place (dict key or list index path) in a JSON-like value, itself included."""
    places = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            places += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            places += _paths(item, (*prefix, index))
    return places


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any], extra_keys: tuple[str, ...]) -> Any:
    """``valid`` with one place replaced by a hostile value, deleted, or given a new key."""
    doc = copy.deepcopy(valid)
    places = _paths(doc)
    path = draw(st.sampled_from(places))
    action = draw(st.sampled_from(("replace", "delete", "add")))
    value = draw(st.sampled_from((*HOSTILE, HUGE_INT)))
    if action == "delete" and path:
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
        return doc
    if action == "add":
        key = draw(st.sampled_from(extra_keys))
        target = doc
        for step in path:
            target = target[step]
        if isinstance(target, dict):
            target[key] = value
            return doc
    return _set(doc, path, value)


def _json_text(doc: Any) -> str:
    text = json.dumps(doc, allow_nan=True)
    return text.replace(json.dumps(HUGE_INT), "9" * 5000)


def _toml_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
        return repr(value)
    if isinstance(value, str):
        return "9" * 5000 if value == HUGE_INT else json.dumps(value)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return json.dumps(value)
    return None  # TOML has no null; nan/inf/nested tables are left to the JSON form


@st.composite
def raw_damage(draw: st.DrawFn, text: str) -> bytes:
    """The valid file's bytes truncated, with a byte flipped, gzipped and corrupted, deeply
    nested, or not UTF-8."""
    data = text.encode()
    kind = draw(st.sampled_from(("truncate", "flip", "gzip-corrupt", "nest", "binary")))
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if kind == "gzip-corrupt":
        import gzip

        packed = bytearray(gzip.compress(data))
        at = draw(st.integers(10, len(packed) - 1))
        packed[at] ^= 0xFF
        return bytes(packed)
    if kind == "nest":
        depth = draw(st.sampled_from((50, 900, 5000, 200_000)))
        return ("[" * depth + "]" * depth).encode()
    return b"\xff\xfe\x00\x81" + data[:20]


@dataclass(frozen=True)
class FileKind:
    """One kind of input file: how to make hostile contents, and the command reading it."""

    name: str
    suffix: str
    contents: st.SearchStrategy[bytes]
    #: The command line, given the file's path.
    argv: Callable[[str], list[str]]


def _program_contents() -> st.SearchStrategy[bytes]:
    keys = ("grid", "threads", "sms", "after", "gpu", "nonsense")
    return st.one_of(
        mutated(VALID_PROGRAM, keys).map(lambda d: _json_text(d).encode()),
        raw_damage(json.dumps(VALID_PROGRAM)),
    )


@st.composite
def _spec_toml(draw: st.DrawFn) -> bytes:
    lines = ['base = "h100"']
    for name in draw(st.lists(st.sampled_from((*field_names(), "base", "nonsense")),
                              min_size=1, max_size=3, unique=True)):
        value = _toml_value(draw(st.sampled_from((*HOSTILE, HUGE_INT))))
        if value is not None:
            lines.append(f"{name} = {value}")
    return ("\n".join(lines) + "\n").encode()


def _spec_contents() -> st.SearchStrategy[bytes]:
    return st.one_of(_spec_toml(), raw_damage('base = "h100"\nsm_count = 66\n'))


def _spec_json_contents() -> st.SearchStrategy[bytes]:
    keys = (*field_names(), "nonsense")
    return st.one_of(mutated(VALID_SPEC, keys).map(lambda d: _json_text(d).encode()),
                     raw_damage(json.dumps(VALID_SPEC)))


#: Every kind of input file the fuzz test covers (add the layer-graph files here).
FILE_KINDS: tuple[FileKind, ...] = (
    FileKind("program", ".json", _program_contents(), lambda path: ["run", path, "--json"]),
    FileKind("spec-toml", ".toml", _spec_contents(),
             lambda path: ["occupancy", "--gpu", path, "--threads", "128", "--regs", "32"]),
    FileKind("spec-json", ".json", _spec_json_contents(),
             lambda path: ["occupancy", "--gpu", path, "--threads", "128", "--regs", "32"]),
)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in this process: (exit code, stderr). An exception escapes (that is
    the traceback a user would see)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    return code, err.getvalue()


@pytest.mark.parametrize("kind", FILE_KINDS, ids=[k.name for k in FILE_KINDS])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_input_file_exits_0_or_2_with_one_line(kind: FileKind, data: st.DataObject) -> None:
    contents = data.draw(kind.contents, label="file contents")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{kind.suffix}"
        path.write_bytes(contents)
        code, err = run_cli(kind.argv(str(path)))
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("gpusim: error: ") and err.count("\n") == 1, err
        # The message names the file or the offending field, not an internal name.
        assert "Traceback" not in err
