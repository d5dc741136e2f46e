"""LoRA (Hu et al., 2022) on the attention's fused ``qkv`` projection, mergeable."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoraLinear(nn.Linear):
    """A Linear layer plus a low-rank update: ``W x + b + scaling * B A dropout(x)``.

    It owns the base layer's own ``weight`` and ``bias`` (the same Parameter objects), so their
    state-dict keys are unchanged, and adds ``lora_A`` (r x in) and ``lora_B`` (out x r), named and
    initialised as in the LoRA reference code: A kaiming-uniform, B zero, so it starts as the base.

    Args:
        base: the layer to adapt.
        rank: r.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout on the low-rank path's input.
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float) -> None:
        # Built on the meta device: its own fresh weights are replaced by the base's at once.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        dd = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **dd))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, rank, **dd))
        self.lora_dropout = nn.Dropout(dropout)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A kaiming-uniform (a = sqrt(5)), B zero."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scaling * update

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear with ``W + scaling * B A``, sharing this layer's weight and bias.

        The shared weight is updated in place, so this layer is spent: use the returned one instead.
        """
        delta = self.lora_B.double() @ self.lora_A.double() * self.scaling
        self.weight.copy_(self.weight.double() + delta)
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight = self.weight
        plain.bias = self.bias
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def attach_lora(attn: nn.Module, *, rank: int, alpha: float, dropout: float) -> None:
    """Replace ``attn.qkv`` by a :class:`LoraLinear` around it, in place."""
    attn.qkv = LoraLinear(attn.qkv, rank=rank, alpha=alpha, dropout=dropout)


def merge_lora(attn: nn.Module) -> None:
    """Fold a :class:`LoraLinear` ``attn.qkv`` back into a plain Linear, in place; else do nothing."""
    if isinstance(attn.qkv, LoraLinear):
        attn.qkv = attn.qkv.merged()
