"""Figures of the analysis: each function takes data and returns a matplotlib ``Figure``.

The figures explain one idea each, in the order the analysis builds it up:

* :func:`occupancy_chart` — how many warps one SM keeps resident as threads per block,
  registers per thread and shared memory per block change (the occupancy calculator);
* :func:`waves_chart` — a kernel's duration against its grid size: a staircase, one step
  per *wave* of ``sm_count x blocks_per_sm`` blocks;
* :func:`parallelism_profile_chart` — how many ops and convolutions of each network could
  run at once, level by level, forward then backward (the DAG's promise);
* :func:`timeline_comparison` — simulated kernels per stream, one program run serially and
  concurrently (what the GPU actually does with that promise), or a single run;
* :func:`utilization_chart` — busy SMs, resident warps and DRAM bandwidth over time, of one
  run or several;
* :func:`block_placement_chart` — which SM ran which thread block when (the leftover
  policy made visible: a younger kernel only gets the tail of the older one);
* :func:`limits_chart`, :func:`speedup_vs_batch_chart` — the limits of concurrent layer
  scheduling: serial time, the best policy's time and the lower bound per network and batch;
* :func:`measured_vs_simulated_chart` — simulated against measured times, once device data
  exist.

Sweep heatmaps live in :mod:`sim.report.plots_sweep`. Every function builds a fresh
:class:`matplotlib.figure.Figure` (no pyplot, no global state), so callers save it with
``fig.savefig(path)`` and nothing leaks between figures. Data arrive in SI units (seconds,
bytes/s); axes show microseconds, milliseconds and GB/s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from gpu_models.errors import GpusimError
from gpu_models.occupancy import occupancy
from gpu_models.spec import GPUSpec
from gpu_models.units import GIGA, MS_PER_S, US_PER_S
from sim.engine.result import BlockRecord, SimResult
from workloads.analysis import PhaseProfile

#: Qualitative colours (Okabe-Ito, colour-blind safe), used in this order for series.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
#: Timelines with at most this many kernels write each kernel's name on its bar.
_NAMED_KERNELS = 40
#: Characters of x-small text that fit across a 10-inch timeline.
_LABEL_CHARS = 150
#: Utilisation charts of runs with more changes than this show means over this many windows.
_UTILIZATION_WINDOWS = 250


def _figure(width_in: float, height_in: float) -> Figure:
    return Figure(figsize=(width_in, height_in), layout="constrained", dpi=100)


def _grid(fig: Figure, panels: int, max_cols: int) -> list[Axes]:
    cols = min(panels, max_cols)
    rows = math.ceil(panels / cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return axes[:panels]


def time_unit(span_s: float) -> tuple[float, str]:
    """Scale factor and label to show a time span readably: us below 10 ms, else ms."""
    return (US_PER_S, "us") if span_s < 1e-2 else (MS_PER_S, "ms")


# ---------------------------------------------------------------------------- occupancy
def occupancy_chart(
    gpu: GPUSpec,
    *,
    regs_per_thread: Sequence[int] = (32, 64, 128, 255),
    threads_for_smem: Sequence[int] = (128, 256, 512),
    regs_for_smem: int = 32,
) -> Figure:
    """Occupancy (resident warps / maximum) of one SM of ``gpu``, in two panels.

    Left: against threads per block, one line per register count (no shared memory).
    Right: against shared memory per block, one line per block size, at ``regs_for_smem``.
    Zero means the block cannot launch at all.
    """
    fig = _figure(10, 4)
    left, right = fig.subplots(1, 2)
    threads = np.arange(gpu.warp_size, gpu.max_threads_per_block + 1, gpu.warp_size)
    for i, regs in enumerate(regs_per_thread):
        occ = [occupancy(gpu, int(t), regs).occupancy * 100 for t in threads]
        left.step(threads, occ, where="mid", color=PALETTE[i % len(PALETTE)],
                  label=f"{regs} registers/thread")
    left.set_xlabel("threads per block")
    left.set_ylabel("occupancy (% of max warps per SM)")
    left.set_title("Registers and block size")
    left.set_xticks(np.arange(0, gpu.max_threads_per_block + 1, 128))
    left.set_ylim(0, 105)
    left.legend(fontsize="small")
    left.grid(alpha=0.3)

    smem_kib = np.arange(0, gpu.max_smem_per_block_B // 1024 + 1)
    for i, t in enumerate(threads_for_smem):
        occ = [occupancy(gpu, t, regs_for_smem, int(kib) * 1024).occupancy * 100
               for kib in smem_kib]
        right.step(smem_kib, occ, where="post", color=PALETTE[i % len(PALETTE)],
                   label=f"{t} threads/block")
    right.set_xlabel("shared memory per block (KiB)")
    right.set_ylabel("occupancy (% of max warps per SM)")
    right.set_title(f"Shared memory ({regs_for_smem} registers/thread)")
    right.set_ylim(0, 105)
    right.legend(fontsize="small")
    right.grid(alpha=0.3)
    fig.suptitle(f"Occupancy on {gpu.display_name}: {gpu.max_warps_per_sm} warps, "
                 f"{gpu.regs_per_sm // 1024}K registers, {gpu.smem_per_sm_B // 1024} KiB "
                 f"shared memory, {gpu.max_blocks_per_sm} blocks per SM")
    return fig


# ---------------------------------------------------------------------------- waves
def waves_chart(
    gpu: GPUSpec,
    *,
    threads: int,
    regs_per_thread: int,
    smem_per_block_B: int,
    block_time_s: float,
    grid_sizes: Sequence[int],
    simulated_s: Sequence[float] | None = None,
) -> Figure:
    """Duration of one kernel against its grid size: the wave staircase.

    The line is the analytic ``ceil(blocks / wave) x block_time``, with a wave of
    ``sm_count x blocks_per_sm`` blocks (dotted lines at each full wave); ``simulated_s``,
    if given, are the engine's durations at ``grid_sizes``, drawn as points on it.
    """
    occ = occupancy(gpu, threads, regs_per_thread, smem_per_block_B)
    wave = gpu.sm_count * occ.blocks_per_sm
    sizes = np.asarray(grid_sizes)
    dense = np.arange(1, int(sizes.max()) + 1)
    analytic = np.ceil(dense / wave) * block_time_s * US_PER_S
    fig = _figure(8, 4)
    ax = fig.subplots()
    ax.plot(dense, analytic, color=PALETTE[0], label="analytic: ceil(blocks / wave) x block time")
    if simulated_s is not None:
        ax.plot(sizes, np.asarray(simulated_s) * US_PER_S, "o", color=PALETTE[1], ms=4,
                label="simulated")
    for k in range(1, int(sizes.max()) // wave + 1):
        ax.axvline(k * wave, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("blocks in the grid")
    ax.set_ylabel("kernel duration (us)")
    ax.set_ylim(0, None)
    ax.set_xlim(0, int(sizes.max()))
    ax.set_title(f"Waves on {gpu.display_name}\n{threads} threads, {regs_per_thread} "
                 f"registers/thread, {smem_per_block_B // 1024} KiB shared memory per block: "
                 f"{occ.blocks_per_sm} blocks/SM, one wave = {wave} blocks", fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------- parallelism
def parallelism_profile_chart(
    profiles: Mapping[str, Sequence[PhaseProfile]], *, max_cols: int = 3
) -> Figure:
    """Ops (line) and convolutions (filled) per topological level, one panel per network.

    Levels run left to right through the forward part, then the backward part (after the
    dashed line), so each panel reads like one training step with unlimited resources and
    unit-time ops: the height is how many ops could run at once.
    """
    names = list(profiles)
    cols = min(len(names), max_cols)
    fig = _figure(4.2 * cols, 2.6 * math.ceil(len(names) / cols) + 0.4)
    for ax, name in zip(_grid(fig, len(names), max_cols), names, strict=True):
        offset = 0
        for phase in profiles[name]:
            levels = np.arange(offset, offset + len(phase.ops_per_level))
            colour = PALETTE[0] if phase.phase == "forward" else PALETTE[3]
            ax.fill_between(levels, phase.ops_per_level, step="mid", color=colour, alpha=0.3,
                            lw=0)
            ax.fill_between(levels, phase.convs_per_level, step="mid", color=colour, alpha=0.9,
                            lw=0)
            if offset:
                ax.axvline(offset - 0.5, color="grey", ls="--", lw=0.8)
            offset += len(phase.ops_per_level)
        widest = max(max(p.ops_per_level, default=0) for p in profiles[name])
        ax.set_ylim(0, widest + 1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize="medium")
        ax.set_xlim(-0.5, offset - 0.5)
        ax.grid(alpha=0.3)
        ax.set_xlabel("topological level")
        ax.set_ylabel("ops at once")
    fig.legend(
        handles=[
            Patch(color=PALETTE[0], alpha=0.3, label="forward: all kernel ops"),
            Patch(color=PALETTE[0], alpha=0.9, label="forward: convolutions"),
            Patch(color=PALETTE[3], alpha=0.3, label="backward: all kernel ops"),
            Patch(color=PALETTE[3], alpha=0.9, label="backward: convolutions"),
        ],
        loc="outside lower center", ncols=4, fontsize="small", frameon=False,
    )
    fig.suptitle("Parallelism profile: ops runnable at once per topological level "
                 "(forward | backward)")
    return fig


# ---------------------------------------------------------------------------- timelines
#: One colour per kernel kind (convolutions in blues and green, memory-bound kinds warm).
KIND_COLOURS: Mapping[str, str] = {
    "conv_fwd": "#0072B2", "conv_dgrad": "#56B4E9", "conv_wgrad": "#009E73",
    "gemm": "#332288", "elementwise": "#E69F00", "normalization": "#F0E442",
    "pooling": "#D55E00", "reduction": "#999999", "concat_copy": "#882255",
    "softmax_loss": "#000000", "optimizer": "#CC79A7", "micro": "#44AA99",
    "kernel": "#0072B2",
}


def _kind_colours(kinds: Sequence[str]) -> dict[str, str]:
    extra = iter(PALETTE[::-1])
    return {kind: KIND_COLOURS.get(kind) or next(extra, "#777777")
            for kind in sorted(set(kinds))}


def short_names(names: Sequence[str]) -> dict[str, str]:
    """Each name without the dotted prefix all of them share (``inception3a.``)."""
    parts = [name.split(".") for name in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return {name: ".".join(p[common:]) for name, p in zip(names, parts, strict=True)}


def _draw_kernels(ax: Axes, result: SimResult, colours: Mapping[str, str], scale: float,
                  span_s: float) -> None:
    streams = [s.name for s in result.program.streams]
    rows = {name: i for i, name in enumerate(streams)}
    few = len(result.kernels) <= _NAMED_KERNELS
    for kind, colour in colours.items():
        for stream in streams:
            spans = [(k.start_s * scale, k.duration_s * scale) for k in result.kernels
                     if k.stream == stream and (k.kind or "kernel") == kind]
            if spans:
                ax.broken_barh(spans, (rows[stream] - 0.4, 0.8), facecolors=colour,
                               edgecolors="white", linewidth=1.0 if few else 0.2)
    if few:
        labels = short_names([k.name for k in result.kernels])
        for k in result.kernels:
            label = labels[k.name]
            if k.duration_s >= len(label) * span_s / _LABEL_CHARS:
                ax.text((k.start_s + k.duration_s / 2) * scale, rows[k.stream], label,
                        ha="center", va="center", fontsize="x-small", color="white",
                        clip_on=True)
    ax.set_yticks(range(len(streams)), streams)
    ax.set_ylim(len(streams) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def timeline_comparison(results: Mapping[str, SimResult], *, title: str = "") -> Figure:
    """Kernels per stream of several runs of the same work, on one shared time axis.

    One panel per run (e.g. ``{"serial": ..., "concurrent": ...}``, or a single entry), each
    row a stream,
    each bar a kernel from its first block's start to its last block's end, coloured by
    kernel kind. The panel title gives the run's makespan, so the speedup reads directly.
    """
    labels = list(results)
    span = max(r.makespan_s for r in results.values())
    scale, unit = time_unit(span)
    colours = _kind_colours([k.kind or "kernel" for r in results.values() for k in r.kernels])
    heights = [max(len(r.program.streams), 1) * 0.32 + 0.9 for r in results.values()]
    fig = _figure(10, sum(heights) + 0.9)
    axes = fig.subplots(len(labels), 1, sharex=True, squeeze=False,
                        height_ratios=heights).ravel()
    for ax, label in zip(axes, labels, strict=True):
        result = results[label]
        _draw_kernels(ax, result, colours, scale, span)
        ax.set_title(f"{label}: {len(result.kernels)} kernels on {len(result.program.streams)} "
                     f"stream(s), makespan {result.makespan_s * scale:.1f} {unit}",
                     fontsize="medium", loc="left")
        ax.set_ylabel("stream")
    axes[-1].set_xlabel(f"time ({unit})")
    axes[-1].set_xlim(0, span * scale)
    if any(k.kind for r in results.values() for k in r.kernels):
        fig.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()],
                   loc="outside lower center", ncols=min(len(colours), 6), fontsize="small",
                   frameon=False, title="kernel kind", title_fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def utilization_chart(
    results: SimResult | Mapping[str, SimResult], *, title: str = ""
) -> Figure:
    """Busy SMs, resident warps and DRAM bandwidth over a run, against the GPU's totals.

    Top: SMs holding at least one block (of ``sm_count``) — a busy SM is not a full one.
    Middle: warps resident on the whole GPU, as a share of ``sm_count x max_warps_per_sm``
    (how full the busy SMs are). Bottom: DRAM bandwidth the running blocks get, in GB/s,
    with the GPU's peak dashed. Several runs (a mapping of label to result, on the same GPU)
    are drawn as lines over each other; one run is drawn filled.
    """
    runs = {"": results} if isinstance(results, SimResult) else dict(results)
    gpu = next(iter(runs.values())).program.gpu
    span = max(r.makespan_s for r in runs.values())
    scale, unit = time_unit(span)
    changes = max(len(r.busy_sms.times_s) for r in runs.values())
    window_s = span / _UTILIZATION_WINDOWS if changes > _UTILIZATION_WINDOWS else 0.0
    fig = _figure(10, 6)
    top, middle, bottom = fig.subplots(3, 1, sharex=True)
    for i, (label, result) in enumerate(runs.items()):
        colour = PALETTE[i % len(PALETTE)]
        occ = result.sm_occupancy
        warps = (np.asarray(occ.warps).sum(axis=1)
                 / (gpu.sm_count * gpu.max_warps_per_sm) * 100)
        series = (
            (top, np.asarray(result.busy_sms.times_s), np.asarray(result.busy_sms.values)),
            (middle, np.asarray(occ.times_s), warps),
            (bottom, np.asarray(result.dram_Bps.times_s),
             np.asarray(result.dram_Bps.values) / GIGA),
        )
        for ax, times, values in series:
            t, v = window_means(times, values, result.makespan_s, window_s)
            if len(runs) == 1:
                ax.fill_between(t * scale, v, step="post", color=colour, alpha=0.35, lw=0)
            ax.step(t * scale, v, where="post", color=colour, lw=0.8,
                    label=label if ax is middle and label else None)
    for ax in (top, middle, bottom):
        ax.grid(alpha=0.3)
    top.axhline(gpu.sm_count, color="black", ls="--", lw=1, label=f"{gpu.sm_count} SMs")
    top.set_ylim(0, gpu.sm_count * 1.15)
    top.set_ylabel("busy SMs")
    middle.set_ylim(0, 105)
    middle.set_ylabel("resident warps\n(% of GPU)")
    peak = gpu.dram_bw_Bps / GIGA
    bottom.axhline(peak, color="black", ls="--", lw=1, label=f"peak {peak:,.0f} GB/s")
    bottom.set_ylim(0, peak * 1.15)
    bottom.set_ylabel("DRAM bandwidth\n(GB/s)")
    for ax in (top, bottom):
        ax.legend(loc="lower right", fontsize="small")
    if len(runs) > 1:
        middle.legend(loc="upper right", fontsize="small")
    averaged = f"; each step is a mean over {window_s * scale:.2g} {unit}" if window_s else ""
    bottom.set_xlabel(f"time ({unit}){averaged}")
    bottom.set_xlim(0, span * scale)
    fig.suptitle(title or f"GPU utilisation on {gpu.display_name}")
    return fig


def window_means(
    times_s: np.ndarray, values: np.ndarray, end_s: float, window_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """A step function (``values[i]`` from ``times_s[i]`` on, until ``end_s``) as steps.

    With ``window_s > 0`` the result is its exact mean over consecutive windows of that
    width (a run with thousands of changes stays readable); else the steps themselves, with
    the last value repeated at ``end_s`` so that the final step is drawn.
    """
    times = np.asarray(times_s, dtype=float)
    vals = np.asarray(values, dtype=float)
    if not len(times):
        return np.array([0.0, end_s]), np.zeros(2)
    if window_s <= 0:
        return np.append(times, end_s), np.append(vals, vals[-1])
    edges = np.append(np.arange(0.0, end_s, window_s), end_s)
    # Integral of the step function from 0 to each edge, by cumulative area.
    knots = np.append(times, end_s)
    area = np.concatenate(([0.0], np.cumsum(vals * np.diff(knots))))
    index = np.clip(np.searchsorted(knots, edges, side="right") - 1, 0, len(vals) - 1)
    at_edges = area[index] + vals[index] * (edges - knots[index])
    means = np.diff(at_edges) / np.diff(edges)
    return edges, np.append(means, means[-1])


@dataclass(frozen=True)
class _Lanes:
    lane: list[int]
    count: int


def _pack_lanes(blocks: Sequence[BlockRecord]) -> _Lanes:
    """Give each block of one SM the lowest lane free at its start (interval colouring)."""
    free_at: list[float] = []
    lanes: list[int] = []
    for block in blocks:
        for i, t in enumerate(free_at):
            if t <= block.start_s:
                free_at[i] = block.end_s
                lanes.append(i)
                break
        else:
            free_at.append(block.end_s)
            lanes.append(len(free_at) - 1)
    return _Lanes(lanes, len(free_at))


def block_placement_chart(
    result: SimResult, *, sms: Sequence[int] | None = None, title: str = ""
) -> Figure:
    """Which SM ran each thread block, and when: one row per SM, one colour per kernel.

    Blocks resident on an SM at the same time are stacked in lanes within its row. Needs
    per-block records (the engine's exact mode, or ``record_blocks=True``). ``sms`` picks the
    rows to show (default: every SM that ran a block).
    """
    if result.blocks is None:
        raise GpusimError("block_placement_chart needs per-block records: simulate with "
                          "record_blocks=True or in exact mode")
    kernels = [k.name for k in result.kernels]
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(kernels)}
    by_sm: dict[int, list[BlockRecord]] = {}
    for block in sorted(result.blocks, key=lambda b: (b.start_s, b.end_s)):
        by_sm.setdefault(block.sm, []).append(block)
    rows = sorted(by_sm) if sms is None else list(sms)
    scale, unit = time_unit(result.makespan_s)
    fig = _figure(10, min(0.12 * len(rows) + 1.6, 9))
    ax = fig.subplots()
    for row, sm in enumerate(rows):
        blocks = by_sm.get(sm, [])
        lanes = _pack_lanes(blocks)
        height = 0.9 / max(lanes.count, 1)
        for block, lane in zip(blocks, lanes.lane, strict=True):
            ax.broken_barh([(block.start_s * scale, (block.end_s - block.start_s) * scale)],
                           (row - 0.45 + lane * height, height),
                           facecolors=colours[block.kernel], edgecolors="white",
                           linewidth=0.2)
    step = max(1, len(rows) // 16)
    ax.set_yticks(range(0, len(rows), step), [str(rows[i]) for i in range(0, len(rows), step)])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_ylabel("SM")
    ax.set_xlabel(f"time ({unit})")
    ax.set_xlim(0, result.makespan_s * scale)
    ax.grid(axis="x", alpha=0.3)
    shown = kernels[:12]
    fig.legend(handles=[Patch(color=colours[k], label=k) for k in shown],
               loc="outside lower center", ncols=min(len(shown), 6), fontsize="small",
               frameon=False, title="kernel" if shown == kernels
               else f"kernel (first 12 of {len(kernels)})", title_fontsize="small")
    ax.set_title(title or f"Block placement on {result.program.gpu.display_name}")
    return fig


# ---------------------------------------------------------------------------- limits
def _relative_bars(ax: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    names = [str(r["workload"]) for r in rows]
    serial = np.array([float(r["serial_us"]) for r in rows])
    best = np.array([float(r["policies"][r["best_policy"]]) for r in rows])
    bound = np.array([float(r["lower_bound_us"]) for r in rows])
    x = np.arange(len(rows))
    width = 0.27
    ax.bar(x - width, serial / serial, width, color="#999999", label="serial (one stream)")
    bars = ax.bar(x, best / serial, width, color=PALETTE[0], label="best policy (simulated)")
    ax.bar(x + width, bound / serial, width, color=PALETTE[2], label="lower bound")
    for bar, s, b in zip(bars, serial, best, strict=True):
        ax.annotate(f"{s / b:.2f}x", (bar.get_x() + width / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.3)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.grid(axis="y", alpha=0.3)


def _on_gpu(rows: Sequence[Mapping[str, Any]]) -> str:
    gpus = sorted({str(r["gpu"]) for r in rows if r.get("gpu")})
    return f" on {', '.join(gpus)}" if gpus else ""


def limits_chart(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Serial time, the best policy's time and the lower bound, relative to serial.

    ``rows`` are :meth:`sim.analysis.limits.LimitsReport.to_dict` records with ``workload`` and
    ``batch`` added; one panel per batch size, one group of three bars per network. The
    label over the middle bar is the achievable speedup; the gap between the middle and
    right bars is what a better schedule might still recover, the right bar what none can.
    """
    batches = sorted({int(r["batch"]) for r in rows})
    max_cols = 2 if len(batches) == 4 else 3
    cols = min(len(batches), max_cols)
    fig = _figure(4.5 * cols, 3.6 * math.ceil(len(batches) / cols) + 0.5)
    axes = _grid(fig, len(batches), max_cols)
    for ax, batch in zip(axes, batches, strict=True):
        _relative_bars(ax, [r for r in rows if r["batch"] == batch])
        ax.set_title(f"batch {batch}", fontsize="medium")
    for ax in axes[::cols]:
        ax.set_ylabel("time relative to serial")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small",
               frameon=False)
    fig.suptitle(f"Limits of concurrent layer scheduling{_on_gpu(rows)} (label: serial / best "
                 "policy)", fontsize="medium")
    return fig


def speedup_vs_batch_chart(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Achievable (solid) and ideal (dashed) speedup over serial against batch size.

    ``rows`` as for :func:`limits_chart`. Achievable is serial / best policy; ideal is
    serial / lower bound. At batch size 1 the host's launches bind (both are 1); past some
    size single kernels fill the GPU and both fall again.
    """
    fig = _figure(8.5, 4.2)
    ax = fig.subplots()
    names = list(dict.fromkeys(str(r["workload"]) for r in rows))
    for i, name in enumerate(names):
        mine = sorted((r for r in rows if r["workload"] == name),
                      key=lambda r: int(r["batch"]))
        batch = [int(r["batch"]) for r in mine]
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(batch, [float(r["speedup_achievable"]) for r in mine],
                "o-", color=colour, label=name)
        ax.plot(batch, [float(r["speedup_ideal"]) for r in mine],
                "--", color=colour, alpha=0.7)
    ax.set_xscale("log", base=2)
    batches = sorted({int(r["batch"]) for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_xlabel("batch size")
    ax.set_ylabel("speedup over serial (x)")
    ax.set_ylim(bottom=min(0.9, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="solid: best policy\ndashed: ideal\n(serial / lower bound)",
              title_fontsize="small")
    ax.set_title(f"Speedup from concurrent layer scheduling against batch size{_on_gpu(rows)}")
    return fig


# ---------------------------------------------------------------------------- validation
def measured_vs_simulated_chart(
    measured_s: Sequence[float],
    simulated_s: Sequence[float],
    *,
    groups: Sequence[str] | None = None,
    title: str = "Simulated against measured",
) -> Figure:
    """Simulated against measured durations, log-log, with the y = x line and a +-20% band.

    ``groups`` (one label per point, e.g. the benchmark case) colours the points. The text
    box gives the median and the largest relative error, so a reader sees the error rather
    than a cloud hugging the diagonal.
    """
    measured = np.asarray(measured_s, dtype=float)
    simulated = np.asarray(simulated_s, dtype=float)
    labels = list(groups) if groups is not None else ["cases"] * len(measured)
    fig = _figure(5.5, 5)
    ax = fig.subplots()
    scale, unit = time_unit(float(max(measured.max(), simulated.max())))
    for i, group in enumerate(dict.fromkeys(labels)):
        mask = np.array([g == group for g in labels])
        ax.scatter(measured[mask] * scale, simulated[mask] * scale, s=18,
                   color=PALETTE[i % len(PALETTE)], label=group)
    low = float(min(measured.min(), simulated.min())) * scale / 1.5
    high = float(max(measured.max(), simulated.max())) * scale * 1.5
    line = np.array([low, high])
    ax.plot(line, line, color="black", lw=0.8, label="y = x")
    ax.fill_between(line, line * 0.8, line * 1.2, color="grey", alpha=0.15, label="+-20%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(f"measured ({unit})")
    ax.set_ylabel(f"simulated ({unit})")
    err = np.abs(simulated - measured) / measured
    ax.text(0.97, 0.03, f"{len(measured)} points\nmedian |error| {np.median(err):.1%}\n"
            f"max |error| {err.max():.1%}", transform=ax.transAxes, ha="right", va="bottom",
            fontsize="small", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    return fig
