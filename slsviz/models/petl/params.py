"""Which parameters belong to a task: adapters, LoRA factors and the classification head, found by name,
plus the backbone tensors the model's PETL config gives the task (LoRA's trained biases; all of them
for a full fine-tune)."""

from __future__ import annotations

import torch
from torch import nn

from slsviz.models.petl.lora import LoraLinear

PETL_MARKERS = ("adapter", "lora_")
HEAD_PREFIX = "head."
CONFIG_ATTR = "petl_config"


def is_petl_param(name: str) -> bool:
    """Whether a parameter name belongs to a PETL module (it contains ``adapter`` or ``lora_``)."""
    return any(marker in name for marker in PETL_MARKERS)


def _task_rule(model: nn.Module):
    """A predicate on parameter names: whether the name belongs to the task, under ``model``'s config."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is not None and config.method == "full":
        return lambda name: True
    bias = config.bias if config is not None else "none"
    lora_biases = {f"{n}.bias" for n, m in model.named_modules() if isinstance(m, LoraLinear)} if bias == "lora_only" else set()

    def owned(name: str) -> bool:
        return (is_petl_param(name) or name.startswith(HEAD_PREFIX) or (bias == "all" and "bias" in name)
                or name in lora_biases)

    return owned


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters the task trains: PETL ones, the head's (``head.*``) and the backbone
    tensors its config gives it, in model order."""
    owned = _task_rule(model)
    return [name for name, _ in model.named_parameters() if owned(name)]


def mark_trainable(model: nn.Module) -> None:
    """``requires_grad`` True on the task's parameters (see :func:`trainable_names`), False on all others, in place."""
    owned = _task_rule(model)
    for name, param in model.named_parameters():
        param.requires_grad_(owned(name))


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameters of ``model``: all of them, or only the task's (see :func:`trainable_names`)."""
    owned = _task_rule(model)
    return sum(p.numel() for name, p in model.named_parameters() if not trainable_only or owned(name))


def petl_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task's tensors of ``model``'s state dict (PETL, head, and backbone tensors its config gives
    it), detached, on the CPU: what training changed and what a task checkpoint stores."""
    owned = _task_rule(model)
    return {name: t.detach().cpu() for name, t in model.state_dict().items() if owned(name)}
