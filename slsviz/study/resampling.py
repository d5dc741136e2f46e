"""Stability: every criterion, and the SLS rule under any settings, on bootstrap resamples of the
scored images (:func:`slsviz.layers.stability.resamples`), each resample mapped anew."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from slsviz import defaults
from slsviz.errors import DataError, SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.layers.criteria import SETTINGS, knn_accuracy
from slsviz.layers.rule import SLSRule
from slsviz.layers.stability import Spread
from slsviz.layers.stability import resamples as draw
from slsviz.progress import StageProgress, one_stage
from slsviz.scheduler import SCHEDULER, Parallel
from slsviz.study.criteria import FEATURE_CRITERIA, GIVEN, OTHER_CRITERIA, OWN_RULE, SLS_VARIANTS, depth_at
from slsviz.study.features import FeatureStore


class _Resampled:
    """Criteria on a resample of the scored images (indices into them), one resample at a time."""

    def __init__(self, store: FeatureStore, seed: int, workers: int) -> None:
        self.features, self.labels = store.scored()
        self.n_train, self.workers, self.seed = store.bank("train").num_samples, workers, seed
        self._analysis: tuple[tuple, LayerAnalysis] | None = None

    def sls(self, settings: AnalysisSettings, idx: np.ndarray, map_seed: int) -> np.ndarray:
        """``settings``' score of every block (a :class:`LayerAnalysis` of the resample): on new maps
        (``map_seed``), on the raw features, or the probe fit on the resample's train images and scored
        on its val images."""
        probe = settings.metric == "probe_accuracy"
        mapping = replace(settings, seed=self.seed if probe else map_seed)
        key = (idx.tobytes(), probe, replace(mapping, metric=defaults.METRIC, alpha=defaults.ALPHA))
        if self._analysis is None or self._analysis[0] != key:
            # One resample at a time: the variants on the same maps come one after another and share them.
            train, val = idx[idx < self.n_train], idx[idx >= self.n_train]
            self._analysis = key, LayerAnalysis(
                self.features[:, idx], self.labels[idx], mapping, runner=Parallel(self.workers),
                probe=(self.features[:, train], self.labels[train], self.features[:, val], self.labels[val]) if probe else None)
        analysis = self._analysis[1]
        return np.array([analysis.score(layer, settings.metric) for layer in range(1, analysis.num_layers + 1)])

    def knn(self, idx: np.ndarray) -> np.ndarray:
        """kNN accuracy on each drawn image once (a duplicate in another fold would be its own nearest
        neighbour), with fewer folds when a class drew fewer than five images."""
        drawn = np.unique(idx)
        smallest = np.unique(self.labels[drawn], return_counts=True)[1].min()
        if smallest < 2:
            raise DataError("A bootstrap resample drew a single image of some class, too few for kNN's "
                            "cross-validation: score more images per split for the stability of kNN.")
        return SCHEDULER.run_heavy(lambda: knn_accuracy(self.features[:, drawn], self.labels[drawn],
                                                        folds=int(max(2, min(defaults.KNN_FOLDS, smallest))),
                                                        seed=self.seed))




def _each_resample(n: int, count: int, seed: int, progress: StageProgress | None) -> Iterator[tuple[np.ndarray, int]]:
    """The resamples' ``(indices, map_seed)``, reporting progress after each one is used."""
    draws, report = draw(n, count, seed), one_stage(progress, "stability (bootstrap resamples)")
    for done, resample in enumerate(draws, start=1):
        yield resample
        if report is not None:
            report(done, len(draws))


def stability(store: FeatureStore, *, count: int, workers: int = 1, seed: int = defaults.SEED,
              criteria: list[str] | None = None, settings: dict[str, float] | None = None,
              progress: StageProgress | None = None) -> dict[str, Spread]:
    """Every criterion (all but the oracle, or ``criteria``) on ``count`` bootstrap resamples of the
    scored images (:func:`slsviz.layers.stability.resamples`): each one's depths and scores.

    Per resample the maps are drawn again with the resample's seed (t-SNE once for the silhouette,
    Calinski-Harabasz and Davies-Bouldin variants, UMAP once); the probe is fit on the resample's train
    images and scored on its val images, as on the whole; kNN: see :meth:`_Resampled.knn`.
    Maps are drawn ``workers`` at a time.
    """
    settings = {**SETTINGS, **(settings or {})}
    names = [name for name, *_ in SLS_VARIANTS] + [name for name in OTHER_CRITERIA if name not in GIVEN]
    chosen = names if criteria is None else list(criteria)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SlsvizError(f"No stability for {', '.join(unknown)}: the criteria are {', '.join(names)}.")
    on = _Resampled(store, seed, workers)
    variants = {name: AnalysisSettings(projection=mapping.projection, space=mapping.space, metric=metric)
                for name, _, mapping, metric in SLS_VARIANTS}
    def score(name: str, idx: np.ndarray, map_seed: int) -> np.ndarray:
        if name in variants:
            return on.sls(variants[name], idx, map_seed)
        return on.knn(idx) if name == "knn_accuracy" else FEATURE_CRITERIA[name](on.features[:, idx])

    def depth(name: str, scores: np.ndarray) -> int:
        return depth_at(name, scores, defaults.ALPHA if name in variants and name not in OWN_RULE else settings[name])

    # Resample by resample, every criterion in turn, so that one resample's maps serve all its variants.
    scores: dict[str, list[np.ndarray]] = {name: [] for name in chosen}
    for idx, map_seed in _each_resample(len(on.labels), count, seed, progress):
        for name in chosen:
            scores[name].append(np.asarray(score(name, idx, map_seed), dtype=np.float64))
    return {name: Spread(np.array([depth(name, s) for s in scores[name]]), np.stack(scores[name])) for name in chosen}


def settings_stability(store: FeatureStore, settings: AnalysisSettings, *, count: int, workers: int = 1,
                       progress: StageProgress | None = None) -> Spread:
    """The SLS rule under ``settings`` (any map, score and alpha, as the Layers page sets them) on
    ``count`` bootstrap resamples, seeded by ``settings.seed``: the depths, and the band of each
    block's score."""
    on = _Resampled(store, settings.seed, workers)
    scores = [on.sls(settings, idx, map_seed)
              for idx, map_seed in _each_resample(len(on.labels), count, settings.seed, progress)]
    rule = SLSRule(settings.alpha, settings.higher_is_better)
    return Spread(np.array([int(rule.fit(s).depth_) for s in scores]), np.stack(scores))
