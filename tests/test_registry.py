"""PerfRegistry: catalogue-backed metrics, series caps, self-metrics, fail-open error reporting."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from asgi_perf import CATALOGUE, OVERFLOW, PerfRegistry
from asgi_perf.registry import (
    ERR_BUCKETS,
    ERR_KIND,
    ERR_MAX_SERIES,
    ERR_NAMESPACE,
    ERR_UNKNOWN_METRIC,
    BoundedMetric,
    ComponentKey,
)
from asgi_perf.testing import fresh_registry, sample, series


def test_owns_a_fresh_prometheus_registry_by_default() -> None:
    """Two PerfRegistry objects never share a Prometheus registry unless told to."""
    a, b = PerfRegistry(), PerfRegistry()
    assert isinstance(a.prometheus, CollectorRegistry)
    assert a.prometheus is not b.prometheus


def test_uses_the_given_prometheus_registry() -> None:
    """registry= reports into the user's CollectorRegistry."""
    mine = CollectorRegistry()
    reg = PerfRegistry(mine)
    reg.counter("cache_coalesced_total").labels("users").inc()
    assert mine.get_sample_value("cache_coalesced_total", {"cache": "users"}) == 1


@pytest.mark.parametrize("namespace", ["1abc", "a-b", "a b", 3])
def test_bad_namespace(namespace: object) -> None:
    """A namespace that is not a valid metric-name prefix raises ValueError."""
    with pytest.raises(ValueError, match=re.escape(ERR_NAMESPACE.format(namespace))):
        PerfRegistry(namespace=namespace)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_bad_series_cap(limit: object) -> None:
    """max_series_per_metric must be a positive int."""
    with pytest.raises(ValueError, match=re.escape(ERR_MAX_SERIES.format(limit))):
        PerfRegistry(max_series_per_metric=limit)  # type: ignore[arg-type]


def test_metrics_are_created_once_and_shared(registry: PerfRegistry) -> None:
    """Asking twice for a metric returns the same object (no duplicate registration)."""
    assert registry.counter("db_query_errors_total") is registry.counter("db_query_errors_total")
    h = registry.histogram("db_pool_checkout_seconds", [0.1, 1.0])
    assert registry.histogram("db_pool_checkout_seconds") is h
    assert registry.histogram("db_pool_checkout_seconds", [0.1, 1]) is h


def test_metric_errors(registry: PerfRegistry) -> None:
    """Unknown names, wrong kinds and conflicting buckets raise ValueError."""
    with pytest.raises(ValueError, match=re.escape(ERR_UNKNOWN_METRIC.format("nope_total"))):
        registry.counter("nope_total")
    with pytest.raises(
        ValueError, match=re.escape(ERR_KIND.format("cache_entries", "gauge", "counter"))
    ):
        registry.counter("cache_entries")
    registry.histogram("db_pool_checkout_seconds", [0.1, 1.0])
    with pytest.raises(ValueError, match=re.escape(ERR_BUCKETS.split("{")[0].format("x"))[:10]):
        registry.histogram("db_pool_checkout_seconds", [0.5])


def test_every_kind_is_usable(registry: PerfRegistry) -> None:
    """Counters, gauges and histograms from the catalogue work through cached children."""
    registry.counter("db_rows_total").labels("main", "INSERT").inc(3)
    registry.gauge("socketio_batch_pending").labels().set(4)
    registry.histogram("socketio_batch_items").labels().observe(7)
    assert sample(registry, "db_rows_total", {"engine": "main", "operation": "INSERT"}) == 3
    assert sample(registry, "socketio_batch_pending") == 4
    assert sample(registry, "socketio_batch_items", suffix="_sum") == 7


def test_labels_are_cached_children(registry: PerfRegistry) -> None:
    """The same label values return the same child object."""
    metric = registry.counter("cache_load_errors_total")
    assert metric.labels("a") is metric.labels("a")
    assert metric.series() == 1


def test_series_cap_folds_excess_into_overflow() -> None:
    """Past the cap, new label sets share one __overflow__ series and the excess is counted."""
    reg = fresh_registry(max_series_per_metric=3)
    metric = reg.counter("cache_load_errors_total")
    for i in range(10):
        metric.labels(f"c{i}").inc()
    assert series(reg, "cache_load_errors_total") == 4  # 3 + the overflow series
    assert sample(reg, "cache_load_errors_total", {"cache": OVERFLOW}) == 7
    overflow = {"metric": "cache_load_errors_total"}
    assert sample(reg, "asgi_perf_series_overflow_total", overflow) == 7


def test_namespace_applies_to_every_name() -> None:
    """metric_name() prefixes with the namespace; the self-metrics are prefixed too."""
    reg = PerfRegistry(namespace="app")
    assert reg.metric_name("http_requests_total") == "app_http_requests_total"
    reg.report_error("x", RuntimeError("e"))
    assert (
        reg.prometheus.get_sample_value(
            "app_asgi_perf_instrumentation_errors_total", {"component": "x"}
        )
        == 1
    )


def test_report_error_counts_every_error_and_logs_once_a_minute(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every error is counted; the log gets one record per component per minute, then a summary."""
    now = [100.0]
    monkeypatch.setattr("asgi_perf.registry.time.monotonic", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="asgi_perf"):
        for _ in range(5):
            registry.report_error("http", ValueError("bad"))
        registry.report_error("cache", KeyError("k"))
        now[0] += 61
        registry.report_error("http", ValueError("again"))
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "http"}) == 6
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "4 similar errors suppressed" in messages[2]
    assert "ValueError: again" in messages[2]


def test_report_error_never_raises(registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if counting itself fails, report_error swallows it."""

    def broken(*args: object) -> None:
        raise RuntimeError("counter broke")

    monkeypatch.setattr(BoundedMetric, "labels", broken)
    registry.report_error("http", ValueError("x"))


def test_components_are_per_registry(registry: PerfRegistry) -> None:
    """component() creates shared state once per registry; find_component() reads it."""
    key: ComponentKey[list[int]] = ComponentKey("k")
    assert registry.find_component(key) is None
    first = registry.component(key, list)
    again = registry.component(key, list)
    assert again is first
    assert registry.find_component(key) is first
    assert PerfRegistry().find_component(key) is None


def test_components_are_told_apart_by_key_not_by_name(registry: PerfRegistry) -> None:
    """Two keys are two components even under one name: nobody reaches state by spelling a string."""
    mine: ComponentKey[list[int]] = ComponentKey("same")
    theirs: ComponentKey[dict[str, int]] = ComponentKey("same")
    assert registry.component(mine, list) == []
    assert registry.component(theirs, dict) == {}
    assert repr(mine) == "ComponentKey('same')"


def test_catalogue_is_consistent() -> None:
    """Every catalogue entry: counters end in _total, histograms have buckets, names unique."""
    for name, spec in CATALOGUE.items():
        assert name == spec.name
        assert (spec.kind == "counter") == name.endswith("_total"), name
        assert (spec.kind == "histogram") == (spec.buckets is not None), name
        assert spec.help.endswith("."), name
        assert re.fullmatch(r"[a-z_]+", name), name


class _Raising:
    """A collector whose collect() raises half-way, as a broken integration would."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        yield GaugeMetricFamily("half_done", "Yielded before the failure.", value=1)
        raise RuntimeError("collector is broken")


def _names(registry: PerfRegistry) -> set[str]:
    return {family.name for family in registry.prometheus.collect()}


@pytest.mark.parametrize("via", ["PerfRegistry.register", "prometheus.register"])
def test_a_raising_collector_is_skipped_counted_and_logged_rate_limited(
    via: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A collector that raises at scrape time, registered through the PerfRegistry or straight
    into its prometheus registry, is left out of that collect (none of its families, not even
    the ones it yielded before failing) while every other family is collected; each failure is
    counted under component 'collect' and logged at most once a minute; unregister works."""
    registry = PerfRegistry()
    registry.count("jobs", 2)
    broken = _Raising()
    if via == "PerfRegistry.register":
        registry.register(broken)
    else:
        registry.prometheus.register(broken)
    with caplog.at_level("WARNING", logger="asgi_perf"):
        for _ in range(3):
            names = _names(registry)
            assert "app_events" in names
            assert "half_done" not in names
    assert broken.calls == 3
    errors = {"component": "collect"}
    assert sample(registry, "asgi_perf_instrumentation_errors_total", errors) == 3
    assert len([r for r in caplog.records if "collector is broken" in r.getMessage()]) == 1
    if via == "PerfRegistry.register":
        registry.unregister(broken)
    else:
        registry.prometheus.unregister(broken)
    _names(registry)
    assert broken.calls == 3


def test_a_raising_collector_is_contained_in_a_registry_passed_in() -> None:
    """With a prometheus registry of the application's own, collectors registered through the
    PerfRegistry are contained the same way."""
    prometheus = CollectorRegistry()
    registry = PerfRegistry(prometheus)
    broken = _Raising()
    registry.register(broken)
    registry.count("jobs", 1)
    assert "app_events" in {family.name for family in prometheus.collect()}
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "collect"}) == 1
    registry.unregister(broken)
    assert "app_events" in {family.name for family in prometheus.collect()}
    assert broken.calls == 1
