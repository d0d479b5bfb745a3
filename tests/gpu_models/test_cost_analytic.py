"""The analytic cost model: each term on a hand-worked case, its consistency with the engine,
its parameters and their data file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_models.cost import (
    DEFAULT_COST_MODEL,
    get_cost_model,
    isolated_time_s,
    list_cost_models,
    physical_floor_s,
)
from gpu_models.cost.analytic import (
    DEFAULT_ENTRY,
    AnalyticModel,
    AnalyticParams,
    ParameterTable,
    compute_key,
    default_table,
    kernel_terms,
)
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind, KernelSpec
from gpu_models.memory import MemorySystem, curve_Bps
from gpu_models.presets import list_presets, load_gpu
from sim.engine.engine import simulate
from sim.engine.program import Launch, Program, StreamDef, load_program


def params(*, compute: float = 0.5, memory: float = 0.8, latency_s: float = 1e-6,
           floor_s: float = 2e-6, overhead: float = 16.0) -> AnalyticParams:
    return AnalyticParams(
        compute_efficiency={compute_key(k, r): compute for k in KernelKind
                            for r in ("simt", "tensor")},
        memory_efficiency={k.value: memory for k in KernelKind},
        iteration_latency_s=latency_s, kernel_floor_s=floor_s, tile_overhead=overhead,
        source="test")


def model(**kwargs: float) -> AnalyticModel:
    return AnalyticModel(ParameterTable(entries={DEFAULT_ENTRY: params(**kwargs)}))


def gemm(blocks: int, *, flops_per_block: float, bytes_per_block: float = 0.0,
         iterations: int = 0, tile: tuple[int, int] | None = (128, 64),
         smem_B: int = 32768) -> KernelSpec:
    return KernelSpec(name="k", kind=KernelKind.GEMM, grid=(blocks, 1, 1), threads=256,
                      regs_per_thread=64, smem_per_block_B=smem_B,
                      flops=flops_per_block * blocks, dram_bytes=bytes_per_block * blocks,
                      tile_mn=tile, mainloop_iterations=iterations)


def test_the_default_is_analytic_and_registered() -> None:
    assert DEFAULT_COST_MODEL == "analytic" and "analytic" in list_cost_models()
    assert "roofline" in list_cost_models()  # the teaching baseline stays
    assert isinstance(get_cost_model("analytic"), AnalyticModel)


def test_compute_term_with_the_tile_shape_efficiency() -> None:
    # V100: 80 SMs; 256 threads x 64 regs and 32 KiB: 3 blocks per SM (shared memory:
    # 96 KiB / 32 KiB), 240 blocks = one full wave. A block's share of the 15.7 TFLOP/s:
    # peak / (80 x 3). 1e9 FLOPs per block at 50% and a 128x64 tile with a = 16:
    # tile factor 1 + 16 (1/128 + 1/64) = 1.375.
    v100 = load_gpu("v100")
    kernel = gemm(240, flops_per_block=1e9)
    share = v100.peak_fp32_flop_per_s / (80 * 3)
    expected = 1e9 / (share * 0.5) * 1.375
    cost = model()(kernel, v100)
    assert cost.block_time_s == pytest.approx(expected, rel=1e-12)
    # Its SM share: the FLOPs over the time over the SM's peak, = 0.5 / 1.375 / 3 per block.
    assert cost.sm_throughput["simt"] == pytest.approx(0.5 / 1.375 / 3, rel=1e-12)
    assert cost.dram_bytes == 0 and cost.bytes_in_flight_B == 0


def test_k_loop_term_binds_a_long_loop_with_little_math() -> None:
    v100 = load_gpu("v100")
    kernel = gemm(240, flops_per_block=1e3, iterations=500)
    # 500 iterations x 1 us: 500 us, far above 1e3 FLOPs' nanoseconds and the floor.
    assert model()(kernel, v100).block_time_s == pytest.approx(500e-6, rel=1e-12)


def test_memory_term_is_bytes_over_the_parallelism_of_the_resident_warps() -> None:
    # 80 blocks of 8 warps on V100's 80 SMs: each block keeps max(8 x bytes per warp,
    # half its 8 KiB of tiles) in flight; the single-kernel curve of memory.py at that
    # parallelism, times the kind's 80%, is the kernel's bandwidth, shared by 80 blocks.
    v100 = load_gpu("v100")
    kernel = gemm(80, flops_per_block=1.0, bytes_per_block=1e6, smem_B=8192)
    memory = MemorySystem.for_gpu(v100)
    in_flight = max(8 * memory.params.bytes_in_flight_per_warp_B, 8192 / 2)
    rate = curve_Bps(80 * in_flight / memory.params.latency_s, memory.plateau_Bps,
                     memory.params.knee)
    expected = 1e6 / (rate * 0.8 / 80)
    cost = model()(kernel, v100)
    assert cost.block_time_s == pytest.approx(expected, rel=1e-12)
    assert rate < memory.full_rate_Bps  # one block per SM does not reach the full rate
    # Tiles that keep more in flight than a full SM of streaming warps reach the full rate
    # (no more): 80 x 16 KiB > 80 SMs x 64 warps x the bytes per warp.
    big = gemm(80, flops_per_block=1.0, bytes_per_block=1e6)
    assert model()(big, v100).block_time_s == pytest.approx(
        1e6 / (memory.full_rate_Bps * 0.8 / 80), rel=1e-12)
    # Equivalent bytes: a kernel at the kind's full rate asks the whole capacity.
    assert cost.dram_bytes == pytest.approx(memory.equivalent_bytes(80e6 / 0.8), rel=1e-12)


def test_kernel_floor_is_spread_over_the_waves() -> None:
    v100 = load_gpu("v100")
    one_wave = gemm(240, flops_per_block=1.0)
    two_waves = gemm(480, flops_per_block=1.0)
    assert model()(one_wave, v100).block_time_s == pytest.approx(2e-6)
    assert model()(two_waves, v100).block_time_s == pytest.approx(1e-6)
    for kernel in (one_wave, two_waves):
        assert isolated_time_s(kernel, v100, model()) == pytest.approx(2e-6, rel=1e-12)


def engine_time_s(kernel: KernelSpec, gpu_name: str, cost_model: AnalyticModel) -> float:
    gpu = load_gpu(gpu_name)
    launch = Launch.from_kernel(kernel, cost_model(kernel, gpu), stream="s")
    return simulate(Program(gpu, (StreamDef("s"),), (launch,), launch_overhead_s=0.0,
                            event_overhead_s=0.0)).makespan_s


@pytest.mark.parametrize(("blocks", "flops", "bytes_", "iterations"), [
    (240, 1e9, 0.0, 0),      # compute-bound, one wave
    (600, 1e8, 1e5, 10),     # 2.5 waves
    (80, 1.0, 1e6, 0),       # memory-bound at one block per SM
    (720, 1e3, 4e6, 0),      # memory-bound at full occupancy, 3 waves
    (16, 1e3, 1e3, 200),     # loop-bound small grid
    (3, 10.0, 10.0, 0),      # floor-bound
])
def test_a_lone_kernel_in_the_engine_takes_what_the_model_says(
        blocks: int, flops: float, bytes_: float, iterations: int) -> None:
    kernel = gemm(blocks, flops_per_block=flops, bytes_per_block=bytes_, iterations=iterations)
    m = model()
    gpu = load_gpu("v100")
    cost = m(kernel, gpu)
    terms = kernel_terms(kernel, gpu)
    expected = terms.waves * cost.block_time_s
    assert isolated_time_s(kernel, gpu, m) == pytest.approx(expected, rel=1e-9)
    assert engine_time_s(kernel, "v100", m) == pytest.approx(expected, rel=1e-6)


kinds = st.sampled_from([k for k in KernelKind if k is not KernelKind.MICRO])


@settings(max_examples=40, deadline=None)
@given(kind=kinds, blocks=st.integers(1, 5000), threads=st.sampled_from([64, 128, 256, 512]),
       flops=st.floats(0, 1e12), bytes_=st.floats(0, 1e10),
       iterations=st.integers(0, 2000), preset=st.sampled_from(sorted(list_presets())),
       tensor=st.booleans())
def test_committed_model_is_engine_consistent_and_above_the_physical_floor(
        kind: KernelKind, blocks: int, threads: int, flops: float, bytes_: float,
        iterations: int, preset: str, tensor: bool) -> None:
    gpu = load_gpu(preset)
    kernel = KernelSpec(name="k", kind=kind, grid=(blocks, 1, 1), threads=threads,
                        regs_per_thread=32, smem_per_block_B=0, flops=flops,
                        dram_bytes=bytes_, dtype="fp16" if tensor else "fp32",
                        tensor_cores=tensor, mainloop_iterations=iterations)
    m = get_cost_model("analytic")
    cost = m(kernel, gpu)
    time_s = isolated_time_s(kernel, gpu, m)
    assert time_s == pytest.approx(kernel_terms(kernel, gpu).waves * cost.block_time_s,
                                   rel=1e-9)
    assert time_s >= physical_floor_s(kernel, gpu) * (1 - 1e-9)
    assert time_s >= m.params_for(gpu).kernel_floor_s * (1 - 1e-9)


def test_committed_parameters_cover_every_preset_with_sources() -> None:
    table = default_table()
    assert table.provenance["command"].startswith("gpusim calibrate fit --model analytic")
    assert table.provenance["data"] and table.provenance["residual_in_sample_mape"]
    for name, entry in table.entries.items():
        assert entry.source.startswith("fitted"), name
    # Measured architectures have their own entry; others that of their generation (V100,
    # 7.0: Turing's), else the default (H100: 9.0).
    assert {"6.0", "6.1", "7.5", "8.0"} <= set(table.entries)
    assert table.for_gpu(load_gpu("h100")) is table.entries[DEFAULT_ENTRY]
    assert table.for_gpu(load_gpu("t4")) is table.entries["7.5"]
    assert table.for_gpu(load_gpu("v100")) is table.entries["7.5"]
    for preset in list_presets():
        assert table.for_gpu(load_gpu(preset)).kernel_floor_s > 0


@pytest.mark.parametrize(("cc", "entry"), [
    ("6.1", "6.1"), ("6.0", "6.0"), ("6.2", "6.1"), ("7.0", "7.5"), ("7.2", "7.5"),
    ("8.6", "8.0"), ("9.0", "default"), ("5.2", "default"),
])
def test_an_unmeasured_architecture_takes_its_generations_nearest_entry(cc: str,
                                                                        entry: str) -> None:
    entries = {k: default_table().entries[k] for k in ("default", "6.0", "6.1", "7.5", "8.0")}
    assert ParameterTable(entries=entries).entry_key(cc) == entry


@pytest.mark.parametrize(("change", "message"), [
    ({"memory": 1.5}, "memory_efficiency"),
    ({"compute": 0.0}, "compute_efficiency"),
    ({"floor_s": 0.0}, "kernel_floor_s"),
    ({"latency_s": math.inf}, "iteration_latency_s"),
])
def test_bad_parameters_are_named(change: dict[str, float], message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        params(**change)


def test_a_parameter_file_replaces_the_committed_one(tmp_path: Path) -> None:
    from sim.measure.analytic_fit import table_toml

    table = ParameterTable(entries={DEFAULT_ENTRY: params(floor_s=7e-6)},
                           provenance={"command": "test"})
    path = tmp_path / "params.toml"
    path.write_text(table_toml(table))
    m = get_cost_model("analytic", params=path)
    tiny = gemm(1, flops_per_block=1.0)
    assert isolated_time_s(tiny, load_gpu("a100"), m) == pytest.approx(7e-6)
    path.write_text("[provenance]\n")
    with pytest.raises(GpusimError, match="default"):
        get_cost_model("analytic", params=path)


def test_work_kernels_of_a_program_are_priced_by_the_default_model(tmp_path: Path) -> None:
    v100 = load_gpu("v100")
    path = tmp_path / "p.json"
    path.write_text('{"gpu": "v100", "launch_overhead_us": 0, "streams": [{"name": "a"}], '
                    '"kernels": [{"name": "k", "stream": "a", "grid": 80, "threads": 1024, '
                    '"regs": 32, "kind": "gemm", "work": {"flop": 1e10, "dram_bytes": 1e8, '
                    '"math": "fp32"}}]}')
    program = load_program(path)
    spec = KernelSpec(name="k", kind=KernelKind.GEMM, grid=(80, 1, 1), threads=1024,
                      regs_per_thread=32, smem_per_block_B=0, flops=1e10, dram_bytes=1e8)
    analytic = get_cost_model("analytic")(spec, v100)
    roofline = get_cost_model("roofline")(spec, v100)
    assert program.kernels[0].block_time_s == pytest.approx(analytic.block_time_s)
    assert analytic.block_time_s != pytest.approx(roofline.block_time_s)
    explicit = load_program(path, cost_model="roofline")
    assert explicit.kernels[0].block_time_s == pytest.approx(roofline.block_time_s)
