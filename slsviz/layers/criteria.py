"""Layer criteria beside SLS: one score per block from cached per-layer features, and a depth from it.

Every function here is pure: features in, numbers out. ``features`` is always (L, N, D), block 1
first; ``h_l`` below is block ``l``'s feature of one image (the CLS token before the final norm, as
the study extracts it).

Scores:
- :func:`knn_accuracy` - cross-validated k-nearest-neighbour accuracy of each block's features.
- :func:`block_influence` - ShortGPT's Block Influence, ``1 - cos(h_{l-1}, h_l)``, the mean over
  images. Block 1 would need the embedding output, which the feature banks do not keep: its score is
  NaN unless that output is given.
- :func:`angular_distance_to_last` - Gromov et al.'s angular distance ``arccos(cos(h_l, h_L)) / pi``
  between block ``l`` and the last block, the mean over images.
- :func:`cka_matrix` - linear CKA (Kornblith et al., 2019) between two blocks'
  features; the criterion reads ``CKA(l, L)`` (:func:`cka_to_last`).
- :func:`reverse_order` - the reverse-order baseline (Gromov et al.; Men et al.): no score at all, the
  top share of blocks goes. Any criterion should beat it.
- :func:`taylor_block_importance` - first-order Taylor importance of each block, ``sum |w * dL/dw|``
  over the block's weights (frozen and adapter) on train batches: the one criterion here that reads
  the task's loss rather than the features.
- the validation loss with a re-fit head per depth is computed where the heads are
  (:mod:`slsviz.pruning.accuracy`); :data:`RULES` reads it like the oracle reads accuracy.

Depths: every rule removes top blocks only, as SLS does (:func:`top_run_depth`): keep blocks
``1..l*``, where ``l*`` is the smallest ``l`` such that every block ``k`` in ``[l, L]`` qualifies - its
output is already as good as the last block's by the criterion (kNN, angular distance, CKA), or
every block above it is redundant (Block Influence). What qualifies is the criterion's
(:func:`criterion_depth`). No paper gives these criteria a threshold for
removing top blocks; the defaults in :mod:`slsviz.defaults` are settings, and the oracle
(:func:`slsviz.pruning.accuracy.oracle_depth`) says how good each pick is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from slsviz import defaults
from slsviz.errors import DataError, SlsvizError


def _stack(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 3 or 0 in x.shape:
        raise DataError(f"Layer features must have shape (L layers, N images, D dimensions), not {x.shape}.")
    if not np.isfinite(x).all():
        raise DataError("Layer features contain NaN or infinite values: check the model and its features.")
    return x


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``a`` and ``b`` (N, D), clipped to [-1, 1]."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    if (norms == 0).any():
        raise DataError("A feature vector is all zeros, so its angle to another is undefined: check the features.")
    return np.clip(np.einsum("nd,nd->n", a, b) / norms, -1.0, 1.0)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = defaults.KNN_NEIGHBORS,
                 folds: int = defaults.KNN_FOLDS, seed: int = defaults.SEED) -> np.ndarray:
    """Cross-validated kNN accuracy of every block: shape (L,), in [0, 1].

    Args:
        features: (L, N, D) features of the scored images.
        labels: (N,) their classes.
        k: neighbours (Euclidean distance, uniform votes).
        folds: stratified folds, shuffled with ``seed``; each image is classified once, by the others.
        seed: the folds' shuffle.

    Raises:
        DataError: a shape mismatch, or a class with fewer than ``folds`` images.
    """
    x, y = _stack(features), np.asarray(labels)
    if y.shape != (x.shape[1],):
        raise DataError(f"kNN accuracy needs one label per image: {x.shape[1]} images, labels of shape {y.shape}.")
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < folds:
        raise DataError(f"kNN accuracy with {folds}-fold cross-validation needs at least 2 classes of {folds} or more "
                        f"images each; the smallest class here has {counts.min()}: score more images.")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y) - len(y) // folds - 1))
    return np.array([cross_val_score(knn, x[layer], y, cv=cv).mean() for layer in range(len(x))])


def block_influence(features: np.ndarray, embedding: np.ndarray | None = None) -> np.ndarray:
    """ShortGPT's Block Influence of every block: ``1 - cos(h_{l-1}, h_l)``, the mean over images.

    Args:
        features: (L, N, D) block outputs.
        embedding: (N, D) the input of block 1 (patch embedding + position), if kept; without it
            block 1's score is NaN.

    Returns:
        (L,) in [0, 2]; a small value means the block barely turns its input.
    """
    x = _stack(features)
    out = np.full(len(x), np.nan)
    if embedding is not None:
        e = np.asarray(embedding, dtype=np.float64)
        if e.shape != x.shape[1:]:
            raise DataError(f"The embedding output must have shape {x.shape[1:]} (N, D), not {e.shape}.")
        out[0] = np.mean(1 - _cosine(e, x[0]))
    for layer in range(1, len(x)):
        out[layer] = np.mean(1 - _cosine(x[layer - 1], x[layer]))
    return out


def angular_distance_to_last(features: np.ndarray) -> np.ndarray:
    """Angular distance ``arccos(cos(h_l, h_L)) / pi`` of every block to the last, the mean over images.

    Returns:
        (L,) in [0, 1]; 0 for the last block.
    """
    x = _stack(features)
    return np.array([np.mean(np.arccos(_cosine(x[layer], x[-1])) / np.pi) for layer in range(len(x))])


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def _cka(a: np.ndarray, b: np.ndarray, aa: float, bb: float) -> float:
    """Linear CKA of centred ``a`` and ``b`` whose Gram norms are ``aa`` and ``bb``: the one formula."""
    return float(np.linalg.norm(b.T @ a) ** 2 / (aa * bb))


def _centred_blocks(features: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    """Every block's centred features and Gram norm."""
    centred = [_centred(layer) for layer in _stack(features)]
    gram_norms = [np.linalg.norm(c.T @ c) for c in centred]
    if min(gram_norms) == 0:
        raise DataError("CKA is undefined for a block whose features have no variance (every image the same).")
    return centred, gram_norms


def cka_matrix(features: np.ndarray) -> np.ndarray:
    """Linear CKA between every pair of blocks: (L, L), symmetric, ones on the diagonal."""
    centred, norms = _centred_blocks(features)
    out = np.eye(len(centred))
    for i in range(len(centred)):
        for j in range(i + 1, len(centred)):
            out[i, j] = out[j, i] = _cka(centred[i], centred[j], norms[i], norms[j])
    return out


def cka_to_last(features: np.ndarray) -> np.ndarray:
    """Linear CKA of every block with the last: (L,), 1 for the last block; exactly the last column of
    :func:`cka_matrix`, without the other pairs."""
    centred, norms = _centred_blocks(features)
    last = len(centred) - 1
    return np.array([_cka(c, centred[last], n, norms[last]) if i < last else 1.0
                     for i, (c, n) in enumerate(zip(centred, norms))])


def reverse_order(num_layers: int) -> np.ndarray:
    """The reverse-order baseline's "score": the share of blocks above each block, ``(L - l) / L``
    (0 for the last). Its rule keeps a block whose share is at most the setting, so a setting of 0.25
    removes the top quarter of the blocks (rounded down)."""
    if num_layers < 1:
        raise SlsvizError("The reverse-order baseline needs at least one block.")
    return (num_layers - np.arange(1, num_layers + 1)) / num_layers


def taylor_block_importance(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """First-order Taylor importance of every block: ``sum |w * dL/dw|`` over the block's parameters
    (its frozen weights and its adapter), ``L`` the task's cross-entropy summed over ``batches``.

    The model is not changed: its blocks' parameters are replaced by detached copies that take
    gradients (``torch.func.functional_call``), so frozen weights stay frozen and nothing is stored in
    ``.grad``.

    Args:
        model: a task model (a ViT or :class:`~slsviz.models.swin.SwinBlocks`) whose ``forward`` gives
            the task's logits and whose blocks are ``model.blocks``.
        batches: ``(images, labels)`` from the train split, already preprocessed.

    Returns:
        (L,) float64, >= 0; a small value means the loss barely depends on the block.
    """
    device = next(model.parameters()).device
    owned = {name: p.detach().requires_grad_(True) for name, p in model.named_parameters() if name.startswith("blocks.")}
    block_of = [int(name.split(".")[1]) for name in owned]
    grads = [torch.zeros_like(p) for p in owned.values()]
    seen = 0
    for images, labels in batches:
        logits = torch.func.functional_call(model, owned, (images.to(device),))
        if logits.ndim != 2 or logits.shape[1] <= int(labels.max()):
            raise DataError("Taylor importance needs the task's head (logits for every class): this model has none "
                            "for these labels.")
        loss = F.cross_entropy(logits, labels.to(device), reduction="sum")
        for total, g in zip(grads, torch.autograd.grad(loss, list(owned.values()))):
            total += g
        seen += len(labels)
    if not seen:
        raise DataError("Taylor importance needs at least one train batch.")
    out = np.zeros(len(model.blocks))
    with torch.no_grad():
        for block, p, g in zip(block_of, owned.values(), grads):
            out[block] += float((p * g / seen).abs().sum())
    return out


def top_run_depth(qualifies: np.ndarray) -> int:
    """Blocks to keep when the top run of qualifying blocks is removed: the smallest ``l`` such that
    every block in ``[l, L]`` qualifies (the last block always stays, so ``L - run + 1`` when the run is
    shorter than L, and 1 when every block qualifies)."""
    q = np.asarray(qualifies, dtype=bool)
    if q.ndim != 1 or len(q) == 0:
        raise SlsvizError("A depth needs one qualifies-flag per block.")
    depth = len(q)
    while depth > 1 and q[depth - 2] and q[depth - 1:].all():
        depth -= 1
    return depth


def _redundant_above(s: np.ndarray, ratio: float) -> np.ndarray:
    """Cutting at ``l`` is fine when every block above it is redundant (BI <= ratio x the mean BI)."""
    redundant = np.nan_to_num(s, nan=np.inf) <= ratio * np.nanmean(s)
    return np.append(redundant[1:], True)


def _within_last(s: np.ndarray, x: float) -> np.ndarray:
    return s >= s[-1] - x


# Criterion name -> (its rule in words; per block l, whether block l's output is good enough that
# blocks above it may go, given the setting). top_run_depth keeps blocks up to the lowest such l of
# the top run.
RULES: dict[str, tuple[str, Callable[[np.ndarray, float], np.ndarray]]] = {
    "knn_accuracy": ("Keep blocks up to the lowest block from which every block's kNN accuracy is at least the "
                     "last block's minus {setting:g}.", _within_last),
    "sls_probe": ("Keep blocks up to the lowest block from which every block's linear-probe val accuracy is at least "
                  "the last block's minus {setting:g} (accuracy has a chance level, so not alpha x the last).",
                  _within_last),
    "block_influence": ("Remove the top run of blocks whose Block Influence is at most {setting:g} x the mean "
                        "over blocks.", _redundant_above),
    "angular_distance": ("Keep blocks up to the lowest block from which every block's angular distance to the "
                         "last is at most {setting:g}.", lambda s, x: s <= x),
    "cka_to_last": ("Keep blocks up to the lowest block from which every block's linear CKA with the last is "
                    "at least {setting:g}.", lambda s, x: s >= x),
    "reverse_order": ("Remove the top {setting:.0%} of the blocks (rounded down), whatever they score.",
                      lambda s, x: s <= x + 1e-9),
    "taylor": ("Remove the top run of blocks whose Taylor importance (sum of |w x dL/dw|) is at most {setting:g} x the "
               "mean over blocks.", _redundant_above),
    "val_loss": ("The smallest depth whose val loss with a re-fit head is at most the full model's + {setting:g} "
                 "nats (the oracle's rule, on the loss).", lambda s, x: s <= s[-1] + x),
}
# Criteria whose depth is the smallest qualifying one, as the oracle's, not the top run's lowest.
SMALLEST_QUALIFYING = ("val_loss",)
# Criterion name -> its default setting (see slsviz.defaults).
SETTINGS = {"knn_accuracy": defaults.KNN_WITHIN, "sls_probe": defaults.PROBE_WITHIN,
            "block_influence": defaults.BI_RATIO, "angular_distance": defaults.ANGULAR_MAX,
            "cka_to_last": defaults.CKA_MIN, "reverse_order": defaults.REVERSE_SHARE,
            "taylor": defaults.TAYLOR_RATIO, "val_loss": defaults.LOSS_WITHIN}


def criterion_depth(name: str, scores: np.ndarray, setting: float | None = None) -> tuple[int, str]:
    """``(depth, rule)``: the depth criterion ``name``'s scores give, and the rule in words.

    The rule is :data:`RULES`' (``setting`` defaults to :data:`SETTINGS`), read top down by
    :func:`top_run_depth` (the smallest qualifying depth for :data:`SMALLEST_QUALIFYING`).
    """
    if name not in RULES:
        raise SlsvizError(f"Unknown criterion {name!r}: use one of {', '.join(RULES)}.")
    words, test = RULES[name]
    value = SETTINGS[name] if setting is None else float(setting)
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s[-1]) or (name != "block_influence" and np.isnan(s).any()):
        raise SlsvizError(f"The {name} scores hold NaN: every block needs a score.")
    with np.errstate(invalid="ignore"):
        qualifies = test(s, value)
    depth = int(np.flatnonzero(qualifies)[0]) + 1 if name in SMALLEST_QUALIFYING else top_run_depth(qualifies)
    return depth, words.format(setting=value)
