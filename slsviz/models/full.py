"""Full fine-tunes as slsviz tasks of method ``"full"``: every backbone weight is the task's.

Two files hold one: a timm ViT state dict with its head (``head.weight``; ``.pth``/``.pt``/
``.safetensors``, read weights-only), and a transformers ``ViTForImageClassification`` folder (its
``classifier`` is timm's head on the final CLS token). The same file or folder is the backbone: with no
``--checkpoint``, the task's own weights are loaded as one. A DINOv2 classifier reads the CLS and mean
patch tokens side by side, which a timm head does not: it is refused as a task, with the reason, and
its folder opens as a backbone whose head is re-fitted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from slsviz import defaults
from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models import hf_vit
from slsviz.models.backbones import Backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.models.weights import WeightsFile

_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_BLOCK = re.compile(r"^(?:layers\.(\d+)\.)?blocks\.(\d+)\.")  # a ViT's blocks.<i>, a Swin's layers.<s>.blocks.<j>


@dataclass(frozen=True)
class FullFineTune:
    """What a full fine-tune says about itself.

    Attributes:
        path: the file or folder.
        layout: ``"timm state dict"`` or ``"transformers folder"``.
        num_classes: rows of the head.
        depth: blocks.
        width: token width.
        class_names: from the folder's ``id2label``; ``None`` where it names none.
        img_size: the input size its position embeddings were trained for (``None``: the folder says it).
        file: the file or folder, read through once: it is also the backbone.
    """

    path: Path
    layout: str
    num_classes: int
    depth: int
    width: int
    class_names: tuple[str, ...] | None
    img_size: int | None = None
    file: WeightsFile | None = field(default=None, repr=False, compare=False)
    kind: ClassVar[str] = "full"
    records_dataset: ClassVar[bool] = False

    @property
    def head(self) -> dict[str, torch.Tensor]:
        """The classifier under timm's ViT names (``head.weight``, ``head.bias``; a Swin's ``head.fc.*``)."""
        if self.layout == "transformers folder":
            return {f"head.{k}": v for k, v in self.file.reading("transformers folder", hf_vit.read_folder)["classifier"].items()}
        return {"head." + k.removeprefix("head.").removeprefix("fc."): v for k, v in self.file.state_dict().items()
                if k.startswith("head.")}

    @property
    def needs(self) -> tuple[str, ...]:
        """What the file leaves open: a state dict its architecture; both the dataset."""
        return ("data",) if self.layout == "transformers folder" else ("model", "data")

    @property
    def missing(self) -> tuple[str, ...]:
        """:attr:`needs`, in words."""
        own = () if self.layout == "transformers folder" else ("its timm architecture: --model",)
        return (*own, "the dataset: --data (the app: the Dataset field)")

    def input_size(self, asked: int | None) -> int | None:
        """The size its position embeddings were trained for, unless asked."""
        return asked or self.img_size

    def backbone(self, model: str, checkpoint: Any) -> tuple[str, Any]:
        """Its own weights: this file, already read (another checkpoint named is refused when it opens)."""
        if checkpoint is not None:
            return model, checkpoint
        if model == defaults.BACKBONE and self.layout != "transformers folder":
            raise SlsvizError(f"{self.path} is a full fine-tune of a timm ViT: name its architecture with --model "
                              "(in the app: the Backbone field), e.g. vit_base_patch16_224.")
        return model, self.file

    def open(self, backbone: Backbone, options: Any = None) -> tuple[nn.Module, TaskMeta]:
        """The task model: ``backbone`` (the fine-tune itself) with its head (see :func:`open_full`)."""
        return open_full(self, backbone)

    def describe(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"format": f"full fine-tune ({self.layout})", "method": "full", "path": str(self.path),
                "classes": self.num_classes, "class_names": list(self.class_names) if self.class_names else None,
                "blocks": self.depth, "width": self.width, "img_size": self.img_size,
                "expects": "no other backbone: its own weights are the backbone"}


def detect(file: WeightsFile) -> FullFineTune | None:
    """What ``file`` says when it is a full fine-tune, else ``None``.

    Raises:
        SlsvizError: a transformers classifier whose head is not timm's (DINOv2's), with the reason.
        CheckpointError: unreadable files.
    """
    path = file.path
    if hf_vit.is_folder(path):
        if hf_vit.read_config(path).get("model_type") not in hf_vit.MODEL_TYPES:
            return None
        info = file.reading("transformers folder", hf_vit.read_folder)
        if info["classifier"] is None:
            return None
        if info["head_note"]:
            raise SlsvizError(f"{path} is a transformers classifier, but {info['head_note']}: open the folder as the "
                              "backbone (--checkpoint, task none) and use the head re-fit column instead.")
        kw, head = info["kwargs"], info["classifier"]
        return FullFineTune(path=path, layout="transformers folder", num_classes=int(head["weight"].shape[0]),
                            depth=int(kw["depth"]), width=int(kw["embed_dim"]),
                            class_names=tuple(info["class_names"]) if info["class_names"] else None, file=file)
    if not (path.is_file() and path.suffix.lower() in _SUFFIXES):
        return None
    tensors = file.state_dict()
    head = tensors.get("head.weight", tensors.get("head.fc.weight"))
    blocks = {m.groups() for m in map(_BLOCK.match, tensors) if m}
    if (head is None or head.ndim != 2 or not {"blocks.0.attn.qkv.weight", "layers.0.blocks.0.attn.qkv.weight"} & set(tensors)
            or any("adapter" in k for k in tensors)):
        return None
    return FullFineTune(path=path, layout="timm state dict", num_classes=int(head.shape[0]), depth=len(blocks),
                        width=int(head.shape[1]), class_names=None, img_size=_trained_size(tensors), file=file)


def open_full(found: FullFineTune, backbone: Backbone) -> tuple[nn.Module, TaskMeta]:
    """The task model of a full fine-tune: ``backbone``, loaded from the fine-tune itself, with its head.

    Raises:
        CheckpointError: a backbone loaded from other weights, named on both sides.
    """
    weights = backbone.id.partition(":")[2]
    if not weights or Path(weights).resolve() != found.path.resolve():
        raise CheckpointError(f"{found.path} is a full fine-tune ({found.width} wide, {found.depth} blocks): its own "
                              f"weights are the backbone, not {backbone.id} ({backbone.embed_dim} wide, "
                              f"{backbone.num_layers} blocks). Leave --checkpoint out, or give the same path.")
    model = build_task_model(backbone, PetlConfig("full"), found.num_classes)
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in found.head.items()})
    names = list(found.class_names) if found.class_names else [str(c) for c in range(found.num_classes)]
    meta = TaskMeta(
        backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum,
        petl=PetlConfig("full").to_dict(), class_names=names, img_size=backbone.img_size, mean=list(backbone.mean),
        std=list(backbone.std), resample=backbone.resample, dataset=f"full:{found.path.name}", split_seed=None, num_layers=backbone.num_layers,
        recipe={"source": f"full fine-tune ({found.layout}) {found.path}",
                **({} if found.class_names else {"class_names": "label indices"})},
        source={"format": f"full fine-tune ({found.layout})", "path": str(found.path)})
    return model.eval(), meta


def _trained_size(tensors: dict[str, torch.Tensor]) -> int | None:
    """Patch size x the side of the square grid the position embeddings hold (prefix tokens left out)."""
    pos, proj = tensors.get("pos_embed"), tensors.get("patch_embed.proj.weight")
    if pos is None or proj is None or pos.ndim != 3 or proj.ndim != 4:
        return None
    prefix = int("cls_token" in tensors) + (int(tensors["reg_token"].shape[1]) if "reg_token" in tensors else 0)
    side = math.isqrt(pos.shape[1] - prefix)
    if side * side != pos.shape[1] - prefix:  # a model without position embeddings for its prefix tokens
        side = math.isqrt(pos.shape[1])
    return side * int(proj.shape[-1]) if side > 0 else None
