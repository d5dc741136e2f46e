"""AdaptFormer (Chen et al., 2022), parallel option: a scaled bottleneck beside each MLP."""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import Block
from torch import nn

from slsviz.models.petl.block import AdaptedBlock, factory_kwargs


class AdaptFormerAdapter(nn.Module):
    """``scale * up(dropout(relu(down(x))))``, initialised as AdaptFormer's ``"lora"`` option.

    Args:
        dim: token width D.
        bottleneck: adapter width b.
        scale: the scale s.
        dropout: dropout before the up-projection.
        device: where to create the parameters.
        dtype: their dtype.
    """

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        *,
        scale: float,
        dropout: float,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.down_proj = nn.Linear(dim, bottleneck, **dd)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up_proj = nn.Linear(bottleneck, dim, **dd)
        self.scale = scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Down kaiming-uniform (a = sqrt(5)), up zero, biases zero: the adapter starts silent."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.weight)
            nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up_proj(self.dropout(self.act(self.down_proj(x))))


class AdaptFormerBlock(AdaptedBlock):
    """A timm block with an AdaptFormer adapter parallel to its MLP.

    ``x + dp2(ls2(mlp(norm2(x)))) + adapter_mlp(x)``: the adapter reads the un-normed ``x`` the MLP
    branch starts from and, as in AdaptFormer, has neither drop path nor layer scale.

    Args:
        block: the timm block whose submodules are reused.
        bottleneck, scale, dropout: see :class:`AdaptFormerAdapter`.
    """

    def __init__(self, block: Block, *, bottleneck: int, scale: float, dropout: float) -> None:
        super().__init__(block)
        dim = block.attn.qkv.in_features
        self.adapter_mlp = AdaptFormerAdapter(dim, bottleneck, scale=scale, dropout=dropout, **factory_kwargs(block))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attention(self.norm1(x), attn_mask, is_causal)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))) + self.adapter_mlp(x)
        return x
