"""Heatmaps of sweep results: a metric over two swept parameters.

A sweep over, say, ``sm_count`` and ``smem_per_sm_B`` gives one row per combination;
:func:`pivot_sweep` arranges the rows into a grid (``y`` rows by ``x`` columns) and
:func:`sweep_heatmap` draws it: one cell per combination, coloured and annotated with the
metric (``speedup_achievable`` by default), axes labelled with the parameters in display
units (shared memory in KiB, bandwidth in GB/s, times in us), and a colour bar. Points that
were invalid (their row has an ``error``) are grey cells marked "n/a".

When the results vary along more than the two axes (several workloads or batch sizes), pick
one slice with ``where`` (``{"workload": "resnet50", "batch": "32"}``); a cell that would
get two rows is an error naming the columns that still vary.

Figures are built with :class:`matplotlib.figure.Figure` directly, not pyplot, so no GUI
backend or global figure state is involved; save with ``fig.savefig(path)``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from gpu_models.errors import GpusimError

#: Display units of count-valued parameters (shown in the axis label).
_COUNT_UNITS: Mapping[str, str] = {
    "sm_count": "SMs",
    "connections": "hardware queues",
    "max_connections": "hardware queues",
    "max_resident_grids": "grids",
    "max_threads_per_sm": "threads",
    "max_threads_per_block": "threads",
    "max_warps_per_sm": "warps",
    "max_blocks_per_sm": "blocks",
    "regs_per_sm": "32-bit registers",
    "regs_per_block": "32-bit registers",
    "max_regs_per_thread": "32-bit registers",
    "sub_partitions": "sub-partitions",
    "stream_priority_levels": "levels",
    "batch": "samples",
}
_BINARY_UNITS: tuple[tuple[str, int], ...] = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


@dataclass(frozen=True)
class DisplayUnit:
    """How a column is shown: its label and the factor from stored (SI) to shown values."""

    label: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise GpusimError(f"display unit {self.label!r}: scale must be > 0")


def display_unit(name: str, values: Sequence[Any] = ()) -> DisplayUnit:
    """The axis/colour-bar label of column ``name`` with its unit, and the scale to apply."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if name.endswith("_Bps"):
        return DisplayUnit(f"{name} (GB/s)", 1e-9)
    if name.endswith("_flop_per_s"):
        return DisplayUnit(f"{name} (TFLOP/s)", 1e-12)
    if name.endswith("_hz"):
        return DisplayUnit(f"{name} (MHz)", 1e-6)
    if name.endswith("_B"):
        smallest = min(numbers, default=0)
        for unit, size in _BINARY_UNITS:
            if smallest >= size:
                return DisplayUnit(f"{name} ({unit})", 1 / size)
        return DisplayUnit(f"{name} (B)")
    if name.endswith("_us"):
        return DisplayUnit(f"{name} (us)")
    if name.endswith("_s"):
        return DisplayUnit(f"{name} (us)", 1e6)
    if name.startswith("speedup"):
        return DisplayUnit(f"{name} (x, higher is better)")
    if name.endswith("occupancy"):
        return DisplayUnit(f"{name} (active / max warps per SM)")
    if name in _COUNT_UNITS:
        return DisplayUnit(f"{name} ({_COUNT_UNITS[name]})")
    return DisplayUnit(name)


@dataclass(frozen=True)
class SweepGrid:
    """A metric arranged over two parameters: ``values[i][j]`` is at ``y[i]``, ``x[j]``."""

    x: str
    y: str
    metric: str
    x_values: tuple[Any, ...]
    y_values: tuple[Any, ...]
    #: ``None`` where there is no row or the point was invalid.
    values: tuple[tuple[float | None, ...], ...]
    #: Columns with one value across the plotted rows (context for the title).
    fixed: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) != len(self.y_values) or any(
            len(row) != len(self.x_values) for row in self.values
        ):
            raise GpusimError(f"sweep grid of {self.metric}: values do not match the "
                              f"{len(self.y_values)} x {len(self.x_values)} axes")


def pivot_sweep(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    metric: str = "speedup_achievable",
    where: Mapping[str, str] | None = None,
) -> SweepGrid:
    """Arrange ``rows`` (filtered by ``where``: column -> value text) into a grid."""
    if x == y:
        raise GpusimError(f"--x and --y must differ (both {x!r})")
    if not rows:
        raise GpusimError("no results to plot")
    columns = list(dict.fromkeys(c for row in rows for c in row))
    for role, name in (("--x", x), ("--y", y), ("--metric", metric),
                       *(("--where", k) for k in (where or {}))):
        if name not in columns:
            raise GpusimError(f"{role} {name!r} is not a column of the results; columns: "
                              + ", ".join(c for c in columns if c != "key"))
    selected = [row for row in rows if _matches(row, where or {})]
    selected = [row for row in selected if row.get(x) is not None and row.get(y) is not None]
    if not selected:
        raise GpusimError(f"no results have both {x} and {y}"
                          + (f" where {_where_text(where)}" if where else ""))
    cells: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for row in selected:
        cells.setdefault((row[x], row[y]), []).append(row)
    for (xv, yv), group in cells.items():
        if len(group) > 1:
            varying = [c for c in columns if c not in ("key", x, y, "error")
                       and c in _input_columns(group) and len({_text(r.get(c)) for r in group}) > 1]
            raise GpusimError(
                f"{len(group)} results at {x}={xv}, {y}={yv}: they differ in "
                f"{', '.join(varying) or 'nothing the inputs show'}; pick one with --where "
                "COLUMN=VALUE"
            )
    x_values = tuple(sorted({row[x] for row in selected}, key=_sort_key))
    y_values = tuple(sorted({row[y] for row in selected}, key=_sort_key))
    values = tuple(
        tuple(_metric_value(cells.get((xv, yv)), metric) for xv in x_values) for yv in y_values
    )
    fixed = tuple(
        (c, selected[0].get(c)) for c in _input_columns(selected)
        if c not in (x, y, "key") and len({_text(r.get(c)) for r in selected}) == 1
        and selected[0].get(c) is not None
    )
    return SweepGrid(x=x, y=y, metric=metric, x_values=x_values, y_values=y_values,
                     values=values, fixed=fixed)


def sweep_heatmap(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    metric: str = "speedup_achievable",
    where: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """A heatmap figure of ``metric`` over ``x`` and ``y`` (see :func:`pivot_sweep`)."""
    return heatmap_figure(pivot_sweep(rows, x=x, y=y, metric=metric, where=where), title=title)


def heatmap_figure(grid: SweepGrid, *, title: str | None = None) -> Figure:
    """Draw a :class:`SweepGrid`: coloured, annotated cells, labelled axes, colour bar."""
    x_unit = display_unit(grid.x, grid.x_values)
    y_unit = display_unit(grid.y, grid.y_values)
    m_unit = display_unit(grid.metric)
    data = np.ma.masked_invalid(np.array(
        [[math.nan if v is None else v * m_unit.scale for v in row] for row in grid.values],
        dtype=float,
    ))
    width = min(16.0, max(6.0, 2.5 + 0.9 * len(grid.x_values)))
    height = min(12.0, 2.0 + 0.6 * len(grid.y_values))
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    cmap = _colormap()
    finite = data.compressed()
    norm = Normalize(vmin=float(finite.min()) if finite.size else 0.0,
                     vmax=float(finite.max()) if finite.size else 1.0)
    image = ax.imshow(data, cmap=cmap, norm=norm, origin="lower", aspect="auto")
    ax.set_xticks(range(len(grid.x_values)),
                  [_tick(v, x_unit.scale) for v in grid.x_values])
    ax.set_yticks(range(len(grid.y_values)),
                  [_tick(v, y_unit.scale) for v in grid.y_values])
    ax.set_xlabel(x_unit.label)
    ax.set_ylabel(y_unit.label)
    for i in range(len(grid.y_values)):
        for j in range(len(grid.x_values)):
            value = data[i, j]
            if value is np.ma.masked:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="black")
                continue
            # Light text on the dark end of the colour map, dark text on the light end.
            color = "white" if norm(value) < 0.6 else "black"
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label=m_unit.label)
    context = ", ".join(f"{k}={v}" for k, v in grid.fixed)
    # Wrapped to the figure's width (about 11 characters per inch at this font size).
    lines = [grid.metric, *textwrap.wrap(context, width=int(width * 11))]
    ax.set_title(title or "\n".join(lines), fontsize=9)
    return fig


def _colormap() -> Any:
    from matplotlib import colormaps

    # Invalid points (masked cells) show as grey, outside the colour scale.
    return colormaps["viridis"].with_extremes(bad="lightgrey")


def _matches(row: Mapping[str, Any], where: Mapping[str, str]) -> bool:
    return all(_same(row.get(k), v) for k, v in where.items())


def _same(value: Any, text: str) -> bool:
    if value is None:
        return text == ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return str(value) == text


def _where_text(where: Mapping[str, str] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in (where or {}).items())


def _input_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    # Inputs come before the first result column; rows put them first (see sim.analysis.sweep).
    columns = list(dict.fromkeys(c for row in rows for c in row))
    if "policy" in columns:
        return columns[: columns.index("policy") + 1]
    return columns


def _metric_value(group: list[Mapping[str, Any]] | None, metric: str) -> float | None:
    if not group or group[0].get("error"):
        return None
    value = group[0].get(metric)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GpusimError(f"--metric {metric!r} is not numeric (got {value!r})")
    return float(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _tick(value: Any, scale: float) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value * scale:.4g}"
    return str(value)
