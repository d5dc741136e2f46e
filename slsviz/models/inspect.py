"""What a file is, before anything is loaded: slsviz's own task, an official SLS task, a PEFT LoRA folder,
or backbone weights."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from safetensors import safe_open

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models import hf_vit, official, peft_lora
from slsviz.models.task import read_task_meta

_BLOCK = re.compile(r"^(?:module\.)?blocks\.(\d+)\.")


def inspect_path(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of ``path``: its format and what it says (method, bottleneck, scale,
    classes, depth, the backbone it expects) and what is missing to open it.

    Raises:
        CheckpointError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist.")
    if path.is_dir():
        try:
            lora = peft_lora.detect(path)
        except SlsvizError as exc:  # a PEFT folder slsviz cannot open yet: say why
            return {"path": str(path), "format": "PEFT adapter", "opens": False, "reason": str(exc)}
        if hf_vit.is_folder(path):
            info = hf_vit.read_folder(path)
            kw = info["kwargs"]
            head = info["classifier"]
            return {"path": str(path), "format": "transformers ViT folder", "arch": info["arch"],
                    "blocks": kw["depth"], "width": kw["embed_dim"], "img_size": info["img_size"],
                    "mean": list(info["mean"]), "std": list(info["std"]),
                    "head_classes": int(head["weight"].shape[0]) if head else None,
                    "opens": "as a backbone: --checkpoint (its classifier is not opened as a task yet)"}
        if lora is not None:
            return {"path": str(path), **lora[0].describe(), "opens": True,
                    "missing": ["the backbone it adapts: --model and --checkpoint", "the dataset: --data"]}
        return {"path": str(path), "format": "folder", "note": "give a file (task or weights), or use the folder as --data"}
    if path.suffix.lower() == ".safetensors":
        return _safetensors(path)
    found = _official_or_none(path)
    if found is not None:
        return {"path": str(path), **found.describe(),
                "missing": ["the adapter scale s: --task-config configs/<method>/<dataset>.yaml or --scale",
                            "the dataset: --data"],
                "preprocessing": {"img_size": official.IMG_SIZE, "mean": list(official.MEAN), "std": list(official.STD)}}
    state_dict = official.read_state_dict(path)
    if state_dict is not None:
        return {"path": str(path), **_weights(state_dict)}
    return {"path": str(path), "format": "unknown", "note": "not a safetensors file, nor a torch file of tensors"}


def _official_or_none(path: Path) -> official.OfficialCheckpoint | None:
    try:
        found = official.detect(path)
    except CheckpointError:
        return None
    return found[0] if found else None


def _safetensors(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path} cannot be read as safetensors ({type(exc).__name__}).") from None
    if "slsviz_task" in metadata:
        meta = read_task_meta(path)
        return {"path": str(path), "format": "slsviz task", "method": meta.petl["method"], "petl": meta.petl,
                "backbone": meta.backbone_id, "backbone_arch": meta.backbone_arch, "classes": meta.class_names,
                "img_size": meta.img_size, "depth": meta.depth or meta.num_layers, "dataset": meta.dataset,
                "missing": []}
    return {"path": str(path), **_weights(shapes)}


def _weights(tensors: dict) -> dict[str, Any]:
    """Backbone weights (a timm ViT state dict, perhaps with its head): blocks, width, head."""
    shape = {k: tuple(getattr(v, "shape", v)) for k, v in tensors.items()}
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, shape) if m}
    width = shape.get("cls_token", shape.get("pos_embed", (0, 0, 0)))[-1] or None
    head = shape.get("head.weight")
    return {"format": "weights (state dict)", "tensors": len(shape), "blocks": len(blocks) or None, "width": width,
            "head_classes": head[0] if head else None,
            "note": "backbone weights: give them as --checkpoint with the timm --model they belong to"}
