"""Sessions share one process: the same thing is computed once, different things side by side, and a
measurement has the machine alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import random_backbone

from slsviz import study as study_module
from slsviz.data import Preprocess, load_digits, make_loader
from slsviz.layers import analysis as analysis_module
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.layers.features import extract_features
from slsviz.layers.projection import project
from slsviz.layers.scores import probe_accuracy
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.pruning import bench
from slsviz.sharing import WORKLOAD, OncePerKey, Workload
from slsviz.study import LoadedTask, Study


def _in_threads(*calls, timeout: float = 60.0) -> list:
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    if errors:
        raise errors[0]
    return results


def test_the_same_key_is_computed_once_while_callers_wait():
    memo, calls = OncePerKey(), []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return 42

    assert _in_threads(*[lambda: memo.get("k", slow)] * 4) == [42] * 4
    assert len(calls) == 1


def test_different_keys_do_not_queue_behind_each_other():
    memo, both = OncePerKey(), threading.Barrier(2, timeout=10)

    def meet(value):
        both.wait()  # only passes if the other key is being computed at the same time
        return value

    assert _in_threads(lambda: memo.get("a", lambda: meet(1)), lambda: memo.get("b", lambda: meet(2))) == [1, 2]


def test_a_failed_computation_is_tried_again():
    memo = OncePerKey()
    with pytest.raises(ZeroDivisionError):
        memo.get("k", lambda: 1 / 0)
    assert memo.get("k", lambda: 7) == 7


def test_a_measurement_waits_for_heavy_work_and_holds_new_heavy_work_back():
    load, log = Workload(), []
    heavy_running, release = threading.Event(), threading.Event()

    def heavy():
        with load.heavy():
            log.append("heavy starts")
            heavy_running.set()
            release.wait(10)
            log.append("heavy ends")

    def timing():
        heavy_running.wait(10)
        with load.timing():
            log.append("timing starts")
            time.sleep(0.2)
            log.append("timing ends")

    def late_heavy():
        heavy_running.wait(10)
        time.sleep(0.1)  # the measurement is waiting by now
        release.set()
        with load.heavy():
            log.append("late heavy")

    _in_threads(heavy, timing, late_heavy)
    assert log.index("heavy ends") < log.index("timing starts") < log.index("timing ends") < log.index("late heavy")


def test_heavy_work_nests_and_a_measurement_inside_heavy_work_is_refused():
    load = Workload()
    with load.heavy(), load.heavy():
        with pytest.raises(RuntimeError, match="inside heavy work"):
            with load.timing():
                pass
    with load.timing(), load.heavy():  # the measuring thread's own work does not wait for itself
        pass


@pytest.fixture(scope="module")
def tiny():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=3)
    data = load_digits()
    return backbone, data, build_task_model(backbone, PetlConfig("convpass"), 10)


@pytest.mark.parametrize("name", ["project", "extract_features", "probe_accuracy"])
def test_heavy_work_waits_while_a_benchmark_measures(tiny, name):
    backbone, data, model = tiny
    x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    y = np.arange(30) % 3
    work = {"project": lambda: project(x, "pca"),
            "extract_features": lambda: extract_features(model, make_loader(
                data, "train", Preprocess(32, backbone.mean, backbone.std), 8, limit=8)),
            "probe_accuracy": lambda: probe_accuracy(x, y, x, y)}[name]
    measuring, release, finished = threading.Event(), threading.Event(), threading.Event()

    def measure():
        with WORKLOAD.timing():
            measuring.set()
            release.wait(10)

    def heavy():
        measuring.wait(10)
        work()
        finished.set()

    def referee():
        measuring.wait(10)
        assert not finished.wait(0.5), f"{name} ran during a measurement"
        release.set()

    _in_threads(measure, heavy, referee)
    assert finished.is_set()


def test_benchmarks_take_the_machine_alone(tiny):
    backbone, _, model = tiny
    inside = []
    with WORKLOAD.heavy():
        started = threading.Event()

        def measure():
            started.set()
            inside.append(bench.benchmark_models({1: model}, 32, time_budget_s=0.01, rounds=1, warmup_steps=1))

        t = threading.Thread(target=measure)
        t.start()
        started.wait(10)
        time.sleep(0.3)
        assert not inside  # still waiting for this heavy work
    t.join(60)
    assert inside and inside[0][1].steps >= 1


def test_two_sessions_extract_one_split_once_and_two_splits_side_by_side(tiny, monkeypatch):
    backbone, data, model = tiny
    study = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1)
    calls, both, real = [], threading.Barrier(2, timeout=10), study_module.feature_bank

    def spy(model, data, split, *args, **kwargs):
        calls.append(split)
        if split in ("val", "test"):
            both.wait()  # val and test only pass together: they are computed side by side
        return real(model, data, split, *args, **kwargs)

    monkeypatch.setattr(study_module, "feature_bank", spy)
    first = _in_threads(*[lambda: study.bank("train")] * 3)
    assert calls == ["train"] and first[0] is first[1] is first[2]
    _in_threads(lambda: study.bank("val"), lambda: study.bank("test"))
    assert sorted(calls) == ["test", "train", "val"]


def test_two_sessions_draw_each_map_once(monkeypatch):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(4, 40, 6)).astype(np.float32), np.arange(40) % 2
    drawn, real = [], analysis_module.project_layers

    def spy(features, method, *, layers, **kwargs):
        drawn.extend(layers)
        time.sleep(0.1)
        return real(features, method, layers=layers, **kwargs)

    monkeypatch.setattr(analysis_module, "project_layers", spy)
    shared = LayerAnalysis(features, labels, AnalysisSettings(projection="pca"), workers=2)
    maps = _in_threads(shared.maps, shared.maps, lambda: shared.recommend(lazy=True), shared.table)
    assert sorted(drawn) == [1, 2, 3, 4]
    np.testing.assert_array_equal(maps[0][2], maps[1][2])
