"""A Ctrl-C that lands where Python swallows exceptions (a ``__del__`` or weakref callback
run by the garbage collector) is delivered again, so the command still stops.

The CI failure that showed it: ``gpusim reproduce`` received SIGINT while the collector ran a
``WeakKeyDictionary`` callback; Python printed "Exception ignored ... KeyboardInterrupt" and
the command carried on for minutes.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import signal, time
from sim.cli import _noticing_interrupts

class Swallower:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # the handler runs inside __del__
        for _ in range(1000):
            pass

with _noticing_interrupts() as interrupts:
    try:
        Swallower()  # dropped at once: __del__ runs here
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass
        print("lost", interrupts.seen)
    except KeyboardInterrupt:
        print("delivered", interrupts.seen)
"""


def test_an_interrupt_swallowed_by_a_finaliser_is_delivered_again() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["delivered", "True"], done
    assert "Exception ignored" not in done.stderr, done.stderr


def test_other_unraisable_errors_still_reach_the_previous_hook() -> None:
    script = SCRIPT.replace("signal.raise_signal(signal.SIGINT)", "raise ValueError('boom')")
    script = script.replace("time.monotonic() + 10", "time.monotonic() + 0.1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["lost", "False"], done
    assert "Exception ignored" in done.stderr and "boom" in done.stderr, done.stderr
