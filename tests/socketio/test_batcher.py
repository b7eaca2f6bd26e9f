"""The batcher in-process: order, sizes, failed sends and bad configuration."""

from __future__ import annotations

import re
from typing import Any

import pytest
import socketio

from asgi_perf import PerfRegistry
from asgi_perf.socketio import Batcher, unbatch
from asgi_perf.socketio._batching import ERR_CLOSED, ERR_MAX_ITEMS
from asgi_perf.testing import sample

from .._socketio import connect as open_client
from .._socketio import settle

pytestmark = pytest.mark.anyio


async def test_batcher_unbatched_paths_keep_order(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """Callbacks, binary and multi-argument payloads go alone, after the pending batch; lists of
    rooms work; after aclose an emit raises RuntimeError (batched or not); the client helper
    delivers in order."""
    sio, base = live

    async def connect(sid: str, environ: Any) -> None:
        await sio.enter_room(sid, "r1")

    sio.on("connect", connect)

    c = await open_client(base)
    got: list[Any] = []
    c.on("e", lambda *args: got.append(args if len(args) > 1 else args[0]))
    unbatch(c)
    acks: list[Any] = []
    sid = c.get_sid()
    batcher = Batcher(sio, registry=registry, max_delay=10, max_bytes=None)
    await batcher.emit("e", 1, to=["r1"])
    await batcher.emit("e", 2, to=["r1"])
    await batcher.emit("e", b"bin", to=["r1"])
    await batcher.emit("e", (3, 4), to=["r1"])
    await batcher.emit("e", 5, to=sid, callback=lambda *a: acks.append(a))
    await batcher.emit("e", 6, to=["r1"], batch=False)
    assert batcher.pending == 0
    await batcher.emit("e", 7, to=["r1"])
    async with batcher:
        pass
    with pytest.raises(RuntimeError, match=re.escape(ERR_CLOSED)):
        await batcher.emit("e", 8, to=["r1"])
    with pytest.raises(RuntimeError, match=re.escape(ERR_CLOSED)):
        await batcher.emit("e", 9, to=["r1"], batch=False)
    await settle()
    assert got == [1, 2, b"bin", (3, 4), 5, 6, 7]
    assert (
        sample(registry, "socketio_batches_total", {"event": "e", "flush_reason": "ordering"}) == 1
    )
    assert sample(registry, "socketio_batches_total", {"event": "e", "flush_reason": "close"}) == 1
    await c.disconnect()


async def test_batcher_bytes_and_failed_send(registry: PerfRegistry) -> None:
    """The default sizer measures JSON length (max_bytes trigger); a failed emit is counted as
    dropped with send_error and reported, never raised to the emitter."""
    sent: list[Any] = []

    class Server:
        async def emit(self, event: str, data: Any, **kwargs: Any) -> None:
            if data[1] == ["fail"]:
                raise ConnectionError("down")
            sent.append(data)

    batcher = Batcher(Server(), registry=registry, max_bytes=25, max_delay=10)
    await batcher.emit("e", {"k": "0123456789"})  # 19 bytes of JSON
    await batcher.emit("e", "abc")  # 22: still fits
    await batcher.emit("e", None)  # 8 more: flushes the first two
    await batcher.emit("f", "fail", to="x")
    await batcher.aclose()
    assert sent == [("e", [{"k": "0123456789"}, "abc"]), ("e", [None])]
    dropped = sample(registry, "socketio_batch_dropped_total", {"reason": "send_error"})
    assert dropped == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_items": 0}, ERR_MAX_ITEMS.split("{")[0]),
        ({"sizer": 3}, "sizer must be callable"),
        ({"batch_event": ""}, "batch_event"),
        ({"registry": object()}, "registry must be"),
        ({"max_events": 0}, "max_events"),
    ],
)
def test_batcher_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    """Bad batcher options are ValueErrors at construction."""
    sio = socketio.AsyncServer(async_mode="asgi")
    with pytest.raises(ValueError, match=message):
        Batcher(sio, **kwargs)
