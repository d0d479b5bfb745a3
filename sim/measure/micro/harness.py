"""The CuPy side of the device campaigns: compile, launch, time, read the block logs back.

Everything here needs a GPU and CuPy; every function takes a :class:`Gpu`, which holds the
``cupy`` module it was given, so tests can run the same code against a stand-in. What the
measurements mean is decided elsewhere: plans in :mod:`sim.measure.micro.plans`, summaries
in :mod:`sim.measure.micro.blocklog`.

CUDA facts this relies on:

* ``%globaltimer`` is one nanosecond clock for the whole device, so block times from
  different SMs and kernels share an axis;
* a stream is created on a hardware queue round-robin, so the streams of a case are created
  together, in order, right before the case runs (stream *i* and *i + connections* share a
  queue whatever the offset);
* the kernels get the largest shared-memory carveout (preference 100 %), which is what the
  occupancy calculator assumes, and the largest dynamic shared-memory opt-in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpu_models.errors import GpusimError
from sim.measure.micro.blocklog import (
    BlockLog,
    co_residency,
    describe,
    observed_tick_ns,
    representative,
    seconds,
    summarize_run,
)
from sim.measure.micro.plans import (
    FMA_ADD,
    FMA_ILPS,
    FMA_MUL,
    OCCUPANCY_SPIN_NS,
    VARIANTS,
    CasePlan,
    KernelPlan,
    LaunchPlan,
    Shape,
    compile_options,
)
from sim.measure.micro.provenance import with_attributes
from sim.measure.micro.schema import timeline_case

KERNEL_SOURCE = Path(__file__).with_name("kernels.cu")
#: Entry points of kernels.cu by Shape.function (and "empty").
FUNCTION_NAMES: dict[str, str] = {
    "spin": "spin_kernel", "sleep": "sleep_kernel", "stream": "stream_kernel",
    "empty": "empty_kernel", **{f"fma_ilp{n}": f"fma_ilp{n}" for n in FMA_ILPS},
}
#: Threads of the one-block helper kernels (gate, launch chain, self-check).
_SMALL_BLOCK = 32
#: Chain steps of the self-check's FMA block (about 4 us at 4 cycles a step).
_SELFCHECK_FMA_ITERS = 4096
#: CUfunction_attribute values from cuda.h, used where CuPy does not export the names.
_FUNC_ATTRS = {"SHARED_SIZE_BYTES": 1, "LOCAL_SIZE_BYTES": 3, "NUM_REGS": 4,
               "MAX_DYNAMIC_SHARED_SIZE_BYTES": 8, "PREFERRED_SHARED_MEMORY_CARVEOUT": 9}


@dataclass(frozen=True)
class BuildInfo:
    """What the compiler made of one kernel of one variant."""

    regs: int
    smem_static_B: int
    local_B: int


class Gpu:
    """GPU 0 through CuPy: compiled variants, properties, priorities, scratch buffers."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp
        runtime = cp.cuda.runtime
        props = with_attributes(runtime.getDeviceProperties(0), runtime)
        self.sm_count = int(props["multiProcessorCount"])
        self.smem_optin_B = int(props["sharedMemPerBlockOptin"])
        self.smem_per_sm_B = int(props["sharedMemPerMultiprocessor"])
        # The SM clock in kHz (the boost clock); plans size FMA loops by it. Without it
        # (neither the property nor the attribute answered) a low guess: longer blocks.
        self.clock_hz = float(props.get("clockRate", 0)) * 1e3 or 1.5e9
        least, greatest = runtime.deviceGetStreamPriorityRange()
        self.priorities = {"low": int(least), "high": int(greatest)}
        self._source = KERNEL_SOURCE.read_text(encoding="utf-8")
        self._modules: dict[str, Any] = {}
        self._kernels: dict[tuple[str, str], Any] = {}
        self.sink = cp.zeros(1, dtype=cp.float32)
        self.api_used: dict[str, str] = {}

    # ------------------------------------------------------------------ kernels
    def kernel(self, function: str, variant: str = "base") -> Any:
        """The compiled kernel ``function`` (a :attr:`Shape.function`, or ``empty``) of
        ``variant``, attributes set."""
        key = (function, variant)
        if key not in self._kernels:
            if variant not in self._modules:
                self._modules[variant] = self.cp.RawModule(
                    code=self._source, options=compile_options(variant))
            fn = self._modules[variant].get_function(FUNCTION_NAMES[function])
            ptr = self.function_ptr(fn)
            drv = self.cp.cuda.driver
            static = drv.funcGetAttribute(self._attr("SHARED_SIZE_BYTES"), ptr)
            # Opt in to the largest dynamic shared memory and the largest carveout, the
            # calculator's assumptions; without them > 48 KiB launches fail.
            drv.funcSetAttribute(ptr, self._attr("MAX_DYNAMIC_SHARED_SIZE_BYTES"),
                                 self.smem_optin_B - int(static))
            drv.funcSetAttribute(ptr, self._attr("PREFERRED_SHARED_MEMORY_CARVEOUT"), 100)
            self._kernels[key] = fn
        return self._kernels[key]

    @staticmethod
    def function_ptr(fn: Any) -> int:
        """The CUfunction handle of a RawKernel (``.kernel.ptr`` up to CuPy 13; later
        layouts tried in turn)."""
        for holder in ("kernel", "function"):
            ptr = getattr(getattr(fn, holder, None), "ptr", None)
            if ptr is not None:
                return int(ptr)
        raise GpusimError("cannot find the CUfunction handle of a CuPy RawKernel (tried "
                          ".kernel.ptr, .function.ptr); update Gpu.function_ptr")

    def _attr(self, name: str) -> int:
        """A ``CUfunction_attribute`` value: CuPy's constant, else cuda.h's (a stable ABI)."""
        return int(getattr(self.cp.cuda.driver, f"CU_FUNC_ATTRIBUTE_{name}", _FUNC_ATTRS[name]))

    def build_info(self, function: str, variant: str = "base") -> BuildInfo:
        """Registers, static shared memory and local memory of a compiled kernel."""
        ptr = self.function_ptr(self.kernel(function, variant))
        drv = self.cp.cuda.driver
        return BuildInfo(
            regs=int(drv.funcGetAttribute(self._attr("NUM_REGS"), ptr)),
            smem_static_B=int(drv.funcGetAttribute(self._attr("SHARED_SIZE_BYTES"), ptr)),
            local_B=int(drv.funcGetAttribute(self._attr("LOCAL_SIZE_BYTES"), ptr)),
        )

    def occupancy_api(self, shape: Shape) -> int:
        """CUDA's ``cuOccupancyMaxActiveBlocksPerMultiprocessor`` for ``shape`` (0 where the
        shape cannot launch)."""
        ptr = self.function_ptr(self.kernel(shape.function, shape.variant))
        drv = self.cp.cuda.driver
        if hasattr(drv, "occupancyMaxActiveBlocksPerMultiprocessor"):
            self.api_used["occupancy"] = "cupy: occupancyMaxActiveBlocksPerMultiprocessor"
            try:
                return int(drv.occupancyMaxActiveBlocksPerMultiprocessor(
                    ptr, shape.threads, shape.smem_dynamic_B))
            except getattr(drv, "CUDADriverError", RuntimeError):
                return 0
        from cuda.bindings import driver as cu

        self.api_used["occupancy"] = "cuda.bindings: cuOccupancyMaxActiveBlocksPerMultiprocessor"
        err, blocks = cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(
            cu.CUfunction(ptr), shape.threads, shape.smem_dynamic_B)
        return int(blocks) if err == cu.CUresult.CUDA_SUCCESS else 0

    def slots(self, shape: Shape) -> int:
        """Blocks of ``shape`` per SM by CUDA's occupancy API; at least 1 for sizing grids."""
        return max(1, self.occupancy_api(shape))

    # ------------------------------------------------------------------ helpers
    def sync(self) -> None:
        self.cp.cuda.runtime.deviceSynchronize()

    def stream(self, priority: str = "low") -> Any:
        return self.cp.cuda.Stream(non_blocking=True, priority=self.priorities[priority])

    def free_memory(self) -> None:
        self.cp.get_default_memory_pool().free_all_blocks()

    def spin_args(self, spin_ns: int, log: Any) -> tuple[Any, ...]:
        return (np.uint64(spin_ns), log, np.int32(0), self.sink)

    def kernel_args(self, k: KernelPlan, log: Any) -> tuple[Any, ...]:
        """Arguments of one launch of ``k`` (allocating a streaming kernel's buffers)."""
        kind = k.shape.kernel
        if kind == "spin":
            return self.spin_args(k.spin_ns, log)
        if kind == "sleep":
            return (np.uint64(k.spin_ns), log)
        if kind == "fma":
            return (np.uint32(k.iters), np.float32(FMA_MUL), np.float32(FMA_ADD), log,
                    np.int32(0), self.sink)
        n = k.grid * k.elems_per_block
        src = self.cp.ones(4 * n, dtype=self.cp.float32)  # float4 elements
        dst = self.cp.empty(4 * n, dtype=self.cp.float32)
        return (src, dst, np.uint64(k.elems_per_block), log)


@dataclass
class _Prepared:
    plan: KernelPlan
    fn: Any
    stream: Any
    args: tuple[Any, ...]
    log: Any
    smem_B: int


def _kernel_record(gpu: Gpu, k: KernelPlan) -> dict[str, Any]:
    """A launch as committed: its shape with the registers and shared memory the build
    really has, and its work per block by construction (what a replay needs)."""
    info = gpu.build_info(k.shape.function, k.shape.variant)
    return {
        "name": k.name, "stream": k.stream, "kernel": k.shape.kernel,
        "function": FUNCTION_NAMES[k.shape.function], "grid": k.grid,
        "threads": k.shape.threads, "variant": k.shape.variant, "regs": info.regs,
        "smem_static_B": info.smem_static_B, "smem_dynamic_B": k.shape.smem_dynamic_B,
        "local_B": info.local_B, "spin_ns": k.spin_ns, "elems_per_block": k.elems_per_block,
        "ilp": k.shape.ilp, "iters": k.iters, "flop_per_block": k.flop_per_block,
        "dram_bytes_per_block": k.dram_bytes_per_block, "dram_bytes": k.dram_bytes,
        "reference": k.reference, "unimpeded": k.unimpeded,
    }


def run_timeline_case(gpu: Gpu, case: CasePlan,
                      raw: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Run ``case`` (one warm-up, then ``case.repeats`` timed runs) and summarise it.

    Its buffers are freed when it returns; call :meth:`Gpu.free_memory` to hand them back
    to the driver before the next big case. With ``raw``, the per-block logs of the
    committed (median) repeat are stored in it as ``"<case>/<kernel>"`` -> rows of
    ``[start_ns, end_ns, sm]``."""
    cp = gpu.cp
    streams = {s.name: gpu.stream(s.priority) for s in case.streams}  # created in order
    first = streams[case.streams[0].name]
    prepared: list[_Prepared] = []
    for k in case.kernels:
        log = cp.zeros(3 * k.grid, dtype=cp.uint64)
        prepared.append(_Prepared(k, gpu.kernel(k.shape.function, k.shape.variant),
                                  streams[k.stream], gpu.kernel_args(k, log), log,
                                  k.shape.smem_dynamic_B))
    gate_log = cp.zeros(3, dtype=cp.uint64)
    gate_fn = gpu.kernel("spin")

    def one_run() -> tuple[dict[str, BlockLog], list[float], float]:
        for p in prepared:
            p.log.fill(0)
        gate_log.fill(0)
        gpu.sync()
        host_s: list[float] = []
        t_begin = time.perf_counter()
        if case.gate_ns:
            with first:
                gate_fn((1,), (_SMALL_BLOCK,), gpu.spin_args(case.gate_ns, gate_log))
            event = cp.cuda.Event(disable_timing=True)
            event.record(first)
            for name, s in streams.items():
                if name != case.streams[0].name:
                    s.wait_event(event)
        for p in prepared:
            t = time.perf_counter()
            with p.stream:
                p.fn((p.plan.grid,), (p.plan.shape.threads,), p.args, shared_mem=p.smem_B)
            host_s.append(time.perf_counter() - t)
        enqueue_s = time.perf_counter() - t_begin
        gpu.sync()
        logs = {p.plan.name: BlockLog.from_raw(p.log.get(), p.plan.name) for p in prepared}
        if case.gate_ns:
            logs = {"gate": BlockLog.from_raw(gate_log.get(), "gate"), **logs}
        return logs, host_s, enqueue_s

    one_run()  # warm-up: module load, first-launch costs
    summaries, all_logs, host_all, enqueue_all = [], [], [], []
    for _ in range(case.repeats):
        logs, host_s, enqueue_s = one_run()
        summaries.append(summarize_run(logs))
        all_logs.append(logs)
        host_all.extend(host_s)
        enqueue_all.append(enqueue_s)
    rep = representative(summaries)
    if raw is not None:
        for name, log in all_logs[rep].items():
            raw[f"{case.name}/{name}"] = np.stack([log.start_ns, log.end_ns, log.sm], axis=1)
    # How blocks of different kernels shared SMs in the committed repeat (gate left out).
    kernel_logs = {k.name: all_logs[rep][k.name] for k in case.kernels}
    sharing = co_residency(kernel_logs) if len(kernel_logs) > 1 else None
    gate = None
    if case.gate_ns:
        gate = _kernel_record(gpu, KernelPlan("gate", case.streams[0].name,
                                              Shape("spin", _SMALL_BLOCK), 1,
                                              spin_ns=case.gate_ns))
    return timeline_case(
        name=case.name, note=case.note, gate=gate, connections=case.connections,
        mechanism=case.mechanism, co_residency=sharing,
        streams=[{"name": s.name, "priority": s.priority,
                  "cuda_priority": gpu.priorities[s.priority]} for s in case.streams],
        kernels=[_kernel_record(gpu, k) for k in case.kernels],
        host_launch_s=describe(host_all), host_enqueue_s=enqueue_all, runs=summaries)


def run_occupancy_shape(gpu: Gpu, shape: Shape) -> dict[str, Any]:
    """CUDA's occupancy answer for ``shape`` and the residency a spin grid really reached:
    the grid is one block per SM more than the API allows, so a full first wave shows the
    most blocks an SM actually held."""
    info = gpu.build_info(shape.function, shape.variant)
    api = gpu.occupancy_api(shape)
    record: dict[str, Any] = {
        "name": f"t{shape.threads}_{shape.variant}_smem{shape.smem_dynamic_B}",
        "threads": shape.threads, "variant": shape.variant, "regs": info.regs,
        "smem_static_B": info.smem_static_B, "smem_dynamic_B": shape.smem_dynamic_B,
        "local_B": info.local_B, "cuda_api_blocks_per_sm": api,
        "grid": None, "resident_per_sm": None,
    }
    if api == 0:
        return record
    grid = gpu.sm_count * (api + 1)
    log = gpu.cp.zeros(3 * grid, dtype=gpu.cp.uint64)
    fn = gpu.kernel(shape.function, shape.variant)
    for _ in range(2):  # the first launch of a variant pays for loading it
        log.fill(0)
        gpu.sync()
        fn((grid,), (shape.threads,), gpu.spin_args(OCCUPANCY_SPIN_NS, log),
           shared_mem=shape.smem_dynamic_B)
        gpu.sync()
    summary = summarize_run({"k": BlockLog.from_raw(log.get())})["kernels"]["k"]
    record["grid"] = grid
    record["resident_per_sm"] = summary["max_resident_per_sm"]
    record["resident_total"] = summary["max_resident"]
    record["sms_used"] = summary["sms_used"]
    return record


def _chain_record(name: str, logs: Sequence[BlockLog]) -> dict[str, Any]:
    start = np.array([int(lg.start_ns[0]) for lg in logs], dtype=np.int64)
    end = np.array([int(lg.end_ns[0]) for lg in logs], dtype=np.int64)
    return {
        "name": name,
        "kernel_s": describe([seconds(d) for d in end - start]),
        "gap_s": describe([seconds(g) for g in start[1:] - end[:-1]]),
        "span_s": seconds(end[-1] - start[0]),
    }


def run_launch_overhead(gpu: Gpu, plan: LaunchPlan) -> list[dict[str, Any]]:
    """Host seconds per launch, and the device-side gaps of a chain of one-block kernels:
    eager (host-paced), gated (all enqueued before the first runs) and as a CUDA graph."""
    cp = gpu.cp
    s = gpu.stream()
    empty = gpu.kernel("empty")
    spin = gpu.kernel("spin")
    info = gpu.build_info("spin")
    shape = {"threads": _SMALL_BLOCK, "regs": info.regs, "smem_static_B": info.smem_static_B}
    cases: list[dict[str, Any]] = []

    per_launch: list[float] = []
    for rep in range(plan.repeats + 1):
        gpu.sync()
        t = time.perf_counter()
        with s:
            for _ in range(plan.host_launches):
                empty((1,), (_SMALL_BLOCK,), ())
        elapsed = time.perf_counter() - t
        gpu.sync()
        if rep:  # the first pass is the warm-up
            per_launch.append(elapsed / plan.host_launches)
    cases.append({"name": "host_eager", "launches": plan.host_launches,
                  "host_s_per_launch": per_launch})

    m = plan.device_launches
    log = cp.zeros(3 * m, dtype=cp.uint64)
    views = [log[3 * i: 3 * i + 3] for i in range(m)]  # one record per one-block kernel
    args = [gpu.spin_args(0, v) for v in views]
    gate_log = cp.zeros(3, dtype=cp.uint64)

    def read() -> list[BlockLog]:
        raw = log.get().reshape(m, 3)
        return [BlockLog.from_raw(raw[i], f"chain[{i}]") for i in range(m)]

    for name, gate_ns in (("chain_eager", 0), ("chain_gated", 50_000 * m)):
        runs = []
        for rep in range(plan.repeats + 1):
            log.fill(0)
            gpu.sync()
            with s:
                if gate_ns:
                    spin((1,), (_SMALL_BLOCK,), gpu.spin_args(gate_ns, gate_log))
                t = time.perf_counter()
                for a in args:
                    spin((1,), (_SMALL_BLOCK,), a)
                host_s = time.perf_counter() - t
            gpu.sync()
            if rep:
                runs.append({**_chain_record(name, read()), "host_s_per_launch": host_s / m})
        cases.append({"name": name, "launches": m, "gate_ns": gate_ns, **shape, "runs": runs})

    s.begin_capture()
    with s:
        for a in args:
            spin((1,), (_SMALL_BLOCK,), a)
    graph = s.end_capture()
    runs, host = [], []
    for rep in range(plan.repeats + 1):
        log.fill(0)
        gpu.sync()
        t = time.perf_counter()
        graph.launch(s)
        elapsed = time.perf_counter() - t
        gpu.sync()
        if rep:
            runs.append(_chain_record("graph", read()))
            host.append(elapsed)
    cases.append({"name": "graph", "launches": m, "host_s_per_graph_launch": host, **shape,
                  "runs": runs})
    return cases


def selfcheck(gpu: Gpu) -> dict[str, Any]:
    """Compile every variant and run two tiny grids before any experiment: registers per
    variant, the global timer's step as seen in the logs, and a sanity check of the logs
    (SM ids in range, every spin block at least its requested duration). Raises
    :class:`GpusimError` when the logs are not sane, so no device time is spent on a
    broken harness."""
    started = time.perf_counter()
    builds = [("spin", v) for v in VARIANTS]
    builds += [(f, "base") for f in FUNCTION_NAMES if f not in ("spin", "empty")]
    infos = {f"{f}/{v}": gpu.build_info(f, v) for f, v in builds}
    compile_s = time.perf_counter() - started
    grid = 4 * gpu.sm_count
    spin_ns = 20_000
    stamps = []
    for ns in (0, spin_ns):
        log = gpu.cp.zeros(3 * grid, dtype=gpu.cp.uint64)
        gpu.kernel("spin")((grid,), (_SMALL_BLOCK,), gpu.spin_args(ns, log))
        gpu.sync()
        blocks = BlockLog.from_raw(log.get(), f"selfcheck spin {ns} ns")
        if blocks.sm.max() >= gpu.sm_count or blocks.sm.min() < 0:
            raise GpusimError(f"selfcheck: %smid out of range 0..{gpu.sm_count - 1}")
        if ns and np.any(blocks.end_ns - blocks.start_ns < ns):
            raise GpusimError("selfcheck: a spin block ended before its requested duration")
        stamps.append(np.concatenate([blocks.start_ns, blocks.end_ns]))
    # The other kernels once each, one small block per SM: every block writes its record
    # (BlockLog raises otherwise), a sleep lasts at least what it was asked, and one FMA
    # chain step's time shows the FMA latency the plans assume (about 4 cycles).
    checks = (KernelPlan("sleep", "s0", Shape("sleep", _SMALL_BLOCK), gpu.sm_count,
                         spin_ns=spin_ns),
              KernelPlan("fma", "s0", Shape("fma", _SMALL_BLOCK, ilp=1), gpu.sm_count,
                         iters=_SELFCHECK_FMA_ITERS),
              KernelPlan("stream", "s0", Shape("stream", _SMALL_BLOCK), gpu.sm_count,
                         elems_per_block=_SMALL_BLOCK * 64))
    observed: dict[str, float] = {}
    for k in checks:
        log = gpu.cp.zeros(3 * k.grid, dtype=gpu.cp.uint64)
        gpu.kernel(k.shape.function)((k.grid,), (k.shape.threads,), gpu.kernel_args(k, log))
        gpu.sync()
        blocks = BlockLog.from_raw(log.get(), f"selfcheck {k.shape.function}")
        durations = blocks.end_ns - blocks.start_ns
        if k.shape.kernel == "sleep" and np.any(durations < k.spin_ns):
            raise GpusimError("selfcheck: a sleep block ended before its requested duration")
        observed[f"{k.shape.function}_block_ns_median"] = float(np.median(durations))
    observed["fma_ilp1_ns_per_step"] = observed["fma_ilp1_block_ns_median"] / _SELFCHECK_FMA_ITERS
    tick = observed_tick_ns(np.concatenate(stamps))
    return {"regs": {key: info.regs for key, info in infos.items()}, **observed,
            # Local memory means a spill: the padding or the FMA chains left registers.
            "local_B_nonzero": {key: info.local_B for key, info in infos.items()
                                if info.local_B},
            "compile_s": round(compile_s, 3), "clock_hz": gpu.clock_hz,
            "globaltimer_step_ns_observed": tick,
            "occupancy_api": gpu.api_used.get("occupancy", "")}
