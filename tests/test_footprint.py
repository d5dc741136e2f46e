"""Storage per task: SLS stores adapters + head + one integer; the structural alternative a backbone."""

from __future__ import annotations

import pytest
from helpers import random_backbone

from slsviz.errors import SlsvizError
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig, petl_state_dict
from slsviz.models.task import build_task_model
from slsviz.pruning.footprint import storage_per_task


def test_storage_rows_match_what_the_checkpoint_holds():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=4, seed=0)
    model = build_task_model(backbone, PetlConfig("convpass"), 10)
    rows = {r["storage"]: r for r in storage_per_task(model, 2)}
    full_petl = sum(v.numel() for v in petl_state_dict(model).values())
    kept = sum(v.numel() for v in petl_state_dict(prune_to_depth(model, 2)).values())
    assert rows["full PETL"]["params"] == full_petl
    assert rows["SLS"]["params"] == kept < full_petl
    assert rows["SLS"]["bytes"] == 4 * kept + 8
    pruned_all = sum(p.numel() for p in prune_to_depth(model, 2).parameters())
    assert rows["structurally pruned"]["params"] == pruned_all
    assert rows["structurally pruned"]["bytes"] > 10 * rows["SLS"]["bytes"]
    full = {r["storage"]: r for r in storage_per_task(model, 4)}
    assert full["SLS"]["params"] == full["full PETL"]["params"]
    with pytest.raises(SlsvizError, match="out of range"):
        storage_per_task(model, 5)
