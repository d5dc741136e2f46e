"""The one place that decides what runs when; the engine wings only compute.

The app serves every browser session from one process and shares one study per selection. This
module is the only one that holds threads, locks or process-wide state for that:

- :class:`Memo`: each value computed once per key; a caller of a key under way waits for it and
  hears how it ended (its value, or its error); callers of other keys run alongside.
- :data:`SCHEDULER`: heavy work (features, maps, head fits, training) shares the machine, a
  measurement has it alone (:meth:`Scheduler.heavy`, :meth:`Scheduler.timing`); trainings take
  turns on torch's global generator (:meth:`Scheduler.training`); background work runs in order per
  owner, owners side by side (:meth:`Scheduler.submit`), each owner held only weakly, and every
  failure reaches the returned future and the log.
- BLAS (numpy's, scipy's) on one thread for the whole process (:class:`Scheduler`).
- :class:`Parallel`: several jobs at once (the maps of a layer study), each once per key, the
  waiting caller heard from every :data:`HEARTBEAT_S` so that a page the user left stops the jobs
  not yet started.

The engine's own functions (``slsviz.models``, ``slsviz.layers``, ``slsviz.pruning``) take no lock
and start no thread; the facade runs them through here.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Generic, TypeVar

from threadpoolctl import threadpool_limits

from slsviz.layers.projection import default_workers
from slsviz.progress import Progress

V = TypeVar("V")
T = TypeVar("T")
O = TypeVar("O")
log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5  # how often a caller waiting for parallel jobs hears from them


def _retry(future: Future) -> bool:
    """Whether a waiter should compute ``future``'s key itself: it was cancelled, or its computation
    was stopped by control flow (a page that stopped, Ctrl-C), which says nothing about the key."""
    if future.cancelled():
        return True
    error = future.exception()
    return error is not None and not isinstance(error, Exception)


class Memo(Generic[V]):
    """Values computed at most once per key, even when threads ask at the same time.

    A caller of a key being computed waits for that computation and gets its value, or its error:
    a computation that fails fails for every caller waiting on it, and leaves nothing behind, so the
    next caller tries again. A computation stopped by control flow (not an ``Exception``) is taken
    over by a waiter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[Hashable, Future] = {}

    def peek(self, key: Hashable) -> V | None:
        """The value of ``key`` if it is computed, else ``None``; never waits, never computes."""
        with self._lock:
            future = self._futures.get(key)
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value of ``key``, computing it with ``compute()`` if no one has or is."""
        while True:
            with self._lock:
                future = self._futures.get(key)
                mine = future is None
                if mine:
                    future = self._futures[key] = Future()
                    future.set_running_or_notify_cancel()
            if mine:
                return self._compute(key, future, compute)
            with contextlib.suppress(CancelledError):
                future.exception()  # wait
            if not _retry(future):
                return future.result()
            with self._lock:  # stopped, not failed: take it over
                if self._futures.get(key) is future:
                    del self._futures[key]

    def _compute(self, key: Hashable, future: Future, compute: Callable[[], V]) -> V:
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._futures[key]
            future.set_exception(exc)
            raise
        future.set_result(value)
        return value


class Scheduler:
    """Heavy work side by side, timing alone, trainings in turn, background jobs in order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heavy = 0
        self._timing = False
        self._timers_waiting = 0
        self._local = threading.local()
        self._training = threading.Lock()
        self._queues: dict[int, tuple[weakref.ref, collections.deque]] = {}  # per owner, while it has work
        self._worker_lock = threading.Lock()
        # BLAS (numpy's and scipy's OpenBLAS; torch has its own pools) on one thread, for good: every
        # numpy, scipy and scikit-learn computation here is small (2-D maps, probes and head fits on a few
        # thousand points), where two OpenBLAS threads make a head fit 8x slower; and a figure then never
        # depends on what else runs. Limits taken and given back around side-by-side jobs raced: after
        # two maps at once, OpenBLAS ignored every later limit here.
        self._blas = threadpool_limits(limits=1, user_api="blas")
        self._pool: ThreadPoolExecutor | None = None

    # --- the machine: heavy work and timing (a readers-writer lock, writers first) ---------------

    @contextlib.contextmanager
    def heavy(self) -> Iterator[None]:
        """Run beside other heavy work, but never during a measurement.

        Re-entrant per thread. A heavy section must be a leaf: it must not wait for another
        thread's heavy work (a :class:`Memo` under way), or a waiting measurement blocks them both.
        """
        depth = getattr(self._local, "heavy", 0)
        owner = depth > 0 or getattr(self._local, "timing", False)
        if not owner:
            with self._cond:
                while self._timing or self._timers_waiting:
                    self._cond.wait()
                self._heavy += 1
        self._local.heavy = depth + 1
        try:
            yield
        finally:
            self._local.heavy = depth
            if not owner:
                with self._cond:
                    self._heavy -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Measure alone: wait for running heavy work, hold new heavy work back until done."""
        if getattr(self._local, "heavy", 0):
            raise RuntimeError("A measurement cannot start inside heavy work: it would wait for itself.")
        if getattr(self._local, "timing", False):
            yield
            return
        with self._cond:
            self._timers_waiting += 1
            try:
                while self._timing or self._heavy:
                    self._cond.wait()
            finally:
                self._timers_waiting -= 1
            self._timing = True
        self._local.timing = True
        try:
            yield
        finally:
            self._local.timing = False
            with self._cond:
                self._timing = False
                self._cond.notify_all()

    def run_heavy(self, compute: Callable[[], T]) -> T:
        """``compute()`` as heavy work."""
        with self.heavy():
            return compute()

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """A training, heavy, and one at a time: shuffling, dropout and drop-path draw from torch's
        global generator, which a seeded training must have to itself to be reproducible."""
        with self._training, self.heavy():
            yield

    def pool(self) -> ThreadPoolExecutor:
        """The threads parallel jobs run in, one per core (:func:`default_workers`), for every
        session: however many ask, no more jobs run at once than the machine has cores."""
        with self._worker_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(default_workers(), thread_name_prefix="slsviz-parallel")
            return self._pool

    # --- background work -------------------------------------------------------------------------

    def submit(self, owner: O, job: Callable[[O], T]) -> Future:
        """Run ``job(owner)`` in the background, after the jobs queued before it for ``owner``; other
        owners' jobs (another session's study) run alongside.

        ``owner`` is held weakly between jobs: an owner dropped meanwhile (a study that left the page
        cache) is freed, and its queued jobs are cancelled. An owner's thread is a daemon (it never
        holds the process at exit) and ends when its queue is empty. The returned future holds the
        job's result or error; an error is also logged.
        """
        future: Future = Future()
        with self._worker_lock:
            queued = self._queues.get(id(owner))
            start = queued is None or queued[0]() is not owner
            if start:
                queued = self._queues[id(owner)] = (weakref.ref(owner), collections.deque())
            queued[1].append((job, future))
        if start:
            threading.Thread(target=self._drain, args=(id(owner), queued), name="slsviz-background",
                             daemon=True).start()
        return future

    def _drain(self, key: int, queued: tuple[weakref.ref, collections.deque]) -> None:
        ref, jobs = queued
        while True:
            with self._worker_lock:
                if not jobs:
                    if self._queues.get(key) is queued:
                        del self._queues[key]
                    return
                job, future = jobs.popleft()
            owner = ref()
            if owner is None:
                future.cancel()
            # also what tells concurrent.futures.wait() of a cancelled job (cancel() alone wakes only result())
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(owner))
            except BaseException as exc:  # noqa: BLE001 - handed to the future; the thread goes on
                log.warning("Background work for %r failed", owner, exc_info=exc)
                future.set_exception(exc)
            del owner, job, future  # between jobs the owner is held weakly


SCHEDULER = Scheduler()


class Parallel:
    """Jobs run side by side in the scheduler's pool, each heavy, each once per key.

    One per computation that fans out (a layer study's maps): a key under way, started by
    :meth:`start` or by another caller of :meth:`run_all`, is waited for, not started again.

    Args:
        workers: ``1``: jobs run in the caller's thread, one after the other; more: in the pool, and
            a lazy scan keeps that many under way (:meth:`start`).
        scheduler: whose machine rules and pool apply.
    """

    def __init__(self, workers: int, scheduler: Scheduler = SCHEDULER) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}.")
        self.workers = int(workers)
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._futures: dict[Hashable, Future] = {}

    def run(self, compute: Callable[[], T]) -> T:
        """``compute()`` in this thread, as heavy work (a leaf: a score of one layer)."""
        return self._scheduler.run_heavy(compute)

    def _job(self, compute: Callable[[], T]) -> Callable[[], T]:
        def job() -> T:
            with self._scheduler.heavy():
                return compute()
        return job

    def _submit(self, jobs: Mapping[Hashable, Callable[[], T]]) -> dict[Hashable, Future]:
        """Futures of ``jobs``' keys, starting those nobody has started; under the lock."""
        for key, compute in jobs.items():
            future = self._futures.get(key)
            if future is None or (future.done() and (future.cancelled() or future.exception() is not None)):
                self._futures[key] = self._scheduler.pool().submit(self._job(compute))
        return {key: self._futures[key] for key in jobs}

    def start(self, jobs: Mapping[Hashable, Callable[[], T]]) -> None:
        """Start ``jobs`` (those not under way or done) without waiting for them."""
        if self.workers > 1:
            with self._lock:
                self._submit(jobs)

    def cancel_pending(self) -> None:
        """Drop the started jobs that have not begun (a scan that has its answer)."""
        with self._lock:
            for key, future in list(self._futures.items()):
                if future.cancel():
                    del self._futures[key]

    def run_all(self, jobs: Mapping[Hashable, Callable[[], T]], progress: Progress | None = None) -> dict[Hashable, T]:
        """Every job's result, in ``jobs``' order; ``progress(done, total)`` as they end and, while
        they run, every :data:`HEARTBEAT_S` with unchanged counts. If the caller stops (progress
        raises), the jobs not yet begun are cancelled and the error goes on."""
        results: dict[Hashable, T] = {}
        total = len(jobs)
        if self.workers == 1:
            for key, compute in jobs.items():
                results[key] = self._job(compute)()
                if progress is not None:
                    progress(len(results), total)
            return results
        with self._lock:
            futures = self._submit(jobs)
        try:
            for key, future in futures.items():
                while True:
                    while not wait_for([future], timeout=HEARTBEAT_S).done:
                        if progress is not None:
                            progress(len(results), total)
                    if not future.cancelled():  # cancelled by a scan that had its answer: start it again
                        break
                    with self._lock:
                        future = futures[key] = self._submit({key: jobs[key]})[key]
                results[key] = future.result()
                if progress is not None:
                    progress(len(results), total)
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        return results
