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

Depths: every rule removes top blocks only, as SLS does (:func:`top_run_depth`): keep blocks
``1..l*``, where ``l*`` is the smallest ``l`` such that every block ``k`` in ``[l, L]`` qualifies - its
output is already as good as the last block's by the criterion (kNN, angular distance, CKA), or
every block above it is redundant (Block Influence). What qualifies is the criterion's
(:func:`criterion_depth`). No paper gives these criteria a threshold for
removing top blocks; the defaults in :mod:`slsviz.defaults` are settings, and the oracle
(:func:`slsviz.pruning.accuracy.oracle_depth`) says how good each pick is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
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


# Criterion name -> (its rule in words; per block l, whether block l's output is good enough that
# blocks above it may go, given the setting). top_run_depth keeps blocks up to the lowest such l of
# the top run.
RULES: dict[str, tuple[str, Callable[[np.ndarray, float], np.ndarray]]] = {
    "knn_accuracy": ("Keep blocks up to the lowest block from which every block's kNN accuracy is at least the "
                     "last block's minus {setting:g}.", lambda s, x: s >= s[-1] - x),
    "block_influence": ("Remove the top run of blocks whose Block Influence is at most {setting:g} x the mean "
                        "over blocks.", _redundant_above),
    "angular_distance": ("Keep blocks up to the lowest block from which every block's angular distance to the "
                         "last is at most {setting:g}.", lambda s, x: s <= x),
    "cka_to_last": ("Keep blocks up to the lowest block from which every block's linear CKA with the last is "
                    "at least {setting:g}.", lambda s, x: s >= x),
}
# Criterion name -> its default setting (see slsviz.defaults).
SETTINGS = {"knn_accuracy": defaults.KNN_WITHIN, "block_influence": defaults.BI_RATIO,
            "angular_distance": defaults.ANGULAR_MAX, "cka_to_last": defaults.CKA_MIN}


def criterion_depth(name: str, scores: np.ndarray, setting: float | None = None) -> tuple[int, str]:
    """``(depth, rule)``: the depth criterion ``name``'s scores give, and the rule in words.

    The rule is :data:`RULES`' (``setting`` defaults to :data:`SETTINGS`), read top down by
    :func:`top_run_depth`.
    """
    if name not in RULES:
        raise SlsvizError(f"Unknown criterion {name!r}: use one of {', '.join(RULES)}.")
    words, test = RULES[name]
    value = SETTINGS[name] if setting is None else float(setting)
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s[-1]) or (name != "block_influence" and np.isnan(s).any()):
        raise SlsvizError(f"The {name} scores hold NaN: every block needs a score.")
    with np.errstate(invalid="ignore"):
        depth = top_run_depth(test(s, value))
    return depth, words.format(setting=value)
