"""Which depth? SLS beside the other layer criteria and the oracle, on one study (``slsviz compare``).

:func:`compare` asks a study's parts for everything from their caches (features, maps, per-depth
accuracies, timings) and puts every criterion's scores and pick side by side with what the pick
gives: test accuracy as is and with a head re-fit, measured throughput, FLOPs, and its distance from
the oracle (the smallest depth within ``oracle_within`` of the full model's val accuracy, head
re-fit). The scored images are the study's (train + val); the oracle reads val, the rows read test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.errors import SlsvizError
from slsviz.layers.criteria import SETTINGS, cka_matrix
from slsviz.progress import StageProgress, one_stage
from slsviz.scheduler import SCHEDULER
from slsviz.storage import json_float, write_json_and_csv
from slsviz.study.criteria import SLS_VARIANTS, depth_at, oracle_pick, other_picks, sls_picks
from slsviz.study.resampling import stability

if TYPE_CHECKING:
    from slsviz.study.facade import Study


@dataclass(frozen=True)
class Calibrated:
    """A criterion at the setting a sweep's leaderboard calibrated for it on all its tasks
    (:attr:`slsviz.sweep.leaderboard.Leaderboard.calibrated`)."""

    criterion: str
    setting: float
    sweep: str
    tasks: int

    def pick(self, base: dict[str, Any]) -> dict[str, Any]:
        """The criterion's row ``base`` (its scores) read at the calibrated setting."""
        depth = depth_at(self.criterion, np.asarray(base["scores"], dtype=np.float64), self.setting)
        return {**base, "name": f"{self.criterion}_calibrated", "depth": depth, "setting": self.setting,
                "label": f"{base['label']}, calibrated on sweep {self.sweep} ({self.tasks} tasks): {self.setting:g}",
                "rule": f"{base['rule']} At the setting {self.setting:g}, calibrated on sweep {self.sweep}."}


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


def compare(study: Study, *, oracle_within: float = defaults.ORACLE_WITHIN, settings: dict[str, float] | None = None,
            time_budget_s: float = defaults.TIMING_S, resamples: int = 0, depgraph: int | None = None,
            depgraph_retrain: int = 0, calibrated: Calibrated | None = None,
            progress: StageProgress | None = None) -> Comparison:
    """Every criterion on ``study``'s scored features, its pick and what the pick gives.

    Args:
        study: the model and data, whose parts hold the features, maps, accuracies and timings.
        oracle_within: the oracle's tolerance on val accuracy (head re-fit), a fraction.
        settings: per other criterion, its setting (see :data:`slsviz.layers.criteria.SETTINGS`).
        time_budget_s: timing per depth (:meth:`slsviz.study.timing.Timing.benchmarks`, batch 1).
        resamples: bootstrap resamples for each criterion's stability (:func:`stability`; 0: none).
            Each row then has ``stability``: the resamples' depths, their mode and 90% interval, and
            the 90% band of the scores per block.
        depgraph: add the DepGraph baseline (:func:`depgraph_row`) as :attr:`Comparison.depgraph`, at
            this depth (0: the paper's SLS depth; ``None``: no baseline). At L there is nothing to
            match: the row says so instead.
        depgraph_retrain: epochs of FT for the width-pruned model's adapters and head (0: none).
        calibrated: one more row: a criterion at the setting a sweep calibrated for it, named by the sweep.
        progress: ``progress(stage, done, total)``.
    """
    settings = {**SETTINGS, **(settings or {})}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SlsvizError(f"Unknown criterion setting(s) {', '.join(unknown)}: the criteria are {', '.join(SETTINGS)}.")

    L = study.num_layers
    tables = {mapping: study.layers.analysis(mapping).table(
        progress=one_stage(progress, f"{mapping.projection} maps of every block"))
        for mapping in dict.fromkeys(mapping for _, _, mapping, _ in SLS_VARIANTS)}
    features, labels = study.features.scored()
    cka = SCHEDULER.run_heavy(lambda: cka_matrix(features))
    oracle = oracle_pick(study.depths.head_refit_accuracy("val"), oracle_within)
    given = {"cka_to_last": cka[:, -1], "val_loss": study.depths.head_refit_loss("val"),
             "taylor": study.depths.taylor()}
    picks = [*sls_picks(tables, settings=settings), *other_picks(features, labels, settings, scores_given=given), oracle]
    if calibrated is not None:
        base = next((p for p in picks if p["name"] == calibrated.criterion), None)
        if base is None:
            raise SlsvizError(f"{calibrated.criterion} is not computed for this model (it reads the task's loss "
                              "through the task's own head), so its calibrated setting cannot be read here.")
        picks.insert(-1, calibrated.pick(base))
    accuracy = study.depths.table(progress=one_stage(progress, "features of the test split"))
    timed = study.timing.benchmarks(time_budget_s=time_budget_s,
                                    progress=one_stage(progress, f"timing all {L} depths, interleaved"))
    widths = study.features.bank("train").meta.get("widths")  # a Swin's, per block
    rows = []
    for pick in picks:
        d = pick["depth"]
        if widths and pick["name"] in WIDTH_BOUND:
            pick = {**pick, "width_note": width_note(pick["name"], widths)}
        rows.append({**pick, "scores": [json_float(s) for s in pick["scores"]], "oracle_distance": d - oracle["depth"],
                     "accuracy_as_is": json_float(accuracy["accuracy_as_is"].iloc[d - 1]),
                     "accuracy_head_refit": json_float(accuracy["accuracy_head_refit"].iloc[d - 1]),
                     "images_per_s": float(timed[d].images_per_s), "flops": int(timed[d].flops_per_image)})
    if resamples:
        spreads = stability(study.features, count=resamples, workers=study.layers.workers, settings=settings,
                            progress=progress)
        for row in rows:
            if row["name"] in spreads:
                row["stability"] = spreads[row["name"]].to_dict()
    loaded = study.loaded
    info = {"backbone": loaded.backbone.id, "method": loaded.method, "dataset": loaded.data.name,
            "num_images": int(len(labels)), "num_test_images": study.features.bank("test").num_samples,
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
    return Comparison(rows, cka, oracle_within, L, info, baseline)


# The criteria that compare two blocks' features vector by vector (CKA: by their Gram matrices).
WIDTH_BOUND = ("block_influence", "angular_distance", "cka_to_last")


def width_note(name: str, widths: list[int]) -> str:
    """Which width a criterion of :data:`WIDTH_BOUND` compares a Swin's blocks at (``widths``: per block)."""
    kept = ", ".join(map(str, dict.fromkeys(widths)))
    if name == "cka_to_last":
        return (f"Blocks {kept} wide: CKA compares the images' Gram matrices, which do not need one width (the zero "
                "columns that pad a narrower block change none).")
    return (f"Blocks {kept} wide, each zero-padded to {max(widths)}: this criterion's cosines compare two blocks' "
            "vectors, so blocks of different stages are compared through the zero padding of the narrower one.")


def depgraph_row(study: Study, depth: int, *, time_budget_s: float = defaults.TIMING_S, taylor_batches: int = 4,
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
    from slsviz.models.swin import SwinBlocks
    from slsviz.pruning.accuracy import accuracy_as_is, fit_head, head_input, retrain_pruned
    from slsviz.pruning.bench import benchmark_models, prepare_for_timing
    from slsviz.pruning.depgraph import SWIN_HEADS_KEPT, width_prune_to_flops

    loaded = study.loaded
    size, device = loaded.backbone.img_size, loaded.backbone.device
    merged = prepare_for_timing(loaded.model)
    store = study.features
    loader = make_loader(loaded.data, "train", loaded.preprocess, store.batch_size, limit=store.limit)
    batches = [(x, y) for x, y in itertools.islice(iter(loader), taylor_batches)]
    flops = study.timing.benchmarks(time_budget_s=time_budget_s)[depth].flops_per_image
    pruned = SCHEDULER.run_heavy(lambda: width_prune_to_flops(loaded.model, flops, size, batches=batches))
    banks = {split: SCHEDULER.run_heavy(lambda: feature_bank(  # noqa: B023 - called at once
        pruned.model, loaded.data, split, loaded.preprocess, backbone_checksum="depgraph", batch_size=store.batch_size,
        limit=store.limit, device=device, use_cache=False,
        progress=one_stage(progress, f"features of the {split} split, width-pruned model")))
        for split in ("train", "test")}
    L = banks["test"].num_layers
    head = SCHEDULER.run_heavy(lambda: fit_head(pruned.model, banks["train"], L))
    refit = float(head.score(head_input(pruned.model, banks["test"], L), banks["test"].labels))
    as_is = float(accuracy_as_is(pruned.model, banks["test"])[-1]) if loaded.head_applies else float("nan")
    # Every depth and the width-pruned model in the same rounds, so that the chart's two series compare.
    views = depth_views(merged, range(1, study.num_layers + 1))
    with SCHEDULER.timing():
        timed = benchmark_models({**views, "depgraph": pruned.model}, size, batch_size=1, device=device,
                                 time_budget_s=time_budget_s, merged=True,
                                 progress=one_stage(progress, "timing every depth and DepGraph together"))
    params = sum(p.numel() * p.element_size() for p in pruned.model.parameters())
    retrained: dict[str, Any] = {"width_note": SWIN_HEADS_KEPT} if isinstance(loaded.model, SwinBlocks) else {}
    if retrain_epochs:
        if loaded.method in ("lora", "repadapter"):
            retrained["retrained_note"] = (f"{loaded.method} was merged into the backbone to be width-pruned, so it "
                                          "has no adapters left to train; only Convpass and AdaptFormer retrain.")
        else:
            with SCHEDULER.training():
                out = retrain_pruned(pruned.model, loaded.data, loaded.preprocess, kind="ft", epochs=retrain_epochs,
                                     device=device, limit=store.limit,
                                     progress=(lambda e, n, _: progress("retraining the width-pruned model", e, n))
                                     if progress else None)
            retrained.update(accuracy_retrained=out["accuracy_retrained"], retrain_epochs=retrain_epochs)
    return {**retrained, "name": "depgraph", "label": f"DepGraph width pruning at the FLOPs of depth {depth}", "depth": depth,
            "ratio": pruned.ratio, "heads": pruned.heads, "mlp_hidden": pruned.mlp_hidden, "flops": pruned.flops,
            "target_flops": pruned.target_flops, "accuracy_as_is": json_float(as_is), "accuracy_head_refit": refit,
            "images_per_s": float(timed["depgraph"].images_per_s),
            "sls_images_per_s_same_rounds": float(timed[depth].images_per_s),
            "depth_images_per_s_same_rounds": [float(timed[d].images_per_s) for d in views],
            "bytes_per_task": int(params)}
