"""Baidu DeepBench's published training results: reading its CSV rows, and their layers.

DeepBench (github.com/baidu-research/DeepBench, ``results/train/DeepBench_NV_<GPU>.xlsx``)
times cuBLAS GEMMs and the three passes of cuDNN convolutions over hundreds of shapes. Its
sheets exported as CSV (``shared/reference/deepbench/``) have the columns

* GEMM: ``app, M, N, K, a_transpose, b_transpose, time_ms``;
* convolution: ``app, W, H, C, N, K, S, R, pad_w, pad_h, stride_w, stride_h, fwd_ms,
  bwd_data_ms, bwd_filter_ms`` (input ``W x H x C``, batch ``N``, ``K`` filters ``S`` wide and
  ``R`` high; ``bwd_data_ms`` empty where the benchmark skips it, the first layers).

:func:`read_deepbench_csv` reads such a file into :class:`DeepBenchRow` objects, by column
name; only the shape columns are required, so a user's own list of shapes (``gpusim op
--from``) needs no time columns. A bad row raises :class:`GpusimError` naming its line.

The Pascal sheets (TITAN Xp, P100, GTX 1080 Ti) were exported without the ``app`` column:
their values sit one column left of the header and end in a derived column (GEMM: TFLOPS;
convolution: an output height ``(H + 2*pad_h - R + 1) / stride_h``), and their filter sizes
come height first (``R, S``): the derived column is computed from the first of the two
(``700, 161, ..., 5, 20`` -> 78.5 = (161 - 5 + 1) / 2), and DeepBench's own problem list has
the same layer as ``S = 20, R = 5`` (the T4 sheet agrees). Rows whose ``app`` field is a
number are read in that layout; the derived column is dropped.

:func:`conv_layers` and :func:`gemm_layer_of` turn a row into the layers gpusim lowers
(:mod:`workloads.lowering`): a convolution pass as ``conv_layer(N, (C, H, W), K, (R, S),
stride=(stride_h, stride_w), padding=(pad_h, pad_w))``, a GEMM as a bias-free linear layer
``M x N x K`` (DeepBench's column-major ``C = op(A) op(B)``, A being ``M x K``; the transposes
select cuBLAS's ``nn/nt/tn`` kernel variant, which lowering does not distinguish).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gpu_models.calibration import OpTiming
from gpu_models.errors import GpusimError
from gpu_models.kernel import CostModel
from gpu_models.spec import GPUSpec
from gpu_models.units import MS_PER_S
from sim.analysis.pricing import lower_priced
from workloads.layers import Layer
from workloads.lowering import STORAGE_DTYPE, conv_layer, gemm_layer

#: Shape columns of each kind, in DeepBench's order.
GEMM_COLUMNS: tuple[str, ...] = ("M", "N", "K", "a_transpose", "b_transpose")
CONV_COLUMNS: tuple[str, ...] = ("W", "H", "C", "N", "K", "S", "R", "pad_w", "pad_h",
                                 "stride_w", "stride_h")
#: Measured time columns of each kind (milliseconds), and the pass each one times.
GEMM_TIMES: Mapping[str, str] = MappingProxyType({"time_ms": "gemm"})
CONV_TIMES: Mapping[str, str] = MappingProxyType(
    {"fwd_ms": "fwd", "bwd_data_ms": "dgrad", "bwd_filter_ms": "wgrad"})
#: Positional layout of the Pascal sheets' rows (see the module docstring).
_SHIFTED: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "gemm": ("M", "N", "K", "a_transpose", "b_transpose", "time_ms"),
    "conv": ("W", "H", "C", "N", "K", "R", "S", "pad_w", "pad_h", "stride_w", "stride_h",
             "fwd_ms", "bwd_data_ms", "bwd_filter_ms"),
})


@dataclass(frozen=True)
class DeepBenchRow:
    """One row: its kind, shape (integers; transposes "N"/"T"), label and measured times."""

    line: int
    kind: str
    shape: Mapping[str, int | str]
    app: str = ""
    #: Time column -> milliseconds (``None`` where the sheet leaves it empty or, read with
    #: ``notes_in_times=True``, writes a note instead of a time).
    times_ms: Mapping[str, float | None] = field(default_factory=dict)
    #: Time column -> the text a sheet wrote there instead of a number.
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", MappingProxyType(dict(self.shape)))
        object.__setattr__(self, "times_ms", MappingProxyType(dict(self.times_ms)))
        object.__setattr__(self, "notes", MappingProxyType(dict(self.notes)))


def _kind_of(header: Sequence[str], path: Path) -> str:
    names = set(header)
    if set(GEMM_COLUMNS) <= names:
        return "gemm"
    if set(CONV_COLUMNS) <= names:
        return "conv"
    raise GpusimError(f"{path}: line 1: expected DeepBench GEMM columns "
                      f"({', '.join(GEMM_COLUMNS)}) or convolution columns "
                      f"({', '.join(CONV_COLUMNS)}); got {', '.join(header) or 'nothing'}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_deepbench_csv(path: str | Path, *, notes_in_times: bool = False,
                       ) -> list[DeepBenchRow]:
    """The rows of a DeepBench CSV file (see the module docstring); errors name the line.

    A time cell holding text is an error, unless ``notes_in_times``: then the row keeps its
    shape, that time is missing and the text is kept in :attr:`DeepBenchRow.notes` (the
    Pascal GEMM sheets' line 42 reads "(both matrices are 2560x7133)" instead of a time).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GpusimError(f"{path}: not a text CSV file ({exc.reason})") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise GpusimError(f"{path}: empty file (expected a header line)") from None
    kind = _kind_of(header, path)
    times = GEMM_TIMES if kind == "gemm" else CONV_TIMES
    rows = []
    for line, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        values = [f.strip() for f in fields]
        if len(values) > len(header):
            raise GpusimError(f"{path}: line {line}: {len(values)} fields, the header has "
                              f"{len(header)}")
        by_name = dict(zip(header, values, strict=False))
        if header[0] == "app" and _is_number(values[0]) and len(values) == len(header):
            # A Pascal sheet's row: positional, without the app column.
            by_name = dict(zip(_SHIFTED[kind], values, strict=False))
            by_name["app"] = ""
        rows.append(_row(path, line, kind, by_name, times, notes_in_times))
    return rows


def _row(path: Path, line: int, kind: str, by_name: Mapping[str, str],
         times: Mapping[str, str], notes_in_times: bool) -> DeepBenchRow:
    where = f"{path}: line {line}"
    columns = GEMM_COLUMNS if kind == "gemm" else CONV_COLUMNS
    shape: dict[str, int | str] = {}
    for name in columns:
        value = by_name.get(name, "")
        if name in ("a_transpose", "b_transpose"):
            if value not in ("N", "T"):
                raise GpusimError(f"{where}: {name} must be N or T (got {value!r})")
            shape[name] = value
            continue
        try:
            number = float(value)
        except ValueError:
            raise GpusimError(f"{where}: {name} must be an integer (got {value!r})") from None
        minimum = 0 if name.startswith("pad") else 1
        if not number.is_integer() or number < minimum:
            raise GpusimError(f"{where}: {name} must be an integer >= {minimum} "
                              f"(got {value!r})")
        shape[name] = int(number)
    if kind == "conv":
        for size, filt, pad in (("H", "R", "pad_h"), ("W", "S", "pad_w")):
            if int(shape[size]) + 2 * int(shape[pad]) < int(shape[filt]):
                raise GpusimError(f"{where}: the {filt} = {shape[filt]} filter does not fit "
                                  f"{size} = {shape[size]} with {pad} = {shape[pad]}")
    measured: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for name in times:
        value = by_name.get(name, "")
        if value == "":
            if name in by_name:
                measured[name] = None
            continue
        try:
            ms = float(value)
        except ValueError:
            if notes_in_times:
                measured[name], notes[name] = None, value
                continue
            raise GpusimError(f"{where}: {name} must be a number of milliseconds "
                              f"(got {value!r})") from None
        if not ms > 0 or ms == float("inf"):
            raise GpusimError(f"{where}: {name} must be > 0 (got {value!r})")
        measured[name] = ms
    return DeepBenchRow(line=line, kind=kind, shape=shape, app=by_name.get("app", ""),
                        times_ms=measured, notes=notes)


def conv_layers(row: DeepBenchRow, *, dtype: str = "fp32") -> dict[str, Layer]:
    """The three passes of a convolution row as layers: ``{"fwd", "dgrad", "wgrad"} -> Layer``."""
    s = row.shape
    try:
        return {pass_: conv_layer(
            int(s["N"]), (int(s["C"]), int(s["H"]), int(s["W"])), int(s["K"]),
            (int(s["R"]), int(s["S"])), stride=(int(s["stride_h"]), int(s["stride_w"])),
            padding=(int(s["pad_h"]), int(s["pad_w"])), pass_=pass_, dtype=dtype,
            name=f"deepbench_line{row.line}") for pass_ in ("fwd", "dgrad", "wgrad")}
    except GpusimError as exc:
        raise GpusimError(f"line {row.line}: {exc}") from None


def gemm_layer_of(row: DeepBenchRow, *, dtype: str = "fp32") -> Layer:
    """A GEMM row as the bias-free linear layer lowering prices."""
    s = row.shape
    return gemm_layer(int(s["M"]), int(s["N"]), int(s["K"]), dtype=dtype,
                      name=f"deepbench_line{row.line}")


def timings(rows: Sequence[DeepBenchRow], *, dtype: str, layout: str) -> tuple[OpTiming, ...]:
    """The measured times of ``rows`` as calibration timings (empty cells left out)."""
    out = []
    for row in rows:
        passes = GEMM_TIMES if row.kind == "gemm" else CONV_TIMES
        for column, pass_ in passes.items():
            ms = row.times_ms.get(column)
            if ms is None:
                continue
            out.append(OpTiming(op="gemm" if row.kind == "gemm" else "conv2d", pass_=pass_,
                                shape=row.shape, dtype=dtype, layout=layout,
                                duration_s=ms / MS_PER_S, label=row.app, line=row.line))
    return tuple(out)


#: Predicted time column of each pass, named as DeepBench names its measured ones.
PASS_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"gemm": "time_ms", "fwd": "fwd_ms", "dgrad": "bwd_data_ms", "wgrad": "bwd_filter_ms"})


def row_layers(row: DeepBenchRow, *, dtype: str) -> dict[str, Layer]:
    """pass -> layer of a row: ``{"gemm": ...}`` or the three convolution passes."""
    if row.kind == "gemm":
        return {"gemm": gemm_layer_of(row, dtype=dtype)}
    return conv_layers(row, dtype=dtype)


#: How DeepBench's own runs chose each convolution pass's algorithm: its ``conv_bench.cu``
#: asks ``cudnnFind*Algorithm`` (``USE_GET`` is 0), which times every algorithm and returns
#: the fastest; the validation against its results prices it so
#: (:func:`sim.analysis.pricing.lower_priced`). Its tensor-core sheets (the T4's FP16) force
#: the implicit-GEMM algorithms instead, which is also all that lowering offers for
#: tensor-op math (:func:`workloads.lowering.conv_algorithm_candidates`), so one choice
#: covers both (shared/reference/deepbench/README.md, "How the benchmark ran").
DEEPBENCH_ALGORITHM_CHOICE = "fastest"


def price_row(row: DeepBenchRow, gpu: GPUSpec, cost_model: CostModel, *, precision: str,
              layout: str, algorithm_choice: str = "rules") -> dict[str, float]:
    """Predicted milliseconds of each pass of a row (``time_ms``, or ``fwd_ms``,
    ``bwd_data_ms``, ``bwd_filter_ms``): each pass lowered and its kernels priced back to
    back, the convolution algorithm chosen by ``algorithm_choice``
    (:func:`sim.analysis.pricing.lower_priced`)."""
    dtype = STORAGE_DTYPE[precision]
    out = {}
    for pass_, layer in row_layers(row, dtype=dtype).items():
        try:
            _, time_s, _ = lower_priced(layer, gpu, cost_model, precision=precision,
                                        layout=layout, algorithm_choice=algorithm_choice)
        except GpusimError as exc:
            raise GpusimError(f"line {row.line}: {exc}") from None
        out[PASS_COLUMNS[pass_]] = time_s * MS_PER_S
    return out
