"""Provisional accuracies: shown from the first test images while the rest are read, then replaced by
exact figures equal to those of one whole pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import random_backbone, tiny_digits_tasks

from slsviz import defaults
from slsviz.data import load_digits
from slsviz.layers.rule import SLSRule
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
    monkeypatch.setattr(depths_module, "fit_heads", lambda m, train, **k: fits.append(train.num_samples) or real_fit(m, train, **k))
    study = _study()
    assert study.features.preview_size("test") == 128  # whole batches
    table, exact = study.depths.table_soon()
    assert not exact and table.attrs["images"] == (128, 797)
    # the heads are fit on the first train images (those the provisional recommendation reads) while the rest are read
    assert table.attrs["train_images"] == (128, 800) and fits == [128]
    np.testing.assert_allclose(table["accuracy_head_refit_pm"], interval(table["accuracy_head_refit"], 128))
    study.depths.start_exact()
    study.depths.start_exact()  # once
    _wait(study)
    final, exact = study.depths.table_soon()
    assert exact and "accuracy_head_refit_pm" not in final
    alone = _study()
    monkeypatch.setattr(defaults, "PREVIEW_TEST_IMAGES", 10_000)  # no preview: one pass over the test split
    monkeypatch.setattr(defaults, "PREVIEW_SCORED_IMAGES", 10_000)
    assert alone.features.preview_size("test") is None and not alone.features.previewed()
    np.testing.assert_array_equal(study.features.bank("test").features, alone.features.bank("test").features)
    np.testing.assert_array_equal(study.features.bank("test").indices, alone.features.bank("test").indices)
    assert final.equals(alone.depths.table())
    assert fits == [128, 800, 800]  # once per study and train bank: the preview's, then the exact one's


def test_a_provisional_recommendation_from_the_first_images_then_the_exact_one(monkeypatch):
    import slsviz.study.features as features_module
    from slsviz.layers.analysis import AnalysisSettings

    reads, real = [], features_module.feature_bank
    monkeypatch.setattr(features_module, "feature_bank", lambda *a, **k: reads.append((a[2], k["limit"])) or real(*a, **k))
    study, settings = _study(), AnalysisSettings(projection="pca")
    assert study.features.previewed()
    rule, early = study.layers.recommend_soon(settings)
    assert early is not None and rule is early.rule and not study.layers.ready(settings)
    assert early.images == (192, 1000) and early.train_images == 128  # 192 in whole batches, train and val in proportion
    assert study.layers.recommend_soon(settings)[1] is early  # made once
    exact = study.layers.recommend(settings)
    assert study.layers.ready(settings) and study.layers.recommend_soon(settings) == (exact, None)
    # the same images as the first batches of the one pass, which reads only the rest
    features, labels = study.features.scored()
    first = np.r_[0:128, 800:864]
    np.testing.assert_array_equal(early.analysis.features, features[:, first])
    np.testing.assert_array_equal(early.analysis.labels, labels[first])
    assert reads == [("train", 128), ("val", 64), ("train", None), ("val", None)]
    # its scores are the rule's on the first images' own analysis; its spread is over resamples of them
    direct = SLSRule(settings.alpha).fit([early.analysis.score(layer) for layer in range(1, 4)])
    assert direct.depth_ == rule.depth_
    assert len(early.spread.depths) == defaults.PROVISIONAL_RESAMPLES
    # the exact recommendation is the one a single whole pass gives
    alone = _study()
    monkeypatch.setattr(defaults, "PREVIEW_SCORED_IMAGES", 10_000)
    assert not alone.features.previewed() and alone.layers.recommend_soon(settings)[1] is None
    single = alone.layers.recommend(settings)
    assert single.depth_ == exact.depth_
    np.testing.assert_array_equal(single.scores_, exact.scores_)


def test_the_spread_on_maps_is_the_rule_on_each_resample_of_the_points():
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
    from slsviz.layers.stability import resamples, spread_on_maps

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = np.stack([rng.normal(size=(60, 8)) + s * np.eye(8)[labels] for s in (0.3, 1.0, 2.0, 4.0)]).astype(np.float32)
    for metric in ("silhouette", "davies_bouldin"):
        analysis = LayerAnalysis(features, labels, AnalysisSettings(projection="pca", metric=metric, alpha=0.6))
        spread = spread_on_maps(analysis, 7, seed=3)
        score = {"silhouette": silhouette_score, "davies_bouldin": davies_bouldin_score}[metric]
        for b, (idx, _) in enumerate(resamples(60, 7, 3)):
            rule = SLSRule(0.6, metric == "silhouette").fit([score(analysis.map(layer)[idx], labels[idx]) for layer in range(1, 5)])
            assert spread.depths[b] == rule.depth_
            np.testing.assert_allclose(spread.scores[b][3], rule.scores_[3])
    assert spread_on_maps(LayerAnalysis(features, labels, AnalysisSettings(projection="pca", metric="probe_accuracy")),
                          7, seed=3) is None


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A tiny task: the pages' logic, not the default model's speed."""
    return tiny_digits_tasks(tmp_path_factory.mktemp("tasks"))


def test_the_layers_page_shows_a_provisional_recommendation_then_the_exact_one(tasks):
    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Selection

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    selection = Selection(model="vit_tiny_patch16_224", checkpoint=str(tasks / "tiny.safetensors"), img_size=32,
                          task=str(tasks / "convpass.safetensors"), data="digits", device="cpu")  # 1000 scored images
    settings = AnalysisSettings(projection="pca")
    at = AppTest.from_file(app, default_timeout=600)
    at.session_state[ui.SELECTION] = selection
    at.session_state[ui.SETTINGS] = settings
    at.switch_page("pages/1_Layers.py").run()
    assert not at.exception and not at.error
    banner = next(w.value for w in at.warning if "Provisional" in w.value)
    assert "from the first 192 of 1000 scored images (128 train, 64 val)" in banner and "90% of the picks lie in" in banner
    assert "SLS recommends keeping" in at.success[0].value and "(provisional;" in at.success[0].value
    assert "Every block" not in [h.value for h in at.subheader]  # the maps come with the exact recommendation
    ui.study(selection).prefetch("layers", settings).result(timeout=300)  # the page started it
    at.run()
    assert not at.exception and not any("Provisional" in w.value for w in at.warning)
    assert "(provisional;" not in at.success[0].value and "Every block" in [h.value for h in at.subheader]
    assert at.session_state[ui.DEPTH] == ui.study(selection).layers.recommend(settings).depth_


def test_a_first_visit_prefetches_every_first_answer_before_the_exact_ones(monkeypatch):
    import slsviz.study.features as features_module
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import VISIT

    reads, real = [], features_module.feature_bank
    monkeypatch.setattr(features_module, "feature_bank", lambda *a, **k: reads.append((a[2], k["limit"])) or real(*a, **k))
    study, settings = _study(), AnalysisSettings(projection="pca")
    jobs = [study.prefetch(page, settings) for page in VISIT]
    jobs[-1].result(timeout=300)
    _wait(study)
    assert [job.done() for job in jobs] == [True] * 3
    # the provisional recommendation's images, the first test images, then the rest of train and val for the
    # exact recommendation, and only then the rest of the test split: the exact accuracies wait in the same queue
    assert reads == [("train", 128), ("val", 64), ("test", 128), ("train", None), ("val", None), ("test", None)]
    assert study.layers.ready(settings) and study.depths.ready()


def test_the_prune_page_says_what_is_provisional_and_then_shows_the_exact_figures(tasks, monkeypatch):
    """...and, where the device computes bf16 natively, times in bf16 beside fp32 at the user's choice."""
    from streamlit.testing.v1 import AppTest

    import slsviz.device
    from slsviz.app import ui
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Selection

    # as on a GPU or an AMX CPU (CPU autocast runs bf16 anywhere, emulated here)
    monkeypatch.setattr(slsviz.device, "bf16_native", lambda device: True)
    app = str(Path(__file__).resolve().parents[1] / "app.py")
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
    # the timing precision: fp32 first, bf16 on demand with the fp32 figures beside
    assert at.radio(key="slsviz.prune.precision").options == ["fp32", "bf16"]
    assert "fp32, all depths timed" in next(c.value for c in at.caption if "Measured on" in c.value)
    at.radio(key="slsviz.prune.precision").set_value("bf16").run()
    assert not at.exception and not at.error
    caption = next(c.value for c in at.caption if "Measured on" in c.value)
    fp32 = ui.study(selection).timing.benchmarks()
    assert "bf16, all depths timed" in caption and f"{fp32[12].images_per_s:.1f} img/s for the full model" in caption


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

