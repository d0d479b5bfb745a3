"""The device tool's return limits (sim.measure.micro.packing), on folders made here."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from gpu_models.errors import GpusimError
from sim.measure.micro import packing


def test_a_folder_within_the_limits_comes_back(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "file.json").write_text("{}")
    (tmp_path / "campaign.log").write_text("x" * 100)
    assert packing.return_problems(tmp_path) == []
    assert [f.path for f in packing.listing(tmp_path)] == ["a/b/file.json", "campaign.log"]


def test_every_limit_is_named(tmp_path: Path) -> None:
    for i in range(packing.MAX_FILES + 1):
        (tmp_path / f"f{i}.txt").write_text("x")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")
    with (tmp_path / "big.bin").open("wb") as handle:  # sparse: no 16 MiB really written
        handle.truncate(packing.MAX_FILE_B + 1)
    problems = "\n".join(packing.return_problems(tmp_path))
    assert f"{packing.MAX_FILES + 4} files" in problems
    assert "a/b/c/deep.txt: more than 2 folders down" in problems
    assert "bad name.txt: a name with characters" in problems
    assert f"big.bin: {packing.MAX_FILE_B + 1} bytes" in problems


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "staging"
    (src / "h100").mkdir(parents=True)
    (src / "h100" / "waves.json").write_text('{"a": 1}')
    (src / "h100" / "blocks.npz").write_bytes(b"\x00\x01")
    archive = tmp_path / "out" / packing.MICRO_ARCHIVE
    archive.parent.mkdir()
    size = packing.pack_folder(src, archive)
    assert size == archive.stat().st_size
    assert not list(archive.parent.glob(".*.tmp"))  # replaced in one step
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["h100/blocks.npz", "h100/waves.json"]
    written = packing.unpack(archive, tmp_path / "data")
    assert sorted(p.name for p in written) == ["blocks.npz", "waves.json"]
    assert (tmp_path / "data" / "h100" / "waves.json").read_text() == '{"a": 1}'


def test_unpack_refuses_members_outside_the_destination(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    outside = tmp_path / "x.json"
    outside.write_text("{}")
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(outside, arcname="../escape.json")
    with pytest.raises(GpusimError, match="unexpected member"):
        packing.unpack(bad, tmp_path / "data")
