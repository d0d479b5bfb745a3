"""The layout's promises that the import-linter contracts (pyproject.toml) cannot check:
optional heavy dependencies are imported only where they are used, never at import time."""

from __future__ import annotations

import subprocess
import sys

#: Optional extras (CuPy, torch, ONNX, Dask, Parquet): no module may need them to import.
OPTIONAL = ("cupy", "torch", "torchvision", "onnx", "dask", "distributed", "pyarrow")


def test_every_module_imports_without_the_optional_extras() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "names = []\n"
        "for pkg in ('gpu_models', 'workloads', 'sim'):\n"
        "    mod = importlib.import_module(pkg)\n"
        "    names.append(pkg)\n"
        "    names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + '.')\n"
        "              if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r})\n"
        "print(len(names), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[0]) > 80  # every module was imported



def test_commands_that_do_not_plot_or_simulate_import_neither() -> None:
    """Start-up: matplotlib (a third of a second) is imported only by commands that draw, the
    engine (SimPy, networkx) only by commands that simulate: a command line imports only its
    own command's module."""
    code = ("import contextlib, io, sys\n"
            "from sim.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['gpus'])\n"
            "bad = [m for m in ('matplotlib', 'simpy', 'networkx', 'sim.engine') "
            "if m in sys.modules]\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


#: Every module the device campaign runs on the device (scripts/device_campaign.sh).
DEVICE_MODULES = (
    "sim.measure.micro.campaign", "sim.measure.micro.harness", "sim.measure.micro.steps",
    "sim.measure.micro.packing", "sim.measure.micro.plans", "sim.measure.micro.blocklog",
    "sim.measure.micro.schema", "sim.measure.micro.provenance", "sim.measure.netbench.campaign",
    "sim.measure.netbench.torch_graph", "sim.measure.netbench.store", "sim.measure.ingest",
)


def test_device_harnesses_import_neither_the_engine_nor_simpy() -> None:
    """The device image has no SimPy: the measuring code builds programs and streams with the
    scheduling code, but never needs the engine itself, and of the third-party packages it
    needs only numpy and networkx (CuPy and torch come lazily, where they measure). The dry
    run (``plan``) is checked too: it sizes the networks step with campaign 2's plan."""
    code = ("import sys, importlib\n"
            f"for name in {DEVICE_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "from sim.measure.micro import steps\n"
            "steps.dry_run('h100', quick=True)\n"
            "bad = sorted(m for m in sys.modules if m == 'simpy' "
            "or m.startswith(('sim.engine.engine', 'sim.analysis')))\n"
            "ours = ('sim', 'gpu_models', 'workloads', 'numpy', 'networkx')\n"
            "extra = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
            " - set(ours))\n"
            "extra = [m for m in extra if not m.startswith('_')]\n"
            "print(bad, extra); sys.exit(1 if bad or extra else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_engine_exports_what_it_lists() -> None:
    import sim
    import sim.engine

    assert set(sim.engine.__all__) == set(sim.engine._EXPORTS)
    assert set(sim.__all__) == set(sim.engine.__all__)
    for name in sim.engine.__all__:
        assert getattr(sim, name) is getattr(sim.engine, name)
