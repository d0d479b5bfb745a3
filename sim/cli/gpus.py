"""``gpusim gpus`` and ``gpusim occupancy``: the GPU presets and the occupancy calculator."""

from __future__ import annotations

import argparse
import warnings

from gpu_models.errors import GpusimWarning
from gpu_models.occupancy import occupancy
from gpu_models.presets import list_presets, load_preset
from gpu_models.units import GIGA, MEGA, MIB, TERA
from sim.cli.common import add_gpu_args, add_json_arg, gpu_from_args, print_json, print_table
from sim.cli.files import declare_files


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gpus`` and ``occupancy`` commands."""
    p = subparsers.add_parser(
        "gpus", help="list the GPU presets with their key figures",
        description="List the built-in GPU presets (gpu_models/data/gpus/*.toml): SMs, clock, "
        "peak FP32 and FP16 tensor-core rates, DRAM bandwidth, shared memory per SM, L2. "
        "Any of them, or a spec file of your own, goes to --gpu.")
    add_json_arg(p)
    p.set_defaults(func=cmd_gpus)

    p = subparsers.add_parser(
        "occupancy", help="blocks per SM of a kernel shape, and which resource limits it",
        description="The occupancy calculator: how many blocks of a kernel shape (threads, "
        "registers per thread, shared memory per block) one SM holds at once, and which "
        "resource (warps, registers, shared memory, block slots) limits it.")
    add_gpu_args(p)
    p.add_argument("--threads", type=int, required=True, help="threads per block")
    p.add_argument("--regs", type=int, required=True, help="registers per thread")
    p.add_argument("--smem", type=int, default=0,
                   help="shared memory per block in bytes, static + dynamic (default 0)")
    p.add_argument("--carveout", type=int, default=None, metavar="BYTES",
                   help="preferred shared-memory carveout in bytes (default: the largest)")
    add_json_arg(p)
    p.set_defaults(func=cmd_occupancy)
    declare_files(p, inputs=("gpu",))


def cmd_gpus(args: argparse.Namespace) -> int:
    specs = [load_preset(name) for name in list_presets()]
    if args.json:
        print_json([s.to_dict() for s in specs])
        return 0
    rows = [
        (
            s.name,
            s.display_name,
            f"{s.compute_capability[0]}.{s.compute_capability[1]}",
            s.sm_count,
            f"{s.clock_hz / MEGA:.0f}",
            f"{s.peak_fp32_flop_per_s / TERA:.1f}",
            f"{s.peak_fp16_tensor_flop_per_s / TERA:.0f}",
            f"{s.dram_bw_Bps / GIGA:.0f}",
            f"{s.smem_per_sm_B // 1024}",
            f"{s.l2_B / MIB:.0f}",
        )
        for s in specs
    ]
    print_table(rows, ("name", "GPU", "cc", "SMs", "MHz", "FP32 TFLOP/s",
                       "FP16 TC TFLOP/s", "DRAM GB/s", "smem/SM KiB", "L2 MiB"))
    return 0


def cmd_occupancy(args: argparse.Namespace) -> int:
    spec = gpu_from_args(args)
    occ = occupancy(spec, args.threads, args.regs, args.smem,
                    preferred_carveout_B=args.carveout)
    if args.carveout is not None and occ.carveout_B != args.carveout:
        why = "the largest" if args.carveout > occ.carveout_B else \
            "the next supported size up (one that also holds a block)"
        warnings.warn(GpusimWarning(
            f"--carveout {args.carveout} B is not a carveout {spec.name} supports "
            f"({', '.join(map(str, spec.smem_carveouts_B))} B): using {occ.carveout_B} B, "
            f"{why}"), stacklevel=1)
    if args.json:
        print_json({"gpu": spec.name, "threads": args.threads, "regs": args.regs,
                    "smem": args.smem, **occ.to_dict()})
        return 0
    print(f"{spec.display_name} ({spec.name}): {args.threads} threads, {args.regs} registers/"
          f"thread, {args.smem} B shared memory per block")
    if occ.reason:
        print(f"blocks per SM: 0 (cannot launch: {occ.reason})")
        return 0
    print(f"blocks per SM: {occ.blocks_per_sm}   active warps: {occ.active_warps}/"
          f"{spec.max_warps_per_sm}   occupancy: {occ.occupancy:.0%}   "
          f"limited by: {', '.join(occ.limiters)}")
    print_table(
        [
            ("warps", occ.limit_warps, f"{occ.warps_per_block} warps per block"),
            ("registers", occ.limit_registers,
             f"{occ.regs_per_warp_alloc} registers per warp allocated"),
            ("shared_memory", occ.limit_shared_memory,
             f"{occ.smem_per_block_alloc_B} B per block of a {occ.carveout_B} B carveout"),
            ("blocks", occ.limit_blocks, "block slots per SM"),
        ],
        ("resource", "blocks/SM", "why"),
    )
    return 0
