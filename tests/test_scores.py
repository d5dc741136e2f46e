"""Cluster scores, the linear probe and the per-layer score table (LayerAnalysis.table on raw features)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from slsviz.choices import METRICS
from slsviz.errors import DataError, SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.layers.scores import cluster_scores, probe_accuracy


def two_tight_clusters():
    """Two clusters of 4 points, 0.01 wide, 10 apart."""
    offsets = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.01, 0.01]])
    points = np.vstack([offsets, offsets + [10.0, 0.0]])
    return points, np.array([0, 0, 0, 0, 1, 1, 1, 1])


def separable(n: int = 120, dim: int = 8, seed: int = 0):
    """Labels in {0, 1, 2} decided by which of three far-apart centres a point surrounds."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centers = rng.normal(scale=10.0, size=(3, dim))
    return centers[labels] + rng.normal(size=(n, dim)), labels


def test_metrics_say_which_direction_is_better():
    """Separated classes score better than shuffled labels, in the direction METRICS says."""
    x, y = separable()
    shuffled = np.random.default_rng(1).permutation(y)
    separated, mixed = cluster_scores(x, y), cluster_scores(x, shuffled)
    separated["probe_accuracy"] = probe_accuracy(x[:80], y[:80], x[80:], y[80:])
    mixed["probe_accuracy"] = probe_accuracy(x[:80], shuffled[:80], x[80:], shuffled[80:])
    assert set(separated) == set(METRICS)
    for name, higher_is_better in METRICS.items():
        assert (separated[name] > mixed[name]) == higher_is_better, name


def test_cluster_scores_of_two_tight_distant_clusters():
    points, labels = two_tight_clusters()
    scores = cluster_scores(points, labels)
    assert set(scores) == {"silhouette", "calinski_harabasz", "davies_bouldin"}
    assert all(type(value) is float for value in scores.values())
    assert scores["silhouette"] > 0.99
    assert scores["davies_bouldin"] < 0.01
    assert scores["calinski_harabasz"] > 1e5
    assert scores["silhouette"] == pytest.approx(silhouette_score(points, labels, metric="euclidean"))
    assert scores["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(points, labels))
    assert scores["davies_bouldin"] == pytest.approx(davies_bouldin_score(points, labels))


def test_cluster_scores_match_sklearn_on_overlapping_data():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(90, 5))
    labels = np.array(["a", "b", "c"] * 30)  # string labels work too
    scores = cluster_scores(points, labels)
    assert abs(scores["silhouette"]) < 0.1
    assert scores["silhouette"] == pytest.approx(silhouette_score(points, labels))
    assert scores["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(points, labels))
    assert scores["davies_bouldin"] == pytest.approx(davies_bouldin_score(points, labels))


def test_cluster_scores_errors():
    points, labels = two_tight_clusters()
    with pytest.raises(DataError, match="at least 2 classes"):
        cluster_scores(points, np.zeros(len(points), dtype=int))
    with pytest.raises(DataError, match="8 points but there are 7 labels"):
        cluster_scores(points, labels[:-1])
    with pytest.raises(DataError, match="2 <= number of classes <= number of points - 1"):
        cluster_scores(points, np.arange(len(points)))
    broken = points.copy()
    broken[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN.*point 3"):
        cluster_scores(broken, labels)
    with pytest.raises(DataError, match="Labels contain NaN"):
        cluster_scores(points, np.array([0, 0, 0, 0, 1, 1, 1, np.nan]))
    with pytest.raises(DataError, match=r"2-D array"):
        cluster_scores(points[:, 0], labels)


def test_probe_accuracy_on_separable_data_is_perfect():
    x, y = separable(n=200)
    assert probe_accuracy(x[:120], y[:120], x[120:], y[120:]) == 1.0


def test_probe_accuracy_on_random_labels_is_near_chance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    y = rng.integers(0, 2, size=300)
    accuracy = probe_accuracy(x[:200], y[:200], x[200:], y[200:])
    assert 0.3 < accuracy < 0.7


def test_probe_accuracy_is_deterministic():
    x, y = separable(n=100, seed=2)
    noisy = x + np.random.default_rng(5).normal(scale=15.0, size=x.shape)
    assert probe_accuracy(noisy[:60], y[:60], noisy[60:], y[60:], seed=4) == probe_accuracy(
        noisy[:60], y[:60], noisy[60:], y[60:], seed=4
    )


def test_probe_accuracy_errors():
    x, y = separable(n=60)
    with pytest.raises(DataError, match="at least 2 classes in its training set"):
        probe_accuracy(x[:30], np.zeros(30, dtype=int), x[30:], y[30:])
    with pytest.raises(DataError, match="30 points but there are 29 labels"):
        probe_accuracy(x[:30], y[:29], x[30:], y[30:])
    with pytest.raises(DataError, match="8 dimensions but evaluation features have 4"):
        probe_accuracy(x[:30], y[:30], x[30:, :4], y[30:])
    broken = x.copy()
    broken[35, 0] = np.inf
    with pytest.raises(DataError, match="evaluation features contain NaN or infinite"):
        probe_accuracy(x[:30], y[:30], broken[30:], y[30:])


def layered_features(num_layers: int = 3, n: int = 90, dim: int = 6, seed: int = 0):
    """(L, n, dim) features whose classes separate more in later layers, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3)
    centers = rng.normal(scale=6.0, size=(3, dim))
    weights = np.linspace(0.0, 1.0, num_layers)[:, None, None]
    return weights * centers[labels] + rng.normal(size=(num_layers, n, dim)), labels


def _raw(features, labels, probe=None) -> LayerAnalysis:
    """Every layer's scores on its raw features (what the analysis does with space="raw")."""
    return LayerAnalysis(np.asarray(features, np.float32), labels, AnalysisSettings(space="raw"), probe=probe)


def test_layer_table_without_probe():
    features, labels = layered_features()
    table = _raw(features, labels).table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["layer", "silhouette", "calinski_harabasz", "davies_bouldin", "probe_accuracy"]
    assert table["layer"].tolist() == [1, 2, 3]
    assert table["probe_accuracy"].isna().all()
    for _, row in table.iterrows():
        expected = cluster_scores(features[int(row["layer"]) - 1].astype(np.float32), labels)
        for name, value in expected.items():
            assert row[name] == pytest.approx(value)
    # The layer whose features separate the classes scores better on every metric.
    first, last = table.iloc[0], table.iloc[-1]
    assert last["silhouette"] > first["silhouette"]
    assert last["calinski_harabasz"] > first["calinski_harabasz"]
    assert last["davies_bouldin"] < first["davies_bouldin"]


def test_layer_table_with_probe_uses_each_layers_features():
    features, labels = layered_features(n=150)
    order = np.random.default_rng(9).permutation(150)  # mix the classes across train and eval
    features, labels = features[:, order], labels[order]
    train_x, eval_x = features[:, :100], features[:, 100:]
    table = _raw(features, labels, probe=(train_x, labels[:100], eval_x, labels[100:])).table()
    assert table["layer"].tolist() == [1, 2, 3]
    assert table["probe_accuracy"].notna().all()
    assert table.loc[table["layer"] == 1, "probe_accuracy"].item() == pytest.approx(
        probe_accuracy(train_x[0], labels[:100], eval_x[0], labels[100:])
    )
    assert table.loc[table["layer"] == 3, "probe_accuracy"].item() == 1.0
    assert table.loc[table["layer"] == 1, "probe_accuracy"].item() < 0.7  # layer 1 is pure noise


def test_layer_table_scores_2d_maps_and_raw_features_alike():
    features, labels = layered_features(dim=2)
    table = _raw(features[[0, 2]], labels).table()
    assert table["silhouette"].iloc[1] > table["silhouette"].iloc[0]


def test_layer_table_errors():
    features, labels = layered_features()
    with pytest.raises(SlsvizError, match="No layers"):
        _raw(features[:0], labels)
    with pytest.raises(SlsvizError, match="out of range"):
        _raw(features, labels).scores(0)
    broken = features.copy()
    broken[1, 5, 0] = np.nan
    with pytest.raises(DataError, match="Layer 2: .*NaN"):
        _raw(broken, labels).table()
    with pytest.raises(SlsvizError, match="at least 2 classes"):
        _raw(features[:2], np.zeros(len(labels)))
    probe = (features[:2, :60], labels[:60], features[:2, 60:], labels[60:])
    with pytest.raises(SlsvizError, match="probe features hold 2 layers"):
        _raw(features, labels, probe=probe)
