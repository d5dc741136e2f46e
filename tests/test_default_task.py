"""The shipped default task: DINOv2 ViT-S/14 + Convpass trained on mnist5k train800."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slsviz import defaults
from slsviz.data import Preprocess, load_dataset, make_loader
from slsviz.models.task import read_task_meta
from slsviz.models.train import evaluate
from slsviz.study import Selection, open_selection

README = Path(__file__).resolve().parents[1] / "README.md"
LOG = Path(__file__).resolve().parents[1] / "assets" / "default_task.json"
pytestmark = pytest.mark.integration


def test_shipped_checkpoint_is_small_and_complete():
    assert defaults.TASK_PATH.stat().st_size < 2 * 1024 * 1024
    meta = read_task_meta(defaults.TASK_PATH)
    assert meta.backbone_id == "default" and meta.petl["method"] == "convpass"
    assert meta.dataset == "mnist5k" and meta.num_classes == 10 and meta.depth is None
    assert meta.recipe["split"] == "train" and meta.recipe["limit"] is None


def test_full_depth_test_accuracy_matches_checkpoint_and_training_log():
    loaded = open_selection(Selection(device="cpu"))
    backbone, model, meta = loaded.backbone, loaded.model, loaded.meta
    data = load_dataset(meta.dataset, seed=meta.split_seed)
    loader = make_loader(data, "test", Preprocess(meta.img_size, meta.mean, meta.std), batch_size=64)  # quicker than 256 here
    accuracy = evaluate(model, loader)
    assert accuracy == pytest.approx(meta.test_accuracy, abs=1e-3)  # at most 4 of 4,000 images differ

    # The one place the figure is stated is the log `make default-task` wrote with the checkpoint;
    # the README points there rather than repeating the number.
    log = json.loads(LOG.read_text(encoding="utf-8"))
    assert (log["test_accuracy"], log["val_accuracy"]) == (meta.test_accuracy, meta.val_accuracy)
    assert log["backbone_checksum"] == backbone.checksum and log["checkpoint"] == "assets/default_task.safetensors"
    assert "assets/default_task.json" in README.read_text(encoding="utf-8")


def test_cli_analyze_on_the_default_model_with_a_small_subset(tmp_path, capsys):
    import json

    from slsviz.cli import main

    out = tmp_path / "out"
    assert main(["analyze", "--limit", "40", "--projection", "pca", "--out", str(out), "--save-features"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["backbone"] == "default" and report["backbone_arch"] == "vit_small_patch14_dinov2"
    assert report["method"] == "convpass" and report["dataset"] == "mnist5k" and report["img_size"] == 112
    assert report["num_layers"] == 12 and report["num_images"] == 80 and len(report["layers"]) == 12
    assert 1 <= report["recommended_depth"] <= 12
    assert report["accuracy_full"] > 0.8  # 40 test images, the shipped task
    assert "SLS recommends keeping" in capsys.readouterr().err
    import numpy as np

    with np.load(out / "features.npz") as f:
        assert f["features"].shape == (12, 80, 384)
