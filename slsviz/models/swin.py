"""Hierarchical backbones (timm's Swin Transformer) with their blocks in one list, cut like a ViT.

A Swin's blocks sit in stages of different widths and token grids, joined by patch merging. Here
the blocks of every stage are numbered 1..L in one ``blocks`` list, and the merging layers stay
beside them (``merges``, one per stage, identity for the first), so ``model.blocks[:d]`` is a cut:
the forward runs the kept blocks, merging wherever a stage begins, then every merging layer that
remains up to the last stage's width, so the final norm and the head fit. That is the official SLS
code's cut (``set_pruning.swin_forward_drop``: the stages before, the first blocks of the cut stage,
then its patch merging; defined there for depths 5..24 of a 2-2-18-2 Swin-B) generalised to every
depth of every Swin.

Each block's feature is taken as the official code takes it (``visualization.forward_Swin_features``):
the block's output averaged over tokens, after the patch merging that follows its stage where there
is one, so every block's feature has the next stage's width (``merged=True``); or averaged at the
stage's own width (``merged=False``). The official code keeps timm 0.4's layout, where a stage ends
with the merging; timm 1.x starts the next stage with it, which is the same layer.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from slsviz.errors import SlsvizError


class SwinBlocks(nn.Module):
    """A timm ``SwinTransformer`` whose blocks are one list, cut like a ViT's: ``blocks[:d]``.

    The modules are the Swin's own (not copies); a copy cut with :func:`slsviz.models.depth.prune_to_depth`
    keeps only its first blocks. Tokens are NHWC, as in timm's Swin.

    Args:
        swin: the timm model; its head's pooling must be the average over tokens.

    Attributes:
        patch_embed: the patch embedding.
        blocks: every block, stage after stage.
        stage_of: the stage of each block of the whole model (0-based), a tuple.
        merges: per stage, the patch merging that starts it (identity for the first).
        norm: the final norm (the last stage's width).
        head: the classifier on the tokens' average (``Identity`` for a backbone).
        num_features: the width the head reads.
        embed_dim: the first stage's width.
    """

    def __init__(self, swin: SwinTransformer) -> None:
        super().__init__()
        if getattr(swin.head, "global_pool", None) is not None and getattr(swin.head.global_pool, "pool_type", "avg") != "avg":
            raise SlsvizError("slsviz cuts a Swin whose head averages the tokens (timm's global_pool='avg').")
        self.patch_embed = swin.patch_embed
        self.merges = nn.ModuleList(stage.downsample for stage in swin.layers)
        self.blocks = nn.Sequential(*(block for stage in swin.layers for block in stage.blocks))
        self.stage_of = tuple(s for s, stage in enumerate(swin.layers) for _ in stage.blocks)
        self.norm = swin.norm
        self.head = swin.head.fc
        self.num_features = int(swin.num_features)
        self.embed_dim = int(swin.embed_dim)  # the first stage's width, as timm names it
        self.pretrained_cfg = swin.pretrained_cfg

    def reset_classifier(self, num_classes: int) -> None:
        """A new linear head of ``num_classes`` on the token average (``0``: none), as timm's models have."""
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """Kept blocks per stage (a cut model's later stages have none): timm's ``depths`` for this model."""
        kept = self.stage_of[:len(self.blocks)]
        return tuple(kept.count(s) for s in range(len(self.merges)))

    def feature_widths(self, *, merged: bool = True) -> list[int]:
        """The width of each kept block's feature in :meth:`block_features`: the next stage's where ``merged``
        (the last stage's own), else the block's stage's."""
        widths = [int(block.attn.qkv.in_features) for block in self.blocks]
        stage_width = dict(zip(self.stage_of, widths))
        last = len(self.merges) - 1
        if not merged:
            return widths
        return [int(self.merges[s + 1].reduction.out_features) if s < last else stage_width[s]
                for s in self.stage_of[:len(self.blocks)]]

    def timm_name(self, name: str) -> str:
        """The name of this model's parameter or module ``name`` in timm's ``SwinTransformer`` of
        ``depths=self.stage_sizes`` (``blocks.4.attn.qkv`` is ``layers.2.blocks.0.attn.qkv`` on 2-2-x-x)."""
        part, _, rest = name.partition(".")
        if part == "blocks":
            index, _, rest = rest.partition(".")
            stage = self.stage_of[int(index)]
            within = int(index) - sum(self.stage_sizes[:stage])
            return f"layers.{stage}.blocks.{within}" + (f".{rest}" if rest else "")
        if part == "merges":
            index, _, rest = rest.partition(".")
            return f"layers.{index}.downsample" + (f".{rest}" if rest else "")
        if part == "head":
            return "head.fc" + (f".{rest}" if rest else "")
        return name

    def _merged(self, x: torch.Tensor, stage: int, to: int) -> torch.Tensor:
        """``x`` of stage ``stage`` through the merging layers that start stages ``stage + 1 .. to``."""
        for s in range(stage + 1, to + 1):
            x = self.merges[s](x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (NHWC) after the kept blocks, merged to the last stage's width, normalised."""
        x = self.patch_embed(x)
        stage = 0
        for block, to in zip(self.blocks, self.stage_of):
            x = block(self._merged(x, stage, to))
            stage = to
        return self.norm(self._merged(x, stage, len(self.merges) - 1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head on the tokens' average."""
        pooled = x.mean(dim=(1, 2))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def block_features(self, x: torch.Tensor, *, merged: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every kept block's feature, in one pass: its output averaged over tokens, after the merging that
        starts the next stage (``merged``, the official code's choice) or at the stage's own width; and what
        the head reads when the model is cut after that block (the merges to the last width, the final norm,
        the token average), which the feature alone does not give (the norm acts per token).

        Returns:
            ``(features, head_inputs)``: one (N, width) and one (N, num_features) tensor per kept block.
        """
        x = self.patch_embed(x)
        stage, features, head_inputs = 0, [], []
        last = len(self.merges) - 1
        for block, to in zip(self.blocks, self.stage_of):
            x = block(self._merged(x, stage, to))
            stage = to
            nxt = self.merges[to + 1](x) if to < last else x  # merged once: the feature and the head path share it
            features.append((nxt if merged else x).mean(dim=(1, 2)))
            head_inputs.append(self.norm(self._merged(nxt, to + 1, last) if to < last else x).mean(dim=(1, 2)))
        return features, head_inputs


def stage_boundaries(model: SwinBlocks) -> list[int]:
    """The 1-based numbers of the first block of each stage after the first (where a chart draws a line)."""
    sizes = model.stage_sizes
    return [sum(sizes[:s]) + 1 for s in range(1, len(sizes)) if sizes[s]]
