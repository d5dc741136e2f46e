"""The one orchestrator: this task on this data, and everything computed for it, memoised.

A :class:`Study` owns what the faces ask for - the features of each split, the layer analysis per
settings, the SLS recommendation, the per-depth accuracy table, the timings of every depth, the
storage per task, the exported configuration - and computes each at most once. The CLI
(``slsviz analyze`` writes :meth:`Study.report`), the app's pages (one study per
:class:`Selection`, shared by sessions) and the benchmark scripts all go through it, so the same
selection gives the same numbers everywhere.

    >>> study = Study.open(Selection(limit=200))
    >>> study.recommend(AnalysisSettings()).depth_        # lazy: maps only the blocks the rule needs
    >>> study.depth_table()                               # accuracy at every depth, from cached features
    >>> study.report(AnalysisSettings())["recommended_depth"]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from slsviz import defaults
from slsviz.data import LabelledImages, Preprocess, load_dataset
from slsviz.device import describe_device, resolve_device
from slsviz.environment import environment
from slsviz.errors import SlsvizError
from slsviz.export import (
    build_config,
    export_onnx,
    load_config,
    restore,
    save_pruned_task,
)
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.layers.criteria import SETTINGS as CRITERIA_SETTINGS
from slsviz.layers.features import FeatureBank, feature_bank
from slsviz.layers.projection import default_workers
from slsviz.layers.rule import SLSRule
from slsviz.models import formats, hf_vit
from slsviz.models.backbones import Backbone, file_checksum, load_backbone
from slsviz.models.depth import check_depth, depth_views, prune_to_depth
from slsviz.models.petl import PetlConfig, count_params
from slsviz.models.task import (
    TaskMeta,
    fit_task,
    head_applies,
    load_task,
    read_task_meta,
    save_task,
)
from slsviz.models.train import Recipe
from slsviz.progress import EpochProgress, Progress, StageProgress
from slsviz.pruning.accuracy import (
    accuracy_head_refit,
    accuracy_retrained,
    depth_accuracy_table,
    fit_heads,
    interval,
)
from slsviz.pruning.bench import BenchmarkResult, benchmark_models, prepare_for_timing
from slsviz.pruning.budget import fastest_within, most_accurate_at
from slsviz.pruning.footprint import storage_per_task
from slsviz.scheduler import SCHEDULER, Memo, Parallel
from slsviz.storage import atomic_path, cache_dir, write_json_and_csv

if TYPE_CHECKING:
    from slsviz.comparison import Comparison
    from slsviz.layers.stability import Spread


@dataclass(frozen=True)
class Selection:
    """What the user chose to load and how to extract features; hashable, so it can key a cache.

    Attributes:
        model: ``"default"`` or a timm ViT name.
        checkpoint: local weights for a timm name.
        task: a task checkpoint path, ``None`` (the shipped task with the default backbone) or ``"none"``.
        data: a dataset spec (``None``: the task's own).
        img_size: input size (``None``: the task's or the backbone's).
        hub: fetch the timm name's weights from the model hub.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        limit: images per split (``None``: all), for quick looks.
        token: which token of each block is the layer's feature.
        batch_size: images per forward pass.
        task_config: the official SLS repository's ``configs/<method>/<dataset>.yaml`` for a task
            checkpoint written by that code (it holds the adapter scale the file lacks).
        scale: the adapter scale s for such a checkpoint, instead of ``task_config``.
    """

    model: str = defaults.BACKBONE
    checkpoint: str | None = None
    task: str | None = None
    data: str | None = None
    img_size: int | None = None
    hub: bool = False
    device: str = defaults.DEVICE
    limit: int | None = None
    token: str = defaults.TOKEN
    batch_size: int = defaults.BATCH_SIZE
    task_config: str | None = None
    scale: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


@dataclass
class LoadedTask:
    """A backbone with its task model (adapters + head) and the dataset to analyse."""

    backbone: Backbone
    model: nn.Module
    meta: TaskMeta | None
    data: LabelledImages

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing the task was trained with (a bare backbone: its own input size, mean and std)."""
        if self.meta is None:
            return Preprocess(self.backbone.img_size, self.backbone.mean, self.backbone.std, self.backbone.resample)
        return Preprocess(self.meta.img_size, tuple(self.meta.mean), tuple(self.meta.std), self.meta.resample)

    @property
    def head(self) -> tuple[bool, str | None]:
        """Whether the task's head classifies this data (as-is accuracy is defined), and a note."""
        if self.meta is None:
            return False, "not applicable: a bare backbone has no task head (see the head re-fit)."
        return head_applies(self.meta, self.data)

    @property
    def method(self) -> str:
        """The PETL method, or ``"none"`` for a bare backbone."""
        return self.meta.petl["method"] if self.meta else "none"


def load_task_for(selection: Selection) -> LoadedTask:
    """Load what ``selection`` names. With the default backbone and no task, the shipped task.

    A task fixes the input size and the dataset (unless ``selection.data`` overrides it). A bare
    backbone (``task="none"``) is analysed without a task head: its as-is accuracy is not defined.
    Task checkpoints are slsviz's own or other tools' (:mod:`slsviz.models.formats`: official SLS,
    PEFT LoRA, full fine-tunes; a full fine-tune is its own backbone).
    With no backbone named, a task's own is loaded: the default, or the local checkpoint the task
    records (its checksum is checked).
    """
    dev = resolve_device(selection.device)
    task, img_size = selection.task, selection.img_size
    model_name, checkpoint = selection.model, selection.checkpoint
    if task is None and model_name == defaults.BACKBONE:
        task = defaults.TASK_PATH
    meta, foreign, seed = None, None, defaults.SEED
    if task == defaults.TASK_PATH and not defaults.TASK_PATH.is_file():
        raise SlsvizError(f"The shipped default task {task} is missing: run `make default-task` to create it.")
    if task is not None and str(task) != "none":
        foreign = formats.detect(task)
        if foreign is not None:
            img_size = img_size or foreign.img_size
            if foreign.is_its_own_backbone and checkpoint is None:
                checkpoint = str(task)
                if model_name == defaults.BACKBONE and not hf_vit.is_folder(task):
                    raise SlsvizError(f"{task} is a full fine-tune of a timm ViT: name its architecture with --model "
                                      "(in the app: the Backbone field), e.g. vit_base_patch16_224.")
        else:
            meta = read_task_meta(task)
            if img_size is not None and img_size != meta.img_size:
                raise SlsvizError(f"The task was trained at {meta.img_size} px; --img-size {img_size} does not fit it.")
            img_size = meta.img_size
            if model_name == defaults.BACKBONE and checkpoint is None and meta.backbone_id != defaults.BACKBONE:
                weights = meta.backbone_id.removeprefix(f"{meta.backbone_arch}:")
                if weights != meta.backbone_id and Path(weights).exists():
                    model_name, checkpoint = meta.backbone_arch, weights
    backbone = load_backbone(model_name, checkpoint, img_size=img_size, hub=selection.hub, device=dev)
    if foreign is not None:
        model, meta = formats.open_task(foreign, backbone, task_config=selection.task_config, scale=selection.scale)
        if selection.data is None:
            raise SlsvizError(f"{task} does not record the images it was trained on: give the dataset (--data, or the "
                              f"app's Dataset field; e.g. the VTAB-1k folder of {meta.dataset.split(':', 1)[1]}).")
        dataset = selection.data
    elif meta is not None:
        model, meta = load_task(task, backbone)
        dataset = selection.data or meta.dataset
        if meta.split_seed is not None and selection.data is None:
            seed = meta.split_seed
    else:
        model, dataset = backbone.model, selection.data or defaults.DATASET
    return LoadedTask(backbone, model, meta, load_dataset(dataset, seed=seed))


class Study:
    """One task on one dataset, with memoised features, analyses, accuracies, timings and exports.

    Never mutates its model; safe to share between threads (app sessions): each thing is computed
    once, while different things are computed side by side (:class:`slsviz.scheduler.Memo`), and
    :data:`slsviz.scheduler.SCHEDULER` decides what runs when.

    Args:
        loaded: the backbone, task model and dataset.
        token: which token of each block is the layer's feature.
        batch_size: images per forward pass.
        limit: images per split (``None``: all).
        use_cache: read and write the disk cache of features and maps.
        workers: maps computed at once (``None``: one per core); the maps do not depend on it.
        timing_s: seconds of timing per depth when every depth is timed (:meth:`benchmarks`), unless
            a call says otherwise.
    """

    def __init__(
        self,
        loaded: LoadedTask,
        *,
        token: str = defaults.TOKEN,
        batch_size: int = defaults.BATCH_SIZE,
        limit: int | None = None,
        use_cache: bool = True,
        workers: int | None = None,
        timing_s: float = defaults.TIMING_S,
    ) -> None:
        workers = default_workers() if workers is None else workers
        if workers < 1:
            raise SlsvizError(f"workers (maps computed at once) must be at least 1, not {workers}.")
        self.loaded = loaded
        self.token = token
        self.batch_size = batch_size
        self.limit = limit
        self.use_cache = use_cache
        self.workers = workers
        self.timing_s = timing_s
        self._banks: Memo[FeatureBank] = Memo()
        self._analyses: Memo[LayerAnalysis] = Memo()
        self._depth_tables: Memo[pd.DataFrame] = Memo()
        self._heads: Memo[list] = Memo()
        self._previews: Memo[FeatureBank] = Memo()
        self._started: Memo[Future] = Memo()
        self._benchmarks: Memo[dict[int, BenchmarkResult]] = Memo()
        self._task_files: Memo[bytes] = Memo()
        self._onnx_files: Memo[bytes] = Memo()
        self._comparisons: Memo[Comparison] = Memo()
        self._spreads: Memo[Spread] = Memo()

    @classmethod
    def open(cls, selection: Selection, *, workers: int | None = None, use_cache: bool = True,
             timing_s: float = defaults.TIMING_S) -> Study:
        """Load what ``selection`` names and study it."""
        return cls(load_task_for(selection), token=selection.token, batch_size=selection.batch_size,
                   limit=selection.limit, workers=workers, use_cache=use_cache, timing_s=timing_s)

    # --- facts -----------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """Blocks of the full model."""
        return len(self.loaded.model.blocks)

    def model_card(self) -> dict[str, Any]:
        """What is loaded, in numbers: backbone, PETL method and its settings, dataset, accuracies."""
        model, meta, backbone = self.loaded.model, self.loaded.meta, self.loaded.backbone
        return {
            "backbone": backbone.id,
            "arch": backbone.arch,
            "weights": backbone.checksum,
            "source": backbone.source,
            "depth": self.num_layers,
            "params": count_params(model),
            "trainable_params": count_params(model, trainable_only=True),
            "method": self.loaded.method,
            "petl": {k: v for k, v in meta.petl.items() if k != "method"} if meta else {},
            "task_source": meta.source if meta else None,
            "img_size": backbone.img_size,
            "dataset": self.loaded.data.name,
            "splits": {k: int(len(v)) for k, v in self.loaded.data.splits.items()},
            "num_classes": self.loaded.data.num_classes,
            "head_note": self.loaded.head[1],
            "val_accuracy": meta.val_accuracy if meta else None,
            "test_accuracy": meta.test_accuracy if meta else None,
            "limit": self.limit,
        }

    # --- features and the layer analysis ---------------------------------------------------------

    def bank(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """Features of every block for ``split`` (disk-cached across runs, memoised here); the images
        :meth:`bank_head` read already are not read again."""
        return self._banks.get(split, lambda: self._feature_bank(split, self.limit, progress,
                                                                 head=self._previews.peek(split)))

    def bank_head(self, split: str, progress: Progress | None = None) -> FeatureBank:
        """The first :meth:`preview_size` images' features of ``split``: read alone (whole batches)
        unless the whole split is there already."""
        whole = self._banks.peek(split)
        if whole is not None:
            return whole.head(self.preview_size(split) or whole.num_samples)
        return self._previews.get(split, lambda: self._feature_bank(split, self.preview_size(split), progress))

    def preview_size(self, split: str) -> int | None:
        """Images a provisional figure of ``split`` is read from (``defaults.PREVIEW_TEST_IMAGES`` in
        whole batches), or ``None`` when the split is not much bigger, so the exact figure is as quick."""
        n = -(-defaults.PREVIEW_TEST_IMAGES // self.batch_size) * self.batch_size
        return n if self._split_size(split) >= 2 * n else None

    def _split_size(self, split: str) -> int:
        """Images of ``split`` this study reads (``limit`` applied)."""
        total = len(self.loaded.data.indices(split))
        return min(total, self.limit) if self.limit is not None else total

    def _feature_bank(self, split: str, limit: int | None, progress: Progress | None,
                      head: FeatureBank | None = None) -> FeatureBank:
        loaded = self.loaded
        return SCHEDULER.run_heavy(lambda: feature_bank(
            loaded.model, loaded.data, split, loaded.preprocess, backbone_checksum=loaded.backbone.checksum,
            token=self.token, batch_size=self.batch_size, limit=limit, device=loaded.backbone.device,
            use_cache=self.use_cache, progress=progress, head=head))

    def analysis(self, settings: AnalysisSettings) -> LayerAnalysis:
        """The analysis SLS makes, under ``settings``: train + val features scored together
        (VTAB's train800val200), the linear probe fit on train and scored on val; maps on demand."""
        def build() -> LayerAnalysis:
            train, val = self.bank("train"), self.bank("val")
            features = np.concatenate([train.as_float32(), val.as_float32()], axis=1)
            labels = np.concatenate([train.labels, val.labels])
            return LayerAnalysis(features, labels, settings, cache_key=f"{train.key}+{val.key}" if self.use_cache else None,
                                 probe=(train.features, train.labels, val.features, val.labels),
                                 runner=Parallel(self.workers))

        return self._analyses.get(settings, build)

    def recommend(self, settings: AnalysisSettings) -> SLSRule:
        """The SLS rule on ``settings``' scores, scanned top down: only the blocks it needs are mapped."""
        return self.analysis(settings).recommend(lazy=True)

    def scored_indices(self) -> np.ndarray:
        """Dataset index of every scored point (train then val), for hover thumbnails."""
        return np.concatenate([self.bank("train").indices, self.bank("val").indices])

    def scored_features(self) -> tuple[np.ndarray, np.ndarray]:
        """``(features, labels)``: what SLS and every other layer criterion score, (L, N, D) train then
        val, and (N,)."""
        analysis = self.analysis(AnalysisSettings())
        return analysis.features, analysis.labels

    def write_scored_features(self, path: str | Path) -> Path:
        """Write :meth:`scored_features` as ``features.npz`` (``features``, ``labels``), atomically."""
        features, labels = self.scored_features()
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # np.savez would append .npz to a bare name
            np.savez(f, features=np.asarray(features, np.float32), labels=labels)
        return Path(path)

    def map_coordinates(self, settings: AnalysisSettings) -> pd.DataFrame:
        """Every block's 2-D map as one table: ``layer, index`` (in the dataset), ``label, x, y``."""
        analysis, indices = self.analysis(settings), self.scored_indices()
        return pd.concat([pd.DataFrame({"layer": layer, "index": indices, "label": analysis.labels,
                                        "x": points[:, 0], "y": points[:, 1]})
                          for layer, points in analysis.maps().items()], ignore_index=True)

    # --- the pruned model ------------------------------------------------------------------------

    def depth_table(self, seed: int = defaults.SEED, progress: Progress | None = None) -> pd.DataFrame:
        """Test accuracy at every depth, as is and with a head re-fit on train, from cached features."""
        return self._depth_tables.get(seed, lambda: depth_accuracy_table(
            self.loaded.model, self.bank("train"), self.bank("test", progress), seed=seed, as_is=self.loaded.head[0],
            heads=self._fitted_heads(seed)))

    def depth_table_soon(self, seed: int = defaults.SEED, progress: Progress | None = None) -> tuple[pd.DataFrame, bool]:
        """``(table, exact)``: the exact :meth:`depth_table` when it is there or as quick to make;
        otherwise a provisional one from the first :meth:`preview_size` test images, with the 95%
        interval of each accuracy (``accuracy_as_is_pm``, ``accuracy_head_refit_pm``) and
        ``table.attrs["images"] = (read, of)``. :meth:`finish` makes the exact one in the background."""
        exact = self._depth_tables.peek(seed)
        n = self.preview_size("test")
        if exact is not None or n is None:
            return exact if exact is not None else self.depth_table(seed, progress), True
        head = self.bank_head("test", progress)
        table = depth_accuracy_table(self.loaded.model, self.bank("train"), head, seed=seed,
                                     as_is=self.loaded.head[0], heads=self._fitted_heads(seed))
        table["accuracy_as_is_pm"] = interval(table["accuracy_as_is"].to_numpy(), head.num_samples)
        table["accuracy_head_refit_pm"] = interval(table["accuracy_head_refit"].to_numpy(), head.num_samples)
        table.attrs["images"] = (head.num_samples, self._split_size("test"))
        return table, False

    def finish(self, seed: int = defaults.SEED) -> Future:
        """Make the exact :meth:`depth_table` in the background, once (the rest of the test split
        read after what a provisional table read); :meth:`depth_table_ready` says when it is there."""
        return self._start_once(("table", seed), lambda study: study.depth_table(seed))

    def prefetch(self, page: str, settings: AnalysisSettings = AnalysisSettings()) -> Future:
        """Start, in the background, the heaviest part of what ``page`` will ask for, while the user
        reads the page before it: ``"layers"`` the train and val features and the recommendation under
        ``settings``; ``"prune"`` the first test images' features, the re-fit heads, the timing of
        every depth, and then the rest of the test split (:meth:`finish`). Each is started once; a
        page that asks for it meanwhile waits for it rather than computing it again, and hears of its
        failure. Returns the future of the job (its error, if it failed)."""
        def prune(study: Study) -> None:  # the study as an argument: the queue holds it weakly
            study.bank_head("test") if study.preview_size("test") else study.bank("test")
            study._fitted_heads(defaults.SEED)
            study.benchmarks()
            study.finish()  # after the timing: a measurement has the machine alone

        jobs = {"layers": lambda study: study.recommend(settings), "prune": prune}
        if page not in jobs:
            raise SlsvizError(f"Nothing to prefetch for {page!r}: use one of {', '.join(jobs)}.")
        return self._start_once((page, settings), jobs[page])

    def _start_once(self, key: Hashable, job: Callable[[Study], object]) -> Future:
        """Queue ``job(self)`` for the scheduler's background thread, unless ``key``'s job was queued
        before; the future of its result (or error)."""
        return self._started.get(key, lambda: SCHEDULER.submit(self, job))

    def accuracy_head_refit(self, split: str, seed: int = defaults.SEED) -> np.ndarray:
        """Accuracy on ``split`` at every depth (index d-1) of the heads re-fit on train."""
        return accuracy_head_refit(self.loaded.model, self.bank("train"), self.bank(split),
                                   heads=self._fitted_heads(seed))

    def compare(self, *, oracle_within: float = defaults.ORACLE_WITHIN, settings: dict[str, float] | None = None,
                time_budget_s: float | None = None, resamples: int = 0, depgraph: int | None = None,
                depgraph_retrain: int = 0, progress: StageProgress | None = None) -> Comparison:
        """SLS beside the other layer criteria and the oracle (:func:`slsviz.comparison.compare`), with
        each one's stability over ``resamples`` bootstrap resamples and, with ``depgraph`` (a depth, 0:
        the SLS depth), the DepGraph baseline (retrained ``depgraph_retrain`` epochs); once per settings."""
        from slsviz.comparison import compare

        time_budget_s = self.timing_s if time_budget_s is None else time_budget_s
        key = (float(oracle_within), tuple(sorted({**CRITERIA_SETTINGS, **(settings or {})}.items())),
               float(time_budget_s), int(resamples), depgraph, int(depgraph_retrain))
        return self._comparisons.get(key, lambda: compare(self, oracle_within=oracle_within, settings=settings,
                                                          time_budget_s=time_budget_s, resamples=resamples,
                                                          depgraph=depgraph, depgraph_retrain=depgraph_retrain,
                                                          progress=progress))

    def stability(self, settings: AnalysisSettings, resamples: int, progress: StageProgress | None = None) -> Spread:
        """The SLS recommendation under ``settings`` on ``resamples`` bootstrap resamples of the scored
        images, each mapped anew (:func:`slsviz.comparison.settings_stability`); once per settings."""
        from slsviz.comparison import settings_stability

        return self._spreads.get((settings, int(resamples)),
                                 lambda: settings_stability(self, settings, count=resamples, progress=progress))

    def depth_table_ready(self, seed: int = defaults.SEED) -> bool:
        """Whether the exact :meth:`depth_table` is computed."""
        return self._depth_tables.peek(seed) is not None

    def _fitted_heads(self, seed: int) -> list:
        """A re-fit head per depth on the train features: fit once, scored on a preview and the whole test split."""
        def fit() -> list:
            train = self.bank("train")  # outside the heavy section: it may wait for another thread's
            return SCHEDULER.run_heavy(lambda: fit_heads(self.loaded.model, train, seed=seed))

        return self._heads.get(seed, fit)

    def benchmarks(self, batch_size: int = 1, time_budget_s: float | None = None,
                   progress: Progress | None = None) -> dict[int, BenchmarkResult]:
        """Measured throughput and latency of the model cut at every depth, timed together.

        All depths are timed interleaved (see :func:`slsviz.pruning.bench.benchmark_models`), so
        their ratios hold on a machine whose speed drifts; the cut models share one merged copy's
        blocks. Measured once per batch size and budget; ``time_budget_s`` is per depth (``None``:
        the study's :attr:`timing_s`). The
        measurement has the machine alone: other sessions' heavy work waits for it (see
        :meth:`slsviz.scheduler.Scheduler.timing`).
        """
        def measure() -> dict[int, BenchmarkResult]:
            merged = prepare_for_timing(self.loaded.model)
            views = depth_views(merged, range(1, self.num_layers + 1))
            with SCHEDULER.timing():
                return benchmark_models(views, self.loaded.backbone.img_size, batch_size=batch_size,
                                        device=self.loaded.backbone.device, time_budget_s=time_budget_s, merged=True,
                                        progress=progress)

        time_budget_s = self.timing_s if time_budget_s is None else time_budget_s
        return self._benchmarks.get((batch_size, time_budget_s), measure)

    def pick_depth(self, *, within: float | None = None, min_images_per_s: float | None = None,
                   kind: str = "accuracy_head_refit", table: pd.DataFrame | None = None,
                   time_budget_s: float | None = None) -> dict[str, Any]:
        """The depth that fits a budget - give exactly one: the fastest within ``within`` (a fraction,
        0.01 = 1 point) of the full model's ``kind`` accuracy, or the most accurate at
        ``min_images_per_s`` or faster (batch 1, :meth:`benchmarks`).

        Args:
            table: the per-depth accuracies to read (default: the exact :meth:`depth_table`; a page
                showing provisional ones passes those).
            time_budget_s: timing per depth (:meth:`benchmarks`; ``None``: the study's).

        Returns:
            ``depth``, ``kind``, ``accuracy`` and ``images_per_s`` there, and ``rule`` in words.
        """
        if (within is None) == (min_images_per_s is None):
            raise SlsvizError("Give one budget: an accuracy tolerance (within) or a throughput (images/s), not both.")
        table = self.depth_table() if table is None else table
        timed = self.benchmarks(time_budget_s=time_budget_s)
        speed = np.array([timed[d].images_per_s for d in range(1, self.num_layers + 1)])
        words = kind.removeprefix("accuracy_").replace("_", " ")
        if within is not None:
            depth = fastest_within(table, speed, within=within, kind=kind)
            rule = f"the fastest depth within {100 * within:g} points of the full model's accuracy ({words})"
        else:
            depth = most_accurate_at(table, speed, min_images_per_s=min_images_per_s, kind=kind)
            if depth is None:
                raise SlsvizError(f"No depth reaches {min_images_per_s:g} images/s here: the fastest (depth 1) measures "
                                  f"{speed[0]:.1f}. Lower the throughput asked for.")
            rule = f"the most accurate depth ({words}) at {min_images_per_s:g} images/s or more"
        return {"depth": depth, "kind": kind, "accuracy": _float(table[kind].iloc[depth - 1]),
                "images_per_s": float(speed[depth - 1]), "rule": rule}

    def storage(self, depth: int) -> list[dict]:
        """Bytes per task at ``depth``: full PETL, SLS, structurally pruned."""
        return storage_per_task(self.loaded.model, depth)

    # --- a new task on this backbone and data ---------------------------------------------------

    def train(self, method: str, epochs: int, *, limit: int | None = None,
              progress: EpochProgress | None = None) -> tuple[Path, TaskMeta]:
        """Train ``method``'s adapters and a head on this study's backbone and data (the paper's recipe,
        a tenth of the epochs warming up) and keep the task checkpoint in the cache.

        The file is named by its content, so another run (other settings, another session) never
        overwrites a checkpoint a study may be serving.
        """
        recipe = Recipe(epochs=epochs)
        backbone, data = self.loaded.backbone, self.loaded.data
        with SCHEDULER.training():
            model, meta, _ = fit_task(backbone, data, PetlConfig(method), recipe, device=backbone.device, limit=limit,
                                      progress=progress)
        folder = cache_dir() / "tasks"
        with tempfile.TemporaryDirectory(prefix=".train-", dir=folder.parent) as scratch:
            written = save_task(Path(scratch) / "task.safetensors", model, meta)
            name = f"{method}-{meta.dataset.replace('/', '_')}-{epochs}ep-{file_checksum(written)}.safetensors"
            with atomic_path(folder / name) as tmp:
                written.replace(tmp)
        return folder / name, meta

    def retrain(self, depth: int, epochs: int, *, kind: str = "ft", progress: EpochProgress | None = None) -> dict:
        """Test accuracy of the model cut at ``depth`` after training its adapters and head further
        (the paper's ``"ft"``: constant lr 1e-5, or ``"clr"``); ``{"depth", "kind", "epochs",
        "accuracy_retrained", "val_accuracy"}``. The study's model is not touched."""
        with SCHEDULER.training():
            out = accuracy_retrained(self.loaded.model, check_depth(depth, self.num_layers), self.loaded.data,
                                     self.loaded.preprocess, kind=kind, epochs=epochs,
                                     device=self.loaded.backbone.device, limit=self.limit, progress=progress)
        return {k: v for k, v in out.items() if k != "model"}

    # --- export and import -----------------------------------------------------------------------

    def config(self, settings: AnalysisSettings, depth: int, time_budget_s: float | None = None) -> dict[str, Any]:
        """The configuration of the model cut at ``depth``: why (scores, the recommendation under
        ``settings``) and what it gives (accuracy, measured speed at batch 1 - ``time_budget_s`` of
        timing per depth, :meth:`benchmarks` -, FLOPs, parameters)."""
        meta = self._require_task("Export")
        depth = check_depth(depth, self.num_layers)
        row = self.depth_table().iloc[depth - 1]
        timed = self.benchmarks(time_budget_s=time_budget_s)[depth]
        results = {"accuracy_as_is": _float(row["accuracy_as_is"]), "accuracy_head_refit": float(row["accuracy_head_refit"]),
                   "throughput_images_per_s": timed.images_per_s, "latency_ms": timed.latency_ms,
                   "batch_size": timed.batch_size, "flops_per_image": timed.flops_per_image, "params": timed.params,
                   "device": timed.device, "recommended_depth": int(self.recommend(settings).depth_),
                   "accuracy_as_is_note": self.loaded.head[1]}
        return build_config(backbone=self.loaded.backbone, meta=meta, depth=depth, alpha=settings.alpha,
                            metric=settings.metric, projection=settings.projection,
                            scores=self.analysis(settings).table().to_dict("records"), results=results)

    def task_checkpoint(self, depth: int) -> bytes:
        """The task checkpoint of the kept blocks (adapters + head + the depth), as file bytes."""
        meta = self._require_task("A pruned task checkpoint")
        depth = check_depth(depth, self.num_layers)

        def write() -> bytes:
            with tempfile.TemporaryDirectory(prefix="slsviz-task-") as folder:
                return save_pruned_task(self.loaded.model, meta, depth, Path(folder) / "task.safetensors").read_bytes()

        return self._task_files.get(depth, write)

    def onnx(self, depth: int) -> bytes:
        """The model cut at ``depth`` (PETL merged) as ONNX file bytes."""
        depth = check_depth(depth, self.num_layers)

        def write() -> bytes:
            with tempfile.TemporaryDirectory(prefix="slsviz-onnx-") as folder:
                return export_onnx(prune_to_depth(self.loaded.model, depth), self.loaded.backbone.img_size,
                                   Path(folder) / "model.onnx").read_bytes()

        return self._onnx_files.get(depth, write)

    def check_import(self, config: str | bytes, task_checkpoint: bytes) -> tuple[dict[str, Any], bool]:
        """Restore the model a configuration and its task checkpoint describe on this study's backbone.

        Returns:
            The configuration, and whether the restored model's logits equal this study's model
            cut at the configuration's depth (on a fixed random batch).
        """
        imported = load_config(config)
        with tempfile.TemporaryDirectory(prefix="slsviz-import-") as folder:
            path = Path(folder) / "task.safetensors"
            path.write_bytes(task_checkpoint)
            model = restore(imported, path, self.loaded.backbone)
        size, device = self.loaded.backbone.img_size, self.loaded.backbone.device
        x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.inference_mode():
            same = torch.equal(model.eval()(x), prune_to_depth(self.loaded.model, imported["depth"]).eval()(x))
        return imported, same

    def _require_task(self, what: str) -> TaskMeta:
        if self.loaded.meta is None:
            raise SlsvizError(f"{what} needs a task (adapters + head): load a task checkpoint.")
        return self.loaded.meta

    # --- the whole analysis, headless ------------------------------------------------------------

    def report(self, settings: AnalysisSettings = AnalysisSettings(),
               progress: StageProgress | None = None) -> dict[str, Any]:
        """Everything ``slsviz analyze`` reports, JSON-ready, with how long each stage took.

        In the order that answers first: train + val features -> the lazy recommendation -> test
        features -> every layer's scores -> accuracy at every depth.
        """
        def stage(name: str) -> Progress | None:
            return (lambda done, total: progress(name, done, total)) if progress else None

        timings: dict[str, float] = {}
        start = time.perf_counter()
        self.bank("train", stage("features:train"))
        self.bank("val", stage("features:val"))
        timings["features_trainval_s"] = time.perf_counter() - start
        analysis = self.analysis(settings)
        t = time.perf_counter()
        rule = self.recommend(settings)
        timings["recommendation_s"] = time.perf_counter() - t
        timings["time_to_recommendation_s"] = time.perf_counter() - start
        t = time.perf_counter()
        test = self.bank("test", stage("features:test"))
        timings["features_test_s"] = time.perf_counter() - t
        t = time.perf_counter()
        table = analysis.table(progress=stage("maps"))
        timings["all_layers_s"] = time.perf_counter() - t
        t = time.perf_counter()
        accuracy = self.depth_table(settings.seed)
        as_is, refit = accuracy["accuracy_as_is"].to_numpy(), accuracy["accuracy_head_refit"].to_numpy()
        table = table.assign(accuracy_as_is=as_is, accuracy_head_refit=refit)
        timings["accuracy_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start

        loaded, meta = self.loaded, self.loaded.meta
        return {
            "backbone": loaded.backbone.id,
            "backbone_arch": loaded.backbone.arch,
            "backbone_checksum": loaded.backbone.checksum,
            "method": loaded.method,
            "task_val_accuracy": meta.val_accuracy if meta else None,
            "task_test_accuracy": meta.test_accuracy if meta else None,
            "dataset": loaded.data.name,
            "split_info": loaded.data.split_info,
            "scored_split": "trainval",
            "img_size": loaded.backbone.img_size,
            "batch_size": self.batch_size,
            "map_workers": self.workers,
            "limit": self.limit,
            "num_images": int(len(analysis.labels)),
            "num_test_images": test.num_samples,
            "num_layers": analysis.num_layers,
            "token": self.token,
            **{k: v for k, v in settings.to_dict().items() if k in ("alpha", "metric", "projection", "space", "seed")},
            "projection_params": settings.projection_params if settings.projection == "umap" else {},
            "threshold": float(rule.threshold_),
            "recommended_depth": int(rule.depth_),
            "pruning": bool(rule.pruning_),
            "reason": rule.reason_,
            "accuracy_as_is_note": loaded.head[1],
            "accuracy_full": _float(as_is[-1]),
            "accuracy_full_head_refit": _float(refit[-1]),
            "accuracy_at_recommended_depth": _float(as_is[rule.depth_ - 1]),
            "accuracy_head_refit_at_recommended_depth": _float(refit[rule.depth_ - 1]),
            "device": describe_device(loaded.backbone.device),
            "environment": environment(),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "layers": [{k: (_float(v) if k != "layer" else int(v)) for k, v in row.items()}
                       for row in table.to_dict("records")],
        }

    def write_report(self, settings: AnalysisSettings, out: str | Path, *, save_features: bool = False,
                     progress: StageProgress | None = None) -> tuple[dict[str, Any], list[Path]]:
        """Write ``report.json``, ``scores.csv`` (and ``features.npz``) into ``out``, each atomically.

        Returns:
            The report and the paths written.
        """
        report = self.report(settings, progress)
        written = write_json_and_csv(out, "report.json", report, "scores.csv", pd.DataFrame(report["layers"]))
        if save_features:
            written.append(self.write_scored_features(Path(out) / "features.npz"))
        return report, written


def _float(x: float) -> float | None:
    """JSON-safe: NaN becomes null."""
    x = float(x)
    return None if np.isnan(x) else x
