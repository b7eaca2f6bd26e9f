"""One app instrumented twice records each request once; bucket conflicts fail at set-up."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from asgi_perf import PerfMiddleware, PerfRegistry, instrument
from asgi_perf.http._middleware import WARN_DUPLICATE, WARN_NESTED, WARN_TWO_REGISTRIES
from asgi_perf.http._stats import ERR_SHARED_BUCKETS
from asgi_perf.testing import samples

pytestmark = pytest.mark.anyio

REQUESTS = 5
OTHER_BUCKETS = [0.1, 1.0]


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def make_app() -> Starlette:
    return Starlette(routes=[Route("/hello", hello)])


def requests_total(registry: PerfRegistry) -> float:
    """Every ``http_requests_total`` sample of the registry, summed."""
    name = registry.metric_name("http_requests_total")
    return sum(s.value for f in registry.prometheus.collect() for s in f.samples if s.name == name)


def in_progress(registry: PerfRegistry) -> float:
    """The in-progress gauge's current total."""
    name = registry.metric_name("http_requests_in_progress")
    return sum(s.value for f in registry.prometheus.collect() for s in f.samples if s.name == name)


async def hit(app: Any, path: str = "/hello", n: int = REQUESTS) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [(await client.get(path)).status_code for _ in range(n)]


def via_instrument(app: Starlette, registry: PerfRegistry) -> None:
    instrument(app, registry=registry)


def via_add_middleware(app: Starlette, registry: PerfRegistry) -> None:
    app.add_middleware(PerfMiddleware, registry=registry)


WAYS = {"instrument": via_instrument, "add_middleware": via_add_middleware}


@pytest.mark.parametrize("first", sorted(WAYS))
@pytest.mark.parametrize("second", sorted(WAYS))
@pytest.mark.parametrize("shared", [True, False], ids=["same-registry", "two-registries"])
async def test_twice_on_one_app_records_each_request_once(
    first: str, second: str, shared: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Any pair of instrument() / add_middleware(PerfMiddleware) on one app counts each request
    once per registry (once in all on one registry) and logs one warning."""
    app = make_app()
    one = PerfRegistry()
    two = one if shared else PerfRegistry()
    with caplog.at_level(logging.WARNING, logger="asgi_perf.http"):
        WAYS[first](app, one)
        WAYS[second](app, two)
        statuses = await hit(app)
    assert statuses == [200] * REQUESTS
    assert requests_total(one) == REQUESTS
    assert requests_total(two) == REQUESTS
    warnings = [r for r in caplog.records if r.name == "asgi_perf.http"]
    assert [r.getMessage() for r in warnings] == [WARN_DUPLICATE if shared else WARN_TWO_REGISTRIES]


async def test_a_default_registry_middleware_does_not_silence_instrument() -> None:
    """add_middleware(PerfMiddleware) without a registry, then instrument(app): the registry
    instrument() serves at /metrics still counts every request."""
    app = make_app()
    app.add_middleware(PerfMiddleware)
    registry = instrument(app)
    assert await hit(app) == [200] * REQUESTS
    assert requests_total(registry) == REQUESTS
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        body = (await client.get("/metrics")).text
    assert f'http_requests_total{{method="GET",route="/hello",status="200"}} {REQUESTS}.0' in body


async def test_plain_asgi_stack_on_two_registries_counts_in_both() -> None:
    """PerfMiddleware(PerfMiddleware(app, registry=A), registry=B): A and B each count once."""
    inner_registry, outer_registry = PerfRegistry(), PerfRegistry()
    app = PerfMiddleware(
        PerfMiddleware(make_app(), registry=inner_registry), registry=outer_registry
    )
    assert await hit(app) == [200] * REQUESTS
    assert requests_total(inner_registry) == REQUESTS
    assert requests_total(outer_registry) == REQUESTS


async def test_three_middlewares_still_record_once() -> None:
    """Three PerfMiddlewares on one app: one records, the in-progress gauge is back to 0."""
    app = make_app()
    registry = PerfRegistry()
    for _ in range(3):
        app.add_middleware(PerfMiddleware, registry=registry)
    assert await hit(app) == [200] * REQUESTS
    assert requests_total(registry) == REQUESTS
    assert in_progress(registry) == 0


async def test_duplicate_with_other_buckets_does_not_fail_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """add_middleware(PerfMiddleware, buckets=...) on an app instrument() already covers, same
    registry: Starlette builds that middleware at the first request, so it must not raise there
    (every request would be a 500); it steps aside with the duplicate warning."""
    app = make_app()
    registry = instrument(app)
    app.add_middleware(PerfMiddleware, registry=registry, buckets=OTHER_BUCKETS)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.http"):
        assert await hit(app) == [200] * REQUESTS
    assert requests_total(registry) == REQUESTS
    assert [r.getMessage() for r in caplog.records if r.name == "asgi_perf.http"] == [
        WARN_DUPLICATE
    ]


async def test_app_mounted_in_an_app_instrumented_with_its_registry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request through an instrumented app into a mounted app instrumented with the same
    registry is recorded once, by the outer middleware; the inner one warns once."""
    inner = make_app()
    registry = instrument(inner, metrics_path=None)
    outer = Starlette(routes=[Mount("/sub", inner)])
    instrument(outer, registry=registry)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.http"):
        assert await hit(outer, "/sub/hello") == [200] * REQUESTS
    assert requests_total(registry) == REQUESTS
    assert [s["route"] for s in samples(registry, "http_requests_total")] == ["/sub/hello"]
    assert [r.getMessage() for r in caplog.records if r.name == "asgi_perf.http"] == [WARN_NESTED]


async def test_mounted_apps_with_registries_of_their_own_each_count_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app mounted in another, each instrumented with its own registry (each serving its own
    /metrics): each registry counts each request once, with no warning; a third level on the
    outer registry again is passed through."""
    innermost = make_app()
    outer_registry = PerfRegistry()
    instrument(innermost, registry=outer_registry, metrics_path=None)
    inner = Starlette(routes=[Mount("/deep", innermost), Route("/hello", hello)])
    inner_registry = instrument(inner)
    outer = Starlette(routes=[Mount("/sub", inner)])
    instrument(outer, registry=outer_registry)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.http"):
        assert await hit(outer, "/sub/hello") == [200] * REQUESTS
        assert await hit(outer, "/sub/deep/hello") == [200] * REQUESTS
    assert requests_total(outer_registry) == 2 * REQUESTS
    assert requests_total(inner_registry) == 2 * REQUESTS
    assert [r.getMessage() for r in caplog.records if r.name == "asgi_perf.http"] == [WARN_NESTED]


def test_conflicting_buckets_on_one_registry_fail_in_instrument() -> None:
    """instrument() on a registry that already records HTTP metrics with other buckets raises
    ValueError when called, not when Starlette first builds the app's middleware stack."""
    registry = instrument(make_app())
    with pytest.raises(ValueError, match="other buckets") as info:
        instrument(make_app(), registry=registry, buckets=OTHER_BUCKETS)
    assert str(info.value) == ERR_SHARED_BUCKETS


def test_conflicting_buckets_against_a_built_middleware_fail_in_instrument() -> None:
    """A middleware built directly claims its buckets: instrument() with others raises."""
    registry = PerfRegistry()
    PerfMiddleware(make_app(), registry=registry, buckets=OTHER_BUCKETS)
    with pytest.raises(ValueError, match="other buckets"):
        instrument(make_app(), registry=registry)


def test_conflicting_buckets_fail_at_construction() -> None:
    """Two directly built middlewares on one registry with different buckets: ValueError."""
    registry = PerfRegistry()
    PerfMiddleware(make_app(), registry=registry)
    with pytest.raises(ValueError, match="other buckets"):
        PerfMiddleware(make_app(), registry=registry, ttfb_buckets=OTHER_BUCKETS)


async def test_same_buckets_on_two_apps_share_the_registry() -> None:
    """Two different apps on one registry with the same buckets both record (no duplicate)."""
    registry = PerfRegistry()
    one, two = make_app(), make_app()
    instrument(one, registry=registry)
    instrument(two, registry=registry, metrics_path=None)
    await hit(one)
    await hit(two)
    assert requests_total(registry) == 2 * REQUESTS


def test_a_raising_app_attribute_ends_the_chain() -> None:
    """Looking for a wrapped middleware tolerates objects whose ``app`` attribute raises."""

    class Odd:
        @property
        def app(self) -> Any:
            raise RuntimeError("no")

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            return None

    middleware = PerfMiddleware(Odd(), registry=PerfRegistry())
    assert middleware.registry is not None
