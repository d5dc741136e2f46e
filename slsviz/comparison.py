"""Which depth? SLS beside the other layer criteria and the oracle, on one study (``slsviz compare``).

:func:`compare` asks a :class:`~slsviz.study.Study` for everything from its caches (features, maps,
per-depth accuracies, timings) and puts every criterion's scores and pick side by side with what the
pick gives: test accuracy as is and with a head re-fit, measured throughput, FLOPs, and its distance
from the oracle (the smallest depth within ``oracle_within`` of the full model's val accuracy, head
re-fit). The scored images are the study's (train + val); the oracle reads val, the rows read test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.choices import METRICS
from slsviz.errors import DataError, SlsvizError
from slsviz.layers.analysis import AnalysisSettings, LayerAnalysis
from slsviz.layers.criteria import (
    SETTINGS,
    angular_distance_to_last,
    block_influence,
    cka_matrix,
    cka_to_last,
    criterion_depth,
    knn_accuracy,
)
from slsviz.layers.rule import SLSRule
from slsviz.layers.stability import Spread
from slsviz.layers.stability import resamples as draw
from slsviz.progress import Progress, StageProgress
from slsviz.pruning.accuracy import oracle_depth
from slsviz.scheduler import SCHEDULER, Parallel
from slsviz.storage import write_json_and_csv

# The SLS family: (name, label, how the layers are mapped, the score the rule reads). The paper's
# comes first; variants on the same maps share one table.
SLS_VARIANTS: tuple[tuple[str, str, AnalysisSettings, str], ...] = (
    ("sls", "SLS (the paper's: t-SNE silhouette)", AnalysisSettings(), "silhouette"),
    ("sls_umap", "SLS, UMAP silhouette", AnalysisSettings(projection="umap"), "silhouette"),
    ("sls_raw", "SLS, silhouette of the raw features", AnalysisSettings(space="raw"), "silhouette"),
    ("sls_calinski_harabasz", "SLS, Calinski-Harabasz of the t-SNE map", AnalysisSettings(), "calinski_harabasz"),
    ("sls_davies_bouldin", "SLS, Davies-Bouldin of the t-SNE map", AnalysisSettings(), "davies_bouldin"),
    ("sls_probe", "SLS, linear-probe accuracy", AnalysisSettings(), "probe_accuracy"),
)
# The other criteria (slsviz.layers.criteria), in the order shown.
OTHER_CRITERIA = {"knn_accuracy": "kNN accuracy (5-fold)", "block_influence": "Block Influence (ShortGPT)",
                  "angular_distance": "angular distance to the last block", "cka_to_last": "linear CKA with the last block"}

# The criteria that are one function of the features alone (kNN also needs the labels).
FEATURE_CRITERIA = {"block_influence": block_influence, "angular_distance": angular_distance_to_last,
                    "cka_to_last": cka_to_last}
# Whether a higher score says a block's output is closer to the end's (None: Block Influence says how
# much a block turns its input, not how good its output is).
HIGHER_IS_BETTER = {"knn_accuracy": True, "block_influence": None, "angular_distance": False, "cka_to_last": True}


@dataclass
class Comparison:
    """Every criterion's scores and pick on one study, and what each pick gives.

    Attributes:
        rows: per criterion (the oracle last): ``name``, ``label``, ``scores`` (one per block, ``None``
            where undefined), ``higher_is_better`` (``None``: neither), ``depth``, ``rule``, ``oracle_distance`` (depth minus the oracle's),
            ``accuracy_as_is``, ``accuracy_head_refit`` (test, at the depth), ``images_per_s``,
            ``flops`` (per image, at the depth).
        cka: linear CKA between every pair of blocks, (L, L).
        oracle_within: the oracle's tolerance (a fraction: 0.01 = 1 point).
        num_layers: L.
        info: the study's model, data and settings, for the record.
        depgraph: the DepGraph baseline at the SLS depth (:func:`depgraph_row`), when asked for.
    """

    rows: list[dict[str, Any]]
    cka: np.ndarray
    oracle_within: float
    num_layers: int
    info: dict[str, Any] = field(default_factory=dict)
    depgraph: dict[str, Any] | None = None

    def table(self) -> pd.DataFrame:
        """One row per criterion, without the per-block scores (``compare.csv``); with stability, its
        mode and 90% interval of depths."""
        return pd.DataFrame([{**{k: v for k, v in row.items() if k not in ("scores", "stability")},
                              **({"stability_mode": row["stability"]["mode"],
                                  "stability_low": row["stability"]["interval"][0],
                                  "stability_high": row["stability"]["interval"][1]} if "stability" in row else {})}
                             for row in self.rows])

    def scores(self) -> pd.DataFrame:
        """Per-block scores, one column per criterion (block 1 first)."""
        return pd.DataFrame({row["name"]: [np.nan if s is None else s for s in row["scores"]] for row in self.rows},
                            index=pd.RangeIndex(1, self.num_layers + 1, name="block"))

    def write(self, out: str | Path) -> list[Path]:
        """Write ``compare.json`` and ``compare.csv`` into the folder ``out``, each atomically; returns the paths."""
        return write_json_and_csv(out, "compare.json", self.to_dict(), "compare.csv", self.table())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``compare.json``)."""
        return {"schema": "slsviz-compare/1", **self.info, "num_layers": self.num_layers,
                "oracle_within": self.oracle_within, "criteria": self.rows, "cka": self.cka.round(6).tolist(),
                "depgraph": self.depgraph}


def _stage(progress: StageProgress | None, name: str) -> Progress | None:
    """``progress`` for one stage, as a ``progress(done, total)`` callback."""
    return (lambda done, total: progress(name, done, total)) if progress else None


def _json(x: Any) -> Any:
    """A float, or ``None`` for NaN (JSON has no NaN)."""
    x = float(x)
    return None if np.isnan(x) else x


def compare(study: Any, *, oracle_within: float = defaults.ORACLE_WITHIN, settings: dict[str, float] | None = None,
            time_budget_s: float = defaults.TIMING_S, resamples: int = 0, depgraph: int | None = None,
            depgraph_retrain: int = 0, progress: StageProgress | None = None) -> Comparison:
    """Every criterion on ``study``'s scored features, its pick and what the pick gives.

    Args:
        study: the model and data, a :class:`slsviz.study.Study` (which calls this; not imported here,
            so that imports run one way).
        oracle_within: the oracle's tolerance on val accuracy (head re-fit), a fraction.
        settings: per other criterion, its setting (see :data:`slsviz.layers.criteria.SETTINGS`).
        time_budget_s: timing per depth (:meth:`slsviz.study.Study.benchmarks`, batch 1).
        resamples: bootstrap resamples for each criterion's stability (:func:`stability`; 0: none).
            Each row then has ``stability``: the resamples' depths, their mode and 90% interval, and
            the 90% band of the scores per block.
        depgraph: add the DepGraph baseline (:func:`depgraph_row`) as :attr:`Comparison.depgraph`, at
            this depth (0: the paper's SLS depth; ``None``: no baseline). At L there is nothing to
            match: the row says so instead.
        depgraph_retrain: epochs of FT for the width-pruned model's adapters and head (0: none).
        progress: ``progress(stage, done, total)``.
    """
    settings = {**SETTINGS, **(settings or {})}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SlsvizError(f"Unknown criterion setting(s) {', '.join(unknown)}: the criteria are {', '.join(SETTINGS)}.")

    L = study.num_layers
    tables = {mapping: study.analysis(mapping).table(progress=_stage(progress, f"{mapping.projection} maps of every block"))
              for mapping in dict.fromkeys(mapping for _, _, mapping, _ in SLS_VARIANTS)}
    features, labels = study.scored_features()
    oracle = oracle_pick(study.accuracy_head_refit("val"), oracle_within)
    picks = [*sls_picks(tables), *other_picks(features, labels, settings), oracle]
    accuracy = study.depth_table(progress=_stage(progress, "features of the test split"))
    timed = study.benchmarks(time_budget_s=time_budget_s,
                             progress=_stage(progress, f"timing all {L} depths, interleaved"))
    rows = []
    for pick in picks:
        d = pick["depth"]
        rows.append({**pick, "scores": [_json(s) for s in pick["scores"]], "oracle_distance": d - oracle["depth"],
                     "accuracy_as_is": _json(accuracy["accuracy_as_is"].iloc[d - 1]),
                     "accuracy_head_refit": _json(accuracy["accuracy_head_refit"].iloc[d - 1]),
                     "images_per_s": float(timed[d].images_per_s), "flops": int(timed[d].flops_per_image)})
    if resamples:
        spreads = stability(study, count=resamples, settings=settings, progress=progress)
        for row in rows:
            if row["name"] in spreads:
                row["stability"] = spreads[row["name"]].to_dict()
    loaded = study.loaded
    info = {"backbone": loaded.backbone.id, "method": loaded.method, "dataset": loaded.data.name,
            "num_images": int(len(labels)), "num_test_images": study.bank("test").num_samples,
            "device": str(timed[L].device), "settings": {**settings, "alpha": defaults.ALPHA},
            "resamples": resamples}
    baseline = None
    if depgraph is not None:
        at = depgraph or rows[0]["depth"]
        if not 1 <= at <= L:
            raise SlsvizError(f"The DepGraph baseline's depth must be 1..{L}, not {at}.")
        baseline = (depgraph_row(study, at, time_budget_s=time_budget_s, retrain_epochs=depgraph_retrain,
                                 progress=progress) if at < L else
                    {"name": "depgraph", "depth": at, "skipped": f"The depth to match keeps all {L} blocks: no FLOPs "
                                                                 "to prune down to. Give a depth below it."})
    return Comparison(rows, cka_matrix(features), oracle_within, L, info, baseline)


def sls_picks(tables: dict[AnalysisSettings, pd.DataFrame], alpha: float = defaults.ALPHA,
              names: list[str] | None = None) -> list[dict[str, Any]]:
    """The SLS family's picks (:data:`SLS_VARIANTS`, or those ``names``) under ``alpha``, from each
    mapping's table of every block's scores (:meth:`slsviz.layers.analysis.LayerAnalysis.table`).

    Returns:
        Per variant: ``name``, ``label``, ``scores`` (float64, one per block), ``higher_is_better``,
        ``depth`` and ``rule`` (the reason in words).
    """
    picks = []
    for name, label, mapping, metric in SLS_VARIANTS:
        if names is None or name in names:
            scores = tables[mapping][metric].to_numpy(dtype=np.float64)
            rule = SLSRule(alpha, METRICS[metric]).fit(scores)
            picks.append({"name": name, "label": label, "scores": scores, "higher_is_better": METRICS[metric],
                          "depth": int(rule.depth_), "rule": rule.reason_})
    return picks


def other_picks(features: np.ndarray, labels: np.ndarray, settings: dict[str, float] | None = None, *,
                seed: int = defaults.SEED, names: list[str] | None = None) -> list[dict[str, Any]]:
    """The other criteria's picks (:data:`OTHER_CRITERIA`, or those ``names``) on the scored
    ``features`` (L, N, D), each under its setting; kNN's folds are drawn from ``seed``. Keys: see
    :func:`sls_picks`."""
    settings = {**SETTINGS, **(settings or {})}
    picks = []
    for name, label in OTHER_CRITERIA.items():
        if names is None or name in names:
            scores = SCHEDULER.run_heavy(lambda: knn_accuracy(features, labels, seed=seed) if name == "knn_accuracy"
                                         else FEATURE_CRITERIA[name](features))
            depth, rule = criterion_depth(name, scores, settings[name])
            picks.append({"name": name, "label": label, "scores": scores, "higher_is_better": HIGHER_IS_BETTER[name],
                          "depth": depth, "rule": rule})
    return picks


def oracle_pick(val_accuracy: np.ndarray, within: float) -> dict[str, Any]:
    """The oracle: the smallest depth whose val accuracy with a re-fit head (``val_accuracy``, one per
    depth) is within ``within`` of the full model's. Keys: see :func:`sls_picks`."""
    points = f"{100 * within:g} point" + ("" if 100 * within == 1 else "s")
    return {"name": "oracle", "label": f"oracle (val, head re-fit, within {points})", "scores": val_accuracy,
            "higher_is_better": True, "depth": oracle_depth(val_accuracy, within),
            "rule": f"The smallest depth whose val accuracy with a re-fit head is within {points} of the full model's."}


class _Resampled:
    """Criteria on a resample of the scored images (indices into them), one resample at a time."""

    def __init__(self, study: Any, seed: int) -> None:
        self.features, self.labels = study.scored_features()
        self.n_train, self.workers, self.seed = study.bank("train").num_samples, study.workers, seed
        self._analysis: tuple[tuple, LayerAnalysis] | None = None

    def sls(self, settings: AnalysisSettings, idx: np.ndarray, map_seed: int) -> np.ndarray:
        """``settings``' score of every block (a :class:`LayerAnalysis` of the resample): on new maps
        (``map_seed``), on the raw features, or the probe fit on the resample's train images and scored
        on its val images."""
        probe = settings.metric == "probe_accuracy"
        mapping = replace(settings, seed=self.seed if probe else map_seed)
        key = (idx.tobytes(), probe, replace(mapping, metric=defaults.METRIC, alpha=defaults.ALPHA))
        if self._analysis is None or self._analysis[0] != key:
            # One resample at a time: the variants on the same maps come one after another and share them.
            train, val = idx[idx < self.n_train], idx[idx >= self.n_train]
            self._analysis = key, LayerAnalysis(
                self.features[:, idx], self.labels[idx], mapping, runner=Parallel(self.workers),
                probe=(self.features[:, train], self.labels[train], self.features[:, val], self.labels[val]) if probe else None)
        analysis = self._analysis[1]
        return np.array([analysis.score(layer, settings.metric) for layer in range(1, analysis.num_layers + 1)])

    def knn(self, idx: np.ndarray) -> np.ndarray:
        """kNN accuracy on each drawn image once (a duplicate in another fold would be its own nearest
        neighbour), with fewer folds when a class drew fewer than five images."""
        drawn = np.unique(idx)
        smallest = np.unique(self.labels[drawn], return_counts=True)[1].min()
        if smallest < 2:
            raise DataError("A bootstrap resample drew a single image of some class, too few for kNN's "
                            "cross-validation: score more images per split for the stability of kNN.")
        return SCHEDULER.run_heavy(lambda: knn_accuracy(self.features[:, drawn], self.labels[drawn],
                                                        folds=int(max(2, min(defaults.KNN_FOLDS, smallest))),
                                                        seed=self.seed))




def _each_resample(n: int, count: int, seed: int, progress: StageProgress | None) -> Iterator[tuple[np.ndarray, int]]:
    """The resamples' ``(indices, map_seed)``, reporting progress after each one is used."""
    draws, report = draw(n, count, seed), _stage(progress, "stability (bootstrap resamples)")
    for done, resample in enumerate(draws, start=1):
        yield resample
        if report is not None:
            report(done, len(draws))


def stability(study: Any, *, count: int, seed: int = defaults.SEED, criteria: list[str] | None = None,
              settings: dict[str, float] | None = None, progress: StageProgress | None = None) -> dict[str, Spread]:
    """Every criterion (all but the oracle, or ``criteria``) on ``count`` bootstrap resamples of the
    scored images (:func:`slsviz.layers.stability.resamples`): each one's depths and scores.

    Per resample the maps are drawn again with the resample's seed (t-SNE once for the silhouette,
    Calinski-Harabasz and Davies-Bouldin variants, UMAP once); the probe is fit on the resample's train
    images and scored on its val images, as on the whole; kNN: see :meth:`_Resampled.knn`.
    ``study``: see :func:`compare`.
    """
    settings = {**SETTINGS, **(settings or {})}
    names = [name for name, *_ in SLS_VARIANTS] + list(OTHER_CRITERIA)
    chosen = names if criteria is None else list(criteria)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SlsvizError(f"No stability for {', '.join(unknown)}: the criteria are {', '.join(names)}.")
    on = _Resampled(study, seed)
    variants = {name: AnalysisSettings(projection=mapping.projection, space=mapping.space, metric=metric)
                for name, _, mapping, metric in SLS_VARIANTS}
    def score(name: str, idx: np.ndarray, map_seed: int) -> np.ndarray:
        if name in variants:
            return on.sls(variants[name], idx, map_seed)
        return on.knn(idx) if name == "knn_accuracy" else FEATURE_CRITERIA[name](on.features[:, idx])

    def depth(name: str, scores: np.ndarray) -> int:
        if name in variants:
            return int(SLSRule(defaults.ALPHA, variants[name].higher_is_better).fit(scores).depth_)
        return criterion_depth(name, scores, settings[name])[0]

    # Resample by resample, every criterion in turn, so that one resample's maps serve all its variants.
    scores: dict[str, list[np.ndarray]] = {name: [] for name in chosen}
    for idx, map_seed in _each_resample(len(on.labels), count, seed, progress):
        for name in chosen:
            scores[name].append(np.asarray(score(name, idx, map_seed), dtype=np.float64))
    return {name: Spread(np.array([depth(name, s) for s in scores[name]]), np.stack(scores[name])) for name in chosen}


def settings_stability(study: Any, settings: AnalysisSettings, *, count: int,
                       progress: StageProgress | None = None) -> Spread:
    """The SLS rule under ``settings`` (any map, score and alpha, as the Layers page sets them) on
    ``count`` bootstrap resamples, seeded by ``settings.seed``: the depths, and the band of each
    block's score."""
    on = _Resampled(study, settings.seed)
    scores = [on.sls(settings, idx, map_seed)
              for idx, map_seed in _each_resample(len(on.labels), count, settings.seed, progress)]
    rule = SLSRule(settings.alpha, settings.higher_is_better)
    return Spread(np.array([int(rule.fit(s).depth_) for s in scores]), np.stack(scores))


def depgraph_row(study: Any, depth: int, *, time_budget_s: float = defaults.TIMING_S, taylor_batches: int = 4,
                 retrain_epochs: int = 0, progress: StageProgress | None = None) -> dict[str, Any]:
    """The paper's baseline beside SLS at ``depth``: the backbone width-pruned with DepGraph to the FLOPs
    of the ``depth``-block model (:func:`slsviz.pruning.depgraph.width_prune_to_flops`, Taylor
    importance from ``taylor_batches`` train batches), its test accuracy as is and with a head re-fit
    on its own train features, its throughput timed in the same rounds as the model at every depth,
    and its storage per task (a pruned backbone for every task); with ``retrain_epochs``, also its test
    accuracy after training its adapters and head further (the paper's FT). ``study``: see :func:`compare`."""
    import itertools

    from slsviz.data import make_loader
    from slsviz.layers.features import feature_bank
    from slsviz.models.depth import depth_views
    from slsviz.pruning.accuracy import accuracy_as_is, fit_head, normed, retrain_pruned
    from slsviz.pruning.bench import benchmark_models, prepare_for_timing
    from slsviz.pruning.depgraph import width_prune_to_flops

    loaded = study.loaded
    size, device = loaded.backbone.img_size, loaded.backbone.device
    merged = prepare_for_timing(loaded.model)
    loader = make_loader(loaded.data, "train", loaded.preprocess, study.batch_size, limit=study.limit)
    batches = [(x, y) for x, y in itertools.islice(iter(loader), taylor_batches)]
    flops = study.benchmarks(time_budget_s=time_budget_s)[depth].flops_per_image
    pruned = SCHEDULER.run_heavy(lambda: width_prune_to_flops(loaded.model, flops, size, batches=batches))
    banks = {split: SCHEDULER.run_heavy(lambda: feature_bank(  # noqa: B023 - called at once
        pruned.model, loaded.data, split, loaded.preprocess, backbone_checksum="depgraph", batch_size=study.batch_size,
        limit=study.limit, device=device, use_cache=False,
        progress=_stage(progress, f"features of the {split} split, width-pruned model")))
        for split in ("train", "test")}
    L = banks["test"].num_layers
    head = SCHEDULER.run_heavy(lambda: fit_head(pruned.model, banks["train"], L))
    refit = float(head.score(normed(pruned.model, banks["test"].layer(L)), banks["test"].labels))
    as_is = float(accuracy_as_is(pruned.model, banks["test"])[-1]) if loaded.head[0] else float("nan")
    # Every depth and the width-pruned model in the same rounds, so that the chart's two series compare.
    views = depth_views(merged, range(1, study.num_layers + 1))
    with SCHEDULER.timing():
        timed = benchmark_models({**views, "depgraph": pruned.model}, size, batch_size=1, device=device,
                                 time_budget_s=time_budget_s, merged=True,
                                 progress=_stage(progress, "timing every depth and DepGraph together"))
    params = sum(p.numel() * p.element_size() for p in pruned.model.parameters())
    retrained: dict[str, Any] = {}
    if retrain_epochs:
        if loaded.method in ("lora", "repadapter"):
            retrained = {"retrained_note": f"{loaded.method} was merged into the backbone to be width-pruned, so it "
                                           "has no adapters left to train; only Convpass and AdaptFormer retrain."}
        else:
            with SCHEDULER.training():
                out = retrain_pruned(pruned.model, loaded.data, loaded.preprocess, kind="ft", epochs=retrain_epochs,
                                     device=device, limit=study.limit,
                                     progress=(lambda e, n, _: progress("retraining the width-pruned model", e, n))
                                     if progress else None)
            retrained = {"accuracy_retrained": out["accuracy_retrained"], "retrain_epochs": retrain_epochs}
    return {**retrained, "name": "depgraph", "label": f"DepGraph width pruning at the FLOPs of depth {depth}", "depth": depth,
            "ratio": pruned.ratio, "heads": pruned.heads, "mlp_hidden": pruned.mlp_hidden, "flops": pruned.flops,
            "target_flops": pruned.target_flops, "accuracy_as_is": _json(as_is), "accuracy_head_refit": refit,
            "images_per_s": float(timed["depgraph"].images_per_s),
            "sls_images_per_s_same_rounds": float(timed[depth].images_per_s),
            "depth_images_per_s_same_rounds": [float(timed[d].images_per_s) for d in views],
            "bytes_per_task": int(params)}
