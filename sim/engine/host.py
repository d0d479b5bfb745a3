"""The host thread: issues the launches in program order (docs/model.md §6.1).

One host thread (a SimPy process) walks the launches in program order. Before a launch,
each distinct cross-stream wait edge (an ``after`` kernel of *another* stream; a kernel
named twice is one edge) costs ``event_overhead_s`` of host time: the
``cudaStreamWaitEvent``. The ``cudaEventRecord`` after the awaited kernel is not charged on
its own: it is issued once per producer however many kernels await it, and its cost is
folded into ``event_overhead_s`` (so a producer awaited by ``k`` streams costs ``k`` waits,
not ``k`` waits and ``k`` records). ``after`` within one stream costs nothing, the stream's
FIFO order already implies it. Then the launch call costs ``launch_overhead_s`` and the
kernel becomes visible to the GPU when the call ends. The host never synchronizes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from sim.engine.dispatch import KernelRun


class Host:
    """The host thread. :meth:`start` runs it as a SimPy process.

    ``on_visible(kernel)`` is called when a launch call ends (the kernel is visible to the
    GPU), ``on_done()`` after the last one.
    """

    def __init__(self, env: simpy.Environment, kernels: Sequence[KernelRun], *,
                 launch_overhead_s: float, event_overhead_s: float,
                 on_visible: Callable[[KernelRun], None], on_done: Callable[[], None]) -> None:
        self.env = env
        self.kernels = kernels
        self.launch_overhead_s = launch_overhead_s
        self.event_overhead_s = event_overhead_s
        self._on_visible = on_visible
        self._on_done = on_done
        #: All launches issued.
        self.done = False
        #: Host timeouts taken (engine events of the host).
        self.events = 0

    def start(self) -> None:
        """Start issuing launches at the current simulated time."""
        self.env.process(self._run())

    def _run(self) -> Generator[simpy.Event, Any, None]:
        launch_s = self.launch_overhead_s
        event_s = self.event_overhead_s
        for kernel in self.kernels:
            # Distinct cross-stream wait edges (one cudaStreamWaitEvent each).
            waits = len({k.seq for k in kernel.after if k.launch.stream != kernel.launch.stream})
            if waits and event_s > 0:
                yield self.env.timeout(waits * event_s)
                self.events += 1
            kernel.launch_begin_s = self.env.now
            if launch_s > 0:
                yield self.env.timeout(launch_s)
                self.events += 1
            kernel.launch_s = self.env.now
            self._on_visible(kernel)
        self.done = True
        self._on_done()
