"""The DepGraph baseline (Torch-Pruning): width pruning of the backbone to a depth's FLOPs, adapters and
head left as they are."""

from __future__ import annotations

import pytest
import torch
from helpers import random_backbone

from slsviz.errors import SlsvizError
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.pruning.bench import count_flops
from slsviz.pruning.depgraph import width_prune_to_flops


def _task(method: str) -> torch.nn.Module:
    backbone = random_backbone("vit_small_patch16_224", img_size=32, depth=4, seed=0)
    return build_task_model(backbone, PetlConfig(method), 10)


@pytest.mark.parametrize("method", ["convpass", "lora", "adaptformer"])
def test_width_pruning_meets_a_depths_flops_and_leaves_adapters_and_head_alone(method):
    model = _task(method)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = count_flops(prune_to_depth(model, 3), 32)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    cut = width_prune_to_flops(model, target, 32, batches=[(x, y)])
    assert abs(cut.flops - target) <= 0.05 * target and cut.flops == count_flops(cut.model, 32)
    logits = cut.model(x)
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()
    assert all(h < 6 for h in cut.heads) and all(m < 1536 for m in cut.mlp_hidden) and 0 < cut.ratio < 1
    assert all(b.attn.qkv.out_features == 3 * 64 * h for b, h in zip(cut.model.blocks, cut.heads))  # whole heads
    kept = cut.model.state_dict()
    for key, value in before.items():  # the input model is untouched; the task's own tensors stay as they were
        assert torch.equal(model.state_dict()[key], value)
        if "adapter" in key or key.startswith("head.") or key.startswith("patch_embed."):
            assert torch.equal(kept[key], value), key


def test_a_target_width_alone_cannot_reach_is_refused_with_the_reason():
    model = _task("lora")
    with pytest.raises(SlsvizError, match="Width pruning cannot reach"):
        width_prune_to_flops(model, count_flops(prune_to_depth(model, 1), 32) // 2, 32)
