"""The SLS paper's baseline: width pruning with DepGraph (Torch-Pruning), to the FLOPs of a depth.

Torch-Pruning's ``MetaPruner`` with ``GroupTaylorImportance`` and one uniform ratio prunes each
block's MLP hidden channels (rounded to ``round_to``) and whole attention heads. The adapters, the
head and the patch embedding are left out (``ignored_layers``); since they read and write the
residual stream, its width stays, and every block keeps its adapters as they are. Whole heads keep
the head dimension, so attention's scale is unchanged. The ratio is found by bisection until the
model's FLOPs are within ``tolerance`` of a target (a depth's), then the model is pruned with the
Taylor importance of the task's loss on a few train batches.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from slsviz.errors import SlsvizError
from slsviz.models.petl.adaptformer import AdaptFormerAdapter
from slsviz.models.petl.attach import merge_petl
from slsviz.models.petl.convpass import ConvpassAdapter
from slsviz.models.swin import SwinBlocks
from slsviz.pruning.bench import count_flops

ADAPTERS = (ConvpassAdapter, AdaptFormerAdapter)  # what stays in a merged model (RepAdapter and LoRA merge away)


@dataclass(frozen=True)
class WidthPruned:
    """A width-pruned copy of a task model and how it was cut.

    Attributes:
        model: the pruned model (eval mode).
        ratio: the uniform pruning ratio found.
        flops: its FLOPs per image.
        target_flops: the FLOPs asked for.
        heads: attention heads kept per block.
        mlp_hidden: MLP hidden channels kept per block.
    """

    model: nn.Module
    ratio: float
    flops: int
    target_flops: int
    heads: list[int]
    mlp_hidden: list[int]


@contextmanager
def _adapters_stood_in(model: nn.Module) -> Iterator[list[nn.Module]]:
    """While Torch-Pruning builds its graph, each adapter is replaced by a plain residual-width Linear.

    Convpass reshapes tokens to a grid and concatenates the prefix tokens back, which the graph reads
    as a channel concat it cannot size. The adapters are left out and the residual width is never cut,
    so a stand-in with the same input and output width gives the same graph; the real adapters are put
    back before the loss is taken and the model is cut. Yields the stand-ins (to be ignored).
    """
    swapped = []
    for block in model.blocks:
        for name, child in list(block.named_children()):
            if isinstance(child, ADAPTERS):
                width = next(m for m in child.modules() if isinstance(m, nn.Linear)).in_features
                p = next(child.parameters())
                stand_in = nn.Linear(width, width, bias=False, device=p.device, dtype=p.dtype)
                setattr(block, name, stand_in)
                swapped.append((block, name, child, stand_in))
    try:
        yield [stand_in for *_, stand_in in swapped]
    finally:
        for block, name, child, _ in swapped:
            setattr(block, name, child)


def _prunable(model: nn.Module) -> set[nn.Module]:
    """The backbone's own attention and MLP layers: what width pruning may cut (a Swin's MLPs only, see
    :data:`SWIN_HEADS_KEPT`)."""
    if isinstance(model, SwinBlocks):
        return {m for block in model.blocks for m in (block.mlp.fc1, block.mlp.fc2)}
    return {m for block in model.blocks for m in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2)}


SWIN_HEADS_KEPT = ("On a Swin, DepGraph here prunes the MLP hidden channels only and keeps every attention head: "
                   "each head also owns a column of its window attention's relative-position bias table, which "
                   "Torch-Pruning's head pruning does not tie to that head's qkv rows.")


def _prune(model: nn.Module, ratio: float, img_size: int, *, round_to: int,
           batches: list[tuple[torch.Tensor, torch.Tensor]] | None) -> nn.Module:
    """A pruned copy of ``model`` at ``ratio``: Taylor importance from ``batches``' loss, else magnitude
    (which cuts the same number of channels: the bisection only needs the count)."""
    import torch_pruning as tp

    pruned = merge_petl(copy.deepcopy(model)).eval()
    pruned.requires_grad_(True)  # Taylor importance reads the gradients of the frozen backbone too
    device = next(pruned.parameters()).device
    keep = _prunable(pruned)
    swin = isinstance(pruned, SwinBlocks)
    num_heads = {} if swin else {block.attn.qkv: block.attn.num_heads for block in pruned.blocks}
    importance = tp.importance.GroupTaylorImportance() if batches else tp.importance.GroupMagnitudeImportance(p=2)
    # Parameters outside Torch-Pruning's layer types, all along the residual width (never cut).
    loose = [getattr(pruned, name, None) for name in ("cls_token", "reg_token", "pos_embed")]
    loose += [getattr(getattr(block, ls, None), "gamma", None) for block in pruned.blocks for ls in ("ls1", "ls2")]  # layer scale
    unwrapped = [(p, p.ndim - 1) for p in loose if isinstance(p, nn.Parameter)]
    if swin:  # (positions, heads): along the heads, which stay
        unwrapped += [(block.attn.relative_position_bias_table, 1) for block in pruned.blocks]
    with _adapters_stood_in(pruned):
        ignored = [m for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and m not in keep]
        pruner = tp.pruner.MetaPruner(
            pruned, torch.zeros(1, 3, img_size, img_size, device=device), importance=importance, pruning_ratio=ratio,
            ignored_layers=ignored, round_to=round_to, num_heads=num_heads, prune_num_heads=not swin,
            prune_head_dims=False, head_pruning_ratio=ratio, unwrapped_parameters=unwrapped)
    if batches:
        pruned.zero_grad()
        for x, y in batches:
            F.cross_entropy(pruned(x.to(device)), y.to(device)).backward()
    pruner.step()
    for block in pruned.blocks if not swin else ():
        attn = block.attn
        attn.num_heads = pruner.num_heads[attn.qkv]
        attn.attn_dim = attn.num_heads * attn.head_dim
    pruned.zero_grad(set_to_none=True)
    return pruned.requires_grad_(False).eval()


def width_prune_to_flops(model: nn.Module, target_flops: int, img_size: int, *,
                         batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = (), round_to: int = 8,
                         tolerance: float = 0.05, steps: int = 12) -> WidthPruned:
    """Width-prune a copy of ``model`` to ``target_flops`` per image, within ``tolerance``.

    Args:
        model: a task model (timm ViT or Swin with PETL); not modified.
        target_flops: e.g. :func:`slsviz.pruning.bench.count_flops` of the model cut at a depth.
        img_size: input size.
        batches: ``(images, labels)`` of the task's train split for the Taylor importance (none:
            weight magnitude).
        round_to: MLP hidden channels kept in multiples of this.
        tolerance: relative FLOPs error allowed.
        steps: bisection steps on the ratio.

    Raises:
        SlsvizError: a target the backbone cannot reach by width alone (what every width keeps -
            patch embedding, adapters, norms, head - costs more), or one not met within ``steps``.
    """
    full = count_flops(model, img_size)
    if target_flops >= full:
        raise SlsvizError(f"The target ({target_flops / 1e9:.3f} GFLOPs) is not below the full model's "
                          f"({full / 1e9:.3f}): nothing to prune.")
    swin = isinstance(model, SwinBlocks)  # its heads stay (SWIN_HEADS_KEPT)
    heads = 1 if swin else min(block.attn.num_heads for block in model.blocks)
    low, high = 0.0, min(0.95, (heads - 1) / heads) if heads > 1 else 0.95  # at least one head stays
    floor = count_flops(_prune(model, high, img_size, round_to=round_to, batches=None), img_size)
    if target_flops < floor * (1 - tolerance):
        raise SlsvizError(f"Width pruning cannot reach {target_flops / 1e9:.3f} GFLOPs: with {100 * high:.0f}% of every "
                          f"block's {'MLP channels (a Swin keeps its heads)' if swin else 'heads and MLP channels'} cut it "
                          "still costs {floor / 1e9:.3f} (the residual width, "
                          "adapters and head stay). Pick a deeper depth to compare with.")
    ratio = None
    for _ in range(steps):
        mid = (low + high) / 2
        flops = count_flops(_prune(model, mid, img_size, round_to=round_to, batches=None), img_size)
        if abs(flops - target_flops) <= tolerance * target_flops:
            ratio = mid
            break
        low, high = (mid, high) if flops > target_flops else (low, mid)
    if ratio is None:
        raise SlsvizError(f"No uniform ratio met {target_flops / 1e9:.3f} GFLOPs within {100 * tolerance:g}% in "
                          f"{steps} steps (last tried {mid:.3f}); raise the tolerance or lower round_to.")
    pruned = _prune(model, ratio, img_size, round_to=round_to, batches=list(batches) or None)
    return WidthPruned(pruned, ratio, count_flops(pruned, img_size), int(target_flops),
                       [int(b.attn.num_heads) for b in pruned.blocks], [int(b.mlp.fc1.out_features) for b in pruned.blocks])
