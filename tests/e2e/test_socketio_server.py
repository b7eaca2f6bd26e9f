"""End to end: a real uvicorn server running an instrumented AsyncServer, real clients."""

from __future__ import annotations

import asyncio
import random
import string

import pytest
import socketio

from asgi_perf.socketio import unbatch

from .._server import ServerFactory
from .._socketio import CLIENT_REASONS, connect, metrics, names, value
from .._time import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.slow]
APP = "tests.apps.socketio_app:app"


async def test_connects_rejects_disconnects_and_gauge(server: ServerFactory) -> None:
    """Accept 3 (websocket and polling), reject 2, disconnect 1: gauge 2, accepted 3, rejected 2,
    one client-side disconnect reason; the app's own handlers ran exactly once per occurrence and
    the HTTP histogram holds no Socket.IO long-polling request."""
    # When a polling client closes, engine.io leaves the GET it was holding open waiting for
    # packets for up to ping_interval + ping_timeout (45 s by default); uvicorn's graceful
    # shutdown waits for that request, and the fixture killed the server after 10 s. Bound the
    # wait for abandoned requests instead: every request of the test has finished by then.
    base = server(APP, "--timeout-graceful-shutdown", "1", ready_path="/metrics")
    clients = [
        await connect(base, "websocket"),
        await connect(base, "polling"),
        await connect(base, "websocket"),
    ]
    for _ in range(2):
        rejected = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            # websocket: python-socketio's polling client waits ~30 s before reporting a reject
            await rejected.connect(base, auth={"reject": True}, transports=["websocket"])
        await rejected.disconnect()
    await clients[0].disconnect()

    async def settled() -> bool:
        found = await metrics(base)
        return (
            sum(
                value(found, "socketio_disconnects_total", namespace="/", reason=reason)
                for reason in CLIENT_REASONS
            )
            == 1
        )

    await eventually(settled, "the client-side disconnect is counted")
    found = await metrics(base)
    gauge = {
        t: value(found, "socketio_connections", namespace="/", transport=t)
        for t in ("websocket", "polling")
    }
    assert gauge == {"websocket": 1, "polling": 1}
    assert value(found, "socketio_connects_total", namespace="/", outcome="accepted") == 3
    assert value(found, "socketio_connects_total", namespace="/", outcome="rejected") == 2
    reasons = {d["reason"] for d in names(found, "socketio_disconnects_total")}
    assert reasons <= CLIENT_REASONS
    calls = await clients[1].call("handler_calls", 0)
    assert calls == {"connect": 5, "disconnect": 1, "catch_all": 0}
    # The polling client held GETs open and POSTed packets: none of it is HTTP latency (and the
    # scrapes of /metrics are the package's own traffic, left out too).
    routes = {d["route"] for d in names(found, "http_request_duration_seconds_count")}
    assert routes == set()
    await clients[1].emit("kick", 0)

    async def kicked() -> bool:
        found = await metrics(base)
        return (
            value(found, "socketio_disconnects_total", namespace="/", reason="server_disconnect")
            == 1
        )

    await eventually(kicked, "the server-side disconnect is counted")
    found = await metrics(base)
    assert value(found, "socketio_connections", namespace="/", transport="polling") == 0
    assert value(found, "socketio_connections", namespace="/", transport="websocket") == 1
    await clients[1].disconnect()
    await clients[2].disconnect()


async def test_random_event_names_are_bounded(server: ServerFactory) -> None:
    """10,000 random event names from a client give at most N+1 event series (N=20 + __other__),
    every event is still counted and reaches the app's catch-all handler once."""
    base = server(APP, env={"SIO_MAX_EVENTS": "20"}, ready_path="/metrics")
    client = await connect(base)
    rng = random.Random(5)
    for _ in range(10_000):
        await client.emit("".join(rng.choices(string.ascii_letters, k=12)), 1)
    calls = await client.call("handler_calls", 0, timeout=60)
    assert calls["catch_all"] == 10_000
    found = await metrics(base)
    received = names(found, "socketio_events_received_total")
    assert len(received) <= 21
    assert (
        sum(value(found, "socketio_events_received_total", **labels) for labels in received)
        == 10_001
    )  # + the handler_calls event itself
    assert len(names(found, "socketio_handler_duration_seconds_count")) <= 21
    assert value(found, "socketio_received_bytes_total", namespace="/") > 10_000 * 12
    await client.disconnect()


async def test_batcher_delivers_every_message_once_in_order(server: ServerFactory) -> None:
    """20 real clients receive 1,000 messages (every 7th unbatched) exactly once each, in order,
    through batches of at most 50."""
    base = server(APP, ready_path="/metrics")
    received: list[list[int]] = [[] for _ in range(20)]
    clients = []
    for i in range(20):
        client = socketio.AsyncClient(reconnection=False)
        client.on("tick", received[i].append)
        unbatch(client)
        await client.connect(base, transports=["websocket"], wait_timeout=10)
        clients.append(client)
    assert await clients[0].call("stream", {"n": 1000, "every": 7}, timeout=60) == "done"

    async def all_in() -> bool:
        return all(len(r) >= 1000 for r in received)

    await eventually(all_in, "every client receives all 1000 items")
    await asyncio.sleep(0.1)
    assert all(r == list(range(1000)) for r in received)
    found = await metrics(base)
    assert value(found, "socketio_batch_items_sum") == 1000 - 1000 // 7
    assert value(found, "socketio_batch_pending") == 0
    for client in clients:
        await client.disconnect()
