"""LoRA (Hu et al., 2022) on a ViT block's Linear layers, mergeable.

Targets are timm's names: the attention's fused ``qkv`` (whole, or its query / key / value thirds,
which is what LoRA on separate ``query``/``value`` layers of a transformers ViT becomes), the
attention output ``proj`` and the MLP's ``fc1`` / ``fc2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Where each target lives in a timm Block, and which third of qkv's output it adapts (None: all of it).
TARGETS: dict[str, tuple[str, str, int | None]] = {
    "qkv": ("attn", "qkv", None),
    "q": ("attn", "qkv", 0),
    "k": ("attn", "qkv", 1),
    "v": ("attn", "qkv", 2),
    "proj": ("attn", "proj", None),
    "fc1": ("mlp", "fc1", None),
    "fc2": ("mlp", "fc2", None),
}


class LoraLinear(nn.Linear):
    """A Linear layer plus a low-rank update: ``W x + b + scaling * B A dropout(x)``.

    It owns the base layer's own ``weight`` and ``bias`` (the same Parameter objects), so their
    state-dict keys are unchanged, and adds ``lora_A`` (r x in) and ``lora_B`` (out x r), named and
    initialised as in the LoRA reference code: A kaiming-uniform, B zero, so it starts as the base.

    With ``parts`` (a fused layer's output split into ``num_parts`` equal slices, e.g. qkv's three),
    each listed slice has its own rank-r pair: ``lora_A`` is the A's stacked (k r x in) and
    ``lora_B`` the B's stacked (k out/num_parts x r); the other slices get no update.

    Args:
        base: the layer to adapt.
        rank: r.
        scaling: the factor on ``B A`` (LoRA: ``alpha / r``; rsLoRA: ``alpha / sqrt(r)``).
        dropout: dropout on the low-rank path's input.
        parts: the output slices to adapt (``None``: the whole output).
        num_parts: how many equal slices the output has.
    """

    def __init__(self, base: nn.Linear, *, rank: int, scaling: float, dropout: float,
                 parts: tuple[int, ...] | None = None, num_parts: int = 3) -> None:
        # Built on the meta device: its own fresh weights are replaced by the base's at once.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.parts = tuple(parts) if parts is not None else None
        self.num_parts = num_parts if parts is not None else 1
        width = base.out_features // self.num_parts
        count = len(self.parts) if self.parts is not None else 1
        dd = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(count * rank, base.in_features, **dd))
        self.lora_B = nn.Parameter(torch.empty(count * width, rank, **dd))
        self.lora_dropout = nn.Dropout(dropout)
        self.rank = rank
        self.scaling = float(scaling)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A kaiming-uniform (a = sqrt(5), per slice, as each separate layer would be), B zero."""
        with torch.no_grad():
            for a in self.lora_A.split(self.rank):
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        low = F.linear(self.lora_dropout(x), self.lora_A)
        if self.parts is None:
            return base + self.scaling * F.linear(low, self.lora_B)
        width = self.out_features // self.num_parts
        pieces = list(base.split(width, dim=-1))
        for j, (h, b) in enumerate(zip(low.split(self.rank, dim=-1), self.lora_B.split(width))):
            pieces[self.parts[j]] = pieces[self.parts[j]] + self.scaling * F.linear(h, b)
        return torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear with ``W + scaling * B A``, sharing this layer's weight and bias.

        The shared weight is updated in place, so this layer is spent: use the returned one instead.
        """
        rank, a, b, s = self.rank, self.lora_A.double(), self.lora_B.double(), self.scaling
        if self.parts is None:
            update = b @ a * s
        else:
            width = self.out_features // self.num_parts
            update = torch.zeros(self.out_features, self.in_features, dtype=torch.float64, device=a.device)
            for j, (aj, bj) in enumerate(zip(a.split(rank), b.split(width))):
                update[self.parts[j] * width:(self.parts[j] + 1) * width] = bj @ aj * s
        self.weight.copy_(self.weight.double() + update)
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight = self.weight
        plain.bias = self.bias
        return plain

    def extra_repr(self) -> str:
        parts = "" if self.parts is None else f", parts={''.join('qkv'[p] for p in self.parts)}"
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}{parts}"


def attach_lora(block: nn.Module, targets: tuple[str, ...], *, rank: int, scaling: float, dropout: float) -> None:
    """Replace the block's targeted Linear layers by :class:`LoraLinear` layers around them, in place.

    ``q``, ``k`` and ``v`` together make one :class:`LoraLinear` on ``attn.qkv`` with those slices.
    """
    thirds = tuple(sorted(TARGETS[t][2] for t in targets if TARGETS[t][2] is not None))
    wrapped: set[tuple[str, str]] = set()
    for target in targets:
        owner, name, _ = TARGETS[target]
        if (owner, name) in wrapped:
            continue
        wrapped.add((owner, name))
        parent = getattr(block, owner)
        parts = thirds if target in ("q", "k", "v") else None
        setattr(parent, name, LoraLinear(getattr(parent, name), rank=rank, scaling=scaling, dropout=dropout, parts=parts))


def merge_lora(block: nn.Module) -> None:
    """Fold every :class:`LoraLinear` of the block back into a plain Linear, in place."""
    for owner, name, _ in set(TARGETS.values()):
        parent = getattr(block, owner, None)
        layer = getattr(parent, name, None)
        if isinstance(layer, LoraLinear):
            setattr(parent, name, layer.merged())
