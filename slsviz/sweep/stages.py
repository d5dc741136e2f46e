"""The units of a sweep's work, as plain functions of plain values, so that any backend can run them
anywhere: in this process, or as Ray tasks on other machines.

Per task: :func:`train` (a ``train:`` entry) -> :func:`extract` (one pass of the model: the scored
features, the per-depth accuracies, FLOPs and storage) -> :func:`score_blocks` (maps and scores,
per block or all at once) -> :func:`decide` (every criterion under every alpha and seed) ->
:func:`benchmark` (optional; the machine alone) -> :func:`assemble` (the task's report and rows).
Each gives the same answer wherever it runs: the model's work runs on ``threads`` CPU threads
everywhere, and every map on one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from slsviz.study.criteria import SLS_VARIANTS, oracle_pick, other_picks, sls_picks
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis, train_val_probe
from slsviz.layers.criteria import SETTINGS
from slsviz.layers.scores import CLUSTER_METRICS
from slsviz.models.depth import depth_views
from slsviz.models.petl import PetlConfig
from slsviz.models.task import fit_task, save_task
from slsviz.models.train import Recipe
from slsviz.pruning.bench import count_flops, prepare_for_timing
from slsviz.pruning.footprint import FULL_PETL, PRUNED, SLS, shared_backbone_bytes
from slsviz.scheduler import Parallel
from slsviz.storage import json_float
from slsviz.study import Study, open_selection
from slsviz.sweep.spec import SweepSpec, TaskEntry, with_task

# The maps the SLS variants read, each scored on every seed: (projection, space).
MAPPINGS = tuple(dict.fromkeys((m.projection, m.space) for _, _, m, _ in SLS_VARIANTS))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch on ``threads`` CPU threads inside the block (``None``: as it is); restored after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def open_study(entry: TaskEntry, use_cache: bool = True) -> Study:
    """The orchestrator of one task: the entry's own opener, or :attr:`TaskEntry.selection`."""
    if entry.opener is not None:
        return entry.opener()
    return Study.open(entry.selection, workers=1, use_cache=use_cache)


def trained_path(entry: TaskEntry, out: str | Path) -> Path:
    """Where a ``train:`` entry's checkpoint is kept under the sweep's folder, named by what it was
    trained from, so that a sweep run again reuses it and a changed entry trains anew."""
    what = json.dumps({"selection": entry.selection.to_dict(), "train": asdict(entry.train)}, sort_keys=True)
    return Path(out) / "tasks" / entry.name / f"trained-{hashlib.sha256(what.encode()).hexdigest()[:12]}.safetensors"


def train(entry: TaskEntry, out: str | Path, threads: int, report: Callable[[str], None] | None = None) -> TaskEntry:
    """Train a ``train:`` entry's task on its backbone and data (once: a checkpoint already there is
    reused) and return the entry that opens it. ``out`` must be a folder every machine sees.
    ``report(line)`` hears where it is: each epoch's number, loss and val accuracy."""
    path = trained_path(entry, out)
    if not path.is_file():
        t = entry.train
        said = report or (lambda line: None)
        said(f"train: loading {t.method} on {entry.selection.data}")
        with torch_threads(threads):
            loaded = open_selection(replace(entry.selection, task="none"))
            recipe = Recipe(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, seed=t.seed)
            model, meta, _ = fit_task(
                loaded.backbone, loaded.data, PetlConfig(t.method, bottleneck=t.bottleneck), recipe,
                device=loaded.backbone.device, limit=t.limit,
                progress=lambda epoch, epochs, info: said(f"train epoch {epoch}/{epochs}, loss {info['loss']:.3f}, "
                                                          f"val acc. {100 * info['val_accuracy']:.1f}%"))
        save_task(path, model, meta)
    return with_task(entry, str(path))


@dataclass
class TaskFeatures:
    """What the maps and scores read: the scored features of every block (train then val).

    Attributes:
        features: (L, N, D) float32.
        labels: (N,).
        n_train: the first ``n_train`` images are train (the probe's fit), the rest val.
        cache_key: identifies the features for the disk cache of maps (``None``: no cache).
    """

    features: np.ndarray
    labels: np.ndarray
    n_train: int
    cache_key: str | None


@dataclass
class TaskFacts:
    """What one pass of the task's model gives besides the features (small: it travels to the driver).

    Attributes:
        card: the model card (:meth:`slsviz.study.Study.model_card`).
        num_layers: L.
        depth_table: test accuracy at every depth, as is and head re-fit (records, depth 1 first).
        val_head_refit: val accuracy at every depth with a re-fit head (the oracle reads it).
        val_loss: val cross-entropy at every depth with the same heads (the oracle's loss twin).
        taylor: every block's Taylor importance (``None``: the model has no head for the data).
        flops: FLOPs per image at every depth (PETL merged, as timed).
        storage: bytes per task at every depth: ``{"full PETL", "SLS", "structurally pruned"}``.
        shared_backbone_bytes: the frozen backbone every task shares (stored once).
        seconds: how long the pass took.
    """

    card: dict[str, Any]
    num_layers: int
    depth_table: list[dict[str, Any]]
    val_head_refit: list[float]
    val_loss: list[float]
    taylor: list[float] | None
    flops: list[int]
    storage: list[dict[str, int]]
    shared_backbone_bytes: int
    seconds: float


def extract(entry: TaskEntry, use_cache: bool, threads: int) -> tuple[TaskFeatures, TaskFacts]:
    """Open the task and make everything that needs its model (:func:`extract_from`)."""
    return extract_from(open_study(entry, use_cache), threads)


def extract_from(study: Study, threads: int) -> tuple[TaskFeatures, TaskFacts]:
    """Everything that needs the opened task's model, once: features of train, val and test, the
    per-depth accuracies, FLOPs and storage."""
    start = time.perf_counter()
    with torch_threads(threads):
        features, labels = study.features.scored()
        train = study.features.bank("train")
        table = study.depths.table()
        val_refit = study.depths.head_refit_accuracy("val")
        val_loss = study.depths.head_refit_loss("val")
        taylor = study.depths.taylor()
        views = depth_views(prepare_for_timing(study.loaded.model), range(1, study.num_layers + 1))
        size, device = study.loaded.backbone.img_size, study.loaded.backbone.device
        flops = [count_flops(view, size, device) for view in views.values()]
    model = study.loaded.model
    storage = [{row["storage"]: int(row["bytes"]) for row in study.timing.storage(d)}
               for d in range(1, study.num_layers + 1)]
    key = study.features.scored_key()
    facts = TaskFacts(card=study.model_card(), num_layers=study.num_layers,
                      depth_table=table[["depth", "accuracy_as_is", "accuracy_head_refit"]].to_dict("records"),
                      val_head_refit=[float(a) for a in val_refit], val_loss=[float(v) for v in val_loss],
                      taylor=None if taylor is None else [float(t) for t in taylor], flops=flops, storage=storage,
                      shared_backbone_bytes=shared_backbone_bytes(model), seconds=time.perf_counter() - start)
    return TaskFeatures(np.asarray(features, np.float32), np.asarray(labels), train.num_samples, key), facts


def score_blocks(task: TaskFeatures, layers: list[int], seeds: tuple[int, ...], mappings: tuple[tuple[str, str], ...],
                 workers: int = 1) -> dict[int, dict[str, Any]]:
    """Every score of ``layers`` (1-based) on every seed, as :class:`~slsviz.layers.analysis.LayerAnalysis`
    makes it for one study: the cluster scores on each mapping's map (or on the raw features), and the
    linear probe (fit on train, scored on val).

    Maps are computed ``workers`` at a time, each on one thread; the scores do not depend on it, so a
    backend may call this per block or for all blocks at once.

    Returns:
        ``{layer: {"seed:<s>:<projection>:<space>": {metric: value}, "seed:<s>:probe": accuracy}}``.
    """
    out: dict[int, dict[str, Any]] = {layer: {} for layer in layers}
    x, y, n = task.features, task.labels, task.n_train
    for seed in seeds:
        for projection, space in mappings:
            analysis = LayerAnalysis(x, y, AnalysisSettings(projection=projection, space=space, seed=seed),
                                     cache_key=task.cache_key, runner=Parallel(workers))
            if space == "2d":
                analysis.maps(layers)  # all at once, ``workers`` in parallel
            for layer in layers:
                out[layer][f"seed:{seed}:{projection}:{space}"] = {
                    metric: analysis.scores(layer)[metric] for metric in CLUSTER_METRICS}
        probe = LayerAnalysis(x, y, AnalysisSettings(metric="probe_accuracy", seed=seed),
                              probe=train_val_probe(x, y, n))
        for layer in layers:
            out[layer][f"seed:{seed}:probe"] = probe.score(layer)
    return out


def needed_mappings(criteria: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The maps ``criteria`` read (the SLS variants'; the probe needs none)."""
    wanted = {(m.projection, m.space) for name, _, m, metric in SLS_VARIANTS if name in criteria and metric != "probe_accuracy"}
    return tuple(mapping for mapping in MAPPINGS if mapping in wanted)


def decide(task: TaskFeatures, facts: TaskFacts, spec: SweepSpec, *parts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every criterion's pick under every alpha (the SLS variants) and seed, and the oracle, from the
    blocks' scores (:func:`score_blocks`, in one part or one per block).

    Returns:
        ``picks``: ``name, label, alpha (None but for SLS), seed, depth, rule, higher_is_better``;
        ``scores``: per seed, per criterion, the score of every block.
    """
    L, blocks = facts.num_layers, {layer: part[layer] for part in parts for layer in part}
    sls_names = [name for name, *_ in SLS_VARIANTS if name in spec.criteria]
    other_names = [name for name in spec.criteria if name not in sls_names and name != "oracle"]
    picks, scores = [], {}
    for seed in spec.seeds:
        tables = {}
        for _, _, mapping, _ in SLS_VARIANTS:
            probe = [blocks[layer][f"seed:{seed}:probe"] for layer in range(1, L + 1)]
            cluster = [blocks[layer].get(f"seed:{seed}:{mapping.projection}:{mapping.space}",
                                         dict.fromkeys(CLUSTER_METRICS, np.nan)) for layer in range(1, L + 1)]
            tables[mapping] = pd.DataFrame(cluster).assign(probe_accuracy=probe)
        found = {}
        settings = {**SETTINGS, **spec.settings}
        for alpha in spec.alphas:
            for pick in sls_picks(tables, alpha, sls_names, settings):
                if pick["uses_alpha"] or alpha == spec.alphas[0]:  # an own rule's pick does not change with alpha
                    found[pick["name"]] = pick["scores"]
                    picks.append({**_public(pick), "alpha": alpha if pick["uses_alpha"] else None, "seed": seed})
        given = {"val_loss": np.asarray(facts.val_loss), "taylor": None if facts.taylor is None else np.asarray(facts.taylor)}
        for pick in other_picks(task.features, task.labels, settings, seed=seed, names=other_names, scores_given=given):
            found[pick["name"]] = pick["scores"]
            picks.append({**_public(pick), "alpha": None, "seed": seed})
        scores[str(seed)] = {name: [json_float(s) for s in values] for name, values in found.items()}
    oracle = oracle_pick(np.asarray(facts.val_head_refit), spec.oracle_within)
    picks.append({**_public(oracle), "alpha": None, "seed": None})
    scores["oracle"] = [json_float(s) for s in facts.val_head_refit]
    return {"picks": picks, "scores": scores}


def benchmark(entry: TaskEntry, use_cache: bool, seconds: float, threads: int | None = None) -> list[dict[str, Any]]:
    """Open the task and time it (:func:`benchmark_study`)."""
    return benchmark_study(open_study(entry, use_cache), seconds, threads)


def benchmark_study(study: Study, seconds: float, threads: int | None = None) -> list[dict[str, Any]]:
    """Throughput and latency of the opened task's model cut at every depth (batch 1, all depths in
    turn), on ``threads`` CPU threads (``None``: torch's default). Run it with the machine to itself."""
    with torch_threads(threads):
        timed = study.timing.benchmarks(time_budget_s=seconds)
    return [{"depth": d, "images_per_s": r.images_per_s, "latency_ms": r.latency_ms, "device": str(r.device)}
            for d, r in sorted(timed.items())]


def assemble(entry: TaskEntry, spec: SweepSpec, facts: TaskFacts, decided: dict[str, Any],
             timed: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The task's ``report.json``: what ``entry`` opened, its model card, every pick with what it gives,
    the per-block scores, the per-depth table; ``rows`` are its lines of the sweep's results table."""
    L, oracle = facts.num_layers, next(p["depth"] for p in decided["picks"] if p["name"] == "oracle")
    table = {row["depth"]: row for row in facts.depth_table}
    speed = {row["depth"]: row["images_per_s"] for row in timed} if timed else {}
    card = facts.card
    rows = []
    for pick in decided["picks"]:
        d = pick["depth"]
        row = {"task": entry.name, "method": card["method"], "dataset": card["dataset"], "backbone": card["backbone"],
               "criterion": pick["name"], "alpha": pick["alpha"], "setting": pick["setting"], "seed": pick["seed"],
               "depth": d, "num_layers": L,
               "oracle_distance": d - oracle}
        for kind in spec.accuracy:
            row[f"accuracy_{kind}"] = json_float(table[d][f"accuracy_{kind}"])
            row[f"accuracy_{kind}_full"] = json_float(table[L][f"accuracy_{kind}"])
        row.update({"flops": facts.flops[d - 1], "flops_full": facts.flops[L - 1]})
        if speed:
            row.update({"images_per_s": speed[d], "images_per_s_full": speed[L]})
        row.update({"bytes_sls": facts.storage[d - 1][SLS], "bytes_pruned": facts.storage[d - 1][PRUNED],
                    "bytes_full_petl": facts.storage[d - 1][FULL_PETL],
                    "shared_backbone_bytes": facts.shared_backbone_bytes})
        rows.append(row)
    return {"schema": "slsviz-sweep-task/1", "task": entry.to_dict(), "model": card, "num_layers": L, "picks": decided["picks"], "scores": decided["scores"],
            "depth_table": facts.depth_table, "flops": facts.flops, "storage": facts.storage,
            "shared_backbone_bytes": facts.shared_backbone_bytes, "benchmarks": timed, "rows": rows,
            "seconds": {"features": round(facts.seconds, 3)}}


def _public(pick: dict[str, Any]) -> dict[str, Any]:
    """A pick without its scores (they are kept per seed)."""
    return {k: v for k, v in pick.items() if k != "scores"}
