"""The batcher under faults: cancellation at every await point, shutdown timeouts, payloads the
server cannot serialise, counting that raises, emits after close."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import socketio

from asgi_perf import PerfRegistry
from asgi_perf.socketio import Batcher, unbatch
from asgi_perf.socketio._batching import DROP_REASONS, ERR_CLOSED
from asgi_perf.testing import sample

from .._socketio import connect as open_client
from .._socketio import settle

pytestmark = pytest.mark.anyio


class SlowServer:
    """Stands in for ``AsyncServer.emit`` where a real one cannot be cut off on cue: each emit
    awaits several times (as a real one writing to many sockets does), and, with ``hung``, waits
    on an event that is never set (a client that stopped reading)."""

    def __init__(self, *, hung: bool = False) -> None:
        self.delivered: list[Any] = []
        self.hung = hung
        self.gate = asyncio.Event()

    async def emit(self, event: str, data: Any, **kwargs: Any) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        if self.hung:
            await self.gate.wait()
        if event == "asgi-perf:batch":
            self.delivered.extend(data[1])
        else:
            self.delivered.append(data)


def dropped(registry: PerfRegistry) -> float:
    return sum(
        sample(registry, "socketio_batch_dropped_total", {"reason": reason}) or 0
        for reason in DROP_REASONS
    )


async def run_cancelled(step: int, victim: str) -> tuple[list[Any], list[Any], float]:
    """Three emitters (batched and unbatched emits, two targets, a small blocking buffer) race a
    flush; the victim is cancelled after ``step`` turns of the loop. Returns (payloads whose emit
    was attempted, payloads delivered, payloads counted as dropped)."""
    registry = PerfRegistry()
    server = SlowServer(hung=victim == "hung shutdown")
    batcher = Batcher(
        server,
        registry=registry,
        max_items=3,
        max_pending=4,
        max_delay=10,
        max_bytes=None,
    )
    attempted: list[Any] = []
    refused: list[str] = []

    async def emitter(n: int) -> None:
        for i in range(8):
            payload = f"{n}-{i}"
            try:
                attempted.append(payload)
                await batcher.emit("e", payload, to=f"room{i % 2}", batch=i != 5)
            except RuntimeError as exc:
                refused.append(str(exc))
                attempted.remove(payload)  # refused outright: the caller knows

    emitters = [asyncio.ensure_future(emitter(n)) for n in range(3)]
    closing = asyncio.ensure_future(batcher.aclose()) if victim != "emitter" else None
    for _ in range(step):
        await asyncio.sleep(0)
    if victim == "emitter":
        emitters[0].cancel()
    else:
        assert closing is not None
        closing.cancel()
        if victim == "hung shutdown":
            for task in emitters:  # the app's tasks go down with it
                task.cancel()
    await asyncio.gather(*emitters, return_exceptions=True)
    if closing is not None:
        await asyncio.gather(closing, return_exceptions=True)
    server.gate.set()
    await batcher.aclose()
    assert batcher._core._timer is None
    assert batcher.pending == 0
    assert set(refused) <= {ERR_CLOSED}
    return attempted, server.delivered, dropped(registry)


@pytest.mark.parametrize("victim", ["emitter", "shutdown", "hung shutdown"])
@pytest.mark.parametrize("step", range(0, 90, 1))
async def test_cancelled_at_any_await_point_every_payload_is_delivered_or_counted(
    step: int, victim: str
) -> None:
    """Whichever await point the cancel lands on (an emitter's own emit, a flush it triggered
    for everyone, aclose() past a shutdown timeout, with the server hung or not), every payload
    whose emit was attempted is delivered exactly once or counted in
    socketio_batch_dropped_total, never both, never neither; no timer survives aclose()."""
    attempted, delivered, drops = await run_cancelled(step, victim)
    assert len(delivered) == len(set(delivered))
    assert set(delivered) <= set(attempted)
    assert len(delivered) + drops == len(attempted)


async def test_a_hung_shutdown_counts_every_pending_payload_as_cancelled() -> None:
    """aclose() cut off by a shutdown timeout while the server hangs: the batch on its way and
    every buffered payload are counted under reason="cancelled"."""
    registry = PerfRegistry()
    server = SlowServer(hung=True)
    batcher = Batcher(server, registry=registry, max_items=100, max_delay=10, max_bytes=None)
    for i in range(5):
        await batcher.emit("e", i, to="a")
        await batcher.emit("e", i, to="b")
    closing = asyncio.ensure_future(batcher.aclose())
    for _ in range(10):
        await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert sample(registry, "socketio_batch_dropped_total", {"reason": "cancelled"}) == 10
    assert batcher.pending == 0
    assert batcher._core._timer is None
    assert server.delivered == []


@pytest.mark.parametrize("max_bytes", [None, 10_000])
async def test_a_payload_the_server_cannot_serialise_is_dropped_alone(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry, max_bytes: int | None
) -> None:
    """A payload python-socketio cannot serialise, in a batch (max_bytes=None, or a sizer that
    does not serialise), is dropped alone under reason="serialize_error"; the rest of its batch
    reaches the real client in order."""
    sio, base = live
    c = await open_client(base)
    got: list[Any] = []
    c.on("e", got.append)
    unbatch(c)
    sizer = None if max_bytes is None else (lambda data: 1)
    batcher = Batcher(
        sio, registry=registry, max_items=10, max_delay=10, max_bytes=max_bytes, sizer=sizer
    )
    await batcher.emit("e", 1, to=c.get_sid())
    await batcher.emit("e", {"not json": object()}, to=c.get_sid())
    await batcher.emit("e", 3, to=c.get_sid())
    await batcher.aclose()
    for _ in range(200):
        if len(got) >= 2:
            break
        await asyncio.sleep(0.01)
    await settle()
    assert got == [1, 3]
    assert sample(registry, "socketio_batch_dropped_total", {"reason": "serialize_error"}) == 1
    assert (sample(registry, "socketio_batch_dropped_total", {"reason": "send_error"}) or 0) == 0
    assert sample(registry, "socketio_batches_total", {"event": "e", "flush_reason": "close"}) == 1
    await c.disconnect()


class RaisingStats:
    """Counting that fails (a broken metrics backend); the batcher must not let it out."""

    def __init__(self) -> None:
        self.batchers: set[Any] = set()

    def inc(self, *args: Any) -> None:
        raise RuntimeError("stats are broken")

    @property
    def batch_items(self) -> Any:
        raise RuntimeError("stats are broken")


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest", "block"])
async def test_a_raising_stats_object_never_reaches_emit(
    registry: PerfRegistry, overflow: Any
) -> None:
    """Counting a sent batch or a dropped payload raises: emit(), flush() and aclose() return
    normally, everything is still delivered (or dropped by the overflow policy), and the failure
    is reported under 'socketio'."""
    server = SlowServer()
    batcher = Batcher(
        server,
        registry=registry,
        max_items=2,
        max_pending=2,
        max_delay=10,
        max_bytes=None,
        overflow=overflow,
    )
    batcher._stats = RaisingStats()  # type: ignore[assignment]
    for i in range(7):
        await batcher.emit("e", i, to=f"r{i % 3}")
    await batcher.flush()
    await batcher.aclose()
    assert server.delivered
    errors = sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "socketio"})
    assert errors
    assert errors >= 1


async def test_emit_after_close_raises_and_a_waiting_emit_starts_no_timer(
    registry: PerfRegistry,
) -> None:
    """An emit waiting for a send while aclose() runs is still delivered, without a new batch
    timer; an emit after aclose() raises RuntimeError with the documented message."""
    server = SlowServer(hung=True)
    batcher = Batcher(server, registry=registry, max_items=2, max_delay=10, max_bytes=None)
    await batcher.emit("e", 1, to="a")
    first = asyncio.ensure_future(batcher.emit("e", 2, to="a"))  # fills the batch: sends, hangs
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(batcher.emit("e", 3, to="a"))  # waits behind that send
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.aclose())
    for _ in range(10):
        await asyncio.sleep(0)
    server.gate.set()
    await asyncio.gather(first, waiting, closing)
    assert server.delivered == [1, 2, 3]
    assert batcher._core._timer is None
    assert batcher.pending == 0
    with pytest.raises(RuntimeError, match=re.escape(ERR_CLOSED)):
        await batcher.emit("e", 4, to="a")
    assert batcher._core._timer is None


@pytest.mark.parametrize("then", ["fails", "is cancelled"])
async def test_a_bad_payload_is_counted_once_when_the_rest_then_fails(
    registry: PerfRegistry, then: str
) -> None:
    """A batch holding an unserialisable payload whose second send (the rest) then fails or is
    cancelled: the bad payload is counted once as serialize_error, the rest once as send_error or
    cancelled — never the bad one twice."""

    class Server:
        calls = 0

        async def emit(self, event: str, data: Any, **kwargs: Any) -> None:
            Server.calls += 1
            json.dumps(data)  # as python-socketio encodes the packet
            if then == "fails":
                raise ConnectionError("down")
            await asyncio.Event().wait()  # hangs until cancelled

    batcher = Batcher(Server(), registry=registry, max_items=10, max_delay=10, max_bytes=None)
    for data in (1, object(), 3):
        await batcher.emit("e", data, to="a")
    task = asyncio.ensure_future(batcher.flush())
    for _ in range(5):
        await asyncio.sleep(0)
    if then == "is cancelled":
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert Server.calls == 2
    counted = {
        reason: sample(registry, "socketio_batch_dropped_total", {"reason": reason}) or 0
        for reason in DROP_REASONS
    }
    rest = "send_error" if then == "fails" else "cancelled"
    assert counted == {r: {"serialize_error": 1, rest: 2}.get(r, 0) for r in DROP_REASONS}
    await batcher.aclose()
