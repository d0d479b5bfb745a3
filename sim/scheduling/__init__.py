"""Scheduling policies: how a kernel DAG is mapped onto CUDA streams, launch order and events.

A policy is a swappable strategy (:class:`SchedulingPolicy`: a ``name`` and
``schedule(ctx) -> Schedule``); :func:`to_program` turns its :class:`Schedule` into the
engine's :class:`~sim.engine.program.Program`, adding an event only where a dependency crosses
streams and is not already implied. Policies are looked up by name::

    from sim.scheduling import get_policy, policy_names
    get_policy("serial")                   # framework default, one stream
    get_policy("critical-path:8")          # list scheduling onto 8 streams
    get_policy("min-streams+priority+cap") # a base policy with resource-aware modifiers

Base policies (each docstring says which real system it mirrors):

========================  ====================================================================
``serial``                one stream, framework order (eager PyTorch)
``branches``              one stream per parallel branch of a module, events at forks/joins
``min-streams``           Nimble: minimum path cover of the transitive reduction
``levels``                topological generations on separate streams, barrier between levels
``critical-path[:k]``     HLFET list scheduling by bottom level onto k streams (default 4)
``stages``                IOS: dynamic programming over stages, the simulator as cost model
========================  ====================================================================

Modifiers (``base+modifier``): ``priority`` (stream priorities for the critical path),
``cap`` (grids capped to a share of the GPU: persistent kernels), ``partition`` (disjoint
SM partitions per stream, in proportion to each stream's work: CUDA green contexts;
``partition:N`` folds the streams into at most ``N`` partitions).
"""

from __future__ import annotations

from collections.abc import Callable

from gpu_models.errors import GpusimError
from sim.scheduling.base import (
    Evaluator,
    Schedule,
    ScheduleContext,
    SchedulingPolicy,
    capped_launch,
    check_schedule,
    event_count,
    to_program,
)
from sim.scheduling.dag import Branches, CriticalPath, Levels, MinStreams, Serial
from sim.scheduling.modifiers import CriticalPriority, GridCap, Modified, Modifier, SMPartition
from sim.scheduling.stages import Stages

#: Base policy factories by name; the optional integer is the part after ``:``.
BASE_POLICIES: dict[str, Callable[[int | None], SchedulingPolicy]] = {
    "serial": lambda _: Serial(),
    "branches": lambda _: Branches(),
    "min-streams": lambda _: MinStreams(),
    "levels": lambda _: Levels(),
    "critical-path": lambda k: CriticalPath() if k is None else CriticalPath(streams=k),
    "stages": lambda _: Stages(),
}
#: Which base policies take a ``:N`` parameter.
_PARAMETRISED = frozenset({"critical-path"})

#: Modifiers by name; the optional integer is the part after ``:``.
MODIFIERS: dict[str, Callable[[int | None], Modifier]] = {
    "priority": lambda _: CriticalPriority(),
    "cap": lambda _: GridCap(),
    "partition": lambda k: SMPartition(max_partitions=k),
}
#: Which modifiers take a ``:N`` parameter.
_PARAMETRISED_MODIFIERS = frozenset({"partition"})

#: The policies ``gpusim limits`` compares by default.
DEFAULT_POLICIES: tuple[str, ...] = (
    "serial", "branches", "min-streams", "levels", "critical-path", "stages",
    "min-streams+priority", "min-streams+cap", "critical-path+priority+cap",
)


def policy_names() -> tuple[str, ...]:
    """Base policy names (combine with modifiers as ``base+modifier``)."""
    return tuple(BASE_POLICIES)


def modifier_names() -> tuple[str, ...]:
    """Modifier names."""
    return tuple(MODIFIERS)


def get_policy(name: str) -> SchedulingPolicy:
    """The policy called ``name``: ``base[:N][+modifier...]``."""
    if not isinstance(name, str) or not name.strip():
        raise GpusimError(f"policy name must be a non-empty string (got {name!r})")
    base_text, *mod_names = name.strip().split("+")
    base_name, sep, param_text = base_text.partition(":")
    if base_name not in BASE_POLICIES:
        raise GpusimError(f"unknown policy {base_name!r} in {name!r}; base policies: "
                          f"{', '.join(BASE_POLICIES)}")
    param: int | None = None
    if sep:
        if base_name not in _PARAMETRISED:
            raise GpusimError(f"policy {base_name!r} takes no ':' parameter (in {name!r})")
        try:
            param = int(param_text)
        except ValueError:
            raise GpusimError(f"policy {name!r}: {param_text!r} is not an integer") from None
    base = BASE_POLICIES[base_name](param)
    if not mod_names:
        return base
    unknown = [m for m in mod_names if m.partition(":")[0] not in MODIFIERS]
    if unknown:
        raise GpusimError(f"unknown policy modifier(s) {', '.join(map(repr, unknown))} in "
                          f"{name!r}; modifiers: {', '.join(MODIFIERS)}")
    modifiers = []
    for mod_text in mod_names:
        mod_name, sep, mod_param_text = mod_text.partition(":")
        mod_param: int | None = None
        if sep:
            if mod_name not in _PARAMETRISED_MODIFIERS:
                raise GpusimError(f"modifier {mod_name!r} takes no ':' parameter (in {name!r})")
            try:
                mod_param = int(mod_param_text)
            except ValueError:
                raise GpusimError(f"policy {name!r}: {mod_param_text!r} is not an "
                                  f"integer") from None
        modifiers.append(MODIFIERS[mod_name](mod_param))
    return Modified(base, tuple(modifiers))


__all__ = [
    "BASE_POLICIES",
    "DEFAULT_POLICIES",
    "MODIFIERS",
    "Branches",
    "CriticalPath",
    "CriticalPriority",
    "Evaluator",
    "GridCap",
    "Levels",
    "MinStreams",
    "Modified",
    "Modifier",
    "SMPartition",
    "Schedule",
    "ScheduleContext",
    "SchedulingPolicy",
    "Serial",
    "Stages",
    "capped_launch",
    "check_schedule",
    "event_count",
    "get_policy",
    "modifier_names",
    "policy_names",
    "to_program",
]
