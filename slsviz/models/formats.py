"""Task files other tools wrote, told apart by what they hold: official SLS checkpoints, PEFT LoRA
folders, full fine-tunes (timm state dicts with a head, transformers classifier folders)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slsviz.errors import CheckpointError
from slsviz.models import full, official, peft_lora
from slsviz.models.backbones import Backbone
from slsviz.models.task import TaskMeta


@dataclass(frozen=True)
class ForeignTask:
    """A task file another tool wrote, detected but not opened yet.

    Attributes:
        kind: ``"official"``, ``"peft"`` or ``"full"``.
        found: what the file says about itself (the format module's record).
        tensors: its tensors under slsviz's names.
    """

    kind: str
    found: Any
    tensors: dict[str, torch.Tensor]

    @property
    def img_size(self) -> int | None:
        """The input size the file was trained at, where the format fixes it (official SLS: 224; a full
        fine-tune's position embeddings)."""
        if self.kind == "official":
            return official.IMG_SIZE
        return self.found.img_size if self.kind == "full" else None

    @property
    def is_its_own_backbone(self) -> bool:
        """Whether the file also holds the backbone (a full fine-tune)."""
        return self.kind == "full"


def detect(path: str | os.PathLike) -> ForeignTask | None:
    """The foreign task at ``path``, or ``None`` (slsviz's own task, or not a task).

    Raises:
        SlsvizError: a recognised file slsviz cannot open, with the reason.
        CheckpointError: unreadable files.
    """
    for kind, module in (("official", official), ("peft", peft_lora), ("full", full)):
        hit = module.detect(path)
        if hit is not None:
            return ForeignTask(kind, *hit)
    if Path(path).suffix.lower() in (".pt", ".pth", ".bin"):
        raise CheckpointError(
            f"{path} is not a task checkpoint slsviz opens: a torch file must hold the adapter and head tensors the "
            "official SLS code saves (blocks.<i>.adapter_attn..., head.weight) or a whole timm ViT with its head (a full "
            "fine-tune); slsviz's own tasks are .safetensors.")
    return None


def open_task(task: ForeignTask, backbone: Backbone, *, task_config: str | os.PathLike | None = None,
              scale: float | None = None) -> tuple[nn.Module, TaskMeta]:
    """The task model of ``task`` on ``backbone``, and its meta (recording its source)."""
    if task.kind == "official":
        return official.open_official(task.found, task.tensors, backbone, task_config=task_config, scale=scale)
    if task.kind == "peft":
        return peft_lora.open_peft(task.found, task.tensors, backbone)
    return full.open_full(task.found, task.tensors, backbone)
