"""Migrating from prometheus-fastapi-instrumentator: both in one app, each on its own registry."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fastapi_instrumentator import Instrumentator

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf.registry import ERR_NAME_CLASH
from tests._server import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_side_by_side_with_the_instrumentator_on_uvicorn() -> None:
    """PFI on prometheus_client's global registry at /metrics and asgi-perf (PFI preset) on its
    own at /asgi-perf/metrics both count every request, with the same names and labels."""
    with serve_app() as start:
        base = start(
            "tests.apps.compat_app:app",
            env={
                "ASGI_PERF_TEST_SIDE_BY_SIDE": "1",
                "ASGI_PERF_TEST_COMPAT": "prometheus-fastapi-instrumentator",
            },
        )
        for _ in range(3):
            assert httpx.get(f"{base}/items/1").status_code == 200
        assert httpx.get(f"{base}/fail").status_code == 500
        theirs = samples(httpx.get(f"{base}/metrics").text)
        ours = samples(httpx.get(f"{base}/asgi-perf/metrics").text)
    for status, count in (("2xx", 3.0), ("5xx", 1.0)):
        handler = "/items/{item_id}" if status == "2xx" else "/fail"
        key = (
            "http_requests_total",
            (("handler", handler), ("method", "GET"), ("status", status)),
        )
        assert theirs[key] == count
        assert ours[key] == count
    highr = ("http_request_duration_highr_seconds_count", ())
    # The server's readiness probe of / and PFI's /metrics count too; asgi-perf's own scrape does
    # not (its endpoint is left out), PFI's second scrape had not finished when it was counted.
    assert ours[highr] == 6.0
    assert theirs[highr] == 5.0
    assert ("process_resident_memory_bytes", ()) in ours


async def test_one_prometheus_registry_for_both_is_refused_with_the_way_out() -> None:
    """asgi-perf's HTTP metrics on the registry PFI already fills: a clear ValueError naming the
    fix, not prometheus_client's bare DuplicateTimeseries at the first request."""
    shared = CollectorRegistry()
    app = FastAPI()
    Instrumentator(registry=shared).instrument(app)
    app.add_middleware(PerfMiddleware, registry=PerfRegistry(shared))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(ValueError, match="namespace=") as caught:
            await client.get("/")
    assert str(caught.value).startswith(ERR_NAME_CLASH.split("{")[0])
    assert "http_requests_total" in str(caught.value)


async def test_a_namespace_shares_the_registry_with_the_instrumentator() -> None:
    """With namespace= both libraries report into one prometheus registry, each its own names."""
    shared = CollectorRegistry()
    app = FastAPI()

    @app.get("/x")
    async def x() -> str:
        return "x"

    Instrumentator(registry=shared).instrument(app)
    perf = PerfRegistry(shared, namespace="asgi_perf")
    app.add_middleware(PerfMiddleware, registry=perf)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/x")).status_code == 200
    labels = {"handler": "/x", "method": "GET", "status": "2xx"}
    assert shared.get_sample_value("http_requests_total", labels) == 1.0
    ours = {"method": "GET", "route": "/x", "status": "200"}
    assert shared.get_sample_value("asgi_perf_http_requests_total", ours) == 1.0
