"""Device campaign 2: the zoo's networks measured on a real GPU with PyTorch (cuDNN) and CuPy.

One command runs the whole campaign on a GPU machine and writes, under ``--out``:

* ``netbench_runs.json`` – per network, phase, batch and precision: the median step time
  over repeated runs, measured with CUDA events, serially on one stream and with every
  parallel branch on its own stream (:func:`sim.measure.netbench.torch_graph.assign_streams`),
  each eager and (inference) captured in a CUDA graph, so host overhead can be told apart;
* ``calibration.tar.gz`` – one calibration file (the format of :mod:`gpu_models.calibration`)
  per configuration: every kernel of one profiled step with its name, grid, block,
  registers, shared memory, stream and duration, attributed to its gpusim layer through the
  ``layer:<name>`` ranges the network records (:mod:`sim.measure.ingest` reads them);
* ``gemm.json`` – cuBLAS GEMM times over a grid of shapes, timed with CuPy events (left out
  with ``--no-gemm``);
* ``log.txt`` – what ran, what was skipped for the time budget, and why.

The first two are rewritten (atomically) after every configuration, so a run that is cut
off keeps every configuration it finished. Everything carries the provenance of
docs/model.md §9. ``--quick`` runs a small subset (under 2 minutes); the full pass stops
starting new configurations when ``--budget-s`` is spent and records the skipped ones.
``--networks``, ``--phases`` and ``--batches`` pick a subset (the device campaign,
``scripts/device_campaign.sh``, runs GoogLeNet and Inception-v3 this way). ``--device cpu``
runs the same flow on the CPU (no streams, graphs or kernels) so the driver itself is tested
without a GPU.

The measuring code imports PyTorch, CuPy, networkx and numpy only; it never imports the
simulator, which the device machine does not have.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpu_models.datafile import import_optional
from gpu_models.errors import GpusimError
from gpu_models.units import MS_PER_S
from sim.measure.netbench.torch_graph import assign_streams, build_net

#: Networks the issue asks for, and the configurations of a full pass.
NETWORKS: tuple[str, ...] = ("googlenet", "inception_v3", "resnet50", "densenet121", "vgg16",
                             "squeezenet1_1", "mobilenet_v2", "randwire")
QUICK_NETWORKS: tuple[str, ...] = ("googlenet", "resnet50")
PRECISIONS: tuple[str, ...] = ("tf32", "bf16")
PHASES: tuple[str, ...] = ("inference", "training")
#: (phase, batch) of every network, most important first.
SHAPES: tuple[tuple[str, int], ...] = (("inference", 1), ("inference", 32), ("training", 32))
#: Rough seconds for planning a pass (not measurements): the process's start (torch import,
#: CUDA context, cuDNN load), and one configuration (build, both stream modes eager and as a
#: graph, one profiled step and its ingest) by phase at the default repetitions.
EST_START_S = 15.0
EST_CONFIG_S: dict[str, float] = {"inference": 10.0, "training": 20.0}


@dataclass(frozen=True)
class RunConfig:
    """One measured configuration."""

    network: str
    phase: str
    batch: int
    precision: str
    #: Input resolution; None = the workload's own (a CPU smoke test uses a small one).
    resolution: int | None = None

    @property
    def tag(self) -> str:
        return f"{self.network}-{self.phase}-b{self.batch}-{self.precision}"


def plan(quick: bool, networks: Sequence[str] | None = None,
         precisions: Sequence[str] | None = None, max_batch: int = 32,
         resolution: int | None = None, phases: Sequence[str] | None = None,
         batches: Sequence[int] | None = None) -> list[RunConfig]:
    """The configurations of a pass, most important first (the budget cuts the tail).

    ``phases`` and ``batches`` keep only those of :data:`SHAPES`; ``max_batch`` caps the
    batch sizes (a smoke test of the driver on the CPU uses 2).
    """
    nets = tuple(networks) if networks else (QUICK_NETWORKS if quick else NETWORKS)
    precs = tuple(precisions) if precisions else (("tf32",) if quick else PRECISIONS)
    shapes = [(phase, batch) for phase, batch in SHAPES
              if (not phases or phase in phases) and (not batches or batch in batches)]
    configs = [RunConfig(n, phase, min(batch, max_batch), p, resolution) for p in precs
               for phase, batch in shapes for n in nets]
    return list(dict.fromkeys(configs))  # a batch cap can make two shapes one


def estimate_s(configs: Sequence[RunConfig]) -> float:
    """Rough seconds a pass over ``configs`` takes (EST_START_S, EST_CONFIG_S)."""
    return EST_START_S + sum(EST_CONFIG_S[c.phase] for c in configs)


def provenance(argv: Sequence[str], device: str) -> dict[str, Any]:
    """GPU, driver, library versions, date, script and arguments."""
    import torch

    libraries = {"torch": torch.__version__, "python": platform.python_version()}
    gpu_name, driver, cuda = "cpu", "none", "none"
    if device == "cuda":
        gpu_name = torch.cuda.get_device_name()
        cuda = str(torch.version.cuda)
        libraries["cudnn"] = str(torch.backends.cudnn.version())
        driver = _driver_version()
        props = torch.cuda.get_device_properties(0)
        libraries["sm_count"] = str(props.multi_processor_count)
    try:
        import cupy

        libraries["cupy"] = cupy.__version__
    except ImportError:
        pass
    return {"gpu_name": gpu_name, "gpu_preset": _preset_for(gpu_name), "driver": driver,
            "cuda": cuda, "libraries": libraries,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "script": "python -m sim.measure.netbench", "args": list(argv)}


def _driver_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _preset_for(gpu_name: str) -> str:
    name = gpu_name.lower()
    for needle, preset in (("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100"),
                           ("a100", "a100"), ("v100", "v100"), ("titan xp", "titan-xp")):
        if needle in name:
            return preset
    return ""


def _set_precision(torch: Any, precision: str) -> Any:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return torch.bfloat16 if precision == "bf16" else torch.float32


class _Timer:
    """Median time of a callable: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch = torch
        self.cuda = device == "cuda"

    def median_s(self, fn: Callable[[], Any], reps: int, warmup: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            if self.cuda:
                start = self.torch.cuda.Event(enable_timing=True)
                end = self.torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / MS_PER_S)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _step_fn(torch: Any, net: Any, x: Any, phase: str, optimizer: Any) -> Callable[[], Any]:
    if phase == "inference":
        def infer() -> Any:
            with torch.no_grad():
                return net(x)
        return infer
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def train() -> Any:
        optimizer.zero_grad(set_to_none=True)
        out = net(x)
        outs = out if isinstance(out, tuple) else (out,)
        # Inception's auxiliary head weighs 0.4 in torchvision's reference training recipe.
        loss = sum((1.0 if i == 0 else 0.4) * torch.nn.functional.cross_entropy(o.float(), labels)
                   for i, o in enumerate(outs))
        loss.backward()
        optimizer.step()
        return loss
    return train


def _graph_fn(torch: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` captured in a CUDA graph (warm-up on a side stream first, as torch requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def measure(cfg: RunConfig, device: str, reps: int, warmup: int) -> dict[str, Any]:
    """Step times of one configuration: serial/branches x eager/graph."""
    import torch

    import workloads

    dtype = _set_precision(torch, cfg.precision)
    graph = workloads.build(cfg.network, batch=cfg.batch, phase=cfg.phase,
                            resolution=cfg.resolution)
    res = graph.graph["resolution"]
    x = torch.randn(cfg.batch, 3, res, res, device=device, dtype=dtype)
    timer = _Timer(torch, device)
    out: dict[str, Any] = {"config": asdict(cfg), "reps": reps, "times_s": {}}
    for mode in ("serial", "branches"):
        streams = assign_streams(graph, mode)
        out[f"streams_{mode}"] = len(set(streams.values()))
        torch.manual_seed(0)
        net = build_net(graph, streams).to(device=device, dtype=dtype)
        net.train(cfg.phase == "training")
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, foreach=True) \
            if cfg.phase == "training" else None
        step = _step_fn(torch, net, x, cfg.phase, opt)
        out["times_s"][f"{mode}_eager"] = timer.median_s(step, reps, warmup)
        if device == "cuda" and cfg.phase == "inference":
            out["times_s"][f"{mode}_graph"] = timer.median_s(_graph_fn(torch, step), reps,
                                                             warmup)
        del net, opt, step
    return out


def profile_kernels(cfg: RunConfig, device: str, prov: dict[str, Any]) -> dict[str, Any]:
    """One profiled serial step with layer labels, ingested into a calibration file dict."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    import workloads
    from sim.measure.ingest import ingest_trace

    dtype = _set_precision(torch, cfg.precision)
    graph = workloads.build(cfg.network, batch=cfg.batch, phase=cfg.phase,
                            resolution=cfg.resolution)
    res = graph.graph["resolution"]
    x = torch.randn(cfg.batch, 3, res, res, device=device, dtype=dtype)
    torch.manual_seed(0)
    net = build_net(graph, label_layers=True).to(device=device, dtype=dtype)
    net.train(cfg.phase == "training")
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, foreach=True) \
        if cfg.phase == "training" else None
    step = _step_fn(torch, net, x, cfg.phase, opt)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=1)) as prof:
        for _ in range(2):
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            prof.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        calib = ingest_trace(path, provenance={**prov, "source": f"torch.profiler {cfg.tag}"},
                             precision=cfg.precision, batch=cfg.batch)
    return calib.to_dict()


def gemm_times(device: str, quick: bool) -> dict[str, Any]:
    """cuBLAS GEMM times through CuPy over a grid of (m, n, k) and dtypes."""
    if device != "cuda":
        return {"skipped": "no GPU"}
    import cupy

    sizes = (256, 1024, 4096) if quick else (128, 256, 512, 1024, 2048, 4096, 8192)
    rows = []
    for dtype in (cupy.float32, cupy.float16):
        for m in sizes:
            for n in sizes:
                for k in sizes:
                    a = cupy.ones((m, k), dtype=dtype)
                    b = cupy.ones((k, n), dtype=dtype)
                    for _ in range(2):
                        cupy.matmul(a, b)
                    start, end = cupy.cuda.Event(), cupy.cuda.Event()
                    reps = 10
                    start.record()
                    for _ in range(reps):
                        cupy.matmul(a, b)
                    end.record()
                    end.synchronize()
                    seconds = cupy.cuda.get_elapsed_time(start, end) / MS_PER_S / reps
                    rows.append({"m": m, "n": n, "k": k, "dtype": cupy.dtype(dtype).name,
                                 "time_s": seconds, "flop_per_s": 2 * m * n * k / seconds})
    return {"cupy": cupy.__version__, "rows": rows}


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step, so a run killed mid-write leaves the
    previous complete file, never a truncated one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run(argv: Sequence[str] | None = None) -> int:
    """The campaign's command line (``python -m sim.measure.netbench``)."""
    args = _parser().parse_args(argv)
    # Everything the campaign needs is checked before the output folder is made.
    torch = import_optional("torch", needed_for="the network campaign (calibrate layers)",
                            extra="torch")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise GpusimError("the network campaign with --device cuda needs a CUDA GPU, and torch "
                          f"{torch.__version__} sees none (use --device cpu for a smoke run)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(list(argv if argv is not None else sys.argv[1:]), args.device)
    configs = plan(args.quick, args.networks, args.precisions, args.max_batch, args.resolution,
                   args.phases, args.batches)
    log_path = out / "log.txt"
    log_path.write_text("", encoding="utf-8")

    def note(line: str) -> None:
        print(line, flush=True)
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    runs: list[dict[str, Any]] = []
    calibrations: dict[str, bytes] = {}

    def save() -> None:
        _write_atomic(out / "calibration.tar.gz", _tar_gz(calibrations))
        _write_atomic(out / "netbench_runs.json", json.dumps(
            {"format": "gpusim-netbench", "version": 1, "provenance": prov, "runs": runs},
            indent=1).encode())

    note(f"{len(configs)} configurations, budget {args.budget_s:.0f} s: "
         f"{', '.join(c.tag for c in configs)}")
    started = time.monotonic()
    save()
    for cfg in configs:
        if time.monotonic() - started > args.budget_s:
            note(f"skipped {cfg.tag}: time budget {args.budget_s:.0f} s spent")
            continue
        t0 = time.monotonic()
        try:
            runs.append(measure(cfg, args.device, args.reps, args.warmup))
            calib = profile_kernels(cfg, args.device, prov)
        except (RuntimeError, GpusimError) as exc:  # e.g. out of memory: record, go on
            note(f"failed {cfg.tag}: {type(exc).__name__}: {exc}")
            continue
        calibrations[f"{prov['gpu_preset'] or 'gpu'}-{cfg.tag}.json"] = \
            json.dumps(calib, indent=1).encode()
        save()
        note(f"ran {cfg.tag} in {time.monotonic() - t0:.1f} s: "
             f"{len(calib['records'])} kernels")
    if args.gemm:
        (out / "gemm.json").write_text(json.dumps(
            {"provenance": prov, **gemm_times(args.device, args.quick)}, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.measure.netbench",
                                description="Device campaign 2: layer kernels and network runs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="a small subset (under 2 minutes)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--networks", nargs="*", help=f"default: {', '.join(NETWORKS)}")
    p.add_argument("--precisions", nargs="*", choices=PRECISIONS)
    p.add_argument("--phases", nargs="*", choices=PHASES, help="default: both")
    p.add_argument("--batches", nargs="*", type=int,
                   help=f"default: {sorted({b for _, b in SHAPES})}")
    p.add_argument("--no-gemm", dest="gemm", action="store_false",
                   help="leave out the cuBLAS GEMM sweep (gemm.json)")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--max-batch", type=int, default=32, help="cap on batch sizes")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution for every network (default: each one's own)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stop starting new configurations after this many seconds")
    return p
