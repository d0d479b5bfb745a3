"""Figures of the analysis: each function takes data and returns a matplotlib ``Figure``.

The figures explain one idea each, in the order the analysis builds it up:

* :func:`occupancy_chart` — how many warps one SM keeps resident as threads per block,
  registers per thread and shared memory per block change (the occupancy calculator);
* :func:`waves_chart` — a kernel's duration against its grid size: a staircase, one step
  per *wave* of ``sm_count x blocks_per_sm`` blocks;
* :func:`parallelism_profile_chart` — how many ops and convolutions of each network could
  run at once, level by level, forward then backward (the DAG's promise);
* :func:`kernel_timeline`, :func:`timeline_comparison` — simulated kernels per stream, one
  program run serially and concurrently (what the GPU actually does with that promise);
* :func:`utilization_chart` — busy SMs and DRAM bandwidth over time of one simulation;
* :func:`block_placement_chart` — which SM ran which thread block when (the leftover
  policy made visible: a younger kernel only gets the tail of the older one);
* :func:`limits_chart`, :func:`speedup_vs_batch_chart` — the limits of concurrent layer
  scheduling: serial time, the best policy's time and the lower bound per network and batch;
* :func:`measured_vs_simulated_chart` — simulated against measured times, once device data
  exist.

Sweep heatmaps live in :mod:`sim.plots_sweep`. Every function builds a fresh
:class:`matplotlib.figure.Figure` (no pyplot, no global state), so callers save it with
``fig.savefig(path)`` and nothing leaks between figures. Data arrive in SI units (seconds,
bytes/s); axes show microseconds, milliseconds and GB/s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gpu_models.occupancy import occupancy
from gpu_models.spec import GPUSpec
from workloads.analysis import PhaseProfile

#: Qualitative colours (Okabe-Ito, colour-blind safe), used in this order for series.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
_US = 1e6
_MS = 1e3
_GB = 1e9


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
    return (_US, "us") if span_s < 1e-2 else (_MS, "ms")


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
    analytic = np.ceil(dense / wave) * block_time_s * _US
    fig = _figure(8, 4)
    ax = fig.subplots()
    ax.plot(dense, analytic, color=PALETTE[0], label="analytic: ceil(blocks / wave) x block time")
    if simulated_s is not None:
        ax.plot(sizes, np.asarray(simulated_s) * _US, "o", color=PALETTE[1], ms=4,
                label="simulated")
    for k in range(1, int(sizes.max()) // wave + 1):
        ax.axvline(k * wave, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("blocks in the grid")
    ax.set_ylabel("kernel duration (us)")
    ax.set_ylim(0, None)
    ax.set_xlim(0, int(sizes.max()))
    ax.set_title(f"Waves on {gpu.display_name}: {threads} threads, {regs_per_thread} registers, "
                 f"{smem_per_block_B // 1024} KiB shared memory per block -> "
                 f"{occ.blocks_per_sm} blocks/SM, wave = {wave} blocks", fontsize="medium")
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
            ax.fill_between(levels, phase.convs_per_level, step="mid", color=colour, alpha=0.3,
                            lw=0)
            ax.step(levels, phase.ops_per_level, where="mid", color=colour, lw=1)
            if offset:
                ax.axvline(offset - 0.5, color="grey", ls="--", lw=0.8)
            offset += len(phase.ops_per_level)
        widest = max(max(p.ops_per_level, default=0) for p in profiles[name])
        ax.set_ylim(0, widest + 1)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(name, fontsize="medium")
        ax.set_xlim(-0.5, offset - 0.5)
        ax.grid(alpha=0.3)
        ax.set_xlabel("topological level")
        ax.set_ylabel("ops at once")
    fig.legend(
        handles=[
            Patch(color=PALETTE[0], alpha=0.3, label="forward: convolutions"),
            Patch(color=PALETTE[3], alpha=0.3, label="backward: convolutions"),
            Patch(facecolor="none", edgecolor="black", label="line: all ops (kernels)"),
        ],
        loc="outside lower center", ncols=3, fontsize="small", frameon=False,
    )
    fig.suptitle("Parallelism profile: ops runnable at once per topological level "
                 "(forward | backward)")
    return fig
