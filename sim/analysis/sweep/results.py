"""Results files: rows written as they arrive, so an interrupted sweep can resume.

A sweep writes one row per point (see :mod:`sim.analysis.sweep.evaluate`) to ``.csv`` or
``.parquet``. Rows are appended as the executor delivers them; on ``resume`` the keys
already in the file are read and those points skipped. Columns can appear mid-sweep (the
first valid row after a run of invalid ones brings the result columns; a new policy brings
its makespan column); ``error`` is always the last column.

**CSV** is appended and flushed after every batch of rows. A crash can leave a partial last
line (rows are single-line: error messages are flattened to one line); on resume, anything
after the last newline is cut off and that point is simply evaluated again. When new
columns appear the file is rewritten with the wider header (to a temporary file, then
renamed over the original, so a crash leaves the old or the new file, never a mix).

**Parquet** files cannot be appended to, and a ``ParquetWriter`` killed before ``close()``
leaves a file without its footer that no reader opens. So each batch is written as a
complete small file ``part-NNNNNN.parquet`` in a sidecar folder ``<out>.parts/`` (written
under a temporary name and renamed, so a part is whole or absent). When the sweep ends —
normally, by an exception or by Ctrl-C — the previous ``<out>`` and the parts are merged into
``<out>`` (again via a temporary file and a rename) and the folder is removed. A process
that is killed outright leaves the parts; the next ``--resume`` (and :func:`read_results`)
reads them together with ``<out>``. Needs the ``parquet`` extra (pyarrow).

**Resuming** reads and then appends to (and may rewrite) ``<out>``, so it first checks that
``<out>`` is a sweep's results file: its header has every column a sweep writes for any
point (:data:`REQUIRED_COLUMNS`) and every ``key`` is a point key (16 hex digits). Any other
file (a CSV of the user's, an empty file) is refused with exit 2 and left as it was.
Reading goes through :mod:`gpu_models.datafile`: a damaged CSV or a file that is not
Parquet is a :class:`GpusimError` naming it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from gpu_models.datafile import (
    check_readable,
    import_optional,
    read_csv,
    read_parquet,
    read_text,
)
from gpu_models.errors import GpusimError
from gpu_models.spec import GPUSpec
from sim.analysis.sweep.evaluate import Row
from sim.analysis.sweep.points import OPTION_DEFAULTS

#: Columns that are text whatever they look like (a key can be all digits).
_TEXT_COLUMNS = frozenset({
    "key", "gpu", "workload", "phase", "precision", "cost_model", "sm_sharing", "policy",
    "error",
    "best_policy", "binds", "work_bound_binds", "compute_capability", "smem_carveouts_B",
    *(name for name, kind in GPUSpec.__annotations__.items() if kind == "str"),
})
FORMATS: tuple[str, ...] = (".csv", ".parquet")
#: Columns every row of a sweep has: the point's key, its options, and its error.
REQUIRED_COLUMNS: tuple[str, ...] = ("key", *OPTION_DEFAULTS, "error")
#: What :attr:`Point.key <sim.analysis.sweep.points.Point.key>` looks like.
_KEY_PATTERN = re.compile(r"[0-9a-f]{16}")
#: How results files are named in messages.
_WHAT = "results file"


class ResultsFile(Protocol):
    """An open results file: the keys it already holds, and where new rows go."""

    path: Path
    #: Keys of the rows already in the file when it was opened.
    existing_keys: frozenset[str]

    def append(self, rows: Sequence[Row]) -> None:
        """Add ``rows`` durably (they survive the process being killed afterwards)."""
        ...

    def close(self) -> None:
        """Finish the file; safe to call once, also after an interruption."""
        ...


def open_results(path: str | Path, *, resume: bool = False,
                 overwrite: bool = False) -> ResultsFile:
    """Open ``path`` for a sweep. An existing file needs ``resume`` or ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise GpusimError(f"results file {str(path)!r}: use a .csv or .parquet name")
    if resume and overwrite:
        raise GpusimError("--resume and --overwrite exclude each other")
    if suffix == ".csv":
        return CsvResults(path, resume=resume, overwrite=overwrite)
    return ParquetResults(path, resume=resume, overwrite=overwrite)


def read_results(path: str | Path) -> list[Row]:
    """Every row of a results file (for Parquet, including parts of an unfinished sweep)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows = read_csv(path, _WHAT)
        return _typed_csv_rows(header, rows)
    if suffix == ".parquet":
        table = _read_parquet_all(path)
        if table is None:
            check_readable(path, _WHAT)  # raises: neither the file nor its parts exist
        return _typed_text_columns(list(table.to_pylist()))
    raise GpusimError(f"results file {str(path)!r}: use a .csv or .parquet name")


def column_order(columns: Iterable[str]) -> list[str]:
    """First-seen order with ``error`` moved last."""
    ordered = list(dict.fromkeys(columns))
    if "error" in ordered:
        ordered.remove("error")
        ordered.append("error")
    return ordered


def _refuse_existing(path: Path, exists: bool, resume: bool, overwrite: bool) -> None:
    if exists and not (resume or overwrite):
        raise GpusimError(f"{path} already exists: pass --resume to continue that sweep "
                          "or --overwrite to start again")


def check_own_results(path: Path, columns: Sequence[str], keys: Iterable[Any]) -> None:
    """Raise :class:`GpusimError` unless ``columns`` (a file's header) and ``keys`` (its
    ``key`` column) are those of a sweep's results file: ``--resume`` must never append
    to, or rewrite, a file of the user's."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        shown = ", ".join(columns[:8]) + (" ..." if len(columns) > 8 else "")
        raise GpusimError(
            f"{path} is not a gpusim sweep results file (its header lacks "
            f"{', '.join(missing)}; it has {shown or 'no header'}): --resume continues a "
            "file that gpusim sweep wrote; left unchanged")
    bad = next((k for k in keys if not isinstance(k, str) or not _KEY_PATTERN.fullmatch(k)),
               None)
    if bad is not None:
        raise GpusimError(f"{path} is not a gpusim sweep results file (key {bad!r} is not a "
                          "sweep point key): --resume continues a file that gpusim sweep "
                          "wrote; left unchanged")


# ---------------------------------------------------------------------- CSV
class CsvResults:
    """A CSV results file, appended and flushed per batch (see the module notes)."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool) -> None:
        self.path = path
        _refuse_existing(path, path.exists(), resume, overwrite)
        if overwrite:
            path.unlink(missing_ok=True)
        self.columns: list[str] = []
        keys: set[str] = set()
        if resume and path.exists():
            # The header is checked before anything is cut off: a file of the user's stays
            # untouched.
            check_own_results(path, _csv_header(path), [])
            _cut_partial_last_line(path)
            self.columns, rows = read_csv(path, _WHAT)
            check_own_results(path, self.columns, [row["key"] for row in rows])
            keys = {row["key"] for row in rows}
        self.existing_keys = frozenset(keys)
        # Opened at the first row: a sweep that fails before any row leaves no empty file.
        self._file: TextIO | None = None

    def append(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        wanted = column_order([*self.columns, *(c for row in rows for c in row)])
        if wanted != self.columns:
            self._rewrite_with(wanted)
        if self._file is None:
            self._file = self.path.open("a", newline="", encoding="utf-8")
        writer = csv.DictWriter(self._file, fieldnames=self.columns, restval="")
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rewrite_with(self, columns: list[str]) -> None:
        self.close()
        old_rows = read_csv(self.path, _WHAT)[1] if self.columns else []
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(old_rows)
        os.replace(tmp, self.path)
        self.columns = columns


def _csv_header(path: Path) -> list[str]:
    """The first line of a CSV file, as column names ([] for an empty file)."""
    first = read_text(path, _WHAT).partition("\n")[0]
    return next(csv.reader([first]), [])


def _cut_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _typed_csv_rows(header: Sequence[str], rows: Sequence[dict[str, str]]) -> list[Row]:
    # Per column, not per cell: a column is int if every number in it is, else float, else
    # text. Text in a numeric column (an invalid point keeps the value the user typed,
    # "lots") stays text in that cell.
    converters = {name: _column_type(name, [row.get(name, "") for row in rows])
                  for name in header}
    return [
        {name: (None if row.get(name, "") == "" else converters[name](row[name]))
         for name in header}
        for row in rows
    ]


def _number_or_none(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        return None


def _column_type(name: str, values: Sequence[str | None]) -> Any:
    present = [v for v in values if v]
    if name in _TEXT_COLUMNS:
        return str
    numbers = [v for v in present if _number_or_none(float, v) is not None]
    if not numbers:
        return str
    kind = int if all(_number_or_none(int, v) is not None for v in numbers) else float

    def convert(text: str) -> Any:
        value = _number_or_none(kind, text)
        return text if value is None else value

    return convert


def _typed_text_columns(rows: list[Row]) -> list[Row]:
    """Rows of a Parquet file with their text columns of numbers typed as CSV ones are
    (a column mixing numbers and an invalid point's text is stored as text)."""
    if not rows:
        return rows
    columns = [c for c in rows[0] if c not in _TEXT_COLUMNS
               and all(v is None or isinstance(v, str) for v in (r.get(c) for r in rows))]
    converters = {c: _column_type(c, [r.get(c) or "" for r in rows]) for c in columns}
    for row in rows:
        for column, convert in converters.items():
            if row.get(column) is not None:
                row[column] = convert(row[column])
    return rows


# ---------------------------------------------------------------------- Parquet
class ParquetResults:
    """A Parquet results file built from complete part files (see the module notes)."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool) -> None:
        self._pa, self._pq = _import_pyarrow()
        self.path = path
        self.parts_dir = _parts_dir(path)
        _refuse_existing(path, path.exists() or self.parts_dir.exists(), resume, overwrite)
        if overwrite:
            path.unlink(missing_ok=True)
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        keys: set[str] = set()
        if resume:
            for part in _parquet_sources(path):
                table = read_parquet(part, _WHAT)
                part_keys = table.column("key").to_pylist() if "key" in table.column_names \
                    else []
                check_own_results(part, table.column_names, part_keys)
                keys.update(part_keys)
        self.existing_keys = frozenset(keys)
        self._next_part = len(_part_files(self.parts_dir))

    def append(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        table = _arrow_table(self._pa, rows)
        # Skip numbers already on disk (a killed run may have left parts behind).
        while (target := self.parts_dir / f"part-{self._next_part:06d}.parquet").exists():
            self._next_part += 1
        tmp = target.with_name(target.name + ".tmp")
        self._pq.write_table(table, tmp)
        os.replace(tmp, target)
        self._next_part += 1

    def close(self) -> None:
        table = _read_parquet_all(self.path)
        if table is None:
            return
        table = table.select(column_order(table.column_names))
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._pq.write_table(table, tmp)
        os.replace(tmp, self.path)
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def _parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def _part_files(parts_dir: Path) -> list[Path]:
    return sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else []


def _parquet_sources(path: Path) -> list[Path]:
    return ([path] if path.is_file() else []) + _part_files(_parts_dir(path))


def _read_parquet_all(path: Path) -> Any:
    """The merged table of ``path`` and its parts, or ``None`` if there is neither."""
    pa, _ = _import_pyarrow()
    sources = _parquet_sources(path)
    if not sources:
        return None
    tables = [read_parquet(p, _WHAT) for p in sources]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise GpusimError(f"{_WHAT} {str(path)!r}: its parts do not fit together: "
                          f"{exc}") from None


def _arrow_table(pa: Any, rows: Sequence[Row]) -> Any:
    columns = column_order(c for row in rows for c in row)
    arrays = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed kinds in one column (numbers and text): keep it as text.
            arrays[name] = pa.array([None if v is None else str(v) for v in values])
    return pa.table(arrays)


def _import_pyarrow() -> tuple[Any, Any]:
    needed_for = "a .parquet results file (use a .csv name otherwise)"
    return (import_optional("pyarrow", needed_for=needed_for, extra="parquet"),
            import_optional("pyarrow.parquet", needed_for=needed_for, extra="parquet"))
