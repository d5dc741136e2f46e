"""Sessions share one process: the same thing is computed once, different things side by side, a
measurement has the machine alone, and every failure reaches whoever waits (slsviz.scheduler)."""

from __future__ import annotations

import gc
import threading
import weakref
from concurrent.futures import wait

import numpy as np
import pytest
from helpers import random_backbone

from slsviz.study import features as features_module
from slsviz.data import load_digits
from slsviz.layers import analysis as analysis_module
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.scheduler import SCHEDULER, Memo, Parallel, Scheduler
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
    memo, calls, computing, release = Memo(), [], threading.Event(), threading.Event()

    def slow():
        calls.append(1)
        computing.set()
        release.wait(10)
        return 42

    def waiter():
        computing.wait(10)  # asks while the first caller computes
        return memo.get("k", lambda: pytest.fail("computed twice"))

    def releaser():
        computing.wait(10)
        release.set()

    assert _in_threads(lambda: memo.get("k", slow), waiter, waiter, releaser)[:3] == [42] * 3
    assert len(calls) == 1


def test_different_keys_do_not_queue_behind_each_other():
    memo, both = Memo(), threading.Barrier(2, timeout=10)

    def meet(value):
        both.wait()  # only passes if the other key is being computed at the same time
        return value

    assert _in_threads(lambda: memo.get("a", lambda: meet(1)), lambda: memo.get("b", lambda: meet(2))) == [1, 2]


def test_a_failure_reaches_every_waiter_and_the_next_caller_tries_again():
    memo, computing, release = Memo(), threading.Event(), threading.Event()

    def fail():
        computing.set()
        release.wait(10)
        raise ZeroDivisionError("boom")

    def waiter():
        computing.wait(10)
        try:
            memo.get("k", lambda: pytest.fail("a waiter computed it again instead of hearing the failure"))
        except ZeroDivisionError as exc:
            return str(exc)

    def first():
        with pytest.raises(ZeroDivisionError):
            memo.get("k", fail)

    def releaser():
        computing.wait(10)
        release.set()

    assert _in_threads(first, waiter, releaser)[1] == "boom"
    assert memo.get("k", lambda: 7) == 7


def test_a_computation_stopped_by_its_caller_is_taken_over_by_a_waiter():
    """A page the user left stops its computation (Streamlit raises a BaseException in it): another
    session waiting for the same key computes it rather than failing."""
    memo, computing, release = Memo(), threading.Event(), threading.Event()

    class Stopped(BaseException):
        pass

    def stopped():
        computing.set()
        release.wait(10)
        raise Stopped

    def first():
        with pytest.raises(Stopped):
            memo.get("k", stopped)

    def waiter():
        computing.wait(10)
        release.set()
        return memo.get("k", lambda: 5)

    assert _in_threads(first, waiter)[1] == 5


def test_a_measurement_waits_for_heavy_work_and_holds_new_heavy_work_back():
    load, log = Scheduler(), []
    heavy_running, release, timer_asking = threading.Event(), threading.Event(), threading.Event()

    def heavy():
        with load.heavy():
            log.append("heavy starts")
            heavy_running.set()
            release.wait(10)
            log.append("heavy ends")

    def timing():
        heavy_running.wait(10)
        timer_asking.set()
        with load.timing():
            log.append("timing starts")
            log.append("timing ends")

    def late_heavy():
        timer_asking.wait(10)
        with load.heavy():
            log.append("late heavy")

    def releaser():
        timer_asking.wait(10)
        release.set()

    _in_threads(heavy, timing, late_heavy, releaser)
    assert log.index("heavy ends") < log.index("timing starts") < log.index("timing ends")


def test_heavy_work_nests_and_a_measurement_inside_heavy_work_is_refused():
    load = Scheduler()
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


@pytest.mark.parametrize("name", ["features", "maps", "probe"])
def test_a_studys_heavy_work_waits_while_a_benchmark_measures(tiny, name):
    backbone, data, model = tiny
    study = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=2)
    x = np.random.default_rng(0).normal(size=(2, 30, 8)).astype(np.float32)
    y = np.arange(30) % 3
    work = {"features": lambda: study.features.bank("train"),
            "maps": lambda: LayerAnalysis(x, y, AnalysisSettings(projection="pca"), runner=Parallel(2)).maps(),
            "probe": lambda: LayerAnalysis(x, y, AnalysisSettings(metric="probe_accuracy"), probe=(x, y, x, y),
                                           runner=Parallel(1)).score(1)}[name]
    measuring, release, finished = threading.Event(), threading.Event(), threading.Event()

    def measure():
        with SCHEDULER.timing():
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


def test_a_studys_timing_waits_for_heavy_work(tiny):
    backbone, data, model = tiny
    study = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1, timing_s=0.01)
    asked, log = threading.Event(), []

    def measure():
        asked.set()
        study.timing.benchmarks()
        log.append("timed")

    def heavy():
        with SCHEDULER.heavy():
            asked.wait(10)
            log.append("heavy ends")  # the measurement asked before this, and waited

    _in_threads(heavy, measure)
    assert log == ["heavy ends", "timed"]


def test_two_sessions_extract_one_split_once_and_two_splits_side_by_side(tiny, monkeypatch):
    backbone, data, model = tiny
    study = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1)
    calls, both, real = [], threading.Barrier(2, timeout=10), features_module.feature_bank

    def spy(model, data, split, *args, **kwargs):
        calls.append(split)
        if split in ("val", "test"):
            both.wait()  # val and test only pass together: they are computed side by side
        return real(model, data, split, *args, **kwargs)

    monkeypatch.setattr(features_module, "feature_bank", spy)
    first = _in_threads(*[lambda: study.features.bank("train")] * 3)
    assert calls == ["train"] and first[0] is first[1] is first[2]
    _in_threads(lambda: study.features.bank("val"), lambda: study.features.bank("test"))
    assert sorted(calls) == ["test", "train", "val"]


def test_two_sessions_draw_each_map_once(monkeypatch):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(4, 40, 6)).astype(np.float32), np.arange(40) % 2
    drawn, real, lock = [], analysis_module.project_layers, threading.Lock()

    def spy(features, method, *, layers, **kwargs):
        with lock:
            drawn.extend(layers)
        return real(features, method, layers=layers, **kwargs)

    monkeypatch.setattr(analysis_module, "project_layers", spy)
    shared = LayerAnalysis(features, labels, AnalysisSettings(projection="pca"), runner=Parallel(2))
    maps = _in_threads(shared.maps, shared.maps, lambda: shared.recommend(lazy=True), shared.table)
    assert sorted(drawn) == [1, 2, 3, 4]
    np.testing.assert_array_equal(maps[0][2], maps[1][2])


def test_a_failed_background_job_reaches_its_future_and_whoever_waits(tiny, monkeypatch):
    """Background work swallowed every exception: a page waiting for it computed it again, and nobody heard."""
    backbone, data, model = tiny
    study = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1)

    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(features_module, "feature_bank", broken)
    job = study.prefetch("layers", AnalysisSettings(projection="pca"))
    assert isinstance(job.exception(timeout=60), OSError)
    with pytest.raises(OSError, match="disk gone"):
        study.features.bank("train")


def test_a_study_dropped_by_the_page_cache_is_freed_with_work_still_queued(tiny, monkeypatch):
    """The background thread kept the last job's closure: a study dropped from the cache stayed in memory."""
    from slsviz.study.layers import LayerStudy

    backbone, data, model = tiny
    running, release = threading.Event(), threading.Event()

    def slow_recommend(self, settings):
        running.set()
        assert release.wait(30)

    monkeypatch.setattr(LayerStudy, "recommend", slow_recommend)
    study = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1)
    first = study.prefetch("layers", AnalysisSettings(projection="pca"))
    assert running.wait(30)
    queued = study.prefetch("prune")  # waits behind the first job of the same study
    ref = weakref.ref(study)
    del study
    release.set()
    first.result(timeout=30)
    assert queued in wait([queued], timeout=30).done  # wait() hears of the cancellation, as result() does
    gc.collect()
    assert ref() is None
    assert queued.cancelled()  # never ran for a study that is gone
    done = Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1)
    done.prefetch("layers", AnalysisSettings(projection="pca")).result(timeout=60)
    ref = weakref.ref(done)
    del done
    gc.collect()
    assert ref() is None  # nor after its work ran


def test_two_studies_background_work_runs_side_by_side(tiny, monkeypatch):
    """One session's long background work (an exact table over a big test split) does not hold another's."""
    from slsviz.study.layers import LayerStudy

    backbone, data, model = tiny
    both = threading.Barrier(2, timeout=30)
    monkeypatch.setattr(LayerStudy, "recommend", lambda self, settings: both.wait())  # passes only together
    studies = [Study(LoadedTask(backbone, model, None, data), limit=16, use_cache=False, workers=1) for _ in range(2)]
    jobs = [study.prefetch("layers", AnalysisSettings(projection="pca")) for study in studies]
    assert all(job.exception(timeout=60) is None for job in jobs)
