"""Fit the memory-parallelism model (gpu_models/memory.py) to published microbenchmarks.

Reads, from ``--reference`` (default: ../shared/reference/microbench, the published result
files of github.com/te42kyfo/gpu-benches, commit 1c36d50):

* ``gpu-stream_<gpu>.txt``: DRAM bandwidth of streaming kernels against occupancy, 2 blocks
  per SM of 32..1024 threads, i.e. 2..64 resident warps per SM on every SM. The fit uses
  the ``scale`` kernel (``a[i] = s * b[i]``: one load and one store per element), the
  access pattern of the elementwise, normalisation-apply and copy kernels that are the
  memory-bound part of a CNN step; the README of the reference folder quotes it too;
* ``gpu-latency_<gpu>.txt``: pointer-chasing latency over growing data sets; the unloaded
  DRAM latency ``L0`` is the one at the largest data set (TLB misses included, as a
  streaming kernel over large arrays sees them).

Model: a kernel whose ``W`` resident warps per SM on ``N`` SMs each keep ``b`` bytes in
flight reaches ``X = N W b / L0`` (Little's law) at the unloaded latency; latency rises with
the load as ``L = L0 / (1 - (R / B)^n)^(1/n)``, so the bandwidth reached is
``R = X / (1 + (X / B)^n)^(1/n)``. Per GPU, ``b``, ``B`` and ``n`` are fitted by least
squares on ``log(model / measured)`` over the 32 points (a coarse grid, then
Levenberg-Marquardt). ``B`` is stored as ``plateau_fraction`` of the measured part's
datasheet bandwidth so that the parameters carry to other GPUs of the architecture.

Writes ``gpu_models/data/memory.toml`` (``--out``) and prints the residuals::

    .venv/bin/python scripts/fit_memory_model.py
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

#: The measured parts: (file tag, preset the entry is for, description, SMs, datasheet
#: bandwidth in B/s, latency file tag, note on the latency).
MEASURED: tuple[tuple[str, str, str, int, float, str, str], ...] = (
    ("v100", "v100", "Tesla V100 (1380 MHz part: GV100, 80 SMs, 900 GB/s HBM2)", 80, 900e9,
     "v100", "gpu-latency_v100.txt"),
    ("a100_40", "a100-40gb", "A100 40 GB (GA100, 108 SMs, 1555 GB/s HBM2)", 108, 1555e9,
     "a100_80", "gpu-latency_a100_80.txt (no 40 GB latency file: same GA100 chip assumed)"),
    ("a100_80", "a100", "A100 80 GB (GA100, 108 SMs; datasheet 2039 GB/s, the a100 preset's)",
     108, 2039e9, "a100_80", "gpu-latency_a100_80.txt"),
    ("h100_pcie", "h100-pcie", "H100 PCIe (GH100, 114 SMs, 2000 GB/s HBM2e)", 114, 2000e9,
     "h100_pcie", "gpu-latency_h100_pcie.txt"),
)
#: Kernel of the stream files the model is fitted to (see the module docstring).
KERNEL = "scale"
#: Architectures: compute capability -> the measured preset whose parameters it takes.
ARCH_SOURCES: tuple[tuple[str, str], ...] = (("7.0", "v100"), ("8.0", "a100"),
                                             ("9.0", "h100-pcie"))


def read_stream(path: Path, kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """Resident warps per SM (2 blocks per SM) and bandwidth (B/s) of ``kernel``."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    names = lines[0].split("|")[1].split()
    column = names.index(kernel)
    warps, bandwidth = [], []
    for line in lines[1:]:
        left, right = line.split("|")
        block_size = int(left.split()[0])
        values = right.split()[1:]  # after "GB/s:"
        warps.append(2 * block_size / 32)
        bandwidth.append(float(values[column]) * 1e9)
    return np.array(warps), np.array(bandwidth)


def read_latency_s(path: Path) -> float:
    """DRAM latency at the largest data set: cycles / clock (columns: ..., clock MHz, size
    kB, time, cycles per access)."""
    rows = [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]
    last = rows[-1]
    clock_hz = float(last[1]) * 1e6
    return float(last[4]) / clock_hz


def model_Bps(warps: np.ndarray, sms: int, rate_per_warp_Bps: float, plateau_Bps: float,
              knee: float) -> np.ndarray:
    unloaded = sms * warps * rate_per_warp_Bps
    return unloaded / (1 + (unloaded / plateau_Bps) ** knee) ** (1 / knee)


def fit(warps: np.ndarray, measured: np.ndarray, sms: int) -> tuple[float, float, float]:
    """(rate per warp at L0, plateau, knee) minimising the squared log residuals."""
    def residuals(theta: np.ndarray) -> np.ndarray:
        rate, plateau, knee = np.exp(theta[0]), np.exp(theta[1]), 1 + np.exp(theta[2])
        return np.log(model_Bps(warps, sms, rate, plateau, knee) / measured)

    # Coarse grid start: the first point fixes the slope, the last the plateau.
    slope = measured[0] / (sms * warps[0])
    best: tuple[float, np.ndarray] | None = None
    for r in np.linspace(0.7, 1.6, 10):
        for p in np.linspace(1.0, 1.6, 13):
            for n in np.linspace(0.5, 8, 16):
                theta = np.array([math.log(slope * r), math.log(measured.max() * p),
                                  math.log(n)])
                cost = float(np.sum(residuals(theta) ** 2))
                if best is None or cost < best[0]:
                    best = (cost, theta)
    assert best is not None
    theta = best[1]
    damping = 1e-3
    for _ in range(200):
        r = residuals(theta)
        jac = np.empty((len(r), 3))
        for j in range(3):
            step = np.zeros(3)
            step[j] = 1e-7
            jac[:, j] = (residuals(theta + step) - r) / 1e-7
        delta = np.linalg.solve(jac.T @ jac + damping * np.eye(3), -jac.T @ r)
        trial = theta + delta
        if np.sum(residuals(trial) ** 2) < np.sum(r ** 2):
            theta, damping = trial, damping / 3
            if np.max(np.abs(delta)) < 1e-10:
                break
        else:
            damping *= 4
    return float(np.exp(theta[0])), float(np.exp(theta[1])), float(1 + np.exp(theta[2]))


def _list(values: np.ndarray) -> str:
    """Whole numbers as a TOML list (the measured files give whole GB/s)."""
    return "[" + ", ".join(str(round(float(v))) for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path,
                        default=Path(__file__).resolve().parents[3] / "shared" / "reference"
                        / "microbench")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "gpu_models" / "data" / "memory.toml")
    args = parser.parse_args()
    out = [
        "# Memory-parallelism model parameters (gpu_models/memory.py; docs/model.md §6.7).",
        "# Written by scripts/fit_memory_model.py from the published result files of",
        "# github.com/te42kyfo/gpu-benches (commit 1c36d50; shared/reference/microbench):",
        f"# gpu-stream_<gpu>.txt, kernel '{KERNEL}' (2 blocks per SM: 2..64 resident warps per",
        "# SM), and gpu-latency_<gpu>.txt (DRAM latency at the largest data set).",
        "# Model: R = X / (1 + (X / B)^n)^(1/n), X = sm_count * warps_per_sm *",
        "# bytes_in_flight_per_warp_B / latency_s, B = plateau_fraction * dram_bw_Bps.",
        "# Fit: least squares on log(model / measured) over every point (grid start, then",
        "# Levenberg-Marquardt); latency_s is measured, not fitted. The measured points are",
        "# kept below as the evidence the tests hold the model to (within 15%).",
        "",
    ]
    print(f"{'gpu':>10} {'L0 ns':>6} {'b B':>6} {'plateau':>8} {'knee':>5} "
          f"{'max |res|':>9} {'rms':>6}  worst point")
    for tag, preset, description, sms, datasheet_Bps, lat_tag, lat_note in MEASURED:
        warps, measured = read_stream(args.reference / f"gpu-stream_{tag}.txt", KERNEL)
        latency_s = read_latency_s(args.reference / f"gpu-latency_{lat_tag}.txt")
        rate, plateau, knee = fit(warps, measured, sms)
        model = model_Bps(warps, sms, rate, plateau, knee)
        rel = model / measured - 1
        worst = int(np.argmax(np.abs(rel)))
        print(f"{tag:>10} {latency_s * 1e9:6.1f} {rate * latency_s:6.1f} "
              f"{plateau / datasheet_Bps:8.4f} {knee:5.3f} {np.abs(rel).max():9.2%} "
              f"{np.sqrt(np.mean(rel ** 2)):6.2%}  {warps[worst]:.0f} warps/SM: model "
              f"{model[worst] / 1e9:.0f} vs {measured[worst] / 1e9:.0f} GB/s")
        out += [
            f'[measured."{preset}"]',
            f'gpu = "{description}"',
            f'source = "gpu-stream_{tag}.txt ({KERNEL}); latency {lat_note}"',
            f"sm_count = {sms}",
            f"datasheet_bw_Bps = {datasheet_Bps:.6g}",
            f"latency_s = {latency_s:.6g}",
            f"bytes_in_flight_per_warp_B = {rate * latency_s:.6g}",
            f"plateau_fraction = {plateau / datasheet_Bps:.6g}",
            f"knee = {knee:.6g}",
            f"fit_max_rel_error = {np.abs(rel).max():.4f}",
            f"fit_rms_rel_error = {np.sqrt(np.mean(rel ** 2)):.4f}",
            f"warps_per_sm = {_list(warps)}",
            f"measured_GBps = {_list(measured / 1e9)}",
            "",
        ]
    out += [
        "# GPUs without their own measurement take the parameters of a measured GPU of their",
        "# architecture (labelled 'derived'); architectures without one take those of the",
        "# measured architecture with the nearest compute capability (the older on a tie).",
        "[architecture]",
        *(f'"{cc}" = "{preset}"' for cc, preset in ARCH_SOURCES),
        "",
    ]
    args.out.write_text("\n".join(out), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
