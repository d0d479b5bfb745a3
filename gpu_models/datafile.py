"""Reading the files users hand to gpusim, and the optional packages some of them need.

Every loader (GPU spec, program, sweep, calibration, trace, results and timing files) needs
the same first step: read the file, undo gzip if it is compressed, parse it as JSON, TOML or
CSV (or Parquet, with pyarrow), and turn *any* failure of that step into a
:class:`GpusimError` that names the kind of file, its path and, where the parser knows it,
the line: a missing or unreadable file, a directory, bytes that are not UTF-8, a corrupted
gzip stream, malformed syntax, an integer too long for Python to convert (over 4300 digits)
or nesting too deep for the parser. The loaders then check the structure. Nothing here
raises anything but :class:`GpusimError` for a bad file, so a command given one exits 2
with one line instead of a traceback.

Files above :data:`MAX_FILE_BYTES` (after decompression too) are refused before they are
parsed: gpusim's inputs are kilobytes to a few hundred megabytes (a long profiler trace),
and parsing a multi-gigabyte file would exhaust memory long before it failed.

:func:`import_optional` is the one way to import an optional dependency (pyarrow, Dask,
torch, ONNX, CuPy): a missing package becomes a :class:`GpusimError` saying what needs it
and which extra installs it.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import json
import tomllib
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

from gpu_models.errors import GpusimError

#: Largest data file gpusim reads (bytes, after gzip decompression): 1 GiB.
MAX_FILE_BYTES = 1 << 30
#: The two bytes every gzip stream starts with (the suffix is not trusted).
GZIP_MAGIC = b"\x1f\x8b"
FORMATS: tuple[str, ...] = ("json", "toml")


def read_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of ``path``, gunzipped when they are a gzip stream, size-checked.

    ``what`` names the kind of file in error messages (``"trace file"``).
    """
    path = Path(path)
    shown = repr(str(path))
    try:
        _check_size(path, what)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GpusimError(f"{what} {shown} does not exist") from None
    except IsADirectoryError:
        raise GpusimError(f"{what} {shown} is a directory, not a file") from None
    except NotADirectoryError:
        raise GpusimError(f"{what} {shown}: a parent of it is not a folder") from None
    except PermissionError:
        raise GpusimError(f"{what} {shown} cannot be read: permission denied") from None
    except OSError as exc:
        raise GpusimError(f"{what} {shown} cannot be read: {exc.strerror or exc}") from None
    if raw[:2] == GZIP_MAGIC:
        raw = _gunzip(raw, what, shown)
    return raw


def _check_size(path: Path, what: str) -> None:
    """Refuse a file over :data:`MAX_FILE_BYTES` (``stat`` raises for a missing one)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise GpusimError(f"{what} {str(path)!r} is {size / 2**20:,.0f} MiB; gpusim reads "
                          f"data files up to {MAX_FILE_BYTES // 2**20:,} MiB")


def check_readable(path: str | Path, what: str) -> Path:
    """``path`` if it is a readable file; otherwise the error :func:`read_bytes` gives."""
    path = Path(path)
    if not path.is_file():
        read_bytes(path, what)  # raises "does not exist" / "is a directory" / ...
    return path


def _gunzip(raw: bytes, what: str, shown: str) -> bytes:
    """Decompress a gzip stream, stopping at :data:`MAX_FILE_BYTES` (a gzip bomb)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise GpusimError(f"{what} {shown} is a corrupted gzip file: {exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise GpusimError(f"{what} {shown} decompresses to more than "
                          f"{MAX_FILE_BYTES // 2**20:,} MiB; gpusim reads data files up to "
                          "that size")
    return data


def read_text(path: str | Path, what: str) -> str:
    """The text of ``path`` (UTF-8, gunzipped if compressed)."""
    return decode_text(read_bytes(path, what), what, repr(str(path)))


def decode_text(raw: bytes, what: str, shown: str) -> str:
    """``raw`` as UTF-8 text (a leading byte-order mark is dropped)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GpusimError(f"{what} {shown} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.reason})") from None


def parse_data(text: str, what: str, shown: str, fmt: str) -> Any:
    """``text`` parsed as ``fmt`` (``"json"`` or ``"toml"``); errors name the line."""
    if fmt not in FORMATS:
        raise GpusimError(f"{what} {shown}: unknown format {fmt!r}; expected one of "
                          f"{', '.join(FORMATS)}")
    try:
        if fmt == "toml":
            return tomllib.loads(text)
        return json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GpusimError(f"{what} {shown} is malformed TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise GpusimError(f"{what} {shown} is not valid JSON: {exc}") from None
    except RecursionError:
        raise GpusimError(f"{what} {shown} nests lists or objects too deeply to "
                          "read") from None
    except ValueError as exc:
        # json: integers over sys.get_int_max_str_digits() digits; tomllib: the same, and
        # values it cannot convert. The parsers give no line for these.
        raise GpusimError(f"{what} {shown} holds a value that cannot be read: {exc}") from None


def read_data_file(path: str | Path, what: str, *, fmt: str | None = None) -> Any:
    """The parsed content of ``path`` as ``fmt`` (``"json"`` or ``"toml"``; by default TOML
    for a ``.toml`` suffix, JSON otherwise). A gzip-compressed file is decompressed first.

    ``what`` names the kind of file in error messages (``"GPU spec file"``).
    """
    path = Path(path)
    chosen = fmt or ("toml" if path.suffix.lower() == ".toml" else "json")
    return parse_data(read_text(path, what), what, repr(str(path)), chosen)


def read_csv(path: str | Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV file (rows longer than the header are dropped:
    they are damaged). Errors name the line."""
    shown = repr(str(path))
    text = read_text(path, what)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = [row for row in reader if None not in row]
    except csv.Error as exc:
        raise GpusimError(f"{what} {shown}, near line {reader.line_num + 1}: not valid CSV: "
                          f"{exc}") from None
    return list(reader.fieldnames or []), rows


def read_parquet(path: str | Path, what: str, *, columns: list[str] | None = None) -> Any:
    """A Parquet file as a ``pyarrow.Table`` (``columns``: only those). Needs pyarrow."""
    pq = import_optional("pyarrow.parquet", needed_for="reading Parquet files",
                         extra="parquet")
    pa = import_optional("pyarrow", needed_for="reading Parquet files", extra="parquet")
    shown = repr(str(check_readable(path, what)))
    try:
        return pq.read_table(str(path), columns=columns)
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise GpusimError(f"{what} {shown} is not a readable Parquet file: "
                          f"{' '.join(str(exc).split())}") from None


def import_optional(module: str, *, needed_for: str, extra: str) -> ModuleType:
    """Import the optional dependency ``module``; if it is missing, :class:`GpusimError`
    saying that ``needed_for`` (a phrase such as ``"reading Parquet files"``) needs it and
    that ``pip install 'gpusim[EXTRA]'`` adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise GpusimError(f"{needed_for} needs the optional package {package} ({exc.msg}): "
                          f"pip install 'gpusim[{extra}]'") from None
