"""The Socket.IO server the benchmark measures: one ``socketio.AsyncServer`` in ASGI mode.

Importable by uvicorn as ``benchmarks._socketio_app:app``; ``BENCH_SIO_MODE`` picks the contender:

* ``bare``: per-message ``sio.emit``, no instrumentation;
* ``hook``: the same per-message ``sio.emit`` with ``instrument_socketio`` installed;
* ``batcher``: ``Batcher.emit`` (with the hook installed too, as a user would run it).

``BENCH_SIO_MAX_ITEMS`` / ``BENCH_SIO_MAX_DELAY`` configure the batcher. Every connected client
joins room ``all``. Clients drive the server with two acknowledged events:

* ``flood {"n", "pad"}``: emit ``n`` messages to ``all`` as fast as the server can;
* ``paced {"rate", "seconds", "pad"}``: emit ``rate`` messages per second for ``seconds``.

Each message is ``{"i": index, "t": time.monotonic() at emit, "p": padding}``: on Linux the
monotonic clock is system-wide, so a client process on the same machine subtracts ``t`` from its
own ``time.monotonic()`` to get the end-to-end latency.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import socketio

from asgi_perf import PerfRegistry, metrics_app
from asgi_perf.socketio import Batcher, instrument_socketio

MODE = os.environ.get("BENCH_SIO_MODE", "bare")
if MODE not in ("bare", "hook", "batcher"):
    raise ValueError(f"BENCH_SIO_MODE must be bare, hook or batcher, got {MODE!r}")

registry = PerfRegistry()
# Default ping settings: a flood may keep the loop busy for seconds, which must not look like a
# dead client.
sio = socketio.AsyncServer(async_mode="asgi", ping_timeout=60)
if MODE != "bare":
    instrument_socketio(sio, registry=registry)
batcher = (
    Batcher(
        sio,
        registry=registry,
        max_items=int(os.environ.get("BENCH_SIO_MAX_ITEMS", "100")),
        max_delay=float(os.environ.get("BENCH_SIO_MAX_DELAY", "0.01")),
    )
    if MODE == "batcher"
    else None
)


async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    await sio.enter_room(sid, "all")


async def send(i: int, pad: str) -> None:
    data = {"i": i, "t": time.monotonic(), "p": pad}
    if batcher is not None:
        await batcher.emit("m", data, to="all")
    else:
        await sio.emit("m", data, to="all")


async def flood(sid: str, cmd: dict[str, Any]) -> str:
    pad = "x" * int(cmd.get("pad", 32))
    for i in range(int(cmd["n"])):
        await send(i, pad)
    if batcher is not None:
        await batcher.flush()
    return "ok"


async def paced(sid: str, cmd: dict[str, Any]) -> str:
    pad = "x" * int(cmd.get("pad", 32))
    rate = float(cmd["rate"])
    total = int(rate * float(cmd["seconds"]))
    start = time.monotonic()
    i = 0
    while i < total:
        # Emit everything that is due, then sleep until the next one: the loop's timer
        # granularity (~1 ms) must not lower the rate.
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            await send(i, pad)
            i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    if batcher is not None:
        await batcher.flush()
    return "ok"


sio.on("connect", connect)
sio.on("flood", flood)
sio.on("paced", paced)

app = socketio.ASGIApp(sio, other_asgi_app=metrics_app(registry))
