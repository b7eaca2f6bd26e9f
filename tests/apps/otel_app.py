"""A Starlette app traced by an OpenTelemetry SDK tracer around asgi-perf, for the exemplar e2e test.

The tracing middleware is outermost, as OpenTelemetry's ASGI instrumentation installs itself, so
the span is current while asgi-perf records the request. ``/trace-ids`` lists the ids of every
span it started, for the test to compare with what Prometheus stored.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument

tracer = TracerProvider().get_tracer("tests.apps.otel_app")
traced: list[dict[str, str]] = []


async def work(request: Request) -> PlainTextResponse:
    return PlainTextResponse("done")


async def trace_ids(request: Request) -> JSONResponse:
    return JSONResponse(traced)


inner = Starlette(routes=[Route("/work", work), Route("/trace-ids", trace_ids)])
registry = instrument(inner, registry=PerfRegistry(), exclude_paths=["/trace-ids"])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] != "/work":
        await inner(scope, receive, send)
        return
    with tracer.start_as_current_span("GET /work") as span:
        context = span.get_span_context()
        traced.append(
            {
                "trace_id": format(context.trace_id, "032x"),
                "span_id": format(context.span_id, "016x"),
            }
        )
        await inner(scope, receive, send)
