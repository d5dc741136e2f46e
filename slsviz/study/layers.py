"""The layer study: per analysis settings, every block's maps and scores, the SLS recommendation and
its stability, on the scored images of a :class:`~slsviz.study.features.FeatureStore`."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from slsviz import defaults
from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis, train_val_probe
from slsviz.layers.projection import default_workers
from slsviz.layers.rule import SLSRule
from slsviz.layers.stability import Spread, spread_on_maps
from slsviz.progress import Progress, StageProgress
from slsviz.scheduler import Memo, Parallel
from slsviz.study.features import FeatureStore
from slsviz.study.resampling import settings_stability


@dataclass(frozen=True)
class Provisional:
    """The SLS recommendation from the scored splits' first images, shown while the rest are read and
    mapped; never the exact one.

    Attributes:
        rule: the rule, scanned top down on the first images' maps.
        analysis: those maps and scores.
        spread: the rule on bootstrap resamples of those images on the same maps
            (:func:`slsviz.layers.stability.spread_on_maps`; ``None`` for the probe score).
        images: ``(read, of)``: the images it scores, and the scored images of the exact one.
        train_images: how many of ``read`` are train images (the rest are val).
    """

    rule: SLSRule
    analysis: LayerAnalysis
    spread: Spread | None
    images: tuple[int, int]
    train_images: int


class LayerStudy:
    """Analyses of one feature store, one per settings, each made once.

    Args:
        features: the feature store whose train and val images are scored.
        workers: maps computed at once (``None``: one per core); the maps do not depend on it.
    """

    def __init__(self, features: FeatureStore, *, workers: int | None = None) -> None:
        workers = default_workers() if workers is None else workers
        if workers < 1:
            raise SlsvizError(f"workers (maps computed at once) must be at least 1, not {workers}.")
        self.features = features
        self.workers = workers
        self._analyses: Memo[LayerAnalysis] = Memo()
        self._spreads: Memo[Spread] = Memo()
        self._rules: Memo[SLSRule] = Memo()
        self._provisionals: Memo[Provisional] = Memo()

    def analysis(self, settings: AnalysisSettings) -> LayerAnalysis:
        """The analysis SLS makes, under ``settings``: train + val features scored together
        (VTAB's train800val200), the linear probe fit on train and scored on val; maps on demand."""
        def build() -> LayerAnalysis:
            features, labels = self.features.scored()
            return LayerAnalysis(features, labels, settings, cache_key=self.features.scored_key(),
                                 probe=train_val_probe(features, labels, self.features.bank("train").num_samples),
                                 runner=Parallel(self.workers))

        return self._analyses.get(settings, build)

    def recommend(self, settings: AnalysisSettings) -> SLSRule:
        """The SLS rule on ``settings``' scores, scanned top down: only the blocks it needs are mapped."""
        return self._rules.get(settings, lambda: self.analysis(settings).recommend(lazy=True))

    def ready(self, settings: AnalysisSettings) -> bool:
        """Whether the exact :meth:`recommend` is made."""
        return self._rules.peek(settings) is not None

    def provisional(self, settings: AnalysisSettings, progress: Progress | None = None) -> Provisional:
        """The SLS rule on the scored splits' first images (:meth:`FeatureStore.first_scored`), with its
        spread over ``defaults.PROVISIONAL_RESAMPLES`` resamples of them; made once per settings. The
        images it reads are the first batches of the exact pass, not read twice."""
        def build() -> Provisional:
            features, labels, n_train, key = self.features.first_scored(progress)
            analysis = LayerAnalysis(features, labels, settings, cache_key=key,
                                     probe=train_val_probe(features, labels, n_train), runner=Parallel(self.workers))
            rule = analysis.recommend(lazy=True)
            spread = spread_on_maps(analysis, defaults.PROVISIONAL_RESAMPLES, settings.seed)
            return Provisional(rule, analysis, spread, (len(labels), self.features.scored_size()), n_train)

        return self._provisionals.get(settings, build)

    def recommend_soon(self, settings: AnalysisSettings, progress: Progress | None = None) -> tuple[SLSRule, Provisional | None]:
        """``(rule, provisional)``: the exact :meth:`recommend` (and ``None``) when it is made, or as quick
        to make (small scored splits); otherwise the :meth:`provisional` one's rule and itself. Starts
        nothing: the caller starts the exact one (``Study.prefetch("layers")``)."""
        if self.ready(settings) or not self.features.previewed():
            return self.recommend(settings), None
        early = self.provisional(settings, progress)
        return early.rule, early

    def map_coordinates(self, settings: AnalysisSettings) -> pd.DataFrame:
        """Every block's 2-D map as one table: ``layer, index`` (in the dataset), ``label, x, y``."""
        analysis, indices = self.analysis(settings), self.features.scored_indices()
        return pd.concat([pd.DataFrame({"layer": layer, "index": indices, "label": analysis.labels,
                                        "x": points[:, 0], "y": points[:, 1]})
                          for layer, points in analysis.maps().items()], ignore_index=True)

    def stability(self, settings: AnalysisSettings, resamples: int, progress: StageProgress | None = None) -> Spread:
        """The SLS recommendation under ``settings`` on ``resamples`` bootstrap resamples of the scored
        images, each mapped anew (:func:`slsviz.study.resampling.settings_stability`); once per settings."""
        return self._spreads.get((settings, int(resamples)), lambda: settings_stability(
            self.features, settings, count=resamples, workers=self.workers, progress=progress))


