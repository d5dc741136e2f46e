"""The official SLS code's Convpass and RepAdapter blocks (RuiZiHan/SLS: convpass.py, repadapter.py, timm 0.9
branch), written again here as a reference: the same modules, parameter names and forward passes, so that
a checkpoint saved from them is what that code saves. Tests only."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Convpass(nn.Module):
    """Down 768 -> dim, QuickGELU, a 3x3 conv on the 14x14 patch grid and, separately, on the CLS token as
    a 1x1 map, QuickGELU, dropout, up dim -> 768 (the official fixed shapes)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.adapter_conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.adapter_down = nn.Linear(768, dim)
        self.adapter_up = nn.Linear(dim, 768)
        self.act = QuickGELU()
        self.dropout = nn.Dropout(0.1)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        down = self.act(self.adapter_down(x))
        patches = down[:, 1:].reshape(b, 14, 14, self.dim).permute(0, 3, 1, 2)
        patches = self.adapter_conv(patches).permute(0, 2, 3, 1).reshape(b, 14 * 14, self.dim)
        cls = down[:, :1].reshape(b, 1, 1, self.dim).permute(0, 3, 1, 2)
        cls = self.adapter_conv(cls).permute(0, 2, 3, 1).reshape(b, 1, self.dim)
        return self.adapter_up(self.dropout(self.act(torch.cat([cls, patches], dim=1))))


class RepAdapter(nn.Module):
    """``x + scale * conv_B(dropout(conv_A(x)))`` over channels, ``conv_B`` grouped."""

    def __init__(self, in_features: int = 768, hidden_dim: int = 8, groups: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        self.conv_A = nn.Conv1d(in_features, hidden_dim, 1, groups=1, bias=True)
        self.conv_B = nn.Conv1d(hidden_dim, in_features, 1, groups=groups, bias=True)
        self.dropout = nn.Dropout(0.1)
        self.groups = groups
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        x = self.conv_B(self.dropout(self.conv_A(x))) * self.scale + x
        return x.transpose(1, 2).contiguous()


def _convpass_forward(self: Block, x: torch.Tensor) -> torch.Tensor:
    x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x)))) + self.drop_path1(self.adapter_attn(self.norm1(x))) * self.s
    x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))) + self.drop_path2(self.adapter_mlp(self.norm2(x))) * self.s
    return x


def _repadapter_forward(self: Block, x: torch.Tensor) -> torch.Tensor:
    x = x + self.drop_path1(self.ls1(self.attn(self.adapter_attn(self.norm1(x)))))
    x = x + self.drop_path2(self.ls2(self.mlp(self.adapter_mlp(self.norm2(x)))))
    return x


def attach(model: nn.Module, method: str, dim: int, s: float, groups: int = 2) -> nn.Module:
    """Put the official adapters into every timm ``Block`` of ``model`` and bind the official forward."""
    for block in model.blocks:
        if method == "convpass":
            block.adapter_attn, block.adapter_mlp = Convpass(dim), Convpass(dim)
            block.forward = _convpass_forward.__get__(block, type(block))
        else:
            block.adapter_attn = RepAdapter(hidden_dim=dim, groups=groups, scale=s)
            block.adapter_mlp = RepAdapter(hidden_dim=dim, groups=groups, scale=s)
            block.forward = _repadapter_forward.__get__(block, type(block))
        block.s = s
    return model


def saved(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the official ``utils.save`` writes: every parameter whose name holds "adapter" or "head"."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "adapter" in n or "head" in n}


# --- Swin (visualization.forward_Swin_features, set_pruning.swin_forward_drop) ------------------------
# The official code runs timm 0.4's Swin, where a stage ends with its patch merging; in timm 1.x the same
# layer starts the next stage (layers[s + 1].downsample). These ports say so where they use it.


def swin_features(swin: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """forward_Swin_features: each block's output through its stage's merging (if any), averaged over tokens."""
    x = swin.patch_embed(x)
    features = []
    for s, stage in enumerate(swin.layers):
        x = stage.downsample(x)
        for block in stage.blocks:
            x = block(x)
            merged = swin.layers[s + 1].downsample(x) if s + 1 < len(swin.layers) else x
            features.append(merged.mean(dim=(1, 2)))
    return features


def swin_forward_drop(swin: nn.Module, current_depth: int, x: torch.Tensor) -> torch.Tensor:
    """swin_forward_drop as written for a 2-2-18-2 Swin (depths 5..24 only), then the head."""
    assert [len(stage.blocks) for stage in swin.layers] == [2, 2, 18, 2] and current_depth >= 5
    x = swin.patch_embed(x)
    if current_depth >= 23:
        for index in range(3):
            x = swin.layers[index](x)
        x = swin.layers[3].downsample(x)
        for blk in range(current_depth - 22):
            x = swin.layers[3].blocks[blk](x)
    else:
        for index in range(2):
            x = swin.layers[index](x)
        x = swin.layers[2].downsample(x)
        for blk in range(current_depth - 4):
            x = swin.layers[2].blocks[blk](x)
        x = swin.layers[3].downsample(x)  # the official stage 3 ends with it (swin_layer_drop)
    return swin.head(swin.norm(x))


def swin_cut(swin: nn.Module, depth: int, x: torch.Tensor) -> torch.Tensor:
    """The official cut generalised to any depth and stages: the stages before, the first blocks of the cut
    stage, then the merging of every later stage (none of its blocks), the final norm and the head."""
    x = swin.patch_embed(x)
    left = depth
    for stage in swin.layers:
        x = stage.downsample(x)
        for block in stage.blocks[:left]:
            x = block(x)
        left = max(0, left - len(stage.blocks))
    return swin.head(swin.norm(x))
