"""The CLI commands that go through the orchestrator (analyze, benchmark, prune, export) end to end on a tiny task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import random_backbone, recommend_depth
from safetensors.torch import save_file

from slsviz.cli import main
from slsviz.data import load_digits
from slsviz.layers.analysis import AnalysisSettings
from slsviz.models.backbones import load_backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import fit_task, read_task_meta, save_task
from slsviz.models.train import Recipe
from slsviz.study import Selection, Study

TINY = "vit_tiny_patch16_224"
REPORT_KEYS = {"backbone", "backbone_arch", "method", "dataset", "img_size", "batch_size", "num_images", "num_layers",
               "alpha", "metric", "projection", "space", "threshold", "recommended_depth", "accuracy_full", "timings",
               "layers"}
LAYER_KEYS = {"layer", "silhouette", "calinski_harabasz", "davies_bouldin", "probe_accuracy", "accuracy_as_is",
              "accuracy_head_refit"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """A tiny 12-block backbone (32 px) saved as a local checkpoint, and a Convpass task on digits."""
    folder = tmp_path_factory.mktemp("tiny")
    ckpt = folder / "tiny.safetensors"
    save_file(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), str(ckpt))
    backbone = load_backbone(TINY, ckpt, img_size=32)
    model, meta, _ = fit_task(backbone, load_digits(), PetlConfig("convpass"), Recipe(epochs=1, batch_size=32), limit=64)
    task = save_task(folder / "task.safetensors", model, meta)
    return ["--model", TINY, "--checkpoint", str(ckpt), "--img-size", "32", "--task", str(task)]


def test_analyze_writes_report_scores_and_features(tiny_task, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["analyze", *tiny_task, "--limit", "60", "--projection", "pca", "--out", str(out), "--save-features",
            "--workers", "2"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["num_layers"] == 12 and len(report["layers"]) == 12 and report["num_images"] == 120
    assert all(LAYER_KEYS <= set(layer) for layer in report["layers"])
    assert [layer["layer"] for layer in report["layers"]] == list(range(1, 13))
    assert report["method"] == "convpass" and report["dataset"] == "digits" and report["projection"] == "pca"
    assert report["map_workers"] == 2
    scores = pd.read_csv(out / "scores.csv")
    assert report["recommended_depth"] == recommend_depth(scores["silhouette"].to_numpy(), report["alpha"])
    assert report["threshold"] == pytest.approx(0.3 * scores["silhouette"].iloc[-1])
    assert report["accuracy_full"] == report["layers"][-1]["accuracy_as_is"]
    assert summary["recommended_depth"] == report["recommended_depth"]
    with np.load(out / "features.npz") as f:
        assert f["features"].shape == (12, 120, 192) and f["features"].dtype == np.float32
        assert f["labels"].shape == (120,)
        saved_features, saved_labels = f["features"], f["labels"]
    # exactly the features that were scored: the PCA map of the saved last layer gives its silhouette
    from slsviz.layers.projection import project
    from slsviz.layers.scores import cluster_scores

    again = cluster_scores(project(saved_features[11], "pca"), saved_labels)["silhouette"]
    assert again == pytest.approx(report["layers"][11]["silhouette"], abs=1e-6)


def test_analyze_reuses_cached_features(tiny_task, tmp_path, monkeypatch, capsys):
    args = ["analyze", *tiny_task, "--limit", "40", "--projection", "pca", "--out", str(tmp_path / "a")]
    assert main(args) == 0
    monkeypatch.setattr("slsviz.layers.features.extract_features", lambda *a, **k: pytest.fail("features computed twice"))
    assert main([*args[:-1], str(tmp_path / "b"), "--metric", "davies_bouldin"]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["metric"] == "davies_bouldin"
    assert report["threshold"] == pytest.approx(report["layers"][-1]["davies_bouldin"] / 0.3)


def test_benchmark_and_prune_commands(tiny_task, tmp_path, capsys):
    assert main(["benchmark", *tiny_task, "--depth", "2", "--batch-sizes", "1", "4", "--seconds", "0.1"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert [b["batch_size"] for b in bench["benchmarks"]] == [1, 4]
    first = bench["benchmarks"][0]
    assert first["pruned"]["depth"] == 2 and first["full"]["depth"] == 12
    assert bench["precisions_offered"][0] == "fp32" and first["precision"] == first["full"]["precision"] == "fp32"
    assert first["ideal_speedup"] > 1 and first["measured_speedup"] > 0 and first["efficiency_se"] > 0
    assert first["full"]["steps"] >= 10 and first["pruned"]["steps"] >= 10  # both timed in each of 10 rounds
    assert {r["storage"] for r in bench["storage_per_task"]} == {"full PETL", "SLS", "structurally pruned"}

    out = tmp_path / "pruned.safetensors"
    assert main(["prune", *tiny_task, "--depth", "2", "--limit", "50", "--out", str(out)]) == 0
    pruned = json.loads(capsys.readouterr().out)
    meta = read_task_meta(out)
    assert meta.depth == 2 and meta.test_accuracy == pruned["test_accuracy"]


def test_bad_depth_is_one_line_exit_2(tiny_task, capsys):
    assert main(["benchmark", *tiny_task, "--depth", "13"]) == 2
    err = capsys.readouterr().err.strip()
    assert "out of range" in err and "\n" not in err


def test_bf16_timing_where_the_device_lacks_it_is_one_line(tiny_task, capsys, monkeypatch):
    import slsviz.device

    monkeypatch.setattr(slsviz.device, "timing_precisions", lambda device: ("fp32",))
    assert main(["benchmark", *tiny_task, "--depth", "2", "--precisions", "fp32", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bf16 timing is not offered on" in err and "--precisions fp32" in err and "\n" not in err


@pytest.mark.parametrize("args, message", [(["benchmark", "--depth", "2", "--rounds", "0"], "--rounds"),
                                           (["analyze", "--workers", "0"], "--workers")])
def test_bad_counts_are_one_line_exit_2(tiny_task, capsys, args, message):
    assert main([args[0], *tiny_task, *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_bare_backbone_has_no_as_is_accuracy(tiny_task, tmp_path, capsys):
    args = [*tiny_task[:6], "--task", "none", "--data", "digits", "--limit", "40", "--projection", "pca"]
    assert main(["analyze", *args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "none" and report["accuracy_full"] is None
    assert report["layers"][-1]["accuracy_head_refit"] is not None


def _selection(args: list[str], limit: int) -> Selection:
    flags = dict(zip(args[::2], args[1::2]))
    return Selection(model=flags["--model"], checkpoint=flags["--checkpoint"], img_size=int(flags["--img-size"]),
                     task=flags["--task"], device="cpu", limit=limit)


def test_cli_report_and_the_apps_study_give_the_same_numbers(tiny_task, tmp_path, capsys):
    """The CLI writes report.json from a Study; the app's pages read a Study of the same selection."""
    assert main(["analyze", *tiny_task, "--limit", "40", "--projection", "pca", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    study = Study.open(_selection(tiny_task, 40))  # what ui.study(selection) opens for a page
    settings = AnalysisSettings(projection="pca")
    rule, scores, accuracy = study.layers.recommend(settings), study.layers.analysis(settings).table(), study.depths.table()
    assert report["recommended_depth"] == rule.depth_ and report["threshold"] == rule.threshold_
    for row, layer in zip(scores.itertuples(), report["layers"]):
        assert (layer["silhouette"], layer["calinski_harabasz"], layer["davies_bouldin"], layer["probe_accuracy"]) == \
            (row.silhouette, row.calinski_harabasz, row.davies_bouldin, row.probe_accuracy)
    assert [layer["accuracy_as_is"] for layer in report["layers"]] == accuracy["accuracy_as_is"].tolist()
    assert [layer["accuracy_head_refit"] for layer in report["layers"]] == accuracy["accuracy_head_refit"].tolist()


def test_export_writes_a_configuration_and_checkpoint_that_restore_the_model(tiny_task, tmp_path, capsys):
    args = ["export", *tiny_task, "--limit", "30", "--projection", "pca", "--device", "cpu", "--seconds", "0.02",
            "--out", str(tmp_path)]
    assert main([*args, "--depth", "3", "--format", "yaml"]) == 0
    out = json.loads(capsys.readouterr().out)
    config_path, task_path = (Path(p) for p in out["written"])
    assert out["depth"] == 3 and config_path.name == "slsviz-config.yaml" and task_path.name == "task-depth3.safetensors"
    assert read_task_meta(task_path).depth == 3
    study = Study.open(_selection(tiny_task, 30))
    config, same = study.exports.check_import(config_path.read_bytes(), task_path.read_bytes())
    assert config["depth"] == 3 and config["results"]["recommended_depth"] == out["recommended_depth"] and same
    assert main(args) == 0  # no --depth: the SLS recommendation
    assert json.loads(capsys.readouterr().out)["depth"] == out["recommended_depth"]


CRITERIA = ["sls", "sls_umap", "sls_raw", "sls_calinski_harabasz", "sls_davies_bouldin", "sls_probe", "knn_accuracy",
            "block_influence", "angular_distance", "cka_to_last", "reverse_order", "taylor", "val_loss", "oracle"]


def test_compare_writes_every_criterion_its_pick_and_what_the_pick_gives(tiny_task, tmp_path, capsys):
    from slsviz.layers.criteria import block_influence, cka_matrix, criterion_depth, knn_accuracy
    from slsviz.pruning.accuracy import oracle_depth

    out = tmp_path / "out"
    assert main(["compare", *tiny_task, "--limit", "60", "--seconds", "0.02", "--out", str(out), "--save-features",
                 "--depgraph", "6", "--depgraph-retrain", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    result = json.loads((out / "compare.json").read_text())
    rows = {row["name"]: row for row in result["criteria"]}
    assert list(rows) == CRITERIA and summary["depths"] == {name: rows[name]["depth"] for name in CRITERIA}
    oracle = rows["oracle"]["depth"]
    for row in rows.values():
        assert len(row["scores"]) == 12 and 1 <= row["depth"] <= 12 and row["oracle_distance"] == row["depth"] - oracle
        assert 0 <= row["accuracy_head_refit"] <= 1 and row["images_per_s"] > 0 and row["flops"] > 0
    assert rows["sls"]["depth"] == recommend_depth(np.array(rows["sls"]["scores"]), 0.3)  # the paper's rule, re-implemented
    assert oracle == oracle_depth(np.array(rows["oracle"]["scores"]), 0.01)
    by_depth = {row["depth"]: row["flops"] for row in rows.values()}
    assert [by_depth[d] for d in sorted(by_depth)] == sorted(set(by_depth.values()))  # the cut model's: fewer blocks, fewer FLOPs
    # every other criterion is a function of the features written beside it
    with np.load(out / "features.npz") as f:
        features, labels = f["features"], f["labels"]
    assert features.shape == (12, 120, 192)
    assert np.allclose(rows["block_influence"]["scores"][1:], block_influence(features)[1:], atol=1e-5)
    assert rows["block_influence"]["scores"][0] is None  # block 1 needs the embedding output, not kept
    assert np.allclose(result["cka"], cka_matrix(features), atol=1e-5)
    assert np.allclose(rows["cka_to_last"]["scores"], cka_matrix(features)[:, -1], atol=1e-5)
    assert np.allclose(rows["knn_accuracy"]["scores"], knn_accuracy(features, labels))
    assert rows["reverse_order"]["depth"] == 9 and rows["sls_probe"]["scale"].startswith("accuracy with a chance level")
    assert rows["val_loss"]["depth"] == criterion_depth("val_loss", np.array(rows["val_loss"]["scores"]), 0.05)[0]
    assert rows["taylor"]["depth"] == criterion_depth("taylor", np.array(rows["taylor"]["scores"]), 0.5)[0]
    assert min(rows["taylor"]["scores"]) > 0  # every block (frozen weights and adapter) moves the task's loss
    # the paper's baseline at a depth: the FLOPs of that depth, within 5%
    depgraph = result["depgraph"]
    from slsviz.models.depth import prune_to_depth
    from slsviz.pruning.bench import count_flops

    model = Study.open(Selection(model=TINY, checkpoint=tiny_task[3], task=tiny_task[7], img_size=32)).loaded.model
    assert depgraph["depth"] == 6 and depgraph["target_flops"] == count_flops(prune_to_depth(model, 6), 32)
    assert abs(depgraph["flops"] - depgraph["target_flops"]) <= 0.05 * depgraph["target_flops"]
    assert 0 <= depgraph["accuracy_head_refit"] <= 1 and depgraph["images_per_s"] > 0 and depgraph["bytes_per_task"] > 0
    assert len(depgraph["depth_images_per_s_same_rounds"]) == 12  # every depth timed in the same rounds
    assert depgraph["sls_images_per_s_same_rounds"] == depgraph["depth_images_per_s_same_rounds"][5]
    assert depgraph["retrain_epochs"] == 1 and 0 <= depgraph["accuracy_retrained"] <= 1  # its adapters trained further
    table = pd.read_csv(out / "compare.csv")
    assert list(table["name"]) == CRITERIA and {"depth", "accuracy_as_is", "images_per_s", "flops"} <= set(table)


def test_pick_reads_a_budget_and_says_when_none_fits(tiny_task, capsys):
    common = ["pick", *tiny_task, "--limit", "40", "--seconds", "0.02"]
    assert main([*common, "--within", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 1 <= out["depth"] <= 12 and out["rule"].startswith("the fastest depth within 100 points")
    assert out["kind"] == "accuracy_head_refit" and 0 <= out["accuracy"] <= 1 and out["images_per_s"] > 0
    assert main([*common, "--min-images-per-s", "1e9"]) != 0
    assert "No depth reaches 1e+09 images/s here" in capsys.readouterr().err
    assert main([*common, "--within", "1", "--min-images-per-s", "10"]) == 2  # one budget, not both
    assert "not allowed with argument --within" in capsys.readouterr().err
