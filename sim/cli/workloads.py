"""``gpusim workloads`` and ``gpusim graph``: the model zoo and the structure of its graphs.

``gpusim workloads`` lists every network with its parameter count, inference multiply-adds
at batch 1 and default resolution, and a one-line description. ``gpusim graph --workload
NAME`` prints the structural analysis of :mod:`workloads.analysis` for one network, phase
and batch size: op counts, FLOPs and bytes, critical paths, level widths, the maximum
antichain of convolutions and the per-level parallelism profile. ``--option KEY=VALUE``
(repeatable) passes a builder option to :func:`workloads.build` (``pathnet``: layers,
modules, active, channels, seed; ``randwire``: nodes, k, p, channels, seed; training:
optimizer); values read as int, else float, else text. An unknown option is an error.
``--precision`` picks the storage type as ``simulate`` does (tf32 math keeps fp32 tensors);
``--dtype`` is its older name.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpu_models.spec import PRECISIONS
from gpu_models.units import GIGA, MEGA
from sim.analysis.workflow import STORAGE_DTYPE
from sim.cli.common import add_json_arg, options_from_args, parse_option, print_json, print_table
from workloads.analysis import analyze
from workloads.registry import PHASES, build, forward_macs, list_workloads


def register(subparsers: Any) -> None:
    """Add the ``workloads`` and ``graph`` commands."""
    p = subparsers.add_parser("workloads", help="list the model zoo",
                              description="List every workload of the model zoo.")
    add_json_arg(p)
    p.set_defaults(func=cmd_workloads)

    g = subparsers.add_parser(
        "graph", help="analyse a workload's layer graph",
        description="Structure of a workload's layer graph: critical path, widths, "
        "maximum antichain of convolutions, parallelism per level.",
    )
    g.add_argument("--workload", required=True, help="workload name (see `gpusim workloads`)")
    g.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    g.add_argument("--resolution", type=int, default=None,
                   help="input height = width (default: the workload's own)")
    g.add_argument("--phase", choices=PHASES, default="inference")
    g.add_argument("--precision", "--dtype", dest="precision", choices=PRECISIONS,
                   default="fp32", help="precision, as for simulate (default fp32; --dtype "
                   "is an older name for this option)")
    g.add_argument("--option", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE",
                   help="a workload option, repeatable (pathnet: layers, modules, active, "
                   "channels, seed; randwire: nodes, k, p, channels, seed; training: "
                   "optimizer=per_layer|step)")
    add_json_arg(g)
    g.set_defaults(func=cmd_graph)


def workloads_table() -> list[dict[str, Any]]:
    """One record per workload: name, params, inference MACs (batch 1), resolution, text."""
    rows = []
    for info in list_workloads():
        graph = build(info.name)
        rows.append({
            "name": info.name,
            "params": graph.graph["params"],
            "macs": forward_macs(graph),
            "resolution": info.default_resolution,
            "torchvision": info.torchvision,
            "description": info.description,
        })
    return rows


def cmd_workloads(args: argparse.Namespace) -> int:
    """Handler of ``gpusim workloads``."""
    rows = workloads_table()
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [(r["name"], f"{r['params']:,}", f"{r['macs'] / GIGA:.3f}", r["resolution"],
          r["description"]) for r in rows],
        ["workload", "params", "GMACs", "res", "description"],
    )
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Handler of ``gpusim graph``."""
    options = options_from_args(args)
    graph = build(args.workload, batch=args.batch, resolution=args.resolution,
                  phase=args.phase, dtype=STORAGE_DTYPE[args.precision], **options)
    result = analyze(graph)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"{result.name}  phase={result.phase}  batch={result.batch}  "
          f"resolution={result.resolution}")
    rows: list[tuple[str, Any]] = [
        ("ops", result.ops),
        ("kernel ops (non-view)", result.kernel_ops),
        ("convolutions", result.convs),
        ("parameters", f"{result.params:,}"),
        ("GMACs", f"{result.macs / GIGA:.3f}"),
        ("GFLOP", f"{result.flops / GIGA:.3f}"),
        ("min DRAM traffic (MB)", f"{result.bytes / MEGA:.1f}"),
        ("critical path (ops)", result.critical_path_ops),
        ("critical path (GFLOP)", f"{result.critical_path_flops / GIGA:.3f}"),
        ("critical path share of FLOPs",
         f"{result.critical_path_flops / max(result.flops, 1):.1%}"),
        ("topological levels", result.levels),
        ("max width (ops)", result.max_width),
        ("max antichain of convolutions", result.max_conv_antichain),
    ]
    for part in result.profile:
        rows.append((f"{part.phase}: max ops per level", part.max_ops))
        rows.append((f"{part.phase}: max convs per level", part.max_convs))
        rows.append((f"{part.phase}: max conv antichain", part.max_conv_antichain))
    print_table(rows, ["metric", "value"])
    for part in result.profile:
        print(f"\n{part.phase} convs per level: "
              + " ".join(str(c) for c in part.convs_per_level))
    return 0
