"""The orchestrator: a Study memoises features, analyses, accuracies and benchmarks; the charts of its numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_backbone

from slsviz.app import charts
from slsviz.data import load_digits
from slsviz.layers.analysis import AnalysisSettings
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model, read_task_meta
from slsviz.study import LoadedTask, Selection, Study
from slsviz.study.training import train_new_task


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))


@pytest.fixture()
def study():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=4, seed=0)
    data = load_digits()
    model = build_task_model(backbone, PetlConfig("convpass"), data.num_classes)
    return Study(LoadedTask(backbone, model, None, data), limit=48)


def test_each_thing_is_computed_once(study, monkeypatch):
    bank = study.features.bank("train")
    assert bank.features.shape == (4, 48, 192)
    settings = AnalysisSettings(projection="pca")
    analysis = study.layers.analysis(settings)
    assert study.layers.analysis(settings) is analysis
    assert study.layers.analysis(AnalysisSettings(projection="pca", alpha=0.5)) is not analysis
    ticks = []
    every = study.timing.benchmarks(time_budget_s=0.05, progress=lambda done, total: ticks.append(total))
    assert sorted(every) == [1, 2, 3, 4] and [every[d].depth for d in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert ticks and set(ticks) == {4 * 10}  # every depth, every round
    monkeypatch.setattr("slsviz.study.timing.benchmark_models", lambda *a, **k: pytest.fail("benchmarked twice"))
    assert study.timing.benchmarks(time_budget_s=0.05)[2] is every[2]
    study.features.bank("test")
    monkeypatch.setattr("slsviz.study.features.feature_bank", lambda *a, **k: pytest.fail("features twice"))
    assert study.features.bank("train") is bank
    table = study.depths.table()
    assert study.depths.table() is table and len(table) == 4


def test_map_coordinates_are_every_blocks_map(study):
    settings = AnalysisSettings(projection="pca")
    coords = study.layers.map_coordinates(settings)
    maps = study.layers.analysis(settings).maps()
    assert list(coords.columns) == ["layer", "index", "label", "x", "y"] and len(coords) == 4 * 96
    block3 = coords[coords["layer"] == 3]
    np.testing.assert_array_equal(block3[["x", "y"]].to_numpy(), maps[3])
    assert block3["index"].tolist() == study.features.scored_indices().tolist()


def test_training_names_the_checkpoint_by_content_and_never_overwrites(study):
    first, meta = train_new_task(study.loaded, "linear", 1, limit=20)
    kept = first.read_bytes()
    again, _ = train_new_task(study.loaded, "linear", 1, limit=20)  # seeded: the same weights, so the same file
    other, _ = train_new_task(study.loaded, "linear", 2, limit=20)
    assert again == first and other != first and first.read_bytes() == kept
    assert read_task_meta(other).recipe["epochs"] == 2 and meta.petl["method"] == "linear"
    assert sorted(p.name for p in first.parent.iterdir()) == sorted({first.name, other.name})  # no temp files left


def test_model_card_and_storage(study):
    card = study.model_card()
    assert card["depth"] == 4 and card["method"] == "none" and card["num_classes"] == 10
    assert 0 < card["trainable_params"] < card["params"]
    assert {r["storage"] for r in study.timing.storage(2)} == {"full PETL", "SLS", "structurally pruned"}


def test_study_never_mutates_its_model(study):
    before = {k: v.clone() for k, v in study.loaded.model.state_dict().items()}
    timed = study.timing.benchmarks(time_budget_s=0.05)
    assert timed[1].flops_per_image < timed[4].flops_per_image and timed[1].params < timed[4].params
    after = study.loaded.model.state_dict()
    assert len(study.loaded.model.blocks) == 4 and all(torch.equal(v, after[k]) for k, v in before.items())


def test_selection_is_hashable_and_recorded():
    assert hash(Selection()) == hash(Selection())
    assert Selection(limit=10).to_dict()["limit"] == 10


def test_charts_have_one_panel_per_layer_and_mark_the_depth(study):
    analysis = study.layers.analysis(AnalysisSettings(projection="pca"))
    maps = analysis.maps()
    names = study.loaded.data.class_names
    grid = charts.layer_grid(maps, analysis.labels, names, recommended=2)
    assert "block 2 (SLS depth)" in [a.text for a in grid.layout.annotations]
    assert len({t.xaxis for t in grid.data}) == 4
    table = analysis.table()
    curves = charts.score_curves(table, metric="silhouette", threshold=0.1, depth=2)
    assert any(getattr(s, "y0", None) == 0.1 for s in curves.layout.shapes)
    one = charts.layer_map(maps[3], analysis.labels, names, study.features.scored_indices(), 3)
    assert "index" in one.data[0].hovertemplate
    # the Layers page reads a picked point's dataset index from customdata[0] to show its image
    shown = sorted(int(i) for trace in one.data for i in np.asarray(trace.customdata)[:, 0])
    assert shown == sorted(study.features.scored_indices().tolist())
    frame = study.depths.table().assign(images_per_s=np.arange(1, 5) * 10.0)
    chart = charts.accuracy_vs_throughput(frame, chosen=3)
    assert chart.data[-1].name == "depth 3" and list(chart.data[-1].x) == [30.0]
