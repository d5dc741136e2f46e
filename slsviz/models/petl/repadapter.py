"""RepAdapter (Luo et al., 2023): sequential adapters before ``attn.qkv`` and ``mlp.fc1``, mergeable."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.models.petl.block import AdaptedBlock, factory_kwargs


class RepAdapter(nn.Module):
    """``x + scale * B(dropout(A(x)))``: A a 1x1 conv D->b, B a grouped 1x1 conv b->D.

    The parameter names (``conv_A``, ``conv_B``) and shapes are those of the RepAdapter code, so
    its checkpoints fit. In eval mode the adapter is affine, which :meth:`affine` returns.

    Args:
        dim: token width D.
        bottleneck: adapter width b.
        scale: the scale s.
        dropout: dropout between A and B.
        groups: groups of B; must divide both D and b.
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
        groups: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dim % groups or bottleneck % groups:
            raise SlsvizError(f"RepAdapter needs groups ({groups}) to divide the width {dim} and the bottleneck {bottleneck}.")
        dd = {"device": device, "dtype": dtype}
        self.conv_A = nn.Conv1d(dim, bottleneck, 1, **dd)
        self.conv_B = nn.Conv1d(bottleneck, dim, 1, groups=groups, **dd)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        self.groups = groups
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RepAdapter's initialisation: B is zero, so the adapter starts as the identity."""
        with torch.no_grad():
            nn.init.xavier_uniform_(self.conv_A.weight)
            nn.init.zeros_(self.conv_A.bias)
            nn.init.zeros_(self.conv_B.weight)
            nn.init.zeros_(self.conv_B.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_B(self.dropout(self.conv_A(x.transpose(1, 2))))
        return x + self.scale * h.transpose(1, 2)

    @torch.no_grad()
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, c)`` with ``adapter(x) == x @ M.T + c`` in eval mode: ``M = I + s B A``, ``c = s (B b_A + b_B)``."""
        a = self.conv_A.weight[:, :, 0]
        out_per_group = self.conv_B.out_channels // self.groups
        w_b = self.conv_B.weight[:, :, 0]  # (D, b / groups): group g maps inputs g*in.. to outputs g*out..
        b = torch.block_diag(*(w_b[g * out_per_group:(g + 1) * out_per_group] for g in range(self.groups)))
        eye = torch.eye(a.shape[1], device=a.device, dtype=a.dtype)
        return eye + self.scale * b @ a, self.scale * (b @ self.conv_A.bias + self.conv_B.bias)


class RepAdapterBlock(AdaptedBlock):
    """A timm block with RepAdapters between ``norm1`` and attention and between ``norm2`` and MLP.

    ``x + dp1(ls1(attn(adapter_attn(norm1(x)))))``, then ``x + dp2(ls2(mlp(adapter_mlp(norm2(x)))))``.
    After :meth:`merge` both adapters are ``nn.Identity`` and the block computes what it did in eval mode.

    Args:
        block: the timm block whose submodules are reused.
        bottleneck, scale, dropout, groups: see :class:`RepAdapter`.
    """

    def __init__(self, block: Block, *, bottleneck: int, scale: float, dropout: float, groups: int) -> None:
        super().__init__(block)
        dim = block.attn.qkv.in_features
        kwargs = dict(scale=scale, dropout=dropout, groups=groups, **factory_kwargs(block))
        self.adapter_attn: nn.Module = RepAdapter(dim, bottleneck, **kwargs)
        self.adapter_mlp: nn.Module = RepAdapter(dim, bottleneck, **kwargs)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attention(self.adapter_attn(self.norm1(x)), attn_mask, is_causal)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.adapter_mlp(self.norm2(x)))))
        return x

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapters into ``attn.qkv`` and ``mlp.fc1``; a merged block is left as it is."""
        if isinstance(self.adapter_attn, RepAdapter):
            fold(self.adapter_attn, self.attn.qkv)
            self.adapter_attn = nn.Identity()
        if isinstance(self.adapter_mlp, RepAdapter):
            fold(self.adapter_mlp, self.mlp.fc1)
            self.adapter_mlp = nn.Identity()


def fold(adapter: RepAdapter, linear: nn.Module) -> None:
    """``linear(adapter(x))`` becomes ``linear'(x)``: W' = W M, b' = b + W c."""
    if not isinstance(linear, nn.Linear):
        raise SlsvizError(f"RepAdapter can only be merged into a Linear layer, not {type(linear).__name__}.")
    m, c = (t.double() for t in adapter.affine())  # folded in float64: merged equals unmerged closely
    weight = linear.weight.double()
    shift = (weight @ c).to(linear.weight.dtype)
    linear.weight.copy_(weight @ m)
    if linear.bias is None:
        # A backbone without this bias (qkv_bias=False) gains one: the merged model has one more key.
        linear.bias = nn.Parameter(shift, requires_grad=False)
    else:
        linear.bias.add_(shift)
