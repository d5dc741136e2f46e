"""LoRA adapters that Hugging Face PEFT saved (``save_pretrained``) for a timm ViT, opened as slsviz tasks.

A PEFT folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``) with keys
``base_model.model.<module>.lora_A.weight`` (r x in) and ``lora_B.weight`` (out x r), and the head
under its own name when it is in ``modules_to_save``. slsviz's LoRA adapts timm's fused ``qkv`` with
the update ``scaling * B A``, ``scaling = lora_alpha / r`` (PEFT's; ``lora_alpha / sqrt(r)`` with
``use_rslora``), so such an adapter loads as it is. What slsviz's LoRA does not do yet is refused with
its reason: other target modules, per-layer subsets or patterns, trained biases, DoRA and other PEFT types.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.backbones import Backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.models.weights import read_state_dict

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_PREFIX = "base_model.model."
_LORA = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.lora_([AB])\.weight$")
_TARGETS = {"qkv"}


@dataclass(frozen=True)
class PeftLora:
    """What a PEFT LoRA folder says, from its config and tensor shapes.

    Attributes:
        path: the folder.
        rank: r.
        lora_alpha: PEFT's alpha.
        rslora: ``use_rslora`` (scaling ``lora_alpha / sqrt(r)``).
        dropout: ``lora_dropout``.
        num_classes: rows of the saved head.
        depth: blocks with LoRA.
    """

    path: Path
    rank: int
    lora_alpha: float
    rslora: bool
    dropout: float
    num_classes: int
    depth: int

    @property
    def scaling(self) -> float:
        """The factor on ``B A``, as PEFT computes it."""
        return self.lora_alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def describe(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"format": "PEFT LoRA adapter", **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()},
                "scaling": self.scaling}


def detect(path: str | os.PathLike) -> tuple[PeftLora, dict[str, torch.Tensor]] | None:
    """``(what it is, its tensors under slsviz's names)`` when ``path`` is a PEFT adapter folder, else ``None``.

    Raises:
        SlsvizError: a PEFT folder slsviz cannot open yet, with the reason.
        CheckpointError: unreadable files, or tensors that disagree with the config.
    """
    path = Path(path)
    if not (path.is_dir() and (path / CONFIG).is_file()):
        return None
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / CONFIG} cannot be read ({type(exc).__name__}).") from None
    _check_config(path, config)
    tensors = _read_weights(path)
    ours: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key.removeprefix(_PREFIX)
        name = name.replace(".modules_to_save.default.", ".")  # older PEFT kept the wrapper's names
        if _LORA.match(name):
            ours[name.removesuffix(".weight")] = value
        elif name in ("head.weight", "head.bias"):
            ours[name] = value
        else:
            raise CheckpointError(f"{path}: tensor {key} is neither LoRA on blocks.<i>.attn.qkv nor the head.")
    if "head.weight" not in ours:
        raise SlsvizError(f"{path} saves no head: train with modules_to_save=['head'] so the task's classifier is saved.")
    blocks = sorted({int(_LORA.match(k + ".weight").group(1)) for k in ours if "lora_" in k})
    rank = int(config["r"])
    if any(ours[f"blocks.{i}.attn.qkv.lora_A"].shape[0] != rank for i in blocks):
        raise CheckpointError(f"{path}: lora_A has another rank than r = {rank} in adapter_config.json.")
    return PeftLora(path=path, rank=rank, lora_alpha=float(config["lora_alpha"]), rslora=bool(config.get("use_rslora")),
                    dropout=float(config.get("lora_dropout") or 0.0), num_classes=int(ours["head.weight"].shape[0]),
                    depth=len(blocks)), ours


def open_peft(adapter: PeftLora, tensors: dict[str, torch.Tensor], backbone: Backbone) -> tuple[nn.Module, TaskMeta]:
    """The task model of a PEFT LoRA adapter on ``backbone``, and its meta.

    Raises:
        CheckpointError: an adapter for another backbone (width, depth), named on both sides.
    """
    if adapter.depth != backbone.num_layers:
        raise CheckpointError(f"{adapter.path} adapts {adapter.depth} blocks; the backbone {backbone.arch} has "
                              f"{backbone.num_layers}: slsviz's LoRA adapts every block (load the adapter's backbone).")
    # slsviz scales by alpha / r; PEFT's rsLoRA by lora_alpha / sqrt(r): the same factor with alpha = scaling * r.
    petl = PetlConfig("lora", bottleneck=adapter.rank, alpha=adapter.scaling * adapter.rank, dropout=adapter.dropout)
    model = build_task_model(backbone, petl, adapter.num_classes)
    expected = {k: v for k, v in model.state_dict().items() if "lora_" in k or k.startswith("head.")}
    wrong = sorted(k for k in expected if k not in tensors or tuple(tensors[k].shape) != tuple(expected[k].shape))
    if wrong:
        shown = wrong[0]
        got = tuple(tensors[shown].shape) if shown in tensors else "absent"
        raise CheckpointError(f"{adapter.path} does not fit LoRA on {backbone.arch} ({backbone.embed_dim} wide): "
                              f"{shown} is {got}, the model needs {tuple(expected[shown].shape)}.")
    model.load_state_dict(tensors, strict=False)
    meta = TaskMeta(
        backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum, petl=petl.to_dict(),
        class_names=[str(c) for c in range(adapter.num_classes)], img_size=backbone.img_size,
        mean=list(backbone.mean), std=list(backbone.std), dataset=f"peft:{adapter.path.name}", split_seed=None,
        num_layers=backbone.num_layers,
        recipe={"source": f"PEFT LoRA adapter {adapter.path}", "class_names": "label indices",
                "peft": {"r": adapter.rank, "lora_alpha": adapter.lora_alpha, "use_rslora": adapter.rslora}})
    return model.eval(), meta


def _check_config(path: Path, config: dict[str, Any]) -> None:
    kind = config.get("peft_type")
    if kind != "LORA":
        raise SlsvizError(f"{path} holds a PEFT {kind} adapter; slsviz opens LoRA adapters.")
    if config.get("use_dora"):
        raise SlsvizError(f"{path} is a DoRA adapter (use_dora): its magnitude vectors change the weights in a way "
                          "slsviz's LoRA does not compute.")
    targets = config.get("target_modules")
    targets = {targets} if isinstance(targets, str) else set(targets or [])
    if targets != _TARGETS:
        raise SlsvizError(f"{path} targets {sorted(targets)}; slsviz's LoRA adapts timm's fused attention qkv only "
                          "(target_modules=['qkv']): other modules are not opened yet.")
    unsupported = {"bias": config.get("bias", "none") != "none", "lora_bias": bool(config.get("lora_bias")),
                   "layers_to_transform": config.get("layers_to_transform") is not None,
                   "rank_pattern": bool(config.get("rank_pattern")), "alpha_pattern": bool(config.get("alpha_pattern")),
                   "fan_in_fan_out": bool(config.get("fan_in_fan_out"))}
    named = [k for k, on in unsupported.items() if on]
    if named:
        raise SlsvizError(f"{path} sets {', '.join(named)} in {CONFIG}; slsviz's LoRA has one rank and alpha for every "
                          "block and no trained biases, so it does not open this adapter yet.")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHTS:
        if (path / name).is_file():
            return read_state_dict(path / name)
    raise CheckpointError(f"{path} has {CONFIG} but no {' or '.join(WEIGHTS)}.")
