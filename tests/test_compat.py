"""Compat presets: the peers' names and labels at exposition, their defaults at construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from asgi_perf import PerfMiddleware, PerfRegistry, metrics_app
from asgi_perf import compat as c
from asgi_perf.catalogue import LATENCY_BUCKETS, STANDARD_METRICS
from asgi_perf.compat import PRESETS, Compat, CompatView, exposed
from asgi_perf.export import _mp_store as store
from asgi_perf.export import enable_multiprocess
from asgi_perf.http import _stats
from asgi_perf.registry import ERR_NAME_CLASH, ERR_PROCESS_DUPLICATE, ERR_PROCESS_METRICS
from asgi_perf.testing import sample, scrape

from ._asgi import Receiver, Sender, http_scope
from ._multiprocess import parse, write_worker

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def ok(scope: Any, receive: Any, send: Any) -> None:
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def route_of(scope: Any) -> str | None:
    return None if scope["path"] == "/missing" else "/items/{id}"


async def traffic(registry: PerfRegistry, **options: Any) -> PerfMiddleware:
    middleware = PerfMiddleware(ok, registry=registry, route_getter=route_of, **options)
    for path in ("/items/1", "/items/2", "/missing"):
        await middleware(http_scope(path), Receiver(), Sender())
    return middleware


async def exposition(registry: PerfRegistry) -> Samples:
    response = await scrape(metrics_app(registry, render_in_thread=False))
    assert response.status == 200
    return parse(response.text)


# -- presets at exposition ----------------------------------------------------------------------
async def test_instrumentator_preset_exposes_its_names_labels_and_highr() -> None:
    """handler label, grouped status, "none" for untemplated, in-progress renamed, and the
    label-less high-resolution histogram with the instrumentator's exact buckets."""
    registry = PerfRegistry(compat="prometheus-fastapi-instrumentator")
    await traffic(registry)
    got = await exposition(registry)
    key = (("handler", "/items/{id}"), ("method", "GET"), ("status", "2xx"))
    assert got["http_requests_total", key] == 2.0
    none = (("handler", "none"), ("method", "GET"), ("status", "4xx"))
    assert got["http_requests_total", none] == 1.0
    assert got["http_request_duration_highr_seconds_count", ()] == 3.0
    les = [dict(k)["le"] for (n, k) in got if n == "http_request_duration_highr_seconds_bucket"]
    assert les == [*(repr(float(b)) for b in c.PFI_HIGHR_BUCKETS), "+Inf"]
    assert got["http_requests_inprogress", (("method", "GET"),)] == 0.0
    families = [f.name for f in registry.prometheus.collect()]
    assert families.count("http_request_duration_highr_seconds") == 1
    assert got["http_response_size_bytes_count", (("handler", "/items/{id}"), ("method", "GET"))]
    # The registry itself keeps the catalogue's names: summary, dashboard and rules read them.
    labels = {"method": "GET", "route": "/items/{id}", "status": "2xx"}
    assert sample(registry, "http_requests_total", labels) == 2.0


async def test_starlette_exporter_preset_with_app_name_and_its_buckets() -> None:
    """starlette_* names, path and status_code labels, app_name, prometheus_client's buckets."""
    registry = PerfRegistry(compat="starlette-exporter")
    await traffic(registry)
    got = await exposition(registry)
    key = (("app_name", "starlette"), ("method", "GET"), ("path", "/items/{id}"))
    assert got["starlette_requests_total", (*key, ("status_code", "200"))] == 2.0
    les = {dict(k)["le"] for (n, k) in got if n == "starlette_request_duration_seconds_bucket"}
    assert les == {repr(b) for b in c.PROMETHEUS_DEFAULT_BUCKETS} | {"+Inf"}
    assert not any(n.startswith("http_request_duration_highr") for n, _ in got)


async def test_constant_and_per_request_labels_with_a_preset() -> None:
    """Middleware labels ride along with the preset's: the label-less highr histogram stays
    label-less, the HTTP series carry both the preset's and the middleware's labels."""
    registry = PerfRegistry(compat="prometheus-fastapi-instrumentator")
    await traffic(registry, labels={"team": "a"}, label_from={"scheme": lambda scope: "http"})
    got = await exposition(registry)
    key = (
        ("handler", "/items/{id}"),
        ("method", "GET"),
        ("scheme", "http"),
        ("status", "2xx"),
        ("team", "a"),
    )
    assert got["http_requests_total", key] == 2.0
    assert got["http_request_duration_highr_seconds_count", ()] == 3.0


@pytest.mark.parametrize(
    ("preset", "name"),
    [
        ("starlette-exporter", "app_name"),
        ("starlette-exporter", "status_code"),
        ("prometheus-fastapi-instrumentator", "handler"),
    ],
)
def test_a_middleware_label_the_preset_exposes_is_refused(preset: str, name: str) -> None:
    registry = PerfRegistry(compat=preset)
    with pytest.raises(ValueError, match=f"label '{name}' is one the registry's compat"):
        PerfMiddleware(ok, registry=registry, labels={name: "x"})
    with pytest.raises(ValueError, match=f"label '{name}' is one the registry's compat"):
        PerfMiddleware(ok, registry=registry, label_from={name: lambda scope: "x"})


async def test_opentelemetry_preset_uses_the_semantic_convention_names() -> None:
    registry = PerfRegistry(compat="opentelemetry")
    await traffic(registry)
    got = await exposition(registry)
    key = (
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("http_route", "/items/{id}"),
    )
    assert got["http_server_request_duration_seconds_count", key] == 2.0
    assert ("http_server_active_requests", (("http_request_method", "GET"),)) in got


async def test_a_namespace_prefixes_the_renamed_metrics_too() -> None:
    registry = PerfRegistry(namespace="shop", compat="starlette-exporter")
    await traffic(registry)
    got = await exposition(registry)
    assert any(n == "shop_starlette_requests_total" for n, _ in got)


async def test_explicit_middleware_options_win_over_the_preset() -> None:
    """group_status= and buckets= on the middleware are kept; the preset only sets defaults."""
    registry = PerfRegistry(compat="prometheus-fastapi-instrumentator")
    await traffic(registry, group_status=False, buckets=(0.5, 1.0))
    got = await exposition(registry)
    key = (("handler", "/items/{id}"), ("method", "GET"), ("status", "200"))
    assert got["http_requests_total", key] == 2.0
    les = {dict(k)["le"] for (n, k) in got if n == "http_request_duration_seconds_bucket"}
    assert les == {"0.5", "1.0", "+Inf"}


async def test_without_a_preset_nothing_changes() -> None:
    registry = PerfRegistry()
    middleware = await traffic(registry)
    assert type(middleware._stats) in (_stats.HttpStats, _stats.ExemplarHttpStats)  # no highr
    assert middleware._stats.duration_buckets == LATENCY_BUCKETS
    got = await exposition(registry)
    assert not any("highr" in n for n, _ in got)
    assert exposed(registry.prometheus, None) is registry.prometheus
    assert exposed(registry.prometheus, Compat(group_status=True)) is registry.prometheus


async def test_a_push_carries_the_preset_names() -> None:
    """What a Pushgateway receives is what /metrics serves."""
    from asgi_perf.export._push import _Pushed

    registry = PerfRegistry(compat="starlette-exporter")
    await traffic(registry)
    names = {family.name for family in _Pushed(registry).collect()}
    assert "starlette_requests" in names
    assert "http_requests" not in names


def test_custom_compat_view_renames_any_http_metric() -> None:
    """A Compat of one's own: one name and one label, the rest as the catalogue has it."""
    compat = Compat(metric_names={"http_exceptions_total": "app_errors_total"})
    source = CollectorRegistry()
    counter = prometheus_client.Counter(
        "http_exceptions", "x", ["method", "route", "exception"], registry=source
    )
    counter.labels("GET", "/a", "KeyError").inc()
    families = {f.name: f for f in CompatView(source, compat).collect()}
    assert next(s.name for s in families["app_errors"].samples) == "app_errors_total"


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metric_names": {"db_query_duration_seconds": "x"}}, "not an HTTP metric"),
        ({"metric_names": {"http_requests_total": "bad name"}}, "not a valid Prometheus metric"),
        ({"metric_names": {"http_requests_total": "requests"}}, "_total suffix"),
        ({"metric_names": {"http_requests_total": "http_exceptions_total"}}, "exposed as"),
        ({"metric_names": {"http_requests_total": "db_slow_queries_total"}}, "exposed as"),
        ({"metric_names": {"http_requests_total": "process_cpu_seconds_total"}}, "exposed as"),
        ({"label_names": {"path": "x"}}, "not an HTTP label"),
        ({"label_names": {"route": "9x"}}, "not a valid Prometheus label name"),
        ({"label_names": {"route": "le"}}, "not a valid Prometheus label name"),
        ({"label_names": {"route": "method"}}, "would appear twice"),
        ({"extra_labels": {"__x": "y"}}, "not a valid Prometheus label name"),
        ({"extra_labels": {"route": "y"}}, "would appear twice"),
        ({"extra_labels": {"app": 1}}, "must be a string"),
        ({"unmatched": ""}, "unmatched must be"),
        ({"buckets": (1.0, 0.5)}, "bucket"),
    ],
)
def test_bad_compat_settings_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Compat(**options)


def test_presets_by_name_and_with_changes() -> None:
    assert Compat.preset("starlette-exporter") is PRESETS["starlette-exporter"]
    mine = Compat.preset("starlette-exporter", extra_labels={"app_name": "shop"})
    assert mine.extra_labels == {"app_name": "shop"}
    assert mine.label_names == PRESETS["starlette-exporter"].label_names
    with pytest.raises(ValueError, match="unexpected keyword argument 'colour'"):
        Compat.preset("opentelemetry", colour="blue")
    with pytest.raises(ValueError, match="unknown compat preset 'pfi'"):
        PerfRegistry(compat="pfi")
    with pytest.raises(ValueError, match="compat must be a preset name"):
        PerfRegistry(compat=3)  # type: ignore[arg-type]


# -- process, platform and GC collectors --------------------------------------------------------
def test_process_collectors_are_on_by_default_and_can_be_left_out() -> None:
    names = {f.name for f in PerfRegistry().prometheus.collect()}
    assert {"process_resident_memory_bytes", "python_info", "python_gc_collections"} <= names
    bare = {f.name for f in PerfRegistry(process_metrics=False).prometheus.collect()}
    assert not bare & {"process_resident_memory_bytes", "python_info"}


def test_a_given_registry_is_left_as_given() -> None:
    """The global registry has the collectors already: no duplicate, no error."""
    given = CollectorRegistry()
    PerfRegistry(given)
    assert given.get_sample_value("process_max_fds") is None
    PerfRegistry(CollectorRegistry(), process_metrics=True)
    with pytest.raises(ValueError, match=ERR_PROCESS_DUPLICATE.split("(")[0].strip()):
        PerfRegistry(prometheus_client.REGISTRY, process_metrics=True)
    with pytest.raises(ValueError, match=ERR_PROCESS_METRICS.split("{")[0].strip()):
        PerfRegistry(process_metrics="yes")  # type: ignore[arg-type]


def test_a_second_perf_registry_on_one_prometheus_registry_is_explained() -> None:
    given = CollectorRegistry()
    PerfRegistry(given)
    with pytest.raises(ValueError, match="namespace=") as caught:
        PerfRegistry(given)
    assert str(caught.value).startswith(ERR_NAME_CLASH.split(":")[0])
    other = CollectorRegistry()
    prometheus_client.Counter("job_runs", "runs", registry=other)
    with pytest.raises(ValueError, match="job_runs"):
        PerfRegistry(other).register(_Same("job_runs"))


class _Same:
    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> Any:
        yield prometheus_client.metrics_core.CounterMetricFamily(self.name, "again", value=1)

    def describe(self) -> Any:
        return self.collect()


def test_an_unrelated_registration_error_is_not_rewritten() -> None:
    registry = PerfRegistry()

    class Broken:
        def describe(self) -> Any:
            raise ValueError("something else")

    with pytest.raises(ValueError, match=r"^something else$"):
        PerfRegistry(CollectorRegistry()).register(Broken())  # type: ignore[arg-type]
    assert registry.compat is None


# -- multi-worker -------------------------------------------------------------------------------
def test_process_metrics_are_per_live_worker_never_summed(tmp_path: Path) -> None:
    """Each live worker's process families get a pid label; a dead worker's vanish (and are not
    compacted into the totals), so the series stay as many as the workers."""
    import os
    import subprocess
    import sys

    from ._multiprocess import dead_pid

    registry = PerfRegistry()
    merged = enable_multiprocess(registry, tmp_path, interval=60)
    try:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            write_worker(tmp_path, proc.pid, PerfRegistry())
            write_worker(tmp_path, dead_pid(), PerfRegistry())
            got = parse(prometheus_client.generate_latest(merged.view).decode())
        finally:
            proc.kill()
            proc.wait()
    finally:
        merged.close()
    pids = {dict(k).get("pid") for (n, k) in got if n == "process_resident_memory_bytes"}
    assert pids == {str(os.getpid()), str(proc.pid)}
    cpu = [k for (n, k) in got if n == "process_cpu_seconds_total"]
    assert len(cpu) == 2
    compacted = store.load(tmp_path / store.COMPACTED)
    assert compacted is not None
    assert not {f[0] for f in compacted.families} & store.PER_WORKER
    assert {name.removesuffix("_total") for name in STANDARD_METRICS} >= store.PER_WORKER


async def test_highr_histogram_in_shared_memory(tmp_path: Path) -> None:
    """In multi-worker mode the high-resolution histogram is counted in shared memory and the
    merged scrape shows it."""
    registry = PerfRegistry(compat="prometheus-fastapi-instrumentator")
    merged = enable_multiprocess(registry, tmp_path, interval=60)
    try:
        middleware = await traffic(registry)
        assert type(middleware._stats) is _stats.SharedHighrHttpStats
        got = await exposition(registry)
        own = {f.name for f in middleware._stats.collect()}
    finally:
        merged.close()
    assert got["http_request_duration_highr_seconds_count", ()] == 3.0
    assert got["http_requests_total", (("handler", "none"), ("method", "GET"), ("status", "4xx"))]
    assert "http_request_duration_highr_seconds" in own


async def test_openmetrics_scrape_carries_the_preset_names() -> None:
    """The OpenMetrics rendering goes through the same view: counters keep ``_total``."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    registry = PerfRegistry(compat="starlette-exporter")
    await traffic(registry)
    response = await scrape(
        metrics_app(registry, render_in_thread=False),
        headers=[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in om_parse(response.text)}  # type: ignore[no-untyped-call]
    counted = [s for s in families["starlette_requests"].samples if s.name.endswith("_total")]
    assert {s.labels["path"] for s in counted} == {"/items/{id}", "__unmatched__"}
    assert all(s.labels["app_name"] == "starlette" for s in counted)
