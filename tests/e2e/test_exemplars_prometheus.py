"""A real Prometheus with exemplar storage scraping a real uvicorn app traced by the OpenTelemetry
SDK: ``/api/v1/query_exemplars`` answers with the trace ids the app recorded."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .._server import ServerFactory
from .._time import wait_until
from ..conftest import need_service
from .test_prometheus import run_prometheus

pytestmark = pytest.mark.e2e

SENT = 20


@pytest.fixture
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        need_service("prometheus", "install the Debian package 'prometheus'")
    assert path is not None
    return path


def _exemplars(base: str) -> list[dict[str, Any]]:
    now = time.time()
    r = httpx.get(
        base + "/api/v1/query_exemplars",
        params={
            "query": 'http_request_duration_seconds_bucket{route="/work"}',
            "start": now - 600,
            "end": now + 60,
        },
        timeout=10,
    )
    r.raise_for_status()
    found: list[dict[str, Any]] = []
    for series in r.json()["data"]:
        found.extend(series["exemplars"])
    return found


def test_prometheus_stores_the_trace_ids_of_the_requests(
    prometheus_bin: str, tmp_path: Path, server: ServerFactory
) -> None:
    """Every exemplar Prometheus stored names a span the app started (trace and span id), and
    the last request's own trace id is among them once a scrape has seen it."""
    app = server("tests.apps.otel_app:app", ready_path="/trace-ids")
    with (
        run_prometheus(prometheus_bin, tmp_path, [app], features=("exemplar-storage",)) as prom,
        httpx.Client(base_url=app, timeout=10) as client,
    ):
        for _ in range(SENT):
            assert client.get("/work").status_code == 200
        traced = client.get("/trace-ids").json()
        assert len(traced) == SENT
        last = traced[-1]
        pairs = {(t["trace_id"], t["span_id"]) for t in traced}

        def last_stored() -> bool:
            stored = _exemplars(prom.base)
            return any(e["labels"].get("trace_id") == last["trace_id"] for e in stored)

        wait_until(
            last_stored,
            "Prometheus stores the last request's trace id as an exemplar",
            interval=0.1,
        )
        stored = _exemplars(prom.base)
        assert stored
        for exemplar in stored:
            labels = exemplar["labels"]
            assert set(labels) == {"trace_id", "span_id"}
            assert (labels["trace_id"], labels["span_id"]) in pairs
            assert 0 < float(exemplar["value"]) < 10
