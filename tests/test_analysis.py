"""LayerAnalysis: maps and scores on demand, the lazy recommendation equal to the full one."""

from __future__ import annotations

import numpy as np
import pytest

from slsviz.analysis import AnalysisSettings, LayerAnalysis
from slsviz.errors import SlsvizError
from slsviz.rule import recommend_depth


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


@pytest.mark.parametrize("metric", ["silhouette", "calinski_harabasz", "davies_bouldin"])
def test_lazy_recommendation_equals_full_and_maps_fewer_layers(metric):
    feats, labels = _layers()
    settings = AnalysisSettings(projection="pca", metric=metric)
    lazy = LayerAnalysis(feats, labels, settings)
    rule = lazy.recommend(lazy=True)
    full = LayerAnalysis(feats, labels, settings)
    table = full.table()
    assert rule.depth_ == full.recommend(lazy=False).depth_
    assert rule.depth_ == recommend_depth(table[metric].to_numpy(), 0.3, higher_is_better=metric != "davies_bouldin")
    assert len(lazy._maps) <= feats.shape[0] - rule.depth_ + 2


def test_table_scores_each_layer_on_its_map():
    feats, labels = _layers()
    analysis = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca"))
    table = analysis.table()
    assert table["layer"].tolist() == [1, 2, 3, 4, 5, 6]
    assert table["silhouette"].iloc[-1] > table["silhouette"].iloc[0]  # later layers separate better
    assert table["probe_accuracy"].isna().all()  # no probe data given
    from slsviz.scores import cluster_scores

    assert table.loc[2, "silhouette"] == pytest.approx(cluster_scores(analysis.map(3), labels)["silhouette"])


def test_raw_space_scores_features_not_maps():
    feats, labels = _layers()
    raw = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca", space="raw"))
    from slsviz.scores import cluster_scores

    assert raw.scores(4)["silhouette"] == pytest.approx(cluster_scores(feats[3], labels)["silhouette"])
    assert not raw._maps  # raw scoring draws no map


def test_probe_metric_needs_no_map():
    feats, labels = _layers()
    probe = (feats, labels, feats, labels)
    analysis = LayerAnalysis(feats, labels, AnalysisSettings(projection="pca", metric="probe_accuracy"), probe=probe)
    rule = analysis.recommend()
    assert 1 <= rule.depth_ <= 6 and not analysis._maps
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
