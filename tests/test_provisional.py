"""Provisional accuracies: shown from the first test images while the rest are read, then replaced by
exact figures equal to those of one whole pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import random_backbone, tiny_digits_tasks

from slsviz import defaults
from slsviz.data import load_digits
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.pruning.accuracy import interval
from slsviz.study import LoadedTask, Study


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(defaults, "PREVIEW_TEST_IMAGES", 100)  # digits: 797 test images, previews of 2 x 64


def _study(batch_size: int = 64) -> Study:
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=3, seed=0)
    data = load_digits()
    model = build_task_model(backbone, PetlConfig("convpass"), data.num_classes)
    return Study(LoadedTask(backbone, model, None, data), batch_size=batch_size, workers=1)


def _wait(study: Study) -> None:
    """Until the exact table is there (the background job that makes it, queued once, has ended)."""
    study.depths.start_exact().result(timeout=120)
    assert study.depths.ready()


def test_a_provisional_table_then_the_exact_one_equal_to_a_single_pass(monkeypatch):
    import slsviz.study.depths as depths_module

    fits, real_fit = [], depths_module.fit_heads
    monkeypatch.setattr(depths_module, "fit_heads", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    study = _study()
    assert study.features.preview_size("test") == 128  # whole batches
    table, exact = study.depths.table_soon()
    assert not exact and table.attrs["images"] == (128, 797)
    np.testing.assert_allclose(table["accuracy_head_refit_pm"], interval(table["accuracy_head_refit"], 128))
    study.depths.start_exact()
    study.depths.start_exact()  # once
    _wait(study)
    final, exact = study.depths.table_soon()
    assert exact and "accuracy_head_refit_pm" not in final
    alone = _study()
    monkeypatch.setattr(defaults, "PREVIEW_TEST_IMAGES", 10_000)  # no preview: one pass over the test split
    assert alone.features.preview_size("test") is None
    np.testing.assert_array_equal(study.features.bank("test").features, alone.features.bank("test").features)
    np.testing.assert_array_equal(study.features.bank("test").indices, alone.features.bank("test").indices)
    assert final.equals(alone.depths.table())
    assert len(fits) == 2  # once per study: for the preview and the exact table alike


def test_the_prune_page_says_what_is_provisional_and_then_shows_the_exact_figures(tmp_path):
    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Selection

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    tasks = tiny_digits_tasks(tmp_path)  # a tiny task: the page's logic, not the default model's speed
    selection = Selection(model="vit_tiny_patch16_224", checkpoint=str(tasks / "tiny.safetensors"), img_size=32,
                          task=str(tasks / "convpass.safetensors"), data="digits", device="cpu", limit=300)
    at = AppTest.from_file(app, default_timeout=600)
    at.session_state[ui.SELECTION] = selection
    at.session_state[ui.SETTINGS] = AnalysisSettings(projection="pca")  # the recommendation is not what is tested
    at.switch_page("pages/2_Prune_and_benchmark.py").run()
    assert not at.exception and not at.error
    assert any("Provisional accuracies, from the first 128 of 300 test images" in i.value for i in at.info)
    refit = next(m for m in at.metric if m.label == "Accuracy, head re-fit")
    assert "±" in refit.value
    _wait(ui.study(selection))
    at.run()
    assert not at.exception and not any("Provisional" in i.value for i in at.info)
    assert "±" not in next(m for m in at.metric if m.label == "Accuracy, head re-fit").value


def test_prefetch_starts_the_next_pages_work_once_and_a_page_waits_for_it(monkeypatch):
    from slsviz.layers.analysis import AnalysisSettings

    import slsviz.study.features as features_module
    import slsviz.study.timing as timing_module

    study = _study()
    calls = []
    real = features_module.feature_bank
    monkeypatch.setattr(features_module, "feature_bank", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    settings = AnalysisSettings(projection="pca")
    study.prefetch("layers", settings)
    study.prefetch("layers", settings)  # once
    rule = study.layers.recommend(settings)  # what the Layers page asks: waits for the prefetch, computes nothing twice
    study.prefetch("prune")
    head = study.features.first_images("test")
    assert head.num_samples == 128 and sorted(calls) == ["test", "train", "val"]
    assert rule.depth_ >= 1
    study.prefetch("prune").result(timeout=120)  # the same job: it times every depth, then starts the rest
    _wait(study)  # of the test split
    monkeypatch.setattr(timing_module, "benchmark_models", lambda *a, **k: pytest.fail("timed twice"))
    assert len(study.timing.benchmarks()) == 3  # timed by the prefetch, with the study's budget
    assert sorted(calls) == ["test", "test", "train", "val"]  # the rest continues the preview: no second preview
    with pytest.raises(Exception, match="Nothing to prefetch for 'export'"):
        study.prefetch("export")
