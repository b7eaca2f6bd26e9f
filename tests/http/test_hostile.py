"""Hostile traffic never crashes the app and never grows the metric set without bound."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from asgi_perf import OTHER, OVERFLOW, UNMATCHED, PerfMiddleware, PerfRegistry
from asgi_perf._labels import STANDARD_METHODS
from asgi_perf.testing import samples, series

from .._asgi import Receiver, Sender, http_scope

pytestmark = pytest.mark.anyio


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", ok),
            Mount("/api", routes=[Route("/users/{user_id:int}", ok)]),
        ]
    )


async def test_ten_thousand_unmatched_paths_keep_series_constant() -> None:
    """10k distinct unmatched paths (a scanner) add exactly one series, not 10k."""
    registry = PerfRegistry()
    mw = PerfMiddleware(app(), registry=registry)
    await mw(http_scope("/warmup"), Receiver(), Sender())
    before = series(registry, "http_request_duration_seconds")
    for i in range(10_000):
        await mw(http_scope(f"/scan/{i}/wp-admin.php"), Receiver(), Sender())
    assert series(registry, "http_request_duration_seconds") == before == 1
    assert {s["route"] for s in samples(registry, "http_requests_total")} == {UNMATCHED}


async def test_series_cap_bounds_even_a_route_explosion() -> None:
    """An app with thousands of real routes still stops at the cap, the rest in __overflow__."""
    routes = [Route(f"/r{i}", ok) for i in range(300)]
    registry = PerfRegistry(max_series_per_metric=100)
    mw = PerfMiddleware(Starlette(routes=routes), registry=registry)
    for i in range(300):
        await mw(http_scope(f"/r{i}"), Receiver(), Sender())
    routes_seen = {s["route"] for s in samples(registry, "http_requests_total")}
    assert len(routes_seen) == 101
    assert OVERFLOW in routes_seen
    overflow = {"metric": "http_request_duration_seconds"}
    assert registry.prometheus.get_sample_value("asgi_perf_series_overflow_total", overflow) == 200
    # A new status on an existing route, past the cap, folds the status, not the route.
    await mw(http_scope("/r0", "DELETE"), Receiver(), Sender())


methods = st.one_of(st.sampled_from(sorted(STANDARD_METHODS)), st.text(max_size=30))
paths = st.one_of(
    st.just("/items/1"),
    st.text(max_size=300).map(lambda s: "/" + s),
    st.binary(max_size=200).map(lambda b: "/" + b.decode("latin-1")),
    st.integers().map(lambda i: f"/api/users/{i}"),
)
headers = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=200)), max_size=10
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(method=methods, path=paths, hdrs=headers)
def test_random_requests_never_crash_and_labels_stay_bounded(
    method: str, path: str, hdrs: list[tuple[bytes, bytes]]
) -> None:
    """Any method, path and headers: the app answers, and every label is from a bounded set."""
    import asyncio

    registry = PerfRegistry()
    mw = PerfMiddleware(app(), registry=registry)
    sender = Sender()
    asyncio.run(mw(http_scope(path, method, headers=hdrs), Receiver(), sender))
    assert sender.status is not None
    for labels in samples(registry, "http_requests_total"):
        assert labels["method"] in STANDARD_METHODS | {"OTHER"}
        assert labels["route"] in {"/items/{item_id}", "/api/users/{user_id}", UNMATCHED}
        assert labels["status"].isdigit()
    assert OTHER not in {s["route"] for s in samples(registry, "http_requests_total")}


async def test_malformed_messages_from_server_are_tolerated(registry: PerfRegistry) -> None:
    """A receive message without 'type' or with a non-bytes body does not break the app's read."""
    got: list[Any] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        got.append(await receive())
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": None})

    mw = PerfMiddleware(echo, registry=registry, route_getter=lambda s: "/e")
    receiver = Receiver({"no": "type"}, {"type": "http.request", "body": 12})
    await mw(http_scope("/e"), receiver, Sender())
    assert got == [{"no": "type"}, {"type": "http.request", "body": 12}]
    component = {"component": "http"}
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", component
    )
    assert errors == 3  # two bad receive messages, one bad body


async def test_statuses_and_routes_past_the_cap_fold_into_one_series_each() -> None:
    """Past the cap a new status on a known route folds into that route's ``__overflow__``
    status, and every new route into the one ``__overflow__`` route: nothing is lost."""
    registry = PerfRegistry(max_series_per_metric=1)

    async def status_app(scope: Any, receive: Any, send: Any) -> None:
        status = int(scope["path"].rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    mw = PerfMiddleware(status_app, registry=registry, route_getter=lambda s: s["path"][:2])
    for path in ("/a/200", "/a/500", "/a/503", "/b/200", "/c/200"):
        await mw(http_scope(path), Receiver(), Sender())
    counts = {
        (s["route"], s["status"]): registry.prometheus.get_sample_value("http_requests_total", s)
        for s in samples(registry, "http_requests_total")
    }
    assert counts == {
        ("/a", "200"): 1,
        ("/a", OVERFLOW): 2,
        (OVERFLOW, "200"): 2,
    }
