"""Layer criteria beside SLS, the oracle and the budget pickers: each against a hand-computed value or
a direct numpy computation on tiny synthetic features."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ortho_group
from sklearn.model_selection import StratifiedKFold

from slsviz.errors import DataError, SlsvizError
from slsviz.layers.criteria import (
    angular_distance_to_last,
    block_influence,
    cka_matrix,
    cka_to_last,
    criterion_depth,
    knn_accuracy,
    reverse_order,
    taylor_block_importance,
    top_run_depth,
)
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.pruning.accuracy import oracle_depth
from slsviz.pruning.budget import fastest_within, most_accurate_at
from helpers import random_backbone, recommend_depth

TINY_VIT = "vit_tiny_patch16_224"

RNG = np.random.default_rng(0)


def _features(layers: int = 4, n: int = 60, d: int = 5) -> np.ndarray:
    return RNG.normal(size=(layers, n, d))


def _knn_by_hand(x: np.ndarray, y: np.ndarray, k: int, folds: int, seed: int) -> float:
    """Each image classified by the majority of its k nearest images outside its fold (ties: lowest class)."""
    right = 0
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        dist = ((x[test, None, :] - x[None, train, :]) ** 2).sum(-1)
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
        for row, image in zip(nearest, test):
            votes = np.bincount(y[train][row], minlength=y.max() + 1)
            right += int(np.argmax(votes) == y[image])
    return right / len(y)


def test_knn_accuracy_is_one_on_separated_classes_and_equals_a_direct_computation():
    y = np.repeat([0, 1, 2], 20)
    separated = np.eye(3)[y] * 100 + RNG.normal(size=(60, 3)) * 0.01
    noise = RNG.normal(size=(60, 3))
    scores = knn_accuracy(np.stack([noise, separated]), y, k=5, folds=5, seed=3)
    assert scores[1] == 1.0
    assert scores[0] == pytest.approx(_knn_by_hand(noise, y, 5, 5, 3))
    assert np.array_equal(scores, knn_accuracy(np.stack([noise, separated]), y, k=5, folds=5, seed=3))  # seeded


def test_knn_accuracy_says_when_a_class_is_too_small_for_the_folds():
    with pytest.raises(DataError, match="smallest class here has 3"):
        knn_accuracy(_features(2, 13, 3), np.array([0] * 10 + [1] * 3), folds=5)


def test_block_influence_by_hand_and_against_numpy():
    h = np.zeros((2, 4, 2))
    h[0, :, 0] = 1  # block 1 outputs (1, 0)
    h[1, :, 1] = 1  # block 2 turns it to (0, 1): cos 0, BI 1
    assert np.isnan(block_influence(h)[0]) and block_influence(h)[1] == pytest.approx(1.0)
    assert block_influence(h, embedding=np.tile([1.0, 0.0], (4, 1)))[0] == pytest.approx(0.0)
    x = _features()
    direct = [np.mean([1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(x[i - 1], x[i])])
              for i in range(1, 4)]
    assert np.allclose(block_influence(x)[1:], direct)


def test_angular_distance_by_hand_and_against_numpy():
    h = np.zeros((3, 2, 2))
    h[0, :, 0] = 1  # 90 degrees from the last: 0.5
    h[1] = [[1, 1], [1, 1]]  # 45 degrees: 0.25
    h[2, :, 1] = 1
    assert np.allclose(angular_distance_to_last(h), [0.5, 0.25, 0.0])
    x = _features()
    direct = [np.mean([np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)) / np.pi
                       for a, b in zip(x[i], x[-1])]) for i in range(4)]
    assert np.allclose(angular_distance_to_last(x), direct)


def _cka_by_gram(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from centred Gram matrices (HSIC form), an independent route to the same number."""
    n = len(x)
    h = np.eye(n) - 1 / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.sum(k * m) / np.sqrt(np.sum(k * k) * np.sum(m * m)))


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The CKA of two blocks as :func:`cka_matrix` gives it (a zero column leaves the Gram matrix as it is)."""
    width = max(x.shape[1], y.shape[1])
    pad = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (x, y)]
    return float(cka_matrix(np.stack(pad))[0, 1])


def test_linear_cka_is_one_on_itself_invariant_to_rotation_and_scale_and_equals_the_gram_form():
    x, y = RNG.normal(size=(50, 6)), RNG.normal(size=(50, 4))
    q = ortho_group.rvs(6, random_state=1)
    assert _linear_cka(x, x) == pytest.approx(1.0)
    assert _linear_cka(x @ q, y) == pytest.approx(_linear_cka(x, y))
    assert _linear_cka(3.5 * x, y) == pytest.approx(_linear_cka(x, y))
    assert _linear_cka(x, y) == pytest.approx(_cka_by_gram(x, y))
    assert _linear_cka(x, x[:, :3] @ RNG.normal(size=(3, 3))) < 1


def test_cka_matrix_is_symmetric_with_ones_on_the_diagonal_and_entries_of_the_gram_form():
    x = _features(4, 30, 5)
    m = cka_matrix(x)
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1)
    assert m[0, 3] == pytest.approx(_cka_by_gram(x[0], x[3]))
    assert np.array_equal(cka_to_last(x), m[:, -1])  # one CKA: the criterion is the matrix's last column
    with pytest.raises(DataError, match="no variance"):
        cka_matrix(np.ones((2, 5, 3)))


@pytest.mark.parametrize(("qualifies", "depth"), [
    ([False, False, True, True], 3),
    ([True, True, True, True], 1),
    ([True, False, True, False], 4),  # the last block does not qualify: keep all
    ([False, True, False, True], 4),  # block 3 breaks the run
])
def test_top_run_depth(qualifies, depth):
    assert top_run_depth(np.array(qualifies)) == depth


def test_each_criterion_turns_known_scores_into_the_documented_depth():
    assert criterion_depth("knn_accuracy", np.array([0.5, 0.9, 0.975, 0.98]), 0.01)[0] == 3
    # mean BI over blocks 2-4 is 0.19: blocks 3 and 4 (<= 0.095) are redundant, so keep 2
    depth, rule = criterion_depth("block_influence", np.array([np.nan, 0.5, 0.05, 0.02]), 0.5)
    assert depth == 2 and "Block Influence" in rule
    assert criterion_depth("angular_distance", np.array([0.6, 0.3, 0.2, 0.0]), 0.25)[0] == 3
    assert criterion_depth("cka_to_last", np.array([0.2, 0.5, 0.95, 1.0]), 0.9)[0] == 3
    with pytest.raises(SlsvizError, match="Unknown criterion"):
        criterion_depth("entropy", np.ones(3))


def test_oracle_is_the_smallest_depth_within_the_tolerance_of_the_full_model():
    acc = np.array([0.3, 0.8, 0.945, 0.97, 0.962, 0.96])
    assert oracle_depth(acc, 0.01) == 4  # depth 3 is 0.5 points short of 0.95; depth 4 is the first at >= 0.95
    assert oracle_depth(acc, 0.0) == 4  # 0.97 >= 0.96
    assert oracle_depth(acc, 0.7) == 1


def test_budget_pickers():
    table = pd.DataFrame({"depth": [1, 2, 3, 4], "accuracy_as_is": np.nan,
                          "accuracy_head_refit": [0.50, 0.90, 0.975, 0.98]})
    speed = np.array([400.0, 200.0, 133.0, 100.0])
    assert fastest_within(table, speed, within=0.01) == 3
    assert fastest_within(table, speed, within=0.0) == 4
    assert most_accurate_at(table, speed, min_images_per_s=150) == 2
    assert most_accurate_at(table, speed, min_images_per_s=500) is None
    with pytest.raises(SlsvizError, match="No accuracy as is"):
        fastest_within(table, speed, within=0.01, kind="accuracy_as_is")


def test_reverse_order_drops_the_top_share_whatever_the_features():
    assert np.allclose(reverse_order(4), [0.75, 0.5, 0.25, 0.0])
    assert criterion_depth("reverse_order", reverse_order(12), 0.25)[0] == 9  # the top 3 of 12
    assert criterion_depth("reverse_order", reverse_order(10), 0.25)[0] == 8  # 2.5 rounded down
    assert criterion_depth("reverse_order", reverse_order(12), 0.0)[0] == 12


def test_own_rules_for_accuracy_and_loss():
    # the linear probe: block 1's 54% clears 0.3 x 98%, so alpha x the last would keep one block; within 1 point keeps 3
    probe = np.array([0.54, 0.9, 0.975, 0.98])
    assert recommend_depth(probe, 0.3) == 1 and criterion_depth("sls_probe", probe, 0.01)[0] == 3
    # the loss twin reads like the oracle: the smallest depth within the margin, not the top run
    depth, rule = criterion_depth("val_loss", np.array([2.0, 0.12, 0.3, 0.1]), 0.05)
    assert depth == 2 and "smallest depth" in rule
    assert criterion_depth("taylor", np.array([5.0, 4.0, 0.2, 0.1]), 0.5)[0] == 2  # mean 2.325: blocks 3, 4 redundant


def test_a_criterion_given_as_none_has_no_pick_and_one_not_given_is_refused():
    from slsviz.study.criteria import other_picks

    features, labels = _features(), np.tile([0, 1, 2], 20)
    picks = other_picks(features, labels, names=["reverse_order", "taylor", "val_loss"],
                        scores_given={"taylor": None, "val_loss": np.array([0.9, 0.5, 0.41, 0.4])})
    assert [(p["name"], p["depth"]) for p in picks] == [("reverse_order", 3), ("val_loss", 3)]
    with pytest.raises(SlsvizError, match="taylor criterion reads the task model's loss"):
        other_picks(features, labels, names=["taylor"], scores_given={})


def _tiny_task(seed: int = 0) -> torch.nn.Module:
    backbone = random_backbone(TINY_VIT, img_size=32, depth=3, seed=seed)
    return build_task_model(backbone, PetlConfig("convpass", bottleneck=4), num_classes=3, seed=seed)


def test_taylor_importance_equals_autograd_on_a_copy_and_leaves_the_model_alone():
    model = _tiny_task()
    torch.manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), (torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))]
    before = {n: (p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}
    scores = taylor_block_importance(model, batches)
    # direct: every block parameter takes gradients on a copy, the summed loss backpropagated once
    copy = deepcopy(model)
    for name, p in copy.named_parameters():
        p.requires_grad_(name.startswith("blocks."))
    sum(torch.nn.functional.cross_entropy(copy(x), y, reduction="sum") for x, y in batches).backward()
    direct = [sum(float((p * p.grad).abs().sum()) for p in block.parameters()) / 6 for block in copy.blocks]
    assert np.allclose(scores, direct, rtol=1e-5) and (scores > 0).all()
    assert any("adapter" in n or "convpass" in n for n, _ in copy.blocks[0].named_parameters())  # the adapter counts
    for name, p in model.named_parameters():  # frozen stays frozen, no .grad left behind, weights unchanged
        assert p.requires_grad == before[name][0] and p.grad is None and torch.equal(p, before[name][1])
    with pytest.raises(DataError, match="task's head"):
        taylor_block_importance(model, [(torch.randn(2, 3, 32, 32), torch.tensor([0, 7]))])


def test_the_val_loss_per_depth_is_sklearns_log_loss_of_each_re_fit_head():
    from sklearn.metrics import log_loss

    from slsviz.layers.features import FeatureBank
    from slsviz.pruning.accuracy import fit_heads, head_input, loss_head_refit

    model = _tiny_task()
    x, y = RNG.normal(size=(3, 30, 192)).astype(np.float32), np.tile([0, 1, 2], 10)
    train, val = (FeatureBank(features=x[:, s], labels=y[s], indices=np.arange(30)[s], split=split, token="cls")
                  for split, s in (("train", slice(0, 18)), ("val", slice(18, 30))))
    heads = fit_heads(model, train)
    direct = [log_loss(val.labels, heads[d].predict_proba(head_input(model, val, d + 1)), labels=[0, 1, 2]) for d in range(3)]
    assert np.allclose(loss_head_refit(model, train, val, heads=heads), direct)
