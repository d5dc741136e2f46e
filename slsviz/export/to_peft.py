"""The pruned LoRA task as a PEFT adapter folder, with the base cut to D blocks written beside it.

``adapter/`` is what ``PeftModel.save_pretrained`` writes (PEFT writes it here): LoRA on the kept
blocks' modules under timm's names, the head in ``modules_to_save``, trained biases as PEFT's ``bias``
saves them. ``base/`` holds the timm model cut to D blocks (``model.safetensors``, ``config.json``
with ``create_model``'s arguments), the head and trained biases in it too, so that
``PeftModel.from_pretrained(timm.create_model(arch, depth=D, ...), "adapter")`` is the pruned model.
LoRA on query, key or value alone (a third of timm's fused ``qkv``) is written as LoRA on ``qkv``
whose other rows of B are zero: the same update, at rank r per adapted third, so a module's rank and
PEFT's ``lora_alpha`` may differ from the task's (the scaling on ``B A`` is the task's exactly).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.export.handback import check_logits, cut_cpu
from slsviz.export.to_timm import load_lines, timm_model, timm_names, timm_state, write_config
from slsviz.models.petl import LoraLinear
from slsviz.models.task import TaskMeta

TITLE = "The pruned LoRA task for PEFT, on its base cut to the kept blocks"


def refusal(model: nn.Module, meta: TaskMeta) -> str | None:
    """Why PEFT's LoRA format cannot hold the task (not LoRA), or ``None``."""
    method = meta.petl.get("method")
    if method != "lora":
        return (f"A PEFT LoRA folder holds LoRA tasks, not {method}: export it for timm or transformers (where its "
                "adapters merge), as the slsviz task or as ONNX.")
    return None


def write(model: nn.Module, meta: TaskMeta, depth: int, folder: Path) -> tuple[str, list[str]]:
    """``adapter/`` (PEFT's own files) and ``base/``, checked with ``PeftModel.from_pretrained`` on the base."""
    from peft import LoraConfig, PeftModel, get_peft_model

    cut = cut_cpu(model, depth)
    name = timm_names(cut)  # PEFT targets the timm model's modules
    factors = {name(n): _fused(layer) for n, layer in cut.named_modules() if isinstance(layer, LoraLinear)}
    if not factors:
        raise SlsvizError(f"The task's LoRA adapts none of the first {depth} blocks (its blocks: "
                          f"{meta.petl.get('layers')}): export it for timm or transformers, which hold the cut model.")
    rank = max(a.shape[0] for a, _ in factors.values())
    scaling = float(next(layer for layer in cut.modules() if isinstance(layer, LoraLinear)).scaling)
    rslora = bool(meta.petl.get("rslora"))
    alpha = scaling * (math.sqrt(rank) if rslora else rank)  # PEFT's scaling is lora_alpha / r (rsLoRA: / sqrt(r))
    base = timm_state(cut, keep=lambda k: "lora_" not in k)
    config = LoraConfig(r=rank, lora_alpha=alpha, use_rslora=rslora, lora_dropout=float(meta.petl.get("dropout", 0.0)),
                        target_modules=sorted(factors), bias=str(meta.petl.get("bias", "none")), modules_to_save=["head"])
    built, kwargs = timm_model(meta, base, cut)
    wrapped = get_peft_model(built, config)
    with torch.no_grad():
        for name, (a, b) in factors.items():
            layer = wrapped.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(_padded(a, rank, rows=True))
            layer.lora_B["default"].weight.copy_(_padded(b, rank, rows=False))
    wrapped.save_pretrained(folder / "adapter")
    (folder / "base").mkdir()
    save_file(base, str(folder / "base" / "model.safetensors"), metadata={"format": "pt"})
    write_config(folder / "base" / "config.json", meta, kwargs, depth)
    fresh, _ = timm_model(meta, base, cut)
    loaded = PeftModel.from_pretrained(fresh, str(folder / "adapter")).eval()
    check_logits(loaded, cut, meta.img_size, f"PEFT's adapter on timm's {meta.backbone_arch} at depth {depth}")
    same = rank == meta.petl.get("bottleneck") and math.isclose(alpha, float(meta.petl.get("alpha", alpha)))
    note = ("" if same else f" Rank {rank} and lora_alpha {alpha:g} carry the task's query/key/value thirds on the "
            "fused qkv (zero rows elsewhere): the same update.")
    load = load_lines(meta.backbone_arch, kwargs, "base/model.safetensors")
    load = [*load[:-2], "from peft import PeftModel", 'model = PeftModel.from_pretrained(model, "adapter").eval()', "```"]
    return (f"LoRA of the first {depth} blocks and the head as a PEFT adapter (r={rank}, lora_alpha={alpha:g}), on the "
            f"timm base cut to {depth} blocks." + note), load


def _fused(layer: LoraLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` of one LoRA on the whole output: per-third pairs become one pair, B zero off their rows."""
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    if layer.parts is None:
        return a.clone(), b.clone()
    width = layer.out_features // layer.num_parts
    fused = torch.zeros(layer.out_features, a.shape[0], dtype=b.dtype)
    for j, (part, piece) in enumerate(zip(layer.parts, b.split(width))):
        fused[part * width:(part + 1) * width, j * layer.rank:(j + 1) * layer.rank] = piece
    return a.clone(), fused


def _padded(t: torch.Tensor, rank: int, *, rows: bool) -> torch.Tensor:
    """A (rows) or B (columns) widened with zeros to ``rank``: LoRA of a lower rank, written at ``rank``."""
    missing = rank - (t.shape[0] if rows else t.shape[1])
    if missing == 0:
        return t
    return torch.cat([t, t.new_zeros((missing, t.shape[1]) if rows else (t.shape[0], missing))], dim=0 if rows else 1)
