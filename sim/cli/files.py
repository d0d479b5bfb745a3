"""The files a command reads and writes, and the one check that keeps outputs off inputs.

Every command declares, next to its arguments, which of them name files it reads
(``inputs``), files it writes (``outputs``) and folders it writes into (``output_dirs``)::

    p.add_argument("program", ...)
    p.add_argument("--trace", metavar="OUT.json", ...)
    declare_files(p, inputs=("program",), outputs=("trace",))

Before the command runs, :func:`check_files` refuses, with exit 2 and a line naming the
option:

* an output that is one of the inputs (the same file by any name: ``t.json`` and
  ``./t.json``, a symlink, a hard link), since writing it would destroy what the user
  gave — ``calibrate ingest t.json --out t.json``;
* an empty output name (``--out ""`` would write into the current folder);
* an output file that is an existing folder (``--out /tmp``), or whose folder does not
  exist (``--out /nonexistent/d/r.csv`` would otherwise fail later, on a temporary name);
* an output folder that exists as a file.

Commands with stricter rules (``sweep --resume`` continues only its own results files,
``reproduce`` writes only into an empty folder or one of its own) check those themselves.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gpu_models.errors import GpusimError

#: Namespace attributes :func:`declare_files` sets (argument dests, per role; and how
#: each argument is spelled on the command line).
_INPUTS, _OUTPUTS, _OUTPUT_DIRS = "files_read", "files_written", "folders_written"
_SPELLING = "file_arg_names"


def declare_files(parser: argparse.ArgumentParser, *, inputs: Sequence[str] = (),
                  outputs: Sequence[str] = (), output_dirs: Sequence[str] = ()) -> None:
    """Record which arguments (by ``dest``) of ``parser`` name files it reads or writes."""
    spelling = {}
    for dest in (*inputs, *outputs, *output_dirs):
        action = next((a for a in parser._actions if a.dest == dest), None)
        if action is None:
            raise KeyError(f"{parser.prog} has no argument {dest!r}")
        spelling[dest] = action.option_strings[0] if action.option_strings else \
            str(action.metavar or dest)
    parser.set_defaults(**{_INPUTS: tuple(inputs), _OUTPUTS: tuple(outputs),
                           _OUTPUT_DIRS: tuple(output_dirs), _SPELLING: spelling})


def sub_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The sub-command parser ``name`` registered on ``parser`` (for declaring its files
    when another module built it)."""
    for action in parser._actions:  # argparse offers no public lookup of sub-parsers
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    raise KeyError(f"{parser.prog} has no sub-command {name!r}")


def _spelled(args: argparse.Namespace, dest: str) -> str:
    """How argument ``dest`` is spelled on the command line (``--out``, ``TRACE``)."""
    return str(getattr(args, _SPELLING, {}).get(dest, dest))


def _values(value: Any) -> list[str]:
    """The file names an argument value holds (a name, a list, or a comma list)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    names: list[str] = []
    for item in items:
        text = str(item)
        names.append(text)
        if "," in text:  # sweep --gpu a.toml,b.toml
            names.extend(part.strip() for part in text.split(",") if part.strip())
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def output_paths(args: argparse.Namespace) -> list[str]:
    """Every output file and folder name of the parsed command (for error messages)."""
    dests = (*getattr(args, _OUTPUTS, ()), *getattr(args, _OUTPUT_DIRS, ()))
    return [name for dest in dests for name in _values(getattr(args, dest, None))]


def check_files(args: argparse.Namespace) -> None:
    """Raise :class:`GpusimError` for an output that would overwrite an input, or that
    cannot be written at all (see the module docstring)."""
    inputs = [(_spelled(args, dest), Path(name)) for dest in getattr(args, _INPUTS, ())
              for name in _values(getattr(args, dest, None)) if Path(name).is_file()]
    for dest in getattr(args, _OUTPUTS, ()):
        for name in _values(getattr(args, dest, None)):
            _check_output_file(_spelled(args, dest), name, inputs)
    for dest in getattr(args, _OUTPUT_DIRS, ()):
        for name in _values(getattr(args, dest, None)):
            _check_output_dir(_spelled(args, dest), name)


def _check_output_file(flag: str, name: str, inputs: Iterable[tuple[str, Path]]) -> None:
    if not name.strip():
        raise GpusimError(f"{flag} is empty: give a file name")
    path = Path(name)
    if path.is_dir():
        raise GpusimError(f"{flag} {name} is a folder: give a file name (one inside it, "
                          "or a new one)")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise GpusimError(f"cannot write {name} ({flag}): folder {folder} {what}")
    for given_as, source in inputs:
        if _same_file(path, source):
            raise GpusimError(
                f"{flag} {name} is the input file {source} ({given_as}): writing it would "
                "destroy it; choose another output name")


def _check_output_dir(flag: str, name: str) -> None:
    if not name.strip():
        raise GpusimError(f"{flag} is empty: give a folder name")
    path = Path(name)
    if path.exists() and not path.is_dir():
        raise GpusimError(f"{flag} {name} exists and is not a folder: give a folder name")
