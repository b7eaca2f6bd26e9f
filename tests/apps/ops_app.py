"""Starlette app with the operations layer on and fixed figures for every component.

The DB, cache and Socket.IO samples are produced by hand through the registry (those integrations
are separate components), so the dashboard and summary show known values.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument
from asgi_perf.operations import AlertRule, enable
from asgi_perf.registry import SLOW_QUERIES


class SlowLog:
    """Stands in for the SQLAlchemy slow-query log (the documented ``recent()`` contract)."""

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        rows = [
            {
                "engine": "main",
                "operation": "SELECT",
                "fingerprint": "abc123",
                "sql": "SELECT * FROM orders WHERE customer_id = ? <script>x</script>",
                "duration": 1.25,
                "time": 1_700_000_000.0,
                "count": 3,
            }
        ]
        return rows[:limit] if limit is not None else rows

    def groups(self, limit: int | None = None) -> list[dict[str, Any]]:
        rows = [
            {
                "engine": "main",
                "operation": "SELECT",
                "fingerprint": "abc123",
                "sql": "SELECT * FROM orders WHERE customer_id = ? <script>x</script>",
                "count": 3,
                "p95": 1.25,
                "max": 1.5,
                "last_seen": 1_700_000_000.0,
            }
        ]
        return rows[:limit] if limit is not None else rows


def seed(registry: PerfRegistry) -> None:
    """Known figures for the DB, cache and Socket.IO sections."""
    db = registry.histogram("db_query_duration_seconds")
    for _ in range(40):
        db.labels("main", "SELECT", "ok").observe(0.004)
    db.labels("main", "UPDATE", "error").observe(0.02)
    registry.counter("db_slow_queries_total").labels("main", "SELECT").inc(3)
    registry.gauge("db_pool_size").labels("main").set(5)
    registry.gauge("db_pool_checked_out").labels("main").set(2)
    registry.gauge("db_pool_overflow").labels("main").set(0)
    requests = registry.counter("cache_requests_total")
    requests.labels("users", "hit").inc(90)
    requests.labels("users", "miss").inc(10)
    registry.gauge("cache_entries").labels("users").set(42)
    registry.counter("cache_evictions_total").labels("users", "capacity").inc(7)
    tier = registry.counter("cache_tier_requests_total")
    tier.labels("users", "redis", "hit").inc(6)
    tier.labels("users", "redis", "miss").inc(2)
    tier.labels("users", "redis", "error").inc(2)
    registry.gauge("socketio_connections").labels("/", "websocket").set(12)
    registry.counter("socketio_events_received_total").labels("/", "chat").inc(300)
    registry.counter("socketio_events_emitted_total").labels("/", "chat").inc(900)
    registry.counter("socketio_batches_total").labels("chat", "size").inc(9)
    registry.gauge("socketio_batch_pending").labels().set(4)
    registry.component(SLOW_QUERIES, SlowLog)
    registry.count("orders_placed", 5)


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def fail(request: Request) -> Response:
    return JSONResponse({"error": True}, status_code=503)


registry = PerfRegistry()
app = Starlette(routes=[Route("/items/{item_id:int}", item), Route("/fail", fail)])
instrument(app, registry=registry, operations=True, metrics_options={"allow": ["127.0.0.1"]})
seed(registry)
# Always-firing rule so the page shows an alert: 12 connections > 10.
rules = [AlertRule("ManyConnections", "custom.connections", ">", 10, 0, "critical", "demo")]
ops = enable(
    app,
    registry,
    interval=float(os.environ.get("OPS_INTERVAL", "3600")),
    rules=rules,
)
assert ops.alerts is not None
ops.alerts.extra_figures = lambda: {"custom.connections": 12.0}
