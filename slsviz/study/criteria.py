"""The layer criteria side by side: the SLS family and the other criteria by name, and each one's
pick from its scores; the oracle's from per-depth val accuracy. Plain functions: the study, the
comparison and the sweep call the same ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.choices import METRICS
from slsviz.layers.analysis import AnalysisSettings
from slsviz.layers.criteria import (
    SETTINGS,
    angular_distance_to_last,
    block_influence,
    cka_to_last,
    criterion_depth,
    knn_accuracy,
)
from slsviz.layers.rule import SLSRule
from slsviz.pruning.accuracy import oracle_depth
from slsviz.scheduler import SCHEDULER

# The SLS family: (name, label, how the layers are mapped, the score the rule reads). The paper's
# comes first; variants on the same maps share one table.
SLS_VARIANTS: tuple[tuple[str, str, AnalysisSettings, str], ...] = (
    ("sls", "SLS (the paper's: t-SNE silhouette)", AnalysisSettings(), "silhouette"),
    ("sls_umap", "SLS, UMAP silhouette", AnalysisSettings(projection="umap"), "silhouette"),
    ("sls_raw", "SLS, silhouette of the raw features", AnalysisSettings(space="raw"), "silhouette"),
    ("sls_calinski_harabasz", "SLS, Calinski-Harabasz of the t-SNE map", AnalysisSettings(), "calinski_harabasz"),
    ("sls_davies_bouldin", "SLS, Davies-Bouldin of the t-SNE map", AnalysisSettings(), "davies_bouldin"),
    ("sls_probe", "SLS, linear-probe accuracy", AnalysisSettings(), "probe_accuracy"),
)
# The other criteria (slsviz.layers.criteria), in the order shown.
OTHER_CRITERIA = {"knn_accuracy": "kNN accuracy (5-fold)", "block_influence": "Block Influence (ShortGPT)",
                  "angular_distance": "angular distance to the last block", "cka_to_last": "linear CKA with the last block"}

# The criteria that are one function of the features alone (kNN also needs the labels).
FEATURE_CRITERIA = {"block_influence": block_influence, "angular_distance": angular_distance_to_last,
                    "cka_to_last": cka_to_last}
# Whether a higher score says a block's output is closer to the end's (None: Block Influence says how
# much a block turns its input, not how good its output is).
HIGHER_IS_BETTER = {"knn_accuracy": True, "block_influence": None, "angular_distance": False, "cka_to_last": True}


def sls_picks(tables: dict[AnalysisSettings, pd.DataFrame], alpha: float = defaults.ALPHA,
              names: list[str] | None = None) -> list[dict[str, Any]]:
    """The SLS family's picks (:data:`SLS_VARIANTS`, or those ``names``) under ``alpha``, from each
    mapping's table of every block's scores (:meth:`slsviz.layers.analysis.LayerAnalysis.table`).

    Returns:
        Per variant: ``name``, ``label``, ``scores`` (float64, one per block), ``higher_is_better``,
        ``depth`` and ``rule`` (the reason in words).
    """
    picks = []
    for name, label, mapping, metric in SLS_VARIANTS:
        if names is None or name in names:
            scores = tables[mapping][metric].to_numpy(dtype=np.float64)
            rule = SLSRule(alpha, METRICS[metric]).fit(scores)
            picks.append({"name": name, "label": label, "scores": scores, "higher_is_better": METRICS[metric],
                          "depth": int(rule.depth_), "rule": rule.reason_})
    return picks


def other_picks(features: np.ndarray, labels: np.ndarray, settings: dict[str, float] | None = None, *,
                seed: int = defaults.SEED, names: list[str] | None = None,
                scores_given: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """The other criteria's picks (:data:`OTHER_CRITERIA`, or those ``names``) on the scored
    ``features`` (L, N, D), each under its setting; kNN's folds are drawn from ``seed``; a criterion's
    scores in ``scores_given`` are not computed again. Keys: see :func:`sls_picks`."""
    settings = {**SETTINGS, **(settings or {})}
    given = scores_given or {}
    picks = []
    for name, label in OTHER_CRITERIA.items():
        if names is None or name in names:
            scores = given[name] if name in given else SCHEDULER.run_heavy(
                lambda: knn_accuracy(features, labels, seed=seed) if name == "knn_accuracy"  # noqa: B023 - run at once
                else FEATURE_CRITERIA[name](features))
            depth, rule = criterion_depth(name, scores, settings[name])
            picks.append({"name": name, "label": label, "scores": scores, "higher_is_better": HIGHER_IS_BETTER[name],
                          "depth": depth, "rule": rule})
    return picks


def oracle_pick(val_accuracy: np.ndarray, within: float) -> dict[str, Any]:
    """The oracle: the smallest depth whose val accuracy with a re-fit head (``val_accuracy``, one per
    depth) is within ``within`` of the full model's. Keys: see :func:`sls_picks`."""
    points = f"{100 * within:g} point" + ("" if 100 * within == 1 else "s")
    return {"name": "oracle", "label": f"oracle (val, head re-fit, within {points})", "scores": val_accuracy,
            "higher_is_better": True, "depth": oracle_depth(val_accuracy, within),
            "rule": f"The smallest depth whose val accuracy with a re-fit head is within {points} of the full model's."}
