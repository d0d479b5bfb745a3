"""Reading the files users hand to gpusim (spec, program, sweep, calibration, timing files).

Every loader needs the same first step: read the file, parse it as JSON or TOML, and turn a
missing, unreadable or malformed file into a :class:`GpusimError` that names the kind of file
and its path. :func:`read_data_file` is that step; the loaders then check the structure.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from gpu_models.errors import GpusimError


def read_data_file(path: str | Path, what: str, *, fmt: str | None = None) -> Any:
    """The parsed content of ``path`` as ``fmt`` (``"json"`` or ``"toml"``; by default TOML
    for a ``.toml`` suffix, JSON otherwise).

    ``what`` names the kind of file in error messages (``"GPU spec file"``).
    """
    path = Path(path)
    shown = repr(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GpusimError(f"{what} {shown} does not exist") from None
    except IsADirectoryError:
        raise GpusimError(f"{what} {shown} is a directory") from None
    except UnicodeDecodeError as exc:
        raise GpusimError(f"{what} {shown} is not UTF-8 text: {exc}") from None
    if (fmt or ("toml" if path.suffix.lower() == ".toml" else "json")) == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise GpusimError(f"{what} {shown} is malformed TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GpusimError(f"{what} {shown} is not valid JSON: {exc}") from None
