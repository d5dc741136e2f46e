"""The feature store: every block's features of each split, read once per study (and cached on disk
across runs, keyed on the content they come from)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slsviz import defaults
from slsviz.layers.features import FeatureBank, feature_bank
from slsviz.models.selection import LoadedTask
from slsviz.progress import Progress
from slsviz.scheduler import SCHEDULER, Memo
from slsviz.storage import atomic_path

SCORED = ("train", "val")  # what SLS scores: VTAB's train800val200, train first


class FeatureStore:
    """Features of every block for each split of one task on one dataset.

    Args:
        loaded: the backbone, task model and dataset.
        token: which token of each block is the layer's feature.
        batch_size: images per forward pass.
        limit: images per split (``None``: all).
        use_cache: read and write the disk cache of features (and of the maps drawn from them).
    """

    def __init__(self, loaded: LoadedTask, *, token: str = defaults.TOKEN, batch_size: int = defaults.BATCH_SIZE,
                 limit: int | None = None, use_cache: bool = True) -> None:
        self.loaded = loaded
        self.token = token
        self.batch_size = batch_size
        self.limit = limit
        self.use_cache = use_cache
        self._banks: Memo[FeatureBank] = Memo()
        self._firsts: Memo[FeatureBank] = Memo()
        self._scored: Memo[tuple[np.ndarray, np.ndarray]] = Memo()
        self._first_scored: Memo[tuple[np.ndarray, np.ndarray, int, str | None]] = Memo()

    def bank(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """Features of every block for ``split``; the images :meth:`first_images` read already are not
        read again."""
        return self._banks.get(split, lambda: self._read(split, self.limit, progress, first=self._firsts.peek(split)))

    def ready(self, split: str) -> bool:
        """Whether :meth:`bank` of ``split`` is read."""
        return self._banks.peek(split) is not None

    def first_images(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """The first :meth:`preview_size` images' features of ``split`` (whole batches), read alone
        unless the whole split is there already."""
        whole = self._banks.peek(split)
        if whole is not None:
            return whole.head(self.preview_size(split) or whole.num_samples)
        return self._firsts.get(split, lambda: self._read(split, self.preview_size(split), progress))

    def preview_size(self, split: str) -> int | None:
        """Images a provisional figure of ``split`` is read from, in whole batches, or ``None`` when the
        split is not much bigger, so the exact figure is as quick. The test split's preview is
        ``defaults.PREVIEW_TEST_IMAGES``; train and val share ``defaults.PREVIEW_SCORED_IMAGES`` in
        proportion to their sizes (the provisional recommendation's images)."""
        if split in SCORED:
            wanted = defaults.PREVIEW_SCORED_IMAGES * self.split_size(split) / max(self.scored_size(), 1)
        else:
            wanted = defaults.PREVIEW_TEST_IMAGES
        n = max(1, round(wanted / self.batch_size)) * self.batch_size
        return n if self.split_size(split) >= 2 * n else None

    def split_size(self, split: str) -> int:
        """Images of ``split`` this store reads (``limit`` applied)."""
        total = len(self.loaded.data.indices(split))
        return min(total, self.limit) if self.limit is not None else total

    def _read(self, split: str, limit: int | None, progress: Progress | None,
              first: FeatureBank | None = None) -> FeatureBank:
        loaded = self.loaded
        return SCHEDULER.run_heavy(lambda: feature_bank(
            loaded.model, loaded.data, split, loaded.preprocess, backbone_checksum=loaded.backbone.checksum,
            token=self.token, batch_size=self.batch_size, limit=limit, device=loaded.backbone.device,
            use_cache=self.use_cache, progress=progress, head=first))

    def scored(self) -> tuple[np.ndarray, np.ndarray]:
        """``(features, labels)``: what SLS and every other layer criterion score, (L, N, D) float32,
        train then val (VTAB's train800val200), and (N,); made once."""
        return self._scored.get("trainval", lambda: _joined([self.bank(split) for split in SCORED]))

    def previewed(self) -> bool:
        """Whether the scored splits are big enough (4x ``defaults.PREVIEW_SCORED_IMAGES``, each split 2x its
        share) for a provisional recommendation from their first images to come much sooner than the exact one."""
        return (self.scored_size() >= 4 * defaults.PREVIEW_SCORED_IMAGES
                and all(self.preview_size(split) is not None for split in SCORED))

    def first_scored(self, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, int, str | None]:
        """``(features, labels, train images, cache key)`` of the scored splits' first images
        (:meth:`first_images` of train, then of val): what a provisional recommendation scores."""
        def join() -> tuple[np.ndarray, np.ndarray, int, str | None]:
            banks = [self.first_images(split, progress) for split in SCORED]
            features, labels = _joined(banks)
            return features, labels, banks[0].num_samples, "+".join(b.key for b in banks) if self.use_cache else None

        return self._first_scored.get("first", join)

    def scored_size(self) -> int:
        """Images :meth:`scored` holds."""
        return sum(self.split_size(split) for split in SCORED)

    def scored_key(self) -> str | None:
        """The disk-cache key of :meth:`scored` (``None`` without the cache)."""
        return "+".join(self.bank(split).key for split in SCORED) if self.use_cache else None

    def scored_indices(self) -> np.ndarray:
        """Dataset index of every scored point (train then val), for hover thumbnails."""
        return np.concatenate([self.bank(split).indices for split in SCORED])

    def write_scored(self, path: str | Path) -> Path:
        """Write :meth:`scored` as ``features.npz`` (``features``, ``labels``), atomically."""
        features, labels = self.scored()
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # np.savez would append .npz to a bare name
            np.savez(f, features=np.asarray(features, np.float32), labels=labels)
        return Path(path)


def _joined(banks: list[FeatureBank]) -> tuple[np.ndarray, np.ndarray]:
    """The banks' features side by side (one set of points) and their labels."""
    return (np.concatenate([bank.as_float32() for bank in banks], axis=1),
            np.concatenate([bank.labels for bank in banks]))
