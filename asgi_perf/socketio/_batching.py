"""A framework-free asyncio batcher: coalesce items per key, flush by count, bytes, age or demand.

The Socket.IO :class:`~asgi_perf.socketio.Batcher` is a thin layer over :class:`Coalescer`; nothing
here knows about Socket.IO, so the ordering and loss guarantees are tested with a fake clock.

Guarantees:

* **Order.** Every send happens under one lock and takes its items *inside* that lock, so for one
  key the sends leave in the order the items were added, and :meth:`Coalescer.run_in_order` puts an
  unbatched send behind the key's pending batch.
* **Age.** A background timer flushes each batch ``max_delay`` after its first item arrived.
* **No silent loss.** Every item is either handed to ``send`` or reported to ``on_drop`` with a
  reason, exactly once: past the bounded buffer (``max_pending`` items) the overflow policy makes
  the caller wait while the oldest batch is flushed (``block``) or drops one item
  (``drop_oldest`` / ``drop_newest``); a send that raises drops its batch (``send_error``); a send,
  or a wait for one, that is cancelled (the emitting task cancelled, ``aclose()`` past its
  shutdown timeout) drops what it held (``cancelled``). :meth:`Coalescer.aclose` flushes
  everything; once it is called, :meth:`Coalescer.add` raises and no timer starts again.
* **Callbacks cannot fail the caller.** ``on_sent`` and ``on_drop`` raising is reported to
  ``on_error`` and goes no further.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, Literal, TypeVar

from .._checks import check, is_int_at_least, is_positive

K = TypeVar("K", bound=Hashable)

Overflow = Literal["block", "drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: tuple[str, ...] = ("block", "drop_oldest", "drop_newest")

#: Every value the ``flush_reason`` label can take.
FLUSH_REASONS: tuple[str, ...] = ("items", "bytes", "delay", "full", "ordering", "flush", "close")
#: Every value the ``reason`` label of dropped items can take.
DROP_REASONS: tuple[str, ...] = (
    "drop_oldest",
    "drop_newest",
    "send_error",
    "serialize_error",
    "cancelled",
)

ERR_MAX_ITEMS = "max_items must be an int >= 1, got {!r}"
ERR_MAX_BYTES = "max_bytes must be an int >= 1 or None, got {!r}"
ERR_MAX_DELAY = "max_delay must be a finite number of seconds > 0, got {!r}"
ERR_MAX_PENDING = "max_pending must be an int >= max_items, got {!r}"
ERR_OVERFLOW = "overflow must be one of 'block', 'drop_oldest', 'drop_newest', got {!r}"
#: What an emit after ``aclose()`` raises (``RuntimeError``).
ERR_CLOSED = "the batcher is closed: emit through the server, or create a new batcher"

#: ``send(key, items, waited_seconds, flush_reason)``. A send that drops some items itself (and
#: counts them with :meth:`Coalescer.drop`) removes them from ``items`` in place, so a failure
#: after that counts only the rest.
SendBatch = Callable[[Any, list[Any], float, str], Awaitable[None]]
#: ``on_sent(key, items, waited_seconds, flush_reason)``, once per batch handed over.
OnSent = Callable[[Any, list[Any], float, str], None]


def check_options(
    max_items: Any, max_bytes: Any, max_delay: Any, max_pending: Any, overflow: Any
) -> None:
    """Raise ``ValueError`` for a bad batcher configuration."""
    check(is_int_at_least(max_items, 1), ERR_MAX_ITEMS, max_items)
    check(max_bytes is None or is_int_at_least(max_bytes, 1), ERR_MAX_BYTES, max_bytes)
    check(is_positive(max_delay), ERR_MAX_DELAY, max_delay)
    check(is_int_at_least(max_pending, max_items), ERR_MAX_PENDING, max_pending)
    check(overflow in OVERFLOW_POLICIES, ERR_OVERFLOW, overflow)


class _Batch:
    __slots__ = ("items", "size", "started")

    def __init__(self, started: float) -> None:
        self.items: list[Any] = []
        self.size = 0
        self.started = started


class Closed(RuntimeError):
    """Raised by :meth:`Coalescer.add` once :meth:`Coalescer.aclose` was called."""


class Coalescer(Generic[K]):
    """Buffers items per key and hands each key's items to ``send`` as one list.

    :param send: ``async send(key, items, waited, reason)``; called under the send lock.
    :param on_drop: ``on_drop(reason, count)`` for every item not delivered.
    :param on_error: called with the exception of a failed send (after ``on_drop``), and of an
        ``on_sent`` / ``on_drop`` that raised.
    :param on_sent: ``on_sent(key, items, waited, reason)`` after each batch was sent.
    :param clock: monotonic seconds; :param sleep: ``async sleep(seconds)`` — both injectable so
        tests drive time by hand.
    """

    def __init__(
        self,
        send: SendBatch,
        *,
        max_items: int,
        max_bytes: int | None,
        max_delay: float,
        max_pending: int,
        overflow: Overflow,
        on_drop: Callable[[str, int], None],
        on_error: Callable[[BaseException], None],
        on_sent: OnSent | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        check_options(max_items, max_bytes, max_delay, max_pending, overflow)
        self._send = send
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_delay = float(max_delay)
        self.max_pending = max_pending
        self.overflow = overflow
        self._on_drop = on_drop
        self._on_error = on_error
        self._on_sent = on_sent
        self._clock = clock
        self._sleep = sleep
        # Insertion order is batch start order, so the first batch is always the oldest one.
        self._batches: dict[K, _Batch] = {}
        self.pending = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.closed = False

    # -- adding ----------------------------------------------------------------------------------
    async def add(self, key: K, item: Any, size: int = 0) -> None:
        """Buffer ``item`` for ``key``; may flush (and so wait for a send) before returning.

        :class:`Closed` once :meth:`aclose` was called. If the caller is cancelled before the
        item is buffered, the item is counted as dropped (``cancelled``).
        """
        self._check_open()
        try:
            if self.pending >= self.max_pending and not await self._make_room():
                return
            max_bytes = self.max_bytes
            batch = self._batches.get(key)
            if batch is not None and max_bytes is not None and batch.size + size > max_bytes:
                # Send what fits first: a batch exceeds max_bytes only when one item alone does.
                await self.flush_key(key, "bytes")
                batch = self._batches.get(key)
        except asyncio.CancelledError:
            self.drop("cancelled", 1)
            raise
        if batch is None:
            batch = self._batches[key] = _Batch(self._clock())
            # An emit that waited through aclose() is still delivered (below), never by a timer.
            if self._timer is None and not self.closed:
                self._timer = asyncio.get_running_loop().create_task(self._run_timer())
            self._wake.set()
        batch.items.append(item)
        batch.size += size
        self.pending += 1
        if self.closed:
            try:
                await self.flush_key(key, "close")
            except asyncio.CancelledError:
                # No timer and perhaps no aclose() left to send it: count it, do not strand it.
                self._abandon(key)
                raise
        elif len(batch.items) >= self.max_items:
            await self.flush_key(key, "items")
        elif max_bytes is not None and batch.size >= max_bytes:
            await self.flush_key(key, "bytes")

    async def _make_room(self) -> bool:
        """Apply the overflow policy; ``False`` means the new item is dropped."""
        if self.overflow == "drop_newest":
            self.drop("drop_newest", 1)
            return False
        if self.overflow == "drop_oldest":
            key, batch = next(iter(self._batches.items()))
            del batch.items[0]
            self.pending -= 1
            if not batch.items:
                del self._batches[key]
            self.drop("drop_oldest", 1)
            return True
        # block: the caller waits while the oldest batches go out, which is the backpressure.
        while self.pending >= self.max_pending and self._batches:
            await self.flush_key(next(iter(self._batches)), "full")
        return True

    # -- sending ---------------------------------------------------------------------------------
    async def flush_key(self, key: K, reason: str) -> None:
        """Send ``key``'s pending items now (if any)."""
        async with self._lock:
            await self._send_pending(key, reason)

    async def run_in_order(self, key: K, send: Callable[[], Awaitable[Any]]) -> Any:
        """Send ``key``'s pending batch, then run the unbatched ``send``, with nothing between.

        :class:`Closed` once :meth:`aclose` was called. If the caller is cancelled before
        ``send`` returned, its one item is counted as dropped (``cancelled``).
        """
        self._check_open()
        try:
            async with self._lock:
                await self._send_pending(key, "ordering")
                return await send()
        except asyncio.CancelledError:
            self.drop("cancelled", 1)
            raise

    async def flush(self, reason: str = "flush") -> None:
        """Send every pending batch, oldest first."""
        while self._batches:
            await self.flush_key(next(iter(self._batches)), reason)

    async def _send_pending(self, key: K, reason: str) -> None:
        # Taken inside the lock: a later flush of the same key can only see later items.
        batch = self._batches.pop(key, None)
        if batch is None:
            return
        items = batch.items
        self.pending -= len(items)
        waited = self._clock() - batch.started
        try:
            await self._send(key, items, waited, reason)
        except asyncio.CancelledError:
            # Cut off mid-send: whether the server wrote it is unknown, so it is not counted
            # as sent; counted as dropped instead, then the cancellation goes on.
            self.drop("cancelled", len(items))
            raise
        except Exception as exc:  # noqa: BLE001 - counted and reported, never raised to emitters
            self.drop("send_error", len(items))
            self._on_error(exc)
            return
        if self._on_sent is not None and items:
            try:
                self._on_sent(key, items, waited, reason)
            except Exception as exc:  # noqa: BLE001 - counting must never fail a send
                self._on_error(exc)

    def _check_open(self) -> None:
        if self.closed:
            raise Closed(ERR_CLOSED)

    def _abandon(self, key: K) -> None:
        batch = self._batches.pop(key, None)
        if batch is not None:
            self.pending -= len(batch.items)
            self.drop("cancelled", len(batch.items))

    def drop(self, reason: str, count: int) -> None:
        """Report ``count`` items not delivered; a failing ``on_drop`` goes to ``on_error``."""
        try:
            self._on_drop(reason, count)
        except Exception as exc:  # noqa: BLE001 - counting must never reach the emitter
            self._on_error(exc)

    async def _run_timer(self) -> None:
        while True:
            if not self._batches:
                self._wake.clear()
                await self._wake.wait()
                continue
            key, batch = next(iter(self._batches.items()))
            delay = batch.started + self.max_delay - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue
            try:
                await self.flush_key(key, "delay")
            except Exception as exc:  # noqa: BLE001 - the timer must outlive any one failure
                self._on_error(exc)

    # -- shutdown --------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Flush everything and stop the timer. Idempotent.

        From the first call on, :meth:`add` and :meth:`run_in_order` raise :class:`Closed`. If
        this is cancelled (a shutdown timeout), what was still buffered is counted as dropped
        (``cancelled``), as is the batch being sent.
        """
        self.closed = True
        try:
            await self.flush("close")
        except asyncio.CancelledError:
            left, self.pending = self.pending, 0
            self._batches.clear()
            if left:
                self.drop("cancelled", left)
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            raise
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            # wait() does not re-raise the timer's own CancelledError, but a cancel of *this*
            # task still propagates.
            await asyncio.wait([timer])


__all__ = [
    "DROP_REASONS",
    "ERR_CLOSED",
    "FLUSH_REASONS",
    "OVERFLOW_POLICIES",
    "Closed",
    "Coalescer",
    "OnSent",
    "Overflow",
    "SendBatch",
    "check_options",
]
