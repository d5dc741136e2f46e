"""The pruned model handed back in the formats of the user's own tools: loaded by that tool alone (timm,
transformers, PEFT; the official code's forward in tests/test_official.py), it gives the logits of
slsviz's model cut at the same depth, and slsviz opens the export again at that depth."""

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
from slsviz.export.handback import export_as, refusals
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.study import Selection, open_selection

TINY = "vit_tiny_patch16_224"
DINOV2 = "vit_small_patch14_dinov2"  # layer scales: folded into the layers before them for transformers
SWIN = "swin_tiny_patch4_window7_224"  # 2-2-6-2: cut at 3, its first stage and one block of the second
DEPTH = 3
# What a user's own code does with each folder: the tool alone, no slsviz (one process for all three:
# PEFT brings transformers and timm with it anyway). argv: FORMAT=FOLDER; each folder's input is
# <folder>.x.pt and its logits go to <folder>.logits.pt.
ALONE = """
import json, sys, timm, torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import ViTForImageClassification

def timm_model(folder):
    config = json.load(open(f"{folder}/config.json"))
    model = timm.create_model(config["architecture"], pretrained=False, **config["create_model_kwargs"])
    model.load_state_dict(load_file(f"{folder}/model.safetensors"))
    return model.eval()

def transformers_model(folder):
    model = ViTForImageClassification.from_pretrained(folder).eval()
    return lambda x: model(pixel_values=x).logits

def peft_model(folder):
    return PeftModel.from_pretrained(timm_model(f"{folder}/base"), f"{folder}/adapter").eval()

LOAD = {"timm": timm_model, "transformers": transformers_model, "peft": peft_model}
for job in sys.argv[1:]:
    fmt, folder = job.split("=", 1)
    with torch.inference_mode():
        torch.save(LOAD[fmt](folder)(torch.load(folder + ".x.pt")), folder + ".logits.pt")
assert not any(name.startswith("slsviz") for name in sys.modules)
"""
# (format, case): (arch, input size, PETL settings)
CASES = {
    ("timm", "lora"): (TINY, 32, {"method": "lora"}),
    ("timm", "repadapter"): (TINY, 32, {"method": "repadapter"}),
    ("timm", "linear"): (TINY, 32, {"method": "linear"}),
    ("transformers", "lora"): (TINY, 32, {"method": "lora"}),
    ("transformers", "repadapter"): (TINY, 32, {"method": "repadapter"}),
    ("transformers", "linear"): (TINY, 32, {"method": "linear"}),
    ("transformers", "dinov2-lora"): (DINOV2, 56, {"method": "lora", "targets": ("qkv", "proj", "fc2")}),
    ("peft", "qkv"): (TINY, 32, {"method": "lora"}),
    ("peft", "q-v-fc1-rslora"): (TINY, 32, {"method": "lora", "targets": ("q", "v", "fc1"), "rslora": True}),
    ("peft", "some-blocks-biases"): (TINY, 32, {"method": "lora", "layers": (1, 5), "bias": "lora_only"}),
    ("timm", "swin-repadapter"): (SWIN, 56, {"method": "repadapter"}),
    ("peft", "swin-lora"): (SWIN, 56, {"method": "lora", "targets": ("qkv", "fc1")}),
}


def _task(method: str, arch: str = TINY, size: int = 32, **kw) -> tuple[torch.nn.Module, TaskMeta]:
    backbone = random_backbone(arch, img_size=size, seed=0)
    petl = PetlConfig(method, **kw)
    model = build_task_model(backbone, petl, 10)
    with torch.no_grad():  # wake the adapters (LoRA's B and the adapters' up layers start at zero)
        for name, p in model.named_parameters():
            if p.requires_grad or name.endswith(".gamma"):  # DINOv2's layer scales start near zero
                p.normal_(1.0 if name.endswith(".gamma") else 0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    meta = TaskMeta(backbone_id=backbone.id, backbone_arch=arch, backbone_checksum=backbone.checksum,
                    petl=petl.to_dict(), class_names=[str(i) for i in range(10)], img_size=size,
                    mean=list(backbone.mean), std=list(backbone.std), dataset="digits", split_seed=0,
                    num_layers=12, recipe={})
    return model.eval(), meta


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every case exported, each folder's input batch beside it, and the logits each tool alone gave."""
    root = tmp_path_factory.mktemp("handback")
    done = {}
    for (fmt, case), (arch, size, petl) in CASES.items():
        model, meta = _task(**petl, arch=arch, size=size)
        folder = root / f"{fmt}-{case}"
        written = export_as(fmt, model, meta, DEPTH, folder)
        x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
        torch.save(x, f"{folder}.x.pt")
        with torch.inference_mode():
            ours = prune_to_depth(model, DEPTH)(x)
        done[fmt, case] = {"folder": folder, "written": written, "ours": ours, "arch": arch, "size": size}
    jobs = [f"{fmt}={d['folder']}" for (fmt, _), d in done.items()]
    ran = subprocess.run([sys.executable, "-c", ALONE, *jobs], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return done


@pytest.mark.parametrize("fmt, case", list(CASES))
def test_an_export_loaded_by_its_tool_alone_gives_the_pruned_models_logits(exported, fmt, case):
    done = exported[fmt, case]
    assert float(done["ours"].abs().max()) > 0.1  # the adapters and head are not silent
    theirs = torch.load(f"{done['folder']}.logits.pt")
    torch.testing.assert_close(theirs, done["ours"], atol=1e-4, rtol=0)
    card = (done["folder"] / "README.md").read_text()
    assert f"{DEPTH} of 12 blocks" in card and "## Load it" in card and "% fewer" in card


@pytest.mark.parametrize("fmt, case", list(CASES))
def test_slsviz_opens_its_own_export_again_at_that_depth(exported, fmt, case):
    done = exported[fmt, case]
    folder, arch, size = done["folder"], done["arch"], done["size"]
    if fmt == "timm":
        selection = Selection(model=arch, task=str(folder / "model.safetensors"), img_size=size)
    elif fmt == "transformers":
        selection = Selection(task=str(folder))
    else:
        selection = Selection(model=arch, checkpoint=str(folder / "base" / "model.safetensors"),
                              task=str(folder / "adapter"), img_size=size)
    selection = Selection(**{**selection.to_dict(), "data": "digits", "limit": 20, "device": "cpu"})
    if case == "swin-lora":
        with pytest.raises(SlsvizError, match="a Swin's layer; slsviz writes PEFT adapters for a Swin but opens those of a "
                                              "ViT only: open the same task's timm export"):
            open_selection(selection)
        return
    loaded = open_selection(selection)
    assert len(loaded.model.blocks) == DEPTH
    with torch.inference_mode():
        again = loaded.model.eval()(torch.load(f"{folder}.x.pt"))
    torch.testing.assert_close(again, done["ours"], atol=1e-4, rtol=0)


def test_the_folders_hold_what_each_tool_reads(exported):
    names = {key: sorted(p.relative_to(d["folder"]).as_posix() for p in d["written"]) for key, d in exported.items()}
    assert names["timm", "lora"] == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((exported["timm", "lora"]["folder"] / "config.json").read_text())["create_model_kwargs"] == {
        "depth": DEPTH, "num_classes": 10, "img_size": 32}
    assert names["transformers", "lora"] == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    hf = json.loads((exported["transformers", "dinov2-lora"]["folder"] / "config.json").read_text())
    assert hf["num_hidden_layers"] == DEPTH and hf["architectures"] == ["ViTForImageClassification"]
    assert {"README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "base/config.json",
            "base/model.safetensors"} <= set(names["peft", "qkv"])
    peft = json.loads((exported["peft", "qkv"]["folder"] / "adapter" / "adapter_config.json").read_text())
    assert (peft["r"], peft["lora_alpha"], peft["modules_to_save"]) == (8, 8.0, ["head"])  # the task's own r, alpha
    assert sorted(peft["target_modules"]) == sorted(f"blocks.{i}.attn.qkv" for i in range(DEPTH))
    thirds = json.loads((exported["peft", "q-v-fc1-rslora"]["folder"] / "adapter" / "adapter_config.json").read_text())
    assert thirds["r"] == 16 and thirds["use_rslora"]  # q and v: two rank-8 pairs on the fused qkv
    assert "zero rows elsewhere" in (exported["peft", "q-v-fc1-rslora"]["folder"] / "README.md").read_text()
    some = json.loads((exported["peft", "some-blocks-biases"]["folder"] / "adapter" / "adapter_config.json").read_text())
    assert some["target_modules"] == ["blocks.1.attn.qkv"] and some["bias"] == "lora_only"
    # a Swin cut inside its second stage: timm's depths per stage, the later stages empty (their merging stays)
    swin = json.loads((exported["timm", "swin-repadapter"]["folder"] / "config.json").read_text())
    assert swin["create_model_kwargs"] == {"depths": [2, 1, 0, 0], "num_classes": 10, "img_size": 56}
    swin_peft = json.loads((exported["peft", "swin-lora"]["folder"] / "adapter" / "adapter_config.json").read_text())
    assert sorted(swin_peft["target_modules"]) == sorted(
        f"layers.{s}.blocks.{b}.{m}" for s, b in ((0, 0), (0, 1), (1, 0)) for m in ("attn.qkv", "mlp.fc1"))


def test_a_swin_is_refused_by_the_formats_written_for_a_vit():
    model, meta = _task("repadapter", arch=SWIN, size=56)
    said = refusals(model, meta)
    assert said["timm"] is None and "SwinForImageClassification" in said["transformers"]
    assert "Swin path" in said["official"] and "LoRA tasks, not repadapter" in said["peft"]


@pytest.mark.parametrize("method", ["convpass", "adaptformer"])
def test_adapters_a_plain_vit_cannot_hold_are_refused_with_what_holds_them(method, tmp_path):
    model, meta = _task(method)
    said = refusals(model, meta)
    assert said["official"] is not None and said["peft"] is not None  # not LoRA; tiny, not the official ViT-B/16
    for fmt in ("timm", "transformers"):
        with pytest.raises(SlsvizError, match="modules of their own.*slsviz task.*ONNX"):
            export_as(fmt, model, meta, DEPTH, tmp_path / fmt)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no staging folder left


def test_a_lora_task_whose_lora_lies_beyond_the_cut_is_not_a_peft_adapter(tmp_path):
    model, meta = _task("lora", layers=(8, 9))
    with pytest.raises(SlsvizError, match="adapts none of the first 3 blocks.*timm or transformers"):
        export_as("peft", model, meta, DEPTH, tmp_path / "peft")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SlsvizError, match="Unknown export format 'keras'.*timm, transformers, peft, official"):
        export_as("keras", model, meta, DEPTH, tmp_path / "keras")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return tiny_digits_tasks(tmp_path_factory.mktemp("export-formats"), ("lora",))


@pytest.mark.parametrize("fmt, files", [("timm", 3), ("peft", 6), ("transformers", 4)])
def test_export_as_a_tool_writes_the_folder_with_the_card_of_the_sls_decision(tasks, tmp_path, capsys, fmt, files):
    out = tmp_path / fmt
    assert main(["export", "--model", TINY, "--checkpoint", str(tasks / "tiny.safetensors"), "--img-size", "32",
                 "--task", str(tasks / "lora.safetensors"), "--limit", "40", "--projection", "pca", "--depth", "4",
                 "--seconds", "0.05", "--device", "cpu", "--as", fmt, "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == fmt and result["depth"] == 4 and len(result["written"]) >= files
    assert all(Path(p).is_file() and Path(p).is_relative_to(out) for p in result["written"])
    card = (out / "README.md").read_text()
    assert "4 of 12 blocks" in card and "Chosen with SLS: silhouette of the pca map" in card
    assert "accuracy_head_refit" in card and "Per block: 1:" in card


def test_the_export_page_offers_the_formats_that_fit_a_lora_task(tasks):
    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "3_Export.py"), default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(model=TINY, checkpoint=str(tasks / "tiny.safetensors"), img_size=32,
                                               task=str(tasks / "lora.safetensors"), limit=40, device="cpu")
    at.session_state["slsviz.prune.chosen"] = 3
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key=ui.TOOL_FORMAT).options == ["timm (timm.create_model, adapters merged)",
                                                         "transformers (ViTForImageClassification, adapters merged)",
                                                         "PEFT (LoRA adapter folder and its base)"]
    assert any("official SLS code runs Convpass and RepAdapter tasks, not lora" in c.value for c in at.caption)
    assert "slsviz.export.tool_file" not in [b.key for b in at.get("download_button")]
    at.selectbox(key=ui.TOOL_FORMAT).set_value("peft").run()
    at.button(key="slsviz.export.tool_make").click().run()
    assert not at.exception and not at.error
    [button] = [b for b in at.get("download_button") if b.key == "slsviz.export.tool_file"]
    at.selectbox(key=ui.TOOL_FORMAT).set_value("timm").run()  # another format: no stale folder offered
    assert "slsviz.export.tool_file" not in [b.key for b in at.get("download_button")]
    at.selectbox(key=ui.TOOL_FORMAT).set_value("peft").run()
    assert "slsviz.export.tool_file" in [b.key for b in at.get("download_button")]
    at.number_input(key="slsviz.export.depth").set_value(4).run()  # another depth: no stale folder offered
    assert "slsviz.export.tool_file" not in [b.key for b in at.get("download_button")]
