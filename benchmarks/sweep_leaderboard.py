"""Which criterion to trust across tasks: the 8-task example sweep (every PETL method on two built-in
datasets, trained briefly) run here from an empty cache, its wall time, and its leaderboard - each
criterion at the spec's settings and calibrated leave-one-task-out.

It also refreshes the app's shipped example (``assets/example_sweep/``: the sweep's tables and each
task's report, not the trained checkpoints), which the Tasks page opens on.

Run: .venv/bin/python benchmarks/sweep_leaderboard.py [--spec examples/sweep_eight.yaml] [--out sweep-eight] [--no-assets]
     [--ranked-again]   (rank again the sweep already in --out: after a change to the leaderboard, not to the sweep)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd
from common import fresh_cache
from report import ROOT, write_section

from slsviz.sweep import load_spec, run_sweep
from slsviz.sweep.leaderboard import FIXED, LOTO, labels
from slsviz.sweep.results import SweepResults

SHIPPED = ("sweep.json", "results.csv", "failures.csv", "leaderboard.csv", "leaderboard.json")
COMMAND = "python benchmarks/sweep_leaderboard.py"


def ship(out: Path, to: Path) -> None:
    """Copy a results folder's small files (tables, reports) into ``to``, replacing what was there."""
    staging = to.with_name(to.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "tasks").mkdir(parents=True)
    for name in SHIPPED:
        shutil.copy2(out / name, staging / name)
    for report in sorted((out / "tasks").glob("*/report.json")):
        (staging / "tasks" / report.parent.name).mkdir()
        shutil.copy2(report, staging / "tasks" / report.parent.name / "report.json")
    shutil.rmtree(to, ignore_errors=True)
    staging.rename(to)


def _ci(row: pd.Series, name: str, scale: float = 1.0, digits: int = 2) -> str:
    if pd.isna(row[name]):
        return "-"
    return f"{scale * row[name]:.{digits}f} [{scale * row[f'{name}_low']:.{digits}f}, {scale * row[f'{name}_high']:.{digits}f}]"


def table_md(board: pd.DataFrame) -> str:
    names = labels()
    lines = ["| criterion | setting | mean abs(depth - oracle) [95% CI] | worst | within 1 block | test acc. lost, "
             "head re-fit (points) | test acc. lost, as is (points) | FLOPs saved (%) | measured speedup |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in board.iterrows():
        setting = "calibrated on the other tasks" if r["kind"] == LOTO else f"{r['setting']:g}"
        lines.append(f"| {names.get(r['criterion'], r['criterion'])} | {setting} | {_ci(r, 'abs_distance')} | "
                     f"{r['worst_abs_distance']:.0f} | {100 * r['within_one']:.0f}% | "
                     f"{_ci(r, 'accuracy_lost_head_refit', 100, 1)} | {_ci(r, 'accuracy_lost_as_is', 100, 1)} | "
                     f"{_ci(r, 'flops_saved', 100, 0)} | {_ci(r, 'speedup')} |")
    return "\n".join(lines)


def _markdown(frame: pd.DataFrame) -> str:
    head = "| task | " + " | ".join(frame.columns) + " |\n|---|" + "---|" * len(frame.columns)
    return head + "".join(f"\n| {task} | " + " | ".join(f"{v:g}" for v in row) + " |" for task, row in frame.iterrows())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "sweep_eight.yaml"))
    parser.add_argument("--out", default=str(ROOT / "sweep-eight"), help="the results folder (emptied first)")
    parser.add_argument("--no-assets", action="store_true", help="leave assets/example_sweep as it is")
    parser.add_argument("--ranked-again", action="store_true",
                        help="do not run the sweep: rank the criteria again on the finished sweep in --out (its "
                             "wall time is the one sweep.json recorded)")
    args = parser.parse_args()
    spec, out = load_spec(args.spec), Path(args.out)
    if args.ranked_again:
        recorded = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
        seconds = float(recorded["seconds"])
        run = argparse.Namespace(finished=[t["name"] for t in recorded["tasks"] if t["status"] in ("finished", "skipped")],
                                 failed=recorded["failures"])
    else:
        shutil.rmtree(out, ignore_errors=True)
        with fresh_cache():
            start = time.perf_counter()
            run = run_sweep(spec, out, backend="local")
            seconds = time.perf_counter() - start
    results = SweepResults.open(out)
    board = results.leaderboard()
    board.write(out)
    if not args.no_assets:
        ship(out, ROOT / "assets" / "example_sweep")
    table = board.table
    fixed_default = table[(table["kind"] == FIXED)]
    oracle = results.table[results.table.criterion == "oracle"].set_index("task")["depth"]
    chosen = board.chosen.pivot(index="task", columns="criterion", values="setting") if len(board.chosen) else None
    spec_name = Path(args.spec).relative_to(ROOT) if Path(args.spec).is_relative_to(ROOT) else args.spec
    body = (
        f"Spec `{spec_name}`: {len(spec.tasks)} tasks ({', '.join(t.name for t in spec.tasks)}), "
        f"{len(spec.criteria)} criteria, alphas {list(spec.alphas)}, seeds {list(spec.seeds)}, local backend, from an "
        f"empty cache, training included: **{seconds / 60:.1f} min** (target: under 30), {len(run.finished)} finished, "
        f"{len(run.failed)} failed.\n\n"
        "The oracle's depths (val, head re-fit, within 1 point): "
        + ", ".join(f"{t} {int(d)}" for t, d in oracle.items()) + ".\n\n"
        f"### Leave-one-task-out: each criterion's setting chosen on the other {len(results.tasks) - 1} tasks\n\n"
        + table_md(table[table["kind"] == LOTO]) + "\n\n"
        "### At the spec's settings\n\n" + table_md(fixed_default) + "\n\n"
        "Means over tasks, each with a 95% percentile bootstrap interval over tasks (2,000 resamples). Accuracy lost: "
        "the full model's test accuracy minus the pick's. Speedup: measured images/s at the pick over the full "
        "model's (batch 1).\n\n"
        + ("Settings chosen per left-out task (calibration grid in `slsviz.study.criteria.CALIBRATION_GRID`):\n\n"
           + _markdown(chosen) + "\n\n" if chosen is not None else "")
        + "Calibrated on all tasks (what a new task would use): "
        + ", ".join(f"{k} {v:g}" for k, v in board.calibrated.items()) + ".\n"
    )
    command = COMMAND + (" --ranked-again  (ranking only: the sweep, and its wall time, are those sweep.json recorded "
                         "when it ran)" if args.ranked_again else "")
    write_section("leaderboard", "Leaderboard - which criterion to trust across 8 tasks", command, body)


if __name__ == "__main__":
    main()
