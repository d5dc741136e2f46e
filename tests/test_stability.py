"""Stability of each criterion's pick over bootstrap resamples: the summaries on known inputs, and the
same seed giving the same resamples, maps, depths and bands."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_backbone

from slsviz.study.resampling import stability
from slsviz.data import load_digits
from slsviz.errors import SlsvizError
from slsviz.layers.criteria import block_influence
from slsviz.layers.stability import Spread, resamples
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.study import LoadedTask, Study


def test_spread_mode_interval_and_band_on_known_depths():
    spread = Spread(np.array([6, 7, 7, 7, 8, 6, 7, 9, 7, 5]), np.arange(30, dtype=float).reshape(10, 3))
    assert spread.mode == 7
    assert spread.interval(0.9) == (5, 9) and spread.interval(0.5) == (6, 7)
    low, high = spread.band(0.9)
    assert np.allclose(low, np.percentile(spread.scores, 5, axis=0)) and np.allclose(high, np.percentile(spread.scores, 95, axis=0))
    assert Spread(np.array([4, 5, 5, 4]), np.zeros((4, 2))).mode == 4  # a tie goes to the shallower depth
    assert spread.to_dict()["interval"] == [5, 9]


def test_resamples_are_seeded_draws_with_replacement():
    a, b = resamples(50, 3, seed=7), resamples(50, 3, seed=7)
    assert all(np.array_equal(x, y) and s == t for (x, s), (y, t) in zip(a, b))
    assert [s for _, s in a] == [8, 9, 10]
    assert not np.array_equal(a[0][0], resamples(50, 3, seed=8)[0][0])
    assert all(len(idx) == 50 and idx.min() >= 0 and idx.max() < 50 for idx, _ in a)
    assert len(np.unique(a[0][0])) < 50  # with replacement
    with pytest.raises(SlsvizError, match="at least 2 images"):
        resamples(1, 3, seed=0)


def _study() -> Study:
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=4, seed=0)
    data = load_digits()
    model = build_task_model(backbone, PetlConfig("convpass"), data.num_classes)
    return Study(LoadedTask(backbone, model, None, data), limit=60, workers=2, use_cache=False)


def test_the_same_seed_gives_the_same_depths_and_bands():
    criteria = ["sls", "sls_raw", "knn_accuracy", "block_influence", "cka_to_last"]
    first = stability(_study().features, workers=2, count=3, seed=5, criteria=criteria)
    second = stability(_study().features, workers=2, count=3, seed=5, criteria=criteria)
    for name in criteria:
        assert np.array_equal(first[name].depths, second[name].depths)
        assert np.array_equal(first[name].scores, second[name].scores, equal_nan=True)
        assert first[name].scores.shape == (3, 4)
    # each resample's scores are the criterion on the drawn images
    features, _ = _study().features.scored()
    idx, _ = resamples(len(features[0]), 3, seed=5)[0]
    assert np.allclose(first["block_influence"].scores[0][1:], block_influence(features[:, idx])[1:])
    other = stability(_study().features, workers=2, count=3, seed=6, criteria=["sls"])
    assert not np.array_equal(other["sls"].scores, first["sls"].scores)
    with pytest.raises(SlsvizError, match="No stability for oracle"):
        stability(_study().features, workers=2, count=2, criteria=["oracle"])
