"""Task models: training, the task checkpoint round trip and its errors, depth pruning."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import lr_at, paper_lr, random_backbone
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from slsviz.data import Preprocess, load_digits, make_loader
from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.depth import depth_views, prune_to_depth
from slsviz.models.petl import PetlConfig, petl_state_dict
from slsviz.models.task import (
    build_task_model,
    fit_task,
    load_task,
    read_task_meta,
    save_task,
)
from slsviz.models.train import Recipe

TINY = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(TINY, img_size=32, depth=3, seed=0)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


@pytest.fixture(scope="module")
def trained(backbone, digits):
    recipe = Recipe(epochs=4, warmup_epochs=1, batch_size=32, lr=3e-3, seed=0)
    return fit_task(backbone, digits, PetlConfig("convpass"), recipe, limit=192)


def _images(backbone, n=6):
    return torch.randn(n, 3, backbone.img_size, backbone.img_size, generator=torch.Generator().manual_seed(5))


def _logits(model, x):
    with torch.inference_mode():
        return model.eval()(x)


# --- training ------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_keeps_the_best_on_val(trained):
    model, meta, result = trained
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert result.val_accuracy == max(h["val_accuracy"] for h in result.history)
    assert meta.val_accuracy == result.val_accuracy and 0.0 <= meta.test_accuracy <= 1.0
    assert meta.recipe["best_epoch"] == result.best_epoch and meta.recipe["optimizer"] == "AdamW"


def test_only_adapters_and_head_change(backbone, digits):
    model = build_task_model(backbone, PetlConfig("convpass"), digits.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_model, *_ = fit_task(backbone, digits, PetlConfig("convpass"), Recipe(epochs=1, batch_size=32), limit=64)
    after = fit_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("adapter" in k or k.startswith("head.") for k in changed)
    # the shared backbone itself is never touched
    for k, v in backbone.model.state_dict().items():
        assert torch.equal(v, after[k])


def test_training_is_seeded(backbone, digits):
    recipe = Recipe(epochs=1, batch_size=32, seed=7)
    a, *_ = fit_task(backbone, digits, PetlConfig("lora"), recipe, limit=64)
    b, *_ = fit_task(backbone, digits, PetlConfig("lora"), recipe, limit=64)
    for (ka, va), (kb, vb) in zip(petl_state_dict(a).items(), petl_state_dict(b).items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("epochs, warmup, steps", [(10, 2, 5), (100, 10, 13), (40, 4, 1), (3, 10, 7), (1, 0, 4)])
def test_timms_schedule_is_the_papers_warm_up_and_cosine(epochs, warmup, steps):
    r = Recipe(epochs=epochs, warmup_epochs=warmup, lr=1e-3, min_lr=1e-5)
    for step in range(epochs * steps):
        assert lr_at(r, step, steps) == pytest.approx(paper_lr(r, step, steps), rel=1e-12, abs=0)


def test_schedule_warms_up_then_decays():
    r = Recipe(epochs=10, warmup_epochs=2, lr=1e-3, min_lr=1e-5)
    assert lr_at(r, 0, 5) == pytest.approx(1e-5)
    assert lr_at(r, 10, 5) == pytest.approx(1e-3)  # end of warm-up: the peak
    assert 1e-5 < lr_at(r, 49, 5) < 2e-5  # last step: nearly down to min_lr
    lrs = [lr_at(r, s, 5) for s in range(10, 50)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))
    assert lr_at(Recipe(schedule="constant", lr=1e-5), 123, 5) == 1e-5
    with pytest.raises(SlsvizError):
        Recipe(epochs=0)


# --- task checkpoint -----------------------------------------------------------------------------


def test_checkpoint_round_trip_reproduces_logits_exactly(trained, backbone, tmp_path):
    model, meta, _ = trained
    path = save_task(tmp_path / "task.safetensors", model, meta)
    loaded, meta2 = load_task(path, backbone)
    x = _images(backbone)
    assert torch.equal(_logits(loaded, x), _logits(model, x))
    assert meta2 == meta
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
    assert names and all("adapter" in n or n.startswith("head.") for n in names)  # no backbone tensors


def test_metadata_records_what_sls_needs(trained):
    _, meta, _ = trained
    d = meta.to_dict()
    for key in ("backbone_id", "backbone_arch", "backbone_checksum", "petl", "class_names", "img_size",
                "mean", "std", "dataset", "split_seed", "recipe", "val_accuracy", "test_accuracy", "depth"):
        assert key in d
    assert d["petl"]["method"] == "convpass" and d["petl"]["bottleneck"] == 8
    assert d["dataset"] == "digits" and d["split_seed"] == 0 and len(d["class_names"]) == 10
    json.dumps(d)


def test_pruned_checkpoint_stores_only_kept_blocks(trained, backbone, tmp_path):
    model, meta, _ = trained
    pruned = prune_to_depth(model, 2)
    path = save_task(tmp_path / "d2.safetensors", pruned, meta)
    assert read_task_meta(path).depth == 2
    assert not any(k.startswith("blocks.2.") for k in load_file(str(path)))
    loaded, _ = load_task(path, backbone)
    assert len(loaded.blocks) == 2
    x = _images(backbone)
    assert torch.equal(_logits(loaded, x), _logits(pruned, x))


def test_wrong_backbone_is_refused(trained, tmp_path):
    model, meta, _ = trained
    path = save_task(tmp_path / "task.safetensors", model, meta)
    other = random_backbone(TINY, img_size=32, depth=3, seed=1)
    with pytest.raises(CheckpointError, match="Load the backbone it was trained on"):
        load_task(path, other)
    with pytest.raises(CheckpointError, match="trained at 32 px"):
        load_task(path, dataclasses.replace(trained_backbone_at(path), img_size=48))


def trained_backbone_at(path):
    """The backbone a test checkpoint was trained on (the module's seed-0 tiny ViT)."""
    assert read_task_meta(path).backbone_id == f"{TINY}:random(0)"
    return random_backbone(TINY, img_size=32, depth=3, seed=0)


def _rewrite(path, out, *, meta_edit=None, drop=None):
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["slsviz_task"])
    if meta_edit:
        meta_edit(meta)
    if drop:
        tensors = {k: v for k, v in tensors.items() if drop not in k}
    save_file(tensors, str(out), metadata={"slsviz_task": json.dumps(meta)})
    return out


def test_wrong_class_count_and_missing_tensors_are_refused(trained, backbone, tmp_path):
    model, meta, _ = trained
    path = save_task(tmp_path / "task.safetensors", model, meta)
    fewer = _rewrite(path, tmp_path / "fewer.safetensors", meta_edit=lambda m: m.update(class_names=m["class_names"][:5]))
    with pytest.raises(CheckpointError, match="names 5 classes but holds a head for 10"):
        load_task(fewer, backbone)
    missing = _rewrite(path, tmp_path / "missing.safetensors", drop="blocks.1.adapter_mlp")
    with pytest.raises(CheckpointError, match=r"missing \(blocks\.1\.adapter_mlp"):
        load_task(missing, backbone)
    other_method = _rewrite(path, tmp_path / "lora.safetensors", meta_edit=lambda m: m["petl"].update(method="lora", scale=None))
    with pytest.raises(CheckpointError, match="does not fit its PETL method 'lora'"):
        load_task(other_method, backbone)


def test_corrupt_or_foreign_files_are_refused(backbone, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_task(bad, backbone)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an slsviz task checkpoint"):
        load_task(foreign, backbone)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_task(tmp_path / "none.safetensors", backbone)


# --- pruning -------------------------------------------------------------------------------------


def test_pruned_logits_equal_head_of_norm_of_layer_d(trained, backbone):
    model, _, _ = trained
    x = _images(backbone)
    for depth in (1, 2, 3):
        pruned = prune_to_depth(model, depth)
        with torch.inference_mode():
            prefix, _ = model.forward_intermediates(x, indices=[depth - 1], intermediates_only=True,
                                                    output_fmt="NLC", return_prefix_tokens=True)[0][::-1]
            expected = model.head(model.norm(prefix)[:, 0])
        assert torch.allclose(_logits(pruned, x), expected, atol=1e-5)


def test_pruning_copies_and_frees(trained):
    model, _, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_to_depth(model, 1)
    assert len(model.blocks) == 3 and len(pruned.blocks) == 1
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert pruned.blocks[0].attn.qkv.weight.data_ptr() != model.blocks[0].attn.qkv.weight.data_ptr()
    for depth in (0, 4, 1.5):
        with pytest.raises(SlsvizError, match="out of range"):
            prune_to_depth(model, depth)


def test_depth_views_share_blocks_and_equal_pruned_models(trained, backbone):
    model, _, _ = trained
    x = _images(backbone)
    views = depth_views(model, [1, 3])
    assert list(views) == [1, 3] and len(model.blocks) == 3  # the model keeps its blocks
    assert len(views[1].blocks) == 1 and views[1].blocks[0] is model.blocks[0]  # shared, not copied
    assert views[1].patch_embed is not model.patch_embed  # the small rest is copied
    for depth, view in views.items():
        assert torch.equal(_logits(view, x), _logits(prune_to_depth(model, depth), x))
    with pytest.raises(SlsvizError, match="out of range"):
        depth_views(model, [4])


def test_evaluate_matches_a_manual_count(trained, backbone, digits):
    from slsviz.models.train import evaluate

    model, _, _ = trained
    loader = make_loader(digits, "val", Preprocess(32, backbone.mean, backbone.std), batch_size=50, limit=100)
    correct = sum(int((_logits(model, x).argmax(-1) == y).sum()) for x, y in loader)
    assert evaluate(model, loader) == correct / 100


def test_the_same_training_request_gives_one_schedule_from_the_cli_the_app_and_the_sweep(monkeypatch, tmp_path):
    """`slsviz train --epochs 5` warmed up 10 epochs; the app and the sweep warmed up 1."""
    import slsviz.models.task as task_module
    import slsviz.study.training as training_module
    import slsviz.sweep.stages as stages
    from slsviz import cli, defaults
    from slsviz.study import LoadedTask
    from slsviz.study.training import train_new_task
    from slsviz.sweep.spec import spec_from_dict

    class Asked(Exception):
        pass

    recipes = []

    def spy(backbone, data, petl, recipe, **kwargs):
        recipes.append((petl.method, recipe))
        raise Asked

    for module in (task_module, training_module, stages):
        monkeypatch.setattr(module, "fit_task", spy)
    with pytest.raises(Asked):
        cli.main(["train", "--data", "digits", "--method", "lora", "--epochs", "5", "--out", str(tmp_path / "t.safetensors")])
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=2)
    with pytest.raises(Asked):
        train_new_task(LoadedTask(backbone, backbone.model, None, load_digits()), "lora", 5)
    spec = spec_from_dict({"tasks": [{"name": "a", "data": "digits", "train": {"method": "lora", "epochs": 5}}]})
    with pytest.raises(Asked):
        stages.train(spec.tasks[0], tmp_path, threads=1)
    assert len(recipes) == 3
    assert recipes[0] == recipes[1] == recipes[2]
    assert recipes[0][1].warmup_epochs == defaults.warmup_epochs(5) == 1
    assert Recipe(epochs=100).warmup_epochs == 10  # the paper's
