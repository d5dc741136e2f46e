"""Training on a study's backbone and data: a new task, or the model cut at a depth trained further.
Plain functions; a training takes its turn on the scheduler (torch's global generator is shared)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from slsviz.models.backbones import file_checksum
from slsviz.models.depth import check_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.selection import LoadedTask
from slsviz.models.task import TaskMeta, fit_task, save_task
from slsviz.models.train import Recipe
from slsviz.progress import EpochProgress
from slsviz.pruning.accuracy import accuracy_retrained
from slsviz.scheduler import SCHEDULER
from slsviz.storage import atomic_path, cache_dir


def train_new_task(loaded: LoadedTask, method: str, epochs: int, *, limit: int | None = None,
                   progress: EpochProgress | None = None) -> tuple[Path, TaskMeta]:
    """Train ``method``'s adapters and a head on ``loaded``'s backbone and data (the paper's recipe:
    :class:`~slsviz.models.train.Recipe`'s defaults) and keep the task checkpoint in the cache.

    The file is named by its content, so another run (other settings, another session) never
    overwrites a checkpoint a study may be serving.
    """
    backbone, data = loaded.backbone, loaded.data
    with SCHEDULER.training():
        model, meta, _ = fit_task(backbone, data, PetlConfig(method), Recipe(epochs=epochs), device=backbone.device,
                                  limit=limit, progress=progress)
    folder = cache_dir() / "tasks"
    with tempfile.TemporaryDirectory(prefix=".train-", dir=folder.parent) as scratch:
        written = save_task(Path(scratch) / "task.safetensors", model, meta)
        name = f"{method}-{meta.dataset.replace('/', '_')}-{epochs}ep-{file_checksum(written)}.safetensors"
        with atomic_path(folder / name) as tmp:
            written.replace(tmp)
    return folder / name, meta


def retrain_at(loaded: LoadedTask, depth: int, epochs: int, *, kind: str = "ft", limit: int | None = None,
               progress: EpochProgress | None = None) -> dict:
    """Test accuracy of ``loaded``'s model cut at ``depth`` after training its adapters and head further
    (the paper's ``"ft"``: constant lr 1e-5, or ``"clr"``); ``{"depth", "kind", "epochs",
    "accuracy_retrained", "val_accuracy"}``. The loaded model is not touched."""
    with SCHEDULER.training():
        out = accuracy_retrained(loaded.model, check_depth(depth, len(loaded.model.blocks)), loaded.data,
                                 loaded.preprocess, kind=kind, epochs=epochs, device=loaded.backbone.device,
                                 limit=limit, progress=progress)
    return {k: v for k, v in out.items() if k != "model"}
