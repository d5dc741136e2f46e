"""LayerAnalysis: maps and scores on demand, the lazy recommendation equal to the full one."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import recommend_depth

from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.scheduler import Parallel


def _layers(num_layers=6, n_per_class=30, classes=3, dim=16, seed=0):
    """Features whose classes separate more with depth: layer l has class offset ~ l."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(size=(classes, dim))
    feats = np.stack([rng.normal(size=(len(labels), dim)) + 0.6 * layer * centres[labels]
                      for layer in range(num_layers)]).astype(np.float32)
    return feats, labels


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))


@pytest.fixture()
def mapped(monkeypatch) -> list[int]:
    """The layers whose 2-D map was drawn, in order (every map goes through project_layers)."""
    import slsviz.layers.analysis as analysis_module

    drawn: list[int] = []
    real = analysis_module.project_layers

    def spy(features, method, *, layers, **kwargs):
        drawn.extend(layers)
        return real(features, method, layers=layers, **kwargs)

    monkeypatch.setattr(analysis_module, "project_layers", spy)
    return drawn


@pytest.mark.parametrize("metric", ["silhouette", "calinski_harabasz", "davies_bouldin"])
def test_lazy_recommendation_equals_full_and_maps_fewer_layers(metric, mapped):
    feats, labels = _layers()
    settings = AnalysisSettings(projection="pca", metric=metric)
    lazy = LayerAnalysis(feats, labels, settings)
    rule = lazy.recommend(lazy=True)
    lazily_mapped = list(mapped)
    full = LayerAnalysis(feats, labels, settings)
    table = full.table()
    assert rule.depth_ == full.recommend(lazy=False).depth_
    assert rule.depth_ == recommend_depth(table[metric].to_numpy(), 0.3, higher_is_better=metric != "davies_bouldin")
    assert len(lazily_mapped) <= feats.shape[0] - rule.depth_ + 2


def test_table_scores_each_layer_on_its_map():
    feats, labels = _layers()
    analysis = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca"))
    table = analysis.table()
    assert table["layer"].tolist() == [1, 2, 3, 4, 5, 6]
    assert table["silhouette"].iloc[-1] > table["silhouette"].iloc[0]  # later layers separate better
    assert table["probe_accuracy"].isna().all()  # no probe data given
    from slsviz.layers.scores import cluster_scores

    assert table.loc[2, "silhouette"] == pytest.approx(cluster_scores(analysis.map(3), labels)["silhouette"])


def test_raw_space_scores_features_not_maps(mapped):
    feats, labels = _layers()
    raw = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca", space="raw"))
    from slsviz.layers.scores import cluster_scores

    assert raw.scores(4)["silhouette"] == pytest.approx(cluster_scores(feats[3], labels)["silhouette"])
    assert not mapped  # raw scoring draws no map


def test_probe_metric_needs_no_map(mapped):
    feats, labels = _layers()
    probe = (feats, labels, feats, labels)
    analysis = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca", metric="probe_accuracy"), probe=probe)
    rule = analysis.recommend()
    assert 1 <= rule.depth_ <= 6 and not mapped
    assert analysis.table()["probe_accuracy"].between(0, 1).all()
    with pytest.raises(SlsvizError, match="probe"):
        LayerAnalysis(feats, labels, AnalysisSettings(metric="probe_accuracy")).recommend()


def test_bad_settings_and_inputs():
    feats, labels = _layers()
    for bad in ({"projection": "mds"}, {"metric": "accuracy"}, {"space": "3d"}):
        with pytest.raises(SlsvizError):
            AnalysisSettings(**bad)
    with pytest.raises(SlsvizError, match="2 classes"):
        LayerAnalysis(feats, np.zeros(len(labels), dtype=int))
    with pytest.raises(SlsvizError, match="labels"):
        LayerAnalysis(feats, labels[:-1])
    with pytest.raises(SlsvizError, match="out of range"):
        LayerAnalysis(feats, labels, AnalysisSettings(projection="pca")).scores(7)


def test_parallel_lazy_scan_gives_the_same_answer_and_never_maps_twice(monkeypatch):
    from slsviz.layers import projection

    calls = []
    real = projection.project

    def counting(x, *args, **kwargs):
        calls.append(1)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(projection, "project", counting)
    feats, labels = _layers(num_layers=8)
    settings = AnalysisSettings(projection="pca")
    one = LayerAnalysis(feats, labels, settings)
    rule_one, table_one = one.recommend(), one.table()
    calls.clear()
    three = LayerAnalysis(feats, labels, settings, runner=Parallel(3))
    rule_three = three.recommend()
    assert (rule_three.depth_, rule_three.threshold_) == (rule_one.depth_, rule_one.threshold_)
    table_three = three.table()
    assert len(calls) == 8  # maps started ahead by the scan were used, not drawn again
    np.testing.assert_allclose(table_three["silhouette"], table_one["silhouette"])
    for layer in range(1, 9):
        np.testing.assert_array_equal(three.map(layer), one.map(layer))


def test_parallel_lazy_scan_returns_before_maps_it_does_not_need(monkeypatch):
    import threading

    import slsviz.layers.analysis as analysis_module

    release = threading.Event()
    calls: list[int] = []
    real = analysis_module.project_layers

    bottom_started = threading.Event()

    def slow_bottom(features, method, *, layers, **kwargs):
        calls.extend(layers)
        if 1 in layers:  # the bottom layer is never needed by this scan: hold it until released
            bottom_started.set()
            assert release.wait(timeout=30)
        if 2 in layers:  # the scan's last answer comes only once the map ahead of it has begun
            assert bottom_started.wait(timeout=30)
        return real(features, method, layers=layers, **kwargs)

    monkeypatch.setattr(analysis_module, "project_layers", slow_bottom)
    feats, labels = _layers(num_layers=4)
    feats[1] = np.random.default_rng(1).normal(size=feats[1].shape)  # layer 2: no clusters, the scan stops there
    analysis = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca"), runner=Parallel(2))
    rule = analysis.recommend()
    assert rule.depth_ == 3 and not release.is_set()  # answered while layer 1's map was still running
    assert 1 in calls  # started ahead by the scan, still running
    release.set()
    analysis.table()
    assert sorted(calls) == [1, 2, 3, 4]  # layer 1 was picked up from the scan, not mapped again
