"""Hugging Face transformers ViT folders open as timm backbones that compute what transformers computes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from slsviz.cli import main
from slsviz.errors import SlsvizError
from slsviz.models.backbones import load_backbone
from slsviz.study import Selection, Study

transformers = pytest.importorskip("transformers")

MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A random ViTForImageClassification saved by transformers itself, with its preprocessor config."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=192, num_hidden_layers=3, num_attention_heads=3, intermediate_size=768,
                                    image_size=32, patch_size=8, num_labels=10)
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(root / "v4-names")
    (root / "v4-names" / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    # The in-memory names of transformers 5 (layers.<i>.attention.q_proj, ...), as a file might hold them.
    (root / "v5-names").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "v5-names" / "model.safetensors"))
    (root / "v5-names" / "config.json").write_text((root / "v4-names" / "config.json").read_text())
    return root, model


@pytest.mark.parametrize("names", ["v4-names", "v5-names"])
def test_every_block_and_the_logits_equal_transformers(hf, names):
    root, reference = hf
    backbone = load_backbone("default", root / names)
    assert (backbone.num_layers, backbone.embed_dim, backbone.img_size) == (3, 192, 32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        theirs = reference(pixel_values=x, output_hidden_states=True)
        blocks = backbone.model.forward_intermediates(x, indices=None, norm=False, output_fmt="NLC",
                                                      intermediates_only=True, return_prefix_tokens=True)
        final = backbone.model.forward_features(x)
        logits = reference.classifier(final[:, 0])
    for (patches, prefix), hidden in zip(blocks, theirs.hidden_states[1:]):
        torch.testing.assert_close(prefix[:, 0], hidden[:, 0], atol=1e-4, rtol=0)
        torch.testing.assert_close(patches, hidden[:, 1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, theirs.logits, atol=1e-4, rtol=0)
    if names == "v4-names":
        assert backbone.mean == MEAN and backbone.std == STD  # from preprocessor_config.json
    assert backbone.model.norm.eps == 1e-12  # transformers' layer-norm epsilon, not timm's 1e-6


def test_a_folder_is_analysed_without_naming_the_model(hf, tmp_path, capsys):
    root, _ = hf
    study = Study.open(Selection(checkpoint=str(root / "v4-names"), task="none", data="digits", limit=30, device="cpu"),
                       workers=1, use_cache=False)
    assert study.num_layers == 3 and "transformers ViT folder" in study.model_card()["source"]
    assert main(["backbone", "--checkpoint", str(root / "v4-names")]) == 0
    assert json.loads(capsys.readouterr().out)["num_layers"] == 3
    assert main(["inspect", str(root / "v4-names")]) == 0
    (summary,) = json.loads(capsys.readouterr().out)["files"]
    # A classifier folder is a full fine-tune (the backbone and its head); its backbone alone opens too.
    assert (summary["format"], summary["blocks"], summary["width"], summary["classes"]) == (
        "full fine-tune (transformers folder)", 3, 192, 10)


def test_other_transformers_models_are_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(SlsvizError, match="transformers 'swin' model; slsviz converts ViT"):
        load_backbone("default", tmp_path)
