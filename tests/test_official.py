"""Task checkpoints of the official SLS code open as tasks and compute what that code computes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import sls_reference
import timm
import torch
import torchvision.transforms as T
import yaml
from helpers import image_folder, random_backbone
from PIL import Image
from safetensors.torch import save_file

from slsviz.cli import main
from slsviz.data import load_dataset
from slsviz.errors import CheckpointError, SlsvizError
from slsviz.export.handback import export_as
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.study import Selection, open_selection

ARCH = "vit_base_patch16_224"  # 768 wide, 14x14 patches at 224 px: what the official Convpass assumes
CLASSES = 3


def _nonzero(module: torch.nn.Module, seed: int) -> None:
    """Random adapter and head weights: the official inits leave up-projections at zero, which would hide errors."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "adapter" in name or "head" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    backbone = random_backbone(ARCH, seed=0)
    save_file(backbone.model.state_dict(), str(root / "vit_b16.safetensors"))
    image_folder(root / "images", {"a": 4, "b": 4, "c": 4}, size=40)
    refs = {}
    for method, scale, seed in (("convpass", 10.0, 1), ("repadapter", 1.0, 2)):
        ref = timm.create_model(ARCH, num_classes=CLASSES)
        ref.load_state_dict(backbone.model.state_dict(), strict=False)
        sls_reference.attach(ref, method, dim=8, s=scale)
        _nonzero(ref, seed)
        ref.eval()
        torch.save(sls_reference.saved(ref), root / f"{method}.pt")
        (root / f"{method}.yaml").write_text(f"name: images\nclass_num: {CLASSES}\nscale: {scale}\nxavier_init: False\n")
        pruned = copy.deepcopy(ref)
        pruned.blocks = pruned.blocks[:1]
        torch.save(sls_reference.saved(pruned), root / f"images_1blocks_{method}.pt")
        refs[method] = (ref, pruned)
    return root, refs


def _selection(root, method, **kw) -> Selection:
    return Selection(model=ARCH, checkpoint=str(root / "vit_b16.safetensors"), task=str(root / f"{method}.pt"),
                     task_config=str(root / f"{method}.yaml"), data=str(root / "images"), device="cpu", **kw)


@pytest.mark.parametrize("method", ["convpass", "repadapter"])
def test_an_official_checkpoint_gives_the_official_logits(world, method):
    root, refs = world
    loaded = open_selection(_selection(root, method))
    assert loaded.method == method and loaded.meta.petl["scale"] == (10.0 if method == "convpass" else 1.0)
    assert loaded.meta.mean == [0.485, 0.456, 0.406] and loaded.meta.img_size == 224
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, theirs = loaded.model.eval()(x), refs[method][0](x)
    assert float(theirs.abs().max()) > 0.1  # the adapters and head are not silent
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["convpass", "repadapter"])
def test_a_pruned_official_checkpoint_opens_at_its_depth(world, method):
    root, refs = world
    selection = _selection(root, method)
    loaded = open_selection(Selection(**{**selection.to_dict(), "task": str(root / f"images_1blocks_{method}.pt")}))
    assert len(loaded.model.blocks) == 1 and loaded.meta.depth == 1
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.eval()(x), refs[method][1](x), atol=1e-4, rtol=0)


def test_evaluate_saves_the_logits_the_official_pipeline_gives(world, tmp_path, capsys):
    root, refs = world
    out = tmp_path / "logits.npy"
    args = ["evaluate", "--model", ARCH, "--checkpoint", str(root / "vit_b16.safetensors"),
            "--task", str(root / "convpass.pt"), "--task-config", str(root / "convpass.yaml"),
            "--data", str(root / "images"), "--split", "train", "--save-logits", str(out), "--device", "cpu"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    logits = np.load(out)
    # The official data pipeline: Resize((224, 224), bicubic), ToTensor, Normalize(ImageNet mean/std).
    official = T.Compose([T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                          T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    data = load_dataset(str(root / "images"))
    images = torch.stack([official(Image.open(data.paths[i]).convert("RGB")) for i in data.indices("train")])
    with torch.inference_mode():
        expected = refs["convpass"][0](images).numpy()
    assert logits.shape == (len(data.indices("train")), CLASSES) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert result["num_images"] == len(logits) and result["logits"] == str(out)


def test_without_a_scale_the_reason_names_the_yaml(world):
    root, _ = world
    with pytest.raises(SlsvizError, match="--task-config configs/<method>/<dataset>.yaml"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "task_config": None}))
    loaded = open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "task_config": None, "scale": 10.0}))
    assert loaded.meta.petl["scale"] == 10.0


def test_a_backbone_the_official_convpass_cannot_take_is_named_with_the_checkpoint(world, tmp_path):
    root, _ = world
    small = tmp_path / "small.safetensors"
    save_file(random_backbone("vit_small_patch16_224").model.state_dict(), str(small))
    with pytest.raises(CheckpointError, match="768-wide adapters; the backbone is vit_small_patch16_224 \\(384 wide"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "model": "vit_small_patch16_224",
                                   "checkpoint": str(small)}))
    with pytest.raises(CheckpointError, match="14x14 grid of a 768-wide ViT"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "img_size": 112}))


def test_the_config_must_be_this_tasks_and_the_data_must_be_named(world, tmp_path):
    root, _ = world
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: cifar\nclass_num: 100\nscale: 10\n")
    with pytest.raises(SlsvizError, match="says 100 classes but the head"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "task_config": str(wrong)}))
    with pytest.raises(SlsvizError, match="give the dataset"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "data": None}))


def test_a_torch_file_that_is_not_a_task_is_refused(world, tmp_path):
    root, _ = world
    other = tmp_path / "weights.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a task checkpoint slsviz opens"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "task": str(other)}))


def test_inspect_says_what_each_file_is_and_what_is_missing(world, capsys):
    root, _ = world
    paths = [root / "convpass.pt", root / "images_1blocks_repadapter.pt", root / "vit_b16.safetensors"]
    assert main(["inspect", *map(str, paths)]) == 0
    convpass, repadapter, weights = json.loads(capsys.readouterr().out)["files"]
    assert (convpass["format"], convpass["method"], convpass["bottleneck"], convpass["num_classes"], convpass["depth"]) == (
        "official SLS checkpoint", "convpass", 8, CLASSES, 12)
    assert any("--task-config" in m for m in convpass["missing"]) and convpass["preprocessing"]["img_size"] == 224
    assert (repadapter["method"], repadapter["groups"], repadapter["depth"]) == ("repadapter", 2, 1)
    assert (weights["format"], weights["blocks"], weights["width"], weights["head_classes"]) == (
        "weights (state dict)", 12, 768, None)
    assert main(["inspect", str(root / "no-such.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_model_page_opens_an_official_checkpoint_or_says_what_it_lacks(world):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui

    root, _ = world
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=300)
    at.session_state[ui.SELECTION] = _selection(root, "repadapter")
    at.run()
    assert not at.exception and not at.error
    card = next(m.value for m in at.markdown if "**Backbone**" in m.value)
    assert "repadapter" in card and "vit_base_patch16_224" in card
    assert next(m.value for m in at.metric if m.label == "Blocks") == "12"
    assert "numbers its 3 outputs without names" in at.info[-1].value
    at = AppTest.from_file(app, default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(**{**_selection(root, "convpass").to_dict(), "task_config": None})
    at.run()
    assert not at.exception and "task config or scale fields of the Model page" in at.error[0].value


def test_the_attention_only_mode_is_refused_with_the_reason(world, tmp_path):
    root, _ = world
    tensors = torch.load(root / "convpass.pt", weights_only=True)
    attn_only = tmp_path / "attn.pt"
    torch.save({k: v for k, v in tensors.items() if "adapter_mlp" not in k}, attn_only)
    with pytest.raises(SlsvizError, match="adapters beside attention only .* timm 0.9.10"):
        open_selection(Selection(**{**_selection(root, "convpass").to_dict(), "task": str(attn_only)}))


@pytest.mark.parametrize("method", ["convpass", "repadapter"])
def test_an_official_export_runs_in_the_official_forward_and_opens_again_at_its_depth(world, method, tmp_path):
    root, refs = world
    loaded = open_selection(_selection(root, method))
    written = export_as("official", loaded.model, loaded.meta, 2, tmp_path / "out")
    assert sorted(p.name for p in written) == ["README.md", "images.yaml", "images_2blocks.pt"]
    task_config = yaml.safe_load((tmp_path / "out" / "images.yaml").read_text())
    assert task_config == {"name": "images", "class_num": CLASSES, "scale": loaded.meta.petl["scale"], "xavier_init": False}
    # The official code's model, built afresh: its ViT-B/16, its adapters, cut to the kept blocks, the file loaded.
    ref = timm.create_model(ARCH, num_classes=CLASSES)
    ref.load_state_dict(random_backbone(ARCH, seed=0).model.state_dict(), strict=False)
    sls_reference.attach(ref, method, dim=8, s=task_config["scale"])
    ref.blocks = ref.blocks[:2]
    missing, unexpected = ref.load_state_dict(torch.load(tmp_path / "out" / "images_2blocks.pt"), strict=False)
    assert unexpected == [] and not any("adapter" in k or k.startswith("head.") for k in missing)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours = prune_to_depth(loaded.model, 2).eval()(x)
        torch.testing.assert_close(ref.eval()(x), ours, atol=1e-4, rtol=0)
        assert float(ours.abs().max()) > 0.1
    again = open_selection(Selection(**{**_selection(root, method).to_dict(), "task": str(tmp_path / "out" / "images_2blocks.pt"),
                                        "task_config": str(tmp_path / "out" / "images.yaml")}))
    assert len(again.model.blocks) == 2 and again.meta.depth == 2
    with torch.inference_mode():
        torch.testing.assert_close(again.model.eval()(x), ours, atol=1e-4, rtol=0)


def test_an_official_export_of_a_lora_task_is_refused_with_what_holds_it(world, tmp_path):
    backbone = random_backbone(ARCH, seed=0)
    model = build_task_model(backbone, PetlConfig("lora"), CLASSES)
    meta = TaskMeta(backbone_id=backbone.id, backbone_arch=ARCH, backbone_checksum=backbone.checksum,
                    petl=PetlConfig("lora").to_dict(), class_names=["a", "b", "c"], img_size=224, mean=[0.5] * 3,
                    std=[0.5] * 3, dataset="images", split_seed=0, num_layers=12, recipe={})
    with pytest.raises(SlsvizError, match="runs Convpass and RepAdapter tasks, not lora: export it for timm, transformers or PEFT"):
        export_as("official", model, meta, 2, tmp_path / "out")
    assert not (tmp_path / "out").exists()
