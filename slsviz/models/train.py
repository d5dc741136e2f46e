"""Training and evaluating PETL task models: only adapters and head learn, the backbone is frozen.

The defaults follow the paper's recipe (AdamW lr 1e-3, weight decay 1e-4, batch 64, cosine schedule
with 10 warm-up epochs down to 1e-5, drop-path 0.1). The checkpoint kept is the best on *val*.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch.utils.data import DataLoader

from slsviz import defaults
from slsviz.data import LabelledImages, Preprocess, make_loader
from slsviz.device import autocast
from slsviz.errors import SlsvizError
from slsviz.models.petl import set_drop_path, trainable_names
from slsviz.progress import EpochProgress


@dataclass(frozen=True)
class Recipe:
    """How a task model is trained; recorded in the task checkpoint.

    Attributes:
        epochs: passes over the train split.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        batch_size: images per step.
        warmup_epochs: linear warm-up length (capped below ``epochs``); ``None``:
            :func:`slsviz.defaults.warmup_epochs` (a tenth of the epochs, at least one).
        min_lr: learning rate at the end of the cosine decay; also the warm-up start.
        drop_path: stochastic-depth rate of the last block (linear over blocks) while training.
        schedule: ``"cosine"`` (warm-up then cosine, the paper's PETL and CLR recipes) or
            ``"constant"`` (the paper's FT retraining at a fixed lr).
        seed: seeds shuffling, dropout and drop-path.
        split: the split trained on; checkpoints are chosen on ``"val"``.
    """

    epochs: int = defaults.TRAIN_EPOCHS
    lr: float = defaults.TRAIN_LR
    weight_decay: float = defaults.TRAIN_WEIGHT_DECAY
    batch_size: int = defaults.TRAIN_BATCH_SIZE
    warmup_epochs: int | None = None
    min_lr: float = defaults.TRAIN_MIN_LR
    drop_path: float = defaults.TRAIN_DROP_PATH
    schedule: str = "cosine"
    seed: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise SlsvizError(f"Training needs at least 1 epoch and a batch of at least 1 (got {self.epochs}, {self.batch_size}).")
        if self.schedule not in {"cosine", "constant"}:
            raise SlsvizError(f"Unknown schedule {self.schedule!r}: use cosine or constant.")
        if self.warmup_epochs is None:
            object.__setattr__(self, "warmup_epochs", defaults.warmup_epochs(self.epochs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the optimiser named."""
        return {"optimizer": "AdamW", **asdict(self)}

    def scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Scheduler | None:
        """timm's cosine schedule, stepped per optimiser step: a linear warm-up from ``min_lr`` to ``lr``
        (at most ``epochs - 1`` epochs), then a cosine down to ``min_lr`` over the remaining steps.
        ``None`` for the constant schedule (the optimiser's lr stays ``lr``).

        Call ``scheduler.step_update(step)`` before optimiser step ``step`` (0-based).
        """
        if self.schedule == "constant":
            return None
        warmup = min(self.warmup_epochs, self.epochs - 1) * steps_per_epoch
        return CosineLRScheduler(optimizer, t_initial=self.epochs * steps_per_epoch - warmup, lr_min=self.min_lr,
                                 warmup_t=warmup, warmup_lr_init=self.min_lr, warmup_prefix=True, t_in_epochs=False)


def retrain_recipe(kind: str, epochs: int, *, seed: int = 0, batch_size: int = 64) -> Recipe:
    """The paper's recipes for training a pruned model further.

    ``"ft"``: constant lr 1e-5. ``"clr"``: warm-up to 1e-3, then cosine down to 1e-5 (warm-up is a
    tenth of the epochs, at least one).
    """
    if kind == "ft":
        return Recipe(epochs=epochs, lr=1e-5, schedule="constant", seed=seed, batch_size=batch_size)
    if kind == "clr":
        return Recipe(epochs=epochs, lr=1e-3, min_lr=1e-5, seed=seed, batch_size=batch_size)
    raise SlsvizError(f"Unknown retraining {kind!r}: use ft (constant lr 1e-5) or clr (warm-up + cosine).")


@dataclass
class TrainResult:
    """What a training run produced (the model passed in is left at its best-on-val state)."""

    best_epoch: int
    val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` over ``loader`` (eval mode; the model's mode is restored)."""
    logits, labels = predict(model, loader, device)
    return int((logits.argmax(-1) == labels).sum()) / len(labels)


def predict(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, classes) as float32 and labels (N,) of ``model`` over ``loader``, in the loader's order.

    Eval mode (the model's mode is restored); bf16 autocast on CUDA, as in training.

    Raises:
        SlsvizError: an empty loader.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    try:
        with torch.inference_mode():
            for images, labels in loader:
                with autocast(device):
                    logits = model(images.to(device, non_blocking=True))
                outputs.append(logits.float().cpu().numpy())
                targets.append(labels.numpy())
    finally:
        model.train(was_training)
    if not outputs:
        raise SlsvizError("Nothing to evaluate: the split is empty.")
    return np.concatenate(outputs), np.concatenate(targets)


def train_task(
    model: nn.Module,
    data: LabelledImages,
    preprocess: Preprocess,
    recipe: Recipe = Recipe(),
    *,
    device: torch.device | str = "cpu",
    progress: EpochProgress | None = None,
    limit: int | None = None,
) -> TrainResult:
    """Train the adapters and head of ``model`` on ``data``'s train split; keep the best on val.

    Args:
        model: a task model (see ``slsviz.models.task.build_task_model``); trained in place.
        data: the dataset; its ``recipe.split`` split trains, ``val`` selects the checkpoint.
        preprocess: image -> tensor.
        recipe: hyper-parameters.
        device: where to train.
        progress: called after every epoch.
        limit: use only the first ``limit`` images of each split (quick runs and tests).

    Returns:
        The best epoch, its val accuracy and the per-epoch history.
    """
    device = torch.device(device)
    names = set(trainable_names(model))
    params = [p for n, p in model.named_parameters() if n in names]
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    if not params:
        raise SlsvizError("The model has nothing to train: attach a PETL method and a head first.")

    # Shuffling, dropout and drop-path all draw from torch's global generator: one seed fixes them all,
    # and the caller's generator state is put back after. It is the process's: a caller running
    # trainings in several threads has them take turns (the app's slsviz.scheduler does).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(recipe.seed)
        return _train(model, names, params, data, preprocess, recipe, device, progress, limit)


def _train(model: nn.Module, names: set[str], params: list[nn.Parameter], data: LabelledImages, preprocess: Preprocess,
           recipe: Recipe, device: torch.device, progress: EpochProgress | None, limit: int | None) -> TrainResult:
    train_loader = make_loader(data, recipe.split, preprocess, recipe.batch_size, shuffle=True, limit=limit)
    val_loader = make_loader(data, "val", preprocess, 256, limit=limit)

    model.to(device)
    set_drop_path(model, recipe.drop_path)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    scheduler = recipe.scheduler(optimizer, len(train_loader))
    best = TrainResult(best_epoch=0, val_accuracy=-1.0)
    best_state: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    step = 0
    try:
        for epoch in range(1, recipe.epochs + 1):
            model.train()
            loss_sum, seen = 0.0, 0
            for images, labels in train_loader:
                if scheduler is not None:
                    scheduler.step_update(step)
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with autocast(device):
                    loss = loss_fn(model(images).float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(labels)
                seen += len(labels)
                step += 1
            val_acc = evaluate(model, val_loader, device)
            record = {"epoch": epoch, "loss": loss_sum / seen, "val_accuracy": val_acc,
                      "lr": optimizer.param_groups[0]["lr"]}
            best.history.append(record)
            if val_acc > best.val_accuracy:  # ties keep the earlier epoch
                best.best_epoch, best.val_accuracy = epoch, val_acc
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
            if progress is not None:
                progress(epoch, recipe.epochs, record)
    finally:
        set_drop_path(model, 0.0)
        model.eval()
    model.load_state_dict(best_state, strict=False)
    best.seconds = time.perf_counter() - start
    return best

