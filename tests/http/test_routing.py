"""Route labels are the route templates, on every Starlette/FastAPI routing shape, never raw paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Host, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from asgi_perf import UNMATCHED, PerfMiddleware, PerfRegistry, RouteResolver, instrument
from asgi_perf.testing import sample, samples

from .._asgi import Receiver, Sender, http_scope

pytestmark = pytest.mark.anyio


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def teapot(request: Request) -> Response:
    return PlainTextResponse("no such user", status_code=404)


def starlette_app(tmp: Path) -> Starlette:
    (tmp / "app.js").write_text("js")
    shared = Router(routes=[Route("/leaf/{leaf_id}", ok)])
    api = Router(
        routes=[
            Route("/users/{user_id:int}", ok),
            Route("/users/{user_id:int}/missing", teapot),
            Mount("/deep", routes=[Route("/x/{x}", ok)]),
        ]
    )
    return Starlette(
        routes=[
            Route("/", ok),
            Route("/items/{item_id}", ok, methods=["GET"]),
            Route("/files/{rest:path}", ok),
            Mount("/api/v1", app=api),
            Mount("/t/{tenant}", routes=[Route("/orders/{order_id}", ok)]),
            Mount("/a", app=shared),
            Mount("/b", app=shared),
            Mount("/static", app=StaticFiles(directory=tmp), name="static"),
            Host("admin.example.org", app=Router(routes=[Route("/panel", ok)])),
        ]
    )


def fastapi_app() -> FastAPI:
    inner = APIRouter()

    @inner.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @inner.post("/items")
    async def create() -> dict[str, bool]:
        return {"ok": True}

    outer = APIRouter()
    outer.include_router(inner, prefix="/v1")
    outer.include_router(inner, prefix="/v2")

    @outer.get("/health")
    async def health() -> str:
        return "ok"

    app = FastAPI()
    app.include_router(outer, prefix="/api")

    @app.get("/plain/{name}")
    async def plain(name: str) -> str:
        return name

    sub = FastAPI()

    @sub.get("/reports/{report_id}")
    async def report(report_id: int) -> int:
        return report_id

    app.mount("/sub", sub)
    app.mount("/legacy", Starlette(routes=[Route("/old/{k}", ok)]))
    return app


async def route_of(
    app: Any, path: str, method: str = "GET", *, root_path: str = "", host: str = "test"
) -> tuple[str, int]:
    """Serve one request through PerfMiddleware; return (route label, status) recorded."""
    registry = PerfRegistry()
    mw = PerfMiddleware(app, registry=registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mw, root_path=root_path),
        base_url=f"http://{host}",
    ) as client:
        response = await client.request(method, root_path + path)
    found = samples(registry, "http_requests_total")
    assert len(found) == 1, found
    return found[0]["route"], response.status_code


STARLETTE_CASES = [
    ("/", "GET", "/", 200),
    ("/items/42", "GET", "/items/{item_id}", 200),
    ("/files/a/b/c.txt", "GET", "/files/{rest}", 200),
    ("/api/v1/users/7", "GET", "/api/v1/users/{user_id}", 200),
    ("/api/v1/users/7/missing", "GET", "/api/v1/users/{user_id}/missing", 404),
    ("/api/v1/deep/x/9", "GET", "/api/v1/deep/x/{x}", 200),
    ("/t/acme/orders/5", "GET", "/t/{tenant}/orders/{order_id}", 200),
    ("/a/leaf/1", "GET", "/a/leaf/{leaf_id}", 200),
    ("/b/leaf/2", "GET", "/b/leaf/{leaf_id}", 200),
    ("/static/app.js", "GET", "/static/{path}", 200),
    ("/static/nope.js", "GET", "/static/{path}", 404),
    ("/nope/123", "GET", UNMATCHED, 404),
    ("/api/v1/nope", "GET", UNMATCHED, 404),
    ("/items/42", "POST", UNMATCHED, 405),
    ("/items/42/", "GET", UNMATCHED, 307),
]


@pytest.mark.parametrize(("path", "method", "label", "status"), STARLETTE_CASES)
async def test_starlette_route_labels(
    tmp_path: Path, path: str, method: str, label: str, status: int
) -> None:
    """Starlette: routes, converters, nested and parametrised mounts, shared sub-apps, static
    files, 404/405/slash-redirects (one constant label), endpoint-raised 404 (keeps its route)."""
    assert await route_of(starlette_app(tmp_path), path, method) == (label, status)


async def test_starlette_host_route(tmp_path: Path) -> None:
    """Host routes label the inner path template; the host is never a label."""
    app = starlette_app(tmp_path)
    assert await route_of(app, "/panel", host="admin.example.org") == ("/panel", 200)


FASTAPI_CASES = [
    ("/api/v1/items/3", "GET", "/api/v1/items/{item_id}", 200),
    ("/api/v2/items/3", "GET", "/api/v2/items/{item_id}", 200),
    ("/api/v1/items", "POST", "/api/v1/items", 200),
    ("/api/v1/items/notanint", "GET", "/api/v1/items/{item_id}", 422),
    ("/api/health", "GET", "/api/health", 200),
    ("/plain/bob", "GET", "/plain/{name}", 200),
    ("/sub/reports/1", "GET", "/sub/reports/{report_id}", 200),
    ("/legacy/old/9", "GET", "/legacy/old/{k}", 200),
    ("/api/v1/items/3", "DELETE", UNMATCHED, 405),
    ("/api/nothing", "GET", UNMATCHED, 404),
    ("/sub/nothing", "GET", UNMATCHED, 404),
]


@pytest.mark.parametrize(("path", "method", "label", "status"), FASTAPI_CASES)
async def test_fastapi_route_labels(path: str, method: str, label: str, status: int) -> None:
    """FastAPI: include_router prefixes (nested, and one router included twice) are in the label;
    mounted sub-apps, validation errors keep the route, unmatched is one constant label."""
    assert await route_of(fastapi_app(), path, method) == (label, status)


@pytest.mark.parametrize("make", [starlette_app, fastapi_app])
async def test_root_path_is_not_part_of_the_label(make: Any, tmp_path: Path) -> None:
    """Behind a proxy prefix (root_path), the label is the app's own template."""
    app = make(tmp_path) if make is starlette_app else make()
    path = "/items/1" if make is starlette_app else "/plain/x"
    label = "/items/{item_id}" if make is starlette_app else "/plain/{name}"
    assert await route_of(app, path, root_path="/proxy") == (label, 200)


class Things(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return PlainTextResponse("things")


def shared_endpoint_app(tmp: Path, make: Any = Starlette) -> Starlette:
    """Routes that share endpoints. Starlette before 1.7, and FastAPI's router for these plain
    routes on every version, record only the endpoint in the scope."""
    (tmp / "app.js").write_text("js")
    static = StaticFiles(directory=tmp)
    app: Starlette = make(
        routes=[
            Route("/", ok),
            Route("/items/{item_id}", ok),
            Route("/users/{uid}", ok),
            Route("/admins/{uid}", ok),
            Route("/things", Things),
            Route("/things/{thing_id:int}", Things),
            Route("/things/{slug}", Things),
            Route("/x", ok, methods=["GET"]),
            Mount("/m", routes=[Route("/", ok), Route("/{k}", ok)]),
            Mount("/n/{tenant}", routes=[Route("/a/{k}", ok), Route("/b/{k}", ok)]),
            Mount("/static", app=static),
            Mount("/assets", app=static),
            Route("/{name}", ok, methods=["POST"]),
            Host("a.example.org", app=Router(routes=[Route("/p", ok)])),
            Host("b.example.org", app=Router(routes=[Route("/{x}", ok)])),
        ]
    )
    return app


SHARED_ENDPOINT_CASES = [
    ("/", "GET", "/", 200),
    ("/items/42", "GET", "/items/{item_id}", 200),
    ("/users/1", "GET", "/users/{uid}", 200),
    ("/admins/1", "GET", "/admins/{uid}", 200),
    ("/things", "GET", "/things", 200),
    ("/things/3", "GET", "/things/{thing_id}", 200),
    ("/things/abc", "GET", "/things/{slug}", 200),
    ("/x", "GET", "/x", 200),
    ("/x", "POST", "/{name}", 200),
    ("/x", "PUT", UNMATCHED, 405),
    ("/m/", "GET", "/m/", 200),
    ("/m/z", "GET", "/m/{k}", 200),
    ("/m/a", "GET", "/m/{k}", 200),
    ("/n/acme/a/1", "GET", "/n/{tenant}/a/{k}", 200),
    ("/n/acme/b/1", "GET", "/n/{tenant}/b/{k}", 200),
    ("/static/app.js", "GET", "/static/{path}", 200),
    ("/assets/app.js", "GET", "/assets/{path}", 200),
    ("/assets/nope.js", "GET", "/assets/{path}", 404),
]


ROUTERS = [pytest.param(Starlette, id="starlette"), pytest.param(FastAPI, id="fastapi")]


@pytest.mark.parametrize("make", ROUTERS)
@pytest.mark.parametrize(("path", "method", "label", "status"), SHARED_ENDPOINT_CASES)
async def test_routes_sharing_an_endpoint(
    tmp_path: Path, make: Any, path: str, method: str, label: str, status: int
) -> None:
    """One endpoint (function, HTTPEndpoint class or StaticFiles app) behind several routes labels
    the route the router chose, including a method-restricted route the router skipped past;
    the same on every supported Starlette, whether or not it records the route in the scope."""
    assert await route_of(shared_endpoint_app(tmp_path, make), path, method) == (label, status)


@pytest.mark.parametrize(
    ("host", "label"), [("a.example.org", "/p"), ("b.example.org", "/{x}"), ("test", UNMATCHED)]
)
@pytest.mark.parametrize("make", ROUTERS)
async def test_routes_sharing_an_endpoint_under_hosts(
    tmp_path: Path, make: Any, host: str, label: str
) -> None:
    """Hosts whose routes share an endpoint and all match the path: the label is the route under
    the host the request named (after a method-restricted route the router skipped past)."""
    status = 200 if label != UNMATCHED else 405
    assert await route_of(shared_endpoint_app(tmp_path, make), "/p", host=host) == (label, status)


@pytest.mark.parametrize("make", ROUTERS)
async def test_shared_endpoint_labels_in_any_request_order(tmp_path: Path, make: Any) -> None:
    """One middleware serving interleaved requests to routes that share an endpoint keeps each
    request's own template (no label is cached from an earlier request to another route)."""
    registry = PerfRegistry()
    mw = PerfMiddleware(shared_endpoint_app(tmp_path, make), registry=registry)
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ["/items/1", "/", "/m/z", "/items/2", "/m/", "/static/app.js", "/"]:
            await client.get(path)

    def count(route: str) -> float | None:
        return sample(
            registry, "http_requests_total", {"method": "GET", "route": route, "status": "200"}
        )

    assert {s["route"] for s in samples(registry, "http_requests_total")} == {
        "/items/{item_id}",
        "/",
        "/m/{k}",
        "/m/",
        "/static/{path}",
    }
    assert (count("/items/{item_id}"), count("/"), count("/m/{k}")) == (2, 2, 1)


def nested_fastapi_app(tmp: Path) -> FastAPI:
    """FastAPI with include_router prefixes over plain Starlette routes that share an endpoint,
    a StaticFiles mount, a mounted Starlette app with a nested mount, and a Host."""
    (tmp / "app.js").write_text("js")
    items = APIRouter()

    @items.get("/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    items.add_route("/plain/{k}", ok)
    items.add_route("/other/{k}", ok)
    v1 = APIRouter()
    v1.include_router(items, prefix="/items")
    app = FastAPI()
    app.include_router(v1, prefix="/api/v1")
    app.include_router(v1, prefix="/api/v2")
    app.add_route("/top/{k}", ok)
    app.mount("/static", StaticFiles(directory=tmp))
    app.mount(
        "/legacy",
        Starlette(
            routes=[Route("/", ok), Route("/{k}", ok), Mount("/deep", routes=[Route("/{k}", ok)])]
        ),
    )
    app.host("admin.example.org", Router(routes=[Route("/panel", ok), Route("/panel/{p}", ok)]))
    return app


NESTED_FASTAPI_CASES = [
    ("/api/v1/items/3", "test", "/api/v1/items/{item_id}", 200),
    ("/api/v2/items/3", "test", "/api/v2/items/{item_id}", 200),
    ("/api/v1/items/plain/a", "test", "/api/v1/items/plain/{k}", 200),
    ("/api/v2/items/other/a", "test", "/api/v2/items/other/{k}", 200),
    ("/top/a", "test", "/top/{k}", 200),
    ("/static/app.js", "test", "/static/{path}", 200),
    ("/static/nope.js", "test", "/static/{path}", 404),
    ("/legacy/", "test", "/legacy/", 200),
    ("/legacy/a", "test", "/legacy/{k}", 200),
    ("/legacy/deep/a", "test", "/legacy/deep/{k}", 200),
    ("/panel", "admin.example.org", "/panel", 200),
    ("/panel/p1", "admin.example.org", "/panel/{p}", 200),
    ("/panel", "test", UNMATCHED, 404),
    ("/api/v3/items/3", "test", UNMATCHED, 404),
]


@pytest.mark.parametrize(("path", "host", "label", "status"), NESTED_FASTAPI_CASES)
async def test_nested_fastapi_routes(
    tmp_path: Path, path: str, host: str, label: str, status: int
) -> None:
    """FastAPI: nested include_router prefixes (one router included twice) over APIRoutes and over
    plain routes sharing one endpoint, StaticFiles and Starlette mounts, nested mounts and a Host
    all label their full template."""
    assert await route_of(nested_fastapi_app(tmp_path), path, host=host) == (label, status)


def starlette_over_fastapi(tmp: Path) -> Starlette:
    """A FastAPI app mounted in a Starlette app, twice: the outer router records the mount as the
    route, the inner one (FastAPI's) records only the endpoint for plain routes and mounts."""
    (tmp / "app.js").write_text("js")
    api = FastAPI()

    @api.get("/typed/{n}")
    async def typed(n: int) -> int:
        return n

    api.add_route("/plain/{k}", ok)
    api.add_route("/other/{k}", ok)
    api.mount("/static", StaticFiles(directory=tmp))
    return Starlette(routes=[Route("/", ok), Mount("/t/{tenant}", app=api), Mount("/api", app=api)])


@pytest.mark.parametrize(
    ("path", "label", "status"),
    [
        ("/", "/", 200),
        ("/api/typed/1", "/api/typed/{n}", 200),
        ("/api/plain/a", "/api/plain/{k}", 200),
        ("/api/other/a", "/api/other/{k}", 200),
        ("/api/static/app.js", "/api/static/{path}", 200),
        ("/api/nothing", UNMATCHED, 404),
        ("/t/acme/plain/a", "/t/{tenant}/plain/{k}", 200),
        ("/t/acme/static/app.js", "/t/{tenant}/static/{path}", 200),
    ],
)
async def test_fastapi_mounted_in_starlette(
    tmp_path: Path, path: str, label: str, status: int
) -> None:
    """Routes of a FastAPI app mounted in a Starlette app carry the prefix of the mount the request
    came through, whichever router recorded what."""
    assert await route_of(starlette_over_fastapi(tmp_path), path) == (label, status)


@pytest.mark.parametrize("make", ROUTERS)
async def test_endpoint_behind_a_hidden_route_is_unmatched_not_another_template(make: Any) -> None:
    """An endpoint reached through a route the router tree does not show (a mount over a wrapper
    that hides its routes) is unmatched, every time, not the template of another route sharing it."""

    class Hide:
        def __init__(self, app: Any) -> None:
            self._app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self._app(scope, receive, send)

    hidden = Hide(Router(routes=[Route("/y", ok)]))
    registry = PerfRegistry()
    mw = PerfMiddleware(
        make(routes=[Route("/z", ok), Mount("/hidden", app=hidden)]), registry=registry
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        for path in ["/hidden/y", "/z", "/hidden/y"]:
            assert (await c.get(path)).status_code == 200
    assert {s["route"] for s in samples(registry, "http_requests_total")} == {UNMATCHED, "/z"}


@pytest.mark.parametrize("make", ROUTERS)
async def test_resolver_names_the_path_match_of_a_method_mismatch(
    tmp_path: Path, make: Any
) -> None:
    """Asked directly about a 405 (the middleware labels those unmatched itself), the resolver
    names the first route whose path matched, as Starlette 1.7+ records it, not a later one."""
    app = shared_endpoint_app(tmp_path, make)
    scope = http_scope("/x", method="PUT", headers=[(b"host", b"test")])
    sender = Sender()
    await app(scope, Receiver(), sender)
    assert sender.status == 405
    assert RouteResolver()(scope) == "/x"


async def test_route_added_later_sharing_an_endpoint_is_found() -> None:
    """A route added after the first request, with the endpoint of an existing route, gets its own
    template (not the existing route's)."""
    app = Starlette(routes=[Route("/a", ok)])
    registry = PerfRegistry()
    mw = PerfMiddleware(app, registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        await c.get("/a")
        app.router.routes.append(Route("/b/{n}", ok))
        await c.get("/b/1")
        await c.get("/a")
    assert {s["route"] for s in samples(registry, "http_requests_total")} == {"/a", "/b/{n}"}
    labels = {"method": "GET", "route": "/a", "status": "200"}
    assert sample(registry, "http_requests_total", labels) == 2


@pytest.mark.parametrize("make", [Starlette, FastAPI])
async def test_instrument_operations_routes_keep_their_own_labels(make: Any) -> None:
    """instrument() routes the metrics and its operations endpoints to one endpoint; each request
    is still labelled with the path it was routed by (when the package's own endpoints are
    recorded at all)."""
    app = make()
    registry = instrument(app, operations=True, record_own_endpoints=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ["/metrics/summary", "/metrics", "/metrics/alerts", "/metrics/summary"]:
            await client.get(path)
    assert {s["route"] for s in samples(registry, "http_requests_total")} == {
        "/metrics/summary",
        "/metrics",
        "/metrics/alerts",
    }
    labels = {"method": "GET", "route": "/metrics/summary", "status": "200"}
    assert sample(registry, "http_requests_total", labels) == 2


async def test_route_added_after_first_request_is_found(tmp_path: Path) -> None:
    """Routes registered after the router was first indexed still get their template."""
    app = starlette_app(tmp_path)
    registry = PerfRegistry()
    mw = PerfMiddleware(app, registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        await c.get("/")
        app.router.routes.append(Route("/late/{n}", ok))
        await c.get("/late/5")
    routes = {s["route"] for s in samples(registry, "http_requests_total")}
    assert routes == {"/", "/late/{n}"}


async def test_route_cost_does_not_depend_on_route_count() -> None:
    """After the first request, resolving reads the router's choice: the tree is not walked again."""
    routes = [Route(f"/r{i}/{{x}}", ok) for i in range(200)]
    app = Starlette(routes=routes)
    resolver = RouteResolver()
    walks = 0
    original = resolver._reindex

    def counting(scope: Any) -> None:
        nonlocal walks
        walks += 1
        original(scope)

    resolver._reindex = counting  # type: ignore[method-assign]
    mw = PerfMiddleware(app, route_getter=resolver)
    for i in range(0, 200, 7):
        for _ in range(3):
            await mw(http_scope(f"/r{i}/v"), Receiver(), Sender())
    assert walks == 1
    assert len(samples(mw.registry, "http_requests_total")) == len(range(0, 200, 7))


async def test_unknown_router_falls_back_to_route_path() -> None:
    """A custom router that sets scope['route'] with a path (and no known tree) is still labelled;
    one that sets nothing is unmatched."""

    class MyRoute:
        path = "/custom/{id}"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].startswith("/custom"):
            scope["route"] = MyRoute()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    registry = PerfRegistry()
    mw = PerfMiddleware(app, registry=registry)
    await mw(http_scope("/custom/1"), Receiver(), Sender())
    await mw(http_scope("/other"), Receiver(), Sender())
    routes = sorted(s["route"] for s in samples(registry, "http_requests_total"))
    assert routes == sorted(["/custom/{id}", UNMATCHED])


async def test_unknown_route_under_mount_is_unmatched_not_raw() -> None:
    """A route the index cannot place, under a mount prefix, is unmatched rather than a raw path."""

    class Odd:
        path = "/x/{y}"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = Odd()
        scope["app_root_path"] = ""
        scope["root_path"] = "/mounted/123"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    registry = PerfRegistry()
    await PerfMiddleware(app, registry=registry)(
        http_scope("/mounted/123/x/1"), Receiver(), Sender()
    )
    assert [s["route"] for s in samples(registry, "http_requests_total")] == [UNMATCHED]


async def test_self_containing_router_does_not_recurse_forever() -> None:
    """A router reachable from itself (a mount loop) is indexed without infinite recursion."""
    router = Router(routes=[Route("/leaf", ok)])
    router.routes.append(Mount("/loop", app=router))
    registry = PerfRegistry()
    await PerfMiddleware(router, registry=registry)(http_scope("/leaf"), Receiver(), Sender())
    assert [s["route"] for s in samples(registry, "http_requests_total")] == ["/leaf"]


def test_labels_never_contain_raw_values(tmp_path: Path) -> None:
    """No label in the tables above carries a concrete id: every dynamic segment is a {param}."""
    for _, _, label, _ in STARLETTE_CASES + FASTAPI_CASES:
        assert not re.search(r"/\d+(/|$)", label), label


async def test_route_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A router that creates a new route object per request cannot grow the resolver's cache."""
    monkeypatch.setattr("asgi_perf.http._routing.MAX_CACHED_ROUTES", 50)

    class Fresh:
        path = "/fresh/{n}"

    resolver = RouteResolver()
    for _ in range(500):
        assert resolver({"route": Fresh(), "root_path": ""}) == "/fresh/{n}"
    assert len(resolver._cache) == 50
