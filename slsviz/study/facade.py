"""The facade: this task on this data. A :class:`Study` holds the parts that each own one thing; the
pages, the CLI, the sweep and the benchmarks all call the same parts, so the same selection gives
the same numbers everywhere.

    >>> study = Study.open(Selection(limit=200))
    >>> study.layers.recommend(AnalysisSettings()).depth_   # lazy: maps only the blocks the rule needs
    >>> study.layers.recommend_soon(AnalysisSettings())      # provisional from the first images until then
    >>> study.depths.table()                                 # accuracy at every depth, from cached features
    >>> study.timing.benchmarks()                            # every depth timed, the machine alone
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from slsviz import defaults
from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings
from slsviz.layers.criteria import SETTINGS as CRITERIA_SETTINGS
from slsviz.models.petl import count_params
from slsviz.models.selection import LoadedTask, Selection, open_selection
from slsviz.models.swin import SwinBlocks, stage_boundaries
from slsviz.progress import StageProgress
from slsviz.scheduler import SCHEDULER, Memo
from slsviz.study.comparison import Calibrated, Comparison, compare
from slsviz.study.depths import DepthEvaluator
from slsviz.study.exports import Exports
from slsviz.study.features import FeatureStore
from slsviz.study.layers import LayerStudy
from slsviz.study.timing import Timing


# What a first visit asks for, in the order it is prefetched (Study.prefetch): the provisional
# recommendation, the Prune page's read-outs, then the exact recommendation.
VISIT = ("first", "prune", "layers")


class Study:
    """One task on one dataset, and its parts: each computes a thing once, however many sessions ask.

    Never mutates its model; safe to share between threads (app sessions). What runs when is
    :data:`slsviz.scheduler.SCHEDULER`'s.

    Args:
        loaded: the backbone, task model and dataset.
        token: which token of each block is the layer's feature.
        batch_size: images per forward pass.
        limit: images per split (``None``: all).
        use_cache: read and write the disk cache of features and maps.
        workers: maps computed at once (``None``: one per core); the maps do not depend on it.
        timing_s: seconds of timing per depth, unless a call says otherwise.

    Attributes:
        loaded: what was opened.
        features: the features of each split (:class:`FeatureStore`).
        layers: maps, scores, the recommendation and its stability per settings (:class:`LayerStudy`).
        depths: accuracy at every depth (:class:`DepthEvaluator`).
        timing: throughput at every depth, budgets, storage (:class:`Timing`).
        exports: configuration, task checkpoint, ONNX, import check (:class:`Exports`).
    """

    def __init__(self, loaded: LoadedTask, *, token: str = defaults.TOKEN, batch_size: int = defaults.BATCH_SIZE,
                 limit: int | None = None, use_cache: bool = True, workers: int | None = None,
                 timing_s: float = defaults.TIMING_S) -> None:
        self.loaded = loaded
        self.features = FeatureStore(loaded, token=token, batch_size=batch_size, limit=limit, use_cache=use_cache)
        self.layers = LayerStudy(self.features, workers=workers)
        self.depths = DepthEvaluator(loaded, self.features, queue=self)
        self.timing = Timing(loaded, timing_s=timing_s)
        self.exports = Exports(loaded, self.layers, self.depths, self.timing)
        self._started: Memo[Future] = Memo()
        self._comparisons: Memo[Comparison] = Memo()

    @classmethod
    def open(cls, selection: Selection, *, workers: int | None = None, use_cache: bool = True,
             timing_s: float = defaults.TIMING_S) -> Study:
        """Open what ``selection`` names and study it."""
        return cls(open_selection(selection), token=selection.token, batch_size=selection.batch_size,
                   limit=selection.limit, workers=workers, use_cache=use_cache, timing_s=timing_s)

    @property
    def num_layers(self) -> int:
        """Blocks of the full model."""
        return len(self.loaded.model.blocks)

    @property
    def stage_starts(self) -> list[int]:
        """The first block of each stage after the first (a Swin's, numbered 1..L across stages), where charts
        draw a line; none for a ViT."""
        return stage_boundaries(self.loaded.model) if isinstance(self.loaded.model, SwinBlocks) else []

    def stages(self) -> list[int] | None:
        """The stage (1-based) of every block, for a table's column; ``None`` for a ViT."""
        model = self.loaded.model
        return [s + 1 for s in model.stage_of[:len(model.blocks)]] if isinstance(model, SwinBlocks) else None

    def stage_of(self, depth: int) -> str | None:
        """Where a cut after ``depth`` blocks falls among a Swin's stages, in words (``None`` for a ViT)."""
        model = self.loaded.model
        if not isinstance(model, SwinBlocks):
            return None
        stage, sizes = model.stage_of[depth - 1], model.stage_sizes
        first = sum(sizes[:stage]) + 1
        after = len(model.merges) - 1 - stage  # the mergings a cut in this stage keeps
        kept = {0: "", 1: "; the patch merging after it stays"}.get(after, f"; the {after} patch mergings after it stay")
        return (f"stage {stage + 1} of {len(model.merges)} (blocks {first}-{first + sizes[stage] - 1}){kept}"
                + (", so the head reads the last width" if after else ""))

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
            "head_note": self.loaded.head_note,
            "val_accuracy": meta.val_accuracy if meta else None,
            "test_accuracy": meta.test_accuracy if meta else None,
            "limit": self.features.limit,
        }

    def prefetch(self, page: str, settings: AnalysisSettings = AnalysisSettings()) -> Future:
        """Start, in the background, the heaviest part of what ``page`` will ask for, while the user
        reads the page before it: ``"first"`` the provisional recommendation under ``settings`` (from the
        scored splits' first images, where they are big); ``"layers"`` the train and val features and the
        exact recommendation; ``"prune"`` the first test images' features, the classifiers (fit on the
        first train images while the rest are read), the timing of every depth, and then the rest of the
        test split (:meth:`DepthEvaluator.start_exact`). Each is started once, and the jobs run in the
        order they were asked for; a page that asks for one meanwhile waits for it rather than computing it
        again, and hears of its failure. Returns the future of the job."""
        jobs = {"first": lambda study: study.layers.recommend_soon(settings),
                "layers": lambda study: study.layers.recommend(settings), "prune": _prefetch_prune}
        if page not in jobs:
            raise SlsvizError(f"Nothing to prefetch for {page!r}: use one of {', '.join(jobs)}.")
        # The job takes the study as an argument: the queue holds it weakly, so a study the page cache
        # drops is freed with its work still queued.
        return self._started.get((page, settings), lambda: SCHEDULER.submit(self, jobs[page]))

    def compare(self, *, oracle_within: float = defaults.ORACLE_WITHIN, settings: dict[str, float] | None = None,
                time_budget_s: float | None = None, resamples: int = 0, depgraph: int | None = None,
                depgraph_retrain: int = 0, calibrated: Calibrated | None = None,
                progress: StageProgress | None = None) -> Comparison:
        """SLS beside the other layer criteria and the oracle (:func:`slsviz.study.comparison.compare`),
        with each one's stability over ``resamples`` bootstrap resamples and, with ``depgraph`` (a depth,
        0: the SLS depth), the DepGraph baseline (retrained ``depgraph_retrain`` epochs), and with
        ``calibrated`` a criterion at a sweep's calibrated setting; once per settings."""
        time_budget_s = self.timing.timing_s if time_budget_s is None else time_budget_s
        key = (float(oracle_within), tuple(sorted({**CRITERIA_SETTINGS, **(settings or {})}.items())),
               float(time_budget_s), int(resamples), depgraph, int(depgraph_retrain), calibrated)
        return self._comparisons.get(key, lambda: compare(self, oracle_within=oracle_within, settings=settings,
                                                          time_budget_s=time_budget_s, resamples=resamples,
                                                          depgraph=depgraph, depgraph_retrain=depgraph_retrain,
                                                          calibrated=calibrated, progress=progress))


def _prefetch_prune(study: Study) -> None:
    """The Prune page's work: the first test images, the classifiers, the timing, then the rest."""
    store = study.features
    store.first_images("test") if store.preview_size("test") else store.bank("test")
    study.depths.classifiers_soon(defaults.SEED)
    study.timing.benchmarks()
    study.depths.start_exact()  # after the timing: a measurement has the machine alone
