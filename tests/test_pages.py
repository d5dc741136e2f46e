"""Every page driven by Streamlit's AppTest on the real default task (a quick look: few images per split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from slsviz.app import ui
from slsviz.layers.criteria import criterion_depth
from slsviz.study import Selection

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
QUICK = Selection(limit=60)  # 60 train + 60 val scored, 60 test


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=300)
    at.session_state[ui.SELECTION] = QUICK
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def card(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "**Backbone**" in m.value)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_home_shows_the_model_card():
    at = page("app.py")
    assert not at.exception and not at.error
    assert metric(at, "Blocks") == "12"
    assert metric(at, "Test accuracy").endswith("%")
    assert "convpass" in card(at) and "mnist5k" in card(at)
    hyper = at.table[0].value  # the PETL hyperparameters, a table rather than a dict
    assert hyper.loc["bottleneck", "value"] == "8" and hyper.loc["scale", "value"] == "0.1"


def test_home_reports_a_bad_checkpoint_as_an_error_not_a_traceback(tmp_path):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state[ui.SELECTION] = Selection(task=str(tmp_path / "missing.safetensors"))
    at.run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_layers_page_recommends_and_follows_the_controls():
    at = page("pages/1_Layers.py")
    assert not at.exception and not at.error
    first = at.success[0].value
    assert "SLS recommends keeping" in first
    assert len(at.get("plotly_chart")) == 3
    at.selectbox(key="slsviz.layers.projection").set_value("pca").run()
    at.slider(key="slsviz.layers.alpha").set_value(1.0).run()
    assert not at.exception
    second = at.success[0].value
    assert "1/alpha" not in second and second != first  # projection and alpha changed the numbers
    at.selectbox(key="slsviz.layers.metric").set_value("davies_bouldin").run()
    assert "1/alpha x" in at.success[0].value  # the comparison turned for a lower-is-better score
    assert not at.info  # the alpha rule fits a cluster score: no other rule offered
    at.selectbox(key="slsviz.layers.metric").set_value("probe_accuracy").run()
    probe = ui.study(QUICK).layers.analysis(at.session_state[ui.SETTINGS]).table()["probe_accuracy"].to_numpy()
    depth, reason = criterion_depth("sls_probe", probe)
    assert f"keeps **{depth} blocks**: {reason}" in at.info[0].value  # an accuracy read by its own rule too


def test_layers_page_draws_the_stability_band_of_the_chosen_score():
    at = page("pages/1_Layers.py")
    at.selectbox(key="slsviz.layers.projection").set_value("pca").run()
    at.number_input(key="slsviz.layers.resamples").set_value(3).run()
    assert not at.exception and not at.error
    spread = ui.study(QUICK).layers.stability(at.session_state[ui.SETTINGS], 3)
    low, high = spread.interval()
    assert f"SLS keeps {spread.mode} blocks most often; 90% of the picks lie in {low}..{high}" in at.info[0].value
    curves = at.get("plotly_chart")[0].proto.spec
    assert '"fill":"toself"' in curves.replace(" ", "")  # the band, drawn under the silhouette curve


def test_prune_page_numbers_follow_the_slider():
    at = page("pages/2_Prune_and_benchmark.py")
    assert not at.exception and not at.error
    slider = at.slider(key="slsviz.prune.depth")
    slider.set_value(12).run()
    full_speed, full_flops = metric(at, "Throughput (batch 1)"), metric(at, "GFLOPs / image")
    full_bytes = metric(at, "Stored per task (SLS)")
    at.slider(key="slsviz.prune.depth").set_value(3).run()
    assert not at.exception
    assert metric(at, "GFLOPs / image") != full_flops and metric(at, "Throughput (batch 1)") != full_speed
    assert metric(at, "Stored per task (SLS)") != full_bytes
    assert float(metric(at, "GFLOPs / image")) < float(full_flops)


def test_prune_page_budget_picker_moves_the_slider():
    at = page("pages/2_Prune_and_benchmark.py")
    study = ui.study(QUICK)
    expected = study.timing.pick_depth(study.depths.table(), within=0.02)
    at.number_input(key="slsviz.prune.budget_within").set_value(2.0).run()
    at.button(key="slsviz.prune.budget_go").click().run()
    assert not at.exception
    assert at.slider(key="slsviz.prune.depth").value == expected["depth"]
    assert at.success[-1].value.startswith(f"Depth {expected['depth']}: the fastest depth within 2 points")
    at.radio(key="slsviz.prune.budget").set_value("most accurate at Y images/s or more").run()
    at.number_input(key="slsviz.prune.budget_speed").set_value(1e6).run()
    at.button(key="slsviz.prune.budget_go").click().run()
    assert not at.exception
    assert "No depth reaches 1e+06 images/s here" in at.warning[-1].value
    assert at.slider(key="slsviz.prune.depth").value == expected["depth"]  # left where it was


def test_export_page_builds_the_configuration():
    at = page("pages/3_Export.py", **{"slsviz.prune.chosen": 5})
    assert not at.exception and not at.error
    config = at.json[0].value
    config = json.loads(config) if isinstance(config, str) else config
    for key in ("schema", "backbone", "petl", "task", "depth", "num_layers", "alpha", "metric", "projection",
                "scores", "results", "environment"):
        assert key in config
    assert config["schema"] == "slsviz-config/1" and config["depth"] == 5 and config["num_layers"] == 12
    at.button(key="slsviz.export.onnx_make").click().run()
    assert not at.exception and not at.error
    assert "slsviz.export.onnx" in [b.key for b in at.get("download_button")]
    at.number_input(key="slsviz.export.depth").set_value(4).run()  # another depth: no stale ONNX offered
    assert "slsviz.export.onnx" not in [b.key for b in at.get("download_button")]
    # The default task is Convpass on a ViT-S: no plain ViT holds its adapters, PEFT holds LoRA only and the
    # official code's adapters are 768 wide; the page says so for each and offers no folder.
    captions = [c.value for c in at.caption]
    assert sum("modules of their own" in c for c in captions) == 2 and any("LoRA tasks, not convpass" in c for c in captions)
    assert any("768 wide" in c for c in captions) and "slsviz.export.tool_make" not in [b.key for b in at.button]


def test_train_now_trains_and_loads_the_new_task():
    at = page("app.py")
    at.number_input(key="slsviz.home.train_epochs").set_value(1)
    at.number_input(key="slsviz.home.train_limit").set_value(20)
    at.selectbox(key="slsviz.home.train_method").set_value("linear")
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not at.error
    assert "Trained:" in at.success[0].value
    assert at.session_state[ui.SELECTION].task.endswith(".safetensors")
    assert "**PETL method** linear" in card(at)  # the card now shows the new task


def test_two_sessions_do_not_see_each_others_choices():
    a, b = page("pages/1_Layers.py"), page("pages/1_Layers.py")
    a.slider(key="slsviz.layers.alpha").set_value(0.9).run()
    b.run()
    assert a.session_state[ui.SETTINGS].alpha == 0.9
    assert b.session_state[ui.SETTINGS].alpha == 0.3
    assert a.success[0].value != b.success[0].value or "0.9" not in b.success[0].value
