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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models import hf_vit
from slsviz.models.backbones import Backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model, is_task_file
from slsviz.models.weights import read_state_dict

_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class FullFineTune:
    """What a full fine-tune says about itself.

    Attributes:
        path: the file or folder.
        kind: ``"timm state dict"`` or ``"transformers folder"``.
        num_classes: rows of the head.
        depth: blocks.
        width: token width.
        class_names: from the folder's ``id2label``; ``None`` where it names none.
        img_size: the input size its position embeddings were trained for (``None``: the folder says it).
    """

    path: Path
    kind: str
    num_classes: int
    depth: int
    width: int
    class_names: tuple[str, ...] | None
    img_size: int | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"format": f"full fine-tune ({self.kind})", "method": "full", "path": str(self.path),
                "classes": self.num_classes, "class_names": list(self.class_names) if self.class_names else None,
                "blocks": self.depth, "width": self.width, "img_size": self.img_size,
                "expects": "no other backbone: its own weights are the backbone"}


def detect(path: str | os.PathLike) -> tuple[FullFineTune, dict[str, torch.Tensor]] | None:
    """``(what it is, its head under timm's names)`` when ``path`` is a full fine-tune, else ``None``.

    Raises:
        SlsvizError: a transformers classifier whose head is not timm's (DINOv2's), with the reason.
        CheckpointError: unreadable files.
    """
    path = Path(path)
    if hf_vit.is_folder(path):
        if hf_vit.read_config(path).get("model_type") not in hf_vit.MODEL_TYPES:
            return None
        info = hf_vit.read_folder(path)
        if info["classifier"] is None:
            return None
        if info["head_note"]:
            raise SlsvizError(f"{path} is a transformers classifier, but {info['head_note']}: open the folder as the "
                              "backbone (--checkpoint, task none) and use the head re-fit column instead.")
        kw, head = info["kwargs"], info["classifier"]
        found = FullFineTune(path=path, kind="transformers folder", num_classes=int(head["weight"].shape[0]),
                             depth=int(kw["depth"]), width=int(kw["embed_dim"]),
                             class_names=tuple(info["class_names"]) if info["class_names"] else None)
        return found, {f"head.{k}": v for k, v in head.items()}
    if not (path.is_file() and path.suffix.lower() in _SUFFIXES):
        return None
    if path.suffix.lower() == ".safetensors" and is_task_file(path):
        return None
    tensors = read_state_dict(path)
    head = tensors.get("head.weight")
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, tensors) if m}
    if head is None or head.ndim != 2 or "blocks.0.attn.qkv.weight" not in tensors or any("adapter" in k for k in tensors):
        return None
    found = FullFineTune(path=path, kind="timm state dict", num_classes=int(head.shape[0]), depth=len(blocks),
                         width=int(head.shape[1]), class_names=None, img_size=_trained_size(tensors))
    return found, {k: v for k, v in tensors.items() if k.startswith("head.")}


def open_full(found: FullFineTune, head: dict[str, torch.Tensor], backbone: Backbone) -> tuple[nn.Module, TaskMeta]:
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
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
    names = list(found.class_names) if found.class_names else [str(c) for c in range(found.num_classes)]
    meta = TaskMeta(
        backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum,
        petl=PetlConfig("full").to_dict(), class_names=names, img_size=backbone.img_size, mean=list(backbone.mean),
        std=list(backbone.std), resample=backbone.resample, dataset=f"full:{found.path.name}", split_seed=None, num_layers=backbone.num_layers,
        recipe={"source": f"full fine-tune ({found.kind}) {found.path}",
                **({} if found.class_names else {"class_names": "label indices"})},
        source={"format": f"full fine-tune ({found.kind})", "path": str(found.path)})
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
