"""How well classes cluster in each layer: cluster scores on points, and a linear probe on features.

The paper scores the 2-D t-SNE map of each layer's CLS features; the same functions score raw
(N, D) features or any other map. All functions are pure: no state and no caching.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from slsviz.errors import DataError

# Each cluster score by name, as scikit-learn computes it: ``score(points, labels) -> float``.
CLUSTER_SCORES = {
    "silhouette": lambda x, y: silhouette_score(x, y, metric="euclidean"),
    "calinski_harabasz": calinski_harabasz_score,
    "davies_bouldin": davies_bouldin_score,
}
CLUSTER_METRICS = tuple(CLUSTER_SCORES)


def cluster_scores(points: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Silhouette (euclidean), Calinski-Harabasz and Davies-Bouldin of labelled points.

    Args:
        points: Shape (N, d): a 2-D map or raw features, all finite.
        labels: Class of every point, shape (N,), with 2 to N - 1 distinct classes.

    Returns:
        ``{"silhouette": ..., "calinski_harabasz": ..., "davies_bouldin": ...}`` as floats.

    Raises:
        DataError: mismatched lengths, non-finite points, or a class count outside 2..N-1.
    """
    x, y = _check_labelled(points, labels, "Points")
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise DataError(
            f"Scoring clusters needs at least 2 classes, but all {len(y)} points have the same label: "
            "use data with two or more classes."
        )
    if n_classes > len(y) - 1:
        raise DataError(
            f"Scoring clusters needs 2 <= number of classes <= number of points - 1, but there are "
            f"{n_classes} classes for {len(y)} points: use more points per class."
        )
    return {name: float(score(x, y)) for name, score in CLUSTER_SCORES.items()}


def linear_probe(*, seed: int = 0, max_iter: int = 1000) -> Pipeline:
    """The linear classifier slsviz fits on features: standardise, then logistic regression.

    Standardising first matters: on shallow blocks the raw scale makes L-BFGS crawl (seconds per
    fit); standardised it converges in a fraction of that, and the scaler still folds into one
    linear layer. Used for the probe score and for re-fitting a pruned model's head.
    """
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))


def probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    *,
    seed: int = 0,
    max_iter: int = 1000,
) -> float:
    """Accuracy on ``eval`` of a linear probe (standardise, then logistic regression) fit on ``train``.

    Args:
        train_x: Training features, shape (Ntr, D), all finite.
        train_y: Training labels, shape (Ntr,), with at least 2 classes.
        eval_x: Evaluation features, shape (Nev, D) with the same D, all finite.
        eval_y: Evaluation labels, shape (Nev,).
        seed: Random state of the logistic regression.
        max_iter: Iteration limit of the logistic regression's solver.

    Returns:
        Fraction of ``eval`` points classified correctly, in ``[0, 1]``.

    Raises:
        DataError: mismatched lengths or dimensions, non-finite features, empty sets, or a single
            training class.
    """
    tx, ty = _check_labelled(train_x, train_y, "Probe training features")
    ex, ey = _check_labelled(eval_x, eval_y, "Probe evaluation features")
    if tx.shape[1] != ex.shape[1]:
        raise DataError(
            f"Probe training features have {tx.shape[1]} dimensions but evaluation features have "
            f"{ex.shape[1]}: both must come from the same layer."
        )
    if len(np.unique(ty)) < 2:
        raise DataError(
            "A linear probe needs at least 2 classes in its training set, but all training labels are "
            "the same: use a training set with two or more classes."
        )
    model = linear_probe(seed=seed, max_iter=max_iter).fit(tx, ty)
    return float(np.mean(model.predict(ex) == ey))


def _check_labelled(points: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a numeric array of shape (N, d): {exc}") from exc
    y = np.asarray(labels)
    if x.ndim != 2:
        raise DataError(f"{what} must be a 2-D array of shape (N, d), not shape {x.shape}.")
    if y.ndim != 1:
        raise DataError(f"Labels must be a 1-D array with one label per point, not shape {y.shape}.")
    if len(x) != len(y):
        raise DataError(f"{what} hold {len(x)} points but there are {len(y)} labels: pass one label per point.")
    if len(x) == 0:
        raise DataError(f"{what} are empty: there is nothing to score.")
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"{what} contain NaN or infinite values (first at point {bad}): check the features.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError("Labels contain NaN or infinite values: every point needs a class.")
    return x, y
