"""What the user chose to load (:class:`Selection`), opened once into a :class:`LoadedTask`: the
backbone, the task model (adapters + head) and the dataset. Every face opens a model through
:func:`open_selection`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass

import torch.nn as nn

from slsviz import defaults
from slsviz.data import LabelledImages, Preprocess, load_dataset
from slsviz.device import resolve_device
from slsviz.errors import SlsvizError
from slsviz.models import formats
from slsviz.models.backbones import Backbone, load_backbone
from slsviz.models.task import TaskMeta, head_applies


@dataclass(frozen=True)
class Selection:
    """What the user chose to load and how to extract features; hashable, so it can key a cache.

    Attributes:
        model: ``"default"`` or a timm ViT name.
        checkpoint: local weights for a timm name.
        task: a task checkpoint path, ``None`` (the shipped task with the default backbone) or ``"none"``.
        data: a dataset spec (``None``: the task's own).
        img_size: input size (``None``: the task's or the backbone's).
        hub: fetch the timm name's weights from the model hub.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        limit: images per split (``None``: all), for quick looks.
        token: which token of each block is the layer's feature.
        batch_size: images per forward pass.
        task_config: the official SLS repository's ``configs/<method>/<dataset>.yaml`` for a task
            checkpoint written by that code (it holds the adapter scale the file lacks).
        scale: the adapter scale s for such a checkpoint, instead of ``task_config``.
    """

    model: str = defaults.BACKBONE
    checkpoint: str | None = None
    task: str | None = None
    data: str | None = None
    img_size: int | None = None
    hub: bool = False
    device: str = defaults.DEVICE
    limit: int | None = None
    token: str = defaults.TOKEN
    batch_size: int = defaults.BATCH_SIZE
    task_config: str | None = None
    scale: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


@dataclass
class LoadedTask:
    """A backbone with its task model (adapters + head) and the dataset to analyse."""

    backbone: Backbone
    model: nn.Module
    meta: TaskMeta | None
    data: LabelledImages

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing the task was trained with (a bare backbone: its own input size, mean and std)."""
        if self.meta is None:
            return Preprocess(self.backbone.img_size, self.backbone.mean, self.backbone.std, self.backbone.resample)
        return Preprocess(self.meta.img_size, tuple(self.meta.mean), tuple(self.meta.std), self.meta.resample)

    @property
    def head_applies(self) -> bool:
        """Whether the task's head classifies this data, so that its accuracy as is is defined."""
        return self.meta is not None and head_applies(self.meta, self.data)[0]

    @property
    def head_note(self) -> str | None:
        """What the user should know about the task's head on this data (why as-is accuracy is missing)."""
        if self.meta is None:
            return "not applicable: a bare backbone has no task head (see the head re-fit)."
        return head_applies(self.meta, self.data)[1]

    @property
    def method(self) -> str:
        """The PETL method, or ``"none"`` for a bare backbone."""
        return self.meta.petl["method"] if self.meta else "none"


def open_selection(selection: Selection) -> LoadedTask:
    """Load what ``selection`` names. With the default backbone and no task, the shipped task.

    The task file is told apart by the registry of formats (:mod:`slsviz.models.formats`: slsviz's
    own, official SLS, PEFT LoRA, full fine-tunes), which says which backbone to load at which input
    size (a full fine-tune is its own backbone; an slsviz task records its backbone, dataset and
    split) and builds the task model on it. A bare backbone (``task="none"``) is analysed without a
    task head: its as-is accuracy is not defined.
    """
    dev = resolve_device(selection.device)
    task, img_size = selection.task, selection.img_size
    model_name, checkpoint = selection.model, selection.checkpoint
    if task is None and model_name == defaults.BACKBONE:
        task = defaults.TASK_PATH
    if task == defaults.TASK_PATH and not defaults.TASK_PATH.is_file():
        raise SlsvizError(f"The shipped default task {task} is missing: run `make default-task` to create it.")
    source = formats.open_source(task) if task is not None and str(task) != "none" else None
    if source is not None:
        img_size = source.input_size(img_size)
        model_name, checkpoint = source.backbone(model_name, checkpoint)
    backbone = load_backbone(model_name, checkpoint, img_size=img_size, hub=selection.hub, device=dev)
    if source is None:
        return LoadedTask(backbone, backbone.model, None, load_dataset(selection.data or defaults.DATASET,
                                                                       seed=defaults.SEED))
    model, meta = source.open(backbone, formats.OpenOptions(selection.task_config, selection.scale))
    if selection.data is None and not source.records_dataset:
        raise SlsvizError(f"{task} does not record the images it was trained on: give the dataset (--data, or the "
                          f"app's Dataset field; e.g. the VTAB-1k folder of {meta.dataset.split(':', 1)[1]}).")
    seed = meta.split_seed if selection.data is None and meta.split_seed is not None else defaults.SEED
    return LoadedTask(backbone, model, meta, load_dataset(selection.data or meta.dataset, seed=seed))


def content_stamp(selection: Selection) -> str | None:
    """What the files ``selection`` names hold now - each file's path, size and modification time, a
    folder's files included - or ``None`` when it names none. A cache keyed on a selection and its
    stamp opens an edited dataset folder or a replaced checkpoint again."""
    digest, named = hashlib.sha256(), False
    for field in ("checkpoint", "task", "data", "task_config"):
        value = getattr(selection, field)
        if not value or not os.path.exists(value):
            continue
        named = True
        walk = [(value, [], [""])] if os.path.isfile(value) else sorted(os.walk(value))
        for folder, _, files in walk:
            for name in sorted(files):
                path = os.path.join(folder, name) if name else folder
                try:
                    stat = os.stat(path)
                except OSError:  # a broken link: opening says what is wrong with it
                    continue
                digest.update(f"{field}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16] if named else None
