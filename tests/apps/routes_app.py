"""A FastAPI app for the route-label and feature end-to-end tests, served by a real uvicorn
(``--root-path /api`` in one of them)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from asgi_perf import RequestInfo, instrument


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


router = APIRouter()
router.add_route("/plain/{x}", ok)  # a plain Starlette route in an APIRouter


@router.get("/typed/{item_id}")
async def typed(item_id: int) -> dict[str, int]:
    return {"id": item_id}


app = FastAPI()
app.include_router(router, prefix="/v1")
app.add_route("/health", ok)

sub = Starlette(routes=[Route("/sub", ok), Route("/health", ok)])
sub_registry = instrument(sub, exclude_paths=["/subapi/health"])
app.mount("/subapi", sub)

#: What the hooks saw: (route, status, tenant, hook kind), read back through /hooks.
SEEN: list[list[str]] = []


def sync_hook(info: RequestInfo) -> None:
    SEEN.append([info.route, info.status, info.labels.get("tenant", ""), "sync"])


async def async_hook(info: RequestInfo) -> None:
    await asyncio.sleep(0)
    SEEN.append([info.route, info.status, info.labels.get("tenant", ""), "async"])


async def tenant(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-tenant":
            return str(value.decode())
    return ""


registry = instrument(
    app,
    exclude_paths=["/health", "/hooks"],
    labels={"app_name": "shop"},
    label_from={"tenant": tenant},
    skip_methods=["OPTIONS"],
    drop_unmatched=True,
    on_request=[sync_hook, async_hook],
)


@app.get("/hooks")
async def hooks() -> JSONResponse:
    return JSONResponse(SEEN)
