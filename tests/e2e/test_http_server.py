"""End to end through a real uvicorn process on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .._server import ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.slow]

APP = "tests.apps.http_app:app"


def scrape_values(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(base + "/metrics").text
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_thousand_concurrent_requests_counted_exactly(server: ServerFactory) -> None:
    """1,000 concurrent requests through uvicorn: counted exactly, in-progress back to 0,
    the include_router prefix in the route label."""
    base = server(APP)
    limits = httpx.Limits(max_connections=100)
    timeout = httpx.Timeout(60, pool=None)  # 1,000 requests queue for 100 connections
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        responses = await asyncio.gather(*(client.get(f"/api/v1/items/{i}") for i in range(1000)))
    assert all(r.status_code == 200 for r in responses)
    values = scrape_values(base)
    labels = {"method": "GET", "route": "/api/v1/items/{item_id}", "status": "200"}
    assert value(values, "http_requests_total", **labels) == 1000
    assert value(values, "http_request_duration_seconds_count", **labels) == 1000
    # Nothing is in progress: not even the /metrics scrape being served (excluded by path).
    assert value(values, "http_requests_in_progress", method="GET") == 0
    assert value(scrape_values(base), "http_requests_in_progress", method="POST") == 0


def test_streaming_background_errors_and_uploads(server: ServerFactory) -> None:
    """Streamed bytes are all counted; background work is not in the duration; an exception is a
    500 with its duration; uploaded bytes are counted."""
    base = server(APP)
    with httpx.Client(base_url=base, timeout=30) as client:
        streamed = client.get("/stream").content
        sent = time.perf_counter()
        assert client.get("/background").text == "done"
        round_trip = time.perf_counter() - sent
        assert client.get("/release").text == '"released"'
        assert client.post("/upload", content=b"z" * 5000).json() == {"size": 5000}
        # Last: uvicorn closes the connection after an unhandled exception.
        assert client.get("/boom").status_code == 500
    # The background task finishes after the response; wait until the request is recorded.
    values = scrape_values(base)
    for _ in range(100):
        if value(values, "http_requests_total", method="GET", route="/background", status="200"):
            break
        httpx.get(base + "/")
        values = scrape_values(base)
    assert (
        value(values, "http_response_size_bytes_sum", method="GET", route="/stream")
        == len(streamed)
        == 1000
    )
    background = value(
        values, "http_request_duration_seconds_sum", method="GET", route="/background", status="200"
    )
    # Server-side start..last byte lies inside the client's send..receive window, while the
    # background task ran until after that window closed.
    assert 0 < background <= round_trip
    assert value(values, "http_requests_total", method="GET", route="/boom", status="500") == 1
    assert (
        value(
            values, "http_exceptions_total", method="GET", route="/boom", exception="RuntimeError"
        )
        == 1
    )
    assert value(values, "http_request_size_bytes_sum", method="POST", route="/upload") == 5000


def test_client_disconnect_is_499(server: ServerFactory) -> None:
    """A client that gives up before the response is recorded as 499 by the real server."""
    base = server(APP)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(base + "/hang", timeout=0.5)
    for _ in range(200):
        values = scrape_values(base)
        if value(values, "http_requests_total", method="GET", route="/hang", status="499"):
            break
    assert value(values, "http_requests_total", method="GET", route="/hang", status="499") == 1


def test_promtool_on_live_scrape(server: ServerFactory, promtool: str) -> None:
    """The live /metrics of the real app passes `promtool check metrics` without warnings."""
    base = server(APP)
    httpx.get(base + "/api/v1/items/1")
    httpx.get(base + "/boom")
    body = httpx.get(base + "/metrics").content
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert (result.stdout + result.stderr).strip() == b""
