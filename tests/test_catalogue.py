"""The catalogue is the truth: every family a registry exposes is a catalogue metric, exactly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio
from sqlalchemy import text

from asgi_perf import CATALOGUE, PerfMiddleware, PerfRegistry
from asgi_perf._types import Receive, Scope, Send
from asgi_perf.cache import LRUCache, TTLCache
from asgi_perf.cache.redis import TieredCache
from asgi_perf.catalogue import STANDARD_METRICS
from asgi_perf.export import JobOutcome
from asgi_perf.operations import AlertManager, SystemCollector
from asgi_perf.registry import CatalogueCollector
from asgi_perf.socketio import Batcher, instrument_socketio
from asgi_perf.sqlalchemy import instrument_engine

from ._asgi import Receiver, Sender, http_scope
from ._server import free_port
from ._sqlalchemy import sqlite_engine

NAMESPACE = "shop"


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def registry_with_every_collector() -> PerfRegistry:
    """A registry every integration reports into, each with a little traffic."""
    registry = PerfRegistry(namespace=NAMESPACE)
    await PerfMiddleware(ok, registry=registry)(http_scope("/x"), Receiver(), Sender())
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    server = socketio.AsyncServer(async_mode="asgi")
    instrument_socketio(server, registry=registry)
    Batcher(server, registry=registry)
    cache: LRUCache[str, int] = LRUCache(10, name="users", registry=registry)
    cache["a"] = 1
    cache.get("a")
    # A client of a port nothing listens on: constructing the tier talks to no server.
    client = aioredis.Redis(host="127.0.0.1", port=free_port())
    local: TTLCache[str, Any] = TTLCache(10, 60, name="tiered", registry=registry)
    TieredCache(local, client, namespace="catalogue", ttl=60, registry=registry)
    registry.count("jobs")
    with registry.timer("report"):
        pass
    JobOutcome(registry).record(1.5, succeeded=True)
    registry.register(SystemCollector(registry))
    AlertManager(registry)
    await client.aclose()
    engine.dispose()
    return registry


def catalogue_entry(family_name: str) -> str:
    """The catalogue name of an exposed family (prometheus_client drops a counter's ``_total``).

    prometheus_client's process, platform and GC families are in ``STANDARD_METRICS``, never
    namespaced."""
    for candidate in (family_name, f"{family_name}_total"):
        if candidate in STANDARD_METRICS:
            return candidate
    assert family_name.startswith(f"{NAMESPACE}_"), family_name
    name = family_name.removeprefix(f"{NAMESPACE}_")
    for candidate in (name, f"{name}_total"):
        if candidate in CATALOGUE:
            return candidate
    raise AssertionError(f"{family_name} is exposed but not in the catalogue")


@pytest.fixture
def registry_everything() -> PerfRegistry:
    return asyncio.run(registry_with_every_collector())


def test_every_exposed_family_matches_the_catalogue(registry_everything: PerfRegistry) -> None:
    """Name (namespace applied), type, help text and label names of every exposed family are the
    catalogue's, whichever integration exports it."""
    families = list(registry_everything.prometheus.collect())
    assert len(families) > 40
    for family in families:
        entry = catalogue_entry(family.name)
        spec = CATALOGUE.get(entry) or STANDARD_METRICS[entry]
        assert (family.type, family.documentation) == (spec.kind, spec.help), family.name
        for sample in family.samples:
            labels = [name for name in sample.labels if name not in ("le", "quantile")]
            assert tuple(labels) == spec.labels, (sample.name, sample.labels)


def test_every_collector_was_exercised(registry_everything: PerfRegistry) -> None:
    """The registry above holds every scrape-time collector, so the comparison covers them all."""
    exposed = {catalogue_entry(f.name) for f in registry_everything.prometheus.collect()}
    collectors = CatalogueCollector.__subclasses__()
    assert len(collectors) >= 8
    for collector in collectors:
        assert set(collector.metrics) <= exposed, collector.__name__


def test_collectors_export_only_catalogue_metrics() -> None:
    """A collector's metrics are catalogue names, and describe() yields exactly those families."""
    registry = PerfRegistry()
    for collector in CatalogueCollector.__subclasses__():
        assert collector.metrics, collector.__name__
        assert set(collector.metrics) <= set(CATALOGUE), collector.__name__
        described = [registry.family(name).name for name in collector.metrics]
        assert len(set(described)) == len(described), collector.__name__
