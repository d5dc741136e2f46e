"""LoRA adapters saved by Hugging Face PEFT for a timm ViT open as tasks and give PEFT's logits."""

from __future__ import annotations

import json
import re

import pytest
import timm
import torch
from helpers import random_backbone
from safetensors.torch import save_file

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.models.petl import merge_petl
from slsviz.study import Selection, load_task_for

peft = pytest.importorskip("peft")

TINY = "vit_tiny_patch16_224"
CLASSES = 10  # digits


def _adapter(root, name, seed=0, **config):
    """A PEFT LoRA adapter on the tiny backbone, saved by PEFT itself, with random non-zero B; the PEFT model."""
    model = timm.create_model(TINY, img_size=32, num_classes=CLASSES)
    model.load_state_dict(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), strict=False)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ["qkv"], "modules_to_save": ["head"], **config}
    wrapped = peft.get_peft_model(model, peft.LoraConfig(**settings))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    wrapped.save_pretrained(root / name)
    return wrapped.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    save_file(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), str(root / "tiny.safetensors"))
    return root


def _open(root, name):
    return load_task_for(Selection(model=TINY, checkpoint=str(root / "tiny.safetensors"), img_size=32,
                                   task=str(root / name), data="digits", device="cpu"))


@pytest.mark.parametrize("config", [{}, {"use_rslora": True, "r": 8, "lora_alpha": 16}], ids=["lora", "rslora"])
def test_a_peft_adapter_gives_peft_logits_merged_or_not(world, config):
    reference = _adapter(world, f"adapter-{len(config)}", **config)
    loaded = _open(world, f"adapter-{len(config)}")
    assert loaded.method == "lora" and loaded.meta.petl["bottleneck"] == config.get("r", 4)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(x)
        ours = loaded.model.eval()(x)
        merged = merge_petl(loaded.model).eval()(x)
    assert float(expected.abs().max()) > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("config, words", [
    ({"use_dora": True}, "DoRA"),
    ({"target_modules": ["qkv", "fc1"]}, "targets ['fc1', 'qkv']"),
    ({"layers_to_transform": [0], "layers_pattern": "blocks"}, "layers_to_transform"),
    ({"bias": "lora_only"}, "bias"),
], ids=["dora", "other targets", "some layers", "bias"])
def test_what_slsviz_lora_cannot_compute_is_refused_with_the_reason(world, config, words):
    _adapter(world, "refused", **config)
    with pytest.raises(SlsvizError, match=re.escape(words)):
        _open(world, "refused")


def test_an_adapter_for_another_backbone_names_both_sides(world):
    _adapter(world, "for-tiny")
    small = world / "small.safetensors"
    save_file(random_backbone("vit_small_patch16_224", img_size=32).model.state_dict(), str(small))
    with pytest.raises(CheckpointError, match=r"LoRA on vit_small_patch16_224 \(384 wide\)"):
        load_task_for(Selection(model="vit_small_patch16_224", checkpoint=str(small), img_size=32,
                                task=str(world / "for-tiny"), data="digits", device="cpu"))


def test_another_peft_type_is_refused(world):
    folder = world / "prefix"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(SlsvizError, match="PEFT IA3 adapter; slsviz opens LoRA"):
        _open(world, "prefix")


def test_inspect_reads_a_peft_folder_and_says_why_one_does_not_open(world, capsys):
    from slsviz.cli import main

    _adapter(world, "to-inspect", r=8, lora_alpha=16, use_rslora=True)
    _adapter(world, "dora", use_dora=True)
    assert main(["inspect", str(world / "to-inspect"), str(world / "dora")]) == 0
    good, dora = json.loads(capsys.readouterr().out)["files"]
    assert (good["format"], good["rank"], good["rslora"], good["num_classes"], good["depth"]) == (
        "PEFT LoRA adapter", 8, True, CLASSES, 12)
    assert good["scaling"] == pytest.approx(16 / 8 ** 0.5) and good["opens"]
    assert not dora["opens"] and "DoRA" in dora["reason"]
