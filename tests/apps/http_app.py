"""A FastAPI app for end-to-end tests under a real uvicorn process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from asgi_perf import instrument

# The background task waits until the test calls /release, i.e. until after the client has the
# whole response: if its time were counted, the recorded duration would exceed the client's own
# round trip.
RELEASE = asyncio.Event()

router = APIRouter()


@router.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


app = FastAPI()
app.include_router(router, prefix="/api/v1")
registry = instrument(app)


@app.get("/")
async def index() -> str:
    return "ok"


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            await asyncio.sleep(0.001)
            yield b"%d" % i * 100

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/background")
async def background(tasks: BackgroundTasks) -> PlainTextResponse:
    tasks.add_task(RELEASE.wait)
    return PlainTextResponse("done")


@app.get("/release")
async def release() -> str:
    RELEASE.set()
    return "released"


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@app.get("/hang")
async def hang(request: Request) -> PlainTextResponse:
    while not await request.is_disconnected():
        await asyncio.sleep(0.01)
    return PlainTextResponse("too late")


@app.post("/upload")
async def upload(request: Request) -> dict[str, int]:
    return {"size": len(await request.body())}
