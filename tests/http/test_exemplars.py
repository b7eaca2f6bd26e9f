"""Exemplars on the HTTP duration buckets: from the current OpenTelemetry span or a caller's
source, rendered in OpenMetrics by the fast renderer and by prometheus_client alike."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

from asgi_perf import OVERFLOW, PerfMiddleware, PerfRegistry, metrics_app
from asgi_perf._types import Receive, Scope, Send
from asgi_perf.export._render import FastRenderer
from asgi_perf.http._stats import HTTP_STATS
from asgi_perf.testing import scrape

pytestmark = pytest.mark.anyio

om_latest: Callable[..., bytes] = om_exposition.generate_latest
text_latest: Callable[..., bytes] = text_exposition.generate_latest
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
#: ``..._bucket{labels} count # {exemplar labels} value timestamp``
EXEMPLAR_LINE = re.compile(
    r'^http_request_duration_seconds_bucket\{le="([^"]+)",([^}]*)\} \S+ '
    r"# \{([^}]*)\} (\S+) (\S+)$"
)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def boom(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def tracer() -> Tracer:
    """A tracer of a local SDK provider (the global provider is never set)."""
    return TracerProvider().get_tracer("tests")


def exemplar_lines(text: str) -> list[tuple[str, str, dict[str, str], float]]:
    """(le, series labels, exemplar labels, value) of each duration bucket with an exemplar."""
    found = []
    for line in text.splitlines():
        match = EXEMPLAR_LINE.match(line)
        if match:
            le, series, labels, value, _ts = match.groups()
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            found.append((le, series, pairs, float(value)))
    return found


def ids(span: Any) -> dict[str, str]:
    context = span.get_span_context()
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


async def test_the_current_span_is_the_duration_bucket_exemplar(tracer: Tracer) -> None:
    """A request served inside a recording span leaves the span's ids on the bucket its duration
    fell in; a request outside any span leaves none, and allocates no exemplar store."""
    registry = PerfRegistry()
    app = PerfMiddleware(hello, registry=registry, route_getter=lambda scope: "/hello")
    async with client(app) as c:
        await c.get("/hello")
        stats = registry.find_component(HTTP_STATS)
        assert stats is not None
        assert stats.keeps_exemplars  # the exemplar-keeping store, chosen at construction
        assert stats.routes["/hello"]["GET"].by_status["200"].exemplars is None
        with tracer.start_as_current_span("request") as span:
            await c.get("/hello")
    body = om_latest(registry.prometheus).decode()
    [(le, series, labels, value)] = exemplar_lines(body)
    assert series == 'method="GET",route="/hello",status="200"'
    assert labels == ids(span)
    assert 0 < value <= float(le)


async def test_fast_renderer_and_prometheus_client_write_the_same_exemplars(
    tracer: Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast OpenMetrics renderer and prometheus_client (the fallback) write the exemplars
    byte for byte alike; the text format 0.0.4 has none. A stepping clock gives the three
    requests one duration, so they share a bucket whose exemplar is the last one's."""
    ticks = iter(range(1_000_000))
    monkeypatch.setattr("asgi_perf.http._middleware.perf_counter", lambda: next(ticks) / 1000)
    registry = PerfRegistry(process_metrics=False)  # CPU times would move between renders
    app = PerfMiddleware(hello, registry=registry, route_getter=lambda scope: '/a"b')
    async with client(app) as c:
        for _ in range(3):
            with tracer.start_as_current_span("request") as span:
                await c.get("/x")
    fast = FastRenderer(openmetrics=True).render(registry.prometheus)
    assert fast == om_latest(registry.prometheus)
    assert [labels for _, _, labels, _ in exemplar_lines(fast.decode())] == [ids(span)]
    text = FastRenderer(openmetrics=False).render(registry.prometheus)
    assert text == text_latest(registry.prometheus)
    assert b"trace_id" not in text


async def test_metrics_app_serves_exemplars_to_openmetrics_scrapers(tracer: Tracer) -> None:
    """Through the metrics app: an OpenMetrics scrape carries the exemplar, a plain one not."""
    registry = PerfRegistry()
    app = PerfMiddleware(hello, registry=registry, route_getter=lambda scope: "/hello")
    async with client(app) as c:
        with tracer.start_as_current_span("request") as span:
            await c.get("/hello")
    metrics = metrics_app(registry, render_in_thread=False)
    om = await scrape(metrics, headers=[("accept", OPENMETRICS)])
    assert [labels for _, _, labels, _ in exemplar_lines(om.text)] == [ids(span)]
    plain = await scrape(metrics)
    assert "trace_id" not in plain.text


async def test_requests_that_fail_or_overflow_keep_their_exemplar(tracer: Tracer) -> None:
    """A request recorded as 500 and one folded into the overflow series by the series cap both
    leave their exemplar on the series they were counted in."""
    registry = PerfRegistry(max_series_per_metric=1)
    paths = iter(["/first", "/second"])
    app = PerfMiddleware(boom, registry=registry, route_getter=lambda scope: next(paths))
    async with client(app) as c:
        for _ in range(2):
            with tracer.start_as_current_span("request"), pytest.raises(RuntimeError):
                await c.get("/")
    series = {s for _, s, _, _ in exemplar_lines(om_latest(registry.prometheus).decode())}
    assert series == {
        'method="GET",route="/first",status="500"',
        f'method="GET",route="{OVERFLOW}",status="500"',
    }


async def test_overflowed_status_keeps_its_exemplar(tracer: Tracer) -> None:
    """A new status on a known route past the cap is folded into the route's overflow status;
    the exemplar goes there too."""
    registry = PerfRegistry(max_series_per_metric=1)
    statuses = iter([200, 404])

    async def app_(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": next(statuses), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = PerfMiddleware(app_, registry=registry, route_getter=lambda scope: "/r")
    async with client(app) as c:
        for _ in range(2):
            with tracer.start_as_current_span("request"):
                await c.get("/")
    series = {s for _, s, _, _ in exemplar_lines(om_latest(registry.prometheus).decode())}
    assert series == {
        'method="GET",route="/r",status="200"',
        f'method="GET",route="/r",status="{OVERFLOW}"',
    }


async def test_a_callable_source_labels_the_bucket() -> None:
    """A caller's source gives the labels; a source that raises is counted and the request is
    still recorded, without an exemplar."""
    given: list[Any] = [{"request_id": "r-7"}]

    def source() -> Any:
        if not given:
            raise RuntimeError("no id")
        return given.pop()

    registry = PerfRegistry(exemplars=source)
    app = PerfMiddleware(hello, registry=registry, route_getter=lambda scope: "/hello")
    async with client(app) as c:
        await c.get("/hello")
        await c.get("/hello")
    body = om_latest(registry.prometheus).decode()
    assert [labels for _, _, labels, _ in exemplar_lines(body)] == [{"request_id": "r-7"}]
    assert 'http_requests_total{method="GET",route="/hello",status="200"} 2.0' in body
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "exemplars"}
    )
    assert errors == 1


async def test_without_a_source_the_plain_recorder_is_built(tracer: Tracer) -> None:
    """exemplars=False: the registry records with the plain HttpStats, so a request pays nothing
    for exemplars, and no bucket carries one even inside a span."""
    registry = PerfRegistry(exemplars=False)
    app = PerfMiddleware(hello, registry=registry)
    assert "record" not in vars(registry.find_component(HTTP_STATS))
    async with client(app) as c:
        with tracer.start_as_current_span("request"):
            await c.get("/hello")
    assert exemplar_lines(om_latest(registry.prometheus).decode()) == []


async def test_opentelemetry_asgi_middleware_server_span_is_the_exemplar() -> None:
    """OpenTelemetry's ASGI middleware around the instrumented app ends its server span with the
    last body byte, before the request is recorded: the span is still the request's (sampled,
    exported), so its ids are the exemplar."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    started: list[Any] = []
    registry = PerfRegistry()
    inner = PerfMiddleware(hello, registry=registry, route_getter=lambda scope: "/hello")
    app = OpenTelemetryMiddleware(
        inner,
        tracer_provider=TracerProvider(),
        server_request_hook=lambda span, scope: started.append(span),
    )
    async with client(app) as c:
        await c.get("/hello")
    [span] = started
    assert not span.is_recording()  # ended by the time the request was recorded
    body = om_latest(registry.prometheus).decode()
    assert [labels for _, _, labels, _ in exemplar_lines(body)] == [ids(span)]
