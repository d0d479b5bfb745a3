"""Device campaign 2 harness, on the CPU: the torch network built from a layer graph, the
stream assignment, and the campaign driver's flow (no GPU here: no kernels, streams or graphs).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import workloads
from gpu_models.errors import GpusimError
from sim.measure.netbench.torch_graph import assign_streams, build_net, forward_nodes

torch = pytest.importorskip("torch")


#: Small inputs keep the CPU forward passes cheap; shapes and parameters do not depend on it
#: (inception_v3 needs at least 75 pixels, the others 32).
SMALL_RESOLUTION = {"inception_v3": 80}


@pytest.mark.parametrize("name", workloads.workload_names())
def test_torch_net_matches_the_layer_graph(name: str) -> None:
    graph = workloads.build(name, batch=1, resolution=SMALL_RESOLUTION.get(name, 64))
    net = build_net(graph).eval()
    # Parameters of the real torch modules equal the graph's count (inception_v3's
    # inference graph leaves out the aux head, which the graph records separately).
    own = sum(p.numel() for p in net.parameters())
    assert own == graph.graph["params"] - graph.graph.get("params_not_in_graph", 0)
    res = graph.graph["resolution"]
    with torch.no_grad():
        out = net(torch.randn(1, 3, res, res))
    expected = graph.nodes[graph.graph["outputs"][0]]["layer"].output
    assert tuple(out.shape) == tuple(expected)


def test_training_graph_forward_includes_the_aux_head() -> None:
    # The aux head needs the full 299-pixel input; eval mode and no_grad keep it cheap.
    graph = workloads.build("inception_v3", batch=1, phase="training")
    net = build_net(graph).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 299, 299))
    assert isinstance(outs, tuple) and len(outs) == 2
    assert sum(p.numel() for p in net.parameters()) == 27_161_264


def test_branches_put_each_inception_branch_on_its_own_stream() -> None:
    graph = workloads.build("googlenet")
    streams = assign_streams(graph, "branches")
    module = [n for n in forward_nodes(graph) if graph.nodes[n]["layer"].module == "inception3a"]
    by_branch: dict[str, set[int]] = {}
    for node in module:
        branch = graph.nodes[node]["layer"].branch
        if branch is not None:
            by_branch.setdefault(branch, set()).add(streams[node])
    assert len(by_branch) == 4
    assert all(len(s) == 1 for s in by_branch.values())  # a branch stays on one stream
    assert len({next(iter(s)) for s in by_branch.values()}) == 4  # branches differ
    assert streams["conv1.conv"] == 0


def test_serial_and_bad_modes() -> None:
    graph = workloads.build("resnet18")
    assert set(assign_streams(graph, "serial").values()) == {0}
    with pytest.raises(GpusimError, match="stream mode"):
        assign_streams(graph, "bogus")


def test_campaign_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    from sim.measure.netbench.campaign import run

    code = run(["--out", str(tmp_path), "--device", "cpu", "--quick", "--networks",
                "squeezenet1_1", "--reps", "1", "--warmup", "0", "--max-batch", "2",
                "--resolution", "64"])
    assert code == 0
    runs = json.loads((tmp_path / "netbench_runs.json").read_text())
    assert runs["provenance"]["gpu_name"] == "cpu"
    tags = {(r["config"]["phase"], r["config"]["batch"]) for r in runs["runs"]}
    assert tags == {("inference", 1), ("inference", 2), ("training", 2)}
    for r in runs["runs"]:
        assert r["times_s"]["serial_eager"] > 0 and r["times_s"]["branches_eager"] > 0
    with tarfile.open(tmp_path / "calibration.tar.gz") as tar:
        names = tar.getnames()
        assert len(names) == 3
        calib = json.load(tar.extractfile(names[0]))  # type: ignore[arg-type]
    assert calib["records"] == []  # no kernels on the CPU, and none invented
    assert "ran squeezenet1_1-inference-b1-tf32" in (tmp_path / "log.txt").read_text()


def _synthetic_campaign(folder: Path, preset: str) -> None:
    """A campaign output folder written by the test (made-up numbers, never committed)."""
    prov = {"gpu_name": "NVIDIA H100 80GB HBM3", "gpu_preset": preset, "driver": "test",
            "cuda": "test", "libraries": {}, "date": "2026-11-26", "script": "test",
            "args": []}
    runs = {"format": "gpusim-netbench", "version": 1, "provenance": prov, "runs": [
        {"config": {"network": "googlenet", "phase": "inference", "batch": 1,
                    "precision": "tf32"}, "times_s": {"serial_eager": 2e-3}}]}
    folder.mkdir()
    (folder / "netbench_runs.json").write_text(json.dumps(runs))
    record = {"library_name": "test_kernel", "kind": "conv_fwd", "grid": [4, 1, 1],
              "block": [128, 1, 1], "regs_per_thread": 64, "smem_per_block_B": 0,
              "duration_s": 1e-5, "layer_name": "conv1.conv"}
    calib = json.dumps({"format": "gpusim-calibration", "version": 1, "provenance": prov,
                        "records": [record]}).encode()
    import io

    with tarfile.open(folder / "calibration.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("h100-googlenet-inference-b1-tf32.json")
        info.size = len(calib)
        tar.addfile(info, io.BytesIO(calib))


def test_import_campaign_lays_out_the_data(tmp_path: Path) -> None:
    from gpu_models.calibration import load_calibration_file
    from sim.measure.netbench.store import import_campaign, load_runs

    _synthetic_campaign(tmp_path / "out", "h100")
    written = import_campaign(tmp_path / "out", calibration_root=tmp_path / "cal",
                              netbench_root=tmp_path / "nb")
    assert sorted(p.name for p in written) == ["h100-googlenet-inference-b1-tf32.json",
                                                "h100.json"]
    calib = load_calibration_file(tmp_path / "cal" / "h100-googlenet-inference-b1-tf32.json")
    assert calib.records[0].layer_name == "conv1.conv"
    assert load_runs(tmp_path / "nb" / "h100.json")["runs"][0]["times_s"]["serial_eager"] == 2e-3


def test_import_campaign_rejects_unknown_gpus_and_bad_files(tmp_path: Path) -> None:
    from sim.measure.netbench.store import import_campaign, load_runs

    _synthetic_campaign(tmp_path / "out", "")
    with pytest.raises(GpusimError, match="matches no gpusim preset"):
        import_campaign(tmp_path / "out", calibration_root=tmp_path / "c",
                        netbench_root=tmp_path / "n")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "gpusim-netbench", "provenance": {
        "gpu_name": "x", "date": "d"}, "runs": [{"config": {"network": "a", "phase": "b",
                                                           "batch": 1, "precision": "tf32"},
                                                "times_s": {"serial_eager": -1}}]}))
    with pytest.raises(GpusimError, match="must be > 0"):
        load_runs(bad)


def test_plan_subsets_and_estimates() -> None:
    from sim.measure.netbench.campaign import EST_CONFIG_S, EST_START_S, estimate_s, plan

    configs = plan(False, ["googlenet", "inception_v3"], ["tf32"], phases=["inference"],
                   batches=[1, 32])
    assert [c.tag for c in configs] == [
        "googlenet-inference-b1-tf32", "inception_v3-inference-b1-tf32",
        "googlenet-inference-b32-tf32", "inception_v3-inference-b32-tf32"]
    # A batch cap can make two shapes one: no configuration is measured twice.
    assert len(plan(True, ["googlenet"], ["tf32"], max_batch=1, phases=["inference"])) == 1
    assert estimate_s(configs) == EST_START_S + 4 * EST_CONFIG_S["inference"]


def test_each_configuration_is_saved_as_it_finishes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A run cut off after its first configuration keeps that configuration's files."""
    from sim.measure.netbench import campaign

    calls = []

    def measure(cfg: campaign.RunConfig, device: str, reps: int, warmup: int) -> dict:
        calls.append(cfg.tag)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the device tool's timeout, say
        return {"config": {"network": cfg.network, "phase": cfg.phase, "batch": cfg.batch,
                           "precision": cfg.precision}, "times_s": {"serial_eager": 1e-3}}

    monkeypatch.setattr(campaign, "measure", measure)
    monkeypatch.setattr(campaign, "profile_kernels",
                        lambda cfg, device, prov: {"format": "gpusim-calibration",
                                                   "records": []})
    with pytest.raises(KeyboardInterrupt):
        campaign.run(["--out", str(tmp_path), "--device", "cpu", "--networks", "googlenet",
                      "--phases", "inference", "--no-gemm"])
    runs = json.loads((tmp_path / "netbench_runs.json").read_text())["runs"]
    assert [r["config"]["batch"] for r in runs] == [1]
    with tarfile.open(tmp_path / "calibration.tar.gz") as tar:
        assert tar.getnames() == ["gpu-googlenet-inference-b1-tf32.json"]
    assert not (tmp_path / "gemm.json").exists()
    assert "ran googlenet-inference-b1-tf32" in (tmp_path / "log.txt").read_text()
