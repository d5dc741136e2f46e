"""Convpass (Jie & Deng, 2022): convolutional bypasses beside attention and MLP, SLS' main method."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.models.petl.block import AdaptedBlock, factory_kwargs


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``, which Convpass uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ConvpassAdapter(nn.Module):
    """Down-project, 3x3 conv over the patch grid, up-project; returns ``scale * up(...)``.

    Each prefix token (CLS, registers) goes through the same conv as its own 1x1 map, padded by
    one, so it sees only the centre tap ``adapter_conv.weight[:, :, 1, 1]`` and the bias.

    Args:
        dim: token width D.
        bottleneck: adapter width b.
        scale: the output scale s.
        dropout: dropout before the up-projection.
        num_prefix_tokens: leading tokens that are not patches.
        grid_size: the patch grid (rows, columns) of the model's input size; a token count that
            does not fit it is read as a square grid.
        init: ``"default"`` (conv = identity at the centre tap) or ``"xavier"``.
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
        num_prefix_tokens: int,
        grid_size: tuple[int, int],
        init: str = "default",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.adapter_down = nn.Linear(dim, bottleneck, **dd)
        self.adapter_conv = nn.Conv2d(bottleneck, bottleneck, 3, padding=1, **dd)
        self.adapter_up = nn.Linear(bottleneck, dim, **dd)
        self.act = QuickGELU()
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "default") -> None:
        """Convpass' initialisation: the up-projection is zero, so the bypass starts silent."""
        with torch.no_grad():
            nn.init.xavier_uniform_(self.adapter_down.weight)
            nn.init.zeros_(self.adapter_down.bias)
            if init == "xavier":
                nn.init.xavier_uniform_(self.adapter_conv.weight)
            else:
                nn.init.zeros_(self.adapter_conv.weight)
                self.adapter_conv.weight[:, :, 1, 1] += torch.eye(self.adapter_conv.out_channels)
            nn.init.zeros_(self.adapter_conv.bias)
            nn.init.zeros_(self.adapter_up.weight)
            nn.init.zeros_(self.adapter_up.bias)

    def grid(self, num_patches: int) -> tuple[int, int]:
        """Rows and columns of ``num_patches`` patch tokens.

        Raises:
            SlsvizError: neither the model's grid nor a square one fits.
        """
        rows, cols = self.grid_size
        if rows * cols == num_patches:
            return rows, cols
        side = math.isqrt(num_patches)
        if side * side == num_patches:
            return side, side
        raise SlsvizError(
            f"Convpass cannot lay {num_patches} patch tokens on a grid: the model's grid is {rows}x{cols} "
            "and the count is not a square."
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        prefix_len = self.num_prefix_tokens
        rows, cols = self.grid(tokens - prefix_len)
        down = self.act(self.adapter_down(x))
        prefix, patches = down[:, :prefix_len], down[:, prefix_len:]
        patches = patches.reshape(batch, rows, cols, -1).permute(0, 3, 1, 2)
        patches = self.adapter_conv(patches).permute(0, 2, 3, 1).reshape(batch, rows * cols, -1)
        # The conv on a zero-padded 1x1 map, written as what it is: the centre tap plus bias.
        prefix = F.linear(prefix, self.adapter_conv.weight[:, :, 1, 1], self.adapter_conv.bias)
        mid = self.dropout(self.act(torch.cat([prefix, patches], dim=1)))
        return self.scale * self.adapter_up(mid)


class ConvpassBlock(AdaptedBlock):
    """A timm block with Convpass bypasses beside attention and MLP, reading the same normed input.

    ``x + dp1(ls1(attn(n1))) + dp1(adapter_attn(n1))`` with ``n1 = norm1(x)``, then the same with
    ``norm2``/``mlp``/``adapter_mlp``; layer scale is on the backbone branches only, and each
    drop-path call draws its own mask, as in the Convpass code.

    Args:
        block: the timm block whose submodules are reused.
        bottleneck, scale, dropout, num_prefix_tokens, grid_size, init: see :class:`ConvpassAdapter`.
    """

    def __init__(
        self,
        block: Block,
        *,
        bottleneck: int,
        scale: float,
        dropout: float,
        num_prefix_tokens: int,
        grid_size: tuple[int, int],
        init: str = "default",
    ) -> None:
        super().__init__(block)
        dim = block.attn.qkv.in_features
        kwargs = dict(scale=scale, dropout=dropout, num_prefix_tokens=num_prefix_tokens, grid_size=grid_size,
                      init=init, **factory_kwargs(block))
        self.adapter_attn = ConvpassAdapter(dim, bottleneck, **kwargs)
        self.adapter_mlp = ConvpassAdapter(dim, bottleneck, **kwargs)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        n1 = self.norm1(x)
        attn = self.ls1(self.attention(n1, attn_mask, is_causal))
        x = x + self.drop_path1(attn) + self.drop_path1(self.adapter_attn(n1))
        n2 = self.norm2(x)
        x = x + self.drop_path2(self.ls2(self.mlp(n2))) + self.drop_path2(self.adapter_mlp(n2))
        return x
