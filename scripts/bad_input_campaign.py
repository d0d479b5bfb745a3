"""Run the gpusim CLI as a new user would, mostly with bad input, and classify every outcome.

    python scripts/bad_input_campaign.py [--python PY] [--pythonpath DIR] [--jobs N] [--json OUT]

About 450 invocations: program files and GPU spec files mutated at every key with hostile
values, ``--set`` of every GPUSpec field with hostile values, damaged traces, results and
calibration files, the outputs-over-inputs and ``--resume`` cases, workload sizes, and every
finding of issue 17 (first use, warnings, silently wrong output). Each runs as its own
process (``python -m sim ...``) with a timeout. The outcome of each is one of:

* ``exit 2`` — the promised one-line ``gpusim: error: ...``;
* ``exit 130`` — a Ctrl-C case stopped within 2 s with one line;
* ``ran`` — exit 0 where the input may be valid (a mutation can leave a file valid);
* ``ok`` — exit 0 where that is the right answer (a warning, where one is expected, given);
* ``traceback`` — a Python traceback on stderr;
* ``hang`` — still running after the timeout (a run with no bound);
* ``silent`` — exit 0 where the input is wrong (or a warning is due) and nothing was said;
* ``destroyed`` — a file the user gave was changed;
* ``other`` — any other exit status, or an error message over several lines.

Then it prints a table per surface. ``--pythonpath`` runs another checkout of gpusim with the
same interpreter (to compare before and after a change). It takes several minutes; it is a
campaign, not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 20.0
#: SIGINT cases: the command gets this long to stop.
STOP_WITHIN_S = 2.0

HUGE_INT = "<5000-digit integer>"
OUTCOMES = ("exit 2", "exit 130", "ran", "ok", "traceback", "hang", "silent", "destroyed",
            "other")


@dataclass
class Case:
    surface: str
    argv: list[str]
    #: "error": bad input (exit 2 expected); "any": exit 0 or 2 both fine; "ok": exit 0;
    #: "warn": exit 0 with a warning line.
    expect: str
    #: Files that must be byte-identical afterwards.
    keep: list[Path] = field(default_factory=list)
    #: Files that must not exist afterwards (an output a failing command must not leave).
    absent: list[Path] = field(default_factory=list)
    #: Send SIGINT after this many seconds (a Ctrl-C case).
    sigint_after_s: float | None = None
    #: Text that must not appear in the output (``==SUPPRESS==``, an internal name).
    forbid: str = ""


def _json(doc: Any) -> str:
    return json.dumps(doc).replace(json.dumps(HUGE_INT), "9" * 5000)


def _places(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    places = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            places += _places(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            places += _places(v, (*prefix, i))
    return places


def _with(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def build_cases(work: Path) -> list[Case]:
    cases: list[Case] = []
    examples = ROOT / "examples" / "programs"
    trace_src = ROOT / "tests" / "data" / "tiny_profiler_trace.json"

    # ------------------------------------------------------------ program files
    program = json.loads((examples / "two_streams.json").read_text())
    program["streams"][1]["sms"] = "0-65"
    program["kernels"][0]["dram_bytes"] = 1e6
    n = 0
    for path in _places(program):
        for value in (-1, 0, 1e308, "x", None, HUGE_INT):
            n += 1
            target = work / f"prog{n}.json"
            target.write_text(_json(_with(program, path, value)))
            cases.append(Case("run: program file values", ["run", str(target)], "any"))
    for depth in (1000, 100_000):
        target = work / f"deep{depth}.json"
        target.write_text('{"gpu": "h100", "streams": ' + "[" * depth + "]" * depth + "}")
        cases.append(Case("run: damaged program files", ["run", str(target)], "error"))
    text = json.dumps(program)
    for i, damaged in enumerate([text[: len(text) // 2], text.replace('"', "'"), "",
                                 "\x00\xff garbage", "[1, 2, 3]", "{}"]):
        target = work / f"damaged{i}.json"
        target.write_bytes(damaged.encode("utf-8", "surrogateescape"))
        cases.append(Case("run: damaged program files", ["run", str(target)], "error"))
    cases.append(Case("run: damaged program files", ["run", str(work / "missing.json")],
                      "error"))
    cases.append(Case("run: damaged program files", ["run", str(work)], "error"))

    # ------------------------------------------------------------ GPU spec files and --set
    fields = json.loads(subprocess.run(
        [sys.executable, "-c", "import json; from gpu_models.spec import field_names; "
         "print(json.dumps(field_names()))"], capture_output=True, text=True, check=True,
        env=_env(), cwd=work).stdout)
    for name in fields:
        for value in (-1, "x", 10**9, HUGE_INT):
            target = work / f"spec_{name}_{hashlib.md5(repr(value).encode()).hexdigest()[:6]}.json"
            target.write_text(_json({"base": "h100", name: value}))
            cases.append(Case("spec files (--gpu FILE)", [
                "occupancy", "--gpu", str(target), "--threads", "128", "--regs", "32"], "any"))
        for text_value in ("-1", "1e7", "1000000"):
            cases.append(Case("--set FIELD=VALUE", [
                "simulate", "--workload", "alexnet", "--set", f"{name}={text_value}"], "any"))
    for i, spec_text in enumerate(['base = "h100"\nsm_count = ', "base = 5\n",
                                   'base = "h100"\nsmem_per_sm_B = 1\n', "[[x]]\n" * 3]):
        target = work / f"spec{i}.toml"
        target.write_text(spec_text)
        cases.append(Case("spec files (--gpu FILE)", [
            "occupancy", "--gpu", str(target), "--threads", "128", "--regs", "32"], "error"))

    # ------------------------------------------------------------ traces and calibration
    trace = work / "t.json"
    trace.write_bytes(trace_src.read_bytes())
    packed = bytearray(gzip.compress(trace_src.read_bytes()))
    packed[len(packed) // 2] ^= 0xFF
    (work / "corrupt.json.gz").write_bytes(bytes(packed))
    (work / "truncated.json.gz").write_bytes(gzip.compress(trace_src.read_bytes())[:40])
    (work / "cpu_only.json").write_text('{"traceEvents": []}')
    events = json.loads(trace_src.read_text())
    for event in events["traceEvents"]:
        if event.get("cat") in ("kernel", "Kernel"):
            event["dur"] = -5
    (work / "negative.json").write_text(json.dumps(events))
    out = work / "calib_out.json"
    for name in ("corrupt.json.gz", "truncated.json.gz", "cpu_only.json", "negative.json"):
        cases.append(Case("calibrate ingest", ["calibrate", "ingest", str(work / name),
                                               "--out", str(out)], "error", absent=[out]))
    cases.append(Case("calibrate ingest", ["calibrate", "ingest", str(trace), "--out",
                                           str(trace)], "error", keep=[trace]))
    cases.append(Case("calibrate ingest", ["calibrate", "ingest", str(trace), "--out",
                                           str(work / "." / "t.json")], "error", keep=[trace]))
    cases.append(Case("calibrate ingest", ["calibrate", "ingest", str(trace), "--out",
                                           str(out), "--gpu-name", "nosuch"], "error",
                      absent=[out]))
    good_cal = work / "cal.json"
    cases.append(Case("calibrate ingest", ["calibrate", "ingest", str(trace), "--out",
                                           str(good_cal), "--gpu-name", "a100"], "ok"))
    for work_fn in ("os:sep", "os:getpid", "os:nothing", "nomodule:x", "plain"):
        cases.append(Case("calibrate fit", ["calibrate", "fit", "--gpu", "a100", "--file",
                                            str(good_cal), "--work", work_fn], "error"))
    cases.append(Case("calibrate fit", ["calibrate", "fit", "--gpu", "a100", "--file",
                                        str(work / "missing.json")], "error"))
    cases.append(Case("calibrate layers", ["calibrate", "layers", "--out",
                                           str(work / "layers_out"), "--device", "cuda",
                                           "--quick"], "error"))
    cases.append(Case("first use", ["calibrate", "micro", "--help"], "ok",
                      forbid="==SUPPRESS=="))

    # ------------------------------------------------------------ sweeps and results files
    people = work / "people.csv"
    people.write_text("name,age\nann,3\nbob,4")
    garbage_pq = work / "garbage.parquet"
    garbage_pq.write_bytes(b"PAR1 not parquet")
    sweep = ["sweep", "--workload", "resnet50", "--evaluator", "occupancy", "--executor",
             "serial"]
    cases += [
        Case("sweep --resume / --out", [*sweep, "--out", str(people), "--resume"], "error",
             keep=[people]),
        Case("sweep --resume / --out", [*sweep, "--out", str(garbage_pq), "--resume"],
             "error", keep=[garbage_pq]),
        Case("sweep --resume / --out", [*sweep, "--out", "/nonexistent/d/r.csv"], "error"),
        Case("sweep --resume / --out", [*sweep, "--out", str(work / "r.txt")], "error"),
        Case("sweep --resume / --out", [*sweep, "--set", "sm_count=lots,66"], "ok"),
        Case("sweep --resume / --out", [*sweep, "--workers", "0"], "error"),
        Case("limits --workers", ["limits", "--workload", "alexnet", "--workers", "0"], "error"),
        Case("limits --workers", ["limits", "--workload", "alexnet", "--workers", "two"],
             "error"),
        Case("limits --workers", ["limits", "--workload", "alexnet", "--workers", "2"], "ok"),
        Case("sweep --resume / --out", ["sweep", "--workload", "nosuch"], "error"),
    ]
    results = work / "r.csv"
    subprocess.run([sys.executable, "-m", "sim", *sweep, "--set", "sm_count=66,132", "--set",
                    "connections=8,32", "--out", str(results)], env=_env(), cwd=work,
                   capture_output=True, check=False)
    plot = ["plot-sweep", str(results), "--x", "sm_count", "--y", "connections", "--metric",
            "conv_128x64.occupancy"]
    cases += [
        Case("plot-sweep", [*plot, "--out", str(work / "x.xyz")], "error"),
        Case("plot-sweep", [*plot, "--out", str(work)], "error"),
        Case("plot-sweep", [*plot, "--out", str(results)], "error", keep=[results]),
        Case("plot-sweep", ["plot-sweep", str(garbage_pq), "--x", "a", "--y", "b"], "error"),
        Case("plot-sweep", [*plot, "--out", str(work / "ok.png")], "ok"),
        Case("plot-sweep", [*plot[:-2], "--metric", "binds"], "error"),
    ]

    # ------------------------------------------------------------ reproduce and validate
    a_file = work / "a_file.txt"
    a_file.write_text("mine")
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    cases += [
        Case("reproduce", ["reproduce", "--quick", "--out", str(a_file)], "error",
             keep=[a_file]),
        Case("reproduce", ["reproduce", "--quick", "--out", ""], "error"),
        Case("reproduce", ["reproduce", "--quick", "--out", str(foreign)], "error",
             keep=[foreign / "thesis.tex"]),
        Case("reproduce", ["reproduce", "--quick", "--gpu", "nosuch"], "error"),
        Case("validate", ["validate", "--data", "/nonexistent"], "error"),
        Case("validate", ["validate", "--gpu", "nosuch"], "error"),
        Case("validate", ["validate", "--kernels", "--json"], "warn"),
    ]

    # ------------------------------------------------------------ workloads, limits, op
    cases += [
        Case("workload sizes", ["graph", "--workload", "randwire", "--option", "nodes=1000"],
             "error"),
        Case("workload sizes", ["graph", "--workload", "pathnet", "--option", "layers=500"],
             "error"),
        Case("workload sizes", ["limits", "--workload", "resnet50", "--batch", "10000000"],
             "error"),
        Case("workload sizes", ["simulate", "--workload", "resnet50", "--set",
                                "sm_count=1000000"], "error"),
        Case("workload sizes", ["graph", "--workload", "resnet50", "--resolution",
                                "100000"], "error"),
        Case("op", ["op", "gemm", "--m", "1000000000", "--n", "1000000000", "--k",
                    "1000000000"], "error"),
        Case("op", ["op", "gemm", "--m", "0", "--n", "1", "--k", "1"], "error"),
        Case("op", ["op", "conv2d", "--batch", "1", "--in", "3,2,2", "--out", "8",
                    "--kernel", "5"], "error"),
        Case("warnings for fallbacks", ["simulate", "--workload", "alexnet", "--origin",
                                        "a100"], "warn"),
        Case("warnings for fallbacks", ["graph", "--workload", "alexnet", "--option",
                                        "optimizer=step"], "warn"),
        Case("warnings for fallbacks", ["occupancy", "--threads", "256", "--regs", "32",
                                        "--carveout", "-5"], "error"),
        Case("warnings for fallbacks", ["occupancy", "--threads", "256", "--regs", "32",
                                        "--carveout", "5000"], "warn"),
        Case("warnings for fallbacks", ["simulate", "--workload", "alexnet", "--gpu",
                                        "v100", "--precision", "bf16"], "warn"),
        Case("warnings for fallbacks", ["limits", "--workload", "alexnet", "--gpu", "v100",
                                        "--precision", "tf32", "--policies", "branches"],
             "warn"),
        Case("first use", ["simulate", "--workload", "randwire", "--option", "nodes=8"], "ok"),
        Case("first use", ["limits", "--workload", "randwire", "--option", "nodes=8",
                           "--policies", "branches"], "ok"),
        Case("first use", ["sweep", "--workload", "randwire", "--option", "nodes=8,12",
                           "--policy", "branches", "--executor", "serial"], "ok"),
        Case("first use", ["graph", "--workload", "alexnet", "--precision", "fp16"], "ok"),
        Case("first use", ["simulate", "--workload", "nosuch"], "error"),
        Case("first use", ["simulate", "--workload", "alexnet", "--policy", "nosuch"],
             "error"),
        Case("first use", ["limits", "--workload", "alexnet", "--policies", ","], "error"),
    ]

    # ------------------------------------------------------------ Ctrl-C
    big = work / "big.json"
    big.write_text(json.dumps({"gpu": "h100", "streams": [{"name": "s"}], "kernels": [
        {"name": "k", "stream": "s", "grid": 2**31 - 1, "threads": 256, "regs": 32,
         "block_time_us": 1.0}]}))
    for argv in (["run", str(big)],
                 ["limits", "--workload", "densenet121", "--phase", "training", "--batch",
                  "256"],
                 ["simulate", "--workload", "densenet121", "--phase", "training", "--batch",
                  "1024", "--policy", "stages"],
                 ["reproduce", "--out", str(work / "rep_sigint")],
                 ["sweep", "--workload", "densenet121", "--phase", "training", "--batch",
                  "128,256", "--workers", "2"]):
        cases.append(Case("Ctrl-C (SIGINT)", argv, "sigint", sigint_after_s=6.0))
    return cases


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if ARGS.pythonpath:
        env["PYTHONPATH"] = ARGS.pythonpath
    return env


#: Address-space limit of every invocation: a run that would exhaust memory fails fast
#: (as MemoryError) instead of swapping the shared machine.
MEMORY_LIMIT_B = 8 << 30


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_B, MEMORY_LIMIT_B))


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_case(case: Case, work: Path) -> tuple[Case, str, str]:
    before = {p: _digest(p) for p in case.keep}
    proc = subprocess.Popen([ARGS.python, "-m", "sim", *case.argv], cwd=work, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_limit_memory)
    try:
        if case.sigint_after_s is not None:
            time.sleep(case.sigint_after_s)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
            if "Traceback" in err:
                return case, "traceback", err
            if proc.returncode == 130 and took <= STOP_WITHIN_S and err.count("\n") == 1:
                return case, "exit 130", f"130 in {took:.1f} s"
            return case, "other", f"rc {proc.returncode} after {took:.1f} s: {err[-200:]}"
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return case, "hang", ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if any(_digest(p) != d for p, d in before.items()) or any(p.exists() for p in case.absent):
        return case, "destroyed", err[-300:]
    if "Traceback" in err:
        return case, "traceback", err.strip().splitlines()[-1]
    warned = "gpusim: warning:" in err
    if proc.returncode == 2:
        lines = [line for line in err.splitlines() if not line.startswith("gpusim: warning:")]
        one = len(lines) == 1 and lines[0].startswith("gpusim: error:")
        return case, ("exit 2" if one and case.expect != "ok" else "other"), err[-300:]
    if proc.returncode == 0:
        if case.expect == "error" or (case.expect == "warn" and not warned) or (
                case.forbid and case.forbid in out):
            return case, "silent", err[-300:]
        return case, ("ran" if case.expect == "any" else "ok"), ""
    return case, "other", f"rc {proc.returncode}: {err[-300:]}"


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cases = build_cases(work)
        normal = [c for c in cases if c.sigint_after_s is None]
        sigint = [c for c in cases if c.sigint_after_s is not None]
        results: list[tuple[Case, str, str]] = []
        with cf.ThreadPoolExecutor(ARGS.jobs) as pool:
            results += pool.map(lambda c: run_case(c, work), normal)
        results += [run_case(c, work) for c in sigint]  # alone: timing matters
    table: dict[str, Counter[str]] = {}
    for case, outcome, _ in results:
        table.setdefault(case.surface, Counter())[outcome] += 1
    print(f"| surface | inputs tried | {' | '.join(OUTCOMES)} |")
    print("|---|---:|" + "---:|" * len(OUTCOMES))
    for surface, counts in table.items():
        print(f"| {surface} | {sum(counts.values())} | "
              + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    total = Counter(o for _, o, _ in results)
    print(f"| **all** | {len(results)} | " + " | ".join(str(total[o]) for o in OUTCOMES)
          + " |")
    bad = [(c, o, d) for c, o, d in results
           if o in ("traceback", "hang", "silent", "destroyed", "other")]
    for case, outcome, detail in bad:
        print(f"{outcome}: gpusim {' '.join(a[:60] for a in case.argv)}  {detail[:160]!r}")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(
            [{"surface": c.surface, "argv": c.argv, "outcome": o, "detail": d}
             for c, o, d in results], indent=1))
    return 1 if bad else 0


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default=sys.executable, help="interpreter to run gpusim with")
    p.add_argument("--pythonpath", default="", help="run the gpusim checkout in this folder")
    p.add_argument("--jobs", type=int, default=2, help="invocations at a time (default 2)")
    p.add_argument("--json", default="", help="also write every outcome to this file")
    return p.parse_args()


if __name__ == "__main__":
    ARGS = _parse()
    sys.exit(main())
