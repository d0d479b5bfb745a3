"""Worker processes on this machine, shared by the sweep's local pool and ``limits``.

:func:`process_pool` opens a process pool whose workers never outlive the work: after an
interruption (an exception, Ctrl-C, a consumer that stops early) they are terminated rather
than waited for (a chunk of limits points can take a minute); they ignore SIGINT (Ctrl-C in
a terminal reaches the whole process group; the parent alone decides what stops, and no
worker prints a traceback); and on Linux each one asks the kernel to kill it when its
parent dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the parent leaves no orphans.

Workers are started with ``spawn`` and import gpusim afresh, so a script that uses them must
guard its entry point with ``if __name__ == "__main__":`` (the usual multiprocessing rule;
notebooks and the ``gpusim`` command need nothing).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpu_models.errors import GpusimError


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def check_workers(workers: int | None) -> None:
    """Raise :class:`GpusimError` unless ``workers`` is ``None`` or a positive integer."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise GpusimError(f"workers must be a positive integer (got {workers!r})")


#: ``prctl`` option that delivers a signal to a process when its parent exits (Linux).
_PR_SET_PDEATHSIG = 1


def worker_init(parent_pid: int) -> None:
    """Set up a worker process: ignore SIGINT, and die with the parent ``parent_pid``
    (Linux; the pool must start its workers directly, with ``spawn``: a ``forkserver``
    would be their parent instead, and it outlives the work while workers hold it open)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before prctl took effect: then this worker is an orphan.
    if os.getppid() != parent_pid:
        os._exit(1)


def _terminate_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Stop every worker of ``pool`` now, whatever it is running."""
    # ProcessPoolExecutor has no public way to do this before Python 3.14
    # (terminate_workers); its process table is the one handle on the workers.
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()


@contextmanager
def process_pool(workers: int) -> Iterator[cf.ProcessPoolExecutor]:
    """A pool of ``workers`` worker processes (module docstring); leaving the block by an
    exception terminates the workers, else they finish what was submitted."""
    # spawn, not fork: forking a parent that has threads (tqdm's monitor, a Dask client,
    # the test runner's) can deadlock a child. Not forkserver either: the workers must be
    # children of this process to die with it (see worker_init).
    pool = cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context("spawn"),
                                  initializer=worker_init, initargs=(os.getpid(),))
    finished = False
    try:
        yield pool
        finished = True
    finally:
        if not finished:  # stopped early: running work is not waited for
            _terminate_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
