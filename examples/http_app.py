"""The HTTP middleware alone on a FastAPI app: route templates (router prefixes included), /metrics.

Needs:  pip install asgi-perf fastapi uvicorn
Run:    uvicorn examples.http_app:app
Then:   curl localhost:8000/api/v1/users/42 ; curl localhost:8000/metrics | grep http_
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, HTTPException

from asgi_perf import instrument

app = FastAPI()
users = APIRouter(prefix="/users")


@users.get("/{user_id}")
async def get_user(user_id: int) -> dict[str, int]:
    # Labelled route="/api/v1/users/{user_id}": one series however many users there are.
    return {"id": user_id}


@app.get("/slow")
async def slow() -> dict[str, bool]:
    await asyncio.sleep(0.2)  # shows up in http_request_duration_seconds' upper buckets
    return {"slow": True}


@app.get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418)  # status="418": a handled error is not a 500


app.include_router(users, prefix="/api/v1")
# Middleware + /metrics (the operations endpoints are opt-in: see examples/operations_app.py).
# Keep it the last line that touches the app: the registry it returns is where every other
# integration should report.
registry = instrument(app)
