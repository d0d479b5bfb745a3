"""Profiler-trace ingester: a hand-written trace, a real CPU-only trace, malformed traces.

``tests/data/tiny_profiler_trace.json`` was written by hand from the Kineto Chrome-trace
format (see sim/measure/ingest.py): one ``ProfilerStep#3``; a forward conv in a
``layer:block1.conv`` range launched from ``aten::conv2d`` (with recorded shapes), a ReLU
in ``layer:block1.relu``, a fill on a second stream outside any layer, an old-style
``"Kernel"`` event linked only by ``External id`` in ``layer:block1.add``, dgrad and wgrad
kernels launched from the autograd thread (linked to the conv by its sequence number), an
NCCL kernel and a memcpy. Its durations are made up for the test, not measurements.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from gpu_models.calibration import LayerSignature, Provenance, load_calibration_file
from gpu_models.errors import GpusimError
from gpu_models.kernel import KernelKind
from sim.cli import main
from sim.measure.ingest import (
    classify_kernel,
    ingest_trace,
    load_trace,
    parse_trace,
    to_calibration,
    trace_provenance,
)

TINY = Path(__file__).parent.parent / "data" / "tiny_profiler_trace.json"


def test_hand_written_trace_kernels() -> None:
    result = parse_trace(TINY)
    by_kind = {k.kind: k for k in result.kernels}
    assert [k.kind for k in result.kernels] == [
        KernelKind.CONV_FWD, KernelKind.ELEMENTWISE, KernelKind.ELEMENTWISE,
        KernelKind.ELEMENTWISE, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD]
    conv = by_kind[KernelKind.CONV_FWD]
    assert (conv.grid, conv.block, conv.regs_per_thread, conv.smem_per_block_B) == (
        (4, 196, 1), (128, 1, 1), 252, 67584)
    assert conv.duration_s == pytest.approx(50e-6)
    assert (conv.layer_name, conv.phase, conv.step, conv.stream) == ("block1.conv", "forward",
                                                                    3, 7)
    assert (conv.op, conv.inner_op) == ("aten::conv2d", "aten::cudnn_convolution")
    assert (conv.dtype, conv.tensor_cores) == ("tf32", True)
    assert conv.signature == LayerSignature(
        op="aten::conv2d", shapes=((8, 64, 56, 56), (64, 64, 3, 3)), dtype="fp32", batch=8,
        attrs={"arg3": "[1, 1]", "arg4": "[1, 1]", "arg5": "[1, 1]", "arg6": "1"})
    relu, fill, add = result.kernels[1:4]
    assert (relu.layer_name, relu.op) == ("block1.relu", "aten::relu_")
    assert (fill.layer_name, fill.stream, fill.step) == ("", 20, 3)
    # The old-style "Kernel" event has no correlation: found through its External id.
    assert (add.layer_name, add.correlation, add.op) == ("block1.add", None, "aten::add_")
    # Backward kernels run outside the layer ranges; the sequence number links them back.
    for k in result.kernels[4:]:
        assert (k.layer_name, k.phase, k.op) == ("block1.conv", "backward",
                                                 "aten::convolution_backward")


def test_hand_written_trace_summary() -> None:
    summary = parse_trace(TINY).summary
    assert summary.gpu_name == "Hand-written test GPU"
    assert summary.device_properties["numSms"] == 108
    assert (summary.n_kernels, summary.n_communication, summary.n_memcpy) == (6, 1, 1)
    assert (summary.n_cpu_ops, summary.n_launches, summary.n_unlinked) == (7, 6, 0)
    assert summary.steps == {3: (6, pytest.approx(174e-6))}
    assert summary.stream_time_s == {7: pytest.approx(172e-6), 20: pytest.approx(2e-6)}
    assert summary.layers == ("block1.add", "block1.conv", "block1.relu")
    assert summary.n_with_layer == 5
    assert summary.to_dict()["steps"]["3"]["kernels"] == 6


def test_layer_prefix_and_precision_options() -> None:
    result = parse_trace(TINY, layer_prefix="block1.", precision="bf16", batch=8)
    # With prefix "block1." no range starts with it except through the "layer:" names: none.
    assert all(k.layer_name == "" for k in result.kernels[:4])
    assert {k.batch for k in result.kernels} == {8}
    relu = result.kernels[1]
    assert relu.dtype == "bf16"  # a bf16 run stores its activations in bf16
    with pytest.raises(GpusimError, match="precision must be one of"):
        parse_trace(TINY, precision="int8")


def test_to_calibration_and_provenance(tmp_path: Path) -> None:
    result = parse_trace(TINY)
    prov = trace_provenance(result, script="test", args=["x"], gpu_preset="a100")
    assert (prov.gpu_name, prov.driver, prov.date, prov.source) == (
        "Hand-written test GPU", "unknown", "2026-01-01", "tiny_profiler_trace.json")
    calib = to_calibration(result, prov)
    assert len(calib.records) == 6
    assert calib.launched(result.kernels[0].signature)[0].library_name.startswith(  # type: ignore[arg-type]
        "sm80_xmma_fprop")
    # The one-call form, as the device campaign uses it (provenance as a dict).
    same = ingest_trace(TINY, provenance=prov.to_dict())
    assert same.records == calib.records


def test_gzip_and_bare_array_forms(tmp_path: Path) -> None:
    data = json.loads(TINY.read_text())
    gz = tmp_path / "trace.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(data).encode()))
    assert len(parse_trace(gz).kernels) == 6
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data["traceEvents"]))
    result = parse_trace(bare)
    assert len(result.kernels) == 6 and result.summary.gpu_name == ""


def _mutated(tmp_path: Path, mutate: Any) -> Path:
    data = json.loads(TINY.read_text())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def _conv_args(data: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in data["traceEvents"] if e.get("cat") == "kernel")["args"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("traceEvents"), "has no 'traceEvents' list"),
    (lambda d: d["traceEvents"].append("oops"), r"event \d+ is not an object"),
    (lambda d: _conv_args(d).pop("grid"), r"kernel event \d+ .*args.grid must be"),
    (lambda d: _conv_args(d).update(block=[0, 1, 1]), r"args.block must be"),
    (lambda d: _conv_args(d).update({"registers per thread": -1}), "registers per thread"),
    (lambda d: _conv_args(d).update({"shared memory": "lots"}), "shared memory"),
    (lambda d: _conv_args(d).update(stream=None), "args.stream must be an integer"),
    (lambda d: d["traceEvents"][2].update(ts="noon"), r"event 2 .*'ts' must be a number"),
    (lambda d: d["traceEvents"][2].update(args=[1]), "'args' must be an object"),
])
def test_malformed_traces(tmp_path: Path, mutate: Any, message: str) -> None:
    with pytest.raises(GpusimError, match=message):
        parse_trace(_mutated(tmp_path, mutate))


def test_unreadable_traces(tmp_path: Path) -> None:
    with pytest.raises(GpusimError, match="does not exist"):
        load_trace(tmp_path / "none.json")
    text = tmp_path / "text.json"
    text.write_text("not a trace")
    with pytest.raises(GpusimError, match=r"trace file .* is not valid JSON: .*line 1"):
        load_trace(text)
    broken_gz = tmp_path / "broken.json.gz"
    broken_gz.write_bytes(gzip.compress(b"{}")[:12])
    with pytest.raises(GpusimError, match=r"trace file .* is a corrupted gzip file"):
        load_trace(broken_gz)
    with pytest.raises(GpusimError, match="has no 'traceEvents' list"):
        parse_trace({"events": []})


def test_zero_duration_kernels_are_counted_not_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _mutated(tmp_path, lambda d: next(
        e for e in d["traceEvents"] if e.get("cat") == "kernel").update(dur=0))
    result = parse_trace(path)
    assert (len(result.kernels), result.summary.n_zero_duration) == (5, 1)
    assert result.summary.to_dict()["n_zero_duration"] == 1
    # The CLI says so, in its text summary and its JSON.
    out = tmp_path / "calib.json"
    assert main(["calibrate", "ingest", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 kernels" in text and "1 zero-duration kernels dropped" in text
    assert main(["calibrate", "ingest", str(path), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["records"], report["summary"]["n_zero_duration"]) == (5, 1)


def test_classify_kernel() -> None:
    assert classify_kernel("cudnn_volta_scudnn_128x64_relu_xregs_large_nn_v1",
                           "aten::cudnn_convolution") is KernelKind.CONV_FWD
    # cuDNN's dgrad through forward-convolution kernels inside the backward op.
    assert classify_kernel("winogradForwardData4x4", "aten::convolution_backward") \
        is KernelKind.CONV_DGRAD
    assert classify_kernel("void wgrad_alg0_engine<float>", "aten::convolution_backward") \
        is KernelKind.CONV_WGRAD
    assert classify_kernel("volta_sgemm_64x64_nn", "aten::cudnn_convolution") \
        is KernelKind.CONV_FWD
    assert classify_kernel("volta_sgemm_64x64_nt", "aten::convolution_backward") \
        is KernelKind.GEMM
    assert classify_kernel("volta_sgemm_128x32_tn", "aten::addmm") is KernelKind.GEMM
    assert classify_kernel("cudnn::bn_fw_tr_1C11_kernel_NCHW", "") is KernelKind.NORMALIZATION
    assert classify_kernel("vectorized_elementwise_kernel<4, add>", "aten::add_",
                           ["Optimizer.step#SGD.step", "aten::add_"]) is KernelKind.OPTIMIZER
    assert classify_kernel("mystery_kernel", "aten::max_pool2d") is KernelKind.POOLING
    assert classify_kernel("mystery_kernel") is KernelKind.ELEMENTWISE


# Kernel names as the RTX 2080 Ti ResNet-18 and A100 ResNet-50 traces in
# shared/reference/traces record them, with the op that encloses each there.
_CONV = "aten::cudnn_convolution"
_BWD = "aten::convolution_backward"


@pytest.mark.parametrize(("name", "op", "kind"), [
    # Offset/index tables for implicit GEMM: elementwise, whatever the enclosing conv pass.
    ("void cask_cudnn::computeOffsetsKernel<false, false>(cask_cudnn::ComputeOffsetsParams)",
     _CONV, KernelKind.ELEMENTWISE),
    ("void cask_cudnn_infer::computeOffsetsKernel<false, false>(cask_cudnn_infer::"
     "ComputeOffsetsParams)", _CONV, KernelKind.ELEMENTWISE),
    ("cask_cudnn::computeWgradBOffsetsKernel(cask_cudnn::ComputeWgradBOffsetsParams)", _BWD,
     KernelKind.ELEMENTWISE),
    ("cask_cudnn::computeWgradSplitKOffsetsKernel(cask_cudnn::ComputeSplitKOffsetsParams)",
     _BWD, KernelKind.ELEMENTWISE),
    ("void cudnn::ops::scalePackedTensor_kernel<float, float>(long, float*, float)", _BWD,
     KernelKind.ELEMENTWISE),
    # Split-K reductions: reduction, not the GEMM / wgrad kind.
    ("void splitKreduce_kernel<32, 16, int, float, float, float, float, true, false, false>"
     "(cublasLt::cublasSplitKParams<float>)", "aten::mm", KernelKind.REDUCTION),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, true, "
     "true, false>(cublasLt::cublasSplitKParams<float>)", "aten::addmm",
     KernelKind.REDUCTION),
    ("void cutlass_cudnn_train::Kernel<cutlass_cudnn_train::reduction::kernel::"
     "ReduceSplitK<cutlass_cudnn_train::MatrixShape<4, 64>>>(Params)", _BWD,
     KernelKind.REDUCTION),
    ("void cudnn::cnn::reduce_wgrad_nchw_helper<float, float>(void*, void const*, float, "
     "int, int)", _BWD, KernelKind.REDUCTION),
    # The pass's main kernels keep their kind ("splitK" in a conv kernel's name is not a
    # reduction; winograd transforms do part of the convolution's math). cuDNN's stridedB
    # split-K kernel computes the weight gradient: the 2080 Ti trace runs it alone (after
    # its computeWgrad*Offsets helpers) for the stem conv, which has no data gradient.
    ("cudnn_turing_scudnn_128x64_stridedB_splitK_xregs_large_nn_v1", _BWD,
     KernelKind.CONV_WGRAD),
    ("cudnn_volta_scudnn_128x64_relu_xregs_large_nn_v1", _CONV, KernelKind.CONV_FWD),
    ("void cudnn::winograd_nonfused::winogradForwardData4x4<float, float>(Params)", _CONV,
     KernelKind.CONV_FWD),
    ("void cudnn::winograd::generateWinogradTilesKernel<0, float, float>(Params)", _BWD,
     KernelKind.CONV_DGRAD),
    ("void cudnn::winograd_nonfused::winogradWgradData4x4<float, float>(Params)", _BWD,
     KernelKind.CONV_WGRAD),
    ("void wgrad_alg0_engine<float, 128, 6, 7, 3, 3, 5, false, 512>(int)", _BWD,
     KernelKind.CONV_WGRAD),
    ("volta_sgemm_64x64_nn", _CONV, KernelKind.CONV_FWD),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>(Op)", "aten::mean",
     KernelKind.REDUCTION),
])
def test_library_helper_kernels_are_classified_by_what_they_do(
        name: str, op: str, kind: KernelKind) -> None:
    assert classify_kernel(name, op) is kind


def test_cli_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calib.json"
    assert main(["calibrate", "ingest", str(TINY), "--out", str(out), "--gpu-name", "a100",
                 "--driver", "550.54", "--library", "torch=2.3.0"]) == 0
    text = capsys.readouterr().out
    assert "6 kernels" in text and "1 communication kernels skipped" in text
    calib = load_calibration_file(out)
    assert len(calib.records) == 6
    prov = calib.provenance
    assert (prov.gpu_preset, prov.driver, prov.cuda, dict(prov.libraries)) == (
        "a100", "550.54", "unknown", {"torch": "2.3.0"})
    assert prov.script == "gpusim calibrate ingest"
    assert prov.args == (str(TINY), "--out", str(out), "--gpu-name", "a100", "--driver",
                         "550.54", "--library", "torch=2.3.0")
    assert main(["calibrate", "ingest", str(TINY), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # The hand-written GPU's name matches no preset: no preset is guessed.
    assert report["records"] == 6 and report["provenance"]["gpu_preset"] == ""
    assert report["summary"]["steps"]["3"]["kernels"] == 6


def test_cli_ingest_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    assert main(["calibrate", "ingest", str(bad), "--out", str(tmp_path / "o.json")]) == 2
    assert "gpusim: error: trace file" in capsys.readouterr().err
    assert main(["calibrate", "ingest", str(TINY), "--out", str(tmp_path / "o.json"),
                 "--library", "torch"]) == 2
    assert "NAME=VERSION" in capsys.readouterr().err


def test_real_cpu_only_trace(tmp_path: Path) -> None:
    """A trace torch.profiler really wrote here (CPU build, so no kernel events)."""
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile, record_function

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("layer:stem.conv"):
            y = conv(x)
        y.sum().backward()
    path = tmp_path / "cpu_trace.json"
    prof.export_chrome_trace(str(path))
    result = parse_trace(path)
    assert result.kernels == ()
    assert result.summary.n_kernels == 0
    assert result.summary.n_cpu_ops > 0
    assert result.summary.layers == ("stem.conv",)
    prov = Provenance(gpu_name="cpu", driver="none", cuda="none",
                      libraries={"torch": torch.__version__}, date="2026-11-26",
                      script="test", args=())
    calib = to_calibration(result, prov)
    assert calib.records == ()
    assert copy.deepcopy(calib.to_dict())["records"] == []


def test_conv_passes_and_op_instances() -> None:
    result = parse_trace(TINY)
    fwd, dgrad, wgrad = (next(k for k in result.kernels if k.kind is kind) for kind in (
        KernelKind.CONV_FWD, KernelKind.CONV_DGRAD, KernelKind.CONV_WGRAD))
    assert (fwd.conv_pass, dgrad.conv_pass, wgrad.conv_pass) == ("fwd", "dgrad", "wgrad")
    # The two backward kernels come from one aten::convolution_backward call.
    assert dgrad.op_seq == wgrad.op_seq is not None and fwd.op_seq != dgrad.op_seq
    relu = next(k for k in result.kernels if k.op == "aten::relu_")
    assert relu.conv_pass == ""


def _trace(ops: list[tuple[str, float, float, list[tuple[str, float]]]],
           ranges: list[tuple[str, float, float]] = ()) -> dict[str, Any]:
    """A Kineto trace: CPU ops (name, ts, dur, [(kernel name, launch ts)]) on one thread,
    user ranges, one launch and one 1 us kernel per listed kernel."""
    events: list[dict[str, Any]] = []
    correlation = 0
    for name, ts, dur, kernels in ops:
        events.append({"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1,
                       "ts": ts, "dur": dur, "args": {}})
        for kernel, launch_ts in kernels:
            correlation += 1
            events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel",
                           "pid": 1, "tid": 1, "ts": launch_ts, "dur": 0.1,
                           "args": {"correlation": correlation}})
            events.append({"ph": "X", "cat": "kernel", "name": kernel, "pid": 0, "tid": 7,
                           "ts": 1000 + launch_ts, "dur": 1.0,
                           "args": {"stream": 7, "correlation": correlation,
                                    "grid": [1, 1, 1], "block": [128, 1, 1],
                                    "registers per thread": 32, "shared memory": 0}})
    for name, ts, dur in ranges:
        events.append({"ph": "X", "cat": "user_annotation", "name": name, "pid": 1,
                       "tid": 1, "ts": ts, "dur": dur, "args": {}})
    return {"traceEvents": events}


def test_a_1x1_backward_splits_at_its_second_gemm_and_step_markers() -> None:
    backward = "aten::convolution_backward"
    trace = _trace([
        ("aten::conv2d", 0, 10, [("cutlass_80_tensorop_s1688gemm_256x64_16x4_nn", 1)]),
        (backward, 20, 10, [("cutlass_80_tensorop_s1688gemm_256x64_16x4_nt", 21),
                            ("cutlass_80_tensorop_s1688gemm_64x64_16x6_tn", 22),
                            ("void cudnn::cnn::reduce_wgrad_nchw_helper<float, float>", 23)]),
        ("aten::conv2d", 100, 10, [("cudnn_volta_scudnn_128x64_relu_xregs_large_nn_v1", 101)]),
    ], ranges=[("Optimizer.zero_grad#SGD.zero_grad", 0, 1),
               ("Optimizer.zero_grad#SGD.zero_grad", 90, 1)])
    result = parse_trace(trace, step_marker="Optimizer.zero_grad")
    kinds = [(k.kind, k.conv_pass, k.step) for k in result.kernels]
    assert kinds == [
        (KernelKind.CONV_FWD, "fwd", 0),
        # data gradient first: the first GEMM; the second GEMM starts the weight gradient
        (KernelKind.CONV_DGRAD, "dgrad", 0), (KernelKind.CONV_WGRAD, "wgrad", 0),
        (KernelKind.REDUCTION, "wgrad", 0),
        (KernelKind.CONV_FWD, "fwd", 1)]
    with pytest.raises(GpusimError, match="no range whose name starts with"):
        parse_trace(trace, step_marker="ProfilerStep#")
