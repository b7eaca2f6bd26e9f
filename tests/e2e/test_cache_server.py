"""The cache layer end to end: a real uvicorn server, real HTTP clients, promtool on /metrics."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .._server import ROOT, ServerFactory

pytestmark = pytest.mark.e2e

APP = "tests.apps.cache_app:app"
EXAMPLE = ROOT / "examples" / "cache_app.py"


def values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


@pytest.mark.anyio
async def test_concurrent_requests_share_one_load_and_scrape_is_valid(
    server: ServerFactory, promtool: str
) -> None:
    """Concurrent requests for one user run 1 load; /metrics counts it and passes promtool."""
    base = server(APP)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answers = await asyncio.gather(*[client.get("/users/7") for _ in range(20)])
        assert {r.status_code for r in answers} == {200}
        assert all(r.json() == {"id": 7} for r in answers)
        assert (await client.get("/users/7")).json() == {"id": 7}
        assert (await client.get("/loads")).json() == 1
        scrape = await client.get("/metrics")
    text = scrape.text
    requests = values(text, "cache_requests_total")
    hits = requests[(("cache", "users"), ("result", "hit"))]
    misses = requests[(("cache", "users"), ("result", "miss"))]
    # A slow machine may serve late requests after the load finished: those are hits. Either
    # way every request is counted once and every miss but the loading one was coalesced.
    assert hits + misses == 21
    assert hits >= 1
    assert values(text, "cache_coalesced_total") == {(("cache", "users"),): misses - 1}
    assert values(text, "cache_entries") == {(("cache", "users"),): 1}
    assert values(text, "cache_load_duration_seconds_count") == {(("cache", "users"),): 1}
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape.content, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.anyio
async def test_example_app_runs() -> None:
    """``examples/cache_app.py`` works as documented: miss, hit, invalidate, stats, metrics."""
    spec = importlib.util.spec_from_file_location("cache_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    transport = httpx.ASGITransport(app=module.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        assert (await client.get("/users/1")).json() == {"id": 1, "name": "grace"}
        assert (await client.get("/users/1")).json() == {"id": 1, "name": "grace"}
        assert (await client.get("/users/99")).json() is None
        renamed = await client.post("/users/1/rename", params={"name": "ada"})
        assert renamed.json() == {"id": 1, "name": "ada"}
        assert (await client.get("/settings/theme")).json() == "value of theme"
        stats = (await client.get("/cache-stats")).json()
        metrics = (await client.get("/metrics")).text
    assert stats["users"]["hits"] == 1
    assert stats["users"]["misses"] == 3
    assert stats["users"]["evictions"]["explicit"] == 1
    assert stats["settings"]["misses"] == 1
    assert 'cache_requests_total{cache="users",result="hit"} 1.0' in metrics
