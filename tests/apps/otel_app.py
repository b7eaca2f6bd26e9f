"""A Starlette app traced by OpenTelemetry's ASGI middleware and SDK, for the exemplar e2e test.

The tracing middleware wraps the instrumented app, as OpenTelemetry's instrumentation installs
itself, so its server span is current while asgi-perf records the request. ``/trace-ids`` lists
the ids of the server span of every ``/work`` request, for the test to compare with what
Prometheus stored.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument

traced: list[dict[str, str]] = []


def server_request_hook(span: Span, scope: dict[str, Any]) -> None:
    if scope.get("path") == "/work":
        context = span.get_span_context()
        traced.append(
            {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
        )


async def work(request: Request) -> PlainTextResponse:
    return PlainTextResponse("done")


async def trace_ids(request: Request) -> JSONResponse:
    return JSONResponse(traced)


inner = Starlette(routes=[Route("/work", work), Route("/trace-ids", trace_ids)])
registry = instrument(inner, registry=PerfRegistry(), exclude_paths=["/trace-ids"])
app = OpenTelemetryMiddleware(
    inner, tracer_provider=TracerProvider(), server_request_hook=server_request_hook
)
