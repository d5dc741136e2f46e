"""Which criterion to trust across tasks: a sweep's picks scored against each task's oracle, and
every criterion's setting calibrated on the other tasks (leave-one-task-out).

Three steps, each a plain function:

1. *outcomes*: per task, criterion and setting, what the pick gives - its distance from the oracle,
   the test accuracy lost against the full model (head re-fit, and as is), FLOPs saved and measured
   speedup. :func:`fixed_outcomes` reads them off the sweep's results table (the settings the sweep
   ran); :func:`loto_outcomes` makes them for settings calibrated on the other tasks.
2. :func:`leaderboard`: per criterion and setting, the mean over tasks of each outcome with a 95%
   bootstrap interval over tasks, the worst distance and the share of tasks within one block.
3. :func:`build`: both for a sweep's folder (``leaderboard.csv`` and ``leaderboard.json``).

A calibrated setting is chosen on the other tasks only: the one whose picks land nearest their oracle
(mean ``|depth - oracle|``; ties: the smaller mean accuracy lost, then the setting nearest the default),
so its error on the left-out task is what a new task would see.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slsviz import defaults
from slsviz.errors import SlsvizError
from slsviz.layers.criteria import SETTINGS
from slsviz.storage import json_float, write_json_and_csv
from slsviz.study.comparison import Calibrated
from slsviz.study.criteria import CALIBRATION_GRID, SLS_VARIANTS, depth_at

# The outcomes averaged over tasks, each with a bootstrap interval (``<name>_low``, ``<name>_high``).
MEANS = ("abs_distance", "within_one", "accuracy_lost_head_refit", "accuracy_lost_as_is", "flops_saved", "speedup")
FIXED, LOTO = "fixed", "leave-one-task-out"
BOOTSTRAP = 2000


def fixed_outcomes(results: pd.DataFrame) -> pd.DataFrame:
    """One row per task, criterion, setting and seed of a sweep's results table (``results.csv``): what
    the pick gives. Columns: ``task, criterion, setting, kind, seed, depth, distance`` and the
    outcomes of :data:`MEANS` (NaN where not measured: as-is accuracy without a task head, speedup
    without benchmarks). The oracle's own rows are left out: it is the reference."""
    t = results[results["criterion"] != "oracle"]
    setting = t["setting"] if "setting" in t else t["alpha"]  # results of slsviz < 0.9 had no setting column
    out = pd.DataFrame({"task": t["task"], "criterion": t["criterion"], "setting": setting.astype(float),
                        "kind": FIXED, "seed": t["seed"], "depth": t["depth"], "distance": t["oracle_distance"]})
    out["abs_distance"] = out["distance"].abs()
    out["within_one"] = (out["abs_distance"] <= 1).astype(float)
    for kind in ("head_refit", "as_is"):
        column = f"accuracy_{kind}"
        out[f"accuracy_lost_{kind}"] = (t[f"{column}_full"] - t[column]) if column in t else np.nan
    out["flops_saved"] = 1 - t["flops"] / t["flops_full"]
    out["speedup"] = t["images_per_s"] / t["images_per_s_full"] if "images_per_s" in t else np.nan
    return out.reset_index(drop=True)


def _interval(values: np.ndarray, draws: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of ``values`` over the resampled tasks ``draws``."""
    if np.isnan(values).all():
        return np.nan, np.nan
    with warnings.catch_warnings():  # a draw of only undefined values (as-is accuracy without a head) is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values[draws], axis=1)
    return tuple(float(q) for q in np.nanpercentile(means, [2.5, 97.5]))


def leaderboard(outcomes: pd.DataFrame, *, resamples: int = BOOTSTRAP, seed: int = defaults.SEED) -> pd.DataFrame:
    """Per criterion, setting and kind: over the tasks (a task's seeds averaged first), the mean of
    each of :data:`MEANS` with its 95% percentile bootstrap interval (tasks drawn with replacement,
    ``resamples`` times, the same draws for every row of as many tasks), the worst ``|depth - oracle|``
    and the mean signed distance. Sorted by mean ``|depth - oracle|``, then accuracy lost."""
    rows = []
    keys = ["criterion", "setting", "kind"]
    per_task = outcomes.groupby([*keys, "task"], sort=False, dropna=False)[["distance", *MEANS]].mean().reset_index()
    for (criterion, setting, kind), group in per_task.groupby(keys, sort=False, dropna=False):
        n = len(group)
        draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        row: dict[str, Any] = {"criterion": criterion, "setting": setting, "kind": kind, "tasks": n,
                               "mean_distance": group["distance"].mean(),
                               "worst_abs_distance": group["abs_distance"].max()}
        for name in MEANS:
            values = group[name].to_numpy(dtype=np.float64)
            row[name] = float(np.nanmean(values)) if not np.isnan(values).all() else np.nan
            row[f"{name}_low"], row[f"{name}_high"] = _interval(values, draws)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["abs_distance", "accuracy_lost_head_refit"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class TaskRecord:
    """One finished task as a calibration reads it (its ``report.json``).

    Attributes:
        name: the task.
        oracle: the oracle's depth.
        scores: per criterion, every block's score (the first seed's; NaN where undefined).
        accuracy: per kind (``head_refit``, ``as_is``), test accuracy at every depth (index d-1).
        flops: FLOPs per image at every depth.
        images_per_s: throughput at every depth (``None``: not benchmarked).
    """

    name: str
    oracle: int
    scores: dict[str, np.ndarray]
    accuracy: dict[str, np.ndarray]
    flops: np.ndarray
    images_per_s: np.ndarray | None

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> TaskRecord:
        seeds = [key for key in report["scores"] if key != "oracle"]
        first = report["scores"][seeds[0]] if seeds else {}
        table = report["depth_table"]
        timed = report.get("benchmarks")
        return cls(name=report["task"]["name"],
                   oracle=next(p["depth"] for p in report["picks"] if p["name"] == "oracle"),
                   scores={name: np.array([np.nan if s is None else s for s in values], dtype=np.float64)
                           for name, values in first.items()},
                   accuracy={kind: np.array([np.nan if r[f"accuracy_{kind}"] is None else r[f"accuracy_{kind}"]
                                             for r in table], dtype=np.float64) for kind in ("head_refit", "as_is")},
                   flops=np.asarray(report["flops"], dtype=np.float64),
                   images_per_s=np.array([r["images_per_s"] for r in timed], dtype=np.float64) if timed else None)

    def outcome(self, depth: int) -> dict[str, float]:
        """What cutting at ``depth`` gives on this task (the keys of :data:`MEANS`, and ``distance``)."""
        distance = depth - self.oracle
        out = {"depth": depth, "distance": distance, "abs_distance": abs(distance),
               "within_one": float(abs(distance) <= 1), "flops_saved": 1 - self.flops[depth - 1] / self.flops[-1],
               "speedup": (self.images_per_s[depth - 1] / self.images_per_s[-1]
                           if self.images_per_s is not None else np.nan)}
        for kind, accuracy in self.accuracy.items():
            out[f"accuracy_lost_{kind}"] = accuracy[-1] - accuracy[depth - 1]
        return out


def default_setting(criterion: str) -> float:
    """The setting a criterion is used with unless calibrated: alpha for the SLS variants read by alpha."""
    return SETTINGS.get(criterion, defaults.ALPHA)


def best_setting(records: list[TaskRecord], criterion: str, grid: tuple[float, ...] | None = None) -> float:
    """The setting of ``criterion`` (from ``grid``, default :data:`CALIBRATION_GRID`) whose picks on
    ``records`` land nearest their oracles: the smallest mean ``|depth - oracle|``; ties go to the
    smaller mean accuracy lost (head re-fit), then to the setting nearest the default."""
    grid = CALIBRATION_GRID[criterion] if grid is None else grid
    if not records:
        raise SlsvizError("Calibrating a setting needs at least one finished task.")

    def cost(setting: float) -> tuple[float, float, float]:
        picked = [r.outcome(depth_at(criterion, r.scores[criterion], setting)) for r in records]
        return (float(np.mean([p["abs_distance"] for p in picked])),
                float(np.nanmean([p["accuracy_lost_head_refit"] for p in picked])),
                abs(setting - default_setting(criterion)))

    return min(grid, key=cost)


def loto_outcomes(records: list[TaskRecord], criteria: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every criterion calibrated leave-one-task-out: for each task, the setting :func:`best_setting`
    picks on the other tasks, and what it gives on the task left out.

    Returns:
        ``(outcomes, chosen)``: outcome rows as :func:`fixed_outcomes`' (``kind`` :data:`LOTO`,
        ``setting`` NaN: it differs per task), and per criterion and left-out task the setting chosen.
    """
    if len(records) < 2:
        return pd.DataFrame(), pd.DataFrame(columns=["criterion", "task", "setting"])
    available = set.intersection(*(set(r.scores) for r in records))
    criteria = [c for c in (criteria or CALIBRATION_GRID) if c in available and c in CALIBRATION_GRID]
    rows, chosen = [], []
    for criterion in criteria:
        for k, left_out in enumerate(records):
            setting = best_setting(records[:k] + records[k + 1:], criterion)
            depth = depth_at(criterion, left_out.scores[criterion], setting)
            rows.append({"task": left_out.name, "criterion": criterion, "setting": np.nan, "kind": LOTO, "seed": None,
                         **left_out.outcome(depth)})
            chosen.append({"criterion": criterion, "task": left_out.name, "setting": setting})
    return pd.DataFrame(rows), pd.DataFrame(chosen)


def read_records(folder: str | Path, tasks: list[str]) -> list[TaskRecord]:
    """The finished ``tasks``' records from a sweep folder's ``tasks/<name>/report.json``."""
    return [TaskRecord.from_report(json.loads((Path(folder) / "tasks" / name / "report.json").read_text(encoding="utf-8")))
            for name in tasks]


@dataclass
class Leaderboard:
    """A sweep's leaderboard.

    Attributes:
        table: :func:`leaderboard` of the fixed settings and the leave-one-task-out calibrations.
        chosen: per criterion and left-out task, the setting calibrated on the others.
        calibrated: per criterion, the setting calibrated on every task (what a new task would use).
        tasks: the tasks it reads.
        sweep: the sweep's name.
        outcomes: the per-task outcomes the table averages (both kinds).
    """

    table: pd.DataFrame
    chosen: pd.DataFrame
    calibrated: dict[str, float]
    tasks: list[str]
    sweep: str
    outcomes: pd.DataFrame = field(default_factory=pd.DataFrame)

    def best(self, kind: str = LOTO) -> dict[str, Any] | None:
        """The row of ``kind`` nearest the oracle on average (``None``: no such row)."""
        rows = self.table[self.table["kind"] == kind] if len(self.table) else self.table
        if rows.empty:
            return None
        plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in rows.iloc[0].to_dict().items()}
        return {k: json_float(v) if isinstance(v, float) else v for k, v in plain.items()}

    def offer(self, unavailable: tuple[str, ...] = ()) -> Calibrated | None:
        """The criterion nearest the oracle when calibrated on the other tasks (of those not
        ``unavailable`` where it is to be read), at the setting calibrated on all of them: what the
        Compare page offers a new task (``None``: nothing calibrated)."""
        rows = self.table[(self.table["kind"] == LOTO) & ~self.table["criterion"].isin(unavailable)] \
            if len(self.table) else self.table
        criterion = next((c for c in rows["criterion"] if c in self.calibrated), None) if len(rows) else None
        return None if criterion is None else Calibrated(criterion, self.calibrated[criterion], self.sweep,
                                                         len(self.tasks))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``leaderboard.json``)."""
        return {"schema": "slsviz-leaderboard/1", "sweep": self.sweep, "tasks": self.tasks,
                "calibrated_on_all_tasks": self.calibrated,
                "chosen_per_left_out_task": self.chosen.to_dict("records"), "best_calibrated": self.best(LOTO),
                "best_fixed": self.best(FIXED), "bootstrap_resamples": BOOTSTRAP}

    def write(self, folder: str | Path) -> list[Path]:
        """``leaderboard.json`` and ``leaderboard.csv`` into the sweep's folder, each atomically."""
        return write_json_and_csv(folder, "leaderboard.json", self.to_dict(), "leaderboard.csv", self.table)


def build(results: pd.DataFrame, records: list[TaskRecord], sweep: str = "") -> Leaderboard:
    """The leaderboard of a sweep: its results table's fixed settings and every criterion calibrated
    leave-one-task-out on its finished tasks' ``records``."""
    fixed = fixed_outcomes(results) if len(results) else pd.DataFrame()
    loto, chosen = loto_outcomes(records)
    outcomes = pd.concat([frame for frame in (fixed, loto) if len(frame)], ignore_index=True) \
        if len(fixed) or len(loto) else pd.DataFrame()
    table = leaderboard(outcomes) if len(outcomes) else pd.DataFrame()
    criteria = [c for c in CALIBRATION_GRID if records and all(c in r.scores for r in records)]
    calibrated = {c: float(best_setting(records, c)) for c in criteria}
    return Leaderboard(table, chosen, calibrated, [r.name for r in records], sweep, outcomes)


def labels() -> dict[str, str]:
    """Criterion name -> its label in words (the SLS variants' and the others')."""
    from slsviz.study.criteria import OTHER_CRITERIA

    return {**{name: label for name, label, *_ in SLS_VARIANTS}, **OTHER_CRITERIA}
