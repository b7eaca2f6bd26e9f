"""Targets for ``asgi-perf report --url``: an instrumented app at the root and one mounted at
``/api``, one at ``/secure`` whose metrics need the token ``s3cret``, and mounts answering what a summary endpoint never would (plain text, a JSON list).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from asgi_perf import PerfRegistry, instrument
from asgi_perf.operations import enable


def instrumented(route: str, metrics_options: dict[str, Any] | None = None) -> Any:
    """A tiny app with /metrics and its operations endpoints, and one route of its own."""

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(route)

    registry = PerfRegistry()
    app = Starlette(routes=[Route(route, endpoint)])
    instrument(app, registry=registry, operations=True, metrics_options=metrics_options)
    enable(app, registry)
    return app


async def plain(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("<html>not json</html>")(scope, receive, send)


async def json_list(scope: Any, receive: Any, send: Any) -> None:
    await JSONResponse([1, 2, 3])(scope, receive, send)


app = instrumented("/only-root")
app.router.routes.extend(
    [
        Mount("/api", app=instrumented("/only-api")),
        Mount("/secure", app=instrumented("/only-secure", metrics_options={"token": "s3cret"})),
        Mount("/plain", app=plain),
        Mount("/list", app=json_list),
    ]
)
