"""The base of the adapted blocks: a timm ``Block``'s own submodules, under their own names."""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn

from slsviz.errors import SlsvizError

BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


class AdaptedBlock(nn.Module):
    """A transformer block that reuses a timm ``Block``'s submodules (the same objects).

    Subclasses add their adapters and define ``forward(x, attn_mask=None, is_causal=False)``, the
    signature of timm's ``Block.forward``, which ``VisionTransformer.forward_features`` and
    ``forward_intermediates`` call with keywords when given a mask. Because the parts keep their
    attribute names, the backbone's state-dict keys (``blocks.0.attn.qkv.weight``, ...) do not change.

    Args:
        block: the timm block to adapt; it is not modified.
    """

    norm1: nn.Module
    attn: nn.Module
    ls1: nn.Module
    drop_path1: nn.Module
    norm2: nn.Module
    mlp: nn.Module
    ls2: nn.Module
    drop_path2: nn.Module

    def __init__(self, block: Block) -> None:
        super().__init__()
        check_block(block)
        for name in BLOCK_PARTS:
            setattr(self, name, getattr(block, name))

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        """The attention branch as timm computes it, before layer scale and drop path."""
        return self.attn(x, attn_mask=attn_mask, is_causal=is_causal)


def check_block(block: Any) -> None:
    """Raise unless ``block`` is a plain timm ``Block`` whose forward the adapted blocks reproduce.

    Raises:
        SlsvizError: another block type (e.g. ``ResPostBlock``, ``ParallelScalingBlock``).
    """
    if type(block) is not Block or set(block._modules) != set(BLOCK_PARTS) or block._parameters:
        raise SlsvizError(
            f"PETL adapts timm's pre-norm Block only; this model has {type(block).__name__} blocks."
        )


def factory_kwargs(module: nn.Module) -> dict[str, Any]:
    """Device and dtype of ``module``'s first parameter, for creating adapters beside it."""
    p = next(module.parameters())
    return {"device": p.device, "dtype": p.dtype}
