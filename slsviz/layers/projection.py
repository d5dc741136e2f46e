"""2-D maps of per-layer features: t-SNE (the paper's procedure), UMAP (the viewing default) and PCA.

Every map is min-max scaled to ``[0, 1]`` on each axis, as the paper does for t-SNE, so that cluster
scores computed on a 2-D map (Calinski-Harabasz and Davies-Bouldin are not scale invariant) can be
compared across layers and across methods.

:func:`project_layers` maps many layers, one after the other, and can keep each map in the disk
cache (:class:`~slsviz.storage.ArrayCache` ``"maps"``) so that a map is computed once per features,
method and settings.
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from slsviz import defaults
from slsviz.choices import PROJECTIONS
from slsviz.errors import DataError, SlsvizError
from slsviz.progress import Progress
from slsviz.storage import ArrayCache, content_key


def default_workers() -> int:
    """Maps computed at once when a caller wants every core: one per core, each on one thread.

    t-SNE spends its time in compiled code that releases the GIL, so threads scale (2 maps of
    N=1000, D=384 on 2 idle cores: 3.9 s at once vs 6.5 s one after the other).
    """
    return max(1, min(os.cpu_count() or 1, 16))

# Bump when the stored map format or the projection code changes, to orphan old cache entries.
_CACHE_FORMAT = 1
_MAPS = ArrayCache("maps", "map")
_UMAP_PARAMS = ("n_neighbors", "min_dist", "metric")
_MIN_POINTS = 3


def project(
    features: np.ndarray,
    method: str = defaults.PROJECTION,
    *,
    seed: int = 0,
    n_neighbors: int = defaults.UMAP_N_NEIGHBORS,
    min_dist: float = defaults.UMAP_MIN_DIST,
    metric: str = defaults.UMAP_METRIC,
) -> np.ndarray:
    """Project ``features`` to 2-D and min-max scale each axis to ``[0, 1]``.

    ``"tsne"`` is exactly the paper's procedure: ``TSNE(n_components=2, init="pca",
    random_state=seed)`` with all other settings at scikit-learn's defaults (perplexity 30), then
    ``(x - min) / (max - min)`` per axis. scikit-learn refuses a perplexity of ``N`` or more, so for
    ``N <= 30`` points the perplexity is lowered to ``N - 1``; nothing else ever changes.

    ``"umap"`` runs ``umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, N - 1), min_dist,
    metric, random_state=seed)``; ``"pca"`` runs ``PCA(2, random_state=seed)``. Both are scaled the
    same way as t-SNE so that scores on any 2-D map are comparable.

    The map is computed on one BLAS/OpenMP thread: the result is the same, and multi-threaded
    t-SNE slows down by orders of magnitude when another job keeps the cores busy. To use several
    cores, map several layers at once (the app's ``slsviz.scheduler.Parallel`` does).

    Args:
        features: Points, shape (N, D), with N >= 3 and D >= 2, all finite.
        method: One of :data:`PROJECTIONS`.
        seed: Random state of the projection; the same seed gives the same map. With
            ``init="pca"`` t-SNE's seed only reaches the randomized SVD of its initialisation,
            so different seeds usually give the very same t-SNE map.
        n_neighbors: UMAP's neighbourhood size (capped at N - 1). Ignored by t-SNE and PCA.
        min_dist: UMAP's minimum distance between embedded points. Ignored by t-SNE and PCA.
        metric: UMAP's input metric. Ignored by t-SNE and PCA.

    Returns:
        The map, float32, shape (N, 2), each axis spanning ``[0, 1]`` (an axis on which all points
        coincide is all zeros).

    Raises:
        SlsvizError: unknown method or invalid UMAP settings.
        DataError: features that are not a finite 2-D array of at least 3 points and 2 dimensions,
            or whose points are all identical.
    """
    _check_method(method)
    x = _check_features(features)
    n = x.shape[0]
    # One thread gives the same map; t-SNE's OpenMP threads stall on busy cores (a 90-point map
    # took 33 s instead of 0.15 s beside a training job). Maps run side by side for more cores.
    # BLAS pools are the process's: slsviz.scheduler holds BLAS at one thread for good, so that this
    # limit, taken in several threads at once, only ever saves and restores 1.
    with threadpool_limits(limits=1):
        if method == "tsne":
            # Only perplexity may differ from the paper, and only where scikit-learn would refuse it.
            kwargs: dict[str, Any] = {}
            if n <= 30:
                kwargs["perplexity"] = float(n - 1)
            embedding = TSNE(n_components=2, init="pca", random_state=seed, **kwargs).fit_transform(x)
        elif method == "umap":
            embedding = _umap(x, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric)
        else:
            embedding = PCA(2, random_state=seed).fit_transform(x)
    embedding = np.asarray(embedding, dtype=np.float64)
    if not np.isfinite(embedding).all():
        raise DataError(
            f"The {method} map of these features contains NaN or infinite coordinates; the features are "
            "probably degenerate (e.g. all points identical). Check the features or try another method."
        )
    return _minmax(embedding).astype(np.float32)


def _umap(x: np.ndarray, *, seed: int, n_neighbors: int, min_dist: float, metric: str) -> np.ndarray:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise SlsvizError(f"UMAP's n_neighbors must be an integer of at least 2, not {n_neighbors!r}.")
    if not np.isfinite(min_dist) or min_dist < 0:
        raise SlsvizError(f"UMAP's min_dist must be a number >= 0, not {min_dist!r}.")
    import umap  # Imported here: it pulls in numba, which the rest of slsviz does not need.

    n = x.shape[0]
    kwargs: dict[str, Any] = {}
    if n <= 3:
        # UMAP's spectral initialisation asks scipy for 3 eigenvectors, impossible with 3 points.
        kwargs["init"] = "random"
    # n_jobs=1 is what random_state forces anyway; saying so avoids UMAP's warning about it.
    model = umap.UMAP(
        n_components=2,
        n_neighbors=int(min(n_neighbors, n - 1)),
        min_dist=float(min_dist),
        metric=metric,
        random_state=seed,
        n_jobs=1,
        **kwargs,
    )
    try:
        with warnings.catch_warnings():
            # Raised while UMAP lays out disconnected components (i.e. well-separated classes),
            # which it handles itself; it says nothing the user could act on.
            warnings.filterwarnings("ignore", message="Graph is not fully connected", category=UserWarning)
            return model.fit_transform(x)
    except ValueError as exc:
        if "metric" in str(exc).lower():
            raise SlsvizError(f"UMAP cannot use metric {metric!r}: {exc}") from exc
        raise


def _minmax(points: np.ndarray) -> np.ndarray:
    low = points.min(axis=0)
    span = points.max(axis=0) - low
    # An axis on which all points coincide would divide 0 by 0; map it to 0 instead.
    span[span == 0] = 1.0
    return (points - low) / span


def _check_method(method: str) -> None:
    if method not in PROJECTIONS:
        raise SlsvizError(f"Unknown projection method {method!r}: use one of {', '.join(PROJECTIONS)}.")


def _check_features(features: np.ndarray) -> np.ndarray:
    try:
        x = np.asarray(features)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"Features must be a numeric array of shape (N, D): {exc}") from exc
    if x.ndim != 2:
        raise DataError(
            f"Features must be a 2-D array of shape (N points, D dimensions), not shape {x.shape}; "
            "pass one layer's features at a time (project_layers takes (L, N, D))."
        )
    n, d = x.shape
    if n < _MIN_POINTS:
        raise DataError(f"A 2-D map needs at least {_MIN_POINTS} points, got {n}: use more images.")
    if d < 2:
        raise DataError(f"A 2-D map needs features of at least 2 dimensions, got {d}.")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"Features contain NaN or infinite values (first at point {bad[0]}, dimension {bad[1]}); "
            "check the model's outputs (e.g. a diverged checkpoint) before projecting."
        )
    # scikit-learn's t-SNE crashes the whole process (segmentation fault) on such input.
    if (x == x[0]).all():
        raise DataError(
            f"All {n} points have identical features, so there is nothing to map; check that the "
            "features come from different images and a working model."
        )
    return x


def project_layers(
    features: np.ndarray,
    method: str = defaults.PROJECTION,
    *,
    layers: list[int] | None = None,
    seed: int = 0,
    cache_key: str | None = None,
    progress: Progress | None = None,
    **params: Any,
) -> dict[int, np.ndarray]:
    """2-D maps of several layers' features, one after the other, optionally cached on disk.

    With ``cache_key``, each layer's map is kept in the disk cache ``"maps"`` under the sha256 of the
    key, method, the settings the method uses, library version and layer, and is
    read back instead of recomputed on later calls. The key must identify the features (e.g. the
    feature banks' keys); a wrong key returns wrong maps. To map several layers at once, call it
    per layer from several threads (:class:`slsviz.layers.analysis.LayerAnalysis` with the app's
    runner does); maps do not depend on it.

    Args:
        features: Features of every layer, shape (L, N, D).
        method: One of :data:`PROJECTIONS`.
        layers: 1-based layers to map; ``None`` maps all ``L``.
        seed: Random state of every projection.
        cache_key: Identifies ``features`` for the disk cache; ``None`` disables the cache.
        progress: Called as ``progress(done, total)`` after each layer, cached ones included.
        **params: UMAP settings passed on to :func:`project`: ``n_neighbors``, ``min_dist``, ``metric``.

    Returns:
        1-based layer mapped to its map, float32 (N, 2), in ascending layer order.

    Raises:
        SlsvizError: unknown method, setting or layer.
        DataError: features that are not a finite (L, N, D) array (see :func:`project`).
    """
    _check_method(method)
    unknown = sorted(set(params) - set(_UMAP_PARAMS))
    if unknown:
        raise SlsvizError(
            f"Unknown projection setting(s) {', '.join(unknown)}: the settings are {', '.join(_UMAP_PARAMS)}."
        )
    stack = np.asarray(features)
    if stack.ndim != 3:
        raise DataError(f"Layer features must have shape (L layers, N points, D dimensions), not {stack.shape}.")
    num_layers = stack.shape[0]
    if num_layers == 0:
        raise DataError("Layer features hold no layers (L = 0): extract at least one layer's features first.")
    wanted = _check_layers(layers, num_layers)
    settings = _settings(method, seed, params)
    maps: dict[int, np.ndarray] = {}
    for done, layer in enumerate(wanted, start=1):
        key = _map_key(cache_key, method, settings, layer) if cache_key is not None else None
        cached = _load_map(key, stack.shape[1]) if key is not None else None
        if cached is None:
            try:
                _check_features(stack[layer - 1])
            except DataError as exc:
                raise DataError(f"Layer {layer}: {exc}") from exc
            cached = project(stack[layer - 1], method, seed=seed, **params)
            if key is not None:
                _MAPS.store(key, {"map": cached})
        maps[layer] = cached
        if progress is not None:
            progress(done, len(wanted))
    return maps


def _check_layers(layers: list[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(1, num_layers + 1))
    wanted = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= num_layers:
            raise SlsvizError(f"Layer {layer!r} does not exist: layers are numbered 1 to {num_layers}.")
        wanted.append(int(layer))
    return sorted(set(wanted))


def _settings(method: str, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    # Only what changes this method's map goes into the key, so e.g. moving UMAP's n_neighbors
    # does not invalidate cached t-SNE maps.
    settings: dict[str, Any] = {"seed": int(seed)}
    if method == "umap":
        umap_defaults = {"n_neighbors": defaults.UMAP_N_NEIGHBORS, "min_dist": defaults.UMAP_MIN_DIST,
                         "metric": defaults.UMAP_METRIC}
        settings.update({name: params.get(name, default) for name, default in umap_defaults.items()})
    return settings


def _library_version(method: str) -> str:
    # A new release may draw a different map from the same seed.
    package = "umap-learn" if method == "umap" else "scikit-learn"
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _map_key(cache_key: str, method: str, settings: dict[str, Any], layer: int) -> str:
    return content_key({"format": _CACHE_FORMAT, "cache_key": cache_key, "method": method, "settings": settings,
                        "library": _library_version(method), "layer": layer}, length=64)


def _load_map(key: str, num_points: int) -> np.ndarray | None:
    found = _MAPS.load(key)
    if found is None:
        return None
    loaded = found[0].get("map")
    if loaded is None or loaded.shape != (num_points, 2) or loaded.dtype != np.float32:
        return None
    return loaded
