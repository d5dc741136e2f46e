"""Run a sweep: skip what is finished, run the rest on a backend, record every outcome, write one table.

The output folder holds, each written atomically:

- ``tasks/<name>/report.json``: a finished task (:func:`slsviz.sweep.stages.assemble`); a sweep run
  again skips a task whose report has the same fingerprint (same entry, criteria, alphas, seeds, ...);
- ``tasks/<name>/failure.json``: a task that failed, the stage and the reason (tried again next run);
- ``results.csv`` and ``results.parquet``: one row per task x criterion x alpha x seed;
- ``leaderboard.csv`` and ``leaderboard.json``: which criterion lands nearest the oracle across the
  finished tasks, at the spec's settings and calibrated leave-one-task-out (:mod:`slsviz.sweep.leaderboard`);
- ``progress.json``: while it runs, where each running task is (a page in another process reads it);
- ``failures.csv``, and ``sweep.json``: the spec, the backend, every task's status, how long it took.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from slsviz.environment import environment
from slsviz.errors import SlsvizError
from slsviz.storage import atomic_path, check_can_write
from slsviz.sweep.backends import Failure, LocalBackend, Plan, RayBackend, check_reachable
from slsviz.sweep.leaderboard import build, read_records
from slsviz.sweep.spec import SweepSpec, TaskEntry

BACKENDS = ("local", "ray")
FAILURE_COLUMNS = ["task", "stage", "error", "reason"]


@dataclass
class SweepRun:
    """What a run did.

    Attributes:
        out: the output folder.
        finished: tasks finished in this run.
        skipped: tasks finished before, with the same fingerprint (not run again).
        failed: tasks that failed in this run: ``task``, ``stage``, ``error``, ``reason``.
        results: the results table (every finished task's rows, this run's and earlier ones').
        written: the files written.
        seconds: how long the run took.
    """

    out: Path
    finished: list[str]
    skipped: list[str]
    failed: list[dict[str, str]]
    results: pd.DataFrame
    written: list[Path]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-ready, without the table."""
        return {"out": str(self.out), "finished": self.finished, "skipped": self.skipped, "failed": self.failed,
                "rows": int(len(self.results)), "seconds": round(self.seconds, 1), "written": [str(p) for p in self.written]}


@dataclass
class SweepProgress:
    """Where a running sweep is (``progress.json`` in its folder while it runs).

    Attributes:
        total: tasks to run this time.
        done: tasks ended (finished or failed).
        failed: tasks that failed.
        running: per task under way, where it is (``train epoch 2/3, loss 0.41, ...``, ``maps and scores``).
        finished: whether the sweep has ended.
    """

    total: int
    done: int = 0
    failed: int = 0
    running: dict[str, str] = field(default_factory=dict)
    finished: bool = False

    def line(self, width: int = 160) -> str:
        """The running tasks in one line."""
        text = "; ".join(f"{task}: {where}" for task, where in self.running.items())
        return text if len(text) <= width else text[: width - 3] + "..."


PROGRESS = "progress.json"


def read_progress(folder: str | Path) -> dict[str, Any] | None:
    """A sweep folder's ``progress.json`` (with ``updated``, seconds since the epoch), or ``None``."""
    try:
        return json.loads((Path(folder) / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_sweep(spec: SweepSpec, out: str | Path, *, backend: str = "local", address: str | None = None,
              num_cpus: int | None = None, retries: int = 0, use_cache: bool = True,
              progress: bool = True, on_progress: Callable[[SweepProgress], None] | None = None) -> SweepRun:
    """Run ``spec``'s tasks that are not finished yet on ``backend`` and write the results into ``out``.

    Args:
        spec: the tasks and what to compute for each.
        out: the output folder (made if missing). For ``train:`` entries on a cluster of several
            machines, a folder they all see.
        backend: ``"local"`` (this process) or ``"ray"``.
        address: the Ray cluster to use (``"auto"``, ``"ray://host:10001"``; ``None``: start one here,
            or use the one this process already joined).
        num_cpus: CPUs of a Ray cluster started here (``None``: all).
        retries: times a Ray task whose worker died runs again (0: recorded as failed at once).
        use_cache: read and write slsviz's cache of features and maps.
        progress: a tqdm bar over tasks on stderr, naming where each running task is.
        on_progress: called with the :class:`SweepProgress` whenever a task moves (from this thread).

    Returns:
        What ran, what was skipped, what failed, and the results table.
    """
    if backend not in BACKENDS:
        raise SlsvizError(f"Unknown backend {backend!r}: use local or ray.")
    if backend == "local" and (address or num_cpus):
        raise SlsvizError("--address and --num-cpus are for the Ray backend: add --backend ray.")
    out = Path(out)
    check_can_write(out, folder=True)
    if backend == "ray" and address:
        check_reachable(address)  # before any work: a dead address is said in one line, within seconds
    start = time.perf_counter()
    skipped = [entry.name for entry in spec.tasks if _finished(spec, entry, out)]
    todo = [entry for entry in spec.tasks if entry.name not in skipped]
    finished: list[str] = []
    failed: list[dict[str, str]] = []
    bar = tqdm(total=len(todo), desc=f"sweep ({backend})", unit="task", file=sys.stderr, disable=not progress)
    state = SweepProgress(total=len(todo))
    last_written = [0.0]

    ended: set[str] = set()

    def moved(task: str, where: str) -> None:
        if task not in ended:  # a worker's line may arrive after its task ended
            state.running[task] = where
            tell()

    def tell(force: bool = False) -> None:
        bar.set_postfix_str(state.line(), refresh=True)
        if on_progress is not None:
            on_progress(state)
        if force or time.monotonic() - last_written[0] >= 1.0:  # the file for another process's page, at most 1/s
            last_written[0] = time.monotonic()
            _write_json(out / PROGRESS, {**asdict(state), "updated": time.time(), "backend": backend})

    def done(entry: TaskEntry, outcome: dict[str, Any] | Failure) -> None:
        folder = out / "tasks" / entry.name
        if isinstance(outcome, Failure):
            failed.append({"task": entry.name, **asdict(outcome)})
            _write_json(folder / "failure.json", {"task": entry.name, **asdict(outcome)})
        else:
            finished.append(entry.name)
            _write_json(folder / "report.json", {**outcome, "fingerprint": spec.fingerprint(entry)})
            (folder / "failure.json").unlink(missing_ok=True)
        ended.add(entry.name)
        state.running.pop(entry.name, None)
        state.done, state.failed = state.done + 1, len(failed)
        bar.update(1)
        tell(force=True)

    runner = RayBackend(address, num_cpus, retries) if backend == "ray" else LocalBackend()
    plan = Plan(spec, out, use_cache, moved=moved)
    tell(force=True)
    where: dict[str, Any] = {"backend": backend, "note": "every task had finished before"}
    with bar:
        if todo and isinstance(runner, RayBackend):
            with runner:
                runner.run(todo, plan, done)
                where = runner.describe()
        elif todo:
            runner.run(todo, plan, done)
            where = runner.describe()
    results = _results(spec, out)
    failures = pd.DataFrame(failed, columns=FAILURE_COLUMNS)
    written = [_write_table(results, out / "results.csv"), _write_table(results, out / "results.parquet"),
               _write_table(failures, out / "failures.csv")]
    if len(results):
        written += build(results, read_records(out, list(dict.fromkeys(results["task"]))), spec.name).write(out)
    seconds = time.perf_counter() - start
    state.finished = True
    tell(force=True)
    status = {name: "finished" for name in finished} | {name: "skipped" for name in skipped} | {
        f["task"]: "failed" for f in failed}
    written.append(_write_json(out / "sweep.json", {
        "schema": "slsviz-sweep/1", "name": spec.name, **spec.analysis_dict(),
        "tasks": [{**entry.to_dict(), "status": status.get(entry.name, "not run")} for entry in spec.tasks],
        "failures": failed, "where": where, "seconds": round(seconds, 1), "environment": environment()}))
    return SweepRun(out, finished, skipped, failed, results, written, seconds)


def _finished(spec: SweepSpec, entry: TaskEntry, out: Path) -> bool:
    """Whether ``entry``'s report is there, made with the same fingerprint."""
    try:
        report = json.loads((out / "tasks" / entry.name / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return report.get("fingerprint") == spec.fingerprint(entry)


def _results(spec: SweepSpec, out: Path) -> pd.DataFrame:
    """Every finished task's rows, in the spec's order."""
    rows = []
    for entry in spec.tasks:
        if _finished(spec, entry, out):
            rows += json.loads((out / "tasks" / entry.name / "report.json").read_text(encoding="utf-8"))["rows"]
    return pd.DataFrame(rows)


def _write_json(path: Path, payload: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def _write_table(table: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    return path
