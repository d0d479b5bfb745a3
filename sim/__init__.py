"""The simulator: programs of kernels on streams run in a SimPy model of a GPU, and what is
built on it.

The package is a pipeline, one job per folder (``docs/model.md`` explains the model):

* :mod:`sim.engine` — the GPU model: programs, host, queues, dispatcher, SMs, DRAM, results;
* :mod:`sim.scheduling` — policies that map a kernel DAG onto streams, and their programs;
* :mod:`sim.analysis` — a workload prepared and simulated, the limits report, sweeps;
* :mod:`sim.measure` — trace ingest, the device campaigns, validation against real GPUs;
* :mod:`sim.report` — figures and ``gpusim reproduce``;
* :mod:`sim.cli` — the ``gpusim`` command line.

The engine's public names are re-exported here::

    from sim import load_program, simulate
    result = simulate(load_program("examples/programs/leftover.json"))
    print(result.makespan_s, result.kernel_records())

They are imported on first use, so that ``import sim.measure...`` (on a device machine) or
a CLI command that never simulates does not pay for SimPy and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.engine import (
        MODES,
        PLACEMENTS,
        BlockPlacement,
        BlockRecord,
        Counters,
        DeadlockError,
        FirstFit,
        KernelRecord,
        Launch,
        MostFreeResources,
        Program,
        RoundRobin,
        SimResult,
        StepSeries,
        StreamDef,
        load_program,
        simulate,
    )

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
    if name in __all__:
        return getattr(importlib.import_module("sim.engine"), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
