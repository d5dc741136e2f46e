"""The leaderboard across a sweep's tasks: its figures against a hand computation on a small results
table, and leave-one-task-out calibration that never lets a setting see the task it is scored on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from slsviz.layers.criteria import reverse_order
from slsviz.sweep.leaderboard import (
    FIXED,
    LOTO,
    TaskRecord,
    best_setting,
    fixed_outcomes,
    leaderboard,
    loto_outcomes,
)


def _results() -> pd.DataFrame:
    """Three tasks of 4 blocks: SLS at alpha 0.3 and Block Influence at 0.5, and the oracle."""
    rows = []
    for task, oracle, sls, bi in (("a", 3, 3, 1), ("b", 2, 4, 2), ("c", 4, 2, 4)):
        acc = {1: 0.50, 2: 0.80, 3: 0.90, 4: 0.92}
        speed = {1: 400.0, 2: 200.0, 3: 130.0, 4: 100.0}
        for criterion, alpha, setting, depth in (("sls", 0.3, 0.3, sls), ("block_influence", None, 0.5, bi),
                                                 ("oracle", None, 0.01, oracle)):
            rows.append({"task": task, "criterion": criterion, "alpha": alpha, "setting": setting, "seed": 0, "depth": depth,
                         "num_layers": 4, "oracle_distance": depth - oracle, "accuracy_head_refit": acc[depth],
                         "accuracy_head_refit_full": 0.92, "accuracy_as_is": acc[depth] - 0.1,
                         "accuracy_as_is_full": 0.82, "flops": 100 * depth, "flops_full": 400,
                         "images_per_s": speed[depth], "images_per_s_full": 100.0})
    return pd.DataFrame(rows)


def test_the_leaderboard_by_hand():
    board = leaderboard(fixed_outcomes(_results()), resamples=500).set_index("criterion")
    assert set(board.index) == {"sls", "block_influence"} and (board["kind"] == FIXED).all()  # the oracle is the reference
    sls, bi = board.loc["sls"], board.loc["block_influence"]
    # sls: distances 0, +2, -2; block influence: -2, 0, 0
    assert sls["tasks"] == 3 and sls["abs_distance"] == pytest.approx(4 / 3) and sls["worst_abs_distance"] == 2
    assert sls["mean_distance"] == 0 and sls["within_one"] == pytest.approx(1 / 3)
    assert bi["abs_distance"] == pytest.approx(2 / 3) and bi["within_one"] == pytest.approx(2 / 3)
    assert list(board.index) == ["block_influence", "sls"]  # nearest the oracle first
    # accuracy lost at the pick (full 0.92): sls depths 3, 4, 2 lose 0.02, 0, 0.12
    assert sls["accuracy_lost_head_refit"] == pytest.approx(0.14 / 3) and sls["accuracy_lost_as_is"] == pytest.approx(0.14 / 3)
    assert sls["flops_saved"] == pytest.approx((0.25 + 0 + 0.5) / 3)  # 1 - 300/400, 1 - 400/400, 1 - 200/400
    assert sls["speedup"] == pytest.approx((1.3 + 1 + 2) / 3)
    # the 95% bootstrap interval over tasks: the percentiles of the means of tasks drawn with replacement
    draws = np.random.default_rng(0).integers(0, 3, size=(500, 3))
    means = np.array([0.25, 0.0, 0.5])[draws].mean(axis=1)
    assert (sls["flops_saved_low"], sls["flops_saved_high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert sls["abs_distance_low"] <= sls["abs_distance"] <= sls["abs_distance_high"] <= 2


def test_a_tasks_seeds_are_averaged_before_the_tasks_are():
    results = _results()
    again = results.assign(seed=1, depth=np.where(results.task == "a", 4, results.depth))
    again["oracle_distance"] = again["depth"] - results["depth"] + results["oracle_distance"]
    board = leaderboard(fixed_outcomes(pd.concat([results, again])), resamples=10).set_index("criterion")
    # task a's SLS distance is 0 on seed 0 and +1 on seed 1: 0.5 for the task; b and c stay at 2
    assert board.loc["sls", "tasks"] == 3 and board.loc["sls", "abs_distance"] == pytest.approx((0.5 + 2 + 2) / 3)


def _record(name: str, oracle: int, layers: int = 12) -> TaskRecord:
    accuracy = np.linspace(0.5, 0.9, layers)
    return TaskRecord(name=name, oracle=oracle, scores={"reverse_order": reverse_order(layers)},
                      accuracy={"head_refit": accuracy, "as_is": accuracy}, flops=np.arange(1.0, layers + 1),
                      images_per_s=None)


def test_leave_one_task_out_never_lets_a_setting_see_its_own_task():
    # reverse order on 12 blocks: share 0.25 cuts at 9, 0.5 at 6. Two tasks want 9, one wants 6.
    records = [_record("a", 9), _record("b", 9), _record("c", 6)]
    outcomes, chosen = loto_outcomes(records, ["reverse_order"])
    picked = chosen.set_index("task")["setting"]
    assert picked["c"] == 0.25 and outcomes.set_index("task").loc["c", "distance"] == 3  # chosen on a and b alone
    for k, record in enumerate(records):  # each one's setting is the best on the others
        assert picked[record.name] == best_setting(records[:k] + records[k + 1:], "reverse_order")
    # Moving a task's own oracle moves no setting chosen for that task (it never saw it) ...
    moved = [records[0], records[1], dataclasses.replace(records[2], oracle=3)]
    assert loto_outcomes(moved, ["reverse_order"])[1].set_index("task")["setting"]["c"] == picked["c"]
    # ... while on all tasks it is seen: calibrated on a, b and c, the best is no longer a's and b's alone
    assert best_setting(records, "reverse_order") == 0.25 and best_setting(records[2:], "reverse_order") == 0.5
    board = leaderboard(outcomes, resamples=10)
    assert board["kind"].tolist() == [LOTO] and board["tasks"].tolist() == [3]
    assert board["abs_distance"].iloc[0] == pytest.approx((0 + 0 + 3) / 3)


def test_calibration_needs_two_tasks_and_a_criterion_every_task_scored():
    outcomes, chosen = loto_outcomes([_record("a", 9)])
    assert outcomes.empty and chosen.empty
    partial = dataclasses.replace(_record("b", 6), scores={})
    assert loto_outcomes([_record("a", 9), partial])[0].empty
