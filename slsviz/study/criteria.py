"""The layer criteria side by side: the SLS family and the other criteria by name, and each one's
pick from its scores; the oracle's from per-depth val accuracy. Plain functions: the study, the
comparison and the sweep call the same ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.choices import METRICS
from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings
from slsviz.layers.criteria import (
    SETTINGS,
    angular_distance_to_last,
    block_influence,
    cka_to_last,
    criterion_depth,
    knn_accuracy,
    reverse_order,
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
# The SLS variants whose score is an accuracy: it has a chance level and block 1 of a ViT is far above
# it, so block 1 already meets "alpha x the last block's" and one block is kept; they get their own rule.
OWN_RULE = ("sls_probe",)
# The other criteria (slsviz.layers.criteria), in the order shown.
OTHER_CRITERIA = {"knn_accuracy": "kNN accuracy (5-fold)", "block_influence": "Block Influence (ShortGPT)",
                  "angular_distance": "angular distance to the last block", "cka_to_last": "linear CKA with the last block",
                  "reverse_order": "reverse order (the top blocks dropped)",
                  "taylor": "Taylor block importance (sum of abs(w x dL/dw))",
                  "val_loss": "val loss, head re-fit (the oracle's twin)"}
# What each criterion's score is and which kind of rule reads it (the tables' ``scale`` column).
SCALES = {
    "sls": "silhouette in [-1, 1]: alpha x the last block's (the paper's rule)",
    "sls_umap": "silhouette in [-1, 1]: alpha x the last block's",
    "sls_raw": "silhouette in [-1, 1]: alpha x the last block's",
    "sls_calinski_harabasz": "Calinski-Harabasz, >= 0, no upper bound: alpha x the last block's",
    "sls_davies_bouldin": "Davies-Bouldin, >= 0, lower is better: 1/alpha x the last block's",
    "sls_probe": "accuracy with a chance level: its own rule, within a margin of the last block's",
    "knn_accuracy": "accuracy with a chance level: its own rule, within a margin of the last block's",
    "block_influence": "1 - cosine in [0, 2], per block: a share of the mean",
    "angular_distance": "in [0, 1], 0 at the last block: at most a bound",
    "cka_to_last": "in [0, 1], 1 at the last block: at least a bound",
    "reverse_order": "no score: a fixed share of the top blocks",
    "taylor": "|w x dL/dw| summed per block, >= 0: a share of the mean",
    "val_loss": "nats, >= 0: within a margin of the full model's (the oracle's rule)",
    "oracle": "accuracy: within a margin of the full model's",
}
# Settings a calibration tries per criterion (alpha for the SLS variants read by alpha), over each
# score's whole useful range, so that a calibration is not stopped at the grid's edge.
_ALPHAS = tuple(round(a, 2) for a in np.arange(0.05, 1.0001, 0.05))
CALIBRATION_GRID: dict[str, tuple[float, ...]] = {
    **{name: _ALPHAS for name, *_ in SLS_VARIANTS if name not in OWN_RULE},
    "sls_probe": (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3),
    "knn_accuracy": (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3),
    "block_influence": tuple(round(r, 2) for r in np.arange(0.1, 5.0001, 0.1)),
    "angular_distance": tuple(round(a, 3) for a in np.arange(0.025, 1.0001, 0.025)),
    "cka_to_last": tuple(round(c, 2) for c in np.arange(0.1, 1.0001, 0.02)),
    "reverse_order": tuple(round(r, 2) for r in np.arange(0.0, 0.9001, 0.05)),
    "taylor": tuple(round(r, 2) for r in np.arange(0.1, 5.0001, 0.1)),
    "val_loss": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
}

# The criteria that are one function of the features alone (kNN also needs the labels; reverse order
# reads only how many blocks there are).
FEATURE_CRITERIA = {"block_influence": block_influence, "angular_distance": angular_distance_to_last,
                    "cka_to_last": cka_to_last, "reverse_order": lambda features: reverse_order(len(features))}
# Whether a higher score says a block's output is closer to the end's (None: Block Influence says how
# much a block turns its input, not how good its output is).
HIGHER_IS_BETTER = {"knn_accuracy": True, "block_influence": None, "angular_distance": False, "cka_to_last": True,
                    "reverse_order": None, "taylor": None, "val_loss": False}
# The criteria whose scores are not a function of the scored features: given by the caller.
GIVEN = ("taylor", "val_loss")


def depth_at(name: str, scores: np.ndarray, setting: float) -> int:
    """The depth criterion ``name`` picks from its ``scores`` (one per block) under ``setting``: alpha
    for the SLS variants read by alpha, the criterion's own setting otherwise."""
    metric = {variant: metric for variant, _, _, metric in SLS_VARIANTS}.get(name)
    if metric is not None and name not in OWN_RULE:
        return int(SLSRule(setting, METRICS[metric]).fit(scores).depth_)
    return criterion_depth(name, scores, setting)[0]


def own_rule(metric: str, scores: np.ndarray) -> tuple[str, int, str] | None:
    """For a score the alpha rule does not fit (:data:`OWN_RULE`: an accuracy with a chance level),
    ``(criterion, depth, reason)`` under that criterion's own rule and default setting, read from
    ``scores`` (one per block); ``None`` for the scores the alpha rule is made for."""
    name = next((name for name, _, _, m in SLS_VARIANTS if m == metric and name in OWN_RULE), None)
    return None if name is None else (name, *criterion_depth(name, scores))


def sls_picks(tables: dict[AnalysisSettings, pd.DataFrame], alpha: float = defaults.ALPHA,
              names: list[str] | None = None, settings: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The SLS family's picks (:data:`SLS_VARIANTS`, or those ``names``) under ``alpha``, from each
    mapping's table of every block's scores (:meth:`slsviz.layers.analysis.LayerAnalysis.table`);
    those of :data:`OWN_RULE` under their own setting (``settings``, default :data:`SETTINGS`).

    Returns:
        Per variant: ``name``, ``label``, ``scores`` (float64, one per block), ``higher_is_better``,
        ``depth``, ``rule`` (the reason in words), ``setting`` (alpha, or the own rule's), ``uses_alpha``
        and ``scale`` (:data:`SCALES`).
    """
    settings = {**SETTINGS, **(settings or {})}
    picks = []
    for name, label, mapping, metric in SLS_VARIANTS:
        if names is None or name in names:
            scores = tables[mapping][metric].to_numpy(dtype=np.float64)
            if name in OWN_RULE:
                depth, reason = criterion_depth(name, scores, settings[name])
            else:
                rule = SLSRule(alpha, METRICS[metric]).fit(scores)
                depth, reason = int(rule.depth_), rule.reason_
            picks.append({"name": name, "label": label, "scores": scores, "higher_is_better": METRICS[metric],
                          "depth": depth, "rule": reason, "uses_alpha": name not in OWN_RULE,
                          "setting": alpha if name not in OWN_RULE else settings[name], "scale": SCALES[name]})
    return picks


def other_picks(features: np.ndarray, labels: np.ndarray, settings: dict[str, float] | None = None, *,
                seed: int = defaults.SEED, names: list[str] | None = None,
                scores_given: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """The other criteria's picks (:data:`OTHER_CRITERIA`, or those ``names``) on the scored
    ``features`` (L, N, D), each under its setting; kNN's folds are drawn from ``seed``; a criterion's
    scores in ``scores_given`` are not computed again, and those of :data:`GIVEN` (the model's loss)
    must be there: given as ``None``, the criterion has no pick for this model (Taylor without the
    task's head). Keys: see :func:`sls_picks`."""
    settings = {**SETTINGS, **(settings or {})}
    given = scores_given or {}
    picks = []
    for name, label in OTHER_CRITERIA.items():
        if names is None or name in names:
            if name in GIVEN and name not in given:
                raise SlsvizError(f"The {name} criterion reads the task model's loss: its scores must be given.")
            if name in given and given[name] is None:
                continue
            scores = given[name] if name in given else SCHEDULER.run_heavy(
                lambda: knn_accuracy(features, labels, seed=seed) if name == "knn_accuracy"  # noqa: B023 - run at once
                else FEATURE_CRITERIA[name](features))
            depth, rule = criterion_depth(name, scores, settings[name])
            picks.append({"name": name, "label": label, "scores": np.asarray(scores, dtype=np.float64),
                          "higher_is_better": HIGHER_IS_BETTER[name], "depth": depth, "rule": rule, "uses_alpha": False,
                          "setting": float(settings[name]), "scale": SCALES[name]})
    return picks


def oracle_pick(val_accuracy: np.ndarray, within: float) -> dict[str, Any]:
    """The oracle: the smallest depth whose val accuracy with a re-fit head (``val_accuracy``, one per
    depth) is within ``within`` of the full model's. Keys: see :func:`sls_picks`."""
    points = f"{100 * within:g} point" + ("" if 100 * within == 1 else "s")
    return {"name": "oracle", "label": f"oracle (val, head re-fit, within {points})", "scores": val_accuracy,
            "higher_is_better": True, "depth": oracle_depth(val_accuracy, within), "uses_alpha": False,
            "setting": float(within), "scale": SCALES["oracle"],
            "rule": f"The smallest depth whose val accuracy with a re-fit head is within {points} of the full model's."}
