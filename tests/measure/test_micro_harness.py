"""The campaign's CuPy code, run end to end against a stand-in for CuPy (no GPU here).

``FakeCupy`` implements the few CuPy calls the harness makes. Its kernels "run" at launch
on a virtual clock: blocks are dealt to SMs in waves sized by the project's occupancy
calculator and write their records into the log arrays the harness passed, as the real
kernels do. The numbers are synthetic (they test plumbing, not GPUs) and only ever land
in pytest's tmp folders. What this catches: wrong call sequences, bad argument layouts,
files that fail the schema, and a campaign that cannot be replayed by ``sim.measure.validate``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_models.occupancy import occupancy
from gpu_models.presets import load_preset
from sim.measure.micro import campaign, plans, provenance
from sim.measure.micro.harness import Gpu
from sim.measure.micro.schema import EXPERIMENTS, check_result

_SPEC = load_preset("h100")
_T0 = 1_700_000_000_000_000_000


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
        self.owner.execute(self, grid[0], block[0], args, shared_mem)


class FakeStream:
    def __init__(self, owner: FakeCupy, non_blocking: bool = False, priority: int = 0) -> None:
        self.owner = owner
        self.priority = priority
        self.capturing = False
        self.captured: list[Any] = []

    def __enter__(self) -> FakeStream:
        self.owner.stream_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner.stream_stack.pop()

    def wait_event(self, event: Any) -> None:
        assert isinstance(event, FakeEvent) and event.recorded

    def begin_capture(self) -> None:
        self.capturing = True

    def end_capture(self) -> Any:
        self.capturing = False
        launches, self.captured = self.captured, []
        owner = self.owner

        def launch(stream: Any = None) -> None:
            for kernel, grid, block, args, smem in launches:
                owner.execute(kernel, grid[0], block[0], args, smem)

        return types.SimpleNamespace(launch=launch)


class FakeEvent:
    def __init__(self, disable_timing: bool = False) -> None:
        self.recorded = False

    def record(self, stream: Any = None) -> None:
        self.recorded = True


class FakeCupy(types.ModuleType):
    """The slice of CuPy the harness uses, on a virtual clock."""

    uint64 = np.uint64
    float32 = np.float32

    def __init__(self) -> None:
        super().__init__("cupy")
        self.__version__ = "0.0-fake"
        self.clock_ns = _T0
        self.kernels: dict[int, FakeKernel] = {}
        self.stream_stack: list[FakeStream] = []
        self.launches = 0
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
            getDeviceProperties=lambda dev: {
                "name": b"NVIDIA H100 80GB HBM3", "major": 9, "minor": 0,
                "multiProcessorCount": _SPEC.sm_count,
                "sharedMemPerBlockOptin": _SPEC.max_smem_per_block_B, "uuid": b"x"},
            deviceGetStreamPriorityRange=lambda: (0, -5),
            driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000,
            deviceSynchronize=lambda: None,
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
        assert "spin_kernel" in code
        pad = next(int(o.split("=")[1]) for o in options if o.startswith("-DPAD_REGS="))
        variant = next(v for v, var in plans.VARIANTS.items() if var.pad_regs == pad)
        owner = self

        def get_function(name: str) -> FakeKernel:
            kind = {"spin_kernel": "spin", "stream_kernel": "stream", "empty_kernel": "empty"}
            regs = plans.PTXAS_REGS_SM90.get((kind[name], variant), 4)
            return FakeKernel(owner, name, regs)

        return types.SimpleNamespace(get_function=get_function)

    # -- internals
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
        return occupancy(_SPEC, threads, self.kernels[ptr].regs, smem).blocks_per_sm

    def execute(self, kernel: FakeKernel, grid: int, threads: int, args: tuple[Any, ...],
                smem: int) -> None:
        """Run a launch at once: waves of calculator-sized slots, records into the log."""
        self.launches += 1
        self.clock_ns += 3_000  # a synthetic launch gap
        if kernel.name == "empty_kernel":
            return
        if kernel.name == "spin_kernel":
            block_ns, log = max(int(args[0]), 500), args[1]
        else:
            block_ns, log = int(args[2]) // 100 + 1000, args[3]
        slots = max(1, occupancy(_SPEC, threads, kernel.regs, smem).blocks_per_sm)
        wave = _SPEC.sm_count * slots
        i = np.arange(grid)
        start = self.clock_ns + (i // wave) * block_ns
        rows = np.stack([start, start + block_ns, i % _SPEC.sm_count], axis=1)
        log.data[: 3 * grid] = rows.astype(np.uint64).reshape(-1)
        self.clock_ns = int(start[-1]) + block_ns


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCupy]:
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake.cuda)
    monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS", raising=False)
    monkeypatch.setattr(provenance, "nvidia_smi", lambda fields: {})
    yield fake


def _run_child_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for the queue experiment's child processes (they would import real CuPy)."""
    def fake_run(cmd: list[str], env: dict[str, str], check: bool, timeout: float) -> Any:
        args = cmd[cmd.index("queues-child") + 1:]
        monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", env["CUDA_DEVICE_MAX_CONNECTIONS"])
        assert campaign.main(["queues-child", *args]) == 0
        monkeypatch.delenv("CUDA_DEVICE_MAX_CONNECTIONS")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)  # the campaign's call of it


def test_quick_campaign_writes_valid_files(fake_cupy: FakeCupy, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _run_child_in_process(monkeypatch)
    code = campaign.main(["run", "--quick", "--out", str(tmp_path)])
    assert code == 0
    files = sorted((tmp_path / "h100").glob("*.json"))
    assert [f.stem for f in files] == sorted(EXPERIMENTS)
    for f in files:
        doc = json.loads(f.read_text())
        check_result(doc)
        assert doc["provenance"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
        assert doc["provenance"]["argv"] == ["run", "--quick", "--out", str(tmp_path)]
        assert doc["provenance"]["nvrtc_version"] == "13.0"
        assert f.stat().st_size < campaign.MAX_FILE_B
    queues = json.loads((tmp_path / "h100" / "queues.json").read_text())
    assert {c["connections"] for c in queues["cases"]} == set(plans.QUEUE_CONNECTIONS)
    assert set(queues["parameters"]["child_processes"]) == {"8", "32"}
    gated = queues["cases"][0]
    assert gated["gate"]["name"] == "gate" and "gate" in gated["detail"]["kernels"]
    occ = json.loads((tmp_path / "h100" / "occupancy.json").read_text())
    case = next(c for c in occ["cases"] if c["variant"] == "r255" and c["threads"] == 256)
    assert case["regs"] == 244 and case["cuda_api_blocks_per_sm"] == 1
    assert case["resident_per_sm"] == 1


def test_campaign_refuses_a_preset_connection_setting(fake_cupy: FakeCupy, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "8")
    assert campaign.main(["run", "--quick", "--out", str(tmp_path)]) == 2


def test_kernel_attributes_are_set(fake_cupy: FakeCupy) -> None:
    gpu = Gpu(fake_cupy)
    fn = gpu.kernel("spin", "r64")
    assert fn.attrs[8] == _SPEC.max_smem_per_block_B  # dynamic smem opt-in
    assert fn.attrs[9] == 100  # carveout preference
    assert gpu.build_info("spin", "r64").regs == plans.PTXAS_REGS_SM90[("spin", "r64")]
    assert gpu.priorities == {"low": 0, "high": -5}


def test_fake_campaign_replays_in_the_engine(fake_cupy: FakeCupy, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The files the harness writes are what sim.measure.validate reads (plumbing, not accuracy)."""
    from sim.measure.validate import validate

    _run_child_in_process(monkeypatch)
    assert campaign.main(["run", "--quick", "--out", str(tmp_path)]) == 0
    (report,) = validate(tmp_path)
    assert report.gpu == "h100" and not report.missing
    names = {(c.experiment, c.case) for c in report.cases}
    assert ("waves", "t256_g1") in names and ("concurrency", "leftover") in names
    assert ("queues", "c8_depth_s16") in names and ("launch_overhead", "graph") in names
    from sim.cli import main as gpusim

    assert gpusim(["validate", "--data", str(tmp_path), "--json"]) == 0
    assert gpusim(["validate", "--data", str(tmp_path), "--kernels"]) == 0
    # A lone one-wave spin kernel: the engine must give its measured single-wave time.
    one = next(c for c in report.cases if c.case == "t256_g1056")
    assert one.simulated_makespan_s == pytest.approx(one.measured_makespan_s, rel=1e-6)


def test_device_script_runs_end_to_end_with_fake_cupy(tmp_path: Path) -> None:
    """scripts/device_campaign1.sh as the device runs it, queue children included (real
    subprocesses), with a ``cupy`` package on PYTHONPATH that installs the stand-in."""
    fake_pkg = tmp_path / "site" / "cupy"
    fake_pkg.mkdir(parents=True)
    fake_pkg.joinpath("__init__.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_micro_harness import FakeCupy\n"
        "sys.modules['cupy'] = fake = FakeCupy()\n"
        "sys.modules['cupy.cuda'] = fake.cuda\n")
    repo = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "PYTHONPATH": f"{tmp_path / 'site'}:{repo}", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(repo / "scripts" / "device_campaign1.sh"), "--quick"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "out" / "h100").iterdir())
    assert files == sorted(f"{e}.json" for e in EXPERIMENTS)
    log = (tmp_path / "out" / "campaign1_quick.log").read_text()
    assert "== exit 0" in log and "[queues] 6 cases" in log


def test_raw_block_logs_on_request(fake_cupy: FakeCupy, tmp_path: Path) -> None:
    assert campaign.main(["run", "--quick", "--raw", "--only", "waves", "concurrency",
                          "--out", str(tmp_path)]) == 0
    raw = np.load(tmp_path / "h100" / "raw_blocklogs.npz")
    assert "leftover/k1" in raw.files and "t256_g1/k" in raw.files
    rows = raw["t256_g1057/k"]
    assert rows.shape == (1057, 3)
    waves = json.loads((tmp_path / "h100" / "waves.json").read_text())
    case = next(c for c in waves["cases"] if c["name"] == "t256_g1057")
    # The raw log is the committed (median) repeat: same makespan as its summary.
    span_s = (rows[:, 1].max() - rows[:, 0].min()) * 1e-9
    assert span_s == pytest.approx(case["detail"]["makespan_s"])
    assert not (tmp_path / "h100" / "occupancy.json").exists()  # --only
