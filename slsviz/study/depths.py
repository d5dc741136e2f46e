"""The depth evaluator: test accuracy of the model cut at every depth, as is and with a head re-fit on
train, from a :class:`~slsviz.study.features.FeatureStore`; provisional from the first test images
while the rest are read."""

from __future__ import annotations

import weakref
from concurrent.futures import Future

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.layers.features import FeatureBank
from slsviz.models.selection import LoadedTask
from slsviz.progress import Progress
from slsviz.pruning.accuracy import accuracy_head_refit, depth_accuracy_table, fit_heads, interval, loss_head_refit
from slsviz.scheduler import SCHEDULER, Memo
from slsviz.study.features import FeatureStore


class DepthEvaluator:
    """Per-depth accuracies of one task on one feature store, each table made once per seed.

    Args:
        loaded: the task model (its head decides whether accuracy as is is defined).
        features: where the train and test features come from.
        queue: whose background queue :meth:`start_exact` joins (the study's, so that the work queued
            before it, such as the exact recommendation, comes first); ``None``: its own.
    """

    def __init__(self, loaded: LoadedTask, features: FeatureStore, *, queue: object | None = None) -> None:
        self.loaded = loaded
        self.features = features
        self._queue = None if queue is None else weakref.ref(queue)  # the study holds this evaluator: no cycle
        self._tables: Memo[pd.DataFrame] = Memo()
        self._classifiers: Memo[list] = Memo()
        self._first_classifiers: Memo[list] = Memo()
        self._exact_started: Memo[Future] = Memo()
        self._taylor: Memo[np.ndarray] = Memo()

    def table(self, seed: int = defaults.SEED, progress: Progress | None = None) -> pd.DataFrame:
        """Test accuracy at every depth, as is and with a head re-fit on train."""
        def make() -> pd.DataFrame:
            train, test, classifiers = self.features.bank("train"), self.features.bank("test", progress), self.classifiers(seed)
            return depth_accuracy_table(self.loaded.model, train, test, seed=seed, as_is=self.loaded.head_applies,
                                        heads=classifiers)

        return self._tables.get(seed, make)

    def table_soon(self, seed: int = defaults.SEED, progress: Progress | None = None) -> tuple[pd.DataFrame, bool]:
        """``(table, exact)``: the exact :meth:`table` when it is there or as quick to make; otherwise
        a provisional one from the first test images (:meth:`FeatureStore.first_images`), with the 95%
        interval of each accuracy (``accuracy_as_is_pm``, ``accuracy_head_refit_pm``),
        ``table.attrs["images"] = (read, of)`` and ``table.attrs["train_images"] = (read, of)``: the train
        images its heads were re-fit on (:meth:`classifiers_soon`). :meth:`start_exact` makes the exact
        one in the background."""
        exact = self._tables.peek(seed)
        if exact is not None or self.features.preview_size("test") is None:
            return exact if exact is not None else self.table(seed, progress), True
        first = self.features.first_images("test", progress)
        train, heads = self.classifiers_soon(seed)
        table = depth_accuracy_table(self.loaded.model, train, first, seed=seed, as_is=self.loaded.head_applies,
                                     heads=heads)
        table["accuracy_as_is_pm"] = interval(table["accuracy_as_is"].to_numpy(), first.num_samples)
        table["accuracy_head_refit_pm"] = interval(table["accuracy_head_refit"].to_numpy(), first.num_samples)
        table.attrs["images"] = (first.num_samples, self.features.split_size("test"))
        table.attrs["train_images"] = (train.num_samples, self.features.split_size("train"))
        return table, False

    def ready(self, seed: int = defaults.SEED) -> bool:
        """Whether the exact :meth:`table` is made."""
        return self._tables.peek(seed) is not None

    def start_exact(self, seed: int = defaults.SEED) -> Future:
        """Start making the exact :meth:`table` in the background, once, after the work queued before it
        (the rest of the test split read after what a provisional table read); the future of that work."""
        queue = self._queue() if self._queue is not None else None
        # The job holds this evaluator, never the queue's owner: the queue holds that weakly.
        return self._exact_started.get(seed, lambda: SCHEDULER.submit(self if queue is None else queue,
                                                                      lambda _: self.table(seed)))

    def classifiers(self, seed: int = defaults.SEED) -> list:
        """A linear classifier per depth fit on the train features: fit once, scored on the first test
        images and the whole test split alike."""
        def fit() -> list:
            train = self.features.bank("train")  # outside the heavy section: it may wait for another thread's
            return SCHEDULER.run_heavy(lambda: fit_heads(self.loaded.model, train, seed=seed))

        return self._classifiers.get(seed, fit)

    def classifiers_soon(self, seed: int = defaults.SEED) -> tuple[FeatureBank, list]:
        """``(train bank, classifiers)``: :meth:`classifiers` when they are fit, or the train split is
        read (or the scored splits are small, :meth:`FeatureStore.previewed`); until then classifiers fit
        on the first train images (those a provisional recommendation reads), once."""
        store = self.features
        if self._classifiers.peek(seed) is not None or not store.previewed() or store.ready("train"):
            return store.bank("train"), self.classifiers(seed)
        first = store.first_images("train")
        return first, self._first_classifiers.get(seed, lambda: SCHEDULER.run_heavy(
            lambda: fit_heads(self.loaded.model, first, seed=seed)))

    def head_refit_accuracy(self, split: str, seed: int = defaults.SEED) -> np.ndarray:
        """Accuracy on ``split`` at every depth (index d-1) of the classifiers re-fit on train."""
        return accuracy_head_refit(self.loaded.model, self.features.bank("train"), self.features.bank(split),
                                   heads=self.classifiers(seed))

    def unavailable(self) -> tuple[str, ...]:
        """The criteria this model cannot be scored by: Taylor importance reads the task's loss through
        the task's own head, which a backbone alone or a head for other classes does not give."""
        return () if self.loaded.head_applies else ("taylor",)

    def taylor(self, images: int = defaults.TAYLOR_IMAGES) -> np.ndarray | None:
        """Every block's Taylor importance (:func:`slsviz.layers.criteria.taylor_block_importance`) on
        the first ``images`` train images, the task's own head giving the loss, once; ``None`` where
        the model has no head for the data (:meth:`unavailable`)."""
        if "taylor" in self.unavailable():
            return None

        def make() -> np.ndarray:
            import itertools

            from slsviz.data import make_loader
            from slsviz.layers.criteria import taylor_block_importance

            store, loaded = self.features, self.loaded
            loader = make_loader(loaded.data, "train", loaded.preprocess, min(store.batch_size, images),
                                 limit=min(images, store.limit or images))
            return SCHEDULER.run_heavy(lambda: taylor_block_importance(
                loaded.model, itertools.islice(iter(loader), -(-images // loader.batch_size))))

        return self._taylor.get(images, make)

    def head_refit_loss(self, split: str, seed: int = defaults.SEED) -> np.ndarray:
        """Cross-entropy (nats per image) on ``split`` at every depth of the same classifiers."""
        return loss_head_refit(self.loaded.model, self.features.bank("train"), self.features.bank(split),
                               heads=self.classifiers(seed))
