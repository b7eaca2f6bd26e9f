"""Keeps the Redis tier's invalidation subscriber running: start, restart after a failure, stop.

The subscriber task never returns on its own: an exit with an exception (or a return) is a
failure, counted in ``cache_redis_errors_total{operation="subscribe"}``, logged (rate-limited) and
followed by a new attempt after the subscriber's backoff. A cancellation is a stop, not a failure:
``aclose()``, or the event loop shutting down (``asyncio.run()`` cancels the tasks left over),
where a restart would leave a task on a closed loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._stats import RateLimitedLog, TierStats
from ._subscriber import Subscriber


class Supervisor:
    """Runs the subscriber ``make()`` builds as one task, for as long as the tier is open."""

    def __init__(
        self, name: str, stats: TierStats, log: RateLimitedLog, make: Callable[[], Subscriber]
    ) -> None:
        self.name = name
        self.stats = stats
        self._log = log
        self._make = make
        self.task: asyncio.Task[None] | None = None
        self.sub: Subscriber | None = None
        self.restart: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start the subscriber; return after its first attempt (never raises for Redis)."""
        if self.task is not None:
            return
        sub = self.sub = self._make()
        self._spawn(sub)
        await sub.ready.wait()

    def _spawn(self, sub: Subscriber) -> None:
        self.restart = None
        task = asyncio.get_running_loop().create_task(
            sub.run(), name=f"asgi-perf tiered cache {self.name}"
        )
        task.add_done_callback(self._ended)
        self.task = task

    def _ended(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()  # retrieved in every case
        sub = self.sub
        if task is not self.task or sub is None:
            return  # stopped by stop()
        if task.cancelled():
            self.task = self.sub = None
            self.stats.subscribed = 0
            sub.ready.set()  # never leave start() waiting
            return
        self.stats.errors["subscribe"] += 1
        self.stats.subscribed = 0
        self._log.report(
            "the invalidation subscriber", exc or RuntimeError("the subscriber task ended")
        )
        sub.ready.set()  # never leave start() waiting
        sub.failures += 1
        self.restart = task.get_loop().call_later(sub.backoff(), self._spawn, sub)

    async def stop(self) -> None:
        """Stop the subscriber and any pending restart; a cancellation of the caller while it
        waits for the subscriber to stop propagates."""
        task, sub, self.task, self.sub = self.task, self.sub, None, None
        restart, self.restart = self.restart, None
        if restart is not None:
            restart.cancel()
        if sub is not None:
            sub.ready.set()  # a start() still waiting for the first attempt returns
        self.stats.subscribed = 0
        if task is not None:
            task.cancel()
            # Not ``await task``: its CancelledError could not be told from one aimed at us.
            await asyncio.wait({task})


__all__ = ["Supervisor"]
