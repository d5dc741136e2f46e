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
                    entry = stages.train(entry, plan.out, spec.threads, at)
                at("features")
                study = stages.open_study(entry, plan.use_cache)  # once: the benchmark times the same model
                task, facts = stages.extract_from(study, spec.threads)
                at("maps and scores")
                blocks = stages.score_blocks(task, list(range(1, facts.num_layers + 1)), spec.seeds, plan.mappings,
                                             workers=default_workers())
                at("criteria")
                decided = stages.decide(task, facts, spec, blocks)
                if spec.benchmarks:
                    at("benchmarks")
                timed = stages.benchmark_study(study, spec.seconds) if spec.benchmarks else None
                at("report")
                report = stages.assemble(entry, spec, facts, decided, timed)
            except Exception as exc:  # recorded with its reason; the sweep goes on
                done(original, Failure.of(stage, exc))
                continue
            done(original, report)


class _ReportsActor:
    """Lines the workers report (task, line), held until the driver takes them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def put(self, task: str, line: str) -> None:
        self.lines.append((task, line))

    def take(self) -> list[tuple[str, str]]:
        lines, self.lines = self.lines, []
        return lines


def _reports_actor() -> Any:
    import ray

    return ray.remote(_ReportsActor)


class _ReportTo:
    """A stage's ``report(line)`` on a Ray worker: sent to the driver's actor, never waited for."""

    def __init__(self, actor: Any, task: str) -> None:
        self.actor, self.task = actor, task

    def __call__(self, line: str) -> None:
        self.actor.put.remote(self.task, line)


@dataclass
class _Running:
    """A task's refs on the Ray backend, in the order its stages end, each with its stage's name for
    the progress line and a failure's record."""

    entry: TaskEntry
    opens: Any = None  # the TaskEntry to open, or the ref of the train that makes it
    refs: dict[Any, str] = field(default_factory=dict)  # those not ended yet
    facts: Any = None  # the model pass's refs: its facts say how many blocks to score
    features: Any = None
    report: Any = None
    scoring: set[Any] = field(default_factory=set)
    num_layers: int = 0


# How long an --address may take to answer before the sweep gives up on it (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 5.0


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a new Ray instance of ``num_cpus`` CPUs on this machine, for this process.

    ``address="local"``: never the cluster a ``ray_current_cluster`` file or ``RAY_ADDRESS`` names,
    which may be a cluster that is gone (a head stopped by a signal leaves the file behind).
    """
    import ray

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within ``timeout_s``, a Ray address nothing answers at (``host:port``, ``ray://host:port``;
    ``"auto"``: the cluster Ray would pick); Ray itself would retry for minutes.

    Raises:
        SlsvizError: one line naming the address and what to do.
    """
    import socket

    target = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address("auto")
        except Exception:  # Ray's own lookup failed: nothing to check beyond what ray.init says
            return
        if target is None:
            raise SlsvizError("No Ray cluster is running on this machine (--address auto): start one with `ray start "
                              "--head`, give its address, or leave --address out to start one here.")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SlsvizError(f"--address {address} is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SlsvizError(f"Nothing answers at the Ray address {address} ({exc.strerror or type(exc).__name__}): "
                          "check the head is running (`ray status` on it) and the address, or leave --address out "
                          "to start a cluster here.") from None


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

        alive = [node for node in ray.nodes() if node.get("Alive")]
        return {"backend": self.name, "address": self.address, "cluster": ray.cluster_resources(), "nodes": len(alive),
                "node_addresses": sorted({node["NodeManagerAddress"] for node in alive})}

    def __enter__(self) -> RayBackend:
        try:
            import ray
        except ImportError:
            raise SlsvizError("The Ray backend needs ray: pip install 'ray>=2.40' (or use --backend local).") from None
        if self.address:
            check_reachable(self.address)
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    start_local_ray(self.num_cpus)
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
        """Submit each task's stages as Ray tasks that take the refs of the stages they read (Ray runs a
        stage once its inputs are there and frees the features once their last reader ends), and report
        each task as its report arrives, or the first stage that failed."""
        import ray

        spec = plan.spec
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        node_cpus = max(int(n.get("CPU", 1)) for n in nodes)
        gpus = 1 if any(n.get("GPU", 0) >= 1 for n in nodes) else 0
        model = {"num_cpus": min(spec.threads, node_cpus), "num_gpus": gpus, "max_retries": self.retries}
        one = {"num_cpus": 1, "max_retries": self.retries}
        whole_node = {"num_cpus": node_cpus, "num_gpus": gpus, "max_retries": self.retries}
        train, extract, score, decide, benchmark, assemble = (
            ray.remote(fn) for fn in (stages.train, stages.extract, stages.score_blocks, stages.decide,
                                      stages.benchmark, stages.assemble))
        running: dict[Any, _Running] = {}  # every watched ref -> its task

        def watch(task: _Running, ref: Any, stage: str) -> Any:
            running[ref], task.refs[ref] = task, stage
            return ref

        reports = _reports_actor().options(num_cpus=0).remote()  # what the workers say while a stage runs

        for entry in entries:
            task = _Running(entry, entry)
            if entry.train is not None:
                task.opens = watch(task, train.options(**model).remote(entry, plan.out, spec.threads,
                                                                       _ReportTo(reports, entry.name)), "train")
            task.features, facts = extract.options(num_returns=2, **model).remote(task.opens, plan.use_cache, spec.threads)
            task.facts = watch(task, facts, "features")
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for name, line in ray.get(reports.take.remote()):
                plan.moved(name, line)
            if not ready:
                continue
            [ref] = ready
            task = running.pop(ref)
            stage = task.refs.pop(ref)
            try:
                value = ray.get(ref)
            except Exception as exc:  # the stage raised, or its worker died: recorded, the rest go on
                for other in task.refs:
                    running.pop(other, None)
                    ray.cancel(other, force=True)
                task.refs.clear()
                task.features = None
                done(task.entry, Failure.of(stage, exc))
                continue
            if ref in task.scoring:
                task.scoring.discard(ref)
                plan.moved(task.entry.name, f"block {task.num_layers - len(task.scoring)}/{task.num_layers} scored")
                continue
            plan.moved(task.entry.name, f"{stage} done")
            if ref == task.report:
                done(task.entry, value)
            elif ref == task.facts:  # the block count is known: the rest of the task's graph
                task.num_layers = value.num_layers
                timed = (watch(task, benchmark.options(**whole_node).remote(task.opens, plan.use_cache, spec.seconds,
                                                                            node_cpus), "benchmarks")
                         if spec.benchmarks else None)
                blocks = [watch(task, score.options(**one).remote(task.features, [block], spec.seeds, plan.mappings, 1),
                                f"maps and scores (block {block})") for block in range(1, value.num_layers + 1)]
                task.scoring = set(blocks)
                decided = watch(task, decide.options(**one).remote(task.features, ref, spec, *blocks), "criteria")
                task.report = watch(task, assemble.options(num_cpus=0, max_retries=self.retries).remote(
                    task.opens, spec, ref, decided, timed), "report")
                task.features = None  # the stages that read it hold it now
