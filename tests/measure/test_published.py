"""Published measurements: DeepBench rows, trace digests, their validation and fitting.

The committed data files (gpu_models/data/calibration/deepbench_*.json, trace_*.json) are
derived from shared/reference (see that folder's README); tests here check their structure
and the arithmetic of the tables printed from them, not the cost model's accuracy (the
tolerance tests belong to the latency-aware model).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from gpu_models.calibration import (
    CalibrationRecord,
    CalibrationSet,
    LayerSignature,
    OpTiming,
    Provenance,
    StepTotals,
    calibration_from_dict,
    load_calibration_file,
    save_calibration_file,
)
from gpu_models.cost import DEFAULT_COST_MODEL, get_cost_model
from gpu_models.cost.analytic import default_table
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind
from gpu_models.presets import load_preset
from sim.analysis.pricing import lower_priced, predicted_time_s
from sim.cli import main
from sim.measure.analytic_fit import collect, predict
from sim.measure.attribution import attribute_step
from sim.measure.compare import compare_classes, compare_to_trace, trace_kernels_of
from sim.measure.deepbench import price_row, read_deepbench_csv, row_layers, timings
from sim.measure.ingest import TraceKernel
from sim.measure.kernel_classes import CLASSES, lowered_class, traced_class
from sim.measure.published import (
    _row_of,
    published_sets,
    relative_error,
    validate_deepbench,
    validate_trace,
)
from sim.measure.trace_digest import TracedWorkload, representative_step, step_totals
from sim.measure.work import signature_work
from workloads.lowering import conv_algorithm_candidates, lower_layer

GEMM_CSV = "app,M,N,K,a_transpose,b_transpose,time_ms\nDeepSpeech,1760,16,1760,N,N,0.061\n" \
    "Speaker ID,1024,700,512,T,N,0.21\n"
# A Pascal sheet's rows: no app column, filter height first, a derived column at the end.
PASCAL_CONV_CSV = ("app,W,H,C,N,K,S,R,pad_w,pad_h,stride_w,stride_h,fwd_ms,bwd_data_ms,"
                   "bwd_filter_ms\n700,161,1,4,32,5,20,0,0,2,2,0.122,0.473,0.257,78.5\n")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- DeepBench rows
def test_deepbench_rows_by_column_and_pascal_layout(tmp_path: Path) -> None:
    gemm = read_deepbench_csv(_write(tmp_path, "g.csv", GEMM_CSV))
    assert [(r.line, r.kind, r.app) for r in gemm] == [(2, "gemm", "DeepSpeech"),
                                                       (3, "gemm", "Speaker ID")]
    assert dict(gemm[1].shape) == {"M": 1024, "N": 700, "K": 512, "a_transpose": "T",
                                   "b_transpose": "N"}
    assert gemm[0].times_ms["time_ms"] == 0.061
    conv, = read_deepbench_csv(_write(tmp_path, "c.csv", PASCAL_CONV_CSV))
    # DeepBench's problem list has this layer as S = 20 (width), R = 5 (height).
    assert (conv.shape["W"], conv.shape["S"], conv.shape["R"]) == (700, 20, 5)
    assert dict(conv.times_ms) == {"fwd_ms": 0.122, "bwd_data_ms": 0.473,
                                   "bwd_filter_ms": 0.257}
    layers = row_layers(conv, dtype="fp32")
    assert layers["fwd"].kernel == (5, 20) and layers["fwd"].output == (4, 32, 79, 341)
    found = timings([*gemm, conv], dtype="fp32", layout="nchw")
    assert [(t.op, t.pass_, t.line) for t in found] == [
        ("gemm", "gemm", 2), ("gemm", "gemm", 3), ("conv2d", "fwd", 2), ("conv2d", "dgrad", 2),
        ("conv2d", "wgrad", 2)]
    assert found[0].duration_s == pytest.approx(61e-6)


@pytest.mark.parametrize(("text", "message"), [
    ("M,N,K,a_transpose,b_transpose\n10,10,10,N,X\n", "line 2: b_transpose must be N or T"),
    ("M,N,K,a_transpose,b_transpose\n10,10,10,N,N\n10,0,10,N,N\n",
     "line 3: N must be an integer >= 1"),
    ("M,N,K,a_transpose,b_transpose,time_ms\n10,10,10,N,N,fast\n",
     "line 2: time_ms must be a number"),
    ("W,H,C,N,K,S,R,pad_w,pad_h,stride_w,stride_h\n7,7,3,1,8,9,9,0,0,1,1\n",
     "line 2: the R = 9 filter does not fit H = 7"),
    ("a,b\n1,2\n", "line 1: expected DeepBench GEMM columns"),
])
def test_deepbench_bad_rows_name_their_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        read_deepbench_csv(_write(tmp_path, "bad.csv", text))


def test_a_note_in_a_time_cell_is_kept_as_a_note(tmp_path: Path) -> None:
    path = _write(tmp_path, "n.csv", "app,M,N,K,a_transpose,b_transpose,time_ms\n"
                  "1760,7133,1760,N,T,(both matrices are 2560x7133),4.022\n")
    row, = read_deepbench_csv(path, notes_in_times=True)
    assert row.times_ms["time_ms"] is None and "2560x7133" in row.notes["time_ms"]
    assert timings([row], dtype="fp32", layout="nchw") == ()


def test_op_from_csv_prices_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      ) -> None:
    path = _write(tmp_path, "g.csv", GEMM_CSV)
    assert main(["op", "--from", str(path), "--gpu", "t4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["line"] for r in rows] == [2, 3]
    assert rows[0]["M"] == 1760 and rows[0]["measured_time_ms"] == 0.061
    # One pricing path: the same number as pricing the row directly (default cost model).
    t4 = load_preset("t4")
    row = read_deepbench_csv(path)[0]
    assert rows[0]["time_ms"] == price_row(row, t4, get_cost_model(DEFAULT_COST_MODEL),
                                           precision="fp32", layout="nchw")["time_ms"]
    conv = _write(tmp_path, "c.csv", PASCAL_CONV_CSV)
    assert main(["op", "--from", str(conv), "--gpu", "titan-xp"]) == 0
    table = capsys.readouterr().out
    assert "fwd_ms" in table and "bwd_data_ms" in table and "bwd_filter_ms" in table
    bad = _write(tmp_path, "b.csv", "M,N,K,a_transpose,b_transpose\n8,8,8,N,N\n8,8,x,N,N\n")
    assert main(["op", "--from", str(bad)]) == 2
    assert "line 3: K must be an integer" in capsys.readouterr().err
    assert main(["op", "--from", str(path), "gemm", "--m", "1", "--n", "1", "--k", "1"]) == 2
    assert main(["op"]) == 2


def test_import_deepbench_writes_timings_with_provenance(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = _write(tmp_path, "t4_specs.txt", "GPU Model: NVIDIA T4\nCUDA Version: 10.1.243\n"
                   "Cudnn Version: 7.6.2.24\nNvidia Driver: 418.67\n")
    out = tmp_path / "db.json"
    assert main(["calibrate", "import-deepbench", str(_write(tmp_path, "g.csv", GEMM_CSV)),
                 "--gpu-name", "t4", "--precision", "fp16", "--layout", "nhwc", "--specs",
                 str(specs), "--out", str(out)]) == 0
    data = load_calibration_file(out)
    assert (data.provenance.gpu_name, data.provenance.cuda, data.provenance.driver) == (
        "NVIDIA T4", "10.1.243", "418.67")
    assert dict(data.provenance.libraries) == {"cudnn": "7.6.2.24"}
    assert [(t.dtype, t.layout) for t in data.timings] == [("fp16", "nhwc")] * 2
    assert data.records == ()


# ---------------------------------------------------------------------- the file format
def _provenance() -> Provenance:
    return Provenance(gpu_name="test", gpu_preset="t4", driver="unknown", cuda="unknown",
                      libraries={}, date="unknown", script="test", args=())


def test_timings_steps_and_workload_roundtrip(tmp_path: Path) -> None:
    timing = OpTiming(op="conv2d", pass_="dgrad", shape={"W": 7, "K": 8}, dtype="fp32",
                      layout="nchw", duration_s=1e-4, label="x", line=3)
    step = StepTotals(step=4, kernels=3, kernel_time_s=2e-3, span_s=3e-3,
                      classes={"conv_fwd": (2, 1.5e-3), "elementwise": (1, 5e-4)})
    calibration = CalibrationSet(_provenance(), (), timings=(timing,), steps=(step,),
                                 workload={"network": "resnet18"})
    save_calibration_file(calibration, tmp_path / "x.json")
    loaded = load_calibration_file(tmp_path / "x.json")
    assert loaded == calibration and dict(loaded.workload) == {"network": "resnet18"}


@pytest.mark.parametrize(("change", "message"), [
    ({"timings": [{"op": "gemm", "pass": "fwd", "shape": {}, "dtype": "fp32",
                   "duration_s": 1.0}]}, "timings 0: .*pass must be 'gemm'"),
    ({"timings": [{"op": "fft", "pass": "gemm", "shape": {}, "dtype": "fp32",
                   "duration_s": 1.0}]}, "op must be one of"),
    ({"steps": [{"step": 1}]}, "steps 0: step totals: missing"),
    ({"bogus": 1}, "unknown key"),
])
def test_malformed_sections_are_named(change: dict[str, object], message: str) -> None:
    data = CalibrationSet(_provenance(), ()).to_dict() | change
    with pytest.raises(GpusimError, match=message):
        calibration_from_dict(data)


# ---------------------------------------------------------------------- kernel classes
def _traced(name: str, kind: KernelKind, op: str, phase: str = "forward",
            conv_pass: str = "", step: int | None = 1, op_seq: int | None = None,
            duration_s: float = 1e-5) -> TraceKernel:
    return TraceKernel(name=name, ts_s=0.0, duration_s=duration_s, device=0, stream=7,
                       correlation=None, grid=(1, 1, 1), block=(128, 1, 1),
                       regs_per_thread=32, smem_per_block_B=0, kind=kind, phase=phase,
                       op=op, step=step, conv_pass=conv_pass, op_seq=op_seq)


@pytest.mark.parametrize(("kernel", "cls"), [
    (_traced("void cudnn::ops::nchwToNhwcKernel<float>", KernelKind.CONCAT_COPY,
             "aten::conv2d", conv_pass="fwd"), "layout_copy"),
    (_traced("cask_cudnn::computeOffsetsKernel", KernelKind.ELEMENTWISE, "aten::conv2d",
             conv_pass="fwd"), "conv_fwd"),
    (_traced("reduce_wgrad_nchw_helper", KernelKind.REDUCTION, "aten::convolution_backward",
             "backward", conv_pass="wgrad"), "conv_wgrad"),
    (_traced("bn_bw_1C11_kernel_new", KernelKind.NORMALIZATION,
             "aten::cudnn_batch_norm_backward", "backward"), "bn_bwd"),
    (_traced("fill", KernelKind.ELEMENTWISE, "aten::max_pool2d_with_indices_backward",
             "backward"), "pooling"),
    (_traced("reduce_kernel<mean>", KernelKind.REDUCTION, "aten::adaptive_avg_pool2d"),
     "pooling"),
    (_traced("splitKreduce_kernel", KernelKind.REDUCTION, "aten::mm", "backward"), "linear"),
    (_traced("reduce_kernel<sum>", KernelKind.REDUCTION, "aten::sum", "backward"), "linear"),
    (_traced("nll_loss_forward", KernelKind.SOFTMAX_LOSS, "aten::cross_entropy_loss"),
     "loss"),
    (_traced("add<long>", KernelKind.ELEMENTWISE, "aten::add_"), "elementwise"),
    (_traced("multi_tensor_apply_kernel", KernelKind.OPTIMIZER, "aten::_foreach_add_", ""),
     "optimizer"),
    (_traced("CatArrayBatchedCopy", KernelKind.CONCAT_COPY, "aten::flatten_dense_tensors"),
     "other"),
])
def test_traced_classes(kernel: TraceKernel, cls: str) -> None:
    assert traced_class(kernel) == cls


def test_lowered_classes_match_the_traced_ones() -> None:
    rtx = load_preset("rtx-2080ti")
    kg = TracedWorkload("resnet18", 2, "fp32", "pytorch-ddp").kernel_graph(rtx)
    classes = {lowered_class(d["kernel"], d["op"]) for _, d in kg.nodes(data=True)}
    assert classes <= set(CLASSES)
    by_label = {d["kernel"].library_name: lowered_class(d["kernel"], d["op"])
                for _, d in kg.nodes(data=True)}
    assert by_label["vectorized_elementwise_kernel<4, add<long> (num_batches_tracked)>"] == \
        "elementwise"
    assert by_label["bn_fw_tr_1C11_singleread"] == "bn_fwd"
    assert by_label["scalePackedTensor_kernel (zero the data gradient)"] == "conv_dgrad"
    assert by_label["elementwise_kernel<128, 2> (expand / divide)"] == "elementwise"
    assert by_label["vectorized_elementwise_kernel<4, mul (DDP reducer: gradient / 2 into "
                    "the bucket)>"] == "elementwise"
    assert any(label.startswith("CatArrayBatchedCopy") and cls == "other"
               for label, cls in by_label.items())


# ---------------------------------------------------------------------- attribution
def test_attribution_pairs_op_instances_in_order() -> None:
    rtx = load_preset("rtx-2080ti")
    kg = TracedWorkload("resnet18", 2, "fp32", "pytorch-wd").kernel_graph(rtx)
    convs = [d for _, d in kg.nodes(data=True) if d["op"] == "conv2d"]
    first, second = convs[0]["layer"], next(d["layer"] for d in convs
                                            if d["layer"] != convs[0]["layer"])
    n_convs = len({d["layer"] for d in convs})
    # A step with every forward convolution, one kernel each, and a stray kernel.
    traced = [_traced("scudnn", KernelKind.CONV_FWD, "aten::conv2d", conv_pass="fwd",
                      op_seq=i) for i in range(n_convs)]
    traced.append(_traced("mystery", KernelKind.ELEMENTWISE, "aten::ones_like",
                          op_seq=99))
    attribution = attribute_step(kg, traced)
    assert attribution.layers[:2] == (first, second)
    assert attribution.layers[-1] == "" and attribution.attributed == n_convs
    # Each paired kernel gets the lowered kernel of the same class with the most work.
    node = attribution.nodes[0]
    assert kg.nodes[node]["layer"] == first
    # The other families are present in lowering but not traced: reported, not paired.
    assert attribution.unmatched["bn"] == (0, 20)
    # One traced convolution too many: the family stays unattributed.
    extra = attribute_step(kg, [*traced[:-1], _traced("scudnn", KernelKind.CONV_FWD,
                                                      "aten::conv2d", conv_pass="fwd",
                                                      op_seq=100)])
    assert extra.attributed == 0 and extra.unmatched["conv"] == (n_convs + 1, n_convs)


def test_step_totals_and_representative_step() -> None:
    kernels = [_traced("a", KernelKind.CONV_FWD, "aten::conv2d", conv_pass="fwd", step=s,
                       duration_s=d) for s, d in ((1, 3e-6), (2, 1e-6), (2, 1e-6),
                                                  (3, 5e-6), (None, 9e-6))]
    steps = step_totals(kernels)
    assert [(s.step, s.kernels, s.kernel_time_s) for s in steps] == [
        (1, 1, 3e-6), (2, 2, 2e-6), (3, 1, 5e-6)]
    assert steps[1].classes == {"conv_fwd": (2, 2e-6)}
    assert representative_step(steps) == 1  # kernel times 2, 3, 5 us: the median is 3
    with pytest.raises(GpusimError, match="step-marker"):
        representative_step([])


# ---------------------------------------------------------------------- committed data
def test_committed_published_data() -> None:
    timed = published_sets(kind="timings")
    assert {(s.provenance.gpu_preset, s.timings[0].dtype) for s in timed} == {
        ("t4", "fp32"), ("t4", "fp16"), ("titan-xp", "fp32"), ("p100", "fp32"),
        ("p100", "fp16"), ("gtx-1080ti", "fp32")}
    for calibration in timed:
        assert "DeepBench" in calibration.provenance.source
        assert calibration.provenance.script == "gpusim calibrate import-deepbench"
        kinds = {t.op for t in calibration.timings}
        assert kinds == {"gemm", "conv2d"}
    traced = {s.provenance.gpu_preset: s for s in published_sets(kind="steps")}
    assert set(traced) == {"a100-40gb", "rtx-2080ti"}
    a100, rtx = traced["a100-40gb"], traced["rtx-2080ti"]
    assert len(a100.steps) == 3 and len(rtx.steps) == 30
    assert a100.workload["framework"] == "pytorch-ddp"
    assert "HolisticTraceAnalysis" in a100.provenance.source
    for calibration in (a100, rtx):
        step = {r.step for r in calibration.records}
        assert len(step) == 1  # one representative step's kernels
        for s in calibration.steps:
            assert sum(n for n, _ in s.classes.values()) == s.kernels
            assert sum(t for _, t in s.classes.values()) == pytest.approx(s.kernel_time_s)
        with_work = [r for r in calibration.records if r.flops is not None]
        assert len(with_work) > len(calibration.records) / 2
        assert all(r.layer_name for r in with_work)
    for path in (Path(s.path) for s in (*timed, a100, rtx)):
        assert path.stat().st_size < 3_000_000


def test_lowering_against_the_traces_kernel_counts_and_configs() -> None:
    """The 2080 Ti digest: the traced step's kernels per class, and the launch configuration
    of the convolution kernels, against the lowered step."""
    calibration = next(s for s in published_sets(kind="steps")
                       if s.provenance.gpu_preset == "rtx-2080ti")
    workload = TracedWorkload.from_dict(calibration.workload)
    kg = workload.kernel_graph(load_preset("rtx-2080ti"))
    counts = {c.cls: (c.lowered, c.traced) for c in compare_classes(kg, calibration.steps)}
    # Every convolution pass, batch norm and optimizer kernel of the step, as traced (the
    # trace's extra conv_fwd/conv_wgrad kernels are cuDNN's offset-table helpers).
    assert counts["conv_dgrad"] == (56, 56.0)
    assert counts["bn_fwd"] == (20, 20.0) and counts["bn_bwd"] == (20, 20.0)
    assert counts["conv_fwd"][0] == 59 and counts["conv_fwd"][1] == 59 + 7
    comparison = compare_to_trace(kg, trace_kernels_of(calibration.records))
    assert comparison.config_agreement > 0.6
    winograd = [m for m in comparison.layers if m.traced_name.startswith(
        "void cudnn::winograd_nonfused::winogradForwardData4x4")]
    assert winograd and all(m.same_config and m.blocks_ratio == 1.0 for m in winograd)


# ---------------------------------------------------------------------- validation
def test_deepbench_validation_arithmetic() -> None:
    report = validate_deepbench("roofline", gpus=["t4"])
    assert {(s.precision, s.kind, s.pass_) for s in report.summaries} == {
        (p, "gemm", "gemm") for p in ("fp32", "fp16")} | {
        (p, "conv", q) for p in ("fp32", "fp16") for q in ("fwd", "dgrad", "wgrad")}
    for summary in report.summaries:
        errors = [c.error for c in report.comparisons if (c.precision, c.kind, c.pass_) == (
            summary.precision, summary.kind, summary.pass_)]
        assert summary.n == len(errors)
        assert summary.mape == pytest.approx(statistics.fmean(abs(e) for e in errors))
        assert summary.mean_error == pytest.approx(statistics.fmean(errors))
        assert summary.max_ape == pytest.approx(max(abs(e) for e in errors))
    # DeepBench skips the data gradient of its first layers (C = 1 or 3): 84 of 94 there.
    dgrad = next(s for s in report.summaries if (s.precision, s.pass_) == ("fp32", "dgrad"))
    assert dgrad.n == 84
    comparison = report.comparisons[0]
    assert comparison.error == relative_error(comparison.predicted_s, comparison.measured_s)
    assert report.provenance["t4"]["gpu_name"] == "NVIDIA T4"


def test_trace_validation_arithmetic_and_cost_model_switch() -> None:
    calibration = next(s for s in published_sets(kind="steps")
                       if s.provenance.gpu_preset == "rtx-2080ti")
    roofline = validate_trace(calibration, "roofline")
    assert roofline.predicted_step_s == pytest.approx(sum(c.predicted_s
                                                          for c in roofline.classes))
    assert roofline.measured_step_s == pytest.approx(statistics.fmean(
        s.kernel_time_s for s in calibration.steps))
    assert roofline.measured_step_s == pytest.approx(sum(c.measured_s
                                                         for c in roofline.classes))
    assert roofline.step_error == pytest.approx(
        roofline.predicted_step_s / roofline.measured_step_s - 1)
    assert [c.cls for c in roofline.classes] == list(CLASSES)
    assert roofline.lowered_kernels == sum(c.lowered_kernels for c in roofline.classes)
    # Another cost model re-prices everything (the calibrated one, fitted to this digest).
    calibrated = validate_trace(calibration, "calibrated")
    assert calibrated.cost_model == "calibrated"
    assert calibrated.predicted_step_s != roofline.predicted_step_s
    assert calibrated.measured_step_s == roofline.measured_step_s


def test_validate_published_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--published", "--gpu", "rtx-2080ti", "--gpu", "gtx-1080ti"]) == 0
    out = capsys.readouterr().out
    assert "MAPE_%" in out and "gtx-1080ti" in out and "conv_wgrad" in out
    assert "step kernel time: measured" in out
    assert main(["validate", "--published", "--gpu", "rtx-2080ti", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["deepbench"]["summaries"] == [] and len(data["traces"]) == 1
    assert main(["validate", "--published", "--gpu", "t4", "--cost-model", "calibrated"]) == 0
    assert "NOT PRICED t4" in capsys.readouterr().out
    assert main(["validate", "--published", "--gpu", "nonesuch"]) == 2


# ---------------------------------------------------------------------- fitting
def test_calibrate_fit_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "fit", "--gpu", "rtx-2080ti", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fitted_records"] > 200
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert {"conv_fwd", "conv_dgrad", "conv_wgrad", "normalization"} <= set(kinds)
    for kind in kinds.values():
        assert kind["insample_mean"] >= 0
        assert kind["folds"] < 2 or kind["heldout_mean"] >= 0
    assert main(["calibrate", "fit", "--gpu", "t4"]) == 2
    err = capsys.readouterr().err
    assert "op-level timings" in err and "a100-40gb, rtx-2080ti" in err


def test_signature_work() -> None:
    conv = LayerSignature(op="aten::conv2d", shapes=((8, 64, 56, 56), (128, 64, 1, 1)),
                          dtype="fp32", batch=8,
                          attrs={"arg3": "[2, 2]", "arg4": "[0, 0]", "arg5": "[1, 1]",
                                 "arg6": "1"})

    def record(kind: str, signature: LayerSignature) -> CalibrationRecord:
        return CalibrationRecord(library_name="k", kind=kind, grid=(1,), block=(32,),
                                 regs_per_thread=32, smem_per_block_B=0, duration_s=1e-5,
                                 signature=signature)

    flops, dram = signature_work(record("conv_fwd", conv)) or (0.0, 0.0)
    macs = 8 * 28 * 28 * 128 * 64
    # x read at a quarter (1x1 stride 2), w and y once, 4 B each.
    assert flops == 2 * macs
    assert dram == (8 * 64 * 56 * 56 / 4 + 128 * 64 + 8 * 128 * 28 * 28) * 4
    backward = LayerSignature(op="aten::convolution_backward",
                              shapes=((8, 128, 28, 28), (8, 64, 56, 56), (128, 64, 1, 1)),
                              attrs={"arg4": "[2, 2]", "arg5": "[0, 0]", "arg6": "[1, 1]",
                                     "arg9": "1"})
    assert signature_work(record("conv_dgrad", backward))[0] == 2 * macs  # type: ignore[index]
    mm = LayerSignature(op="aten::mm", shapes=((128, 1000), (1000, 512)))
    assert signature_work(record("gemm", mm))[0] == 2 * 128 * 1000 * 512  # type: ignore[index]
    assert signature_work(record("elementwise", mm)) is None
    assert signature_work(CalibrationRecord(library_name="k", kind="conv_fwd", grid=(1,),
                                            block=(32,), regs_per_thread=32,
                                            smem_per_block_B=0, duration_s=1e-5)) is None


# ---------------------------------------------------------------------- algorithm choice
#: A 3x3 stride-1 convolution of an RGB image: the rules run Winograd on Pascal, whose
#: transforms cost more than the direct GEMM saves on 3 input channels.
RGB_CONV_CSV = ("W,H,C,N,K,S,R,pad_w,pad_h,stride_w,stride_h,fwd_ms\n"
                "224,224,3,8,64,3,3,1,1,1,1,0.337\n")


def test_fastest_algorithm_is_the_faster_candidate(tmp_path: Path) -> None:
    titan = load_preset("titan-xp")
    model = get_cost_model(DEFAULT_COST_MODEL)
    row, = read_deepbench_csv(_write(tmp_path, "c.csv", RGB_CONV_CSV))
    layer = row_layers(row, dtype="fp32")["fwd"]
    assert conv_algorithm_candidates(layer, titan) == ("winograd_nonfused", "implicit_gemm")
    each = {a: predicted_time_s(lower_layer(layer, titan, conv_algorithm=a), titan, model)[0]
            for a in ("winograd_nonfused", "implicit_gemm")}
    kernels, time_s, _ = lower_priced(layer, titan, model, precision="fp32", layout="nchw",
                                      algorithm_choice="fastest")
    assert time_s == min(each.values()) and each["implicit_gemm"] < each["winograd_nonfused"]
    assert not any("winograd" in k.library_name for k in kernels)
    rules = lower_priced(layer, titan, model, precision="fp32", layout="nchw")
    assert rules[1] == each["winograd_nonfused"]
    priced = price_row(row, titan, model, precision="fp32", layout="nchw",
                       algorithm_choice="fastest")
    assert priced["fwd_ms"] == pytest.approx(time_s * 1e3, rel=1e-12)
    with pytest.raises(GpusimError, match="algorithm choice"):
        lower_priced(layer, titan, model, precision="fp32", layout="nchw",
                     algorithm_choice="best")


def test_validation_prices_deepbench_with_its_fastest_algorithm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # DeepBench's harness keeps cudnnFind's fastest algorithm: validate and op --from
    # --conv-algorithm fastest price a committed row alike; the rules' price is higher.
    report = validate_deepbench(gpus=["titan-xp"])
    measured = {(c.line, c.pass_): c for c in report.comparisons if c.kind == "conv"}
    rgb = measured[(19, "fwd")]  # the sheet's 224 x 224 x 3 -> 64 3x3 convolution, batch 8
    assert dict(rgb.shape)["C"] == 3 and dict(rgb.shape)["W"] == 224
    path = _write(tmp_path, "c.csv", RGB_CONV_CSV)
    out = {}
    for choice in ("rules", "fastest"):
        assert main(["op", "--from", str(path), "--gpu", "titan-xp", "--conv-algorithm",
                     choice, "--json"]) == 0
        out[choice] = json.loads(capsys.readouterr().out)[0]["fwd_ms"]
    assert out["fastest"] == pytest.approx(rgb.predicted_s * 1e3, rel=1e-12)
    assert out["rules"] > out["fastest"]


def test_the_fit_takes_each_deepbench_pass_at_its_fastest_alternative() -> None:
    data = collect(gpus=["titan-xp"])
    alternatives = np.bincount(data.alternative_point, minlength=len(data.points))
    assert set(alternatives) == {1, 2}  # two where the rules' algorithm is not implicit GEMM
    predicted = predict(data, default_table())
    report = validate_deepbench(gpus=["titan-xp"])
    by_key = {(c.line, c.pass_): c.predicted_s for c in report.comparisons}
    timings_ = [t for cal in published_sets(kind="timings", gpus=["titan-xp"])
                for t in cal.timings]
    assert len(timings_) == len(data.points)
    # The fit sums lone kernel times where validate runs the kernels back to back in the
    # engine: the two agree closely, and so does which alternative wins.
    for timing, point, value in zip(timings_, data.points, predicted, strict=True):
        assert point.measured_s == timing.duration_s
        assert value == pytest.approx(by_key[(timing.line, timing.pass_)], rel=0.02)


def test_deepbench_tensor_core_sheets_have_only_implicit_gemm_to_choose() -> None:
    # DeepBench forces the implicit-GEMM algorithms on its tensor-core (T4 FP16) sheets;
    # pricing them with the fastest candidate is the same because there is only one.
    passes = 0
    for calibration in published_sets(kind="timings", gpus=["t4"]):
        gpu = load_preset(calibration.provenance.gpu_preset)
        for timing in calibration.timings:
            if timing.dtype != "fp16" or timing.op == "gemm":
                continue
            layer = row_layers(_row_of(timing), dtype="fp16")[timing.pass_]
            assert conv_algorithm_candidates(layer, gpu, precision="fp16",
                                             layout=timing.layout) == ("implicit_gemm",)
            passes += 1
    assert passes > 250
