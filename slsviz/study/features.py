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

    def bank(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """Features of every block for ``split``; the images :meth:`first_images` read already are not
        read again."""
        return self._banks.get(split, lambda: self._read(split, self.limit, progress, first=self._firsts.peek(split)))

    def first_images(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """The first :meth:`preview_size` images' features of ``split`` (whole batches), read alone
        unless the whole split is there already."""
        whole = self._banks.peek(split)
        if whole is not None:
            return whole.head(self.preview_size(split) or whole.num_samples)
        return self._firsts.get(split, lambda: self._read(split, self.preview_size(split), progress))

    def preview_size(self, split: str) -> int | None:
        """Images a provisional figure of ``split`` is read from (``defaults.PREVIEW_TEST_IMAGES`` in
        whole batches), or ``None`` when the split is not much bigger, so the exact figure is as quick."""
        n = -(-defaults.PREVIEW_TEST_IMAGES // self.batch_size) * self.batch_size
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
        def join() -> tuple[np.ndarray, np.ndarray]:
            train, val = self.bank("train"), self.bank("val")
            return (np.concatenate([train.as_float32(), val.as_float32()], axis=1),
                    np.concatenate([train.labels, val.labels]))

        return self._scored.get("trainval", join)

    def scored_key(self) -> str | None:
        """The disk-cache key of :meth:`scored` (``None`` without the cache)."""
        return f"{self.bank('train').key}+{self.bank('val').key}" if self.use_cache else None

    def scored_indices(self) -> np.ndarray:
        """Dataset index of every scored point (train then val), for hover thumbnails."""
        return np.concatenate([self.bank("train").indices, self.bank("val").indices])

    def write_scored(self, path: str | Path) -> Path:
        """Write :meth:`scored` as ``features.npz`` (``features``, ``labels``), atomically."""
        features, labels = self.scored()
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # np.savez would append .npz to a bare name
            np.savez(f, features=np.asarray(features, np.float32), labels=labels)
        return Path(path)
