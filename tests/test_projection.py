"""2-D maps: the paper's t-SNE settings, scaling, determinism, validation, per-layer maps and caching."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import features_checksum
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from slsviz import scheduler
from slsviz.errors import DataError, SlsvizError
from slsviz.layers import analysis as analysis_module
from slsviz.layers import projection
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.layers.projection import (
    PROJECTIONS,
    project,
    project_layers,
)
from slsviz.scheduler import Parallel


def blobs(n_per_class: int = 40, n_classes: int = 3, dim: int = 16, spread: float = 20.0, seed: int = 0):
    """Well-separated Gaussian blobs: (points float32 (n, dim), labels int (n,))."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    points = centers[labels] + rng.normal(size=(len(labels), dim))
    return points.astype(np.float32), labels


def layer_stack(num_layers: int = 3, n_per_class: int = 20, dim: int = 8):
    """(L, N, D) features whose classes separate more in later layers."""
    rng = np.random.default_rng(1)
    points, labels = blobs(n_per_class=n_per_class, dim=dim, spread=4.0)
    noise = rng.normal(scale=4.0, size=(num_layers, *points.shape))
    weights = np.linspace(0.0, 1.0, num_layers)[:, None, None]
    return (weights * points + (1 - weights) * noise).astype(np.float32), labels


@pytest.fixture
def tsne_spy(monkeypatch):
    """Replace the module's TSNE by a factory that records the keyword arguments it is given."""
    calls: list[dict] = []

    def spy(*args, **kwargs):
        assert not args, "TSNE should be built from keyword arguments only"
        calls.append(dict(kwargs))
        return TSNE(**kwargs)

    monkeypatch.setattr(projection, "TSNE", spy)
    return calls


def test_the_default_map_is_the_papers_tsne_everywhere():
    points, _ = blobs(n_per_class=15)
    assert np.array_equal(project(points), project(points, "tsne"))
    from slsviz.cli import build_parser
    from slsviz.layers.analysis import AnalysisSettings

    cli = build_parser().parse_args(["analyze"])
    assert AnalysisSettings().projection == cli.projection == "tsne" and "tsne" in PROJECTIONS


def test_tsne_uses_exactly_the_papers_settings(tsne_spy):
    points, _ = blobs(n_per_class=15)  # N = 45 > perplexity 30: nothing needs adjusting
    project(points, "tsne")
    assert tsne_spy == [{"n_components": 2, "init": "pca", "random_state": 0}]
    # Every other setting is scikit-learn's default.
    built = TSNE(**tsne_spy[0]).get_params()
    defaults = TSNE().get_params()
    changed = {key for key in defaults if built[key] != defaults[key]}
    assert changed == {"random_state"}  # n_components=2 and init="pca" are the defaults too
    assert defaults["perplexity"] == 30.0


def test_tsne_passes_the_seed(tsne_spy):
    points, _ = blobs(n_per_class=15)
    project(points, "tsne", seed=7)
    assert tsne_spy[0]["random_state"] == 7


def test_tsne_lowers_perplexity_only_when_sklearn_would_refuse(tsne_spy):
    points, _ = blobs(n_per_class=4)  # N = 12 <= 30
    out = project(points, "tsne")
    assert tsne_spy == [{"n_components": 2, "init": "pca", "random_state": 0, "perplexity": 11.0}]
    assert out.shape == (12, 2)


def test_tsne_is_scaled_to_unit_square_and_deterministic():
    points, _ = blobs(n_per_class=15)
    first = project(points, "tsne")
    np.testing.assert_array_equal(first.min(axis=0), [0.0, 0.0])
    np.testing.assert_array_equal(first.max(axis=0), [1.0, 1.0])
    np.testing.assert_array_equal(project(points, "tsne"), first)


def test_tsne_matches_sklearn_followed_by_minmax():
    points, _ = blobs(n_per_class=15)
    with threadpool_limits(limits=1):  # only for speed on busy cores: the map is the same
        raw = TSNE(n_components=2, init="pca", random_state=0).fit_transform(points).astype(np.float64)
    expected = (raw - raw.min(axis=0)) / (raw.max(axis=0) - raw.min(axis=0))
    np.testing.assert_allclose(project(points, "tsne"), expected, atol=1e-6)


@pytest.mark.parametrize("method", PROJECTIONS)
def test_every_method_gives_a_unit_square_float32_map(method):
    points, _ = blobs(n_per_class=20)
    out = project(points, method)
    assert out.shape == (60, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.min(axis=0), 0.0, atol=1e-7)
    np.testing.assert_allclose(out.max(axis=0), 1.0, atol=1e-6)


@pytest.mark.parametrize("method", PROJECTIONS)
def test_every_method_keeps_separated_blobs_apart(method):
    points, labels = blobs(n_per_class=30)
    out = project(points, method)
    assert silhouette_score(out, labels) > 0.5
    shuffled = np.random.default_rng(3).permutation(labels)
    assert abs(silhouette_score(out, shuffled)) < 0.1


@pytest.mark.parametrize("method", ["umap", "pca"])
def test_umap_and_pca_are_deterministic_for_a_seed(method):
    points, _ = blobs(n_per_class=20)
    np.testing.assert_array_equal(project(points, method, seed=3), project(points, method, seed=3))


def test_umap_caps_n_neighbors_and_handles_tiny_inputs():
    points, _ = blobs(n_per_class=2)  # N = 6 < default n_neighbors 15
    assert project(points, "umap").shape == (6, 2)
    out = project(points[:3], "umap")  # spectral initialisation is impossible with 3 points
    assert out.shape == (3, 2) and np.isfinite(out).all()


def test_constant_axis_maps_to_zero_instead_of_nan():
    points = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    np.testing.assert_array_equal(projection._minmax(points), [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize("method", PROJECTIONS)
def test_identical_points_are_refused(method):
    # Unguarded, scikit-learn's t-SNE kills the process with a segmentation fault on this input.
    with pytest.raises(DataError, match="All 6 points have identical features"):
        project(np.ones((6, 3)), method)


def test_unknown_method_lists_valid_ones():
    points, _ = blobs(n_per_class=5)
    with pytest.raises(SlsvizError, match="umap, tsne, pca"):
        project(points, "mds")


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros((2, 3, 4)), "2-D array"),
        (np.zeros(10), "2-D array"),
        (np.random.default_rng(0).normal(size=(2, 4)), "at least 3 points"),
        (np.random.default_rng(0).normal(size=(10, 1)), "at least 2 dimensions"),
    ],
)
def test_bad_shapes_are_explained(features, message):
    with pytest.raises(DataError, match=message):
        project(features, "pca")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused(bad):
    points, _ = blobs(n_per_class=5)
    points[4, 2] = bad
    with pytest.raises(DataError, match="NaN or infinite.*point 4, dimension 2"):
        project(points, "umap")


def test_bad_umap_settings_are_explained():
    points, _ = blobs(n_per_class=5)
    with pytest.raises(SlsvizError, match="n_neighbors"):
        project(points, "umap", n_neighbors=1)
    with pytest.raises(SlsvizError, match="min_dist"):
        project(points, "umap", min_dist=-0.5)
    with pytest.raises(SlsvizError, match="UMAP cannot use metric 'nope'"):
        project(points, "umap", metric="nope")


def test_features_checksum_depends_on_dtype_shape_and_values():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = features_checksum(a)
    assert len(key) == 16 and int(key, 16) >= 0
    assert features_checksum(a.copy()) == key
    assert features_checksum(a.reshape(4, 3)) != key
    assert features_checksum(a.astype(np.float64)) != key
    b = a.copy()
    b[0, 0] += 1
    assert features_checksum(b) != key
    assert features_checksum(np.asfortranarray(a)) == key  # same values, other memory layout


def test_project_layers_maps_every_layer_in_order():
    features, labels = layer_stack()
    maps = project_layers(features, "pca")
    assert list(maps) == [1, 2, 3]
    for layer, out in maps.items():
        np.testing.assert_array_equal(out, project(features[layer - 1], "pca"))
    # Later layers separate the classes better, and the maps show it.
    assert silhouette_score(maps[3], labels) > silhouette_score(maps[1], labels)


def test_project_layers_subset_and_progress():
    features, _ = layer_stack(num_layers=4)
    calls = []
    maps = project_layers(features, "pca", layers=[4, 2], progress=lambda done, total: calls.append((done, total)))
    assert list(maps) == [2, 4]
    assert calls == [(1, 2), (2, 2)]


def test_project_layers_validation():
    features, _ = layer_stack()
    with pytest.raises(SlsvizError, match="numbered 1 to 3"):
        project_layers(features, "pca", layers=[0])
    with pytest.raises(SlsvizError, match="numbered 1 to 3"):
        project_layers(features, "pca", layers=[4])
    with pytest.raises(SlsvizError, match="umap, tsne, pca"):
        project_layers(features, "isomap")
    with pytest.raises(DataError, match=r"\(L layers, N points, D dimensions\)"):
        project_layers(features[0], "pca")
    with pytest.raises(SlsvizError, match="perplexity"):
        project_layers(features, "tsne", perplexity=5)
    broken = features.copy()
    broken[1, 0, 0] = np.nan
    with pytest.raises(DataError, match="Layer 2: .*NaN"):
        project_layers(broken, "pca")


def test_project_layers_cache_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))
    features, _ = layer_stack()
    key = features_checksum(features)
    first = project_layers(features, "umap", cache_key=key, n_neighbors=5)
    stored = sorted((tmp_path / "maps").glob("*/map.npy"))
    assert len(stored) == 3
    assert not list((tmp_path / "maps").glob(".*"))  # atomic writes leave no temporary entries

    def fail(*args, **kwargs):
        raise AssertionError("a cached map was computed again")

    monkeypatch.setattr(projection, "project", fail)
    calls = []
    second = project_layers(features, "umap", cache_key=key, n_neighbors=5, progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert list(second) == [1, 2, 3]
    for layer in first:
        np.testing.assert_array_equal(second[layer], first[layer])
    # A different setting, method or key is a different map and must be computed.
    for kwargs in ({"n_neighbors": 6}, {"seed": 1}):
        with pytest.raises(AssertionError, match="computed again"):
            project_layers(features, "umap", cache_key=key, layers=[1], **{"n_neighbors": 5, **kwargs})
    with pytest.raises(AssertionError, match="computed again"):
        project_layers(features, "pca", cache_key=key, layers=[1])
    with pytest.raises(AssertionError, match="computed again"):
        project_layers(features, "umap", cache_key="other", layers=[1], n_neighbors=5)


def test_project_layers_cache_computes_only_missing_layers(monkeypatch, tmp_path):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))
    features, _ = layer_stack()
    project_layers(features, "pca", cache_key="k", layers=[2])
    computed = []
    real = projection.project

    def counting(x, *args, **kwargs):
        computed.append(x)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(projection, "project", counting)
    maps = project_layers(features, "pca", cache_key="k")
    assert list(maps) == [1, 2, 3]
    assert len(computed) == 2
    assert not any(np.array_equal(x, features[1]) for x in computed)


def test_project_layers_ignores_a_corrupt_cache_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))
    features, _ = layer_stack(num_layers=1)
    expected = project_layers(features, "pca", cache_key="k")[1]
    (path,) = (tmp_path / "maps").glob("*/map.npy")
    path.write_bytes(b"not a numpy file")
    with pytest.warns(UserWarning, match="unreadable cached map"):
        again = project_layers(features, "pca", cache_key="k")[1]
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(np.load(path), expected)  # and the file is repaired


def _count_ended(monkeypatch) -> threading.Semaphore:
    """Released as each map's job ends, its cache file written."""
    ended, real = threading.Semaphore(0), analysis_module.project_layers

    def counted(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        finally:
            ended.release()

    monkeypatch.setattr(analysis_module, "project_layers", counted)
    return ended


def _parallel_maps(features, method, *, progress=None, cache_key=None, workers=2):
    """Every layer's map through the app's runner: the scheduler's pool, several at once."""
    labels = np.arange(features.shape[1]) % 2
    analysis = LayerAnalysis(features, labels, AnalysisSettings(projection=method), cache_key=cache_key,
                             runner=Parallel(workers))
    return analysis.maps(progress=progress)


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_parallel_layers_equal_sequential_ones(method):
    features, _ = layer_stack(num_layers=2, n_per_class=12)
    sequential = project_layers(features, method)
    parallel = _parallel_maps(features, method)
    assert list(parallel) == [1, 2]
    for layer in sequential:
        np.testing.assert_array_equal(parallel[layer], sequential[layer])


def test_maps_in_threads_leave_the_thread_limits_as_they_were():
    from threadpoolctl import threadpool_info

    def limits():
        return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info())

    features, _ = layer_stack(num_layers=4, n_per_class=12)
    project(features[0], "tsne")  # the main thread limits and restores once first
    before = limits()
    together = threading.Barrier(2)

    def inside(layer):
        def job():
            together.wait(timeout=30)  # two maps start together
            return project(features[layer], "tsne")
        return job

    maps = Parallel(2).run_all({layer: inside(layer) for layer in (1, 2)})
    assert limits() == before
    np.testing.assert_array_equal(maps[1], project(features[1], "tsne"))


def test_a_stopped_caller_leaves_unstarted_maps_undone_and_keeps_finished_ones(tmp_path, monkeypatch):
    """The app user left the page: the maps not started are not computed (the machine is free at once);
    those under way are kept in the disk cache for the next caller."""
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))
    started, real, lock = [], projection.project, threading.Lock()
    first_ended = threading.Event()

    def slow(features, *args, **kwargs):
        with lock:
            started.append(1)
        result = real(features, *args, **kwargs)
        first_ended.wait(10)  # no map ends before the caller has left
        return result

    monkeypatch.setattr(projection, "project", slow)
    stack = np.random.default_rng(0).normal(size=(8, 40, 6)).astype(np.float32)

    def leave(done, total):
        first_ended.set()
        raise KeyboardInterrupt  # what Streamlit's StopException does: a BaseException from the callback

    ended = _count_ended(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _parallel_maps(stack, "pca", cache_key="k", progress=leave)
    for _ in range(len(started)):
        assert ended.acquire(timeout=30)  # what was under way has ended
    assert len(started) <= 2  # the two under way; none of the six not started
    kept = len(list((tmp_path / "maps").glob("*/map.npy")))
    assert kept == len(started) >= 1
    started.clear()
    _parallel_maps(stack, "pca", cache_key="k")
    assert len(started) == 8 - kept  # the kept ones are read back, the rest computed now


def test_a_caller_that_stops_while_maps_run_hears_of_them_before_any_ends(monkeypatch):
    """Progress beats while maps run, so a page left mid-way stops at once: no map beyond those under
    way is started, even when none has ended yet."""
    started, real, lock = [], projection.project, threading.Lock()
    monkeypatch.setattr(scheduler, "HEARTBEAT_S", 0.05)
    release = threading.Event()

    def slow(features, *args, **kwargs):
        with lock:
            started.append(1)
        release.wait(10)
        return real(features, *args, **kwargs)

    monkeypatch.setattr(projection, "project", slow)
    calls = []

    def leave(done, total):
        calls.append((done, total))
        raise KeyboardInterrupt

    stack = np.random.default_rng(0).normal(size=(6, 40, 6)).astype(np.float32)
    ended = _count_ended(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _parallel_maps(stack, "pca", progress=leave)
    release.set()
    for _ in range(len(started)):
        assert ended.acquire(timeout=30)
    assert calls == [(0, 6)]  # heard before the first map ended
    assert len(started) <= 2
