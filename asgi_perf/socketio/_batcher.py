"""The Socket.IO batcher: coalesce small emits per target into one ``asgi-perf:batch`` event.

A thin layer over the framework-free :class:`~asgi_perf.socketio._batching.Coalescer`, which holds
the ordering and loss guarantees; this module maps emits onto targets, sizes payloads and sends
the batches through the server. Clients unpack them with :func:`asgi_perf.socketio.unbatch`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._checks import ERR_REGISTRY, check
from .._labels import NameLimiter
from ..registry import PerfRegistry
from ._batching import ERR_CLOSED, Closed, Coalescer, Overflow, check_options
from ._client import BATCH_EVENT
from ._hook import ERR_NOT_ASYNC_SERVER, _check_max
from ._stats import socketio_stats

ERR_SIZER = "sizer must be callable, got {!r}"


def _default_sizer(dumps: Callable[..., str]) -> Callable[[Any], int]:
    def size(data: Any) -> int:
        if isinstance(data, str):
            return len(data)
        if data is None or isinstance(data, (bool, int, float)):
            return 8
        # Raises TypeError for bytes: the caller sends binary payloads unbatched anyway.
        return len(dumps(data))

    return size


class Batcher:
    """Coalesces emits per target into one ``asgi-perf:batch`` event each.

    The target key is ``(event, namespace, to/room, skip_sid)``. A batch leaves when it holds
    ``max_items`` payloads or ``max_bytes`` (estimated JSON size), when its first payload is
    ``max_delay`` seconds old, on :meth:`flush` and on :meth:`aclose`. Order per target is emit
    order, across batched and unbatched emits. Emits with a ``callback``, binary payloads, tuple
    (multi-argument) payloads and ``batch=False`` are sent alone, after the target's pending batch.

    :param max_pending: items buffered at most; past it ``overflow`` decides: ``"block"`` (the
        emitter waits while the oldest batch is sent), ``"drop_oldest"`` or ``"drop_newest"``
        (counted in ``socketio_batch_dropped_total``).
    :param sizer: ``payload -> bytes`` for the ``max_bytes`` trigger (default: length of the JSON).
    :param clock: / :param sleep: monotonic clock and async sleep, for tests.
    """

    def __init__(
        self,
        sio: Any,
        *,
        registry: PerfRegistry | None = None,
        max_items: int = 100,
        max_bytes: int | None = 64_000,
        max_delay: float = 0.05,
        max_pending: int = 10_000,
        overflow: Overflow = "block",
        batch_event: str = BATCH_EVENT,
        max_events: int = 100,
        sizer: Callable[[Any], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        if registry is None:
            registry = PerfRegistry()
        check(isinstance(registry, PerfRegistry), ERR_REGISTRY, registry)
        if not callable(getattr(sio, "emit", None)):
            raise ValueError(ERR_NOT_ASYNC_SERVER.format(sio))
        check_options(max_items, max_bytes, max_delay, max_pending, overflow)
        if sizer is not None and not callable(sizer):
            raise ValueError(ERR_SIZER.format(sizer))
        if not isinstance(batch_event, str) or not batch_event:
            raise ValueError(f"batch_event must be a non-empty string, got {batch_event!r}")
        self.server = sio
        self.registry = registry
        self.batch_event = batch_event
        self._stats = socketio_stats(registry)
        self._events = NameLimiter(max_names=_check_max("max_events", max_events))
        packet_class = getattr(sio, "packet_class", None)
        dumps = getattr(getattr(packet_class, "json", None), "dumps", None) or json.dumps
        self._dumps: Callable[..., str] = dumps
        self._size: Callable[[Any], int] | None = (
            None if max_bytes is None else sizer or _default_sizer(dumps)
        )
        extra: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._core: Coalescer[tuple[Any, ...]] = Coalescer(
            self._send,
            max_items=max_items,
            max_bytes=max_bytes,
            max_delay=max_delay,
            max_pending=max_pending,
            overflow=overflow,
            on_drop=self._dropped,
            on_error=self._error,
            on_sent=self._sent,
            clock=clock,
            **extra,
        )
        self._stats.batchers.add(self)

    @property
    def pending(self) -> int:
        """Payloads buffered, not yet handed to the server."""
        return self._core.pending

    async def emit(
        self,
        event: str,
        data: Any = None,
        *,
        to: Any = None,
        room: Any = None,
        skip_sid: Any = None,
        namespace: str | None = None,
        callback: Callable[..., Any] | None = None,
        batch: bool = True,
    ) -> None:
        """Queue ``data`` for ``event`` to the target (same arguments as ``AsyncServer.emit``)."""
        target = to if to is not None else room
        namespace = namespace or "/"
        key = (event, namespace, _hashable(target), _hashable(skip_sid))
        core = self._core
        if core.closed:
            raise Closed(ERR_CLOSED)
        size = 0
        if batch and callback is None and not isinstance(data, tuple):
            try:
                if self._size is not None:
                    size = self._size(data)
                elif _is_binary(data):
                    batch = False
            except TypeError:
                batch = False  # binary (or not JSON at all): socket.io's own emit decides
            if batch:
                await core.add(key, data, size)
                return

        async def send_alone() -> Any:
            return await self.server.emit(
                event, data, to=target, skip_sid=skip_sid, namespace=namespace, callback=callback
            )

        await core.run_in_order(key, send_alone)

    async def flush(self) -> None:
        """Send every pending batch now."""
        await self._core.flush()

    async def aclose(self) -> None:
        """Flush everything and stop the timer. Idempotent.

        Later emits raise ``RuntimeError`` (:data:`~asgi_perf.socketio._batching.ERR_CLOSED`);
        an emit already waiting is still delivered. Cancelled (a shutdown timeout), it counts
        what was not sent in ``socketio_batch_dropped_total{reason="cancelled"}``.
        """
        await self._core.aclose()

    async def __aenter__(self) -> Batcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(
        self, key: tuple[Any, ...], items: list[Any], waited: float, reason: str
    ) -> None:
        try:
            await self._emit(key, items)
        except (TypeError, ValueError):
            # Usually one payload the server cannot serialise: drop it alone, send the rest.
            good = [item for item in items if self._serialisable(item)]
            if len(good) == len(items):
                raise
            self._core.drop("serialize_error", len(items) - len(good))
            items[:] = good  # what the coalescer counts from here on
            if good:
                await self._emit(key, good)

    async def _emit(self, key: tuple[Any, ...], items: list[Any]) -> None:
        event, namespace, target, skip_sid = key
        await self.server.emit(
            self.batch_event,
            (event, items),
            to=_unhashable(target),
            skip_sid=_unhashable(skip_sid),
            namespace=namespace,
        )

    def _serialisable(self, item: Any) -> bool:
        try:
            self._dumps(item)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return False
        return True

    def _sent(self, key: tuple[Any, ...], items: list[Any], waited: float, reason: str) -> None:
        # Counted once sent: a failed send is counted as dropped instead, never as both.
        stats = self._stats
        stats.inc("socketio_batches_total", (self._events(key[0]), reason))
        stats.batch_items.observe(len(items))
        stats.batch_wait.observe(waited)

    def _dropped(self, reason: str, count: int) -> None:
        self._stats.inc("socketio_batch_dropped_total", (reason,), count)

    def _error(self, exc: BaseException) -> None:
        self.registry.report_error("socketio", exc)


def _hashable(value: Any) -> Any:
    # python-socketio takes a list of rooms (or of sids to skip); lists cannot key a dict.
    return ("__list__", *value) if isinstance(value, list) else value


def _unhashable(value: Any) -> Any:
    if isinstance(value, tuple) and value[:1] == ("__list__",):
        return list(value[1:])
    return value


def _is_binary(data: Any) -> bool:
    if isinstance(data, (bytes, bytearray)):
        return True
    if isinstance(data, list):
        return any(_is_binary(item) for item in data)
    if isinstance(data, dict):
        return any(_is_binary(item) for item in data.values())
    return False


__all__ = ["Batcher"]
