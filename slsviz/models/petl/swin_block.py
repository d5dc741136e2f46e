"""Convpass, RepAdapter and AdaptFormer in a timm Swin block, placed as in a ViT block.

A Swin block holds NHWC tokens of its stage's grid and width, attends within (shifted) windows, and
has no CLS token. The adapters are the ViT's (:mod:`~slsviz.models.petl.convpass`,
:mod:`~slsviz.models.petl.repadapter`, :mod:`~slsviz.models.petl.adaptformer`), built at the stage's
width; Convpass convolves the stage's own token grid. An adapted block is a ``SwinTransformerBlock``
sharing the original's submodules, buffers and settings (the same objects), so timm's window
attention (``_attn``) runs unchanged and the state-dict keys stay the backbone's.

RepAdapter's first adapter sits inside the window attention, on each window's tokens before
``qkv``: timm pads a grid that is not a whole number of windows with zero tokens, and only an
adapter after that padding folds into ``qkv`` exactly.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.models.petl.adaptformer import AdaptFormerAdapter
from slsviz.models.petl.block import factory_kwargs
from slsviz.models.petl.convpass import ConvpassAdapter
from slsviz.models.petl.repadapter import RepAdapter, fold

SWIN_PARTS = ("norm1", "attn", "drop_path1", "norm2", "mlp", "drop_path2")


class SwinAdaptedBlock(SwinTransformerBlock):
    """A timm ``SwinTransformerBlock`` that reuses another's parts; subclasses add adapters and a forward.

    Args:
        block: the timm Swin block to adapt; it is not modified.
    """

    def __init__(self, block: SwinTransformerBlock) -> None:
        nn.Module.__init__(self)
        check_swin_block(block)
        share_parts(self, block)

    @property
    def width(self) -> int:
        return int(self.attn.qkv.in_features)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC to (N, H*W, C), the layout the ViT's adapters read."""
        return x.reshape(x.shape[0], -1, x.shape[-1])


def share_parts(module: nn.Module, original: nn.Module) -> None:
    """Give the freshly initialised ``module`` ``original``'s settings, submodules, parameters and buffers
    (the same objects, under the same names, persistent or not as there)."""
    state = vars(module)
    for name, value in vars(original).items():
        if name not in state:  # settings: window and shift sizes, grid, width, heads
            state[name] = value
    for name, child in original._modules.items():
        module.add_module(name, child)
    for name, parameter in original._parameters.items():
        module.register_parameter(name, parameter)
    for name, buffer in original._buffers.items():  # with the None ones (no mask where there is no shift)
        module.register_buffer(name, buffer, persistent=name not in original._non_persistent_buffers_set)


class AdapterBeforeQkv(WindowAttention):
    """timm's window attention with an adapter on each window's tokens before ``qkv``.

    Args:
        attn: the attention whose parts are reused; it is not modified.
        adapter: a module on (windows, tokens, width).
    """

    def __init__(self, attn: WindowAttention, adapter: nn.Module) -> None:
        nn.Module.__init__(self)
        share_parts(self, attn)
        self.adapter = adapter

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(self.adapter(x), mask=mask)

    def plain(self) -> WindowAttention:
        """timm's attention with this one's parts and no adapter."""
        attn = WindowAttention.__new__(WindowAttention)
        nn.Module.__init__(attn)
        share_parts(attn, self)
        del attn.adapter
        return attn


def check_swin_block(block: nn.Module) -> None:
    """Raise unless ``block`` is timm's plain ``SwinTransformerBlock`` (not V2's, not adapted)."""
    if (type(block) is not SwinTransformerBlock or set(block._modules) != set(SWIN_PARTS)
            or type(block.attn) is not WindowAttention):
        raise SlsvizError(f"PETL on a Swin adapts timm's SwinTransformerBlock only; this model has "
                          f"{type(block).__name__} blocks.")


class SwinConvpassBlock(SwinAdaptedBlock):
    """Convpass bypasses beside window attention and MLP, each convolving the stage's token grid.

    ``x + dp1(attn(n1)) + dp1(adapter_attn(n1))`` with ``n1 = norm1(x)``, then the same with the MLP.
    """

    def __init__(self, block: SwinTransformerBlock, *, bottleneck: int, scale: float, dropout: float,
                 init: str = "default") -> None:
        super().__init__(block)
        kwargs = dict(scale=scale, dropout=dropout, num_prefix_tokens=0, grid_size=tuple(self.input_resolution),
                      init=init, **factory_kwargs(block))
        self.adapter_attn = ConvpassAdapter(self.width, bottleneck, **kwargs)
        self.adapter_mlp = ConvpassAdapter(self.width, bottleneck, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        n1 = self.norm1(x)
        x = x + self.drop_path1(self._attn(n1)) + self.drop_path1(self.adapter_attn(self.tokens(n1)).reshape(shape))
        x = self.tokens(x)
        n2 = self.norm2(x)
        x = x + self.drop_path2(self.mlp(n2)) + self.drop_path2(self.adapter_mlp(n2))
        return x.reshape(shape)


class SwinRepAdapterBlock(SwinAdaptedBlock):
    """RepAdapters before ``attn.qkv`` (inside the window attention, ``attn.adapter``) and between ``norm2``
    and the MLP (``adapter_mlp``); :meth:`merge` folds both into the Linear layers after them."""

    def __init__(self, block: SwinTransformerBlock, *, bottleneck: int, scale: float, dropout: float,
                 groups: int) -> None:
        super().__init__(block)
        kwargs = dict(scale=scale, dropout=dropout, groups=groups, **factory_kwargs(block))
        self.attn = AdapterBeforeQkv(self.attn, RepAdapter(self.width, bottleneck, **kwargs))
        self.adapter_mlp: nn.Module = RepAdapter(self.width, bottleneck, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = self.tokens(x)
        x = x + self.drop_path2(self.mlp(self.adapter_mlp(self.norm2(x))))
        return x.reshape(shape)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapters into ``attn.qkv`` and ``mlp.fc1``; a merged block is left as it is."""
        if isinstance(self.attn, AdapterBeforeQkv):
            fold(self.attn.adapter, self.attn.qkv)
            self.attn = self.attn.plain()
        if isinstance(self.adapter_mlp, RepAdapter):
            fold(self.adapter_mlp, self.mlp.fc1)
            self.adapter_mlp = nn.Identity()


class SwinAdaptFormerBlock(SwinAdaptedBlock):
    """An AdaptFormer adapter parallel to the MLP, reading the un-normed tokens the MLP branch starts from."""

    def __init__(self, block: SwinTransformerBlock, *, bottleneck: int, scale: float, dropout: float) -> None:
        super().__init__(block)
        self.adapter_mlp = AdaptFormerAdapter(self.width, bottleneck, scale=scale, dropout=dropout,
                                              **factory_kwargs(block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = self.tokens(x)
        x = x + self.drop_path2(self.mlp(self.norm2(x))) + self.adapter_mlp(x)
        return x.reshape(shape)
