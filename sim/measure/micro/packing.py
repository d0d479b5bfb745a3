"""Packing the device campaign's output within what the device tool brings back.

The device tool returns what a command leaves under ``$OUT`` only within limits
(/work/.library/device/README.md, "Limits"): at most 8 files, each at most 16 MiB and 64 MiB
together, no deeper than ``$OUT/a/b/file``, names of letters, digits, ``.``, ``_`` and ``-``
only. So the campaign writes few files: the block-level results of every experiment go into
one ``micro.tar.gz`` (``<gpu>/<experiment>.json`` and ``<gpu>/blocks.npz``), rewritten after
each experiment so that a run cut short keeps what it finished. :func:`return_problems`
checks a folder against the limits; the campaign prints what it finds and the tests hold the
stand-in run's output to it.

Pure standard library; no CUDA.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from gpu_models.errors import GpusimError
from gpu_models.units import MIB

#: The device tool's limits on what comes back from ``$OUT``.
MAX_FILES = 8
MAX_FILE_B = 16 * MIB
MAX_TOTAL_B = 64 * MIB
#: Folders between ``$OUT`` and a file (``$OUT/a/b/file`` comes back, ``a/b/c/file`` not).
MAX_FOLDERS_DOWN = 2
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

#: The archive of block-level results under ``$OUT``.
MICRO_ARCHIVE = "micro.tar.gz"


@dataclass(frozen=True)
class Returned:
    """One file under the output folder, as the device tool would see it."""

    path: str
    size_B: int


def listing(out_dir: Path) -> list[Returned]:
    """Every file under ``out_dir`` (relative paths, sorted)."""
    return [Returned(str(p.relative_to(out_dir)), p.stat().st_size)
            for p in sorted(out_dir.rglob("*")) if p.is_file()]


def return_problems(out_dir: Path) -> list[str]:
    """What would not come back from ``out_dir`` under the device tool's limits ([] if
    everything would)."""
    files = listing(out_dir)
    problems = []
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files (at most {MAX_FILES} come back)")
    total = sum(f.size_B for f in files)
    if total > MAX_TOTAL_B:
        problems.append(f"{total} bytes in all (at most {MAX_TOTAL_B})")
    for f in files:
        parts = Path(f.path).parts
        if f.size_B > MAX_FILE_B:
            problems.append(f"{f.path}: {f.size_B} bytes (at most {MAX_FILE_B} per file)")
        if len(parts) - 1 > MAX_FOLDERS_DOWN:
            problems.append(f"{f.path}: more than {MAX_FOLDERS_DOWN} folders down")
        if not all(_NAME.match(part) for part in parts):
            problems.append(f"{f.path}: a name with characters other than letters, digits, "
                            "'.', '_' and '-'")
    return problems


def pack_folder(folder: Path, archive: Path) -> int:
    """Write every file under ``folder`` into the gzipped tar ``archive`` (paths relative to
    ``folder``, sorted), replacing it in one step; returns the archive's size in bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    data = buffer.getvalue()
    tmp = archive.with_name(f".{archive.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, archive)
    return len(data)


def unpack(archive: Path, destination: Path) -> list[Path]:
    """Extract ``archive`` (as :func:`pack_folder` wrote it) into ``destination``; refuses
    members that would land outside it. Returns the files written."""
    written = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (destination / member.name).resolve()
            if not member.isfile() or not target.is_relative_to(destination.resolve()):
                raise GpusimError(f"{archive}: unexpected member {member.name!r}")
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file always has a handle
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(handle.read())
            written.append(target)
    return written
