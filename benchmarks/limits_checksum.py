"""A bit-for-bit fingerprint of the engine's results, to show that a speed-up changed nothing.

For every zoo network x batch 1 and 32 (inference), plus training at batch 32 for a few
networks, the limits report on the H100 under ``cost_model="roofline"`` (named explicitly,
so a change of the default cost model does not move it) with SM sharing on and the default
policies, reduced to a canonical digest: per policy the makespan (of the report as users get it,
policies timed makespan-only), every what-binds counter (of every policy simulated in full),
a SHA-256 of the kernel timelines (launch, ready, start and end of every kernel and its
blocks per SM) and one of the series (busy SMs, DRAM, SM throughput, resident warps per SM),
all floats as ``float.hex`` (exact); and the report's bounds, what binds, streams and
cross-stream events. A few synthetic programs of ``benchmarks/engine_bench.py`` (4 streams,
over-subscribed SMs, mixed block shapes, exact mode) are digested the same way. Bookkeeping
counts that measure the engine's own work (events, groups, dispatch passes, wall time) are
left out: making the engine do less work is the point of an optimisation, its results must
not move.

The digests are written to ``tests/data/limits_checksum.json`` (``--write``) before an
optimisation and compared after (the default; exit 1 naming every case that differs).
``tests/analysis/test_limits_checksum.py`` compares a quick subset on every test run.

    .venv/bin/python benchmarks/limits_checksum.py            # compare all cases
    .venv/bin/python benchmarks/limits_checksum.py --write    # record (before a change)
    .venv/bin/python benchmarks/limits_checksum.py --cases resnet18/inference/1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sim.analysis.limits import limits_for_workload
from sim.engine.engine import simulate
from sim.engine.result import SimResult
from workloads.registry import workload_names

CHECKSUM_FILE = Path(__file__).resolve().parents[1] / "tests" / "data" / "limits_checksum.json"
GPU = "h100"
COST_MODEL = "roofline"
#: Networks also checked in training at batch 32 (the cheaper ones with parallel branches).
TRAINING_B32 = ("resnet18", "googlenet", "squeezenet1_1", "pathnet")


#: Synthetic programs of benchmarks/engine_bench.py, as ``program/shape/kernels/blocks/shares/
#: mode``: many groups, split groups (``stress`` over-subscribes SMs), mixed block shapes.
PROGRAMS = ("program/4-stream/100/2000/model/grouped", "program/4-stream/100/1000/stress/grouped",
            "program/4-stream/60/1000/mixed/grouped", "program/serial/100/2000/model/grouped",
            "program/4-stream/10/1000/stress/exact")


def all_cases() -> list[str]:
    """Every case as ``workload/phase/batch`` (or a :data:`PROGRAMS` entry)."""
    cases = [f"{w}/inference/{b}" for w in workload_names() for b in (1, 32)]
    return cases + [f"{w}/training/32" for w in TRAINING_B32] + list(PROGRAMS)


def program_digest(case: str) -> dict[str, Any]:
    """The digest of one synthetic program's run (a :data:`PROGRAMS` entry)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_bench import make_program

    _, shape, kernels, blocks, shares, mode = case.split("/")
    program = make_program(shape, int(kernels), int(blocks),
                           shares="model" if shares == "mixed" else shares,
                           mixed=shares == "mixed")
    return {"policies": {"program": policy_digest(simulate(program, mode=mode))}}


def _hex(value: float) -> str:
    return float(value).hex()


def timeline_sha256(result: SimResult) -> str:
    """SHA-256 of every kernel's times (exact) and blocks per SM, in launch order."""
    h = hashlib.sha256()
    for k in result.kernels:
        h.update(f"{k.name}|{k.stream}|{k.seq}|{_hex(k.launch_begin_s)}|{_hex(k.launch_s)}|"
                 f"{_hex(k.ready_s)}|{_hex(k.start_s)}|{_hex(k.end_s)}|{k.blocks}|"
                 f"{','.join(map(str, k.sm_blocks))}\n".encode())
    return h.hexdigest()


def series_sha256(result: SimResult) -> str:
    """SHA-256 of the run's series (busy SMs, DRAM, SM throughput, resident warps per SM)."""
    h = hashlib.sha256()
    named = {"busy_sms": result.busy_sms, "dram_Bps": result.dram_Bps,
             **{f"sm_throughput.{r}": v for r, v in sorted(result.sm_throughput.items())}}
    for name, series in named.items():
        h.update(f"{name}:{','.join(map(_hex, series.times_s))}:"
                 f"{','.join(map(_hex, series.values))}\n".encode())
    occupancy = result.sm_occupancy
    h.update(",".join(map(_hex, occupancy.times_s.tolist())).encode())
    h.update(occupancy.warps.tobytes())
    return h.hexdigest()


def policy_digest(result: SimResult) -> dict[str, Any]:
    """A run's makespan, what-binds counters, timeline and series hashes (exact floats)."""
    c = result.counters
    return {
        "makespan_s": _hex(result.makespan_s),
        "blocks": c.blocks,
        "blocked_s": {k: _hex(v) for k, v in sorted(c.blocked_s.items())},
        "launch_bound_s": _hex(c.launch_bound_s),
        "false_dependency_s": _hex(c.false_dependency_s),
        "resident_limit_s": _hex(c.resident_limit_s),
        "dram_saturated_s": _hex(c.dram_saturated_s),
        "memory_parallelism_s": _hex(c.memory_parallelism_s),
        "sm_oversubscribed_s": {k: _hex(v) for k, v in sorted(c.sm_oversubscribed_s.items())},
        "timeline_sha256": timeline_sha256(result),
        "series_sha256": series_sha256(result),
    }


def case_digest(case: str) -> dict[str, Any]:
    """The digest of one ``workload/phase/batch`` limits report (or synthetic program)."""
    if case.startswith("program/"):
        return program_digest(case)
    workload, phase, batch = case.split("/")
    options: dict[str, Any] = {"batch": int(batch), "phase": phase, "gpu": GPU,
                               "cost_model": COST_MODEL, "sm_sharing": True}
    kept = limits_for_workload(workload, keep_results=True, **options)
    assert kept.results is not None
    # The report as users get it (policies timed makespan-only, the best one simulated in
    # full) gives the report's figures and each policy's makespan; the kept results, which
    # every policy is simulated in full for, give the per-policy counters and timelines.
    report = limits_for_workload(workload, **options)
    wb = report.work_bound
    return {
        "kernels": report.kernels,
        "critical_path_s": _hex(report.critical_path_s),
        "work_bound_s": {**{k: _hex(v) for k, v in sorted(wb.sm_resource_s.items())},
                         "dram": _hex(wb.dram_s)},
        "binds": report.binds,
        "binds_detail_s": {k: _hex(v) for k, v in sorted(report.binds_detail_s.items())},
        "streams": dict(report.streams),
        "events": dict(report.events),
        "policies": {name: {**policy_digest(result),
                            "makespan_s": _hex(report.policies_s[name])}
                     for name, result in kept.results.items()},
    }


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Paths at which two digests differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}/{k}: missing" for k in expected if k not in actual]
        out += [f"{where}/{k}: unexpected" for k in actual if k not in expected]
        for k in expected.keys() & actual.keys():
            out += differences(expected[k], actual[k], f"{where}/{k}")
        return out
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


def load_checksums(path: Path = CHECKSUM_FILE) -> dict[str, Any]:
    """The recorded digests, by case."""
    with path.open(encoding="utf-8") as fh:
        return dict(json.load(fh)["cases"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="record the digests (before a change) instead of comparing")
    parser.add_argument("--cases", default=None, help="comma-separated workload/phase/batch")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    cases = args.cases.split(",") if args.cases else all_cases()
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        digests = dict(zip(cases, pool.map(case_digest, cases), strict=True))
    elapsed_s = time.perf_counter() - start
    if args.write:
        payload = {
            "about": "Exact digests of limits reports (benchmarks/limits_checksum.py): "
                     f"gpu {GPU}, cost model {COST_MODEL}, SM sharing on, default policies. "
                     "Floats as float.hex.",
            "cases": digests,
        }
        CHECKSUM_FILE.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n",
                                 encoding="utf-8")
        print(f"wrote {len(digests)} cases to {CHECKSUM_FILE} in {elapsed_s:.0f} s")
        return 0
    recorded = load_checksums()
    failed = 0
    for case, digest in digests.items():
        if case not in recorded:
            print(f"{case}: not recorded")
            failed += 1
            continue
        diff = differences(recorded[case], digest)
        if diff:
            failed += 1
            print(f"{case}: {len(diff)} differences, e.g. {'; '.join(diff[:3])}")
    print(f"{len(digests) - failed} of {len(digests)} cases bit-identical ({elapsed_s:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
