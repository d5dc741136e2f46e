"""Per-layer analysis on cached features: 2-D maps, scores and the SLS recommendation.

:class:`LayerAnalysis` computes a layer's map and scores only when asked, and remembers them, so
the lazy SLS scan (top down, stopping at the first block under the threshold) recommends a depth
before the other layers are mapped; :meth:`LayerAnalysis.table` fills in the rest afterwards. With
a runner of several workers the scan maps the next layers down while the rule reads the current
one: any map it computes beyond the rule's need is one the table needs next anyway. The analysis
starts no thread itself: its :class:`Runner` decides where each computation runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.choices import METRICS, PROJECTIONS, SPACES
from slsviz.errors import DataError, SlsvizError
from slsviz.layers.projection import project_layers
from slsviz.layers.rule import SLSRule
from slsviz.layers.scores import (
    CLUSTER_METRICS,
    cluster_scores,
    probe_accuracy,
)
from slsviz.progress import Progress

T = TypeVar("T")


@dataclass(frozen=True)
class AnalysisSettings:
    """How layers are mapped, scored and turned into a recommendation.

    Attributes:
        projection: ``"tsne"`` (the paper's), ``"umap"`` or ``"pca"``.
        metric: the score the SLS rule reads: ``"silhouette"`` (the paper's), ``"calinski_harabasz"``,
            ``"davies_bouldin"`` (lower is better) or ``"probe_accuracy"``.
        space: cluster scores on the ``"2d"`` map (the paper's) or on the ``"raw"`` features.
        alpha: the SLS threshold fraction.
        seed: seed of every projection.
        n_neighbors: UMAP neighbourhood size.
        min_dist: UMAP minimum distance.
        umap_metric: UMAP input metric.
    """

    projection: str = defaults.PROJECTION
    metric: str = defaults.METRIC
    space: str = defaults.SPACE
    alpha: float = defaults.ALPHA
    seed: int = defaults.SEED
    n_neighbors: int = defaults.UMAP_N_NEIGHBORS
    min_dist: float = defaults.UMAP_MIN_DIST
    umap_metric: str = defaults.UMAP_METRIC

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise SlsvizError(f"Unknown projection {self.projection!r}: use one of {', '.join(PROJECTIONS)}.")
        if self.metric not in METRICS:
            raise SlsvizError(f"Unknown metric {self.metric!r}: use one of {', '.join(METRICS)}.")
        if self.space not in SPACES:
            raise SlsvizError(f"Unknown space {self.space!r}: use 2d (the map) or raw (the features).")

    @property
    def higher_is_better(self) -> bool:
        """Whether the chosen metric grows with better-separated classes."""
        return METRICS[self.metric]

    @property
    def projection_params(self) -> dict:
        """Settings passed to the projection (UMAP's; t-SNE and PCA ignore them)."""
        return {"n_neighbors": self.n_neighbors, "min_dist": self.min_dist, "metric": self.umap_metric}

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


class Runner(Protocol):
    """How an analysis runs its computations (:class:`InThisThread`, or the app's scheduler, which
    runs maps several at once, each once, beside other sessions: ``slsviz.scheduler.Parallel``)."""

    workers: int

    def run(self, compute: Callable[[], T]) -> T:
        """``compute()``, here (one layer's scores)."""

    def run_all(self, jobs: Mapping[Hashable, Callable[[], T]], progress: Progress | None = None) -> dict[Hashable, T]:
        """Every job's result, in ``jobs``' order; ``progress(done, total)`` as they end."""

    def start(self, jobs: Mapping[Hashable, Callable[[], T]]) -> None:
        """Start ``jobs`` without waiting (maps a lazy scan will read next); a no-op is allowed."""

    def cancel_pending(self) -> None:
        """Drop started jobs that have not begun."""


class InThisThread:
    """The plain :class:`Runner`: every computation in the caller's thread, one after the other."""

    workers = 1

    def run(self, compute: Callable[[], T]) -> T:
        return compute()

    def run_all(self, jobs: Mapping[Hashable, Callable[[], T]], progress: Progress | None = None) -> dict[Hashable, T]:
        results = {}
        for key, compute in jobs.items():
            results[key] = compute()
            if progress is not None:
                progress(len(results), len(jobs))
        return results

    def start(self, jobs: Mapping[Hashable, Callable[[], T]]) -> None:
        pass

    def cancel_pending(self) -> None:
        pass


def train_val_probe(features: np.ndarray, labels: np.ndarray, n_train: int) -> tuple[np.ndarray, ...]:
    """The linear probe of a scored set that is train then val (VTAB's train800val200): fit on the first
    ``n_train`` points, scored on the rest; ``probe=`` of :class:`LayerAnalysis`."""
    return features[:, :n_train], labels[:n_train], features[:, n_train:], labels[n_train:]


class LayerAnalysis:
    """Maps and scores of every layer of a feature set, computed on demand and memoised.

    Args:
        features: (L, N, D) features that are mapped and scored (e.g. train + val).
        labels: (N,) their classes.
        settings: how to map and score.
        cache_key: identifies ``features`` for the disk cache of maps; ``None`` disables it.
        probe: ``(train (L, Ntr, D), train labels, eval (L, Nev, D), eval labels)`` for the
            linear-probe score; ``None`` leaves it NaN.
        runner: how maps and scores are computed (default :class:`InThisThread`); with
            ``runner.workers > 1`` the lazy scan keeps that many maps under way. The maps do not
            depend on it.
    """

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        settings: AnalysisSettings = AnalysisSettings(),
        *,
        cache_key: str | None = None,
        probe: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
        runner: Runner | None = None,
    ) -> None:
        if features.ndim != 3 or features.shape[1] != len(labels):
            raise SlsvizError(f"Features must be (layers, N, D) with N = {len(labels)} labels; got {features.shape}.")
        if features.shape[0] == 0:
            raise SlsvizError("No layers to score: the features hold no layer (L = 0).")
        if probe is not None and not features.shape[0] == len(probe[0]) == len(probe[2]):
            raise SlsvizError(f"The probe features hold {len(probe[0])} layers (train) and {len(probe[2])} (eval), but "
                              f"the scored features hold {features.shape[0]}: all must come from the same model.")
        if len(np.unique(labels)) < 2:
            raise SlsvizError("Scoring layers needs images of at least 2 classes; these are all one class.")
        self.features = features
        self.labels = np.asarray(labels)
        self.settings = settings
        self.cache_key = cache_key
        self.probe_data = probe
        self.runner = InThisThread() if runner is None else runner
        self._maps: dict[int, np.ndarray] = {}
        self._scores: dict[int, dict[str, float]] = {}
        self._probes: dict[int, float] = {}

    @property
    def num_layers(self) -> int:
        """L."""
        return int(self.features.shape[0])

    @property
    def workers(self) -> int:
        """Maps computed at once."""
        return self.runner.workers

    def map(self, layer: int) -> np.ndarray:
        """The 2-D map of ``layer`` (1-based), (N, 2) in [0, 1]."""
        return self._maps[layer] if layer in self._maps else self.maps([layer])[layer]

    def maps(self, layers: list[int] | None = None, progress: Progress | None = None) -> dict[int, np.ndarray]:
        """Maps of ``layers`` (default: all), computing only the missing ones (through the runner,
        which computes each once even when app sessions ask at the same time)."""
        wanted = list(layers) if layers is not None else list(range(1, self.num_layers + 1))
        missing = [layer for layer in wanted if layer not in self._maps]
        if missing:
            offset = len(wanted) - len(missing)
            shown = (lambda done, _: progress(offset + done, len(wanted))) if progress is not None else None
            self._maps.update(self.runner.run_all({layer: self._map_job(layer) for layer in missing}, shown))
        elif progress is not None:
            progress(len(wanted), len(wanted))
        return {layer: self._maps[layer] for layer in wanted}

    def _map_job(self, layer: int) -> Callable[[], np.ndarray]:
        s = self.settings

        def job() -> np.ndarray:
            return project_layers(self.features, s.projection, layers=[layer], seed=s.seed, cache_key=self.cache_key,
                                  **s.projection_params)[layer]
        return job

    def scores(self, layer: int) -> dict[str, float]:
        """All scores of ``layer``: the three cluster scores (in the chosen space) and the probe."""
        return {**self._cluster(layer), "probe_accuracy": self._probe(layer)}

    def score(self, layer: int, metric: str | None = None) -> float:
        """``metric``'s score of ``layer`` (default: the one the SLS rule reads); computes nothing else."""
        metric = self.settings.metric if metric is None else metric
        if metric == "probe_accuracy":  # needs no map
            return self._probe(layer)
        return self._cluster(layer)[metric]

    def _cluster(self, layer: int) -> dict[str, float]:
        if layer not in self._scores:
            if not 1 <= layer <= self.num_layers:
                raise SlsvizError(f"Layer {layer} is out of range: blocks are 1..{self.num_layers}.")
            points = self.map(layer) if self.settings.space == "2d" else np.asarray(self.features[layer - 1], np.float32)
            try:
                self._scores[layer] = self.runner.run(lambda: cluster_scores(points, self.labels))
            except DataError as exc:
                raise DataError(f"Layer {layer}: {exc}") from exc
        return self._scores[layer]

    def recommend(self, lazy: bool = True) -> SLSRule:
        """The SLS rule fitted on this analysis; ``lazy`` scores only the layers the rule needs.

        With a runner of several workers a lazy scan keeps that many maps under way, top down,
        ahead of the rule. It returns as soon as the rule has its answer: maps still running finish
        and are picked up (not recomputed) by :meth:`maps` and :meth:`table`.
        """
        rule = SLSRule(self.settings.alpha, self.settings.higher_is_better)
        if not lazy:
            return rule.fit([self.score(layer) for layer in range(1, self.num_layers + 1)])
        if self.workers == 1 or self.settings.space != "2d" or self.settings.metric == "probe_accuracy":
            return rule.fit_lazy(self.score, self.num_layers)

        def score_ahead(layer: int) -> float:
            ahead = range(layer, max(layer - self.workers, 0), -1)
            self.runner.start({a: self._map_job(a) for a in ahead if a not in self._maps})
            return self.score(layer)

        try:
            return rule.fit_lazy(score_ahead, self.num_layers)
        finally:
            self.runner.cancel_pending()  # maps not begun are dropped; running ones finish and are kept

    def table(self, progress: Progress | None = None) -> pd.DataFrame:
        """Every layer's scores: columns ``layer`` and :data:`slsviz.layers.scores.METRICS`."""
        if self.settings.space == "2d":
            self.maps(progress=progress)
        rows = [{"layer": layer, **self.scores(layer)} for layer in range(1, self.num_layers + 1)]
        return pd.DataFrame(rows, columns=["layer", *CLUSTER_METRICS, "probe_accuracy"])

    def _probe(self, layer: int) -> float:
        if self.probe_data is None:
            if self.settings.metric == "probe_accuracy":
                raise SlsvizError("The probe_accuracy metric needs train and val features for the probe.")
            return float("nan")
        if layer not in self._probes:
            train_x, train_y, eval_x, eval_y = self.probe_data
            self._probes[layer] = self.runner.run(lambda: probe_accuracy(
                np.asarray(train_x[layer - 1], np.float32), train_y, np.asarray(eval_x[layer - 1], np.float32), eval_y,
                seed=self.settings.seed))
        return self._probes[layer]

