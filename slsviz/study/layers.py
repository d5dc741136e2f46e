"""The layer study: per analysis settings, every block's maps and scores, the SLS recommendation and
its stability, on the scored images of a :class:`~slsviz.study.features.FeatureStore`."""

from __future__ import annotations

import pandas as pd

from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis, train_val_probe
from slsviz.layers.projection import default_workers
from slsviz.layers.rule import SLSRule
from slsviz.layers.stability import Spread
from slsviz.progress import StageProgress
from slsviz.scheduler import Memo, Parallel
from slsviz.study.features import FeatureStore
from slsviz.study.resampling import settings_stability


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
        return self.analysis(settings).recommend(lazy=True)

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


