"""Chrome / Perfetto trace export of a :class:`~sim.engine.result.SimResult`.

The trace is the JSON "Trace Event Format" that ``chrome://tracing`` and
https://ui.perfetto.dev open: one process for the host with its launch calls, one for the
GPU with one track (thread) per stream holding a complete ("X") event per kernel, and
counter ("C") tracks for the number of busy SMs, the DRAM bandwidth in GB/s and the SM
throughput in use (percent of the GPU's, one series per execution resource that was used;
docs/model.md §6.7). Timestamps and durations are in microseconds, as the format requires.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpu_models.units import GIGA, US_PER_S
from sim.engine.result import SimResult, StepSeries

_HOST_PID = 0
_GPU_PID = 1


def to_chrome_trace(result: SimResult) -> dict[str, Any]:
    """The trace as a dict: ``{"traceEvents": [...], "displayTimeUnit": "ns"}``."""
    streams = [s.name for s in result.program.streams]
    tid = {name: i + 1 for i, name in enumerate(streams)}
    events: list[dict[str, Any]] = [
        _meta("process_name", _HOST_PID, 0, {"name": "host"}),
        _meta("thread_name", _HOST_PID, 0, {"name": "launch calls"}),
        _meta("process_name", _GPU_PID, 0, {"name": f"GPU {result.program.gpu.name}"}),
    ]
    for name in streams:
        events.append(_meta("thread_name", _GPU_PID, tid[name], {"name": f"stream {name}"}))
        events.append(_meta("thread_sort_index", _GPU_PID, tid[name],
                            {"sort_index": tid[name]}))
    for k in result.kernels:
        events.append({
            "name": k.name, "cat": "launch", "ph": "X", "pid": _HOST_PID, "tid": 0,
            "ts": k.launch_begin_s * US_PER_S, "dur": (k.launch_s - k.launch_begin_s) * US_PER_S,
            "args": {"stream": k.stream},
        })
        events.append({
            "name": k.name, "cat": k.kind or "kernel", "ph": "X", "pid": _GPU_PID,
            "tid": tid[k.stream], "ts": k.start_s * US_PER_S, "dur": k.duration_s * US_PER_S,
            "args": {"blocks": k.blocks, "launch_us": k.launch_s * US_PER_S,
                     "ready_us": k.ready_s * US_PER_S, "layer": k.layer},
        })
    events.extend(_counter("busy SMs", "SMs", result.busy_sms, 1.0))
    events.extend(_counter("DRAM bandwidth", "GB/s", result.dram_Bps, 1 / GIGA))
    events.extend(_throughput_counter(result))
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_chrome_trace(result: SimResult, path: str | Path) -> None:
    """Write :func:`to_chrome_trace` as JSON to ``path``."""
    Path(path).write_text(json.dumps(to_chrome_trace(result)), encoding="utf-8")


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def _counter(name: str, unit: str, series: StepSeries, scale: float) -> list[dict[str, Any]]:
    return [
        {"name": name, "ph": "C", "pid": _GPU_PID, "ts": t * US_PER_S, "args": {unit: v * scale}}
        for t, v in zip(series.times_s, series.values, strict=True)
    ]


def _throughput_counter(result: SimResult) -> list[dict[str, Any]]:
    """One "SM throughput" track, a series per resource that was ever in use."""
    used = {r: series for r, series in result.sm_throughput.items() if any(series.values)}
    times = sorted({t for series in used.values() for t in series.times_s})
    return [
        {"name": "SM throughput", "ph": "C", "pid": _GPU_PID, "ts": t * US_PER_S,
         "args": {f"{r} %": series.at(t) * 100 for r, series in used.items()}}
        for t in times
    ]
