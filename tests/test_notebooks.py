"""Every teaching notebook runs top to bottom, and is committed without outputs.

Notebooks execute in the kernel named in their metadata ("python3"), which must be the
Python gpusim is installed in: the test checks that before running anything, so a kernel
from another environment fails with a clear message rather than an ImportError in a cell.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNEL = "python3"
#: Each notebook should teach in seconds; this is the hard stop.
TIMEOUT_S = 120


def test_notebooks_exist() -> None:
    assert len(PATHS) >= 5, [p.name for p in PATHS]


def test_kernel_is_this_python() -> None:
    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    exe = spec.argv[0]
    assert exe in ("python", "python3", "{python}") or Path(exe).resolve() == Path(
        sys.executable).resolve(), f"kernel {KERNEL!r} runs {exe}, not {sys.executable}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: strip outputs before committing")


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    elapsed = time.perf_counter() - started
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    unrendered = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.get("data", {}).get("text/plain", "").startswith("<Figure")
                  and "image/png" not in o["data"]]
    assert not unrendered, f"{path.name}: a figure was shown as text, not as an image"
    print(f"{path.name}: {elapsed:.1f} s")
