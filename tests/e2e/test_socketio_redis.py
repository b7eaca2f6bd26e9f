"""Two real servers sharing the real Redis through AsyncRedisManager."""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio

from asgi_perf.socketio import unbatch

from .._server import ServerFactory
from .._socketio import metrics, value
from .._time import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.slow, pytest.mark.service("redis")]
APP = "tests.apps.socketio_app:app"


def _decode(data: bytes) -> Any:
    """A pub/sub message: JSON since python-socketio 5.14, a pickle before."""
    if data[:1] == b"\x80":  # pickle protocol 2+ opcode
        return pickle.loads(data)
    return json.loads(data)


async def test_two_nodes_count_per_node_and_publish_once_per_batch(
    server: ServerFactory, redis_url: str
) -> None:
    """Node A has 2 clients, node B 1: each node's gauge counts its own; a 40-item stream from A
    reaches all 3 clients in order and crosses Redis as ONE published batch, not 40 messages."""
    channel = f"asgi-perf-test-{uuid.uuid4().hex}"
    env = {"SIO_REDIS_URL": redis_url, "SIO_CHANNEL": channel}
    node_a = server(APP, env=env, ready_path="/metrics")
    node_b = server(APP, env=env, ready_path="/metrics")
    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    received: list[list[int]] = [[], [], []]
    clients = []
    for i, base in enumerate((node_a, node_a, node_b)):
        c = socketio.AsyncClient(reconnection=False)
        c.on("tick", received[i].append)
        unbatch(c)
        await c.connect(base, transports=["websocket"], wait_timeout=10)
        clients.append(c)

    async def both_nodes_subscribed() -> bool:
        # Each node's manager subscribes on its first connection, in a background task: a batch
        # published before node B listens would never reach it (pub/sub is at-most-once).
        ((_, subscribers),) = await listener.pubsub_numsub(channel)
        return int(subscribers) == 3  # node A, node B and this test's listener

    await eventually(both_nodes_subscribed, "both nodes subscribe to the channel")
    assert await clients[0].call("stream", {"n": 40}, timeout=30) == "done"
    for _ in range(200):
        if all(len(r) >= 40 for r in received):
            break
        await asyncio.sleep(0.05)
    assert received == [list(range(40))] * 3
    published = []
    for _ in range(10):  # subscribe confirmations read as None too: drain a few rounds
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None and message["type"] == "message":
            body = _decode(message["data"])
            if body.get("method") == "emit":
                published.append(body["event"])
    assert published == ["asgi-perf:batch"]
    found_a, found_b = await metrics(node_a), await metrics(node_b)
    assert value(found_a, "socketio_connections", namespace="/", transport="websocket") == 2
    assert value(found_b, "socketio_connections", namespace="/", transport="websocket") == 1
    assert value(found_a, "socketio_connects_total", namespace="/", outcome="accepted") == 2
    assert value(found_b, "socketio_connects_total", namespace="/", outcome="accepted") == 1
    assert value(found_a, "socketio_batches_total", event="tick", flush_reason="flush") == 1
    assert value(found_b, "socketio_batches_total", event="tick", flush_reason="flush") == 0
    for c in clients:
        await c.disconnect()
    await pubsub.unsubscribe(channel)
    await pubsub.aclose()
    await listener.aclose()
