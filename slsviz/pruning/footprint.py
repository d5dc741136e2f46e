"""What one task costs to store, in parameters and bytes.

SLS keeps the shared backbone untouched, so per task it stores only the kept blocks' adapters, the
head and ONE integer (the depth). A structurally (channel-) pruned model instead needs its own
pruned backbone per task; we count that alternative as the depth-d backbone plus adapters and head.
What is the task's comes from its PETL config: LoRA's trained biases are, and a full fine-tune's
every backbone weight is (per task: the whole backbone).
"""

from __future__ import annotations

import torch.nn as nn

from slsviz.models.depth import check_depth
from slsviz.models.petl import config_of, trainable_names

DEPTH_INTEGER_BYTES = 8  # one int64
# The three ways to store a task, named here once (the app, the CLI and the sweep read these names).
FULL_PETL, SLS, PRUNED = "full PETL", "SLS", "structurally pruned"


def _split_params(model: nn.Module, depth: int) -> dict[str, int]:
    """Parameter counts: backbone and PETL of the first ``depth`` blocks, the rest, and the head."""
    counts = {"backbone_kept": 0, "petl_kept": 0, "petl_all": 0, "head": 0}
    owned = set(trainable_names(model))
    for name, p in model.named_parameters():
        n = p.numel()
        if name.startswith("head."):
            counts["head"] += n
            continue
        block = int(name.split(".")[1]) if name.startswith("blocks.") else None
        kept = block is None or block < depth
        if name in owned:
            counts["petl_all"] += n
            counts["petl_kept"] += n if kept else 0
        elif kept:
            counts["backbone_kept"] += n
    return counts


def storage_per_task(model: nn.Module, depth: int, *, bytes_per_param: int = 4) -> list[dict]:
    """Three ways to store one task of ``model`` cut at ``depth``: rows with params and bytes.

    Args:
        model: the FULL task model (all blocks, adapters, head).
        depth: blocks kept.
        bytes_per_param: 4 for float32, 2 for float16.
    """
    depth = check_depth(depth, len(model.blocks))
    c = _split_params(model, depth)
    config = config_of(model)
    full = config is not None and config.method == "full"
    own = "the fine-tuned backbone" if full else "adapters"
    rows = [
        (FULL_PETL, f"{own} of all blocks + head", c["petl_all"] + c["head"], 0),
        (SLS, f"{own} of blocks 1..{depth} + head + the depth", c["petl_kept"] + c["head"], DEPTH_INTEGER_BYTES),
        (PRUNED, f"a pruned backbone ({depth} blocks) + adapters + head, per task",
         c["backbone_kept"] + c["petl_kept"] + c["head"], 0),
    ]
    return [{"storage": name, "what": what, "params": params, "bytes": params * bytes_per_param + extra}
            for name, what, params, extra in rows]


def shared_backbone_bytes(model: nn.Module, *, bytes_per_param: int = 4) -> int:
    """Bytes of the frozen backbone that every task of ``model``'s kind shares (stored once, whatever
    the number of tasks): every parameter that is neither the task's (:func:`trainable_names`) nor
    the head's."""
    return bytes_per_param * _split_params(model, len(model.blocks))["backbone_kept"]
