"""Sweep points and sweep specifications: what one evaluation is, and how a grid expands.

A :class:`Point` is one question: *this workload, at this batch size, phase and precision, on
this GPU (a preset or spec file with some fields overridden), under this cost model and policy*
(and engine physics: ``sm_sharing`` ``on``, the default, or ``off``). Override values are kept
as the text the user wrote (``"264"``, ``"0:8192:65536"``) and only turned into a
:class:`GPUSpec` when the point is evaluated, so that a point whose field does not exist or
whose spec fails validation becomes a per-point error row instead of stopping the sweep.

Every point has a stable :attr:`Point.key`: a hash of its inputs in canonical form (field
values parsed, overrides sorted), so ``sm_count=264`` typed on the command line and
``sm_count = 264`` in a TOML file are the same point. Resuming a sweep skips the points
whose key is already in the results file.

A :class:`SweepSpec` is a list of *axis tables*. Each table maps an option (``gpu``,
``workload``, ``batch``, ``phase``, ``precision``, ``cost_model``, ``sm_sharing``, ``policy``)
or a GPUSpec field to a list of values; the table expands to the Cartesian product of its
lists, and the spec's points are the union of its tables' points (first occurrence kept). The
TOML form::

    [sweep]                          # defaults every table starts from
    gpu = "h100"
    workload = ["resnet50", "inception_v3"]
    batch = 32

    [grid]                           # one table: the product of these lists
    sm_count = [66, 132, 264]
    smem_per_sm_B = [116736, 233472]

    [[points]]                       # more tables, each merged over [sweep]
    connections = 32
    policy = "all"

A list-valued GPUSpec field (``smem_carveouts_B``, ``compute_capability``) takes one value as
a list of numbers and an axis as a list of such lists (or ``"0:8192:..."`` strings).

Workload options (:func:`sim.analysis.workflow.kernel_graph_for`: ``nodes`` of RandWire,
``optimizer``, ``fusion``) are axes named ``option.KEY`` (``--option nodes=16,32`` on the
command line, an ``[grid.option]`` / ``option.nodes = [16, 32]`` table in TOML); their values
read as int, else float, else text, and they are part of the key only when given.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_models.cost import DEFAULT_COST_MODEL
from gpu_models.datafile import read_data_file
from gpu_models.errors import GpusimError
from gpu_models.presets import DEFAULT_GPU, load_gpu
from gpu_models.spec import GPUSpec, parse_field_value

#: Options a point has besides GPUSpec fields, with their defaults (``None``: required).
OPTION_DEFAULTS: Mapping[str, str | None] = {
    "gpu": DEFAULT_GPU,
    "workload": None,
    "batch": "1",
    "phase": "inference",
    "precision": "fp32",
    "cost_model": DEFAULT_COST_MODEL,
    "sm_sharing": "on",
    "policy": "all",
}
#: Values of the ``sm_sharing`` option.
ON_OFF: Mapping[str, bool] = {"on": True, "off": False}
#: The ``policy`` value meaning "every policy the evaluator knows".
ALL_POLICIES = "all"
#: Axis names ``option.KEY`` are workload options.
OPTION_PREFIX = "option."

#: GPUSpec fields whose value is a sequence; in tables a flat list of numbers is one value.
_SEQUENCE_FIELDS = frozenset(
    f.name for f in dataclasses.fields(GPUSpec) if str(f.type).startswith("tuple")
)


@dataclass(frozen=True)
class Point:
    """One evaluation of a sweep. Override values are text, parsed when the point runs."""

    workload: str
    gpu: str = DEFAULT_GPU
    #: ``(field, value text)`` pairs in the order the sweep gave them.
    overrides: tuple[tuple[str, str], ...] = ()
    batch: int = 1
    phase: str = "inference"
    precision: str = "fp32"
    cost_model: str = DEFAULT_COST_MODEL
    #: One policy name, or ``None`` for every policy the evaluator knows.
    policy: str | None = None
    #: SM throughput sharing and the memory-parallelism bound in the engine.
    sm_sharing: bool = True
    #: Workload options as ``(key, value text)`` pairs (see the module docstring).
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", tuple((str(k), str(v)) for k, v in self.overrides))
        object.__setattr__(self, "options", tuple((str(k), str(v)) for k, v in self.options))
        for name in ("workload", "gpu", "phase", "precision", "cost_model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise GpusimError(f"sweep point: {name} must be a non-empty string "
                                  f"(got {getattr(self, name)!r})")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise GpusimError(f"sweep point: batch must be a positive integer (got {self.batch!r})")
        if not isinstance(self.sm_sharing, bool):
            raise GpusimError(f"sweep point: sm_sharing must be True or False "
                              f"(got {self.sm_sharing!r})")
        if self.policy is not None and (not self.policy or self.policy == ALL_POLICIES):
            raise GpusimError(f"sweep point: policy must be a name or None (got {self.policy!r})")
        names = [k for k, _ in self.overrides]
        twice = sorted({k for k in names if names.count(k) > 1})
        if twice:
            raise GpusimError(f"sweep point: GPUSpec field(s) {', '.join(twice)} given twice")
        if any(k in OPTION_DEFAULTS for k in names):
            raise GpusimError(f"sweep point: {names} mixes options into GPUSpec overrides")

    @functools.cached_property
    def key(self) -> str:
        """Stable identity of the inputs: 16 hex digits of a SHA-256 of their canonical form.

        Cached: the runner asks for it several times per point (dedup, resume, the row).
        """
        canonical = {
            "gpu": self.gpu,
            "fields": {k: _canonical_value(k, v) for k, v in sorted(self.overrides)},
            "workload": self.workload,
            "batch": self.batch,
            "phase": self.phase,
            "precision": self.precision,
            "cost_model": self.cost_model,
            "policy": self.policy,
        }
        if not self.sm_sharing:  # keys of sweeps made before the option stay valid
            canonical["sm_sharing"] = False
        if self.options:  # absent otherwise: keys of sweeps without options stay as they were
            canonical["options"] = dict(sorted(self.workload_options().items()))
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def gpu_spec(self) -> GPUSpec:
        """The point's GPU: the base with the overrides applied (re-validated)."""
        base = load_gpu(self.gpu)
        if not self.overrides:
            return base
        return base.with_overrides([f"{k}={v}" for k, v in self.overrides])

    def workload_options(self) -> dict[str, int | float | str]:
        """The workload options with their values read as int, else float, else text."""
        return {key: option_value(text) for key, text in self.options}

    def input_columns(self) -> dict[str, Any]:
        """The inputs as result columns: ``gpu``, one column per field, then the options
        (``option.KEY`` columns last).

        Field values are parsed to their GPUSpec type; a value that does not parse (or a
        field that does not exist) is kept as the text the user gave, and the row's error
        explains it.
        """
        columns: dict[str, Any] = {"gpu": self.gpu}
        for name, text in self.overrides:
            value = _parsed_or_none(name, text)
            if value is None:
                columns[name] = text
            else:
                columns[name] = _sequence_text(name, value) if isinstance(value, tuple) \
                    else value
        columns.update(
            workload=self.workload, batch=self.batch, phase=self.phase,
            precision=self.precision, cost_model=self.cost_model,
            sm_sharing="on" if self.sm_sharing else "off",
            policy=ALL_POLICIES if self.policy is None else self.policy,
        )
        columns.update({f"{OPTION_PREFIX}{k}": v for k, v in self.workload_options().items()})
        return columns


def option_value(text: str) -> int | float | str:
    """A workload option's text as int, else float, else the text (as ``--option`` reads)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _sequence_text(name: str, values: Sequence[Any]) -> str:
    """A sequence field as the text ``--set`` takes: ``9.0``, ``0:8192:233472``."""
    return (".".join if name == "compute_capability" else ":".join)(map(str, values))


def _parsed_or_none(name: str, text: str) -> Any:
    try:
        return parse_field_value(name, text)
    except GpusimError:
        return None


def _canonical_value(name: str, text: str) -> Any:
    # Parsed values make "264", "264.0" and a TOML 264 one point; text that does not parse
    # (an invalid point) is keyed by the text itself so it is still skipped on resume.
    value = _parsed_or_none(name, text)
    return ["raw", text] if value is None else value


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as axis tables; :meth:`points` expands them (products, then union)."""

    #: Each table: ``(name, values as text)`` pairs; names are options or GPUSpec fields.
    tables: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]

    def __post_init__(self) -> None:
        if not self.tables:
            raise GpusimError("sweep: no points (give at least one table of axes)")
        for table in self.tables:
            names = [name for name, _ in table]
            for name, values in table:
                if not values:
                    raise GpusimError(f"sweep: axis {name!r} has no values")
            if names.count("workload") != 1:
                raise GpusimError("sweep: every table needs a workload (--workload or "
                                  "'workload' in [sweep])")
            if len(set(names)) != len(names):
                raise GpusimError(f"sweep: an axis is given twice in {names}")

    @classmethod
    def from_tables(
        cls, tables: Iterable[Mapping[str, Sequence[str]]],
        defaults: Mapping[str, Sequence[str]] | None = None,
    ) -> SweepSpec:
        """Tables merged over ``defaults`` (option and field axes) and the option defaults."""
        base: dict[str, tuple[str, ...]] = {
            k: (v,) for k, v in OPTION_DEFAULTS.items() if v is not None
        }
        base.update({k: tuple(v) for k, v in (defaults or {}).items()})
        merged = []
        for table in tables:
            axes = {**base, **{k: tuple(v) for k, v in table.items()}}
            merged.append(tuple(axes.items()))
        return cls(tables=tuple(merged))

    def points(self) -> list[Point]:
        """Every point, tables in order, each table's product in row-major order; unique."""
        seen: set[str] = set()
        out: list[Point] = []
        for table in self.tables:
            names = [name for name, _ in table]
            for combo in itertools.product(*(values for _, values in table)):
                point = _point_from(dict(zip(names, combo, strict=True)))
                if point.key not in seen:
                    seen.add(point.key)
                    out.append(point)
        return out


def _point_from(values: Mapping[str, str]) -> Point:
    batch_text = values["batch"]
    try:
        batch = int(batch_text)
    except ValueError:
        raise GpusimError(f"sweep: batch must be an integer (got {batch_text!r})") from None
    policy = values["policy"]
    sharing = values["sm_sharing"]
    if sharing not in ON_OFF:
        raise GpusimError(f"sweep: sm_sharing must be 'on' or 'off' (got {sharing!r})")
    return Point(
        workload=values["workload"],
        gpu=values["gpu"],
        overrides=tuple((k, v) for k, v in values.items()
                        if k not in OPTION_DEFAULTS and not k.startswith(OPTION_PREFIX)),
        batch=batch,
        phase=values["phase"],
        precision=values["precision"],
        cost_model=values["cost_model"],
        policy=None if policy == ALL_POLICIES else policy,
        sm_sharing=ON_OFF[sharing],
        options=tuple((k.removeprefix(OPTION_PREFIX), v) for k, v in values.items()
                      if k.startswith(OPTION_PREFIX)),
    )


# ---------------------------------------------------------------------- from the CLI
def split_values(text: str) -> tuple[str, ...]:
    """``"a,b, c"`` -> ``("a", "b", "c")``; empty items are an error."""
    items = tuple(item.strip() for item in text.split(","))
    if not all(items):
        raise GpusimError(f"empty value in the list {text!r}")
    return items


def parse_option_axes(assignments: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The CLI's repeated ``--option KEY=V1,V2,...`` as ``option.KEY`` axes."""
    axes: dict[str, tuple[str, ...]] = {}
    for text in assignments:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise GpusimError(f"--option expects KEY=V1,V2,..., got {text!r}")
        if f"{OPTION_PREFIX}{key}" in axes:
            raise GpusimError(f"--option {key} given twice; list its values once, "
                              "comma-separated")
        axes[f"{OPTION_PREFIX}{key}"] = split_values(values)
    return axes


def parse_set_axes(assignments: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The CLI's repeated ``--set FIELD=V1,V2,...`` as field axes (order kept).

    Field names are *not* checked here: a field that does not exist becomes an error row
    per point, as the sweep contract says; a malformed assignment is an error now.
    """
    axes: dict[str, tuple[str, ...]] = {}
    for text in assignments:
        name, sep, values = text.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise GpusimError(f"--set expects FIELD=V1,V2,..., got {text!r}")
        if name in OPTION_DEFAULTS:
            raise GpusimError(f"--set {name}: {name!r} is an option; use --{name}")
        if name in axes:
            raise GpusimError(f"--set {name} given twice; list its values once, comma-separated")
        axes[name] = split_values(values)
    return axes


# ---------------------------------------------------------------------- from TOML
_TOML_SECTIONS = ("sweep", "grid", "points")


def load_sweep_file(path: str | Path) -> SweepSpec:
    """Read a sweep TOML file (``[sweep]`` defaults, ``[grid]``, ``[[points]]``)."""
    path = Path(path)
    data = read_data_file(path, "sweep file", fmt="toml")
    return sweep_from_mapping(data, origin=f"sweep file {path}")


def sweep_from_mapping(data: Mapping[str, Any], *, origin: str = "sweep") -> SweepSpec:
    """Build a :class:`SweepSpec` from the parsed TOML structure."""
    unknown = sorted(set(data) - set(_TOML_SECTIONS))
    if unknown:
        raise GpusimError(f"{origin}: unknown section(s) {', '.join(unknown)}; expected "
                          "[sweep], [grid] and/or [[points]]")
    defaults = _axes(data.get("sweep", {}), f"{origin} [sweep]")
    tables: list[dict[str, tuple[str, ...]]] = []
    if "grid" in data:
        tables.append(_axes(data["grid"], f"{origin} [grid]"))
    points = data.get("points", [])
    if not isinstance(points, list):
        raise GpusimError(f"{origin}: 'points' must be an array of tables ([[points]])")
    tables.extend(_axes(p, f"{origin} [[points]] #{i + 1}") for i, p in enumerate(points))
    if not tables:
        tables.append({})  # the [sweep] defaults alone: the base GPU(s)
    return SweepSpec.from_tables(tables, defaults)


def _axes(table: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(table, dict):
        raise GpusimError(f"{where}: must be a table of NAME = value or [values]")
    table = dict(table)
    options = table.pop("option", {})
    if not isinstance(options, dict):
        raise GpusimError(f"{where}: option must be a table of KEY = value or [values]")
    table.update({f"{OPTION_PREFIX}{k}": v for k, v in options.items()})
    axes: dict[str, tuple[str, ...]] = {}
    for name, raw in table.items():
        values = _axis_values(name, raw)
        if not values:
            raise GpusimError(f"{where}: {name} has an empty list of values")
        axes[name] = tuple(_value_text(name, v, where) for v in values)
    return axes


def _axis_values(name: str, raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        return [raw]
    if name in _SEQUENCE_FIELDS and not any(isinstance(v, (list, str)) for v in raw):
        return [raw]  # a single carveout list, not an axis of numbers
    return raw


def _value_text(name: str, value: Any, where: str) -> str:
    if name == "sm_sharing" and isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (bool, dict, type(None))):
        raise GpusimError(f"{where}: {name} = {value!r} is not a number, string or list")
    if isinstance(value, list):
        return _sequence_text(name, value)
    if isinstance(value, float):
        return repr(value)
    return str(value)

