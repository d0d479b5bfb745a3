"""Every teaching notebook runs top to bottom, and is committed without outputs.

Notebooks execute in the kernel named in their metadata ("python3"), which must be the
Python gpusim is installed in: the test checks that before running anything, so a kernel
from another environment fails with a clear message rather than an ImportError in a cell.

Every notebook ends with "Try this" exercises whose solution cells store their answers in
``answers``; after a run the test compares them with the answers worked out by hand below
(:data:`EXPECTED`), so an exercise whose solution stopped being right fails here.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNEL = "python3"
#: Each notebook should teach in seconds; this is the hard stop.
TIMEOUT_S = 120


def _host_launch_check(answers: dict[str, Any]) -> None:
    # 5 us of host time per launch (the H100 preset's launch_overhead_s), and the
    # critical-path bound counts at least those launches.
    assert answers["batch1_binds"] == "host_launch"
    assert answers["host_launch_us"] == answers["kernels"] * 5
    assert answers["critical_path_us"] >= answers["host_launch_us"]


#: The exercises' answers, worked out by hand (the notebooks' markdown says how).
EXPECTED: dict[str, dict[str, Any] | Callable[[dict[str, Any]], None]] = {
    # 128 threads x 128 registers: 4096 registers per warp, 16384 per sub-partition -> 4
    # warps each, 16 per SM -> 4 blocks of 4 warps; 528 per wave, 1000 blocks = 2 waves of
    # 10 us; the A100 (108 SMs) holds 4 blocks of the 256-thread kernel: 432 per wave.
    "01_occupancy_and_waves": {"blocks_per_sm": 4, "limiter": "registers",
                               "grid_1000_us": 20.0, "a100_wave": 432},
    # a = 1.5 waves, b = 1 wave: 2.5 waves of work take 3 wave times (60 us) either way; 9
    # streams need 9 queues.
    "02_streams_queues_leftover": {"whole_b_us": {"serial": 60.0, "concurrent": 60.0},
                                   "connections_needed": 9},
    "03_limits_of_concurrent_layer_scheduling": _host_launch_check,
    # See the solution cells: registers per warp 5376 -> 0, 1, 3 blocks; 6272 elementwise
    # blocks over 1056 and 2112 per wave.
    "04_sweeping_hypothetical_gpus": {"conv_256x128_blocks": [0, 1, 3],
                                      "elementwise_waves": [6, 3]},
    # Two waves of 100 us spin blocks; 80 SMs x 8 blocks.
    "05_calibration_and_validation": {"two_waves_us": 200.0, "v100_wave": 640},
}


def test_notebooks_exist() -> None:
    assert len(PATHS) >= 5, [p.name for p in PATHS]
    assert sorted(EXPECTED) == [p.stem for p in PATHS]


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebooks_end_with_exercises(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    headings = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                and c.source.startswith("## Try this")]
    assert headings, f"{path.name} has no 'Try this' section"
    solutions = [c for c in nb.cells[headings[-1]:] if "solution" in c.metadata.get("tags", [])]
    assert 2 <= len(solutions) <= 3 and all("answers[" in c.source for c in solutions)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebooks_build_what_they_show(path: Path) -> None:
    # No program built in a hidden helper, no SM count typed in where the API gives it.
    code = "\n".join(line.split("#")[0]  # comments may show the arithmetic
                     for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
                     for line in c.source.splitlines())
    assert "leftover_programs" not in code
    assert not re.search(r"\b(132|528|1056)\b", code), "derive it with occupancy()/sm_count"


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
    nb.cells.append(nbformat.v4.new_code_cell("import json; print(json.dumps(answers))"))
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
    answers = json.loads(nb.cells[-1].outputs[0]["text"])
    expected = EXPECTED[path.stem]
    if callable(expected):
        expected(answers)
    else:
        assert answers == expected
    print(f"{path.name}: {elapsed:.1f} s")
