"""Single flight: one load per key at a time, for threads and for an event loop.

Used by ``cached`` (sync and async) and by the Redis tier's ``get_or_load``. A caller that joins a
load already running is counted on the cache as ``coalesced``.

* :class:`ThreadFlights`: the first thread to miss a key loads it; the others wait on the cache's
  condition until it lands, then get its value or its exception. The caller holds the lock.
* :class:`AsyncFlights`: one task per key. Every caller, the first included, awaits it through
  ``asyncio.shield``, so a cancelled caller cancels no one else; a finished task, or another event
  loop's, is never joined. An invalidation can *detach* a load (``stale``): its callers still get
  its value, and the next call starts a new load.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Hashable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from ._base import MeteredCache

K = TypeVar("K", bound=Hashable)


class Flight:
    """One load of one key in progress."""

    __slots__ = ("done", "error", "stale", "task", "value")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self.value: Any = None
        #: Set once an invalidation matched this key while it loaded: the value is stored nowhere.
        self.stale = False
        self.task: asyncio.Task[Any] | None = None


class ThreadFlights(Generic[K]):
    """One load per key across threads; every method is called with the cache's lock held."""

    def __init__(self, cache: MeteredCache[Any, Any], cond: threading.Condition) -> None:
        self._cache = cache
        self._cond = cond
        self.flights: dict[K, Flight] = {}

    def claim(self, k: K) -> tuple[Flight, bool]:
        """``(flight, True)``: the caller loads ``k`` and calls :meth:`land`. ``(flight, False)``:
        another thread was loading it; it has landed now, its value or error in ``flight``."""
        flight = self.flights.get(k)
        if flight is None:
            flight = self.flights[k] = Flight()
            return flight, True
        self._cache._coalesced += 1
        while not flight.done:
            self._cond.wait()
        return flight, False

    def land(self, k: K, flight: Flight) -> None:
        """The load of ``k`` finished (its value or error set on ``flight``): wake the waiters."""
        flight.done = True
        del self.flights[k]
        self._cond.notify_all()

    def __len__(self) -> int:
        return len(self.flights)


class AsyncFlights(Generic[K]):
    """One load task per key on an event loop.

    ``guard`` is the cache's lock (or a no-op): :meth:`join` runs under it in the caller, and the
    task's done callback takes it to remove the finished flight.
    """

    def __init__(self, cache: MeteredCache[Any, Any], guard: AbstractContextManager[Any]) -> None:
        self._cache = cache
        self._guard = guard
        self.flights: dict[K, Flight] = {}

    def join(self, k: K, load: Callable[[Flight], Coroutine[Any, Any, Any]]) -> asyncio.Task[Any]:
        """The running load of ``k``, or ``load(flight)`` started as a new task."""
        flight = self.flights.get(k)
        loop = asyncio.get_running_loop()
        task = None if flight is None else flight.task
        # A finished task (its callback not run yet) or another loop's task cannot be joined.
        if task is None or task.done() or task.get_loop() is not loop:
            flight = Flight()
            task = flight.task = loop.create_task(load(flight))
            self.flights[k] = flight
            task.add_done_callback(functools.partial(self._landed, k, flight))
        else:
            self._cache._coalesced += 1
        return task

    def _landed(self, k: K, flight: Flight, task: asyncio.Task[Any]) -> None:
        # A done callback, so the entry goes even if the task was cancelled before it started.
        with self._guard:
            if self.flights.get(k) is flight:
                del self.flights[k]
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" if nobody awaited

    def detach(self, k: K) -> None:
        """Mark the load of ``k`` stale and forget it (the caller holds the guard)."""
        flight = self.flights.pop(k, None)
        if flight is not None:
            flight.stale = True

    def detach_where(self, matches: Callable[[K], bool]) -> None:
        """:meth:`detach` every key ``matches`` accepts (the caller holds the guard)."""
        for k in [k for k in self.flights if matches(k)]:
            self.flights.pop(k).stale = True

    def __len__(self) -> int:
        return len(self.flights)


__all__ = ["AsyncFlights", "Flight", "ThreadFlights"]
