"""The pruned model handed back in another tool's format: loaded by that tool alone, it gives the
logits of slsviz's model cut at the same depth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_backbone, tiny_digits_tasks

from slsviz.cli import main
from slsviz.errors import SlsvizError
from slsviz.export import export_timm
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model

TINY = "vit_tiny_patch16_224"
# What a user's own code does with the folder: timm and safetensors, no slsviz.
TIMM_ALONE = """
import json, sys, timm, torch
from safetensors.torch import load_file
folder = sys.argv[1]
config = json.load(open(f"{folder}/config.json"))
model = timm.create_model(config["architecture"], pretrained=False, **config["create_model_kwargs"])
model.load_state_dict(load_file(f"{folder}/model.safetensors"))
with torch.inference_mode():
    torch.save(model.eval()(torch.load(f"{folder}/x.pt")), f"{folder}/logits.pt")
assert not any(name.startswith("slsviz") for name in sys.modules)
"""


def _task(method: str, **kw) -> tuple[torch.nn.Module, TaskMeta]:
    backbone = random_backbone(TINY, img_size=32, seed=0)
    petl = PetlConfig(method, **kw)
    model = build_task_model(backbone, petl, 10)
    with torch.no_grad():  # wake the adapters (LoRA's B and the adapters' up layers start at zero)
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    meta = TaskMeta(backbone_id=backbone.id, backbone_arch=TINY, backbone_checksum=backbone.checksum,
                    petl=petl.to_dict(), class_names=[str(i) for i in range(10)], img_size=32,
                    mean=list(backbone.mean), std=list(backbone.std), dataset="digits", split_seed=0,
                    num_layers=12, recipe={})
    return model.eval(), meta


@pytest.mark.parametrize("method", ["lora", "repadapter", "linear"])
def test_a_timm_export_loaded_by_timm_alone_gives_the_pruned_models_logits(method, tmp_path):
    model, meta = _task(method)
    written = export_timm(model, meta, 3, tmp_path)
    assert [p.name for p in written] == ["model.safetensors", "config.json", "README.md"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["create_model_kwargs"] == {"depth": 3, "num_classes": 10, "img_size": 32}
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run([sys.executable, "-c", TIMM_ALONE, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.inference_mode():
        ours = prune_to_depth(model, 3)(x)
    assert float(ours.abs().max()) > 0.1  # the adapters and head are not silent
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), ours, atol=1e-4, rtol=0)
    card = (tmp_path / "README.md").read_text()
    assert "3 of 12 blocks" in card and "timm.create_model('vit_tiny_patch16_224'" in card and "depth=3" in card


@pytest.mark.parametrize("method", ["convpass", "adaptformer"])
def test_adapters_a_plain_vit_cannot_hold_are_refused_with_what_holds_them(method, tmp_path):
    model, meta = _task(method)
    with pytest.raises(SlsvizError, match="modules of their own.*slsviz task.*ONNX"):
        export_timm(model, meta, 3, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return tiny_digits_tasks(tmp_path_factory.mktemp("export-formats"), ("lora",))


def test_export_as_timm_writes_the_folder_with_the_card_of_the_sls_decision(tasks, tmp_path, capsys):
    out = tmp_path / "timm"
    assert main(["export", "--model", TINY, "--checkpoint", str(tasks / "tiny.safetensors"), "--img-size", "32",
                 "--task", str(tasks / "lora.safetensors"), "--limit", "40", "--projection", "pca", "--depth", "4",
                 "--seconds", "0.05", "--device", "cpu", "--as", "timm", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "timm" and result["depth"] == 4 and len(result["written"]) == 3
    card = (out / "README.md").read_text()
    assert "4 of 12 blocks" in card and "Chosen with SLS: silhouette of the pca map" in card
    assert "accuracy_head_refit" in card and "Per block: 1:" in card


def test_the_export_page_offers_the_timm_model_for_a_lora_task(tasks):
    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui
    from slsviz.study import Selection

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "3_Export.py"), default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(model=TINY, checkpoint=str(tasks / "tiny.safetensors"), img_size=32,
                                               task=str(tasks / "lora.safetensors"), limit=40, device="cpu")
    at.session_state["slsviz.prune.chosen"] = 3
    at.run()
    assert not at.exception and not at.error
    assert "slsviz.export.timm" not in [b.key for b in at.get("download_button")]
    at.button(key="slsviz.export.timm_make").click().run()
    assert not at.exception and not at.error
    [button] = [b for b in at.get("download_button") if b.key == "slsviz.export.timm"]
    at.number_input(key="slsviz.export.depth").set_value(4).run()  # another depth: no stale folder offered
    assert "slsviz.export.timm" not in [b.key for b in at.get("download_button")]
