"""The ``gpusim`` command line.

Every command lives in a module of this package that exposes ``register(subparsers)``; it
adds one or more sub-parsers whose ``func`` default is a handler ``(args) -> int``, and
declares the files it reads and writes (:func:`sim.cli.files.declare_files`). The
conventions are the same for every command:

* a human-readable table by default (long tables summarised), ``--json`` for machines;
* exit code 2 with a one-line ``gpusim: error: ...`` message on bad input (any
  :class:`gpu_models.errors.GpusimError`, or a file that cannot be read or written: the
  message says "cannot write" when the file is one of the command's outputs); an output
  that would overwrite an input is refused before anything runs
  (:func:`sim.cli.files.check_files`);
* every fallback or ignored option is a one-line ``gpusim: warning: ...`` on stderr
  (library code raises :class:`gpu_models.errors.GpusimWarning`);
* Ctrl-C (SIGINT) ends any command with exit code 130 and ``gpusim: interrupted``;
* a run that takes more than a few seconds shows a progress bar on stderr when stderr is
  a terminal (:func:`sim.cli.common.progress_bar`).
"""

from __future__ import annotations

import _thread
import argparse
import importlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

from gpu_models.errors import GpusimError, GpusimWarning
from sim.cli.files import check_files, output_paths

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

#: Delay before an interrupt that a finaliser swallowed is delivered again (seconds): long
#: enough for the finaliser to have returned, short against the 2 s a Ctrl-C may take.
REDELIVER_AFTER_S = 0.05

#: Every command and the module that registers it; the order here is the order of
#: ``gpusim --help``. A command line that names a command imports only that command's
#: module (start-up: ``gpusim gpus`` need not import the engine, networkx or matplotlib).
COMMANDS: dict[str, str] = {
    "gpus": "sim.cli.gpus",
    "occupancy": "sim.cli.gpus",
    "workloads": "sim.cli.workloads",
    "graph": "sim.cli.workloads",
    "op": "sim.cli.op",
    "run": "sim.cli.run",
    "simulate": "sim.cli.simulate",
    "limits": "sim.cli.limits",
    "reproduce": "sim.cli.reproduce",
    "calibrate": "sim.cli.calib",
    "sweep": "sim.cli.sweep",
    "plot-sweep": "sim.cli.sweep",
    "validate": "sim.cli.validate",
}
#: The command modules, in ``gpusim --help`` order.
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error convention: one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gpusim: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: with every command module registered, or only the one that
    registers ``command`` (a name in :data:`COMMANDS`)."""
    parser = _Parser(
        prog="gpusim",
        description="Discrete-event GPU execution simulator: how fast would a network run "
        "if its independent layers ran concurrently, and what stops it?",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    modules = COMMAND_MODULES if command is None else (COMMANDS[command],)
    for module_name in modules:
        importlib.import_module(module_name).register(subparsers)
    _describe_commands(parser)
    return parser


def _describe_commands(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command without a description its one-line help as one, so that
    ``gpusim COMMAND --help`` always says what the command does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    text = str(helps[name])
                    sub.description = text[0].upper() + text[1:] + "."
                _describe_commands(sub)


def _is_output(args: argparse.Namespace, filename: object) -> bool:
    """Whether ``filename`` (from an OSError) is one of the command's outputs, or a file
    written on the way to one (``r.csv.tmp``, ``out/figures/x.png``)."""
    if filename is None:
        return False
    path = str(filename)
    for out in output_paths(args):
        if path == out or path.startswith(out + ".") or Path(out) in Path(path).parents:
            return True
    return False


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show :class:`GpusimWarning` as one ``gpusim: warning: ...`` line each (once per
    message), leave other warnings alone, and restore the warning state afterwards."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, GpusimWarning):
            print(f"gpusim: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        previous = warnings.showwarning
        warnings.simplefilter("default", GpusimWarning)
        warnings.showwarning = show
        yield


#: Longest error message printed; longer ones (a value repeated in full) are cut.
MAX_MESSAGE_CHARS = 2000


def one_line(message: str) -> str:
    """``message`` on one line and at most :data:`MAX_MESSAGE_CHARS` long."""
    text = " ".join(message.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS - 5] + " ..."
    return text


class _Interrupts:
    """A SIGINT handler that raises :class:`KeyboardInterrupt` as Python's own does, and
    remembers that it did: some libraries turn the interrupt into another error on its way
    out (matplotlib's renderers raise ``ValueError: Invalid bounding box`` from a drawing
    cut short), and a Ctrl-C is still a Ctrl-C.

    An interrupt can also land where Python swallows exceptions: in a weakref callback or a
    ``__del__`` that the garbage collector runs, where it is printed as "Exception ignored"
    and the command carries on as if no Ctrl-C had come. :meth:`unraisable` (installed as
    :func:`sys.unraisablehook`) catches exactly that case and delivers the interrupt again,
    as a fresh SIGINT that reaches the handler once the callback has returned."""

    def __init__(self, previous_hook: Callable[[Any], object]) -> None:
        self.seen = False
        self.previous_hook = previous_hook
        self._finished = False
        self._redeliveries: list[threading.Thread] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._finished:  # a re-delivery that arrives as the command ends
            return
        self.seen = True
        raise KeyboardInterrupt

    def unraisable(self, info: Any) -> None:
        """``sys.unraisablehook``: re-deliver a swallowed interrupt, pass anything else on."""
        if not isinstance(info.exc_value, KeyboardInterrupt):
            self.previous_hook(info)
        elif not self._finished:
            # Raised from here it would be swallowed again (the hook runs inside the
            # finaliser's context): signal from a thread, once the finaliser has returned.
            thread = threading.Thread(target=self._redeliver, daemon=True,
                                      name="gpusim-interrupt")
            self._redeliveries.append(thread)
            thread.start()

    def _redeliver(self) -> None:
        time.sleep(REDELIVER_AFTER_S)
        if not self._finished:
            _thread.interrupt_main(signal.SIGINT)

    def finish(self) -> None:
        """Stop re-delivering: the command is over."""
        self._finished = True
        for thread in self._redeliveries:
            thread.join()


@contextmanager
def _noticing_interrupts() -> Iterator[_Interrupts]:
    """Install :class:`_Interrupts` for the duration of a command, where SIGINT has Python's
    default handler and we are on the main thread (signal handlers can only be set there);
    elsewhere leave the handling as it is."""
    interrupts = _Interrupts(sys.unraisablehook)
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield interrupts
        return
    previous = signal.signal(signal.SIGINT, interrupts)
    sys.unraisablehook = interrupts.unraisable
    try:
        yield interrupts
    finally:
        interrupts.finish()
        sys.unraisablehook = interrupts.previous_hook
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpusim`` console script; returns the exit code."""
    try:
        with _noticing_interrupts() as interrupts:
            try:
                return _run(argv)
            except Exception:
                if not interrupts.seen:
                    raise
                print("gpusim: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a re-delivered interrupt that reached the way out
        print("gpusim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(argv: Sequence[str] | None) -> int:
    """One command, its errors turned into exit codes and one-line messages."""
    args: Any = None
    try:
        with _warnings_as_lines():
            given = list(sys.argv[1:] if argv is None else argv)
            # Only the named command's module (the full parser for --help, a mistyped
            # command or none: argparse then lists every command).
            parser = build_parser(given[0] if given and given[0] in COMMANDS else None)
            args = parser.parse_args(given)
            check_files(args)
            return int(args.func(args) or 0)
    except GpusimError as exc:
        print(f"gpusim: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except RecursionError:  # json/tomllib are guarded; this is the net for everything else
        print("gpusim: error: the input nests too deeply to process", file=sys.stderr)
        return 2
    except MemoryError:
        print("gpusim: error: out of memory (is an input or a GPUSpec field too large?)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpusim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `gpusim ... | head` is fine
        return 0
    except OSError as exc:  # a file the checks could not foresee (disk full, permissions)
        verb = "write" if _is_output(args, exc.filename) else "read"
        what = f" {exc.filename}" if exc.filename else ""
        print(f"gpusim: error: cannot {verb}{what}: {exc.strerror or exc}", file=sys.stderr)
        return 2
