"""Ctrl-C ends every command within 2 s with exit 130 and one line; workers die with the
sweep, even after ``kill -9`` (issue 17, "Ctrl-C").

The commands run as real processes, each on an input that keeps it busy for well over ten
seconds; SIGINT is sent once the process is past its imports (it and its workers have used four
seconds of CPU time), as a user's Ctrl-C would arrive in the middle of the work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from sim.analysis.sweep import LocalPool, Point, evaluate_point, limits_evaluator

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads process state from /proc (Linux)")

#: Seconds a command may take to exit after SIGINT.
STOP_WITHIN_S = 2.0


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants (a sweep's work is in its workers)."""
    total = 0.0
    for one in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "sim", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while cpu_seconds(proc.pid) < 4.0:  # past the imports, in the middle of the work
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the command never got going"
        time.sleep(0.05)
    return proc


def descendants(pid: int) -> set[int]:
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True,
                           check=True).stdout
    pairs = [tuple(map(int, line.split())) for line in table.splitlines()]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in pairs if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _big_grid(folder: Path) -> str:
    path = folder / "big.json"
    path.write_text(json.dumps({"gpu": "h100", "streams": [{"name": "s"}], "kernels": [
        {"name": "k", "stream": "s", "grid": 2**31 - 1, "threads": 256, "regs": 32,
         "block_time_us": 1.0}]}))
    return str(path)


COMMANDS = {
    "limits": ["limits", "--workload", "densenet121", "--phase", "training", "--batch", "256"],
    "limits-workers": ["limits", "--workload", "densenet121", "--phase", "training", "--batch",
                       "256", "--workers", "2"],
    "run": ["run", "BIG_GRID"],
    "reproduce": ["reproduce", "--out", "OUT"],
    "simulate": ["simulate", "--workload", "densenet121", "--phase", "training", "--batch",
                 "1024", "--policy", "stages"],
    "sweep": ["sweep", "--workload", "densenet121", "--phase", "training", "--batch",
              "128,256", "--workers", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_sigint_exits_130_within_2_s_with_one_line(tmp_path: Path, name: str) -> None:
    argv = [{"BIG_GRID": _big_grid(tmp_path), "OUT": str(tmp_path / "out")}.get(a, a)
            for a in COMMANDS[name]]
    proc = start(argv, tmp_path)
    children = descendants(proc.pid)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < STOP_WITHIN_S, f"{name} took {took:.1f} s to stop"
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err, err
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], "worker processes outlived it"


@pytest.mark.slow
def test_kill_9_of_a_sweep_leaves_no_orphans(tmp_path: Path) -> None:
    proc = start(COMMANDS["sweep"], tmp_path)
    deadline = time.monotonic() + 30
    while len(children := descendants(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the workers are starting
    assert len(children) >= 2, "the sweep started no worker processes"
    proc.kill()  # SIGKILL: no handler, no cleanup runs in the sweep
    proc.communicate()
    deadline = time.monotonic() + 5
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in children if alive(pid)]
    for pid in orphans:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans


@pytest.mark.slow
def test_a_pool_stopped_early_terminates_running_workers() -> None:
    # The first point takes about a second, the second half a minute: stopping after the
    # first row must not wait for the second.
    points = [Point("alexnet"), Point("densenet121", phase="training", batch=256)]
    pool = LocalPool(workers=2)
    stream = pool.run(partial(evaluate_point, evaluate=limits_evaluator), points)
    first = next(stream)
    assert first["workload"] == "alexnet" and first["error"] is None
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < STOP_WITHIN_S


def _drawing_cut_short(args: object) -> int:
    """A command whose library turns a Ctrl-C into another error, as matplotlib's renderers
    do (``ValueError: Invalid bounding box`` from a drawing interrupted half-way)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises long before this ends
    except KeyboardInterrupt:
        raise ValueError("Invalid bounding box") from None
    return 0


def test_a_ctrl_c_a_library_turns_into_another_error_is_still_an_interrupt(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sim.cli import gpus, main

    monkeypatch.setattr(gpus, "cmd_gpus", _drawing_cut_short)
    assert main(["gpus"]) == 130
    assert capsys.readouterr().err == "gpusim: interrupted\n"
    # The handler is Python's own again afterwards, and the same error without a Ctrl-C is
    # not taken for one.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def broken(args: object) -> int:
        raise ValueError("Invalid bounding box")
    monkeypatch.setattr(gpus, "cmd_gpus", broken)
    with pytest.raises(ValueError, match="bounding box"):
        main(["gpus"])
