"""Full fine-tunes (a timm state dict with its head, a transformers classifier folder) open as tasks of
method "full" and give the original model's logits; DINOv2 folders open as backbones equal to transformers'."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from slsviz.cli import main
from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.backbones import load_backbone
from slsviz.models.task import load_task, save_task
from slsviz.study import Selection, Study, open_selection

transformers = pytest.importorskip("transformers")

TINY = "vit_tiny_patch16_224"
DIGITS = {i: str(i) for i in range(10)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    tuned = timm.create_model(TINY, img_size=32, num_classes=10).eval()
    torch.save(tuned.state_dict(), root / "tuned.pth")
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128,
                                    image_size=32, patch_size=8, num_labels=10, id2label=DIGITS,
                                    label2id={v: k for k, v in DIGITS.items()})
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(root / "hf-classifier")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "hf-classifier")
    dino = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                                     patch_size=14, num_labels=10, layerscale_value=0.5)
    dino_model = transformers.Dinov2ForImageClassification(dino).eval()
    dino_model.save_pretrained(root / "dinov2-classifier")
    return root, tuned, hf, dino_model


def _x(size: int) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_a_timm_state_dict_with_its_head_is_a_full_task(world, tmp_path):
    root, tuned, _, _ = world
    loaded = open_selection(Selection(model=TINY, task=str(root / "tuned.pth"), data="digits", device="cpu"))
    assert loaded.method == "full" and loaded.backbone.num_layers == 12
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(_x(32)), tuned(_x(32)), atol=1e-4, rtol=0)
    # Per task a full fine-tune stores its whole backbone; cut at depth 2, the blocks it keeps.
    total = sum(p.numel() for p in loaded.model.parameters())
    study = Study(loaded, limit=20, use_cache=False, workers=1)
    rows = {r["storage"]: r for r in study.timing.storage(2)}
    assert rows["full PETL"]["params"] == total and "fine-tuned backbone" in rows["SLS"]["what"]
    assert rows["SLS"]["params"] == total - sum(p.numel() for p in loaded.model.blocks[2:].parameters())
    # slsviz's own task checkpoint of it holds every weight, and opens to the same numbers.
    path = save_task(tmp_path / "full.safetensors", loaded.model, loaded.meta)
    again, meta = load_task(path, loaded.backbone)
    assert meta.petl["method"] == "full"
    with torch.inference_mode():
        torch.testing.assert_close(again(_x(32)), tuned(_x(32)), atol=0, rtol=0)


def test_a_full_fine_tune_needs_its_architecture_and_its_own_weights(world, tmp_path):
    root, _, _, _ = world
    with pytest.raises(SlsvizError, match="full fine-tune of a timm ViT: name its architecture with --model"):
        open_selection(Selection(task=str(root / "tuned.pth"), data="digits", device="cpu"))
    other = tmp_path / "other.pth"
    torch.save(timm.create_model(TINY, img_size=32, num_classes=0).state_dict(), other)
    with pytest.raises(CheckpointError, match="its own weights are the backbone"):
        open_selection(Selection(model=TINY, checkpoint=str(other), img_size=32, task=str(root / "tuned.pth"),
                                data="digits", device="cpu"))


def test_a_transformers_classifier_folder_is_a_full_task_with_its_class_names(world, tmp_path):
    root, _, hf, _ = world
    folder = str(root / "hf-classifier")
    loaded = open_selection(Selection(task=folder, data="digits", device="cpu"))
    assert loaded.method == "full" and loaded.meta.class_names == list(DIGITS.values())
    assert (loaded.head_applies, loaded.head_note) == (True, "the task's head was trained on full:hf-classifier and is scored on digits, "
                                 "which has the same 10 classes (0, 1, 2, 3, 4, ... (10 in all)).")
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(_x(32)), hf(pixel_values=_x(32)).logits, atol=1e-4, rtol=0)
    # The same folder as --checkpoint and --task; evaluate writes the logits in split order.
    out = tmp_path / "logits.npy"
    assert main(["evaluate", "--checkpoint", folder, "--task", folder, "--data", "digits", "--split", "test",
                 "--limit", "8", "--save-logits", str(out)]) == 0
    logits = np.load(out)
    assert logits.shape == (8, 10) and logits.dtype == np.float32
    # transformers' own pipeline on the same images: its ViT image processor (bilinear, from the folder's
    # preprocessor config) and the classifier.
    from slsviz.data import load_dataset

    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    data = load_dataset("digits")
    images = [data.image(int(i)).convert("RGB") for i in data.splits["test"][:8]]
    with torch.inference_mode():
        theirs = hf(**processor(images=images, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, theirs, atol=1e-4, rtol=0)


def test_dinov2_folders_open_as_backbones_equal_to_transformers_and_their_head_is_refused(world, capsys):
    root, _, _, dino = world
    folder = root / "dinov2-classifier"
    for size in (56, 28):  # its own size, and another one: positions resampled as transformers does
        backbone = load_backbone("default", folder, img_size=size)
        assert backbone.arch == "vit_base_patch16_224" and backbone.model.blocks[0].ls1.gamma.shape == (64,)
        with torch.inference_mode():
            theirs = dino.dinov2(pixel_values=_x(size), output_hidden_states=True)
            blocks = backbone.model.forward_intermediates(_x(size), indices=None, norm=False, output_fmt="NLC",
                                                          intermediates_only=True, return_prefix_tokens=True)
            final = backbone.model.forward_features(_x(size))
        for (patches, prefix), hidden in zip(blocks, theirs.hidden_states[1:]):
            torch.testing.assert_close(prefix[:, 0], hidden[:, 0], atol=1e-4, rtol=0)
            torch.testing.assert_close(patches, hidden[:, 1:], atol=1e-4, rtol=0)
        torch.testing.assert_close(final, theirs.last_hidden_state, atol=1e-4, rtol=0)
    assert backbone.mean == (0.485, 0.456, 0.406) and backbone.model.norm.eps == 1e-6
    with pytest.raises(SlsvizError, match="CLS token and mean patch token side by side"):
        open_selection(Selection(task=str(folder), data="digits", device="cpu"))
    assert main(["inspect", str(folder), str(root / "hf-classifier"), str(root / "tuned.pth")]) == 0
    dinov2, vit, tuned = json.loads(capsys.readouterr().out)["files"]
    assert dinov2["opens"] and dinov2["opens_as"] == "backbone" and "head re-fit" in dinov2["as"]
    assert (vit["format"], vit["method"], vit["classes"], vit["missing"]) == (
        "full fine-tune (transformers folder)", "full", 10, ["the dataset: --data (the app: the Dataset field)"])
    assert tuned["format"] == "full fine-tune (timm state dict)" and tuned["missing"][0].startswith("its timm architecture")


def test_the_model_page_says_what_a_folder_is_asks_what_it_lacks_and_opens_it(world):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui

    root, _, _, _ = world
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(checkpoint=str(root / "hf-classifier"), task="none", data="digits",
                                               limit=20, device="cpu")
    at.run()
    at.text_input(key="slsviz.home.own_path").input(str(root / "tuned.pth")).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.loc["format", "value"] == "full fine-tune (timm state dict)" and table.loc["classes", "value"] == "10"
    assert "its timm architecture: --model" in at.info[0].value
    at.text_input(key="slsviz.home.own_arch").input(TINY)
    at.text_input(key="slsviz.home.own_data").input("digits")
    next(b for b in at.button if b.label == "Open it").click().run()
    assert not at.exception and not at.error
    assert at.session_state[ui.SELECTION].task == str(root / "tuned.pth")
    card = next(m.value for m in at.markdown if "**Backbone**" in m.value)
    assert "**PETL method** full" in card and TINY in card


def test_an_imported_task_exports_a_config_that_records_its_source_and_imports_again(world):
    from slsviz.layers.analysis import AnalysisSettings

    root, _, _, _ = world
    folder = str(root / "hf-classifier")
    study = Study.open(Selection(task=folder, data="digits", limit=40, device="cpu"), workers=1, use_cache=False)
    settings = AnalysisSettings(projection="pca")
    config = study.exports.config(settings, 2)
    assert config["task"]["source"] == {"format": "full fine-tune (transformers folder)", "path": folder}
    assert config["petl"]["method"] == "full" and config["depth"] == 2
    imported, same = study.exports.check_import(json.dumps(config), study.exports.task_checkpoint(2))
    assert same and imported["task"]["source"]["path"] == folder
