"""Where a sweep's stages run: in this process, or on a Ray cluster.

Both run the same stage functions (:mod:`slsviz.sweep.stages`) on the same values, so they give the
same answers; they differ only in what runs at once. A backend calls ``done(entry, outcome)`` once
per task as each ends: the task's report (:func:`slsviz.sweep.stages.assemble`) or a
:class:`Failure`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slsviz.errors import SlsvizError
from slsviz.layers.projection import default_workers
from slsviz.sweep import stages
from slsviz.sweep.spec import SweepSpec, TaskEntry


@dataclass(frozen=True)
class Failure:
    """A task that did not finish: the stage it was in and why."""

    stage: str
    reason: str
    error: str

    @classmethod
    def of(cls, stage: str, exc: BaseException) -> Failure:
        """From what was raised; a Ray task's error is unwrapped to what the task raised."""
        cause = getattr(exc, "cause", None)
        cause = cause if isinstance(cause, BaseException) else exc
        text = " ".join(str(cause).split()) or type(cause).__name__
        return cls(stage, text[:500], type(cause).__name__)


Done = Callable[[TaskEntry, "dict[str, Any] | Failure"], None]
Moved = Callable[[str, str], None]  # (task, where it is), for a progress line


@dataclass
class Plan:
    """What every task of a run shares: the spec, the output folder, whether caches are used."""

    spec: SweepSpec
    out: Path
    use_cache: bool = True
    moved: Moved = lambda task, stage: None

    @property
    def mappings(self) -> tuple[tuple[str, str], ...]:
        return stages.needed_mappings(self.spec.criteria)


class LocalBackend:
    """Every stage in this process, one task after another; a task's maps run one per core."""

    name = "local"

    def describe(self) -> dict[str, Any]:
        """Where the work ran."""
        return {"backend": self.name, "cpus": os.cpu_count()}

    def run(self, entries: list[TaskEntry], plan: Plan, done: Done) -> None:
        """Run ``entries``, calling ``done`` after each."""
        spec = plan.spec
        for original in entries:
            entry, stage = original, ""

            def at(now: str) -> None:
                nonlocal stage
                stage = now
                plan.moved(original.name, now)

            try:
                if entry.train is not None:
                    at("train")
                    entry = stages.train(entry, plan.out, spec.threads)
                at("features")
                study = stages.open_study(entry, plan.use_cache)  # once: the benchmark times the same model
                task, facts = stages.extract_from(study, spec.threads)
                at("maps and scores")
                blocks = stages.score_blocks(task, list(range(1, facts.num_layers + 1)), spec.seeds, plan.mappings,
                                             workers=default_workers())
                at("criteria")
                decided = stages.decide(task, facts, blocks, spec)
                if spec.benchmarks:
                    at("benchmarks")
                timed = stages.benchmark_study(study, spec.seconds) if spec.benchmarks else None
                at("report")
                report = stages.assemble(entry, spec, facts, decided, timed)
            except Exception as exc:  # recorded with its reason; the sweep goes on
                done(original, Failure.of(stage, exc))
                continue
            done(original, report)


@dataclass
class _Task:
    """A task's refs and results on the Ray backend while it runs."""

    entry: TaskEntry  # as the spec gives it
    opens: TaskEntry | None = None  # what it opens (a train: entry's, once trained)
    features: Any = None
    facts: Any = None
    blocks: dict[int, Any] = field(default_factory=dict)
    decided: Any = None
    timed: Any = None
    failed: bool = False


class RayBackend:
    """Stages as Ray tasks: one model pass per task (``num_gpus=1`` where the cluster has GPUs), its
    features put in the object store once, then one task per (task, block) for the maps and scores,
    and the benchmark with a whole node's CPUs, so that nothing shares its cores.

    Args:
        address: an existing cluster (``"auto"``, ``"ray://host:10001"``); ``None`` starts one here.
        num_cpus: CPUs of the cluster started here (``None``: all).
        retries: times a task whose worker died is run again (0: recorded as failed at once).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, retries: int = 0) -> None:
        self.address, self.num_cpus, self.retries = address, num_cpus, retries
        self._started = False

    def describe(self) -> dict[str, Any]:
        """Where the work ran."""
        import ray

        return {"backend": self.name, "address": self.address, "cluster": ray.cluster_resources()}

    def __enter__(self) -> RayBackend:
        try:
            import ray
        except ImportError:
            raise SlsvizError("The Ray backend needs ray: pip install 'ray>=2.40' (or use --backend local).") from None
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SlsvizError(f"Cannot reach the Ray cluster at {self.address or 'this machine'} ({first[:200]}): "
                                  "check --address, or leave it out to start one here.") from None
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def run(self, entries: list[TaskEntry], plan: Plan, done: Done) -> None:
        """Submit every task's first stage, then the next stage of whichever task moves, until all end."""
        import ray

        spec = plan.spec
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        node_cpus = max(int(n.get("CPU", 1)) for n in nodes)
        gpus = 1 if any(n.get("GPU", 0) >= 1 for n in nodes) else 0
        model = {"num_cpus": min(spec.threads, node_cpus), "num_gpus": gpus, "max_retries": self.retries}
        one = {"num_cpus": 1, "max_retries": self.retries}
        whole_node = {"num_cpus": node_cpus, "num_gpus": gpus, "max_retries": self.retries}
        remote = {fn.__name__: ray.remote(fn) for fn in (stages.train, stages.extract, stages.score_blocks,
                                                         stages.decide, stages.benchmark)}
        tasks = {entry.name: _Task(entry) for entry in entries}
        pending: dict[Any, tuple[str, str, int | None]] = {}

        def opened(task: _Task) -> None:
            """The entry opens a checkpoint: its model pass."""
            features, facts = remote["extract"].options(num_returns=2, **model).remote(
                task.opens, plan.use_cache, spec.threads)
            task.features = features
            pending[facts] = (task.entry.name, "features", None)

        def finish_if_ready(task: _Task) -> None:
            if task.decided is not None and (task.timed is not None or not spec.benchmarks):
                try:
                    report = stages.assemble(task.opens, spec, task.facts, task.decided, task.timed)
                except Exception as exc:  # recorded, as a stage's error is
                    done(task.entry, Failure.of("report", exc))
                    return
                done(task.entry, report)

        for task in tasks.values():
            task.opens = task.entry
            if task.entry.train is not None:
                pending[remote["train"].options(**model).remote(task.entry, plan.out, spec.threads)] = (
                    task.entry.name, "train", None)
            else:
                opened(task)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            name, stage, layer = pending.pop(ref)
            task = tasks[name]
            if task.failed:
                continue
            try:
                value = ray.get(ref)
            except Exception as exc:  # the task raised, or its worker died: recorded, the rest go on
                task.failed, task.features = True, None
                for other in [r for r, (n, *_) in pending.items() if n == name]:
                    del pending[other]
                    ray.cancel(other, force=True)
                done(task.entry, Failure.of(stage if layer is None else f"{stage} (block {layer})", exc))
                continue
            plan.moved(name, f"{stage} done" if layer is None else f"block {len(task.blocks) + 1}/{task.facts.num_layers} scored")
            if stage == "train":
                task.opens = value
                opened(task)
            elif stage == "features":
                task.facts = value
                if spec.benchmarks:  # once the model opened: queued for a node to itself
                    ref = remote["benchmark"].options(**whole_node).remote(task.opens, plan.use_cache, spec.seconds,
                                                                           node_cpus)
                    pending[ref] = (name, "benchmarks", None)
                for block in range(1, value.num_layers + 1):
                    ref = remote["score_blocks"].options(**one).remote(task.features, [block], spec.seeds, plan.mappings, 1)
                    pending[ref] = (name, "maps and scores", block)
            elif stage == "maps and scores":
                task.blocks.update(value)
                if len(task.blocks) == task.facts.num_layers:
                    ref = remote["decide"].options(**one).remote(task.features, task.facts, task.blocks, spec)
                    pending[ref] = (name, "criteria", None)
            elif stage == "criteria":
                task.decided = value
                task.features = None  # its last reader is done: the object store may free the features
                finish_if_ready(task)
            else:
                task.timed = value
                finish_if_ready(task)
