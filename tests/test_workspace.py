"""The app's engine: a Workspace memoises features, analyses, accuracies and benchmarks; charts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slsviz.app import charts
from slsviz.app.workspace import Selection, Workspace
from slsviz.data import load_digits
from slsviz.layers.analysis import AnalysisSettings
from slsviz.models.backbones import random_backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.pipeline import LoadedTask


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))


@pytest.fixture()
def ws():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=4, seed=0)
    data = load_digits()
    model = build_task_model(backbone, PetlConfig("convpass"), data.num_classes)
    return Workspace(LoadedTask(backbone, model, None, data), limit=48)


def test_each_thing_is_computed_once(ws, monkeypatch):
    bank = ws.bank("train")
    assert bank.features.shape == (4, 48, 192)
    settings = AnalysisSettings(projection="pca")
    analysis = ws.analysis(settings)
    assert ws.analysis(settings) is analysis
    assert ws.analysis(AnalysisSettings(projection="pca", alpha=0.5)) is not analysis
    ticks = []
    every = ws.benchmarks(time_budget_s=0.05, progress=lambda done, total: ticks.append(total))
    assert sorted(every) == [1, 2, 3, 4] and [every[d].depth for d in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert ticks and set(ticks) == {4 * 10}  # every depth, every round
    monkeypatch.setattr("slsviz.app.workspace.benchmark_models", lambda *a, **k: pytest.fail("benchmarked twice"))
    assert ws.benchmark(2) is every[2]
    ws.bank("test")
    monkeypatch.setattr("slsviz.app.workspace.feature_bank", lambda *a, **k: pytest.fail("features twice"))
    assert ws.bank("train") is bank
    table = ws.depth_table()
    assert ws.depth_table() is table and len(table) == 4


def test_model_card_and_storage(ws):
    card = ws.model_card()
    assert card["depth"] == 4 and card["method"] == "none" and card["num_classes"] == 10
    assert 0 < card["trainable_params"] < card["params"]
    assert {r["storage"] for r in ws.storage(2)} == {"full PETL", "SLS", "structurally pruned"}


def test_workspace_never_mutates_its_model(ws):
    before = {k: v.clone() for k, v in ws.loaded.model.state_dict().items()}
    timed = ws.benchmarks(time_budget_s=0.05)
    assert timed[1].flops_per_image < timed[4].flops_per_image and timed[1].params < timed[4].params
    after = ws.loaded.model.state_dict()
    assert len(ws.loaded.model.blocks) == 4 and all(torch.equal(v, after[k]) for k, v in before.items())


def test_selection_is_hashable_and_recorded():
    assert hash(Selection()) == hash(Selection())
    assert Selection(limit=10).to_dict()["limit"] == 10


def test_charts_have_one_panel_per_layer_and_mark_the_depth(ws):
    analysis = ws.analysis(AnalysisSettings(projection="pca"))
    maps = analysis.maps()
    names = ws.loaded.data.class_names
    grid = charts.layer_grid(maps, analysis.labels, names, recommended=2)
    assert "block 2 (SLS depth)" in [a.text for a in grid.layout.annotations]
    assert len({t.xaxis for t in grid.data}) == 4
    table = analysis.table()
    curves = charts.score_curves(table, metric="silhouette", threshold=0.1, depth=2)
    assert any(getattr(s, "y0", None) == 0.1 for s in curves.layout.shapes)
    one = charts.layer_map(maps[3], analysis.labels, names, ws.scored_indices(), 3)
    assert "index" in one.data[0].hovertemplate
    # the Layers page reads a picked point's dataset index from customdata[0] to show its image
    shown = sorted(int(i) for trace in one.data for i in np.asarray(trace.customdata)[:, 0])
    assert shown == sorted(ws.scored_indices().tolist())
    frame = ws.depth_table().assign(images_per_s=np.arange(1, 5) * 10.0)
    chart = charts.accuracy_vs_throughput(frame, chosen=3)
    assert chart.data[-1].name == "depth 3" and list(chart.data[-1].x) == [30.0]
