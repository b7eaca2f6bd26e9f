"""Time in tests: a clock the test moves by hand, and bounded waits for another thread or process.

No test asserts a wall-clock duration. Code under test takes its clock as an argument (or has its
``perf_counter`` monkeypatched) and the test moves :class:`FakeClock` itself, so every figure is
exact however loaded the machine is. Where a test must wait for a real thread, server or process,
:func:`wait_until` and :func:`eventually` poll with :data:`WAIT_LIMIT` as a safety bound only: a
broken test fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

#: A safety bound on every polling loop, never a performance assertion (the machine is shared).
WAIT_LIMIT = 30.0


class FakeClock:
    """Stands in for ``time.perf_counter``/``time.time``: time moves only when the test moves it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(
    check: Callable[[], bool], what: str, *, limit: float = WAIT_LIMIT, interval: float = 0.005
) -> None:
    """Poll until ``check()`` holds; fail (not hang) if it does not within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(interval)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    limit: float = WAIT_LIMIT,
    interval: float = 0.01,
) -> None:
    """The event-loop twin of :func:`wait_until`; ``check`` may be sync or async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(interval)
