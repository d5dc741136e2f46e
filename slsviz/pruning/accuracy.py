"""Accuracy of the model cut at every depth, from cached features (no backbone pass).

Two kinds, each labelled wherever shown:
- *as is*: the task's own head on the depth-d model, ``head(norm(cls_d))``; the paper shows this
  can collapse (EuroSAT 95.87% -> 55.65%), because the head was trained on the last block.
- *head re-fit*: a new linear head fit on the train split's features of block d (seconds).
A third, *retrained* (:func:`accuracy_retrained`: the pruned model's adapters and head trained
further with the paper's FT or CLR recipe), needs backbone passes and takes minutes on a CPU.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline

from slsviz.errors import SlsvizError
from slsviz.layers.features import FeatureBank
from slsviz.layers.scores import linear_probe


def _check_cls_head(model: nn.Module, bank: FeatureBank) -> None:
    if bank.head_inputs is not None:  # what the head reads at each depth, stored (a Swin's)
        return
    if bank.token != "cls":
        raise SlsvizError(f"Per-depth accuracy needs CLS features before the final norm (token 'cls'), not {bank.token!r}.")
    if getattr(model, "global_pool", "token") != "token":
        raise SlsvizError(f"Per-depth accuracy from CLS features needs a CLS-token head; this model pools by {model.global_pool!r}.")


@torch.inference_mode()
def normed(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """What the head sees: the model's final norm (and fc_norm) applied to block features (N, D)."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.array(features, dtype=np.float32)).to(device)  # a copy: memmaps are read-only
    return model.fc_norm(model.norm(x)).float().cpu().numpy()


def head_input(model: nn.Module, bank: FeatureBank, layer: int) -> np.ndarray:
    """What the head reads when ``model`` is cut after block ``layer``: the bank's stored head inputs where
    it has them (a Swin's), else the block's CLS features through the final norm (a ViT's)."""
    if bank.head_inputs is not None:
        return np.array(bank.head_inputs[layer - 1], dtype=np.float32)  # a copy: the cache's arrays are read-only
    return normed(model, bank.layer(layer))


def has_task_head(model: nn.Module) -> bool:
    """Whether ``model`` carries a trained classification head (a bare backbone's head is Identity)."""
    return isinstance(getattr(model, "head", None), nn.Linear)


@torch.inference_mode()
def _as_is(model: nn.Module, normed_features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the task head on already normed block features."""
    x = torch.from_numpy(normed_features).to(next(model.parameters()).device)
    return int((model.head(x).argmax(-1).cpu().numpy() == labels).sum()) / len(labels)


def accuracy_as_is(model: nn.Module, bank: FeatureBank) -> np.ndarray:
    """Accuracy of ``head(norm(cls_d))`` for every depth d = 1..L (index d-1)."""
    _check_cls_head(model, bank)
    return np.array([_as_is(model, head_input(model, bank, d), bank.labels) for d in range(1, bank.num_layers + 1)])


def fit_head(model: nn.Module, train: FeatureBank, layer: int, *, seed: int = 0, max_iter: int = 1000) -> Pipeline:
    """A new linear head for the depth-``layer`` model (:func:`~slsviz.layers.scores.linear_probe`),
    fit on the normed train features."""
    _check_cls_head(model, train)
    if len(np.unique(train.labels)) < 2:
        raise SlsvizError("Re-fitting a head needs train features of at least 2 classes.")
    return linear_probe(seed=seed, max_iter=max_iter).fit(head_input(model, train, layer), train.labels)


def fit_heads(model: nn.Module, train: FeatureBank, *, seed: int = 0) -> list[Pipeline]:
    """A re-fit head for every depth (index d-1): the costly part of the re-fit accuracies, which
    depends on the train split only, so it serves a provisional and the exact test score alike."""
    return [fit_head(model, train, d, seed=seed) for d in range(1, train.num_layers + 1)]


def accuracy_head_refit(model: nn.Module, train: FeatureBank, evaluate_on: FeatureBank, *, seed: int = 0,
                        heads: list[Pipeline] | None = None) -> np.ndarray:
    """Accuracy on ``evaluate_on`` of a head re-fit on ``train``'s block-d features, for every depth
    (``heads``: those :func:`fit_heads` returned for ``train``, to fit none here)."""
    _check_cls_head(model, evaluate_on)
    heads = heads if heads is not None else fit_heads(model, train, seed=seed)
    return np.array([heads[d - 1].score(head_input(model, evaluate_on, d), evaluate_on.labels)
                     for d in range(1, evaluate_on.num_layers + 1)])


def loss_head_refit(model: nn.Module, train: FeatureBank, evaluate_on: FeatureBank, *, seed: int = 0,
                    heads: list[Pipeline] | None = None) -> np.ndarray:
    """Cross-entropy (nats per image) on ``evaluate_on`` of the head re-fit on ``train``'s block-d
    features, for every depth: the oracle's loss twin reads it on val. ``heads``: see
    :func:`accuracy_head_refit`."""
    _check_cls_head(model, evaluate_on)
    heads = heads if heads is not None else fit_heads(model, train, seed=seed)
    return np.array([log_loss(evaluate_on.labels, heads[d - 1].predict_proba(head_input(model, evaluate_on, d)),
                              labels=heads[d - 1].classes_) for d in range(1, evaluate_on.num_layers + 1)])


def interval(accuracy: np.ndarray, n: int, z: float = 1.96) -> np.ndarray:
    """Half-width of the normal-approximation confidence interval (95% at ``z`` 1.96) of accuracies
    measured on ``n`` images: how far a figure from part of a split may be from the whole split's."""
    p = np.asarray(accuracy, dtype=np.float64)
    return z * np.sqrt(np.clip(p * (1 - p), 0.0, None) / n)


def accuracy_at_depth(model: nn.Module, train: FeatureBank, evaluate_on: FeatureBank, depth: int, *,
                      seed: int = 0) -> dict[str, float]:
    """Both cache-only kinds at one depth, with no all-depth table (the head re-fit dominates)."""
    _check_cls_head(model, evaluate_on)
    x = head_input(model, evaluate_on, depth)
    refit = fit_head(model, train, depth, seed=seed).score(x, evaluate_on.labels)
    return {"depth": depth, "accuracy_as_is": _as_is(model, x, evaluate_on.labels), "accuracy_head_refit": float(refit)}


def depth_accuracy_table(model: nn.Module, train: FeatureBank, evaluate_on: FeatureBank, *, seed: int = 0,
                         as_is: bool = True, heads: list[Pipeline] | None = None) -> pd.DataFrame:
    """Both cache-only kinds for every depth: columns ``depth, accuracy_as_is, accuracy_head_refit``.

    A bare backbone has no task head, and a head trained on other classes (``as_is=False``) cannot
    classify this data: their as-is accuracy is NaN (not defined), not a guess. ``heads``: see
    :func:`accuracy_head_refit`.
    """
    as_is = (accuracy_as_is(model, evaluate_on) if as_is and has_task_head(model)
             else np.full(evaluate_on.num_layers, np.nan))
    return pd.DataFrame({
        "depth": np.arange(1, evaluate_on.num_layers + 1),
        "accuracy_as_is": as_is,
        "accuracy_head_refit": accuracy_head_refit(model, train, evaluate_on, seed=seed, heads=heads),
    })


def accuracy_retrained(
    model: nn.Module,
    depth: int,
    data,
    preprocess,
    *,
    kind: str = "ft",
    epochs: int = 10,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    seed: int = 0,
    progress=None,
) -> dict:
    """Cut ``model`` at ``depth`` (a copy), train its adapters + head further, measure test accuracy.

    Returns:
        ``{"depth", "kind", "epochs", "accuracy_retrained", "val_accuracy", "model"}``; the model is
        the retrained pruned copy (best on val).
    """
    from slsviz.models.depth import prune_to_depth

    pruned = prune_to_depth(model, depth)
    return {"depth": depth, **retrain_pruned(pruned, data, preprocess, kind=kind, epochs=epochs, device=device,
                                             limit=limit, seed=seed, progress=progress)}


def retrain_pruned(pruned: nn.Module, data, preprocess, *, kind: str = "ft", epochs: int = 10,
                   device: torch.device | str = "cpu", limit: int | None = None, seed: int = 0, progress=None) -> dict:
    """Train a pruned model's adapters + head further (in place) and measure its test accuracy.

    Returns:
        ``{"kind", "epochs", "accuracy_retrained", "val_accuracy", "model"}``; the model is ``pruned``,
        at its best epoch on val.
    """
    from slsviz.data import make_loader
    from slsviz.models.train import evaluate, retrain_recipe, train_task

    result = train_task(pruned, data, preprocess, retrain_recipe(kind, epochs, seed=seed),
                        device=device, progress=progress, limit=limit)
    test_acc = evaluate(pruned, make_loader(data, "test", preprocess, 256, limit=limit), torch.device(device))
    return {"kind": kind, "epochs": epochs, "accuracy_retrained": test_acc, "val_accuracy": result.val_accuracy,
            "model": pruned}


def oracle_depth(accuracy: np.ndarray, within: float) -> int:
    """The smallest depth whose accuracy (index d-1; e.g. head re-fit, on val) is within ``within`` of
    the full model's (the last entry): what a criterion's pick is judged against.

    Raises:
        SlsvizError: no accuracies, NaN among them, or a negative ``within``.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1 or len(acc) == 0 or np.isnan(acc).any():
        raise SlsvizError("The oracle needs one accuracy per depth, none of them NaN.")
    if within < 0:
        raise SlsvizError(f"The oracle's tolerance must be 0 or more, not {within!r}.")
    return int(np.flatnonzero(acc >= acc[-1] - within - 1e-12)[0]) + 1
