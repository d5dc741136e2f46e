"""What a sweep runs: tasks (checkpoints, or PETL methods to train) x criteria x alphas x seeds.

A spec is YAML (or JSON) checked against ``slsviz/schemas/sweep.schema.json``; :func:`load_spec`
turns it into a :class:`SweepSpec`, the Python API's value. A bad spec is refused with one line that
names the offending entry and what to do.

    tasks:
      - {name: digits-convpass, train: {method: convpass, epochs: 3}, data: digits}
      - {name: my-task, task: runs/task.safetensors}      # any format slsviz opens
    alphas: [0.3]
    measure: {benchmarks: true}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from slsviz import defaults
from slsviz.study.criteria import OTHER_CRITERIA, SLS_VARIANTS
from slsviz.errors import SlsvizError
from slsviz.layers.criteria import SETTINGS
from slsviz.models.selection import Selection, content_stamp

ALL_CRITERIA = tuple([name for name, *_ in SLS_VARIANTS] + list(OTHER_CRITERIA) + ["oracle"])
_SCHEMA = Draft202012Validator(json.loads(
    resources.files("slsviz").joinpath("schemas", "sweep.schema.json").read_text(encoding="utf-8")))
_OPENING = ("model", "checkpoint", "data", "img_size", "device", "limit", "batch_size", "token", "task_config", "scale")
_PATHS = ("checkpoint", "task", "task_config")  # relative to the spec's folder


@dataclass(frozen=True)
class Training:
    """A PETL task to train on the entry's backbone and data before it is analysed (the paper's recipe,
    a tenth of the epochs warming up)."""

    method: str
    epochs: int
    bottleneck: int = 8
    lr: float = defaults.TRAIN_LR
    batch_size: int = defaults.TRAIN_BATCH_SIZE
    limit: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class TaskEntry:
    """One task of a sweep.

    Attributes:
        name: unique; names its folder under the sweep's output.
        selection: what to open (backbone, task checkpoint, data, images per split, ...). For a
            :attr:`train` entry, its ``task`` is filled in with the trained checkpoint.
        train: train this PETL task first (``None``: ``selection.task`` is given).
        opener: Python API only: a function that builds the study itself (your own model code),
            instead of :attr:`selection`; it runs where the task runs, so it must pickle.
    """

    name: str
    selection: Selection = field(default_factory=Selection)
    train: Training | None = None
    opener: Callable[[], Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what the entry asks for (a Python opener by its name)."""
        return {"name": self.name, "selection": self.selection.to_dict(),
                "train": asdict(self.train) if self.train else None,
                "opener": getattr(self.opener, "__qualname__", repr(self.opener)) if self.opener else None}


@dataclass(frozen=True)
class SweepSpec:
    """Tasks, and what is computed for each.

    Attributes:
        tasks: the tasks, in the order shown.
        criteria: which criteria pick a depth (:data:`ALL_CRITERIA`; the oracle is computed anyway).
        alphas: SLS thresholds, each applied to every SLS variant.
        seeds: seeds of the maps, the probe and kNN's folds (each maps every block anew).
        settings: the other criteria's thresholds (:data:`slsviz.layers.criteria.SETTINGS`).
        accuracy: which test accuracies at each depth: ``"as_is"``, ``"head_refit"``.
        oracle_within: the oracle's tolerance on val accuracy (head re-fit), a fraction.
        benchmarks: time every depth (batch 1), ``seconds`` per depth.
        threads: CPU threads of each model's work on every backend, so that answers match.
        name: what the sweep is called.
    """

    tasks: tuple[TaskEntry, ...]
    criteria: tuple[str, ...] = ALL_CRITERIA
    alphas: tuple[float, ...] = (defaults.ALPHA,)
    seeds: tuple[int, ...] = (defaults.SEED,)
    settings: dict[str, float] = field(default_factory=lambda: dict(SETTINGS))
    accuracy: tuple[str, ...] = ("as_is", "head_refit")
    oracle_within: float = defaults.ORACLE_WITHIN
    benchmarks: bool = False
    seconds: float = 1.0
    threads: int = 2
    name: str = "sweep"

    def __post_init__(self) -> None:
        names = [task.name for task in self.tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SlsvizError(f"Task names must be unique; {', '.join(twice)} appear more than once: rename them.")
        unknown = sorted(set(self.criteria) - set(ALL_CRITERIA))
        if unknown:
            raise SlsvizError(f"Unknown criteria {', '.join(unknown)}: choose from {', '.join(ALL_CRITERIA)}.")
        if not self.tasks:
            raise SlsvizError("The sweep lists no tasks: add at least one under tasks.")

    def analysis_dict(self) -> dict[str, Any]:
        """What every task is analysed with (criteria, alphas, seeds, settings, what is measured)."""
        return {"criteria": list(self.criteria), "alphas": list(self.alphas), "seeds": list(self.seeds),
                "settings": dict(sorted(self.settings.items())), "accuracy": list(self.accuracy),
                "oracle_within": self.oracle_within, "benchmarks": self.benchmarks, "seconds": self.seconds,
                "threads": self.threads}

    def fingerprint(self, task: TaskEntry) -> str:
        """Identifies what ``task``'s results depend on - the entry, the files and folders it opens as they
        are now (:func:`~slsviz.models.selection.content_stamp`: every file's size and modification time,
        an image folder's included), what is computed - so a finished task with the same fingerprint is
        skipped when the sweep runs again, and one whose checkpoint or images changed is not."""
        files = content_stamp(task.selection)
        text = json.dumps({"task": task.to_dict(), "files": files, **self.analysis_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec (YAML or JSON); relative paths in it are from its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SlsvizError(f"No sweep spec at {path}: give the path of a YAML file (see examples/sweep_quick.yaml).") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SlsvizError(f"Cannot read the sweep spec {path} ({first}): give a YAML file.") from None
    return spec_from_dict(raw, base=path.parent)


def spec_from_dict(raw: Any, base: str | Path = ".") -> SweepSpec:
    """A :class:`SweepSpec` from a spec's parsed YAML/JSON; relative paths are taken from ``base``."""
    error = best_match(_SCHEMA.iter_errors(raw))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise SlsvizError(f"The sweep spec is invalid at {where or 'the top level'}: {_say(error)}.")
    common = raw.get("defaults", {})
    tasks = []
    for item in raw["tasks"]:
        opening = {**common, **{k: v for k, v in item.items() if k in _OPENING or k == "task"}}
        for key in _PATHS:
            if key in opening:  # absolute: a Ray worker may run in another folder
                opening[key] = str((Path(base) / Path(opening[key]).expanduser()).resolve())
        train = Training(**item["train"]) if "train" in item else None
        tasks.append(TaskEntry(item["name"], Selection(**opening), train))
    measure = raw.get("measure", {})
    return SweepSpec(
        tasks=tuple(tasks), criteria=tuple(raw.get("criteria", ALL_CRITERIA)),
        alphas=tuple(float(a) for a in raw.get("alphas", [defaults.ALPHA])),
        seeds=tuple(int(s) for s in raw.get("seeds", [defaults.SEED])),
        settings={**SETTINGS, **raw.get("settings", {})},
        accuracy=tuple(measure.get("accuracy", ["as_is", "head_refit"])),
        oracle_within=float(measure.get("oracle_within", defaults.ORACLE_WITHIN)),
        benchmarks=bool(measure.get("benchmarks", False)), seconds=float(measure.get("seconds", 1.0)),
        threads=int(raw.get("threads", 2)), name=str(raw.get("name", "sweep")))


def with_task(entry: TaskEntry, checkpoint: str) -> TaskEntry:
    """``entry`` opening the task checkpoint ``checkpoint`` (what a trained entry analyses)."""
    return replace(entry, selection=replace(entry.selection, task=checkpoint))


def _say(error: Any) -> str:
    """A schema error in a few words."""
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return "give exactly one of task (a checkpoint) or train (a method to train)"
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        return error.message.replace("(", "- ").replace(")", "") + "; see slsviz/schemas/sweep.schema.json"
    return error.message
