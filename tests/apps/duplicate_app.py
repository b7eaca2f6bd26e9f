"""An app instrumented twice on one registry, the second time with other buckets.

Starlette builds ``add_middleware`` middleware at the first lifespan event or request; uvicorn's
default ``lifespan="auto"`` hides an exception there, so a raise would fail every request.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfMiddleware, instrument


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/hello", hello)])
registry = instrument(app)
app.add_middleware(PerfMiddleware, registry=registry, buckets=[0.1, 1.0])
