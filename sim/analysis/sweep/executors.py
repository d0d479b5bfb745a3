"""Executors: swappable strategies that run a function over sweep points.

An executor takes a picklable task ``(Point) -> Row`` and the points, and yields the rows
as they finish, in whatever order they finish. The runner writes each row as it arrives,
so the order never matters; the *content* does not depend on the executor because the task
is a pure function of its point (the tests compare every executor with :class:`Serial`).

* :class:`Serial` – an in-process loop; the reference, and the easiest to debug.
* :class:`LocalPool` – a process pool on this machine (the default; one worker per core).
* :class:`Dask` – Dask distributed: a ``LocalCluster`` it starts and stops, or an existing
  cluster by scheduler address, for sweeps that outgrow one machine. Needs the ``dask``
  extra (``pip install 'gpusim[dask]'``).

Parallel executors send points in chunks: one task per point would spend more time in
inter-process messaging than in cheap evaluations, while a few chunks per worker keep the
load balanced and lose little work when a sweep is interrupted.

Stopping early (an exception in the consumer, Ctrl-C, ``max_points``) closes the generator;
each executor then cancels what has not started and shuts its workers down. The local
pool's workers never outlive the sweep (:func:`sim.analysis.processes.process_pool`).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol

from gpu_models.errors import GpusimError
from sim.analysis.processes import available_cpus, check_workers, process_pool
from sim.analysis.sweep.evaluate import Row
from sim.analysis.sweep.points import Point

#: The per-point work an executor runs: a picklable pure function.
Task = Callable[[Point], Row]

#: At most this many points per chunk, so progress and incremental writes stay fine-grained.
MAX_CHUNK_POINTS = 8
#: Aim for this many chunks per worker (load balance vs messaging overhead).
CHUNKS_PER_WORKER = 4


class Executor(Protocol):
    """A strategy for running ``task`` over ``points``; yields rows as they complete."""

    @property
    def name(self) -> str:
        """The executor's name (``serial``, ``local``, ``dask``)."""
        ...

    def run(self, task: Task, points: Sequence[Point]) -> Generator[Row, None, None]:
        """Rows for all ``points``, in completion order."""
        ...


def run_chunk(task: Task, chunk: Sequence[Point]) -> list[Row]:
    """Run ``task`` over one chunk (module-level so it pickles for worker processes)."""
    return [task(point) for point in chunk]


def chunked(points: Sequence[Point], workers: int) -> list[list[Point]]:
    """Split ``points`` into contiguous chunks sized for ``workers`` parallel workers."""
    size = max(1, min(MAX_CHUNK_POINTS, len(points) // (workers * CHUNKS_PER_WORKER)))
    return [list(points[i:i + size]) for i in range(0, len(points), size)]


@dataclass(frozen=True)
class Serial:
    """Evaluate points one after another in this process: the reference executor."""

    name: ClassVar[str] = "serial"

    def run(self, task: Task, points: Sequence[Point]) -> Generator[Row, None, None]:
        for point in points:
            yield task(point)


@dataclass(frozen=True)
class LocalPool:
    """A pool of worker processes on this machine (``workers`` defaults to the CPU count).

    Workers are started with ``spawn`` and import gpusim afresh, so a script that
    runs a sweep must guard its entry point with ``if __name__ == "__main__":`` (the usual
    multiprocessing rule; notebooks and the ``gpusim`` command need nothing).
    """

    workers: int | None = None
    name: ClassVar[str] = "local"

    def __post_init__(self) -> None:
        check_workers(self.workers)

    def run(self, task: Task, points: Sequence[Point]) -> Generator[Row, None, None]:
        if not points:
            return
        workers = self.workers or available_cpus()
        with process_pool(workers) as pool:
            futures = [pool.submit(run_chunk, task, chunk) for chunk in chunked(points, workers)]
            for future in cf.as_completed(futures):
                yield from future.result()


@dataclass(frozen=True)
class Dask:
    """Dask distributed: join ``scheduler`` (an address) or start a ``LocalCluster``.

    For a local cluster, ``workers`` worker processes of one thread each (default: the CPU
    count), or threads in this process with ``processes=False`` (light; for tests and for
    evaluators that release the GIL). The workers of an existing cluster need the same
    gpusim version installed: tasks are sent by reference to its functions, not as code.
    """

    scheduler: str | None = None
    workers: int | None = None
    processes: bool = True
    name: ClassVar[str] = "dask"

    def __post_init__(self) -> None:
        check_workers(self.workers)
        if self.scheduler is not None and not self.scheduler.strip():
            raise GpusimError("dask scheduler address must not be empty")
        if self.scheduler is not None and self.workers is not None:
            raise GpusimError("workers sizes a LocalCluster; an existing cluster (scheduler "
                              f"{self.scheduler}) has its own")

    def run(self, task: Task, points: Sequence[Point]) -> Generator[Row, None, None]:
        distributed = _import_distributed()
        if not points:
            return
        cluster: Any = None
        try:
            if self.scheduler is None:
                cluster = distributed.LocalCluster(
                    n_workers=self.workers or available_cpus(),
                    threads_per_worker=1,
                    processes=self.processes,
                    dashboard_address=None,
                )
            client = _connect(distributed, cluster if cluster is not None else self.scheduler)
            try:
                workers = max(1, sum(client.nthreads().values()))
                futures = client.map(partial(run_chunk, task), chunked(points, workers),
                                     pure=False)
                for future in distributed.as_completed(futures):
                    yield from future.result()
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()


def _connect(distributed: Any, target: Any) -> Any:
    try:
        return distributed.Client(target)
    except (OSError, TimeoutError) as exc:  # a wrong or unreachable scheduler address
        raise GpusimError(f"cannot reach the Dask scheduler at {target}: {exc}") from None


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise GpusimError(
            "the dask executor needs Dask distributed: pip install 'gpusim[dask]'"
        ) from None
    return distributed


def make_executor(name: str, *, workers: int | None = None,
                  scheduler: str | None = None) -> Executor:
    """The executor called ``name`` (``serial``, ``local``, ``dask``) with its settings."""
    if scheduler is not None and name != "dask":
        raise GpusimError(f"--scheduler joins a Dask cluster; it needs --executor dask, "
                          f"not {name}")
    if name == "serial":
        if workers not in (None, 1):
            raise GpusimError("the serial executor runs one point at a time; drop --workers")
        return Serial()
    if name == "local":
        return LocalPool(workers=workers)
    if name == "dask":
        return Dask(scheduler=scheduler, workers=workers)
    raise GpusimError(f"unknown executor {name!r}; valid: serial, local, dask")


#: Executor names, the default first.
EXECUTOR_NAMES: tuple[str, ...] = ("local", "serial", "dask")
