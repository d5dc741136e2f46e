"""Timing: measured throughput and latency of the model cut at every depth, the depth that fits a
budget, and the bytes each task stores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.device import check_timing_precision, timing_precisions
from slsviz.errors import SlsvizError
from slsviz.models.depth import depth_views
from slsviz.models.selection import LoadedTask
from slsviz.progress import Progress
from slsviz.pruning.bench import BenchmarkResult, benchmark_models, prepare_for_timing
from slsviz.pruning.budget import fastest_within, most_accurate_at
from slsviz.pruning.footprint import storage_per_task
from slsviz.scheduler import SCHEDULER, Memo
from slsviz.storage import json_float


class Timing:
    """Timings of one task model at every depth, each measured once per batch size and budget.

    Args:
        loaded: the task model and the device it runs on.
        timing_s: seconds of timing per depth, unless a call says otherwise.
    """

    def __init__(self, loaded: LoadedTask, *, timing_s: float = defaults.TIMING_S) -> None:
        self.loaded = loaded
        self.timing_s = timing_s
        self._measured: Memo[dict[int, BenchmarkResult]] = Memo()

    def precisions(self) -> tuple[str, ...]:
        """The precisions timing is offered in on this device: fp32, and bf16 where it is native."""
        return timing_precisions(self.loaded.backbone.device)

    def benchmarks(self, batch_size: int = 1, time_budget_s: float | None = None,
                   progress: Progress | None = None, precision: str = "fp32") -> dict[int, BenchmarkResult]:
        """Measured throughput and latency of the model cut at every depth, timed together.

        All depths are timed interleaved (see :func:`slsviz.pruning.bench.benchmark_models`), so
        their ratios hold on a machine whose speed drifts; the cut models share one merged copy's
        blocks. Measured once per batch size, budget and ``precision`` (one of :meth:`precisions`);
        ``time_budget_s`` is per depth (``None``: :attr:`timing_s`). The measurement has the machine
        alone: other sessions' heavy work waits for it (:meth:`slsviz.scheduler.Scheduler.timing`).
        """
        check_timing_precision(self.loaded.backbone.device, precision)
        loaded = self.loaded

        def measure() -> dict[int, BenchmarkResult]:
            merged = prepare_for_timing(loaded.model)
            views = depth_views(merged, range(1, len(loaded.model.blocks) + 1))
            with SCHEDULER.timing():
                return benchmark_models(views, loaded.backbone.img_size, batch_size=batch_size,
                                        device=loaded.backbone.device, time_budget_s=budget, merged=True,
                                        progress=progress, precision=precision)

        budget = self.timing_s if time_budget_s is None else time_budget_s
        return self._measured.get((batch_size, budget, precision), measure)

    def pick_depth(self, table: pd.DataFrame, *, within: float | None = None, min_images_per_s: float | None = None,
                   kind: str = "accuracy_head_refit", time_budget_s: float | None = None) -> dict[str, Any]:
        """The depth that fits a budget - give exactly one: the fastest within ``within`` (a fraction,
        0.01 = 1 point) of the full model's ``kind`` accuracy, or the most accurate at
        ``min_images_per_s`` or faster (batch 1, :meth:`benchmarks`).

        Args:
            table: the per-depth accuracies to read (:meth:`slsviz.study.depths.DepthEvaluator.table`,
                or the provisional one a page shows).
            time_budget_s: timing per depth (:meth:`benchmarks`; ``None``: :attr:`timing_s`).

        Returns:
            ``depth``, ``kind``, ``accuracy`` and ``images_per_s`` there, and ``rule`` in words.
        """
        if (within is None) == (min_images_per_s is None):
            raise SlsvizError("Give one budget: an accuracy tolerance (within) or a throughput (images/s), not both.")
        timed = self.benchmarks(time_budget_s=time_budget_s)
        speed = np.array([timed[d].images_per_s for d in sorted(timed)])
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
        return {"depth": depth, "kind": kind, "accuracy": json_float(table[kind].iloc[depth - 1]),
                "images_per_s": float(speed[depth - 1]), "rule": rule}

    def storage(self, depth: int) -> list[dict]:
        """Bytes per task at ``depth``: full PETL, SLS, structurally pruned."""
        return storage_per_task(self.loaded.model, depth)
