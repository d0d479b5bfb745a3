"""A stand-in for CuPy that runs the campaign's kernels on a made-up GPU (no GPU here).

``FakeCupy`` implements the few CuPy calls the harness makes. Launches are queued and run
when the host synchronizes, on a small fluid model of an H100-shaped GPU, and every block
writes its record (start, end, SM) into the log array the harness passed, as the real
kernels do. **The numbers are synthetic**: they follow the physics assumed below, test the
plumbing and the analysis (not GPUs), and only ever land in pytest's tmp folders.

Assumed physics (``SYNTHETIC_PHYSICS``, chosen to be simple and to exercise every path):

* host: the host runs on the wall clock (a launch call takes what the Python call takes,
  which is what the harness measures); the GPU starts a kernel once its launch call has
  returned, its stream predecessor has finished and the events it waits on are recorded;
  after a synchronization the host goes on where the GPU ended;
* dispatch: the leftover rule (kernels by stream priority, then launch order; a kernel gets
  blocks only once every earlier kernel has placed all of its blocks), blocks placed on the
  SM with the most free warps (ties to the lowest id), resources as the occupancy calculator
  counts them (warps, block slots, shared memory, registers in four pools);
* spin and sleep blocks last exactly their requested time (spin: at least 500 ns);
* an FMA block of w warps and ILP i uses a share d of its SM's FP32 pipe: its warps spread
  over the 4 sub-partitions, each issuing min(1, warps there x i / 4) warp FMAs a cycle
  (4 cycles of FMA latency), over 4; alone it lasts its FLOPs / (d x 256 FLOP/cycle x
  1.755 GHz); blocks on one SM whose shares add up to D > 1 all progress at 1 / D
  (proportional sharing);
* a streaming block keeps 512 B per warp in flight over 700 ns of latency (Little's law)
  and so alone moves warps x 0.73 GB/s; when all running copies together ask for more than
  3.0 TB/s, every copy progresses at bandwidth / demand.
"""

from __future__ import annotations

import math
import time
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpu_models.occupancy import block_footprint, occupancy
from gpu_models.presets import load_preset
from sim.measure.micro import plans

SPEC = load_preset("h100")
T0_NS = 1_700_000_000_000_000_000
SYNTHETIC_PHYSICS = {"fp32_flop_per_cycle_per_sm": 256, "clock_hz": 1.755e9,
                     "fma_latency_cycles": 4, "bytes_in_flight_per_warp": 512,
                     "memory_latency_s": 700e-9, "dram_bw_Bps": 3.0e12}
_PEAK_SM = SYNTHETIC_PHYSICS["fp32_flop_per_cycle_per_sm"] * SYNTHETIC_PHYSICS["clock_hz"]
_WARP_BPS = (SYNTHETIC_PHYSICS["bytes_in_flight_per_warp"]
             / SYNTHETIC_PHYSICS["memory_latency_s"])


def fma_share(threads: int, ilp: int) -> float:
    """The synthetic FP32 share of one FMA block (the planning model's, see the docstring)."""
    return plans.fma_model_demand(plans.Shape("fma", threads, ilp=ilp))


class FakeArray:
    """A device array: a numpy array (views share memory, as device slices do)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def fill(self, value: Any) -> None:
        self.data.fill(value)

    def get(self) -> np.ndarray:
        return self.data.copy()

    def __getitem__(self, index: Any) -> FakeArray:
        return FakeArray(self.data[index])


class FakeKernel:
    def __init__(self, owner: FakeCupy, name: str, regs: int) -> None:
        self.owner = owner
        self.name = name
        self.regs = regs
        self.kernel = types.SimpleNamespace(ptr=owner.register(self))
        self.attrs: dict[int, int] = {}

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 shared_mem: int = 0) -> None:
        stream = self.owner.current_stream()
        if stream is not None and stream.capturing:
            stream.captured.append((self, grid, block, args, shared_mem))
            return
        self.owner.launch(self, grid[0], block[0], args, shared_mem, stream)


class FakeStream:
    def __init__(self, owner: FakeCupy, non_blocking: bool = False, priority: int = 0) -> None:
        self.owner = owner
        self.priority = priority
        self.capturing = False
        self.captured: list[Any] = []
        self.waits: list[int] = []  # launch ids the next launch on this stream waits for
        self.last: int | None = None  # id of the last launch on this stream

    def __enter__(self) -> FakeStream:
        self.owner.stream_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner.stream_stack.pop()

    def wait_event(self, event: Any) -> None:
        assert isinstance(event, FakeEvent) and event.recorded
        if event.launch is not None:
            self.waits.append(event.launch)

    def begin_capture(self) -> None:
        self.capturing = True

    def end_capture(self) -> Any:
        self.capturing = False
        launches, self.captured = self.captured, []
        owner = self

        def launch(stream: Any = None) -> None:
            at = owner.owner.host_s()  # one call hands the GPU every kernel of the graph
            for kernel, grid, block, args, smem in launches:
                owner.owner.launch(kernel, grid[0], block[0], args, smem, stream or owner, at)

        return types.SimpleNamespace(launch=launch)


class FakeEvent:
    def __init__(self, disable_timing: bool = False) -> None:
        self.recorded = False
        self.launch: int | None = None

    def record(self, stream: Any = None) -> None:
        self.recorded = True
        self.launch = stream.last if isinstance(stream, FakeStream) else None


@dataclass
class _Pending:
    """A launch waiting for the next synchronization."""

    id: int
    kernel: FakeKernel
    grid: int
    threads: int
    smem: int
    args: tuple[Any, ...]
    priority: int
    after: list[int]
    ready_s: float
    placed: int = 0
    done: int = 0
    end_s: float | None = None
    footprint: Any = None
    work: dict[str, Any] = field(default_factory=dict)


class FakeCupy(types.ModuleType):
    """The slice of CuPy the harness uses, on the synthetic GPU of the module docstring."""

    uint64 = np.uint64
    float32 = np.float32

    def __init__(self) -> None:
        super().__init__("cupy")
        self.__version__ = "0.0-fake"
        # Host time = wall clock + offset; the offset grows so that, after a synchronization,
        # the host never runs before the GPU's end.
        self.host_offset_s = -time.perf_counter()
        self.kernels: dict[int, FakeKernel] = {}
        self.stream_stack: list[FakeStream] = []
        self.pending: list[_Pending] = []
        self.next_id = 0
        self.launches = 0
        self.default_stream = FakeStream(self)
        owner = self
        drv = types.SimpleNamespace(
            CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES=1, CU_FUNC_ATTRIBUTE_NUM_REGS=4,
            CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES=3,
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=8,
            CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT=9,
            CUDADriverError=RuntimeError,
            funcGetAttribute=self._get_attr, funcSetAttribute=self._set_attr,
            occupancyMaxActiveBlocksPerMultiprocessor=self._occupancy,
        )
        runtime = types.SimpleNamespace(
            # As with CUDA 13: no clockRate in the properties, only as an attribute.
            getDeviceProperties=lambda dev: {
                "name": b"NVIDIA H100 80GB HBM3", "major": 9, "minor": 0,
                "multiProcessorCount": SPEC.sm_count,
                "sharedMemPerBlockOptin": SPEC.max_smem_per_block_B,
                "sharedMemPerMultiprocessor": SPEC.smem_per_sm_B, "uuid": b"x"},
            deviceGetAttribute=lambda attr, dev: {13: 1_980_000, 36: 2_619_000}[attr],
            deviceGetStreamPriorityRange=lambda: (0, -5),
            driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000,
            deviceSynchronize=self.synchronize,
        )
        self.cuda = types.SimpleNamespace(
            runtime=runtime, driver=drv,
            nvrtc=types.SimpleNamespace(getVersion=lambda: (13, 0)),
            Stream=lambda non_blocking=False, priority=0: FakeStream(owner, non_blocking,
                                                                     priority),
            Event=FakeEvent,
        )

    # -- module-level CuPy API
    def zeros(self, n: int, dtype: Any) -> FakeArray:
        return FakeArray(np.zeros(n, dtype=dtype))

    def ones(self, n: int, dtype: Any) -> FakeArray:
        return FakeArray(np.ones(min(n, 16), dtype=dtype))  # contents never read

    def empty(self, n: int, dtype: Any) -> FakeArray:
        return FakeArray(np.empty(min(n, 16), dtype=dtype))

    def get_default_memory_pool(self) -> Any:
        return types.SimpleNamespace(free_all_blocks=lambda: None)

    def RawModule(self, code: str, options: tuple[str, ...]) -> Any:
        assert "spin_kernel" in code and "FMA_KERNEL(8)" in code and "sleep_kernel" in code
        pad = next(int(o.split("=")[1]) for o in options if o.startswith("-DPAD_REGS="))
        variant = next(v for v, var in plans.VARIANTS.items() if var.pad_regs == pad)
        owner = self

        def get_function(name: str) -> FakeKernel:
            function = name.removesuffix("_kernel")
            regs = plans.PTXAS_REGS_SM90.get((function, variant),
                                             plans.PTXAS_REGS_SM90.get((function, "base"), 4))
            return FakeKernel(owner, name, regs)

        return types.SimpleNamespace(get_function=get_function)

    # -- internals: kernels and attributes
    def register(self, kernel: FakeKernel) -> int:
        ptr = 0x1000 + len(self.kernels)
        self.kernels[ptr] = kernel
        return ptr

    def current_stream(self) -> FakeStream | None:
        return self.stream_stack[-1] if self.stream_stack else None

    def _get_attr(self, attr: int, ptr: int) -> int:
        k = self.kernels[ptr]
        return {4: k.regs, 1: 0, 3: 0}.get(attr, k.attrs.get(attr, 0))

    def _set_attr(self, ptr: int, attr: int, value: int) -> None:
        self.kernels[ptr].attrs[attr] = value

    def _occupancy(self, ptr: int, threads: int, smem: int) -> int:
        return occupancy(SPEC, threads, self.kernels[ptr].regs, smem).blocks_per_sm

    # -- internals: the synthetic GPU
    def host_s(self) -> float:
        return time.perf_counter() + self.host_offset_s

    def launch(self, kernel: FakeKernel, grid: int, threads: int, args: tuple[Any, ...],
               smem: int, stream: FakeStream | None, ready_s: float | None = None) -> None:
        """A launch call: queued until the next synchronization (visible to the GPU when
        the call returns, or at ``ready_s``: a graph's kernels all at its launch)."""
        stream = stream or self.default_stream
        self.launches += 1
        after = list(stream.waits) + ([stream.last] if stream.last is not None else [])
        stream.waits = []
        item = _Pending(self.next_id, kernel, grid, threads, smem, args, stream.priority,
                        after, self.host_s() if ready_s is None else ready_s)
        item.footprint = block_footprint(SPEC, threads, kernel.regs, smem)
        item.work = self._work(kernel.name, threads, args)
        self.next_id += 1
        stream.last = item.id
        self.pending.append(item)

    @staticmethod
    def _work(name: str, threads: int, args: tuple[Any, ...]) -> dict[str, Any]:
        """What one block does: a fixed time, an FP32 share, or bytes at a rate."""
        warps = math.ceil(threads / 32)
        if name == "empty_kernel":
            return {"time_s": 1e-6, "log": None}
        if name == "spin_kernel":
            return {"time_s": max(int(args[0]), 500) * 1e-9, "log": args[1]}
        if name == "sleep_kernel":
            return {"time_s": int(args[0]) * 1e-9, "log": args[1]}
        if name.startswith("fma_ilp"):
            ilp = int(name.removeprefix("fma_ilp"))
            share = fma_share(threads, ilp)
            flops = 2 * ilp * int(args[0]) * threads
            return {"time_s": flops / (share * _PEAK_SM), "fp32": share, "log": args[3]}
        assert name == "stream_kernel", name
        rate = warps * _WARP_BPS
        return {"time_s": 32 * int(args[2]) / rate, "dram_Bps": rate, "log": args[3]}

    def synchronize(self) -> None:
        """Run every queued launch on the synthetic GPU, then let the host go on."""
        if self.pending:
            end_s = _Simulation(self.pending).run()
            self.host_offset_s += max(0.0, end_s - self.host_s()) + 1e-6
            self.pending = []


class _Simulation:
    """The fluid model of the module docstring over one batch of queued launches."""

    def __init__(self, launches: list[_Pending]) -> None:
        self.launches = launches
        self.by_id = {p.id: p for p in launches}
        self.todo = list(launches)  # launches with blocks left to place
        n = SPEC.sm_count
        self.free_warps = np.full(n, SPEC.max_warps_per_sm)
        self.free_slots = np.full(n, SPEC.max_blocks_per_sm)
        self.free_smem = np.full(n, SPEC.smem_per_sm_B)
        self.free_regs = np.full((n, SPEC.sub_partitions), SPEC.regs_per_sm // SPEC.sub_partitions)
        # Running blocks: launch id, block index, SM, start, progress left (s of alone time),
        # registers taken per pool.
        self.running: list[list[Any]] = []
        self.now = min(p.ready_s for p in launches)

    def _is_ready(self, p: _Pending) -> bool:
        return (p.ready_s <= self.now + 1e-15 and p.placed < p.grid
                and all(self.by_id[a].end_s is not None for a in p.after if a in self.by_id))

    def _capacity(self, p: _Pending) -> np.ndarray:
        fp = p.footprint
        pools = self.free_regs // max(1, fp.regs_per_warp)
        caps = [self.free_warps // fp.warps, self.free_slots, pools.sum(axis=1) // fp.warps]
        if fp.smem_B:
            caps.append(self.free_smem // fp.smem_B)
        return np.maximum(np.minimum.reduce(caps), 0)

    def _dispatch(self) -> None:
        self.todo = [p for p in self.todo if p.placed < p.grid]
        ready = sorted((p for p in self.todo if self._is_ready(p)),
                       key=lambda p: (p.priority, p.id))
        for p in ready:
            cap = self._capacity(p)
            fp = p.footprint
            # Items (sm, m) for the m-th extra block on sm; most free warps first, then id.
            sms = np.repeat(np.arange(cap.size), cap)
            m = np.concatenate([np.arange(c) for c in cap]) if cap.sum() else np.array([], int)
            order = np.lexsort((sms, -(self.free_warps[sms] - m * fp.warps)))
            take = sms[order][: p.grid - p.placed]
            for sm in take:
                regs = np.zeros(SPEC.sub_partitions, dtype=np.int64)
                for _ in range(fp.warps):  # warp by warp, to the pool with most free
                    pool = int(np.argmax(self.free_regs[sm] - regs))
                    regs[pool] += fp.regs_per_warp
                self.free_regs[sm] -= regs
                self.free_warps[sm] -= fp.warps
                self.free_slots[sm] -= 1
                self.free_smem[sm] -= fp.smem_B
                self.running.append([p.id, p.placed, int(sm), self.now, p.work["time_s"], regs])
                p.placed += 1
            if p.placed < p.grid:
                return  # leftover: later kernels wait until this one has placed every block

    def _rates(self) -> np.ndarray:
        work = [self.by_id[r[0]].work for r in self.running]
        sms = np.array([r[2] for r in self.running])
        fp32 = np.array([w.get("fp32", 0.0) for w in work])
        dram = np.array([w.get("dram_Bps", 0.0) for w in work])
        load = np.bincount(sms, weights=fp32, minlength=SPEC.sm_count)[sms]
        slow = np.where(fp32 > 0, np.maximum(1.0, load), 1.0)
        demand = dram.sum()
        if demand > SYNTHETIC_PHYSICS["dram_bw_Bps"]:
            slow = np.maximum(slow, np.where(dram > 0, demand / SYNTHETIC_PHYSICS["dram_bw_Bps"],
                                             1.0))
        return 1.0 / slow

    def run(self) -> float:
        while True:
            self._dispatch()
            waiting = [p.ready_s for p in self.todo if p.ready_s > self.now + 1e-15]
            if not self.running:
                if not waiting:
                    break
                self.now = min(waiting)
                continue
            rates = self._rates()
            left = np.array([r[4] for r in self.running])
            step = float(np.min(left / rates))
            if waiting and min(waiting) - self.now < step:
                step = min(waiting) - self.now
            self.now += step
            left -= rates * step
            keep = []
            for r, remaining in zip(self.running, left, strict=True):
                if remaining > 1e-12:
                    r[4] = float(remaining)
                    keep.append(r)
                    continue
                self._finish(r)
            self.running = keep
        return self.now

    def _finish(self, r: list[Any]) -> None:
        p = self.by_id[r[0]]
        fp = p.footprint
        sm = r[2]
        self.free_regs[sm] += r[5]
        self.free_warps[sm] += fp.warps
        self.free_slots[sm] += 1
        self.free_smem[sm] += fp.smem_B
        log = p.work["log"]
        if log is not None:
            row = 3 * r[1]
            log.data[row: row + 3] = np.array(
                [T0_NS + round(r[3] * 1e9), T0_NS + round(self.now * 1e9), sm], dtype=np.uint64)
        p.done += 1
        if p.done == p.grid:
            p.end_s = self.now
