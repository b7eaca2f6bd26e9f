"""Cross-process invalidation for the Redis tier: the message format and the subscriber task.

Every instance publishes what it removed (keys, or a prefix) on one channel per Redis database
and namespace; every other instance drops those entries from its local tier. Pub/sub is
at-most-once: a message published while a subscriber is disconnected is lost to it. So the local
tier is cleared every time the subscription is (re)established, including when redis-py
reconnects and resubscribes on its own, which shows up here as a fresh ``subscribe`` confirmation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._stats import RateLimitedLog, TierStats

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Reconnect backoff: the first wait, and the cap (seconds); each wait is jittered 50-100%.
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 5.0
#: The doubling stops here (0.05 * 2**16 is far past the cap): an outage of any length never
#: overflows the float.
_MAX_DOUBLINGS = 16


class Silent(ConnectionError):
    """The connection answered nothing, not even a PING: treat it as dead and reconnect."""


def channel_name(db: object, namespace: str) -> str:
    # Pub/sub ignores the database number: put it in the channel so two apps on db 0 and db 1
    # with one namespace do not invalidate each other.
    return f"asgi-perf:invalidate:{db}:{namespace}"


def message(origin: str, *, keys: list[str] | None = None, prefix: str | None = None) -> bytes:
    body: dict[str, Any] = {"v": 1, "from": origin}
    if prefix is not None:
        body["prefix"] = prefix
    else:
        body["keys"] = keys
    return json.dumps(body, separators=(",", ":")).encode()


class Subscriber:
    """The task that listens on the channel and applies other instances' invalidations."""

    def __init__(
        self,
        client: Redis,
        channel: str,
        origin: str,
        stats: TierStats,
        log: RateLimitedLog,
        *,
        bounded: Callable[[Awaitable[Any]], Awaitable[Any]],
        on_subscribed: Callable[[], None],
        on_keys: Callable[[list[str]], None],
        on_prefix: Callable[[str], None],
        ping_interval: float,
        rng: random.Random,
    ) -> None:
        self.client = client
        self.channel = channel
        self.origin = origin
        self.stats = stats
        self.log = log
        self.bounded = bounded
        self.on_subscribed = on_subscribed
        self.on_keys = on_keys
        self.on_prefix = on_prefix
        self.ping_interval = ping_interval
        self.rng = rng
        self.ready = asyncio.Event()
        self.failures = 0
        self.confirmed = 0

    async def run(self) -> None:
        """Subscribe, pump messages, and on any failure back off and start again; forever."""
        while True:
            try:
                await self._session()
            except Exception as exc:  # noqa: BLE001 - the subscriber must outlive any failure
                self.stats.errors["subscribe"] += 1
                self.log.report("the invalidation subscription", exc)
            self.failures += 1
            self.ready.set()  # start() waits for the first attempt, whatever its outcome
            # backoff() is bounded for any number of failures; should anything else end this
            # task, TieredCache counts, logs and restarts it.
            await asyncio.sleep(self.backoff())

    async def _session(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await self.bounded(pubsub.subscribe(self.channel))
            await self._pump(pubsub)
        finally:
            self.stats.subscribed = 0
            with contextlib.suppress(Exception):
                await self.bounded(pubsub.aclose())

    def backoff(self) -> float:
        doublings = min(max(self.failures - 1, 0), _MAX_DOUBLINGS)
        wait = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0**doublings)
        return wait * (0.5 + self.rng.random() / 2)

    async def _pump(self, pubsub: Any) -> None:
        awaiting_pong = False
        while True:
            msg = await pubsub.get_message(timeout=self.ping_interval)
            if msg is not None:
                awaiting_pong = False
                if msg["type"] == "subscribe":
                    self._subscribed()
                elif msg["type"] == "message":
                    self._apply(msg["data"])
            elif awaiting_pong:
                raise Silent("no reply to PING on the invalidation subscription")
            else:
                # A connection that died without a reset (a lost host, a dropped NAT entry)
                # looks idle forever: ask, and give up if the next window brings no answer.
                await self.bounded(pubsub.ping())
                awaiting_pong = True

    def _subscribed(self) -> None:
        # Entries cached while unsubscribed may have missed their invalidation.
        self.on_subscribed()
        if self.confirmed:
            self.stats.resubscribes += 1
        self.confirmed += 1
        self.failures = 0
        self.stats.subscribed = 1
        self.ready.set()

    def _apply(self, data: bytes) -> None:
        try:
            body = json.loads(data)
            origin = body["from"]
            prefix = body.get("prefix")
            keys = body.get("keys")
            if not (
                isinstance(origin, str)
                and (
                    isinstance(prefix, str)
                    or (isinstance(keys, list) and all(isinstance(k, str) for k in keys))
                )
            ):
                raise ValueError("not an invalidation message")  # noqa: TRY301
        except Exception as exc:  # noqa: BLE001 - a stranger's message must not stop us
            self.stats.invalidations["malformed"] += 1
            self.log.report("reading an invalidation message", exc, detail=False)
            return
        if origin == self.origin:
            return  # our own: already applied locally before it was published
        self.stats.invalidations["received"] += 1
        if isinstance(prefix, str):
            self.on_prefix(prefix)
        else:
            self.on_keys(keys)
