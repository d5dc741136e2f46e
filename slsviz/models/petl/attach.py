"""Adding PETL modules to a timm VisionTransformer's blocks, merging them, and drop path for training."""

from __future__ import annotations

from timm.layers import DropPath, calculate_drop_path_rates
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.models.petl.adaptformer import AdaptFormerBlock
from slsviz.models.petl.block import check_block
from slsviz.models.petl.config import PetlConfig
from slsviz.models.petl.convpass import ConvpassBlock
from slsviz.models.petl.lora import attach_lora, merge_lora
from slsviz.models.petl.params import CONFIG_ATTR, mark_trainable
from slsviz.models.petl.repadapter import RepAdapterBlock
from slsviz.models.petl.swin_block import (
    SwinAdaptFormerBlock,
    SwinConvpassBlock,
    SwinRepAdapterBlock,
    check_swin_block,
)
from slsviz.models.swin import SwinBlocks


def attach_petl(model: VisionTransformer, config: PetlConfig | str = PetlConfig()) -> VisionTransformer:
    """Add ``config``'s PETL modules to every block of ``model`` (LoRA: to its layers), in place, and return it.

    The backbone's state-dict keys do not change, so a backbone checkpoint still loads (with
    ``strict=False``, missing only the PETL keys). Afterwards only the task's parameters require
    grad: PETL parameters, the head's (``head.*``, if the model has one yet), the biases LoRA's
    ``bias`` names, and for ``"full"`` all of them. The config is kept on the model, see
    :func:`config_of`. ``model.blocks[:d]``, ``forward_features`` and ``forward_intermediates``
    work as before. Copy the model first to keep the original.

    Args:
        model: a timm ``VisionTransformer`` with plain pre-norm ``Block`` blocks, or a :class:`SwinBlocks`
            with plain ``SwinTransformerBlock`` blocks (the adapters at each stage's width), not yet adapted.
        config: a :class:`PetlConfig`, or a method name for its defaults.

    Raises:
        SlsvizError: not a timm ViT, other block types, already adapted, or widths the method
            cannot use. The model is unchanged then.
    """
    if isinstance(config, str):
        config = PetlConfig(method=config)
    swin = isinstance(model, SwinBlocks)
    if not isinstance(model, VisionTransformer) and not swin:
        raise SlsvizError(f"PETL adapts timm VisionTransformer and Swin models, not {type(model).__name__}.")
    if config_of(model) is not None:
        raise SlsvizError(f"This model is already adapted ({config_of(model).method}): attach PETL to a fresh backbone.")
    for block in model.blocks:
        (check_swin_block if swin else check_block)(block)
    if config.method == "repadapter" and model.embed_dim % config.groups:
        raise SlsvizError(f"RepAdapter needs groups ({config.groups}) to divide the width {model.embed_dim}.")

    if config.method == "lora":
        layers = range(len(model.blocks)) if config.layers is None else config.layers
        if max(layers) >= len(model.blocks):
            raise SlsvizError(f"LoRA layers {list(layers)} do not fit a model of {len(model.blocks)} blocks (0-based).")
        for i in layers:
            attach_lora(model.blocks[i], config.targets, rank=config.bottleneck, scaling=config.scale,
                        dropout=config.dropout)
    elif config.method not in ("linear", "full"):
        adapted = [_adapted_block(model, block, config) for block in model.blocks]
        for i, block in enumerate(adapted):
            model.blocks[i] = block
    setattr(model, CONFIG_ATTR, config)
    mark_trainable(model)
    return model


def _adapted_block(model: VisionTransformer | SwinBlocks, block: nn.Module, config: PetlConfig) -> nn.Module:
    common = {"bottleneck": config.bottleneck, "scale": config.scale, "dropout": config.dropout}
    if isinstance(model, SwinBlocks):  # the same adapters at each stage's width and grid
        if config.method == "convpass":
            return SwinConvpassBlock(block, init=config.init, **common)
        if config.method == "repadapter":
            return SwinRepAdapterBlock(block, groups=config.groups, **common)
        return SwinAdaptFormerBlock(block, **common)
    if config.method == "convpass":
        return ConvpassBlock(block, num_prefix_tokens=model.num_prefix_tokens,
                             grid_size=tuple(model.patch_embed.grid_size), init=config.init, **common)
    if config.method == "repadapter":
        return RepAdapterBlock(block, groups=config.groups, **common)
    if config.method == "adaptformer":
        return AdaptFormerBlock(block, **common)
    raise AssertionError(f"no block for {config.method}")  # PetlConfig admits no other method


def config_of(model: nn.Module) -> PetlConfig | None:
    """The :class:`PetlConfig` ``model`` was adapted with, or ``None`` for a plain backbone."""
    return getattr(model, CONFIG_ATTR, None)


def merge_petl(model: VisionTransformer) -> VisionTransformer:
    """Fold RepAdapter and LoRA modules into the backbone's Linear layers, in place, and return it.

    The merged model computes what the adapted one computes in eval mode, with the backbone's
    parameter names only (plus ``attn.qkv.bias`` where RepAdapter merges into a bias-free qkv).
    Convpass, AdaptFormer, linear and full models, and merged ones, are returned unchanged.
    """
    for block in model.blocks:
        if isinstance(block, (RepAdapterBlock, SwinRepAdapterBlock)):
            block.merge()
        else:
            merge_lora(block)
    return model


def set_drop_path(model: VisionTransformer, rate: float) -> VisionTransformer:
    """Stochastic depth as timm schedules it: rates rising linearly from 0 to ``rate`` over the blocks.

    Sets every block's ``drop_path1`` and ``drop_path2`` (timm ``DropPath``, ``nn.Identity`` where the
    rate is 0), in place, adapted or not; it acts in train mode only. Returns ``model``.

    Raises:
        SlsvizError: ``rate`` outside [0, 1).
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise SlsvizError(f"The drop-path rate must be in [0, 1), got {rate!r}.")
    rates = calculate_drop_path_rates(float(rate), len(model.blocks))
    for block, block_rate in zip(model.blocks, rates):
        block.drop_path1 = DropPath(block_rate) if block_rate > 0 else nn.Identity()
        block.drop_path2 = DropPath(block_rate) if block_rate > 0 else nn.Identity()
    return model
