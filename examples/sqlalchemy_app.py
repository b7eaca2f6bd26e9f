"""A Starlette app with an instrumented async SQLAlchemy engine.

Run:  uvicorn examples.sqlalchemy_app:app
Then: curl localhost:8000/users/3 ; curl localhost:8000/slow ; curl localhost:8000/metrics
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_perf import instrument
from asgi_perf.sqlalchemy import SLOW_QUERIES, instrument_engine

engine = create_async_engine("sqlite+aiosqlite:///example.sqlite")


async def user(request: Request) -> JSONResponse:
    async with engine.connect() as conn:
        # Bound parameters never reach labels or logs; only the statement's shape does.
        row = await conn.execute(text("SELECT :id AS id"), {"id": request.path_params["uid"]})
        return JSONResponse({"id": row.scalar()})


async def slow(request: Request) -> JSONResponse:
    async with engine.connect() as conn:
        # WITH RECURSIVE busy-loop: slow enough to cross the 50 ms threshold on most machines.
        await conn.execute(
            text(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
                " SELECT count(*) FROM c"
            )
        )
    recent = registry.find_component(SLOW_QUERIES).recent(limit=5)
    return JSONResponse(recent)


app = Starlette(routes=[Route("/users/{uid:int}", user), Route("/slow", slow)])
registry = instrument(app)  # HTTP middleware + /metrics
instrument_engine(
    engine, registry=registry, name="main", slow_query_threshold=0.05, n_plus_one_threshold=10
)
