"""The path exclusions see and the route label describe are the same path: a proxy prefix
(``root_path``) is in neither, the prefixes of the mounts a request went through are in both."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from asgi_perf import PerfMiddleware, PerfRegistry, instrument
from asgi_perf.http._routing import app_path
from asgi_perf.testing import samples

pytestmark = pytest.mark.anyio


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def get(app: Any, *paths: str, root_path: str = "") -> list[int]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path=root_path), base_url="http://test"
    ) as client:
        return [(await client.get(root_path + path)).status_code for path in paths]


def routes_of(registry: PerfRegistry) -> set[str]:
    return {s["route"] for s in samples(registry, "http_requests_total")}


@pytest.mark.parametrize(
    ("scope", "path", "expected"),
    [
        ({"root_path": "/api"}, "/api/health", "/health"),
        ({"root_path": "/api"}, "/api", "/"),
        ({"root_path": "/api"}, "/apix/health", "/apix/health"),  # not a whole segment
        ({"root_path": "/api"}, "/health", "/health"),  # a server that leaves it out of path
        ({"root_path": "/api/sub", "app_root_path": "/api"}, "/api/sub/x", "/sub/x"),
        ({"root_path": "/sub", "app_root_path": ""}, "/sub/x", "/sub/x"),
        ({"root_path": ""}, "/x", "/x"),
        ({}, "/x", "/x"),
    ],
)
def test_app_path(scope: dict[str, Any], path: str, expected: str) -> None:
    """The path relative to the server's root: root_path stripped at a segment boundary, or
    app_root_path (the server's root, kept by Starlette's Mount) when a mount set it."""
    assert app_path(scope, path) == expected


@pytest.mark.parametrize("make", [Starlette, FastAPI])
async def test_exclude_paths_behind_a_proxy_prefix(make: Any) -> None:
    """exclude_paths=["/health"] excludes /health behind root_path /api (the server puts the
    prefix in the path, the label leaves it out, so must the exclusion); patterns too."""
    app = make(routes=[Route("/health", ok), Route("/ready", ok), Route("/items", ok)])
    registry = PerfRegistry()
    mw = PerfMiddleware(
        app, registry=registry, exclude_paths=["/health"], exclude_patterns=[r"/rea"]
    )
    assert await get(mw, "/health", "/ready", "/items", root_path="/api") == [200, 200, 200]
    assert routes_of(registry) == {"/items"}
    # Without the prefix, the same exclusions apply.
    assert await get(mw, "/health", "/ready") == [200, 200]
    assert routes_of(registry) == {"/items"}


async def test_plain_route_in_an_included_api_router() -> None:
    """A plain Starlette Route added to an APIRouter (router.add_route, also an HTTPEndpoint, a
    route appended by hand, a router included in a router) keeps its template with every
    include_router prefix, behind a proxy prefix too."""
    inner = APIRouter()
    inner.add_route("/plain/{x}", ok)
    inner.routes.append(Route("/appended/{z}", ok))
    outer = APIRouter()
    outer.add_route("/other/{y}", ok, methods=["GET"])
    outer.include_router(inner, prefix="/in")
    app = FastAPI()
    app.include_router(outer, prefix="/v1")
    for root_path in ("", "/api"):
        registry = PerfRegistry()
        mw = PerfMiddleware(app, registry=registry)
        paths = ("/v1/in/plain/1", "/v1/in/appended/2", "/v1/other/3")
        assert await get(mw, *paths, root_path=root_path) == [200, 200, 200]
        assert routes_of(registry) == {"/v1/in/plain/{x}", "/v1/in/appended/{z}", "/v1/other/{y}"}


def sub_app(make: Any, exclude: str) -> tuple[Any, PerfRegistry]:
    sub = make(routes=[Route("/sub", ok), Route("/health", ok), Route("/ready", ok)])
    registry = instrument(sub, exclude_paths=[exclude], metrics_path=None)
    return sub, registry


async def bare_parent(sub: Any) -> Any:
    async def parent(scope: Scope, receive: Receive, send: Send) -> None:
        # A hand-written dispatcher: it only extends root_path, as a proxy prefix does.
        if scope["type"] == "http" and scope["path"].startswith("/subapi"):
            await sub({**scope, "root_path": scope["root_path"] + "/subapi"}, receive, send)
            return
        await PlainTextResponse("not found", status_code=404)(scope, receive, send)

    return parent


@pytest.mark.parametrize("make_sub", [Starlette, FastAPI])
@pytest.mark.parametrize("make_parent", [Starlette, FastAPI])
async def test_instrumented_sub_app_labels_carry_the_mount_prefix(
    make_parent: Any, make_sub: Any
) -> None:
    """An instrumented app mounted under a Starlette or FastAPI parent labels its routes with the
    full template the parent's router sees (mount prefix included, proxy prefix not), and its
    exclusions match that same path."""
    sub, registry = sub_app(make_sub, "/subapi/health")
    parent = make_parent(routes=[Mount("/subapi", app=sub)])
    for root_path in ("", "/api"):
        paths = ("/subapi/sub", "/subapi/health", "/subapi/ready")
        assert await get(parent, *paths, root_path=root_path) == [200, 200, 200]
    assert routes_of(registry) == {"/subapi/sub", "/subapi/ready"}


async def test_instrumented_sub_app_under_a_bare_asgi_parent() -> None:
    """Under a parent that is not a Starlette router, the mount prefix is indistinguishable from
    a proxy prefix: label and exclusion both see the sub-app's own path."""
    sub, registry = sub_app(Starlette, "/health")
    parent = await bare_parent(sub)
    assert await get(parent, "/subapi/sub", "/subapi/health", "/subapi/ready") == [200, 200, 200]
    assert routes_of(registry) == {"/sub", "/ready"}
