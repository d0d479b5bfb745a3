"""The shared reader of user data files: errors name the kind of file and its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError


def test_reads_json_and_toml_by_suffix_or_format(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / "b.toml").write_text("x = 2\n")
    (tmp_path / "c.cfg").write_text("x = 3\n")
    assert read_data_file(tmp_path / "a.json", "test file") == {"x": 1}
    assert read_data_file(tmp_path / "b.toml", "test file") == {"x": 2}
    assert read_data_file(tmp_path / "c.cfg", "test file", fmt="toml") == {"x": 3}


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [("bad.json", "{", r"sweep file '.*bad\.json' is not valid JSON"),
     ("bad.toml", "x = ", r"sweep file '.*bad\.toml' is malformed TOML"),
     ("bin.json", None, "is not UTF-8 text")],
)
def test_malformed_files(tmp_path: Path, name: str, text: str | None, match: str) -> None:
    path = tmp_path / name
    if text is None:
        path.write_bytes(b"\xff\xfe\x00")
    else:
        path.write_text(text)
    with pytest.raises(GpusimError, match=match):
        read_data_file(path, "sweep file")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(GpusimError, match=r"program file .* does not exist"):
        read_data_file(tmp_path / "none.json", "program file")
    with pytest.raises(GpusimError, match="is a directory"):
        read_data_file(tmp_path, "program file")
