"""What a file is, before anything is loaded: slsviz's own task, another tool's task (official SLS,
PEFT LoRA, a full fine-tune), a transformers backbone folder, or backbone weights."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from safetensors import safe_open

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models import formats, hf_vit, peft_lora
from slsviz.models.weights import WeightsFile

_BLOCK = re.compile(r"^(?:module\.)?blocks\.(\d+)\.")


def inspect_path(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of ``path``: its format and what it says (method, rank or bottleneck, scale,
    classes, depth, the backbone it expects), whether it opens, and what is missing to open it.

    Raises:
        CheckpointError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist.")
    file = WeightsFile(path)
    try:
        found = formats.detect(file)
    except SlsvizError as exc:  # a recognised file slsviz cannot open as a task: say why
        if not hf_vit.is_folder(path) or (path / peft_lora.CONFIG).is_file():
            kind = "PEFT adapter" if (path / peft_lora.CONFIG).is_file() else "file"
            return {"path": str(path), "format": kind, "opens": False, "reason": str(exc)}
        found = None  # a transformers classifier whose head is not timm's: its backbone still opens
    if found is not None:
        opens = {} if found.kind == "slsviz" else {"opens": True, "needs": list(found.needs)}
        return {"path": str(path), **found.describe(), **opens, "missing": list(found.missing)}
    if hf_vit.is_folder(path):
        info = file.reading("transformers folder", hf_vit.read_folder)
        kw = info["kwargs"]
        head = info["classifier"]
        return {"path": str(path), "format": f"transformers {info['model_type']} folder", "arch": info["arch"],
                "blocks": kw["depth"], "width": kw["embed_dim"], "img_size": info["img_size"],
                "mean": list(info["mean"]), "std": list(info["std"]),
                "head_classes": int(head["weight"].shape[0]) if head else None, "opens": True,
                "as": "a backbone: --checkpoint" + (f" (not as a task: {info['head_note']}; use the head re-fit)"
                                                     if info["head_note"] else ""),
                "missing": ["the dataset: --data (the app: the Dataset field)"], "needs": ["data"], "opens_as": "backbone"}
    if path.is_dir():
        return {"path": str(path), "format": "folder", "opens": False,
                "note": "give a file (task or weights) or a transformers or PEFT folder, or use the folder as --data"}
    if path.suffix.lower() == ".safetensors":
        return _safetensors(path)
    try:
        return {"path": str(path), **_weights(file.state_dict())}
    except CheckpointError:
        return {"path": str(path), "format": "unknown", "opens": False,
                "note": "not a safetensors file, nor a torch file of tensors"}


def _safetensors(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path} cannot be read as safetensors ({type(exc).__name__}).") from None
    return {"path": str(path), **_weights(shapes)}


def _weights(tensors: dict) -> dict[str, Any]:
    """Backbone weights (a timm ViT state dict, perhaps with its head): blocks, width, head."""
    shape = {k: tuple(getattr(v, "shape", v)) for k, v in tensors.items()}
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, shape) if m}
    width = shape.get("cls_token", shape.get("pos_embed", (0, 0, 0)))[-1] or None
    head = shape.get("head.weight")
    return {"format": "weights (state dict)", "tensors": len(shape), "blocks": len(blocks) or None, "width": width,
            "head_classes": head[0] if head else None, "opens": True, "opens_as": "backbone", "needs": ["model", "data"],
            "missing": ["the timm architecture they belong to: --model", "the dataset: --data"],
            "note": "backbone weights: give them as --checkpoint with the timm --model they belong to"}
