"""A PETL task: backbone + adapters + head, and its checkpoint (exactly what SLS stores per task).

The checkpoint is a safetensors file of the trainable tensors only (adapters of the kept blocks and
the head) with JSON metadata; the frozen backbone is identified by arch and weights checksum.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from slsviz import defaults
from slsviz.data import LabelledImages, Preprocess, make_loader
from slsviz.errors import CheckpointError, SlsvizError, key_mismatch
from slsviz.models.backbones import Backbone
from slsviz.models.depth import check_depth, prune_to_depth
from slsviz.models.petl import PetlConfig, attach_petl, petl_state_dict
from slsviz.models.train import Recipe, TrainResult, evaluate, train_task
from slsviz.models.weights import WeightsFile
from slsviz.progress import EpochProgress
from slsviz.storage import atomic_path

TASK_SCHEMA = "slsviz-task/1"
META_KEY = "slsviz_task"


@dataclass
class TaskMeta:
    """Everything needed to rebuild and trust a task model, JSON-ready.

    Attributes:
        backbone_id: how the backbone was asked for (``"default"``, ``"<arch>:<path>"``, ...).
        backbone_arch: timm model name.
        backbone_checksum: weights checksum of the backbone the task was trained on.
        petl: the PETL method and its hyper-parameters (``PetlConfig.to_dict()``).
        class_names: one name per class; ``len(class_names)`` is the head's output size.
        img_size: input size the task was trained at.
        mean: normalisation mean.
        std: normalisation std.
        dataset: dataset id (e.g. ``"mnist5k"``).
        split_seed: seed of the dataset's split (``None`` where fixed by list files).
        num_layers: blocks of the full backbone.
        recipe: training recipe (optimiser, schedule, epochs, seed, ...).
        val_accuracy: accuracy on the val split of the kept checkpoint (chosen on val).
        test_accuracy: accuracy on the test split.
        depth: blocks kept (``None`` = all).
        resample: the resize filter of the preprocessing (``Preprocess.resample``).
        source: where a task another tool wrote came from (``format``, ``path`` and what was given
            beside it, e.g. ``task_config`` or ``scale``); ``None`` for slsviz's own.
    """

    backbone_id: str
    backbone_arch: str
    backbone_checksum: str
    petl: dict[str, Any]
    class_names: list[str]
    img_size: int
    mean: list[float]
    std: list[float]
    dataset: str
    split_seed: int | None
    num_layers: int
    recipe: dict[str, Any] = field(default_factory=dict)
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    depth: int | None = None
    source: dict[str, Any] | None = None
    resample: str = "bicubic"
    schema: str = TASK_SCHEMA

    @property
    def num_classes(self) -> int:
        """Output size of the head."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskMeta:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def head_applies(meta: TaskMeta, data: LabelledImages) -> tuple[bool, str | None]:
    """Whether the task's head can classify ``data``, and a note saying why not (or what to keep in mind).

    The head's outputs are the task's classes in order; on data whose class names differ (in name,
    count or order) its accuracy is not defined. The same classes from another dataset (e.g.
    ``digits`` for a task trained on ``mnist5k``) are allowed, with a note.

    Returns:
        ``(applies, note)``; ``note`` is ``None`` on the task's own dataset.
    """
    trained_on = _classes_in_words(meta.class_names)
    if meta.recipe.get("class_names") == "label indices":  # the file numbers its outputs and names none
        if data.num_classes != meta.num_classes:
            return False, (f"not applicable: the task's head has {meta.num_classes} outputs; {data.name} has "
                           f"{_classes_in_words(data.class_names)}.")
        return True, (f"the task's head numbers its {meta.num_classes} outputs without names; they are read as "
                      f"{data.name}'s classes in order ({', '.join(map(str, data.class_names[:5]))}, ...).")
    if list(data.class_names) != list(meta.class_names):
        return False, (f"not applicable: the task's head was trained on {trained_on} ({meta.dataset}); "
                       f"{data.name} has {_classes_in_words(data.class_names)}. Features, maps, scores, the "
                       "recommendation and the head re-fit do not need the head.")
    if data.name != meta.dataset:
        return True, (f"the task's head was trained on {meta.dataset} and is scored on {data.name}, "
                      f"which has the same {trained_on}.")
    return True, None


def _classes_in_words(names: list[str], shown: int = 5) -> str:
    listed = ", ".join(map(str, names[:shown])) + (f", ... ({len(names)} in all)" if len(names) > shown else "")
    return f"{len(names)} classes ({listed})"


def build_task_model(backbone: Backbone, petl: PetlConfig, num_classes: int, *, seed: int = 0) -> nn.Module:
    """A fresh task model: a COPY of the backbone with adapters in every block and a new head.

    Only adapters and head are trainable. Their initialisation is seeded, so runs are reproducible.
    """
    if num_classes < 2:
        raise CheckpointError(f"A task needs at least 2 classes, got {num_classes}.")
    model = copy.deepcopy(backbone.model)
    with torch.random.fork_rng(devices=[]):  # adapter inits (e.g. LoRA's A) and the head
        torch.manual_seed(seed)
        attach_petl(model, petl)
        model.reset_classifier(num_classes)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model.to(backbone.device).eval()


def save_task(path: str | os.PathLike, model: nn.Module, meta: TaskMeta) -> Path:
    """Write the task's trainable tensors and metadata to ``path`` atomically (temp file, rename)."""
    path = Path(path)
    tensors = {k: v.contiguous() for k, v in petl_state_dict(model).items()}
    meta = copy.copy(meta)
    if len(model.blocks) < meta.num_layers:
        meta.depth = len(model.blocks)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta.to_dict())})
    return path


def is_task_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file with slsviz task metadata (cheap: no tensors are read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return META_KEY in (f.metadata() or {})
    except Exception:  # not readable as safetensors: not a task file; whoever reads it says why
        return False


def read_task_meta(path: str | os.PathLike) -> TaskMeta:
    """Only the metadata of a task checkpoint (cheap; no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Task checkpoint {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as exc:
        raise CheckpointError(f"Task checkpoint {path} cannot be read: is it a complete .safetensors file written by slsviz?") from exc
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not an slsviz task checkpoint (no '{META_KEY}' metadata).")
    try:
        meta = TaskMeta.from_dict(json.loads(raw))
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"Task checkpoint {path} has damaged metadata: {exc}") from exc
    if meta.schema != TASK_SCHEMA:
        raise CheckpointError(f"Task checkpoint {path} has schema {meta.schema!r}; this slsviz reads {TASK_SCHEMA!r}.")
    return meta


@dataclass(frozen=True)
class SlsvizTask:
    """An slsviz task file (format ``"slsviz"`` of :mod:`slsviz.models.formats`): its metadata read,
    its tensors read when it is opened.

    Attributes:
        path: the file.
        meta: its metadata.
        file: the file, read through once.
    """

    path: Path
    meta: TaskMeta
    file: WeightsFile = field(repr=False, compare=False)
    kind: ClassVar[str] = "slsviz"
    records_dataset: ClassVar[bool] = True
    needs: ClassVar[tuple[str, ...]] = ()  # it names its backbone and dataset
    missing: ClassVar[tuple[str, ...]] = ()

    def input_size(self, asked: int | None) -> int:
        """The size the task was trained at; another one asked for is refused."""
        if asked is not None and asked != self.meta.img_size:
            raise SlsvizError(f"The task was trained at {self.meta.img_size} px; --img-size {asked} does not fit it.")
        return self.meta.img_size

    def backbone(self, model: str, checkpoint: str | WeightsFile | None) -> tuple[str, str | WeightsFile | None]:
        """With no backbone named, the task's own: the default, or the local weights it records (their
        checksum is checked when the task opens)."""
        meta = self.meta
        if model == defaults.BACKBONE and checkpoint is None and meta.backbone_id != defaults.BACKBONE:
            weights = meta.backbone_id.removeprefix(f"{meta.backbone_arch}:")
            if weights != meta.backbone_id and Path(weights).exists():
                return meta.backbone_arch, weights
        return model, checkpoint

    def open(self, backbone: Backbone, options: Any = None) -> tuple[nn.Module, TaskMeta]:
        """The task model on ``backbone``.

        Raises:
            CheckpointError: a different backbone (arch or weights), an input size or class count that
                does not fit, or missing / unexpected adapter tensors.
        """
        path, meta = self.path, self.meta
        if meta.backbone_arch != backbone.arch or meta.backbone_checksum != backbone.checksum:
            raise CheckpointError(
                f"Task checkpoint {path} was trained on backbone {meta.backbone_id!r} ({meta.backbone_arch}, weights "
                f"{meta.backbone_checksum}), but the loaded backbone is {backbone.id!r} ({backbone.arch}, weights "
                f"{backbone.checksum}). Load the backbone it was trained on."
            )
        if meta.img_size != backbone.img_size:
            raise CheckpointError(
                f"Task checkpoint {path} was trained at {meta.img_size} px but the backbone is set up for "
                f"{backbone.img_size} px: load the backbone with img_size={meta.img_size}."
            )
        if meta.num_layers != backbone.num_layers:
            raise CheckpointError(f"Task checkpoint {path} expects {meta.num_layers} blocks; the backbone has {backbone.num_layers}.")
        tensors = self.file.reading("safetensors", lambda p: load_file(str(p)))
        head = tensors.get("head.weight")
        if head is None or head.shape[0] != meta.num_classes:
            got = "no head" if head is None else f"a head for {head.shape[0]} classes"
            raise CheckpointError(f"Task checkpoint {path} names {meta.num_classes} classes but holds {got}.")
        try:
            petl = PetlConfig.from_dict(meta.petl)
        except (SlsvizError, TypeError, KeyError) as exc:
            raise CheckpointError(f"Task checkpoint {path} has damaged PETL metadata: {exc}") from exc
        model = build_task_model(backbone, petl, meta.num_classes)
        if meta.depth is not None:
            model = prune_to_depth(model, check_depth(meta.depth, backbone.num_layers))
        mismatch = key_mismatch(petl_state_dict(model), tensors)
        if mismatch:
            raise CheckpointError(f"Task checkpoint {path} does not fit its PETL method {meta.petl.get('method')!r}: {mismatch}.")
        model.load_state_dict(tensors, strict=False)
        return model.eval(), meta

    def describe(self) -> dict[str, Any]:
        """JSON-ready."""
        meta = self.meta
        return {"format": "slsviz task", "method": meta.petl["method"], "petl": meta.petl, "backbone": meta.backbone_id,
                "backbone_arch": meta.backbone_arch, "classes": meta.class_names, "img_size": meta.img_size,
                "depth": meta.depth or meta.num_layers, "dataset": meta.dataset}


def detect(file: WeightsFile) -> SlsvizTask | None:
    """The slsviz task in ``file``, or ``None`` (another format, or not a task).

    Raises:
        CheckpointError: slsviz task metadata that cannot be read or is of another schema.
    """
    if not is_task_file(file.path):
        return None
    return SlsvizTask(file.path, read_task_meta(file.path), file)


def load_task(path: str | os.PathLike, backbone: Backbone) -> tuple[nn.Module, TaskMeta]:
    """Rebuild a task model on ``backbone`` from a task checkpoint (:meth:`SlsvizTask.open`).

    Raises:
        CheckpointError: not an slsviz task file, or one that does not fit ``backbone``.
    """
    file = WeightsFile(path)
    return SlsvizTask(file.path, read_task_meta(file.path), file).open(backbone)


def fit_task(
    backbone: Backbone,
    data: LabelledImages,
    petl: PetlConfig,
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    progress: EpochProgress | None = None,
    limit: int | None = None,
) -> tuple[nn.Module, TaskMeta, TrainResult]:
    """Build a task model on ``backbone``, train it (best on val), measure test accuracy.

    Returns:
        The trained model (on ``device``), its metadata ready for :func:`save_task`, and the run.
    """
    preprocess = Preprocess(backbone.img_size, backbone.mean, backbone.std, backbone.resample)
    model = build_task_model(backbone, petl, data.num_classes, seed=recipe.seed)
    result = train_task(model, data, preprocess, recipe, device=device, progress=progress, limit=limit)
    test_acc = evaluate(model, make_loader(data, "test", preprocess, 256, limit=limit), torch.device(device))
    meta = TaskMeta(
        backbone_id=backbone.id,
        backbone_arch=backbone.arch,
        backbone_checksum=backbone.checksum,
        petl=petl.to_dict(),
        class_names=list(data.class_names),
        img_size=backbone.img_size,
        mean=list(backbone.mean),
        std=list(backbone.std),
        dataset=data.name,
        split_seed=data.split_info.get("seed"),
        num_layers=backbone.num_layers,
        recipe={**recipe.to_dict(), "best_epoch": result.best_epoch, "limit": limit},
        val_accuracy=result.val_accuracy,
        test_accuracy=test_acc,
        resample=backbone.resample,
    )
    return model, meta, result
