"""How stable a criterion's pick is: the same criterion on bootstrap resamples of the scored images.

Each resample draws the N scored images with replacement (seeded); a map-based criterion also maps
with a seed of its own per resample, so the spread covers both the images and the map's randomness.
The same ``seed`` gives the same resamples, maps and spread.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from slsviz.errors import SlsvizError
from slsviz.layers.analysis import LayerAnalysis
from slsviz.layers.rule import SLSRule
from slsviz.layers.scores import CLUSTER_SCORES


@dataclass(frozen=True)
class Spread:
    """A criterion's picks and scores over resamples.

    Attributes:
        depths: (B,) the depth each resample gives.
        scores: (B, L) each resample's score per block.
    """

    depths: np.ndarray
    scores: np.ndarray

    @property
    def mode(self) -> int:
        """The most frequent depth (the shallower one on a tie)."""
        values, counts = np.unique(self.depths, return_counts=True)
        return int(values[np.argmax(counts)])

    def interval(self, level: float = 0.9) -> tuple[int, int]:
        """The central ``level`` interval of the depths (``level`` 0.9: the 5th to the 95th percentile,
        rounded outward to whole depths)."""
        tail = 100 * (1 - level) / 2
        return (int(np.floor(np.percentile(self.depths, tail))), int(np.ceil(np.percentile(self.depths, 100 - tail))))

    def band(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Per block, the central ``level`` interval of the scores: ``(low (L,), high (L,))``."""
        tail = 100 * (1 - level) / 2
        with warnings.catch_warnings():  # a block with no score (Block Influence's first) stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanpercentile(self.scores, tail, axis=0), np.nanpercentile(self.scores, 100 - tail, axis=0)

    def to_dict(self, level: float = 0.9) -> dict:
        """JSON-ready: the depths, their mode and interval, and the score band."""
        low, high = self.band(level)
        return {"depths": [int(d) for d in self.depths], "mode": self.mode, "interval": list(self.interval(level)),
                "level": level, "band_low": [None if np.isnan(v) else float(v) for v in low],
                "band_high": [None if np.isnan(v) else float(v) for v in high]}


def resamples(n: int, count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """``count`` bootstrap resamples of ``n`` images: ``(indices, map_seed)`` each, the indices drawn
    with replacement and sorted, the map seed ``seed + 1 + b`` for resample ``b``; all from ``seed``."""
    if n < 2 or count < 1:
        raise SlsvizError(f"Bootstrap needs at least 2 images and 1 resample, not {n} images and {count} resamples.")
    rng = np.random.default_rng(seed)
    return [(np.sort(rng.integers(0, n, n)), seed + 1 + b) for b in range(count)]


def spread_on_maps(analysis: LayerAnalysis, count: int, seed: int) -> Spread | None:
    """The SLS rule of ``analysis``' settings on ``count`` bootstrap resamples of its points, each scored
    on the maps already drawn (:func:`resamples`' indices; no map drawn anew, so it is cheap): how far the
    pick moves with the images alone. Each resample's scan is lazy, so a block it reaches that the
    analysis has not mapped yet is mapped (once). ``None`` for the linear-probe score, which has no points.
    """
    settings = analysis.settings
    if settings.metric == "probe_accuracy":
        return None
    score = CLUSTER_SCORES[settings.metric]
    labels = analysis.labels

    def points(layer: int) -> np.ndarray:
        return analysis.map(layer) if settings.space == "2d" else np.asarray(analysis.features[layer - 1], np.float32)

    depths, scores = [], []
    for idx, _ in resamples(len(labels), count, seed):
        rule = SLSRule(settings.alpha, settings.higher_is_better).fit_lazy(
            lambda layer, idx=idx: float(score(points(layer)[idx], labels[idx])), analysis.num_layers)
        depths.append(rule.depth_)
        scores.append(rule.scores_)
    return Spread(np.asarray(depths), np.vstack(scores))
