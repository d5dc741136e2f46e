"""One-pass per-layer features, their disk cache, and per-depth accuracy from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import head_as_linear, lr_at, random_backbone

from slsviz.data import Preprocess, load_digits, make_loader
from slsviz.errors import SlsvizError
from slsviz.layers.features import extract_features, feature_bank
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.models.train import evaluate
from slsviz.pruning.accuracy import (
    accuracy_as_is,
    accuracy_head_refit,
    depth_accuracy_table,
    fit_head,
    normed,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def setup():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=3, seed=0)
    data = load_digits(seed=0)
    model = build_task_model(backbone, PetlConfig("convpass"), data.num_classes)
    with torch.no_grad():  # wake the adapters so that they matter
        for name, p in model.named_parameters():
            if "adapter_up" in name:
                p.normal_(0, 0.05)
    return backbone, data, model, Preprocess(32, backbone.mean, backbone.std)


def test_features_are_each_blocks_cls_token_from_one_pass(setup):
    backbone, data, model, pre = setup
    loader = make_loader(data, "val", pre, batch_size=16, limit=40)
    calls = {"n": 0}
    original = model.forward_intermediates

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    model.forward_intermediates = counting
    try:
        feats, labels, heads = extract_features(model, loader, token="cls")
        assert heads is None  # a ViT's head inputs are its normed CLS features
    finally:
        del model.forward_intermediates
    assert calls["n"] == len(loader) == 3  # one pass per batch gives all layers
    assert feats.shape == (3, 40, 192) and feats.dtype == np.float32 and labels.shape == (40,)

    x = torch.stack([loader.dataset[i][0] for i in range(5)])
    with torch.inference_mode():
        tokens = model.patch_embed(x)
        tokens = model.norm_pre(model._pos_embed(tokens))
        for layer, block in enumerate(model.blocks, start=1):
            tokens = block(tokens)
            np.testing.assert_allclose(feats[layer - 1, :5], tokens[:, 0].numpy(), atol=1e-5)
            if layer == 3:
                np.testing.assert_allclose(extract_features(model, loader, token="cls_norm")[0][2, :5],
                                           model.norm(tokens)[:, 0].numpy(), atol=1e-5)
                np.testing.assert_allclose(extract_features(model, loader, token="mean")[0][2, :5],
                                           tokens[:, 1:].mean(1).numpy(), atol=1e-5)
    with pytest.raises(SlsvizError, match="token"):
        extract_features(model, loader, token="pooled")


def test_feature_bank_is_cached_by_what_it_depends_on(setup, monkeypatch):
    backbone, data, model, pre = setup
    first = feature_bank(model, data, "val", pre, backbone_checksum=backbone.checksum, limit=32)
    monkeypatch.setattr("slsviz.layers.features.extract_features", lambda *a, **k: pytest.fail("computed twice"))
    again = feature_bank(model, data, "val", pre, backbone_checksum=backbone.checksum, limit=32)
    assert again.key == first.key and np.array_equal(again.features, first.features)
    assert np.array_equal(again.labels, data.labels[data.splits["val"][:32]])
    assert isinstance(again.features, np.memmap)
    monkeypatch.undo()
    other_token = feature_bank(model, data, "val", pre, backbone_checksum=backbone.checksum, limit=32, token="mean")
    pruned = feature_bank(prune_to_depth(model, 2), data, "val", pre, backbone_checksum=backbone.checksum, limit=32)
    assert len({first.key, other_token.key, pruned.key}) == 3 and pruned.num_layers == 2


def test_features_and_maps_share_one_disk_cache_that_mends_a_damaged_entry(setup, tmp_path):
    from slsviz.layers.projection import project_layers

    backbone, data, model, pre = setup
    first = feature_bank(model, data, "val", pre, backbone_checksum=backbone.checksum, limit=32)
    project_layers(first.as_float32(), "pca", cache_key=first.key)
    cache = tmp_path / "cache"
    entries = {kind: sorted(p.name for p in (cache / kind).iterdir()) for kind in ("features", "maps")}
    assert entries["features"] == [first.key] and len(entries["maps"]) == 3  # one entry per bank, per map
    for kind, names in entries.items():  # the same layout: arrays and what they are
        assert all((cache / kind / n / "meta.json").is_file() for n in names)
    (cache / "features" / first.key / "labels.npy").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="unreadable cached features"):
        again = feature_bank(model, data, "val", pre, backbone_checksum=backbone.checksum, limit=32)
    assert np.array_equal(again.features, first.features) and np.array_equal(again.labels, first.labels)
    assert np.array_equal(np.load(cache / "features" / first.key / "labels.npy"), first.labels)  # mended


def test_as_is_accuracy_equals_the_pruned_models_accuracy(setup):
    backbone, data, model, pre = setup
    bank = feature_bank(model, data, "test", pre, backbone_checksum=backbone.checksum, limit=120)
    loader = make_loader(data, "test", pre, batch_size=64, limit=120)
    from_cache = accuracy_as_is(model, bank)
    for depth in (1, 2, 3):
        assert from_cache[depth - 1] == pytest.approx(evaluate(prune_to_depth(model, depth), loader), abs=1e-9)


def test_head_refit_learns_and_converts_to_a_torch_head(setup):
    backbone, data, model, pre = setup
    train = feature_bank(model, data, "train", pre, backbone_checksum=backbone.checksum, limit=300)
    test = feature_bank(model, data, "test", pre, backbone_checksum=backbone.checksum, limit=200)
    refit = accuracy_head_refit(model, train, test)
    assert refit.shape == (3,) and refit.max() > 0.3  # 10 classes: chance is 0.1
    clf = fit_head(model, train, 2)
    head = head_as_linear(clf, model.head)
    with torch.inference_mode():
        logits = head(torch.from_numpy(normed(model, test.layer(2))))
    assert np.array_equal(logits.argmax(-1).numpy(), clf.predict(normed(model, test.layer(2))))
    table = depth_accuracy_table(model, train, test)
    assert list(table.columns) == ["depth", "accuracy_as_is", "accuracy_head_refit"]
    assert table["depth"].tolist() == [1, 2, 3]


def test_accuracy_at_one_depth_agrees_with_the_table(setup):
    from slsviz.pruning.accuracy import accuracy_at_depth

    backbone, data, model, pre = setup
    train = feature_bank(model, data, "train", pre, backbone_checksum=backbone.checksum, limit=200)
    test = feature_bank(model, data, "test", pre, backbone_checksum=backbone.checksum, limit=100)
    table = depth_accuracy_table(model, train, test)
    for depth in (1, 3):
        one = accuracy_at_depth(model, train, test, depth)
        assert one["accuracy_as_is"] == table.loc[depth - 1, "accuracy_as_is"]
        assert one["accuracy_head_refit"] == pytest.approx(table.loc[depth - 1, "accuracy_head_refit"])


def test_retraining_a_pruned_model_trains_a_copy(setup):
    from slsviz.models.petl import petl_state_dict
    from slsviz.models.train import retrain_recipe
    from slsviz.pruning.accuracy import accuracy_retrained

    backbone, data, model, pre = setup
    before = {k: v.clone() for k, v in petl_state_dict(model).items()}
    out = accuracy_retrained(model, 2, data, pre, kind="clr", epochs=2, limit=64)
    assert len(out["model"].blocks) == 2 and 0 <= out["accuracy_retrained"] <= 1
    assert all(torch.equal(v, petl_state_dict(model)[k]) for k, v in before.items())  # input untouched
    changed = petl_state_dict(out["model"])
    assert any(not torch.equal(changed[k], before[k]) for k in changed)
    assert lr_at(retrain_recipe("ft", 3), 7, 5) == 1e-5
    assert lr_at(retrain_recipe("clr", 10), 1, 1) == pytest.approx(1e-3)  # peak right after the warm-up epoch
    with pytest.raises(SlsvizError, match="ft"):
        retrain_recipe("sgd", 3)


def test_an_image_folder_edited_under_the_same_names_is_read_again(tmp_path):
    """The cache was keyed on the folder's path: replacing one class's images gave the first report back."""
    from helpers import image_folder
    from PIL import Image

    from slsviz.data import load_dataset
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import LoadedTask, Study
    from slsviz.study.report import report

    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=2, seed=0)
    root = image_folder(tmp_path / "pets", {"cat": 8, "dog": 8}, size=32)
    settings = AnalysisSettings(projection="pca")

    def analyse(use_cache: bool = True) -> dict:
        study = Study(LoadedTask(backbone, backbone.model, None, load_dataset(str(root))), workers=1, use_cache=use_cache)
        return report(study, settings)

    before = analyse()
    rng = np.random.default_rng(7)
    for path in sorted((root / "dog").iterdir()):  # other images, same names and sizes
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    after, fresh = analyse(), analyse(use_cache=False)
    assert after["layers"] == fresh["layers"]
    assert after["layers"] != before["layers"]
