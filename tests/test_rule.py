"""The SLS rule on hand-made score sequences, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import recommend_depth

from slsviz.errors import SlsvizError
from slsviz.layers.rule import SLSRule


@pytest.mark.parametrize(
    "scores, alpha, depth",
    [
        ([0.0, 0.05, 0.1, 0.3, 0.5, 0.6], 0.3, 4),  # T = 0.18: blocks 4..6 reach it
        ([0.0, 0.05, 0.18, 0.3, 0.5, 0.6], 0.3, 3),  # exactly T counts (>=)
        ([0.1, 0.2, 0.3, 0.4], 0.3, 2),  # T = 0.12: block 1 misses
        ([0.5, 0.5, 0.5], 0.3, 1),  # every block qualifies: keep one
        ([0.3, 0.01, 0.4, 0.5], 0.3, 3),  # a dip stops the top-down scan even if lower blocks recover
        ([0.1, 0.2, 0.3, 0.4], 1.0, 4),  # alpha 1: only blocks at least as good as the last
        ([0.2, 0.9, 0.1, 0.5], 0.3, 4),  # the block under the last misses: no pruning
    ],
)
def test_rule_on_known_sequences(scores, alpha, depth):
    rule = SLSRule(alpha).fit(scores)
    assert rule.depth_ == depth == recommend_depth(scores, alpha)
    assert rule.threshold_ == pytest.approx(alpha * scores[-1])
    assert rule.pruning_ == (depth < len(scores))
    assert rule.qualifies_[depth - 1:].all() and (depth == 1 or not rule.qualifies_[depth - 2])


def test_lower_is_better_turns_the_comparison():
    # Davies-Bouldin: T = DB(L) / alpha = 2.0; blocks with DB <= 2.0 qualify.
    rule = SLSRule(0.3, higher_is_better=False).fit([5.0, 3.0, 1.9, 1.0, 0.6])
    assert rule.threshold_ == pytest.approx(2.0)
    assert rule.depth_ == 3
    # the same as the higher-is-better rule on 1 / DB
    assert rule.depth_ == recommend_depth(1 / np.array([5.0, 3.0, 1.9, 1.0, 0.6]), 0.3)


@pytest.mark.parametrize("last", [0.0, -0.2])
def test_non_positive_last_score_recommends_no_pruning(last):
    rule = SLSRule().fit([0.3, 0.2, last])
    assert rule.depth_ == 3 and not rule.pruning_
    assert "no pruning" in rule.reason_


def test_reason_names_the_numbers():
    rule = SLSRule(0.3).fit([0.0, 0.05, 0.1, 0.3, 0.5, 0.6])
    assert "keep 4 of 6 blocks" in rule.reason_ and "0.18" in rule.reason_


@pytest.mark.parametrize("bad", [[0.1, float("nan"), 0.3], [float("inf")], []])
def test_nan_and_empty_are_clear_errors(bad):
    with pytest.raises(SlsvizError, match="finite|non-empty"):
        SLSRule().fit(bad)


@pytest.mark.parametrize("alpha", [0, -0.1, 1.5])
def test_alpha_out_of_range(alpha):
    with pytest.raises(SlsvizError, match="alpha"):
        SLSRule(alpha).fit([0.1, 0.2])


def test_negative_lower_is_better_score_is_refused():
    with pytest.raises(SlsvizError, match="cannot be negative"):
        SLSRule(higher_is_better=False).fit([1.0, -1.0])


def test_lazy_scan_asks_only_what_it_needs_and_agrees():
    scores = [0.0, 0.02, 0.05, 0.1, 0.3, 0.4, 0.5, 0.55, 0.6, 0.6, 0.62, 0.6]
    asked = []

    def score_of(layer):
        asked.append(layer)
        return scores[layer - 1]

    rule = SLSRule(0.3).fit_lazy(score_of, len(scores))
    assert rule.depth_ == recommend_depth(scores) == 5
    assert asked == [12, 11, 10, 9, 8, 7, 6, 5, 4]  # top down, stopping at the first miss (block 4)
    assert np.isnan(rule.scores_[:3]).all()
