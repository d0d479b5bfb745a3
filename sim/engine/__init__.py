"""The engine: a SimPy model of one GPU running a program of kernels on streams.

Inputs are a :class:`Program` (streams and launches, validated; also loaded from the JSON
form of ``gpusim run``); :func:`simulate` runs it and returns a :class:`SimResult`.

The names below are imported from their modules on first use, so that code which only
builds programs (the scheduling policies, the device harnesses) does not import SimPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.engine.engine import MODES, DeadlockError, simulate
    from sim.engine.placement import (
        PLACEMENTS,
        BlockPlacement,
        FirstFit,
        MostFreeResources,
        RoundRobin,
    )
    from sim.engine.program import Launch, Program, StreamDef, load_program
    from sim.engine.result import BlockRecord, Counters, KernelRecord, SimResult, StepSeries

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("MODES", "DeadlockError", "simulate"), "sim.engine.engine"),
    **dict.fromkeys(("PLACEMENTS", "BlockPlacement", "FirstFit", "MostFreeResources",
                     "RoundRobin"), "sim.engine.placement"),
    **dict.fromkeys(("Launch", "Program", "StreamDef", "load_program"), "sim.engine.program"),
    **dict.fromkeys(("BlockRecord", "Counters", "KernelRecord", "SimResult", "StepSeries"),
                    "sim.engine.result"),
}

__all__ = [
    "MODES",
    "PLACEMENTS",
    "BlockPlacement",
    "BlockRecord",
    "Counters",
    "DeadlockError",
    "FirstFit",
    "KernelRecord",
    "Launch",
    "MostFreeResources",
    "Program",
    "RoundRobin",
    "SimResult",
    "StepSeries",
    "StreamDef",
    "load_program",
    "simulate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sim.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
