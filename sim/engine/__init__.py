"""The engine: a SimPy model of one GPU running a program of kernels on streams.

Inputs are a :class:`Program` (streams and launches, validated; also loaded from the JSON
form of ``gpusim run``); :func:`simulate` runs it and returns a :class:`SimResult`.
"""

from sim.engine.engine import MODES, DeadlockError, simulate
from sim.engine.placement import PLACEMENTS, BlockPlacement, FirstFit, MostFreeResources, RoundRobin
from sim.engine.program import Launch, Program, StreamDef, load_program
from sim.engine.result import BlockRecord, Counters, KernelRecord, SimResult, StepSeries

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
