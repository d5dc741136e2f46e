"""One loaded task and everything computed for it, memoised: what the app's pages read.

A :class:`Workspace` is created once per :class:`Selection` (the app keeps it in
``st.cache_resource``, shared by sessions), never mutates its model, and computes each thing - the
features of a split, a layer's map, the per-depth accuracy table, the timings of all depths - at most
once. Every method is plain Python, usable and tested without Streamlit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis, trainval_analysis
from slsviz.layers.features import FeatureBank, feature_bank
from slsviz.layers.projection import default_workers
from slsviz.models.depth import check_depth, depth_views
from slsviz.models.petl import trainable_names
from slsviz.pipeline import LoadedTask, load_for_analysis
from slsviz.pruning.accuracy import depth_accuracy_table
from slsviz.pruning.bench import BenchmarkResult, benchmark_models, prepare_for_timing
from slsviz.pruning.footprint import storage_per_task

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Selection:
    """What the user chose to load; hashable, so it can key a cache.

    Attributes:
        model: ``"default"`` or a timm ViT name.
        checkpoint: local weights for a timm name.
        task: a task checkpoint path, ``None`` (the shipped task with the default backbone) or ``"none"``.
        data: a dataset spec (``None``: the task's own).
        img_size: input size (``None``: the task's or the backbone's).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        limit: images per split (``None``: all), for quick looks.
    """

    model: str = "default"
    checkpoint: str | None = None
    task: str | None = None
    data: str | None = None
    img_size: int | None = None
    device: str = "auto"
    limit: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


class Workspace:
    """A loaded task with memoised features, analyses, accuracies and benchmarks.

    Args:
        loaded: the backbone, task model and dataset.
        limit: images per split used for features (``None``: all).
        batch_size: images per forward pass.
    """

    def __init__(self, loaded: LoadedTask, *, limit: int | None = None, batch_size: int = 64) -> None:
        self.loaded = loaded
        self.limit = limit
        self.batch_size = batch_size
        self._lock = threading.RLock()  # sessions share a workspace; compute each thing once
        self._banks: dict[str, FeatureBank] = {}
        self._analyses: dict[AnalysisSettings, LayerAnalysis] = {}
        self._depth_table: pd.DataFrame | None = None
        self._benchmarks: dict[int, dict[int, BenchmarkResult]] = {}

    @classmethod
    def open(cls, selection: Selection) -> Workspace:
        """Load what ``selection`` names."""
        loaded = load_for_analysis(model=selection.model, checkpoint=selection.checkpoint, task=selection.task,
                                   data=selection.data, img_size=selection.img_size, device=selection.device)
        return cls(loaded, limit=selection.limit)

    # --- facts -----------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Blocks of the full model."""
        return len(self.loaded.model.blocks)

    def model_card(self) -> dict[str, Any]:
        """What the home page shows about the loaded model."""
        model, meta, backbone = self.loaded.model, self.loaded.meta, self.loaded.backbone
        names = set(trainable_names(model))
        trainable = sum(p.numel() for n, p in model.named_parameters() if n in names)
        return {
            "backbone": backbone.id,
            "arch": backbone.arch,
            "weights": backbone.checksum,
            "source": backbone.source,
            "depth": self.num_layers,
            "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": trainable,
            "method": self.loaded.method,
            "petl": meta.petl if meta else {},
            "img_size": backbone.img_size,
            "dataset": self.loaded.data.name,
            "splits": {k: int(len(v)) for k, v in self.loaded.data.splits.items()},
            "num_classes": self.loaded.data.num_classes,
            "val_accuracy": meta.val_accuracy if meta else None,
            "test_accuracy": meta.test_accuracy if meta else None,
            "limit": self.limit,
        }

    # --- features and analyses -------------------------------------------------------------------

    def bank(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """Features of every block for ``split`` (disk-cached across runs, memoised here)."""
        with self._lock:
            if split not in self._banks:
                self._banks[split] = feature_bank(
                    self.loaded.model, self.loaded.data, split, self.loaded.preprocess,
                    backbone_checksum=self.loaded.backbone.checksum, batch_size=self.batch_size, limit=self.limit,
                    device=self.loaded.backbone.device, progress=progress)
            return self._banks[split]

    def analysis(self, settings: AnalysisSettings) -> LayerAnalysis:
        """The layer analysis of train + val features under ``settings`` (maps computed on demand)."""
        with self._lock:
            if settings not in self._analyses:
                self._analyses[settings] = trainval_analysis(self.bank("train"), self.bank("val"), settings,
                                                             workers=default_workers())
            return self._analyses[settings]

    def scored_indices(self) -> np.ndarray:
        """Dataset index of every scored point (train then val), for hover thumbnails."""
        return np.concatenate([self.bank("train").indices, self.bank("val").indices])

    def depth_table(self) -> pd.DataFrame:
        """Accuracy as-is and with a re-fit head for every depth, from cached features (test split)."""
        with self._lock:
            if self._depth_table is None:
                self._depth_table = depth_accuracy_table(self.loaded.model, self.bank("train"), self.bank("test"))
            return self._depth_table

    # --- the pruned model ------------------------------------------------------------------------

    def benchmarks(self, batch_size: int = 1, time_budget_s: float = 1.0,
                   progress: Progress | None = None) -> dict[int, BenchmarkResult]:
        """Measured throughput and latency of the model cut at every depth, timed together.

        All depths are timed interleaved (see :func:`slsviz.pruning.bench.benchmark_models`), so their
        ratios hold on a machine whose speed drifts; the cut models share one merged copy's blocks.
        Measured once per batch size; ``time_budget_s`` is per depth.
        """
        with self._lock:
            if batch_size not in self._benchmarks:
                merged = prepare_for_timing(self.loaded.model)
                views = depth_views(merged, range(1, self.num_layers + 1))
                self._benchmarks[batch_size] = benchmark_models(
                    views, self.loaded.backbone.img_size, batch_size=batch_size, device=self.loaded.backbone.device,
                    time_budget_s=time_budget_s, merged=True, progress=progress)
            return self._benchmarks[batch_size]

    def benchmark(self, depth: int, batch_size: int = 1) -> BenchmarkResult:
        """What :meth:`benchmarks` measured for the model cut at ``depth``."""
        return self.benchmarks(batch_size)[check_depth(depth, self.num_layers)]

    def storage(self, depth: int) -> list[dict]:
        """Bytes per task at ``depth``: full PETL, SLS, structurally pruned."""
        return storage_per_task(self.loaded.model, depth)
