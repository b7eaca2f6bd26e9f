"""The Redis second tier, on the real Redis: tiers, invalidation, SCAN, faults, breaker, metrics."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from asgi_perf import PerfRegistry, metrics_app
from asgi_perf.cache import ERR_JITTER, ERR_TTL, LRUCache, TTLCache
from asgi_perf.cache._flights import Flight
from asgi_perf.cache.redis import (
    ERR_BREAKER,
    ERR_CLIENT,
    ERR_DECODE,
    ERR_KEY_TYPE,
    ERR_LOCAL,
    ERR_NAMESPACE,
    ERR_NOT_ASYNC,
    ERR_PING,
    ERR_SERIALIZER,
    ERR_TIMEOUT,
    JsonSerializer,
    PickleSerializer,
    TieredCache,
    cached_tiered,
)
from asgi_perf.cache.redis._codec import encode_key
from asgi_perf.cache.redis._stats import (
    ERR_TIER_DUPLICATE,
    LOG_INTERVAL,
    CircuitBreaker,
    RateLimitedLog,
    TierStats,
)
from asgi_perf.cache.redis._subscriber import BACKOFF_CAP, BACKOFF_FIRST, Subscriber
from asgi_perf.testing import sample, scrape

from ..._server import ROOT, free_port
from ..._tcp_proxy import TcpProxy
from ..._time import FakeClock, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.service("redis")]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def circuit_open(t: TieredCache) -> bool:
    return t._breaker.is_open


def value(registry: PerfRegistry, name: str, **labels: str) -> float | None:
    return sample(registry, name, labels)


@pytest.fixture
def ns() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(redis_url: str, ns: str) -> AsyncIterator[aioredis.Redis]:
    """A client on the real Redis; the test's namespace is deleted afterwards."""
    c = aioredis.Redis.from_url(redis_url, client_name=f"asgi-perf-{ns}")
    yield c
    async for batch in _batches(c.scan_iter(match=f"{ns}:*", count=1000)):
        await c.unlink(*batch)
    await c.aclose()


async def _batches(keys: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in keys:
        batch.append(key)
        if len(batch) == 1000:
            yield batch
            batch = []
    if batch:
        yield batch


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the real Redis, for real network faults."""
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    p = await TcpProxy(host, int(port)).start()
    yield p
    await p.close()


def dead_client() -> aioredis.Redis:
    """A client pointed at a port nothing listens on (connection refused), no retries."""
    return aioredis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))


def tier(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, name: str = "users", **kw: Any
) -> TieredCache:
    """A tier on a fresh local cache. Its per-command timeout is generous unless a test sets one:
    a loaded machine must not turn a healthy command into a counted timeout."""
    kw.setdefault("timeout", 5.0)
    local: TTLCache[str, Any] = TTLCache(1000, 60, name=name, registry=registry)
    return TieredCache(local, client, namespace=ns, ttl=300, **kw)


def loader_of(result: Any, calls: list[int]) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        calls.append(1)
        return result

    return load


# -- configuration -------------------------------------------------------------------------------


def test_bad_configuration_raises_value_error(registry: PerfRegistry) -> None:
    """Every bad option fails at construction with its message, before anything is registered."""
    c = aioredis.Redis()
    local: LRUCache[str, Any] = LRUCache(10, name="c", registry=registry)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"local": {}}, ERR_LOCAL.format({})),
        ({"registry": "r"}, "registry must be a PerfRegistry"),
        ({"redis": redis.Redis()}, "redis must be a redis.asyncio.Redis client"),
        ({"redis": aioredis.Redis(decode_responses=True)}, ERR_DECODE),
        ({"namespace": ""}, ERR_NAMESPACE.format("")),
        ({"namespace": "a:b"}, ERR_NAMESPACE.format("a:b")),
        ({"namespace": "a*"}, ERR_NAMESPACE.format("a*")),
        ({"ttl": 0}, ERR_TTL.format(0)),
        ({"ttl": True}, ERR_TTL.format(True)),
        ({"jitter": 1.0}, ERR_JITTER.format(1.0)),
        ({"serializer": object()}, "serializer must have dumps"),
        ({"serializer": JsonSerializer}, ERR_SERIALIZER.format(JsonSerializer)),
        ({"timeout": -1}, ERR_TIMEOUT.format(-1)),
        ({"failure_threshold": 0}, ERR_BREAKER.format(0, 5.0)),
        ({"reset_after": 0}, ERR_BREAKER.format(5, 0)),
        ({"ping_interval": 0}, ERR_PING.format(0)),
    ]
    for override, message in cases:
        kwargs: dict[str, Any] = {"local": local, "redis": c, "namespace": "ns", "ttl": 10}
        kwargs.update(override)
        with pytest.raises(ValueError, match=r".") as info:
            TieredCache(**kwargs)
        assert message in str(info.value), override
    assert ERR_CLIENT.format("x").startswith("redis must be")
    TieredCache(local, c, namespace="ns", ttl=10)  # nothing was half-registered above
    with pytest.raises(ValueError, match="already fronts") as info:
        TieredCache(local, c, namespace="other", ttl=10)
    assert str(info.value) == ERR_TIER_DUPLICATE.format("c")


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("user:42", "user:42"),
        (("user", 42), "user:42"),
        (("user", "42"), "user:42"),
        (("a:b",), "a\\:b"),
        (("a", "b"), "a:b"),
        (("back\\slash", -1), "back\\\\slash:-1"),
        (("flag", True), "flag:True"),
        ((), ""),
    ],
)
async def test_keys_become_stable_strings(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, key: Any, encoded: str
) -> None:
    """A str key is used verbatim; tuple parts are joined with ':' (escaped inside a part)."""
    t = tier(registry, client, ns)
    await t.get_or_load(key, loader_of("v", []))
    assert await client.get(f"{ns}:{encoded}") == b'"v"'
    assert list(t.local) == [encoded]


async def test_bad_key_type_raises_before_anything_happens(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """A key of another type is a caller bug: ValueError naming the type, never the value."""
    t = tier(registry, client, ns)
    for bad in (1.5, ("a", 1.5), ("a", None), b"x"):
        with pytest.raises(ValueError, match="tiered cache key") as info:
            await t.get_or_load(bad, loader_of(1, []))  # type: ignore[arg-type]
        assert str(info.value) == ERR_KEY_TYPE.format(
            type(bad if not isinstance(bad, tuple) else bad[1]).__name__
        )


# -- tiers ---------------------------------------------------------------------------------------


async def test_local_then_redis_then_loader_counted_per_tier(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """First call loads (both tiers miss); then a local hit; a second instance hits Redis."""
    a = tier(registry, client, ns, "a")
    b = tier(registry, client, ns, "b")
    calls: list[int] = []
    assert await a.get_or_load("k", loader_of({"id": 1}, calls)) == {"id": 1}
    assert await a.get_or_load("k", loader_of({"id": 2}, calls)) == {"id": 1}
    assert await b.get_or_load("k", loader_of({"id": 3}, calls)) == {"id": 1}
    assert await b.get_or_load("k", loader_of({"id": 4}, calls)) == {"id": 1}
    assert calls == [1]
    assert (a.local.stats()["hits"], a.local.stats()["misses"], a.local.stats()["loads"]) == (
        1,
        1,
        1,
    )
    assert (b.local.stats()["hits"], b.local.stats()["misses"], b.local.stats()["loads"]) == (
        1,
        1,
        0,
    )
    assert (a.stats.hits, a.stats.misses, b.stats.hits, b.stats.misses) == (0, 1, 1, 0)
    assert 0 < await client.pttl(f"{ns}:k") <= 300_000


async def test_json_round_trip_and_none_is_cached(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Values cross Redis as JSON bytes; None is a value (a hit), not a miss; tuples become lists."""
    a = tier(registry, client, ns, "a")
    b = tier(registry, client, ns, "b")
    calls: list[int] = []
    for key, v in (("none", None), ("nested", {"a": [1, 2.5, "é"], "b": True}), ("t", (1, 2))):
        await a.get_or_load(key, loader_of(v, calls))
    assert await client.get(f"{ns}:none") == b"null"
    assert await client.get(f"{ns}:nested") == '{"a":[1,2.5,"é"],"b":true}'.encode()
    assert await b.get_or_load("none", loader_of("x", calls)) is None
    assert await b.get_or_load("nested", loader_of("x", calls)) == {"a": [1, 2.5, "é"], "b": True}
    assert await b.get_or_load("t", loader_of("x", calls)) == [1, 2]
    assert await a.get_or_load("none", loader_of("x", calls)) is None
    assert len(calls) == 3
    assert b.stats.hits == 3


async def test_pickle_is_opt_in_and_keeps_exact_types(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """With PickleSerializer (explicitly) tuples, sets and objects round-trip exactly."""
    a = tier(registry, client, ns, "a", serializer=PickleSerializer())
    b = tier(registry, client, ns, "b", serializer=PickleSerializer())
    value_ = {"t": (1, 2), "s": {3}, "r": random.Random}
    await a.get_or_load("k", loader_of(value_, []))
    assert await b.get_or_load("k", loader_of(None, [])) == value_
    assert isinstance(tier(registry, client, ns, "c").serializer, JsonSerializer)


async def test_unserializable_value_is_returned_not_stored_and_not_logged(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A value JSON refuses reaches the caller and the local tier, never Redis; counted, and
    the log names the failure but not the value."""
    a = tier(registry, client, ns, "a")
    secret = {"secret-value-123"}
    with caplog.at_level(logging.WARNING, logger="asgi_perf.cache"):
        assert await a.get_or_load("k", loader_of(secret, [])) == secret
    assert await client.exists(f"{ns}:k") == 0
    assert a.local.peek("k") == secret
    assert a.stats.serialization == {"dumps": 1, "loads": 0}
    assert "serializing a value for Redis failed (TypeError)" in caplog.text
    assert "secret-value-123" not in caplog.text
    # set() of such a value removes the stale Redis copy so nobody reads the old value.
    await a.set("k2", "old")
    assert await client.get(f"{ns}:k2") == b'"old"'
    await a.set("k2", {float("nan")})
    assert await client.exists(f"{ns}:k2") == 0
    assert a.stats.serialization["dumps"] == 2


async def test_unreadable_bytes_are_a_miss_then_replaced(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Bytes the serializer cannot read count as a loads error and a miss; the load overwrites."""
    await client.set(f"{ns}:k", b"\x80not json")
    a = tier(registry, client, ns)
    assert await a.get_or_load("k", loader_of(7, [])) == 7
    assert (a.stats.misses, a.stats.serialization["loads"]) == (1, 1)
    assert await client.get(f"{ns}:k") == b"7"


async def test_ttl_and_jitter_on_redis_entries(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Redis entries get PX = ttl, shortened by at most jitter * ttl."""
    t = tier(registry, client, ns, jitter=0.5, rng=random.Random(1))
    for i in range(20):
        await t.set(f"k{i}", i)
    ttls = [await client.pttl(f"{ns}:k{i}") for i in range(20)]
    assert all(150_000 - 1000 <= x <= 300_000 for x in ttls)
    assert max(ttls) - min(ttls) > 10_000  # spread, not all equal


# -- single flight -------------------------------------------------------------------------------


async def test_fifty_concurrent_misses_run_one_redis_read_and_one_load(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """50 concurrent awaits of one key: 1 Redis GET, 1 load, 49 coalesced, all get the value."""
    t = tier(registry, client, ns)
    release = asyncio.Event()
    calls: list[int] = []

    async def load() -> int:
        calls.append(1)
        await release.wait()
        return 42

    tasks = [asyncio.ensure_future(t.get_or_load("k", load)) for _ in range(50)]
    await eventually(lambda: calls == [1], "the one load to start")
    release.set()
    assert await asyncio.gather(*tasks) == [42] * 50
    assert calls == [1]
    assert t.local.stats()["coalesced"] == 49
    assert t.stats.misses == 1
    assert t._loading.flights == {}


async def test_loader_error_reaches_every_waiter_and_nothing_is_cached(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """The one load raises: every waiter gets it; neither tier stores anything; next call retries."""
    t = tier(registry, client, ns)
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        raise ConnectionError("db down")

    tasks = [asyncio.ensure_future(t.get_or_load("k", load)) for _ in range(10)]
    await settle()
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert "k" not in t.local
    assert await client.exists(f"{ns}:k") == 0
    assert t.local.stats()["load_errors"] == 1
    assert await t.get_or_load("k", loader_of(1, [])) == 1


async def test_cancelled_leader_does_not_break_the_others(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Cancelling the caller that started the load leaves it running for the others; cached."""
    t = tier(registry, client, ns)
    release = asyncio.Event()
    calls: list[int] = []

    async def load() -> int:
        calls.append(1)
        await release.wait()
        return 5

    leader = asyncio.ensure_future(t.get_or_load("k", load))
    await eventually(lambda: calls == [1], "the load to start")
    followers = [asyncio.ensure_future(t.get_or_load("k", load)) for _ in range(3)]
    await settle()
    leader.cancel()
    await settle()
    release.set()
    assert await asyncio.gather(*followers) == [5, 5, 5]
    assert leader.cancelled()
    assert calls == [1]
    assert t.local.peek("k") == 5
    assert await client.get(f"{ns}:k") == b"5"


async def test_invalidation_during_a_load_wins(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """A delete while a load runs: the load's callers get its value but it is stored nowhere."""
    t = tier(registry, client, ns)
    release = asyncio.Event()
    started: list[int] = []

    async def load() -> str:
        started.append(1)
        await release.wait()
        return "stale"

    task = asyncio.ensure_future(t.get_or_load("k", load))
    await eventually(lambda: started == [1], "the load to start")
    await t.delete("k")
    release.set()
    assert await task == "stale"
    assert "k" not in t.local
    assert await client.exists(f"{ns}:k") == 0


async def test_local_cache_with_a_lock_and_oversized_values(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """A local cache with a lock is used under it; a value too big for it still reaches Redis."""
    local: LRUCache[str, Any] = LRUCache(
        10, name="locked", registry=registry, lock=threading.RLock(), getsizeof=len
    )
    t = TieredCache(local, client, namespace=ns, ttl=60, timeout=5)
    assert await t.get_or_load("small", loader_of("abc", [])) == "abc"
    assert await t.get_or_load("small", loader_of("x", [])) == "abc"
    assert await t.get_or_load("big", loader_of("x" * 50, [])) == "x" * 50
    assert "big" not in local
    assert local.stats()["rejected"] == 1
    assert await client.get(f"{ns}:big") == b'"' + b"x" * 50 + b'"'
    await t.set("small", "def")
    await t.invalidate_prefix("sm")
    assert len(local) == 0


# -- invalidation across instances and processes -------------------------------------------------


async def test_delete_set_and_prefix_reach_the_other_instance(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Two instances, separate local tiers: delete, set and invalidate_prefix on A drop B's copy."""
    async with tier(registry, client, ns, "a") as a, tier(registry, client, ns, "b") as b:
        for k in ("k1", "k2", "p:1", "p:2", "q:1"):
            await b.get_or_load(k, loader_of(k, []))
        assert set(b.local) == {"k1", "k2", "p:1", "p:2", "q:1"}
        await a.delete("k1")
        await eventually(lambda: "k1" not in b.local, "B to drop k1")
        await a.set("k2", "new")
        await eventually(lambda: "k2" not in b.local, "B to drop k2")
        assert await b.get_or_load("k2", loader_of("loaded", [])) == "new"
        assert await a.invalidate_prefix("p:") == 2
        await eventually(lambda: set(b.local) == {"k2", "q:1"}, "B to drop p:*")
        assert a.stats.invalidations["sent"] == 3
        assert b.stats.invalidations == {"sent": 0, "received": 3, "malformed": 0}
        # A ignored its own three messages: nothing counted as received.
        await eventually(lambda: b.stats.invalidations["received"] == 3, "settled")
        assert a.stats.invalidations["received"] == 0


async def test_invalidation_reaches_a_real_second_process(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, redis_url: str
) -> None:
    """A TieredCache in another Python process reads our value from Redis, then drops it from
    its local tier when we delete or prefix-invalidate it here."""
    t = tier(registry, client, ns)
    # Written before the peer starts, so no message about it can race the peer's load.
    await t.set("user:1", "from-parent")
    peer = subprocess.Popen(  # noqa: ASYNC220 - driven line by line below, with timeouts
        [sys.executable, "-m", "tests.apps.tiered_peer", redis_url, ns],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert peer.stdin is not None
    assert peer.stdout is not None
    stdin, stdout = peer.stdin, peer.stdout

    async def read() -> str:
        return (await asyncio.wait_for(asyncio.to_thread(stdout.readline), 20)).strip()

    async def ask(line: str) -> str:
        stdin.write(line + "\n")
        stdin.flush()
        return await read()

    async def until_dropped(key: str) -> None:
        for _ in range(1000):
            if await ask(f"has {key}") == "no":
                return
        pytest.fail(f"the peer kept {key}")

    try:
        assert await read() == "ready"
        assert await ask("load user:1 from-peer") == "from-parent"  # a Redis-tier hit
        assert await ask("has user:1") == "yes"
        await t.delete("user:1")
        await until_dropped("user:1")
        assert await ask("load user:2 v") == "v"
        assert await ask("has user:2") == "yes"
        await t.invalidate_prefix("user:")
        await until_dropped("user:2")
        stdin.write("quit\n")
        stdin.flush()
        assert await asyncio.to_thread(peer.wait, 20) == 0
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        stdin.close()
        stdout.close()


async def test_malformed_messages_are_counted_and_ignored(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Junk on the channel is counted as malformed; the subscriber keeps working."""
    async with tier(registry, client, ns, "a") as a, tier(registry, client, ns, "b") as b:
        channel = a._channel
        for junk in (b"not json", b'{"from": 1, "keys": []}', b'{"from": "x", "keys": [1]}', b"[]"):
            await client.publish(channel, junk)
        await eventually(lambda: b.stats.invalidations["malformed"] == 4, "4 malformed")
        await b.get_or_load("k", loader_of(1, []))
        await a.delete("k")
        await eventually(lambda: "k" not in b.local, "B still applies real messages")


async def test_scan_prefix_invalidation_removes_exactly_those_keys(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, redis_url: str
) -> None:
    """5,000 matching keys go, the 600 near misses stay; SCAN is used, KEYS never."""
    async with client.pipeline(transaction=False) as pipe:
        for i in range(5000):
            pipe.set(f"{ns}:user:{i}", b"1")
        for i in range(200):
            pipe.set(f"{ns}:username:{i}", b"1")  # shares "user" but not "user:"
            pipe.set(f"{ns}:other:user:{i}", b"1")
            pipe.set(f"{ns}-x:user:{i}", b"1")  # another namespace
        await pipe.execute()
    before = await client.info("commandstats")
    t = tier(registry, client, ns)
    await t.get_or_load("user:7", loader_of(0, []))  # a local copy too
    assert await t.invalidate_prefix("user:") == 5000
    assert "user:7" not in t.local
    after = await client.info("commandstats")
    assert after.get("cmdstat_keys", {}).get("calls", 0) == before.get("cmdstat_keys", {}).get(
        "calls", 0
    )
    assert after["cmdstat_scan"]["calls"] > before.get("cmdstat_scan", {}).get("calls", 0)
    remaining = {k async for k in client.scan_iter(match=f"{ns}:*", count=1000)}
    assert len(remaining) == 400
    assert not any(k.startswith(f"{ns}:user:".encode()) for k in remaining)
    assert await t.invalidate_prefix("nothing:") == 0  # SCAN steps that match nothing
    async for batch in _batches(client.scan_iter(match=f"{ns}-x:*", count=1000)):
        assert len(batch) == 200
        await client.unlink(*batch)


async def test_prefix_with_glob_characters_and_tuple_prefixes(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Glob metacharacters in a prefix are literal; a tuple prefix matches whole parts only."""
    t = tier(registry, client, ns)
    for key in ("a*:1", "ab:1", "a[b]:1", "a?:1"):
        await t.set(key, 1)
    for tkey in (("user", 1), ("user", 2), ("username", 1)):
        await t.set(tkey, 1)
    assert await t.invalidate_prefix("a*") == 1
    assert await t.invalidate_prefix("a[b]") == 1
    assert await t.invalidate_prefix(("user",)) == 2
    remaining = sorted([k.decode() async for k in client.scan_iter(match=f"{ns}:*")])
    assert remaining == [f"{ns}:a?:1", f"{ns}:ab:1", f"{ns}:username:1"]
    assert sorted(t.local) == ["a?:1", "ab:1", "username:1"]


async def test_prefix_invalidation_stops_at_a_refused_unlink(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, redis_url: str
) -> None:
    """A Redis user allowed to SCAN but not to UNLINK (an ACL): the error is counted, the call
    returns what was removed (0) and still clears the local tier and publishes."""
    user = f"asgi-perf-{ns}"
    await client.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all", "-unlink"
    )
    limited = aioredis.Redis.from_url(redis_url, username=user, password="x")
    try:
        t = tier(registry, limited, ns)
        await t.get_or_load("p:1", loader_of(1, []))
        assert await t.invalidate_prefix("p:") == 0
        assert t.stats.errors["invalidate_prefix"] == 1
        assert "p:1" not in t.local
        assert await client.exists(f"{ns}:p:1") == 1
        assert t.stats.invalidations["sent"] == 1
        assert not circuit_open(t)
    finally:
        await limited.aclose()
        await client.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]


# -- Redis down, slow, restarted -----------------------------------------------------------------


async def test_redis_down_falls_back_to_the_loader_and_never_raises(
    registry: PerfRegistry, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection refused: every call is answered (loader, local tier), every failure counted,
    one log line per operation with no key in it."""
    c = dead_client()
    t = tier(registry, c, ns, failure_threshold=1000)
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="asgi_perf.cache"):
        await t.start()
        assert await t.get_or_load("secret-key-1", loader_of("v", calls)) == "v"
        assert await t.get_or_load("secret-key-1", loader_of("w", calls)) == "v"  # local hit
        assert await t.get_or_load("secret-key-2", loader_of("x", calls)) == "x"
        await t.set("secret-key-3", 1)
        await t.delete("secret-key-3")
        assert await t.invalidate_prefix("secret") == 0
        await t.aclose()
    assert calls == [1, 1]
    s = t.stats
    assert s.errors == {
        "get": 2, "set": 1, "delete": 2, "invalidate_prefix": 1, "publish": 3, "subscribe": 1,
    }  # fmt: skip
    assert (s.read_errors, s.fallbacks["error"], s.invalidations["sent"]) == (2, 2, 0)
    assert s.subscribed == 0
    assert "secret" not in caplog.text
    assert "Redis get failed (ConnectionError" in caplog.text
    assert len([r for r in caplog.records if "Redis get" in r.getMessage()]) == 1
    await c.aclose()


async def test_a_black_holed_redis_times_out_and_falls_back(
    registry: PerfRegistry, ns: str, proxy: TcpProxy
) -> None:
    """Redis accepts but never answers: each command gives up after ``timeout``, the loader
    answers, and the timeout counts towards the breaker."""
    c = aioredis.Redis.from_url(proxy.url)
    t = tier(registry, c, ns, timeout=5, failure_threshold=2)
    assert await t.get_or_load("k0", loader_of(0, [])) == 0  # connected while healthy
    assert t.stats.errors["get"] == t.stats.errors["set"] == 0
    t.timeout = 0.05  # short from here on: every command now meets the black hole
    proxy.freeze()
    assert await t.get_or_load("k1", loader_of(1, [])) == 1
    assert await t.get_or_load("k2", loader_of(2, [])) == 2
    assert t.stats.errors["get"] == 2
    assert circuit_open(t)
    assert await t.get_or_load("k3", loader_of(3, [])) == 3
    assert t.stats.fallbacks == {"error": 2, "circuit_open": 1}
    assert t.stats.skipped["get"] == 1
    proxy.forward()
    await c.aclose()


async def test_an_error_reply_is_counted_but_does_not_open_the_circuit(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A WRONGTYPE reply (someone else's list under our key) is an error, not an outage; the
    log names the reply's error code only."""
    await client.lpush(f"{ns}:k", b"x")
    t = tier(registry, client, ns, failure_threshold=1)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.cache"):
        assert await t.get_or_load("k", loader_of(1, [])) == 1
    assert t.stats.errors["get"] == 1
    assert t.stats.fallbacks["error"] == 1
    assert not circuit_open(t)
    assert "Redis get failed (ResponseError: WRONGTYPE)" in caplog.text
    assert "Operation against a key" not in caplog.text


def test_a_reply_quoting_the_command_keeps_its_key_out_of_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where a command is renamed or disabled, Redis's reply quotes its arguments, the key among
    them (a server set up that way cannot be made here at runtime, so the reply is built)."""
    log = RateLimitedLog("users", FakeClock(1000.0))
    reply = redis.exceptions.ResponseError(
        "unknown command 'GET', with args beginning with: 'ns:user-secret-42'"
    )
    with caplog.at_level(logging.WARNING, logger="asgi_perf.cache"):
        log.report("Redis get", reply)
        log.report(
            "Redis set", redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1.")
        )
    assert "Redis get failed (ResponseError: unknown)" in caplog.text
    assert "user-secret-42" not in caplog.text
    assert "Redis set failed (ConnectionError: Error 111 connecting to 127.0.0.1:1.)" in caplog.text


async def test_circuit_breaker_with_a_fake_clock(
    registry: PerfRegistry, ns: str, proxy: TcpProxy
) -> None:
    """After 3 consecutive failures Redis is skipped for reset_after seconds; then one probe:
    failing reopens it, succeeding closes it."""
    clock = FakeClock(1000.0)
    c = aioredis.Redis.from_url(proxy.url, retry=Retry(NoBackoff(), 0))
    t = tier(registry, c, ns, failure_threshold=3, reset_after=30, timer=clock)
    proxy.refuse()
    for i in range(3):
        assert await t.get_or_load(f"a{i}", loader_of(i, [])) == i
    assert circuit_open(t)
    assert value(registry, "cache_redis_circuit_open", cache="users") == 1
    for i in range(5):
        await t.get_or_load(f"b{i}", loader_of(i, []))
    await t.set("x", 1)
    assert t.stats.errors["get"] == 3
    assert t.stats.skipped == {
        "get": 5,
        "set": 1,
        "delete": 1,  # the failed SET's best-effort UNLINK, skipped as well
        "invalidate_prefix": 0,
        "publish": 1,
    }
    clock.now += 29.9
    await t.get_or_load("c0", loader_of(0, []))
    assert t.stats.skipped["get"] == 6
    clock.now += 0.1  # half-open: one probe, which fails
    await t.get_or_load("c1", loader_of(0, []))
    assert (t.stats.errors["get"], circuit_open(t)) == (4, True)
    await t.get_or_load("c2", loader_of(0, []))
    assert t.stats.skipped["get"] == 7
    clock.now += 30
    proxy.forward()
    assert await t.get_or_load("c3", loader_of("ok", [])) == "ok"  # the probe succeeds
    assert not circuit_open(t)
    assert value(registry, "cache_redis_circuit_open", cache="users") == 0
    assert await c.get(f"{ns}:c3") == b'"ok"'
    assert t._breaker.opened == 1
    await c.aclose()


async def test_a_stale_done_callback_never_removes_a_newer_flight(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """The in-flight entry is removed only by its own task's callback."""
    t = tier(registry, client, ns)
    release = asyncio.Event()

    async def load() -> int:
        await release.wait()
        return 1

    newer = asyncio.ensure_future(t.get_or_load("k", load))
    await eventually(lambda: "k" in t._loading.flights, "the flight to start")
    older: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    older.set_result(0)
    t._loading._landed("k", Flight(), older)  # type: ignore[arg-type]
    assert "k" in t._loading.flights
    release.set()
    assert await newer == 1
    assert t._loading.flights == {}


def test_breaker_probe_slot_is_freed_when_the_probe_is_cancelled() -> None:
    """Half-open admits one probe at a time; a probe that ends without a verdict frees the slot."""
    clock = FakeClock(1000.0)
    b = CircuitBreaker(1, 10, clock)
    b.failure(b.generation)
    assert b.allow() is None
    clock.now += 10
    probe = b.allow()
    assert probe is not None
    assert b.allow() is None  # the slot is taken
    b.release(probe)
    assert b.allow() is not None


async def test_cancelling_a_caller_during_a_redis_command_frees_the_probe(
    registry: PerfRegistry, ns: str, proxy: TcpProxy
) -> None:
    """aclose-style cancellation of the load task mid-command releases the half-open probe."""
    clock = FakeClock(1000.0)
    c = aioredis.Redis.from_url(proxy.url)
    t = tier(registry, c, ns, failure_threshold=1, reset_after=1, timer=clock, timeout=30)
    await t.get_or_load("warm", loader_of(0, []))
    t._breaker.failure(t._breaker.generation)
    clock.now += 1
    proxy.freeze()
    caller = asyncio.ensure_future(t.get_or_load("k", loader_of(1, [])))
    await eventually(lambda: bool(t._loading.flights) and t._breaker.probing, "the probe to start")
    probe = t._loading.flights["k"].task
    assert probe is not None
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not t._breaker.probing
    proxy.forward()
    await c.aclose()


async def test_log_is_rate_limited_per_operation(
    registry: PerfRegistry, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per operation per minute; the next one says how many were held back."""
    clock = FakeClock(1000.0)
    c = dead_client()
    t = tier(registry, c, ns, failure_threshold=1000, timer=clock)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.cache"):
        for i in range(4):
            await t.get_or_load(f"k{i}", loader_of(i, []))
        clock.now += LOG_INTERVAL
        await t.get_or_load("k9", loader_of(9, []))
    lines = [r.getMessage() for r in caplog.records if "Redis get" in r.getMessage()]
    assert len(lines) == 2
    assert "(3 similar failures not logged since the last report)" in lines[1]
    await c.aclose()


async def _subscriber_ids(admin: aioredis.Redis, name: str) -> list[str]:
    found: list[str] = []
    for entry in await admin.client_list(_type="pubsub"):
        if entry.get("name") == name:
            found.append(entry["id"])
    return found


async def test_killed_subscriber_connection_resubscribes_and_clears_local(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, redis_url: str
) -> None:
    """CLIENT KILL on the subscriber's connection: it comes back, the local tier (which may have
    missed invalidations meanwhile) is cleared, and later invalidations arrive again."""
    admin = aioredis.Redis.from_url(redis_url)
    async with tier(registry, client, ns, "a") as a, tier(registry, client, ns, "b") as b:
        await b.get_or_load("k", loader_of(1, []))
        ids = await _subscriber_ids(admin, f"asgi-perf-{ns}")
        assert len(ids) == 2
        for cid in ids:
            await admin.client_kill_filter(_id=cid)
        await eventually(lambda: b.stats.resubscribes == 1, "B to resubscribe")
        await eventually(lambda: a.stats.resubscribes == 1, "A to resubscribe")
        assert "k" not in b.local
        assert b.stats.subscribed == 1
        assert value(registry, "cache_redis_resubscribes_total", cache="b") == 1
        await b.get_or_load("k", loader_of(2, []))
        await a.delete("k")
        await eventually(lambda: "k" not in b.local, "B to receive after the reconnect")
    await admin.aclose()


async def test_subscriber_survives_an_outage_with_backoff(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, proxy: TcpProxy
) -> None:
    """Redis refusing connections: the subscriber counts each failed attempt, keeps retrying with
    backoff, and is subscribed (and receiving) again once Redis is back."""
    c = aioredis.Redis.from_url(proxy.url, retry=Retry(NoBackoff(), 0))
    async with tier(registry, c, ns, "b") as b:
        assert b.stats.subscribed == 1
        proxy.refuse()
        await eventually(lambda: b.stats.errors["subscribe"] >= 2, "failed attempts counted")
        assert b.stats.subscribed == 0
        assert value(registry, "cache_redis_subscribed", cache="b") == 0
        proxy.forward()
        await eventually(lambda: b.stats.subscribed == 1, "subscribed again")
        await b.get_or_load("k", loader_of(1, []))
        a = tier(registry, client, ns, "a")
        await a.delete("k")
        await eventually(lambda: "k" not in b.local, "B receives again")
    await c.aclose()


async def test_a_silent_connection_is_detected_by_ping(
    registry: PerfRegistry, ns: str, proxy: TcpProxy
) -> None:
    """A subscription whose connection stops answering (no reset) is declared dead after an
    unanswered PING and re-established once the network is back."""
    c = aioredis.Redis.from_url(proxy.url)
    async with tier(registry, c, ns, ping_interval=0.5, timeout=5) as t:
        await asyncio.sleep(1.2)  # two idle windows and more: pings answered, nothing counted
        assert t.stats.errors["subscribe"] == 0
        assert t.stats.subscribed == 1
        proxy.freeze()
        await eventually(lambda: t.stats.errors["subscribe"] >= 1, "the silence detected")
        proxy.forward()
        await eventually(lambda: t.stats.subscribed == 1, "subscribed again")
    await c.aclose()


# -- decorator, lifecycle, metrics ---------------------------------------------------------------


async def test_decorator_forms_and_invalidate(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """@tier.cached, @tier.cached(key=...) and cached_tiered(tier) memoize through both tiers."""
    t = tier(registry, client, ns)
    calls: list[tuple[Any, ...]] = []

    @t.cached
    async def user(uid: int, *, full: bool = False) -> dict[str, Any]:
        calls.append((uid, full))
        return {"id": uid}

    @t.cached(key=lambda uid: ("u", uid))
    async def by_key(uid: int) -> int:
        calls.append((uid,))
        return uid

    @cached_tiered(t)
    async def plain(x: str) -> str:
        return x * 2

    assert await user(1) == {"id": 1}
    assert await user(1) == {"id": 1}
    assert await user(1, full=True) == {"id": 1}
    assert calls == [(1, False), (1, True)]
    name = f"{__name__}.test_decorator_forms_and_invalidate.<locals>.user"
    assert user.cache_key(1, full=True) == f"{name}:1:full=:True"
    assert user.cache_key(1, full=True) == encode_key((name, 1, "full=", True))

    @t.cached
    async def no_args() -> int:
        return 3

    assert await no_args() == 3
    assert no_args.cache_key() == f"{__name__}.test_decorator_forms_and_invalidate.<locals>.no_args"
    assert await by_key(3) == 3
    assert await client.get(f"{ns}:u:3") == b"3"
    await by_key.invalidate(3)
    assert await client.exists(f"{ns}:u:3") == 0
    assert await plain("ab") == "abab"
    assert await plain("a:b") == "a:ba:b"
    assert plain.cache_key("a:b") == encode_key((plain.cache_key(), "a:b"))
    assert plain.cache_key(7) == plain.cache_key("7") == f"{plain.cache_key()}:7"
    assert plain.tier is t
    assert vars(user)["__wrapped__"].__name__ == "user"


def test_decorator_refuses_what_it_cannot_cache(registry: PerfRegistry) -> None:
    """Sync functions, async generators and a non-callable key are configuration errors."""
    t = TieredCache(
        LRUCache(10, name="c", registry=registry), aioredis.Redis(), namespace="n", ttl=1
    )

    def sync(x: int) -> int:
        return x

    async def agen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ValueError, match="async def functions only") as info:
        t.cached(sync)  # type: ignore[arg-type]
    assert str(info.value) == ERR_NOT_ASYNC.format(sync)
    with pytest.raises(ValueError, match="generator"):
        t.cached(agen)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be callable"):
        cached_tiered(t, key="k")  # type: ignore[arg-type]


async def test_start_is_idempotent_and_aclose_leaves_the_client_open(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """start() twice subscribes once; aclose() stops the subscriber but not the user's client."""
    t = tier(registry, client, ns)
    await t.start()
    task = t._subscription.task
    await t.start()
    assert t._subscription.task is task
    await t.aclose()
    await t.aclose()
    assert t.stats.subscribed == 0
    assert await client.ping()


async def test_metrics_exported_with_exact_values(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Both tiers' series appear in the exposition with exact values; keys never appear."""
    t = tier(registry, client, ns)
    calls: list[int] = []
    await t.get_or_load("secret-key", loader_of(1, calls))
    await t.get_or_load("secret-key", loader_of(1, calls))
    other = tier(registry, client, ns, "other")
    await other.get_or_load("secret-key", loader_of(1, calls))
    body = generate_latest(registry.prometheus).decode()
    for line in (
        'cache_requests_total{cache="users",result="hit"} 1.0',
        'cache_requests_total{cache="users",result="miss"} 1.0',
        'cache_tier_requests_total{cache="users",result="miss",tier="redis"} 1.0',
        'cache_tier_requests_total{cache="other",result="hit",tier="redis"} 1.0',
        'cache_tier_requests_total{cache="users",result="error",tier="redis"} 0.0',
        'cache_redis_errors_total{cache="users",operation="get"} 0.0',
        'cache_redis_fallbacks_total{cache="users",reason="circuit_open"} 0.0',
        'cache_redis_duration_seconds_count{cache="users",operation="get"} 1.0',
        'cache_redis_duration_seconds_count{cache="users",operation="set"} 1.0',
        'cache_redis_duration_seconds_count{cache="other",operation="set"} 0.0',
        'cache_redis_invalidations_total{cache="users",event="sent"} 0.0',
        'cache_redis_serialization_errors_total{cache="users",operation="dumps"} 0.0',
        'cache_redis_subscribed{cache="users"} 0.0',
        'cache_redis_circuit_open{cache="users"} 0.0',
        'cache_redis_resubscribes_total{cache="users"} 0.0',
        'cache_redis_skipped_total{cache="users",operation="get"} 0.0',
    ):
        assert line in body, line
    assert "secret-key" not in body
    response = await scrape(metrics_app(registry))
    assert response.status == 200
    assert 'cache_tier_requests_total{cache="other",result="hit",tier="redis"} 1.0' in response.text


async def test_namespaced_registry_prefixes_tier_metrics(client: aioredis.Redis, ns: str) -> None:
    """PerfRegistry(namespace=...) prefixes the Redis-tier series like every other metric."""
    registry = PerfRegistry(namespace="app")
    t = tier(registry, client, ns)
    await t.get_or_load("k", loader_of(1, []))
    assert (
        sample(
            registry,
            "cache_tier_requests_total",
            {"cache": "users", "tier": "redis", "result": "miss"},
        )
        == 1
    )
    assert (
        registry.prometheus.get_sample_value("app_cache_redis_subscribed", {"cache": "users"}) == 0
    )


# -- loads racing invalidations ------------------------------------------------------------------


def blocked_loader(result: Any, started: list[int], release: asyncio.Event) -> Any:
    async def load() -> Any:
        started.append(1)
        await release.wait()
        return result

    return load


async def test_invalidating_other_keys_does_not_stop_a_load_from_being_stored(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """Deletes, sets and prefix invalidations of other keys, here or from another process, while
    a load runs: the load is still stored in both tiers (only its own key's invalidation or a
    clear stops it)."""
    async with tier(registry, client, ns, "a") as a, tier(registry, client, ns, "b") as b:
        release = asyncio.Event()
        started: list[int] = []
        task = asyncio.ensure_future(a.get_or_load("hot", blocked_loader("v", started, release)))
        await eventually(lambda: started == [1], "the load to start")
        await a.delete("other")
        await a.set("other2", 1)
        await a.invalidate_prefix("zzz")
        received = a.stats.invalidations["received"]
        await b.delete("other3")
        await b.invalidate_prefix("h-not-hot")
        await eventually(lambda: a.stats.invalidations["received"] == received + 2, "delivery")
        release.set()
        assert await task == "v"
        assert a.local.peek("hot") == "v"
        assert await client.get(f"{ns}:hot") == b'"v"'


@pytest.mark.parametrize("how", ["delete", "set", "prefix", "message", "resubscribe"])
async def test_an_invalidation_detaches_the_flight_it_matches(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, how: str
) -> None:
    """A read that starts after an invalidation of its key returned does not join the load that
    started before it: it loads afresh and gets the new data. The old load's callers (who asked
    before the write) still get its value, which is stored nowhere."""
    t = tier(registry, client, ns)
    db = {"v": "old"}
    release = asyncio.Event()
    read: list[str] = []

    async def load() -> str:
        seen = db["v"]
        read.append(seen)
        await release.wait()
        return seen

    first = asyncio.ensure_future(t.get_or_load("k", load))
    await eventually(lambda: read == ["old"], "the load to read the data")
    db["v"] = "new"
    if how == "delete":
        await t.delete("k")
    elif how == "set":
        await t.set("k", "new")
    elif how == "prefix":
        await t.invalidate_prefix("")
    elif how == "message":
        t._drop_local(["k"])  # what the subscriber does with another process's message
    else:
        t._clear_local()  # what the subscriber does on (re)subscribing
    second = asyncio.ensure_future(t.get_or_load("k", load))
    await settle()
    release.set()
    assert await second == "new"
    assert await first == "old"
    assert t.local.peek("k") == "new"
    assert await client.get(f"{ns}:k") == b'"new"'
    assert t.local.stats()["coalesced"] == 0
    assert t._loading.flights == {}


# -- a failed SET --------------------------------------------------------------------------------


async def test_a_refused_set_unlinks_the_old_value_before_telling_the_others(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, redis_url: str
) -> None:
    """Redis refuses our SET with an error reply (here an ACL refusal, as an OOM under
    noeviction would): the old Redis copy is removed before the invalidation is published, so
    the other process does not read the old value back from Redis."""
    user = f"asgi-perf-{ns}"
    password = uuid.uuid4().hex
    await client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{ns}:*"],
        channels=["*"],
        commands=["+@all", "-set"],
        reset=True,
    )
    limited = aioredis.Redis.from_url(redis_url, username=user, password=password)
    try:
        async with tier(registry, limited, ns, "a") as a, tier(registry, client, ns, "b") as b:
            await b.set("k", "v1")
            assert await a.get_or_load("k", loader_of("db", [])) == "v1"
            await a.set("k", "v2")
            assert a.stats.errors["set"] == 1
            assert a.local.peek("k") == "v2"
            assert await client.exists(f"{ns}:k") == 0
            await eventually(lambda: b.stats.invalidations["received"] == 1, "B to hear of it")
            assert await b.get_or_load("k", loader_of("db", [])) == "db"
    finally:
        await limited.aclose()
        await client.acl_deluser(user)


# -- the subscriber task -------------------------------------------------------------------------


def test_backoff_is_capped_after_any_number_of_failures() -> None:
    """Thousands of consecutive failures (hours of outage) still give a wait within the cap."""
    stats = TierStats("c")
    sub = Subscriber(
        aioredis.Redis(),
        "ch",
        "me",
        stats,
        RateLimitedLog("c", FakeClock(1000.0)),
        bounded=lambda aw: aw,
        on_subscribed=lambda: None,
        on_keys=lambda keys: None,
        on_prefix=lambda p: None,
        ping_interval=1.0,
        rng=random.Random(1),
    )
    for failures in (1, 2, 1025, 10**6):
        sub.failures = failures
        assert BACKOFF_FIRST / 2 <= sub.backoff() <= BACKOFF_CAP


async def test_subscriber_outlives_a_long_outage(registry: PerfRegistry, ns: str) -> None:
    """After as many failed attempts as an hour of outage makes, the subscriber is still
    retrying, and aclose() stops it without raising."""
    c = dead_client()
    t = tier(registry, c, ns)
    await t.start()
    assert t._subscription.sub is not None
    assert t.stats.errors["subscribe"] == 1
    t._subscription.sub.failures = 2000
    await eventually(lambda: t.stats.errors["subscribe"] == 2, "one more failed attempt")
    await settle()
    task = t._subscription.task
    assert task is not None
    assert not task.done()
    await t.aclose()
    assert task.cancelled()
    await c.aclose()


async def test_a_subscriber_task_that_ends_is_logged_counted_and_restarted(
    registry: PerfRegistry,
    client: aioredis.Redis,
    ns: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the subscriber task ever end by itself, that is counted as a subscribe error,
    logged on asgi_perf.cache, and a new subscriber starts after a backoff."""
    real_run = Subscriber.run
    runs: list[int] = []

    async def run(self: Subscriber) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        await real_run(self)

    monkeypatch.setattr(Subscriber, "run", run)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.cache"):
        async with tier(registry, client, ns, "b") as b:
            assert b.stats.errors["subscribe"] == 1
            assert "the invalidation subscriber failed (RuntimeError: boom)" in caplog.text
            await eventually(lambda: b.stats.subscribed == 1, "a new subscriber")
            assert len(runs) == 2
            await b.get_or_load("k", loader_of(1, []))
            await tier(registry, client, ns, "a").delete("k")
            await eventually(lambda: "k" not in b.local, "the new subscriber to receive")


async def test_a_cancelled_subscriber_is_a_stop_not_a_failure(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """A subscriber cancelled by someone else than aclose() (asyncio.run() cancels the tasks
    left over at shutdown) is not restarted on a loop about to close, nor counted as a
    failure; start() subscribes again."""
    t = tier(registry, client, ns)
    await t.start()
    task = t._subscription.task
    assert task is not None
    task.cancel()
    await asyncio.wait({task})
    await settle()
    assert (t._subscription.task, t._subscription.restart, t.stats.subscribed) == (None, None, 0)
    assert t.stats.errors["subscribe"] == 0
    await t.start()
    assert t.stats.subscribed == 1
    await t.aclose()


async def test_aclose_during_the_first_subscribe_lets_start_return(
    registry: PerfRegistry, ns: str, proxy: TcpProxy
) -> None:
    """start() waits for the first subscribe attempt; an aclose() meanwhile ends that wait."""
    c = aioredis.Redis.from_url(proxy.url, retry=Retry(NoBackoff(), 0))
    t = tier(registry, c, ns, timeout=60)
    proxy.freeze()  # the subscribe is sent and never answered
    starting = asyncio.create_task(t.start())
    await settle()
    assert not starting.done()
    await t.aclose()
    await asyncio.wait_for(starting, 10)  # a bound against hanging, not a timing check
    proxy.forward()
    await c.aclose()


async def test_aclose_while_a_restart_is_pending_cancels_it(
    registry: PerfRegistry, client: aioredis.Redis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aclose() while a failed subscriber waits for its restart cancels the restart: nothing is
    left scheduled and the tier reads as unsubscribed."""

    async def run(self: Subscriber) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Subscriber, "run", run)
    t = tier(registry, client, ns)
    await t.start()
    assert t._subscription.restart is not None
    restart = t._subscription.restart
    await t.aclose()
    assert restart.cancelled()
    # vars(): mypy narrowed the attribute to "not None" above and aclose() changes it.
    assert vars(t._subscription)["restart"] is None
    assert (t._subscription.task, t.stats.subscribed) == (None, 0)


async def test_aclose_lets_the_callers_own_cancellation_through(
    registry: PerfRegistry, client: aioredis.Redis, ns: str
) -> None:
    """A task cancelled while aclose() waits for the subscriber to stop is cancelled: aclose()
    does not swallow a cancellation aimed at its caller."""
    t = tier(registry, client, ns)
    await t.start()
    sub_task = t._subscription.task
    assert sub_task is not None

    async def closer() -> str:
        await t.aclose()
        return "returned"

    outer = asyncio.ensure_future(closer())
    await asyncio.sleep(0)  # closer now waits for the subscriber task
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert outer.cancelled()
    await eventually(sub_task.done, "the subscriber to stop anyway")
    assert sub_task.cancelled()


# -- the breaker's tokens ------------------------------------------------------------------------


def test_a_command_sent_before_the_circuit_opened_cannot_close_it_or_free_the_probe() -> None:
    """Only the verdict of a call admitted in the current state counts: a slow command from
    before the circuit opened, ending while it is open or half-open, changes nothing."""
    clock = FakeClock(1000.0)
    b = CircuitBreaker(2, 10, clock)
    early = b.allow()
    assert early is not None
    b.failure(b.allow())  # type: ignore[arg-type]
    b.failure(b.allow())  # type: ignore[arg-type]
    assert b.is_open
    b.success(early)
    assert b.is_open
    opened_at = clock.now
    clock.now += 5
    b.failure(early)
    assert b.opened_at == opened_at  # not reopened later by the old call
    clock.now += 5
    probe = b.allow()
    assert probe is not None
    b.success(early)
    b.release(early)
    b.failure(early)
    assert (b.is_open, b.probing, b.allow()) == (True, True, None)
    b.success(probe)
    assert b.allow() == probe  # closed: every call admitted
    assert b.opened == 1
