"""Route labels, exclusions and the middleware's optional features through a real uvicorn,
behind ``--root-path`` as a proxy deployment runs it."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .._server import ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "tests.apps.routes_app:app"


def requests_total(
    base: str, metrics: str = "/metrics"
) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(base + metrics, timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "http_requests_total":
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


def test_route_labels_and_features_behind_root_path(server: ServerFactory) -> None:
    """Under ``uvicorn --root-path /api``: /health is excluded, a plain Route in an included
    APIRouter has its template, the instrumented sub-app labels with its mount prefix, constant
    and per-request labels are on the series, OPTIONS and unmatched requests are left out, and
    the sync and async hooks saw each recorded request."""
    base = server(APP, "--root-path", "/api", ready_path="/health")
    with httpx.Client(base_url=base, timeout=10) as client:
        for path, tenant in [
            ("/health", "acme"),
            ("/v1/plain/1", "acme"),
            ("/v1/typed/2", "globex"),
            ("/subapi/sub", "acme"),
            ("/subapi/health", "acme"),
            ("/nothing", "acme"),
        ]:
            response = client.get(path, headers={"x-tenant": tenant})
            assert response.status_code == (404 if path == "/nothing" else 200), path
        assert client.options("/v1/plain/1").status_code == 405  # skipped: not even a hook
        seen = client.get("/hooks").json()
    found = requests_total(base)
    labels = {dict(key)["route"]: dict(key) for key in found}
    # The parent excludes its own /health; the sub-app's health is the sub-app's to exclude.
    assert set(labels) == {"/v1/plain/{x}", "/v1/typed/{item_id}", "/subapi/sub", "/subapi/health"}
    assert labels["/v1/plain/{x}"] == {
        "method": "GET",
        "route": "/v1/plain/{x}",
        "status": "200",
        "app_name": "shop",
        "tenant": "acme",
    }
    assert labels["/v1/typed/{item_id}"]["tenant"] == "globex"
    assert sorted(seen) == sorted(
        [
            [route, status, tenant, kind]
            for route, status, tenant in [
                ("/v1/plain/{x}", "200", "acme"),
                ("/v1/typed/{item_id}", "200", "globex"),
                ("/subapi/sub", "200", "acme"),
                ("/subapi/health", "200", "acme"),
                ("__unmatched__", "404", ""),
            ]
            for kind in ("sync", "async")
        ]
    )
    sub = requests_total(base, "/subapi/metrics")
    assert [dict(key)["route"] for key in sub] == ["/subapi/sub"]


def test_environment_switch_on_a_real_server(server: ServerFactory) -> None:
    """ASGI_PERF_DISABLED=1: the app serves as before and instrument() added nothing."""
    base = server(APP, env={"ASGI_PERF_DISABLED": "1"}, ready_path="/health")
    assert httpx.get(base + "/v1/plain/1").status_code == 200
    assert httpx.get(base + "/metrics").status_code == 404
    assert httpx.get(base + "/subapi/metrics").status_code == 404
