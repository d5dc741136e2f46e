"""LoRA adapters saved by Hugging Face PEFT, for a timm ViT or a transformers ViT, open as tasks and give
PEFT's logits, merged or not."""

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
from slsviz.study import Selection, open_selection
from slsviz.study.training import retrain_at

peft = pytest.importorskip("peft")

TINY = "vit_tiny_patch16_224"
CLASSES = 10  # digits


def _trained(wrapped, seed=0):
    """Random non-zero values in everything PEFT trains (B, the head, trained biases), as training would leave."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if p.requires_grad and "lora_A" not in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return wrapped.eval()


def _adapter(root, name, seed=0, **config):
    """A PEFT LoRA adapter on the tiny timm backbone, saved by PEFT itself; the PEFT model."""
    model = timm.create_model(TINY, img_size=32, num_classes=CLASSES)
    model.load_state_dict(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), strict=False)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ["qkv"], "modules_to_save": ["head"], **config}
    wrapped = _trained(peft.get_peft_model(model, peft.LoraConfig(**settings)), seed)
    wrapped.save_pretrained(root / name)
    return wrapped


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    save_file(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), str(root / "tiny.safetensors"))
    return root


def _open(root, name):
    return open_selection(Selection(model=TINY, checkpoint=str(root / "tiny.safetensors"), img_size=32,
                                   task=str(root / name), data="digits", device="cpu"))


TIMM_CONFIGS = {
    "lora": {},
    "rslora": {"use_rslora": True, "r": 8, "lora_alpha": 16},
    # "proj" alone would match patch_embed.proj too (PEFT matches name suffixes): a regex, as a user would write
    "all-layers-of-a-block": {"target_modules": r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"},
    "some-blocks": {"target_modules": ["qkv", "fc2"], "layers_to_transform": [0, 5, 11], "layers_pattern": "blocks"},
    "lora-biases": {"target_modules": ["qkv", "fc1"], "bias": "lora_only"},
    "all-biases": {"bias": "all", "lora_dropout": 0.1},
}


@pytest.mark.parametrize("config", TIMM_CONFIGS.values(), ids=TIMM_CONFIGS.keys())
def test_a_peft_adapter_gives_peft_logits_merged_or_not(world, config):
    name = f"adapter-{json.dumps(config, sort_keys=True)}"
    reference = _adapter(world, name, **config)
    loaded = _open(world, name)
    petl = loaded.meta.petl
    assert loaded.method == "lora" and petl["bottleneck"] == config.get("r", 4)
    assert petl["bias"] == config.get("bias", "none") and petl["rslora"] == config.get("use_rslora", False)
    assert petl["layers"] == config.get("layers_to_transform")
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
    ({"target_modules": ["qkv", "fc1"], "rank_pattern": {"fc1": 2}}, "rank_pattern"),
    pytest.param({"lora_bias": True}, "lora_bias", marks=pytest.mark.filterwarnings("ignore::UserWarning")),
    ({"target_modules": ["qkv", "patch_embed.proj"]}, "adapts patch_embed.proj"),
], ids=["dora", "rank per module", "lora bias", "patch embedding"])
def test_what_slsviz_lora_cannot_compute_is_refused_with_the_reason(world, config, words):
    _adapter(world, "refused", **config)
    with pytest.raises(SlsvizError, match=re.escape(words)):
        _open(world, "refused")


def test_an_adapter_for_another_backbone_names_both_sides(world):
    _adapter(world, "for-tiny")
    small = world / "small.safetensors"
    save_file(random_backbone("vit_small_patch16_224", img_size=32).model.state_dict(), str(small))
    with pytest.raises(CheckpointError, match=r"192-wide ViT .* vit_small_patch16_224 is 384 wide with 12 blocks"):
        open_selection(Selection(model="vit_small_patch16_224", checkpoint=str(small), img_size=32,
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
    assert (good["format"], good["rank"], good["rslora"], good["classes"], len(good["layers"]), good["targets"]) == (
        "PEFT LoRA adapter", 8, True, CLASSES, 12, ["qkv"])
    assert good["scaling"] == pytest.approx(16 / 8 ** 0.5) and good["opens"]
    assert not dora["opens"] and "DoRA" in dora["reason"]


# --- a transformers ViT -------------------------------------------------------------------------------------

_V4 = [(r"layers\.(\d+)\.attention\.([qkv])_proj", lambda m: f"encoder.layer.{m[1]}.attention.attention."
        f"{dict(q='query', k='key', v='value')[m[2]]}"),
       (r"layers\.(\d+)\.attention\.o_proj", r"encoder.layer.\1.attention.output.dense"),
       (r"layers\.(\d+)\.mlp\.fc1", r"encoder.layer.\1.intermediate.dense"),
       (r"layers\.(\d+)\.mlp\.fc2", r"encoder.layer.\1.output.dense")]


@pytest.fixture(scope="module")
def hf_world(tmp_path_factory):
    """A random ViTForImageClassification saved by transformers (the backbone folder)."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("peft-hf")
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128,
                                    image_size=32, patch_size=8, num_labels=CLASSES)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(root / "vit")
    return root, transformers


HF_CONFIGS = {
    "query-value": {"target_modules": ["q_proj", "v_proj"]},
    "every-linear": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"], "use_rslora": True},
    "one-block-biases": {"target_modules": ["q_proj", "v_proj", "fc1"], "layers_to_transform": [1], "bias": "lora_only"},
    "all-biases": {"target_modules": ["k_proj", "fc2"], "bias": "all"},
}


@pytest.mark.parametrize("names", ["transformers-5", "transformers-4"])
@pytest.mark.parametrize("config", HF_CONFIGS.values(), ids=HF_CONFIGS.keys())
def test_a_peft_adapter_on_a_transformers_vit_gives_peft_logits(hf_world, config, names):
    """LoRA on separate query/key/value becomes LoRA on thirds of timm's fused qkv; the dense layers map
    to proj/fc1/fc2; keys with transformers 4's module names (query, intermediate.dense) open too."""
    root, transformers = hf_world
    model = transformers.ViTForImageClassification.from_pretrained(root / "vit")
    settings = {"r": 4, "lora_alpha": 8, "modules_to_save": ["classifier"], **config}
    reference = _trained(peft.get_peft_model(model, peft.LoraConfig(**settings)))
    folder = root / f"adapter-{names}-{json.dumps(config, sort_keys=True)}"
    reference.save_pretrained(folder)
    if names == "transformers-4":
        from safetensors.torch import load_file

        tensors = load_file(str(folder / "adapter_model.safetensors"))
        renamed = {}
        for key, value in tensors.items():
            for pattern, target in _V4:
                key = re.sub(pattern, target, key)
            renamed[key] = value
        save_file(renamed, str(folder / "adapter_model.safetensors"))
    loaded = open_selection(Selection(checkpoint=str(root / "vit"), task=str(folder), data="digits", device="cpu"))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(pixel_values=x).logits
        ours = loaded.model.eval()(x)
        merged = merge_petl(loaded.model).eval()(x)
    assert float(expected.abs().max()) > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=0)


def test_a_transformers_adapter_opens_in_the_app_and_runs_everything(hf_world):
    """The Model page asks for the backbone folder and the dataset it lacks; the opened task retrains and
    exports a config that records its source and imports again."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Study

    root, transformers = hf_world
    model = transformers.ViTForImageClassification.from_pretrained(root / "vit")
    settings = {"r": 2, "lora_alpha": 4, "modules_to_save": ["classifier"], "target_modules": ["q_proj", "v_proj"]}
    _trained(peft.get_peft_model(model, peft.LoraConfig(**settings))).save_pretrained(root / "app-adapter")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(checkpoint=str(root / "vit"), task="none", data="digits", limit=20,
                                               device="cpu")
    at.run()
    at.text_input(key="slsviz.home.own_path").input(str(root / "app-adapter")).run()
    assert at.dataframe[0].value.loc["targets", "value"] == "['q', 'v']"
    at.text_input(key="slsviz.home.own_checkpoint").input(str(root / "vit"))
    at.text_input(key="slsviz.home.own_data").input("digits")
    next(b for b in at.button if b.label == "Open it").click().run()
    assert not at.exception and not at.error
    card = next(m.value for m in at.markdown if "**Backbone**" in m.value)
    assert "**PETL method** lora, opened from a PEFT LoRA adapter" in card

    study = Study.open(Selection(checkpoint=str(root / "vit"), task=str(root / "app-adapter"), data="digits", limit=30,
                                 device="cpu"), workers=1, use_cache=False)
    retrained = retrain_at(study.loaded, 2, 1, limit=study.features.limit)
    assert 0.0 <= retrained["accuracy_retrained"] <= 1.0
    config = study.exports.config(AnalysisSettings(projection="pca"), 2)
    assert config["task"]["source"]["format"] == "PEFT LoRA adapter" and config["petl"]["hyperparameters"]["targets"] == ["q", "v"]
    _, same = study.exports.check_import(json.dumps(config), study.exports.task_checkpoint(2))
    assert same
