"""The pruned model as a plain timm model: ``timm.create_model(arch, depth=D, num_classes=C)`` loads it alone
(a Swin: ``depths=`` the kept blocks per stage, none in the stages after the cut, whose patch merging stays).

The folder holds ``model.safetensors`` (the state dict, LoRA and RepAdapter merged into the backbone's
Linear layers) and ``config.json`` (the architecture, ``create_model``'s keyword arguments and the
preprocessing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from slsviz.errors import SlsvizError, key_mismatch
from slsviz.export.handback import check_logits, cut_cpu, preprocessing, unmergeable
from slsviz.models.petl import merge_petl
from slsviz.models.swin import SwinBlocks
from slsviz.models.task import TaskMeta

TITLE = "The pruned model for timm alone"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def refusal(model: nn.Module, meta: TaskMeta) -> str | None:
    """Why a plain timm ViT cannot hold the task (its adapters do not merge), or ``None``."""
    return unmergeable(meta, "a plain timm ViT")


def write(model: nn.Module, meta: TaskMeta, depth: int, folder: Path) -> tuple[str, list[str]]:
    """``model.safetensors`` and ``config.json`` of the merged model cut at ``depth``, checked with timm."""
    cut = merge_petl(cut_cpu(model, depth))
    state = timm_state(cut)
    built, kwargs = timm_model(meta, state, cut)
    check_logits(built, cut, meta.img_size, f"timm's {meta.backbone_arch} at depth {depth}")
    write_config(folder / CONFIG, meta, kwargs, depth, petl=dict(meta.petl), source=meta.source or meta.dataset)
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    return ("the task's first blocks, its final norm and head, with the adapters merged into the backbone's layers, "
            "as a plain timm model."), load_lines(meta.backbone_arch, kwargs, WEIGHTS)


def timm_names(cut: nn.Module) -> Callable[[str], str]:
    """The map from ``cut``'s parameter and module names to those of the timm model :func:`timm_model` builds
    (a Swin's blocks sit in its stages there; a ViT's names are timm's already)."""
    return cut.timm_name if isinstance(cut, SwinBlocks) else str


def timm_state(cut: nn.Module, keep: Callable[[str], bool] = lambda name: True) -> dict[str, torch.Tensor]:
    """``cut``'s state dict (the ``keep`` names) under the names of the timm model :func:`timm_model` builds."""
    name = timm_names(cut)
    return {name(k): v.detach().contiguous() for k, v in cut.state_dict().items() if keep(k)}


def timm_model(meta: TaskMeta, state: dict[str, torch.Tensor], cut: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """``timm.create_model(meta.backbone_arch, depth=D, ...)`` (a Swin: ``depths=`` per stage) with the blocks
    of ``cut`` and ``state`` loaded strictly, in eval mode, and the keyword arguments that built it.

    Raises:
        SlsvizError: ``state`` does not fit the model timm builds from the name (a converted transformers
            folder's backbone, say), with what holds it instead.
    """
    import timm

    depth = len(cut.blocks)
    blocks = {"depths": list(cut.stage_sizes)} if isinstance(cut, SwinBlocks) else {"depth": depth}
    kwargs: dict[str, Any] = {**blocks, "num_classes": meta.num_classes, "img_size": meta.img_size}
    built = timm.create_model(meta.backbone_arch, pretrained=False, **kwargs)
    if "blocks.0.attn.qkv.bias" in state and "blocks.0.attn.qkv.bias" not in built.state_dict():
        kwargs["qkv_bias"] = True  # RepAdapter merged into a bias-free qkv gives it a bias
        built = timm.create_model(meta.backbone_arch, pretrained=False, **kwargs)
    mismatch = key_mismatch(built.state_dict(), state)
    if mismatch:
        raise SlsvizError(f"timm's {meta.backbone_arch} at depth {depth} does not take this model's weights "
                          f"({mismatch}): its backbone is not one timm builds from the name. Export it as the slsviz "
                          "task or as ONNX instead.")
    built.load_state_dict(state, strict=True)
    return built.eval(), kwargs


def write_config(path: Path, meta: TaskMeta, kwargs: dict[str, Any], depth: int, **extra: Any) -> None:
    """``config.json``: the architecture, ``create_model``'s arguments (which slsviz reads back when it opens
    the weights beside it), the preprocessing and the classes, and ``extra``."""
    settings = {"architecture": meta.backbone_arch, "create_model_kwargs": kwargs, "preprocessing": preprocessing(meta),
                "classes": list(meta.class_names), "depth": depth, "num_layers": meta.num_layers, **extra}
    path.write_text(json.dumps(settings, indent=2, default=str), encoding="utf-8")


def load_lines(arch: str, kwargs: dict[str, Any], weights: str) -> list[str]:
    """The card's code that builds the timm model and loads ``weights``."""
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return ["```python", "import timm", "from safetensors.torch import load_file", "",
            f"model = timm.create_model({arch!r}, pretrained=False, {args})",
            f"model.load_state_dict(load_file({weights!r}))", "model.eval()", "```"]
