"""Depth pruning: the same backbone cut after ``depth`` blocks. Never mutates its input."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch.nn as nn

from slsviz.errors import SlsvizError


def check_depth(depth: int, num_layers: int) -> int:
    """Return ``depth`` if 1 <= depth <= num_layers, else raise a clear error."""
    if isinstance(depth, bool) or int(depth) != depth or not 1 <= depth <= num_layers:
        raise SlsvizError(f"Depth {depth!r} is out of range: keep between 1 and {num_layers} blocks.")
    return int(depth)


def prune_to_depth(model: nn.Module, depth: int) -> nn.Module:
    """A NEW model with ``blocks[:depth]`` only; final norm and head kept, later blocks' adapters gone.

    The removed blocks are not copied at all, so their parameters and memory are really freed.
    """
    depth = check_depth(depth, len(model.blocks))
    # deepcopy's memo maps each removed block to None, so it is never copied (and the shared
    # input, possibly cached for several app sessions, is never touched, not even briefly).
    memo = {id(block): None for block in model.blocks[depth:]}
    pruned = copy.deepcopy(model, memo)
    pruned.blocks = pruned.blocks[:depth]
    return pruned


def depth_views(model: nn.Module, depths: Iterable[int]) -> dict[int, nn.Module]:
    """Models cut at each of ``depths`` that SHARE ``model``'s blocks instead of copying them.

    For timing many depths side by side in the memory of one model (the blocks are the same
    objects, so training or merging one view changes them all); to hand a pruned model to anyone,
    use :func:`prune_to_depth`. ``model`` itself is not changed.
    """
    views = {}
    for depth in depths:
        depth = check_depth(depth, len(model.blocks))
        memo = {id(block): block for block in model.blocks}  # deepcopy "copies" a block as itself
        view = copy.deepcopy(model, memo)
        view.blocks = view.blocks[:depth]
        views[depth] = view
    return views
