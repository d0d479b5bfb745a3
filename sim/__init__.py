"""The simulator: a SimPy model of a GPU executing kernels from several streams.

Build a :class:`Program` (or load one with :func:`load_program`), run it with
:func:`simulate` and read the :class:`SimResult`::

    from sim import load_program, simulate
    result = simulate(load_program("examples/programs/leftover.json"))
    print(result.makespan_s, result.kernel_records())
"""

from sim.engine import MODES, DeadlockError, simulate
from sim.placement import POLICIES, FirstFit, MostFreeResources, RoundRobin, SMPolicy
from sim.program import Launch, Program, StreamDef, load_program
from sim.result import BlockRecord, Counters, KernelRecord, SimResult, StepSeries

__all__ = [
    "MODES",
    "POLICIES",
    "BlockRecord",
    "Counters",
    "DeadlockError",
    "FirstFit",
    "KernelRecord",
    "Launch",
    "MostFreeResources",
    "Program",
    "RoundRobin",
    "SMPolicy",
    "SimResult",
    "StepSeries",
    "StreamDef",
    "load_program",
    "simulate",
]
