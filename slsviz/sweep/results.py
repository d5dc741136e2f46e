"""A sweep's results folder, read back: depths per task and criterion, what each gives, and the
storage of many tasks (the paper's argument, on the user's own tasks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slsviz.errors import SlsvizError
from slsviz.pruning.footprint import FULL_PETL, PRUNED, SLS
from slsviz.sweep.leaderboard import Leaderboard, build, read_records

# How many tasks are stored, three ways (the curves of :meth:`SweepResults.storage_growth`).
SCHEMES = {
    SLS: f"{SLS}: one shared backbone + per task the kept blocks' adapters, head and the depth",
    PRUNED: f"{PRUNED}: a pruned backbone per task (+ its adapters and head)",
    FULL_PETL: f"{FULL_PETL}: one shared backbone + per task every block's adapters and head",
}


@dataclass
class SweepResults:
    """What ``slsviz sweep`` wrote into one folder.

    Attributes:
        folder: the folder.
        table: ``results.csv``: one row per task x criterion x alpha x seed.
        failures: ``failures.csv``: task, stage, error, reason.
        info: ``sweep.json``: the spec's analysis settings, every task's status, where it ran.
    """

    folder: Path
    table: pd.DataFrame
    failures: pd.DataFrame
    info: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path) -> SweepResults:
        """Read a results folder; refuses, saying what to do, one that holds no sweep."""
        folder = Path(folder).expanduser()
        if not (folder / "sweep.json").is_file():
            raise SlsvizError(f"No sweep results in {folder}: run `slsviz sweep SPEC.yaml --out {folder}` "
                              "(e.g. examples/sweep_quick.yaml), or give the folder it wrote.")
        try:
            info = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
            table = pd.read_csv(folder / "results.csv") if (folder / "results.csv").stat().st_size > 1 else pd.DataFrame()
            failures = pd.read_csv(folder / "failures.csv")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise SlsvizError(f"The sweep results in {folder} cannot be read ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:160]}): run the sweep again into that folder.") from None
        return cls(folder, table, failures, info)

    def leaderboard(self) -> Leaderboard:
        """Which criterion lands nearest the oracle over the finished tasks, fixed and calibrated
        (:func:`slsviz.sweep.leaderboard.build`)."""
        return build(self.table, read_records(self.folder, self.tasks), self.name)

    @property
    def name(self) -> str:
        return str(self.info.get("name", self.folder.name))

    @property
    def tasks(self) -> list[str]:
        """Finished tasks, in the spec's order."""
        return list(dict.fromkeys(self.table["task"])) if len(self.table) else []

    def choices(self) -> dict[str, list]:
        """What a view can pick: ``criteria``, ``alphas`` (of the SLS variants), ``seeds``."""
        t = self.table
        return {"criteria": list(dict.fromkeys(t["criterion"])) if len(t) else [],
                "alphas": sorted(t["alpha"].dropna().unique().tolist()) if len(t) else [],
                "seeds": sorted(t["seed"].dropna().astype(int).unique().tolist()) if len(t) else []}

    def view(self, alpha: float | None = None, seed: int | None = None) -> pd.DataFrame:
        """One row per task and criterion: the SLS variants at ``alpha``, every seeded criterion at
        ``seed`` (``None``: the first of each), the oracle as it is."""
        c = self.choices()
        alpha = c["alphas"][0] if alpha is None and c["alphas"] else alpha
        seed = c["seeds"][0] if seed is None and c["seeds"] else seed
        t = self.table
        keep = (t["alpha"].isna() | np.isclose(t["alpha"].fillna(-1), alpha if alpha is not None else -1)) & \
               (t["seed"].isna() | (t["seed"] == seed))
        return t[keep].reset_index(drop=True)

    def depths(self, alpha: float | None = None, seed: int | None = None) -> pd.DataFrame:
        """Depth per task (rows) and criterion (columns, in the order computed)."""
        v = self.view(alpha, seed)
        return v.pivot(index="task", columns="criterion", values="depth").reindex(index=self.tasks,
                                                                                  columns=self.choices()["criteria"])

    def per_task(self, criterion: str = "sls", alpha: float | None = None, seed: int | None = None) -> pd.DataFrame:
        """Per task at ``criterion``'s depth: method, dataset, depth, the accuracies (full and at the
        depth) and throughput (full and at the depth) that were measured, storage per task."""
        v = self.view(alpha, seed)
        v = v[v["criterion"] == criterion]
        wanted = ["task", "method", "dataset", "depth", "num_layers", "oracle_distance",
                  *[c for c in v.columns if c.startswith("accuracy_")], "images_per_s", "images_per_s_full",
                  "bytes_sls", "bytes_pruned", "bytes_full_petl"]
        return v[[c for c in wanted if c in v.columns]].reset_index(drop=True)

    def storage_growth(self, criterion: str = "sls", alpha: float | None = None, seed: int | None = None) -> pd.DataFrame:
        """Bytes stored for the first 1..T tasks (the spec's order), three ways (:data:`SCHEMES`):
        columns ``tasks``, ``scheme``, ``bytes``. A backbone that several tasks share is counted once."""
        rows = self.per_task(criterion, alpha, seed).merge(
            self.view(alpha, seed)[["task", "backbone", "shared_backbone_bytes"]].drop_duplicates("task"), on="task")
        out, backbones = [], {}
        totals = dict.fromkeys(SCHEMES, 0)
        for k, row in enumerate(rows.itertuples(index=False), start=1):
            backbones[row.backbone] = int(row.shared_backbone_bytes)
            shared = sum(backbones.values())
            totals[SLS] += int(row.bytes_sls)
            totals[PRUNED] += int(row.bytes_pruned)
            totals[FULL_PETL] += int(row.bytes_full_petl)
            out += [{"tasks": k, "scheme": SCHEMES[SLS], "bytes": shared + totals[SLS]},
                    {"tasks": k, "scheme": SCHEMES[PRUNED], "bytes": totals[PRUNED]},
                    {"tasks": k, "scheme": SCHEMES[FULL_PETL], "bytes": shared + totals[FULL_PETL]}]
        return pd.DataFrame(out, columns=["tasks", "scheme", "bytes"])
