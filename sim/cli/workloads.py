"""``gpusim workloads`` and ``gpusim graph``: the model zoo and the structure of its graphs.

``gpusim workloads`` lists every network of the zoo with its parameter count, inference
multiply-adds at batch 1 and default resolution, and a one-line description, then the other
forms a workload can take (:mod:`workloads.sources`). ``gpusim graph --workload WORKLOAD``
prints the structural analysis of :mod:`workloads.analysis` for one network, phase and batch
size: op counts, FLOPs and bytes, critical paths, level widths, the maximum antichain of
convolutions and the per-level parallelism profile; ``--export OUT.json`` also writes the
network in gpusim's layer-graph format (:mod:`workloads.graphfile`), never over the file it
was read from. ``--option KEY=VALUE`` (repeatable) passes a builder option to
:func:`workloads.build` (``pathnet``: layers, modules, active, channels, seed; ``randwire``:
nodes, k, p, channels, seed; training: optimizer); values read as int, else float, else
text. An unknown option is an error. ``--precision`` picks the storage type as ``simulate``
does (tf32 math keeps fp32 tensors); ``--dtype`` is its older name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gpu_models.errors import GpusimError
from gpu_models.spec import PRECISIONS
from gpu_models.units import GIGA, MEGA
from sim.cli.common import add_json_arg, options_from_args, parse_option, print_json, print_table
from sim.cli.simulate import add_workload_source_args
from workloads.analysis import analyze
from workloads.lowering import STORAGE_DTYPE
from workloads.registry import PHASES, build, forward_macs, list_workloads, workload_source

#: What ``gpusim workloads`` says about the forms a workload can take besides the zoo.
OTHER_FORMS = """\
Besides the zoo, --workload takes (in graph, simulate, limits, sweep and reproduce):
  PATH.onnx                  an ONNX model (needs the onnx package)
  PATH.json, PATH.toml       a network in gpusim's layer-graph format: the input shape
                             once, then layers with name, op, inputs and attributes
                             (schema: workloads/data/layer_graph.schema.json; examples:
                             examples/graphs/; `gpusim graph --export` writes any workload)
  torchvision:NAME[?ARG=VALUE&...]
                             any torchvision classification model, e.g.
                             torchvision:efficientnet_b0, torchvision:resnet50?width_per_group=128
                             (built on the meta device and traced with torch.fx: nothing
                             is downloaded; needs pip install 'gpusim[torch]')
--batch and --resolution apply to every form."""


def register(subparsers: Any) -> None:
    """Add the ``workloads`` and ``graph`` commands."""
    p = subparsers.add_parser(
        "workloads", help="list the model zoo (and the other forms a workload can take)",
        description="List every workload of the model zoo, and explain the other forms "
        "--workload takes: ONNX files, layer-graph files, torchvision models.")
    add_json_arg(p)
    p.set_defaults(func=cmd_workloads)

    g = subparsers.add_parser(
        "graph", help="analyse a workload's layer graph",
        description="Structure of a workload's layer graph: critical path, widths, "
        "maximum antichain of convolutions, parallelism per level.",
    )
    add_workload_source_args(g)
    g.add_argument("--phase", choices=PHASES, default="inference")
    g.add_argument("--precision", "--dtype", dest="precision", choices=PRECISIONS,
                   default="fp32", help="precision, as for simulate (default fp32; --dtype "
                   "is an older name for this option)")
    g.add_argument("--option", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE",
                   help="a workload option, repeatable (pathnet: layers, modules, active, "
                   "channels, seed; randwire: nodes, k, p, channels, seed; training: "
                   "optimizer=per_layer|step)")
    g.add_argument("--export", metavar="OUT.json", type=Path,
                   help="also write the network (its forward graph) in gpusim's layer-graph "
                   "format")
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
    print()
    print(OTHER_FORMS)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """Handler of ``gpusim graph``."""
    options = options_from_args(args)
    if args.export is not None:
        check_not_input(args.export, args.workload)
    graph = build(args.workload, batch=args.batch, resolution=args.resolution,
                  phase=args.phase, dtype=STORAGE_DTYPE[args.precision], **options)
    result = analyze(graph)
    if args.export is not None:
        from workloads.graphfile import write_graph_file

        doc = write_graph_file(graph, args.export)
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
    if args.export is not None:
        print(f"\nwrote {len(doc['layers'])} layers to {args.export}")
    return 0


def check_not_input(out: Path, workload: str) -> None:
    """:class:`GpusimError` when ``out`` is the file the workload is read from."""
    source = workload_source(workload)
    if source.kind in ("onnx", "graph") and out.exists() \
            and out.resolve().samefile(Path(source.target).resolve()):
        raise GpusimError(f"--export {str(out)!r} is the workload file itself: it is never "
                          "overwritten; choose another path")
