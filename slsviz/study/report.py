"""The whole analysis headless: what ``slsviz analyze`` reports and writes, from a study's parts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from slsviz.device import describe_device
from slsviz.environment import environment
from slsviz.layers.analysis import AnalysisSettings
from slsviz.progress import StageProgress, one_stage
from slsviz.storage import json_float, write_json_and_csv

if TYPE_CHECKING:
    from slsviz.study.facade import Study


def report(study: Study, settings: AnalysisSettings = AnalysisSettings(),
           progress: StageProgress | None = None) -> dict[str, Any]:
    """Everything ``slsviz analyze`` reports, JSON-ready, with how long each stage took.

    In the order that answers first: train + val features -> the lazy recommendation -> test
    features -> every layer's scores -> accuracy at every depth.
    """
    store = study.features
    timings: dict[str, float] = {}
    start = time.perf_counter()
    store.bank("train", one_stage(progress, "features:train"))
    store.bank("val", one_stage(progress, "features:val"))
    timings["features_trainval_s"] = time.perf_counter() - start
    analysis = study.layers.analysis(settings)
    t = time.perf_counter()
    rule = study.layers.recommend(settings)
    timings["recommendation_s"] = time.perf_counter() - t
    timings["time_to_recommendation_s"] = time.perf_counter() - start
    t = time.perf_counter()
    test = store.bank("test", one_stage(progress, "features:test"))
    timings["features_test_s"] = time.perf_counter() - t
    t = time.perf_counter()
    table = analysis.table(progress=one_stage(progress, "maps"))
    timings["all_layers_s"] = time.perf_counter() - t
    t = time.perf_counter()
    accuracy = study.depths.table(settings.seed)
    as_is, refit = accuracy["accuracy_as_is"].to_numpy(), accuracy["accuracy_head_refit"].to_numpy()
    table = table.assign(accuracy_as_is=as_is, accuracy_head_refit=refit)
    timings["accuracy_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start

    loaded, meta = study.loaded, study.loaded.meta
    return {
        "backbone": loaded.backbone.id,
        "backbone_arch": loaded.backbone.arch,
        "backbone_checksum": loaded.backbone.checksum,
        "method": loaded.method,
        "task_val_accuracy": meta.val_accuracy if meta else None,
        "task_test_accuracy": meta.test_accuracy if meta else None,
        "dataset": loaded.data.name,
        "split_info": loaded.data.split_info,
        "scored_split": "trainval",
        "img_size": loaded.backbone.img_size,
        "batch_size": store.batch_size,
        "map_workers": study.layers.workers,
        "limit": store.limit,
        "num_images": int(len(analysis.labels)),
        "num_test_images": test.num_samples,
        "num_layers": analysis.num_layers,
        "token": store.token,
        **{k: v for k, v in settings.to_dict().items() if k in ("alpha", "metric", "projection", "space", "seed")},
        "projection_params": settings.projection_params if settings.projection == "umap" else {},
        "threshold": float(rule.threshold_),
        "recommended_depth": int(rule.depth_),
        "pruning": bool(rule.pruning_),
        "reason": rule.reason_,
        "accuracy_as_is_note": loaded.head_note,
        "accuracy_full": json_float(as_is[-1]),
        "accuracy_full_head_refit": json_float(refit[-1]),
        "accuracy_at_recommended_depth": json_float(as_is[rule.depth_ - 1]),
        "accuracy_head_refit_at_recommended_depth": json_float(refit[rule.depth_ - 1]),
        "device": describe_device(loaded.backbone.device),
        "environment": environment(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        **({"stage_starts": study.stage_starts} if study.stage_starts else {}),
        "layers": [{k: (json_float(v) if k not in ("layer", "stage") else int(v)) for k, v in row.items()}
                   for row in _with_stages(study, table).to_dict("records")],
    }


def _with_stages(study: Study, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per block) with a Swin's stage of each block after the block's number."""
    stages = study.stages()
    return table if stages is None else table.assign(stage=stages)[["layer", "stage", *table.columns[1:]]]


def write_report(study: Study, settings: AnalysisSettings, out: str | Path, *, save_features: bool = False,
                 progress: StageProgress | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Write ``report.json``, ``scores.csv`` (and ``features.npz``) into ``out``, each atomically.

    Returns:
        The report and the paths written.
    """
    made = report(study, settings, progress)
    written = write_json_and_csv(out, "report.json", made, "scores.csv", pd.DataFrame(made["layers"]))
    if save_features:
        written.append(study.features.write_scored(Path(out) / "features.npz"))
    return made, written
