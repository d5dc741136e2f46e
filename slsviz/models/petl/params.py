"""Which parameters PETL trains, found by name: adapters, LoRA factors and the classification head."""

from __future__ import annotations

import torch
from torch import nn

PETL_MARKERS = ("adapter", "lora_")
HEAD_PREFIX = "head."


def is_petl_param(name: str) -> bool:
    """Whether a parameter name belongs to a PETL module (it contains ``adapter`` or ``lora_``)."""
    return any(marker in name for marker in PETL_MARKERS)


def _is_trainable(name: str) -> bool:
    return is_petl_param(name) or name.startswith(HEAD_PREFIX)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters PETL trains: the PETL ones and the head's (``head.*``), in model order."""
    return [name for name, _ in model.named_parameters() if _is_trainable(name)]


def mark_trainable(model: nn.Module) -> None:
    """``requires_grad`` True on PETL and head parameters, False on all others, in place."""
    for name, param in model.named_parameters():
        param.requires_grad_(_is_trainable(name))


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters of ``model``: all of them, or only those PETL trains (adapters and head)."""
    return sum(p.numel() for name, p in model.named_parameters() if not trainable_only or _is_trainable(name))


def petl_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The PETL and head tensors of ``model``'s state dict, detached, on the CPU: what training changed."""
    return {name: t.detach().cpu() for name, t in model.state_dict().items() if _is_trainable(name)}
