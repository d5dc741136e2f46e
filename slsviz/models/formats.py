"""The task formats slsviz opens, in one registry: slsviz's own task files, official SLS checkpoints,
PEFT LoRA folders and full fine-tunes (timm state dicts with a head, transformers classifier folders).

Each format is one module with one ``detect(file)``, which answers with a :class:`TaskSource` (what
the file says about itself, its tensors read) or ``None``, and the source's one ``open``, which builds
the task model with :func:`slsviz.models.task.build_task_model` and loads the tensors. Every format
reads through the same :class:`~slsviz.models.weights.WeightsFile`, so a file is read once on its way
from "what is it" to a loaded model, the backbone of a full fine-tune included. A new format is one
module and one line in :data:`DETECTORS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch.nn as nn

from slsviz.errors import CheckpointError
from slsviz.models import full, official, peft_lora, task
from slsviz.models.backbones import Backbone
from slsviz.models.task import TaskMeta
from slsviz.models.weights import WeightsFile


@dataclass(frozen=True)
class OpenOptions:
    """What the user gives beside a task file (the official checkpoints' adapter scale).

    Attributes:
        task_config: the official repository's ``configs/<method>/<dataset>.yaml``.
        scale: the adapter scale s, instead of ``task_config``.
    """

    task_config: str | os.PathLike | None = None
    scale: float | None = None


class TaskSource(Protocol):
    """A task file a format recognised, read but not opened yet.

    Attributes:
        kind: the format: ``"slsviz"``, ``"official"``, ``"peft"`` or ``"full"``.
        path: the file or folder.
        records_dataset: whether the file names the images it was trained on (else the user gives them).
        needs: the :class:`~slsviz.models.selection.Selection` fields the file leaves open.
        missing: the same, in words for the user.
    """

    kind: str
    path: Path
    records_dataset: bool

    @property
    def needs(self) -> tuple[str, ...]: ...

    @property
    def missing(self) -> tuple[str, ...]: ...

    def input_size(self, asked: int | None) -> int | None:
        """The input size to load the backbone at, given what the user asked (``None``: nothing)."""

    def backbone(self, model: str, checkpoint: str | WeightsFile | None) -> tuple[str, str | WeightsFile | None]:
        """The backbone to load (timm name, weights), given what the user named."""

    def open(self, backbone: Backbone, options: OpenOptions) -> tuple[nn.Module, TaskMeta]:
        """The task model on ``backbone``, in eval mode, and its meta (recording its source)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the format and what the file says."""


# In this order: slsviz's own file before a full fine-tune, which a .safetensors may also look like.
DETECTORS: tuple[Callable[[WeightsFile], TaskSource | None], ...] = (
    task.detect, official.detect, peft_lora.detect, full.detect)


def detect(path: str | os.PathLike | WeightsFile) -> TaskSource | None:
    """The task at ``path``, or ``None`` when no format claims it.

    Raises:
        SlsvizError: a recognised file slsviz cannot open, with the reason.
        CheckpointError: unreadable files.
    """
    file = path if isinstance(path, WeightsFile) else WeightsFile(path)
    for detector in DETECTORS:
        found = detector(file)
        if found is not None:
            return found
    return None


def open_source(path: str | os.PathLike) -> TaskSource:
    """The task at ``path``, which must be one.

    Raises:
        CheckpointError: no format claims it; the message says what slsviz opens.
        SlsvizError: a recognised file slsviz cannot open, with the reason.
    """
    found = detect(path)
    if found is not None:
        return found
    if Path(path).suffix.lower() in (".pt", ".pth", ".bin"):
        raise CheckpointError(
            f"{path} is not a task checkpoint slsviz opens: a torch file must hold the adapter and head tensors the "
            "official SLS code saves (blocks.<i>.adapter_attn..., head.weight) or a whole timm ViT with its head (a full "
            "fine-tune); slsviz's own tasks are .safetensors.")
    task.read_task_meta(path)  # says what is wrong with it as an slsviz task file
    raise CheckpointError(f"{path} is not a task checkpoint slsviz opens.")
