"""What the user chose to load (:class:`Selection`), opened once into a :class:`LoadedTask`: the
backbone, the task model (adapters + head) and the dataset. Every face opens a model through
:func:`open_selection`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch.nn as nn

from slsviz import defaults
from slsviz.data import LabelledImages, Preprocess, load_dataset
from slsviz.device import resolve_device
from slsviz.errors import SlsvizError
from slsviz.models import formats, hf_vit
from slsviz.models.backbones import Backbone, load_backbone
from slsviz.models.task import TaskMeta, head_applies, load_task, read_task_meta


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

    A task fixes the input size and the dataset (unless ``selection.data`` overrides it). A bare
    backbone (``task="none"``) is analysed without a task head: its as-is accuracy is not defined.
    Task checkpoints are slsviz's own or other tools' (:mod:`slsviz.models.formats`: official SLS,
    PEFT LoRA, full fine-tunes; a full fine-tune is its own backbone).
    With no backbone named, a task's own is loaded: the default, or the local checkpoint the task
    records (its checksum is checked).
    """
    dev = resolve_device(selection.device)
    task, img_size = selection.task, selection.img_size
    model_name, checkpoint = selection.model, selection.checkpoint
    if task is None and model_name == defaults.BACKBONE:
        task = defaults.TASK_PATH
    meta, foreign, seed = None, None, defaults.SEED
    if task == defaults.TASK_PATH and not defaults.TASK_PATH.is_file():
        raise SlsvizError(f"The shipped default task {task} is missing: run `make default-task` to create it.")
    if task is not None and str(task) != "none":
        foreign = formats.detect(task)
        if foreign is not None:
            img_size = img_size or foreign.img_size
            if foreign.is_its_own_backbone and checkpoint is None:
                checkpoint = str(task)
                if model_name == defaults.BACKBONE and not hf_vit.is_folder(task):
                    raise SlsvizError(f"{task} is a full fine-tune of a timm ViT: name its architecture with --model "
                                      "(in the app: the Backbone field), e.g. vit_base_patch16_224.")
        else:
            meta = read_task_meta(task)
            if img_size is not None and img_size != meta.img_size:
                raise SlsvizError(f"The task was trained at {meta.img_size} px; --img-size {img_size} does not fit it.")
            img_size = meta.img_size
            if model_name == defaults.BACKBONE and checkpoint is None and meta.backbone_id != defaults.BACKBONE:
                weights = meta.backbone_id.removeprefix(f"{meta.backbone_arch}:")
                if weights != meta.backbone_id and Path(weights).exists():
                    model_name, checkpoint = meta.backbone_arch, weights
    backbone = load_backbone(model_name, checkpoint, img_size=img_size, hub=selection.hub, device=dev)
    if foreign is not None:
        model, meta = formats.open_task(foreign, backbone, task_config=selection.task_config, scale=selection.scale)
        if selection.data is None:
            raise SlsvizError(f"{task} does not record the images it was trained on: give the dataset (--data, or the "
                              f"app's Dataset field; e.g. the VTAB-1k folder of {meta.dataset.split(':', 1)[1]}).")
        dataset = selection.data
    elif meta is not None:
        model, meta = load_task(task, backbone)
        dataset = selection.data or meta.dataset
        if meta.split_seed is not None and selection.data is None:
            seed = meta.split_seed
    else:
        model, dataset = backbone.model, selection.data or defaults.DATASET
    return LoadedTask(backbone, model, meta, load_dataset(dataset, seed=seed))


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
