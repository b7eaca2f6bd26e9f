"""The JSON summary's percentiles from native buckets when a histogram keeps no classic ones
(``NativeHistograms(classic=False)``), in one process and in a multi-worker worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_perf import NativeHistograms, PerfMiddleware, PerfRegistry
from asgi_perf._histogram import quantile
from asgi_perf._native import NativeHistograms as Config
from asgi_perf._native_snapshots import quantile_points, subtract
from asgi_perf.http._stats import HTTP_STATS, HttpStats
from asgi_perf.operations import Summarizer

#: 200 request durations from 2 ms to ~0.9 s, spread over many buckets.
DURATIONS = [0.002 * 1.031**i for i in range(200)]


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    pass


def stats_of(registry: PerfRegistry) -> HttpStats:
    PerfMiddleware(_app, registry=registry)
    found = registry.find_component(HTTP_STATS)
    assert found is not None
    return found


def true_quantile(q: float, values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


@pytest.fixture(params=["single", "multi-worker"])
def mode(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "multi-worker":
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return str(request.param)


def test_native_only_percentiles_come_from_the_native_buckets(mode: str) -> None:
    """Native only: the route's p50/p95/p99 and the overall p95 are within the native bucket
    width (9 % at schema 3) of the true quantiles, not the +Inf bucket's nothing."""
    registry = PerfRegistry(native_histograms=NativeHistograms(classic=False))
    stats = stats_of(registry)
    for d in DURATIONS:
        stats.record("GET", "/a", "200", d, None, 0, 0)
    summary = registry.summary()
    (route,) = summary["http"]["routes"]
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        got = route[key]  # type: ignore[literal-required]
        assert got is not None
        assert got == pytest.approx(true_quantile(q, DURATIONS), rel=0.1), key
    assert summary["http"]["p95"] == route["p95"]


def test_the_window_subtracts_native_buckets(mode: str) -> None:
    """The next window's percentiles are those of its own requests only, across a schema drop
    between the two readings."""
    registry = PerfRegistry(native_histograms=NativeHistograms(classic=False, max_buckets=20))
    stats = stats_of(registry)
    for d in DURATIONS[:100]:
        stats.record("GET", "/a", "200", d, None, 0, 0)
    summarizer = Summarizer.of(registry)
    summarizer.build(advance=True)
    late = [0.5 + i / 1000 for i in range(100)]
    for d in late:
        stats.record("GET", "/a", "200", d, None, 0, 0)
    (route,) = summarizer.build()["http"]["routes"]
    assert route["window_requests"] == 100
    assert route["p50"] is not None
    assert route["p50"] > 0.4  # the early, fast requests are not in this window


def test_classic_buckets_still_answer_when_kept() -> None:
    """With classic buckets kept, the summary's percentiles are exactly the classic-only ones."""
    both = PerfRegistry(native_histograms=True)
    classic = PerfRegistry()
    for registry in (both, classic):
        stats = stats_of(registry)
        for d in DURATIONS:
            stats.record("GET", "/a", "200", d, None, 0, 0)
    keys = ("requests", "avg", "p50", "p95", "p99")
    (got,) = both.summary()["http"]["routes"]
    (want,) = classic.summary()["http"]["routes"]
    assert [got[k] for k in keys] == [want[k] for k in keys]  # type: ignore[literal-required]


def test_subtract_and_points_agree_with_the_definition() -> None:
    """subtract() leaves the later observations; quantile_points() interpolates inside the
    populated bucket holding the rank."""
    early = Config(schema=2).histogram(())
    later = Config(schema=2, max_buckets=3).histogram(())
    for v in (1.0, 2.0, 3.0):
        early.observe(v)
        later.observe(v)
    for v in (100.0, 200.0, -1.0, 0.0):
        later.observe(v)
    delta = subtract(later.snapshot(), early.snapshot())
    assert delta.observations == 4
    assert delta.zero_count == 1
    assert delta.schema == later.snapshot().schema
    points = quantile_points(delta)
    assert points[-1][1] == 4
    assert -1.5 < quantile(0.2, points) < 0
    assert 64 <= quantile(0.99, points) <= 256
