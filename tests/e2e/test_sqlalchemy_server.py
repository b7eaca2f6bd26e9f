"""Per-request query counts through the real middleware under a real uvicorn server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from .._server import ServerFactory

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_end_to_end_under_uvicorn(server: ServerFactory) -> None:
    """Under a real uvicorn server, two concurrent requests report 4 and 10 statements."""
    base = server("tests.apps.sqlalchemy_app:create_app", "--factory")

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return list(await asyncio.gather(client.get("/q/2"), client.get("/q/5")))

    responses = asyncio.run(run())
    assert [r.text for r in responses] == ["4", "10"]
    metrics = httpx.get(base + "/metrics", timeout=30).text
    assert 'db_queries_per_request_count{engine="main"} 2.0' in metrics
    assert 'db_queries_per_request_sum{engine="main"} 14.0' in metrics
    assert 'db_queries_per_request_bucket{engine="main",le="5.0"} 1.0' in metrics
    assert (
        'db_query_duration_seconds_count{engine="main",operation="SELECT",outcome="ok"} 14.0'
        in (metrics)
    )
