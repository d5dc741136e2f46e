"""Swin with its blocks in one list: one pass gives every block's feature as the official code takes it,
and the model cut at every depth computes the official cut (generalised to every depth and stage)."""

from __future__ import annotations

import pytest
import sls_reference
import timm
import torch

from slsviz.models.depth import prune_to_depth
from slsviz.models.petl.lora import attach_lora, merge_lora
from slsviz.models.swin import SwinBlocks, stage_boundaries

# Swin-B's stages (2, 2, 18, 2), narrow and at 56 px (14, 7, 4, 2 token grids) so a pass is quick.
PAPER_STAGES = {"depths": (2, 2, 18, 2), "embed_dim": 16, "num_heads": (1, 2, 4, 8), "img_size": 56, "window_size": 7}


def _swin(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, **kw).eval()


@pytest.fixture(scope="module")
def paper():
    swin = _swin(**PAPER_STAGES)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    return swin, SwinBlocks(swin).eval(), x


def test_all_blocks_give_timms_own_logits_and_the_stages_are_named(paper):
    swin, blocks, x = paper
    assert len(blocks.blocks) == 24 and blocks.stage_sizes == (2, 2, 18, 2) and stage_boundaries(blocks) == [3, 5, 23]
    with torch.inference_mode():
        torch.testing.assert_close(blocks(x), swin(x), atol=1e-5, rtol=0)


def test_one_pass_gives_each_blocks_feature_as_the_official_code_takes_it(paper):
    swin, blocks, x = paper
    with torch.inference_mode():
        (ours, heads), theirs = blocks.block_features(x), sls_reference.swin_features(swin, x)
        raw, _ = blocks.block_features(x, merged=False)
        # what the head reads at each depth is what the model cut there feeds it
        for depth in (1, 4, 13, 24):
            torch.testing.assert_close(blocks.head(heads[depth - 1]), sls_reference.swin_cut(swin, depth, x),
                                       atol=1e-5, rtol=0)
    assert len(ours) == len(theirs) == 24
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # merged: the next stage's width; raw: the stage's own (the last stage has nothing after it)
    assert [f.shape[1] for f in ours] == [32] * 2 + [64] * 2 + [128] * 18 + [128] * 2
    assert [f.shape[1] for f in raw] == [16] * 2 + [32] * 2 + [64] * 18 + [128] * 2


def test_the_model_cut_at_every_depth_computes_the_official_cut(paper):
    swin, blocks, x = paper
    with torch.inference_mode():
        for depth in range(1, 25):
            cut = prune_to_depth(blocks, depth)
            assert len(cut.blocks) == depth
            ours = cut(x)
            torch.testing.assert_close(ours, sls_reference.swin_cut(swin, depth, x), atol=1e-5, rtol=0)
            if depth >= 5:  # where the official code has a path
                torch.testing.assert_close(ours, sls_reference.swin_forward_drop(swin, depth, x), atol=1e-5, rtol=0)
    assert len(blocks.blocks) == 24  # the cuts are copies


def test_another_swin_cuts_the_same_way():
    swin = _swin(depths=(2, 2, 6, 2), embed_dim=24, num_heads=(3, 6, 12, 24), img_size=112)
    blocks = SwinBlocks(swin).eval()
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    assert stage_boundaries(blocks) == [3, 5, 11]
    with torch.inference_mode():
        for depth in (1, 2, 3, 5, 10, 11, 12):
            torch.testing.assert_close(prune_to_depth(blocks, depth)(x), sls_reference.swin_cut(swin, depth, x),
                                       atol=1e-5, rtol=0)


def test_lora_on_swin_blocks_merges_into_the_same_model(paper):
    _, blocks, x = paper
    model = prune_to_depth(blocks, 6)
    for block in model.blocks:
        attach_lora(block, ("qkv", "proj", "fc1", "fc2"), rank=4, scaling=2.0, dropout=0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    with torch.inference_mode():
        before = model(x)
        for block in model.blocks:
            merge_lora(block)
        assert not any("lora_" in name for name, _ in model.named_parameters())
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def swin_backbone(tmp_path_factory):
    from safetensors.torch import save_file

    from slsviz.models.backbones import load_backbone

    path = tmp_path_factory.mktemp("swin") / "swin_tiny.safetensors"
    save_file(_swin().state_dict(), str(path))
    return load_backbone("swin_tiny_patch4_window7_224", path, img_size=112)


def test_a_swin_loads_as_a_backbone_with_its_stages(swin_backbone):
    said = swin_backbone.describe()
    assert said["num_layers"] == 12 and said["stage_starts"] == [3, 5, 11] and said["embed_dim"] == 96


@pytest.mark.parametrize("method", ["lora", "linear", "convpass", "repadapter", "adaptformer"])
def test_a_swin_task_merges_saves_and_opens_again_with_equal_logits(swin_backbone, method, tmp_path):
    from slsviz.models.petl import PetlConfig, merge_petl
    from slsviz.models.task import TaskMeta, build_task_model, load_task, save_task

    petl = PetlConfig(method)
    model = build_task_model(swin_backbone, petl, 5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(4))
    meta = TaskMeta(backbone_id=swin_backbone.id, backbone_arch=swin_backbone.arch, backbone_checksum=swin_backbone.checksum,
                    petl=petl.to_dict(), class_names=list("abcde"), img_size=112, mean=list(swin_backbone.mean),
                    std=list(swin_backbone.std), dataset="digits", split_seed=0, num_layers=12, recipe={})
    save_task(tmp_path / "task.safetensors", model, meta)
    again, _ = load_task(tmp_path / "task.safetensors", swin_backbone)
    with torch.inference_mode():
        ours = model.eval()(x)
        torch.testing.assert_close(again.eval()(x), ours, atol=1e-5, rtol=0)
        torch.testing.assert_close(merge_petl(prune_to_depth(model, 7))(x), prune_to_depth(model, 7)(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("img_size", [56, 96])  # 96 px: grids of 24 and 12 tokens, padded to 7-token windows
def test_repadapter_on_a_swin_merges_exactly_even_where_windows_are_padded(img_size):
    from slsviz.models.petl import PetlConfig, attach_petl, merge_petl

    blocks = SwinBlocks(_swin(**{**PAPER_STAGES, "depths": (2, 2, 4, 2), "img_size": img_size})).eval()
    model = attach_petl(blocks, PetlConfig("repadapter", bottleneck=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name:
                p.normal_(0, 0.1)
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        before = model.eval()(x)
        merged = merge_petl(model)
        assert not any("adapter" in name for name in merged.state_dict())
        torch.testing.assert_close(merged(x), before, atol=1e-5, rtol=0)


def test_each_adapter_sits_at_its_stages_width_and_convpass_on_its_grid(swin_backbone):
    from slsviz.models.petl import PetlConfig
    from slsviz.models.task import build_task_model

    convpass = build_task_model(swin_backbone, PetlConfig("convpass", bottleneck=4), 5)
    assert [b.adapter_attn.adapter_down.in_features for b in convpass.blocks] == [96] * 2 + [192] * 2 + [384] * 6 + [768] * 2
    assert [b.adapter_attn.grid_size for b in convpass.blocks][::2] == [(28, 28), (14, 14), (7, 7), (7, 7), (7, 7), (4, 4)]  # 7 rows merge into 4
    repadapter = build_task_model(swin_backbone, PetlConfig("repadapter", bottleneck=8), 5)
    assert repadapter.blocks[4].attn.adapter.conv_A.in_channels == 384
    assert swin_backbone.model.blocks[4].attn.__class__.__name__ == "WindowAttention"  # the backbone is untouched


@pytest.fixture(scope="module")
def swin_task(tmp_path_factory):
    """A RepAdapter task on a random swin_tiny at 56 px (2-2-6-2 stages), its backbone file beside it."""
    from safetensors.torch import save_file

    from slsviz.models.backbones import load_backbone
    from slsviz.models.petl import PetlConfig
    from slsviz.models.task import TaskMeta, build_task_model, save_task

    root = tmp_path_factory.mktemp("swin-task")
    save_file(_swin(img_size=56).state_dict(), str(root / "swin.safetensors"))
    backbone = load_backbone("swin_tiny_patch4_window7_224", root / "swin.safetensors", img_size=56)
    petl = PetlConfig("repadapter")
    model = build_task_model(backbone, petl, 10)
    meta = TaskMeta(backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum,
                    petl=petl.to_dict(), class_names=[str(i) for i in range(10)], img_size=56, mean=list(backbone.mean),
                    std=list(backbone.std), dataset="digits", split_seed=0, num_layers=12, recipe={})
    save_task(root / "task.safetensors", model, meta)
    return root


def _page(name: str, root, **state):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Selection

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / name), default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(model="swin_tiny_patch4_window7_224", checkpoint=str(root / "swin.safetensors"),
                                               task=str(root / "task.safetensors"), img_size=56, data="digits", limit=30,
                                               device="cpu")
    at.session_state[ui.SETTINGS] = AnalysisSettings(projection="pca")
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def test_the_layers_page_on_a_swin_shows_its_stage_boundaries(swin_task):
    at = _page("pages/1_Layers.py", swin_task)
    assert not at.exception and not at.error
    said = " ".join(c.value for c in at.caption)
    assert "Blocks are numbered 1..12 across the stages; stages begin at blocks 1, 3, 5, 11" in said
    curves, grid = (chart.proto.spec.replace(" ", "") for chart in at.get("plotly_chart")[:2])
    assert all(f'"text":"stage{n}"' in curves for n in (2, 3, 4))  # a line before each stage's first block
    assert '"x0":2.5' in curves and '"x0":10.5' in curves
    assert all(f"block{b}-stage{n}" in grid for b, n in ((3, 2), (5, 3), (11, 4)))
    assert list(at.dataframe[0].value["stage"]) == [1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4]


def test_the_prune_slider_covers_every_block_across_the_stages(swin_task, tmp_path):
    at = _page("pages/2_Prune_and_benchmark.py", swin_task)
    assert not at.exception and not at.error
    slider = at.slider(key="slsviz.prune.depth")
    assert (slider.min, slider.max) == (1, 12)
    slider.set_value(4).run()
    assert not at.exception
    assert any("Cut in stage 2 of 4 (blocks 3-4); the 2 patch mergings after it stay, so the head" in c.value for c in at.caption)
    assert '"4 s2"' in at.get("plotly_chart")[-1].proto.spec  # each depth's point names the stage it cuts in
    flops_4 = float(next(m.value for m in at.metric if m.label == "GFLOPs / image"))
    at.slider(key="slsviz.prune.depth").set_value(12).run()
    assert float(next(m.value for m in at.metric if m.label == "GFLOPs / image")) > flops_4


def test_analyze_gives_a_depth_and_prune_there_gives_the_official_cut_of_the_task(swin_task, capsys):
    import json

    from safetensors.torch import load_file

    from slsviz.cli import main
    from slsviz.models.backbones import load_backbone
    from slsviz.models.petl import merge_petl
    from slsviz.models.task import load_task

    common = ["--model", "swin_tiny_patch4_window7_224", "--checkpoint", str(swin_task / "swin.safetensors"), "--img-size",
              "56", "--data", "digits", "--limit", "30", "--device", "cpu"]
    assert main(["analyze", *common, "--task", str(swin_task / "task.safetensors"), "--projection", "pca",
                 "--out", str(swin_task / "report")]) == 0
    depth = json.loads(capsys.readouterr().out)["recommended_depth"]
    report = json.loads((swin_task / "report" / "report.json").read_text())
    assert 1 <= depth <= 12 and report["recommended_depth"] == depth and report["stage_starts"] == [3, 5, 11]
    assert [row["stage"] for row in report["layers"]] == [1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4]
    backbone = load_backbone("swin_tiny_patch4_window7_224", swin_task / "swin.safetensors", img_size=56)
    task, _ = load_task(swin_task / "task.safetensors", backbone)
    # the reference: timm's whole Swin with the task's adapters merged in, cut the official way
    whole = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, img_size=56).eval()
    merged = merge_petl(task.eval())
    whole.load_state_dict({merged.timm_name(k): v for k, v in merged.state_dict().items()})
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(6))
    for cut in sorted({depth, 7}):  # SLS' depth, and one inside the third stage (a random model may keep all)
        out = swin_task / f"pruned{cut}.safetensors"
        assert main(["prune", *common, "--task", str(swin_task / "task.safetensors"), "--depth", str(cut), "--out",
                     str(out)]) == 0
        pruned, _ = load_task(out, backbone)
        with torch.inference_mode():
            assert len(pruned.blocks) == cut
            torch.testing.assert_close(pruned.eval()(x), sls_reference.swin_cut(whole, cut, x), atol=1e-5, rtol=0)
    kept = {k.split(".")[1] for k in load_file(str(swin_task / "pruned7.safetensors")) if k.startswith("blocks.")}
    assert kept == {str(i) for i in range(7)}  # the adapters of the first 7 blocks and no others
    # the pruned task opened again: its stages are those of its kept blocks, the later mergings still there
    from slsviz.study import Selection, Study

    study = Study.open(Selection(model="swin_tiny_patch4_window7_224", checkpoint=str(swin_task / "swin.safetensors"),
                                 task=str(swin_task / "pruned7.safetensors"), img_size=56, data="digits", limit=10,
                                 device="cpu"), use_cache=False)
    assert study.num_layers == 7 and study.stages() == [1, 1, 2, 2, 3, 3, 3] and study.stage_starts == [3, 5]
    assert study.stage_of(7) == ("stage 3 of 4 (blocks 5-7); the patch merging after it stays, so the head reads "
                                 "the last width")


def test_depgraph_on_a_swin_prunes_the_mlps_to_the_flops_of_a_depth_and_keeps_every_head():
    from slsviz.models.petl import PetlConfig, attach_petl
    from slsviz.pruning.bench import count_flops
    from slsviz.pruning.depgraph import width_prune_to_flops

    model = attach_petl(SwinBlocks(_swin(**{**PAPER_STAGES, "depths": (2, 2, 4, 2)})), PetlConfig("convpass", bottleneck=4))
    target = count_flops(prune_to_depth(model, 8), 56)
    x = torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(7))
    pruned = width_prune_to_flops(model.eval(), target, 56, batches=[(x, torch.tensor([0, 1, 2, 3]))], round_to=4)
    assert abs(pruned.flops - target) <= 0.05 * target
    assert pruned.heads == [b.attn.num_heads for b in model.blocks]  # heads stay: their bias-table columns
    assert all(kept < b.mlp.fc1.out_features for kept, b in zip(pruned.mlp_hidden, model.blocks))
    with torch.inference_mode():
        assert pruned.model(x).shape == (4, 5)
    assert len(model.blocks[0].mlp.fc1.weight) == 64  # the task is untouched


def test_a_swin_bank_records_each_blocks_width_and_compare_says_which_width_each_criterion_reads(swin_task):
    from slsviz.study import Selection, Study
    from slsviz.study.comparison import WIDTH_BOUND, width_note

    study = Study.open(Selection(model="swin_tiny_patch4_window7_224", checkpoint=str(swin_task / "swin.safetensors"),
                                 task=str(swin_task / "task.safetensors"), img_size=56, data="digits", limit=10,
                                 device="cpu"), use_cache=False)
    widths = study.features.bank("train").meta["widths"]
    assert widths == [192] * 2 + [384] * 2 + [768] * 8  # merged to the next stage's width, as the official code
    assert study.features.bank("train").features.shape[2] == 768  # zero-padded to the widest
    assert study.stages() == [1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4]
    assert set(WIDTH_BOUND) == {"block_influence", "angular_distance", "cka_to_last"}
    assert width_note("angular_distance", widths).startswith("Blocks 192, 384, 768 wide, each zero-padded to 768")
    assert "do not need one width" in width_note("cka_to_last", widths)


def test_a_swin_checkpoint_with_the_official_repositorys_key_names_loads_as_timms(tmp_path):
    import re

    from slsviz.models.backbones import load_backbone

    swin = _swin(img_size=56)
    # Microsoft's Swin repository: the merging ends a stage (timm 1.x starts the next with it), the head is
    # "head", the buffers are saved, and the file wraps it all in {"model": ...}
    official = {re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
                .replace("head.fc.", "head."): v for k, v in swin.state_dict().items()}
    for name, buffer in swin.named_buffers():
        official.setdefault(re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample",
                                   name), buffer)
    assert "layers.0.downsample.reduction.weight" in official and "layers.0.blocks.1.attn_mask" in official
    torch.save({"model": official}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    backbone = load_backbone("swin_tiny_patch4_window7_224", tmp_path / "swin_tiny_patch4_window7_224.pth", img_size=56)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        torch.testing.assert_close(backbone.model(x), swin.forward_features(x).mean(dim=(1, 2)), atol=1e-5, rtol=0)
