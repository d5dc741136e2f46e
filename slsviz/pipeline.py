"""The whole SLS analysis of one task, headless: what ``slsviz analyze`` runs.

load backbone + task + data -> one-pass features of train, val and test -> maps and scores of
train+val (what the SLS code scores) -> the recommendation (lazy, top down) -> every layer's scores
-> per-depth accuracy from the cached features -> a JSON-ready report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch.nn as nn

from slsviz import defaults
from slsviz.data import LabelledImages, Preprocess, load_dataset
from slsviz.device import describe_device, resolve_device
from slsviz.environment import environment
from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis, trainval_analysis
from slsviz.layers.features import FeatureBank, feature_bank
from slsviz.layers.projection import default_workers
from slsviz.layers.rule import SLSRule
from slsviz.models.backbones import Backbone, load_backbone
from slsviz.models.task import TaskMeta, load_task, read_task_meta
from slsviz.pruning.accuracy import depth_accuracy_table
from slsviz.storage import atomic_path

StageProgress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: features:<split>, maps, scores."""


@dataclass
class LoadedTask:
    """A backbone with its task model (adapters + head) and the dataset to analyse."""

    backbone: Backbone
    model: nn.Module
    meta: TaskMeta | None
    data: LabelledImages

    @property
    def preprocess(self) -> Preprocess:
        """The task's preprocessing (input size, mean, std of the backbone)."""
        return Preprocess(self.backbone.img_size, self.backbone.mean, self.backbone.std)

    @property
    def method(self) -> str:
        """The PETL method, or ``"none"`` for a bare backbone."""
        return self.meta.petl["method"] if self.meta else "none"


def load_for_analysis(
    *,
    model: str = defaults.BACKBONE,
    checkpoint: str | None = None,
    task: str | Path | None = None,
    data: str | None = None,
    img_size: int | None = None,
    hub: bool = False,
    device: str = "auto",
    seed: int = 0,
) -> LoadedTask:
    """Load what an analysis needs. With the default backbone and no ``task``, the shipped task.

    A task fixes the input size and the dataset (unless ``data`` overrides it). A bare backbone
    (``task="none"``) is analysed without a task head: its as-is accuracy is not defined.
    """
    dev = resolve_device(device)
    if task is None and model == defaults.BACKBONE:
        task = defaults.TASK_PATH
    meta = None
    if task is not None and str(task) != "none":
        meta = read_task_meta(task)
        if img_size is not None and img_size != meta.img_size:
            raise SlsvizError(f"The task was trained at {meta.img_size} px; --img-size {img_size} does not fit it.")
        img_size = meta.img_size
    backbone = load_backbone(model, checkpoint, img_size=img_size, hub=hub, device=dev)
    if meta is not None:
        task_model, meta = load_task(task, backbone)
        dataset = data or meta.dataset
        seed = meta.split_seed if meta.split_seed is not None and data is None else seed
    else:
        task_model, dataset = backbone.model, data or "mnist5k"
    return LoadedTask(backbone, task_model, meta, load_dataset(dataset, seed=seed))


@dataclass
class AnalysisResult:
    """Everything an analysis produced."""

    report: dict[str, Any]
    scores: pd.DataFrame
    rule: SLSRule
    analysis: LayerAnalysis
    banks: dict[str, FeatureBank] = field(default_factory=dict)

    def write(self, out: str | Path, *, save_features: bool = False) -> list[Path]:
        """Write ``report.json``, ``scores.csv`` (and ``features.npz``) into ``out``, each atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        with atomic_path(out / "report.json") as tmp:
            tmp.write_text(json.dumps(self.report, indent=2), encoding="utf-8")
        written.append(out / "report.json")
        with atomic_path(out / "scores.csv") as tmp:
            self.scores.to_csv(tmp, index=False)
        written.append(out / "scores.csv")
        if save_features:
            with atomic_path(out / "features.npz") as tmp:
                with open(tmp, "wb") as f:  # np.savez would append .npz to a bare temp name
                    np.savez(f, features=np.asarray(self.analysis.features, np.float32), labels=self.analysis.labels)
            written.append(out / "features.npz")
        return written


def analyze(
    loaded: LoadedTask,
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    token: str = defaults.TOKEN,
    batch_size: int = 64,
    limit: int | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    progress: StageProgress | None = None,
) -> AnalysisResult:
    """Run the SLS analysis of ``loaded`` (see the module docstring).

    ``workers`` maps are computed at once (``None``: one per core, see
    :func:`slsviz.layers.projection.default_workers`); the results do not depend on it.
    """
    workers = default_workers() if workers is None else workers
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def stage(name: str):
        return (lambda done, total: progress(name, done, total)) if progress else None

    def bank(split: str) -> FeatureBank:
        return feature_bank(loaded.model, loaded.data, split, loaded.preprocess, backbone_checksum=loaded.backbone.checksum,
                            token=token, batch_size=batch_size, limit=limit, device=loaded.backbone.device,
                            use_cache=use_cache, progress=stage(f"features:{split}"))

    # Score train + val, as the SLS code does (VTAB's train800val200); probe: fit train, score val.
    # Test features are only needed for accuracy, so they come after the recommendation.
    train, val = bank("train"), bank("val")
    timings["features_trainval_s"] = time.perf_counter() - start
    analysis = trainval_analysis(train, val, settings, workers=workers)
    t = time.perf_counter()
    rule = analysis.recommend(lazy=True)
    timings["recommendation_s"] = time.perf_counter() - t
    timings["time_to_recommendation_s"] = time.perf_counter() - start
    t = time.perf_counter()
    test = bank("test")
    timings["features_test_s"] = time.perf_counter() - t
    banks = {"train": train, "val": val, "test": test}
    t = time.perf_counter()
    table = analysis.table(progress=stage("maps"))
    timings["all_layers_s"] = time.perf_counter() - t

    t = time.perf_counter()
    accuracy = depth_accuracy_table(loaded.model, train, test, seed=settings.seed)
    as_is, refit = accuracy["accuracy_as_is"].to_numpy(), accuracy["accuracy_head_refit"].to_numpy()
    table["accuracy_as_is"] = as_is
    table["accuracy_head_refit"] = refit
    timings["accuracy_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start

    report = {
        "backbone": loaded.backbone.id,
        "backbone_arch": loaded.backbone.arch,
        "backbone_checksum": loaded.backbone.checksum,
        "method": loaded.method,
        "task_val_accuracy": loaded.meta.val_accuracy if loaded.meta else None,
        "task_test_accuracy": loaded.meta.test_accuracy if loaded.meta else None,
        "dataset": loaded.data.name,
        "split_info": loaded.data.split_info,
        "scored_split": "trainval",
        "img_size": loaded.backbone.img_size,
        "batch_size": batch_size,
        "map_workers": workers,
        "limit": limit,
        "num_images": int(len(analysis.labels)),
        "num_test_images": test.num_samples,
        "num_layers": analysis.num_layers,
        "token": token,
        **{k: v for k, v in settings.to_dict().items() if k in ("alpha", "metric", "projection", "space", "seed")},
        "projection_params": settings.projection_params if settings.projection == "umap" else {},
        "threshold": float(rule.threshold_),
        "recommended_depth": int(rule.depth_),
        "pruning": bool(rule.pruning_),
        "reason": rule.reason_,
        "accuracy_full": _float(as_is[-1]),
        "accuracy_full_head_refit": _float(refit[-1]),
        "accuracy_at_recommended_depth": _float(as_is[rule.depth_ - 1]),
        "accuracy_head_refit_at_recommended_depth": _float(refit[rule.depth_ - 1]),
        "device": describe_device(loaded.backbone.device),
        "environment": environment(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "layers": [{k: (_float(v) if k != "layer" else int(v)) for k, v in row.items()} for row in table.to_dict("records")],
    }
    return AnalysisResult(report=report, scores=table, rule=rule, analysis=analysis, banks=banks)


def _float(x: float) -> float | None:
    """JSON-safe: NaN becomes null."""
    x = float(x)
    return None if np.isnan(x) else x
