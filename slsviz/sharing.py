"""One process, many sessions: each result computed once per key, and timing alone on the machine.

The app serves every browser session from one process and shares one Study per selection. Two
sessions asking for the same thing get one computation (the second waits for it); different things
run side by side (:class:`OncePerKey`). Benchmarks take the machine alone (:data:`WORKLOAD`): heavy
work - feature extraction, maps, training, head re-fits - waits while a measurement runs, and a
measurement waits until running heavy work is done, so no figure is timed beside another session's
computation.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class OncePerKey(Generic[V]):
    """A memo whose values are computed at most once per key, even when threads ask at the same time.

    A caller of a key being computed waits for that computation; callers of other keys do not. A
    computation that raises leaves nothing behind: the next caller tries again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Hashable, V] = {}
        self._computing: dict[Hashable, threading.Lock] = {}

    def peek(self, key: Hashable) -> V | None:
        """The value of ``key`` if it is computed, else ``None``; never waits, never computes."""
        with self._lock:
            return self._values.get(key)

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value of ``key``, computing it with ``compute()`` if no one has."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            lock = self._computing.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._values:  # computed while this caller waited
                    return self._values[key]
            value = compute()
            with self._lock:
                self._values[key] = value
                self._computing.pop(key, None)
            return value


class Background:
    """Work done one job after another in one daemon thread, started on the first job.

    A daemon thread, unlike a ``ThreadPoolExecutor``'s, never holds the process at exit: stopping
    the app must not wait for a prefetch. A job's error is kept by no one: whoever needs its result
    asks for it again and gets the error then.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job``."""
        self._jobs.put(job)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            with contextlib.suppress(Exception):
                job()


class Workload:
    """Heavy work shares the machine; timing takes it alone (a readers-writer lock, writers first).

    Re-entrant per thread: heavy work inside heavy work, or inside this thread's own timing, does
    not wait. Heavy sections must be leaves - they must not wait for other threads' heavy work - or
    a waiting measurement would block them both.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heavy = 0
        self._timing = False
        self._timers_waiting = 0
        self._local = threading.local()

    @contextlib.contextmanager
    def heavy(self) -> Iterator[None]:
        """Run beside other heavy work, but never during a measurement."""
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


WORKLOAD = Workload()
