"""Real Prometheus 2.42+ scraping native histograms over the protobuf exposition.

Two Prometheus servers scrape the same app: one with ``--enable-feature=native-histograms`` (it
asks for protobuf and stores the native series) and one without (it reads the text format and
stores the classic ``_bucket`` series). The p99 each computes from the same traffic must agree
within the classic bucket holding it, and the first stores far fewer series.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import pytest

from asgi_perf.catalogue import LATENCY_BUCKETS

from .._server import ServerFactory
from .._time import wait_until
from .test_prometheus import (  # noqa: F401 - the fixture
    Prometheus,
    prometheus_bin,
    run_prometheus,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "tests.apps.native_app:app"
#: Request latencies in ms, spread over several classic buckets (each sent REPEAT times).
LATENCIES = (1, 2, 4, 8, 15, 30, 60, 90, 120, 180)
REPEAT = 20
P99_NATIVE = "histogram_quantile(0.99, sum(rate(http_request_duration_seconds[1m])))"
P99_CLASSIC = (
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))"
)


def _count(server: Prometheus, promql: str) -> float | None:
    return server.scalar(promql)


async def _traffic(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for _ in range(REPEAT):
            answers = await asyncio.gather(*(client.get(f"/sleep/{ms}") for ms in LATENCIES))
            assert all(a.status_code == 200 for a in answers)


def _classic_bucket(value: float) -> tuple[float, float]:
    lower = 0.0
    for bound in LATENCY_BUCKETS:
        if value <= bound:
            return lower, bound
        lower = bound
    return lower, math.inf


def test_native_and_classic_prometheus_agree_on_p99(
    prometheus_bin: str,  # noqa: F811 - the fixture
    tmp_path: Path,
    server: ServerFactory,
) -> None:
    """Prometheus with native histograms scrapes protobuf and stores one series per histogram;
    its p99 agrees with a classic Prometheus' p99 within the classic bucket holding it, and the
    shipped p95 recording rule answers on both."""
    app = server(APP, ready_path="/metrics")
    native_dir, classic_dir = tmp_path / "native", tmp_path / "classic"
    native_dir.mkdir()
    classic_dir.mkdir()
    with (
        run_prometheus(
            prometheus_bin, native_dir, [app], features=("native-histograms",)
        ) as native,
        run_prometheus(prometheus_bin, classic_dir, [app]) as classic,
    ):
        # One request first, so both hold the series before the traffic: rate() then sees it all.
        assert httpx.get(app + "/sleep/1", timeout=10).status_code == 200
        wait_until(
            lambda: (
                _count(native, "histogram_count(sum(http_request_duration_seconds))") == 1
                and _count(classic, "sum(http_request_duration_seconds_count)") == 1
            ),
            "both servers hold the first request",
        )
        asyncio.run(_traffic(app))
        sent = 1 + REPEAT * len(LATENCIES)
        wait_until(
            lambda: (
                _count(native, "histogram_count(sum(http_request_duration_seconds))") == sent
                and _count(classic, "sum(http_request_duration_seconds_count)") == sent
            ),
            "both servers count every request",
        )
        p99_native = native.scalar(P99_NATIVE)
        p99_classic = classic.scalar(P99_CLASSIC)
        assert p99_native is not None
        assert p99_classic is not None
        lower, upper = _classic_bucket(p99_classic)
        assert abs(p99_native - p99_classic) <= upper - lower, (p99_native, p99_classic)
        # The native server stored native series: no classic _bucket series for the histogram.
        assert native.series_names("{__name__=~'http_request_duration_seconds.*'}") == {
            "http_request_duration_seconds"
        }
        assert "http_request_duration_seconds_bucket" in classic.series_names(
            "{__name__=~'http_request_duration_seconds.*'}"
        )
        p95_rule = 'asgi_perf:http_request_duration_seconds:p95_5m{route="/sleep/{ms}"}'
        for prom in (native, classic):

            def answers(p: Prometheus = prom) -> bool:
                # An evaluation before the traffic was scraped stores NaN (a rate of 0): wait for
                # one over the traffic.
                value = p.scalar(p95_rule)
                return value is not None and not math.isnan(value)

            wait_until(answers, "the p95 rule answers")
            p95 = prom.scalar(p95_rule)
            assert p95 is not None
            # Seconds, not milliseconds. The slowest tenth of the requests slept 180 ms, so the
            # 95th percentile is at least the lower bound of the bucket holding 180 ms (0.1 s);
            # real latencies on a loaded machine may be far above what was slept (every request
            # answered within the client's 10 s timeout).
            assert 0.1 <= p95 < 10
        native_series = native.tsdb_series()
        classic_series = classic.tsdb_series()
        assert native_series < classic_series
        report = {
            "p99_native": p99_native,
            "p99_classic": p99_classic,
            "classic_bucket": (lower, upper),
            "tsdb_series_native": native_series,
            "tsdb_series_classic": classic_series,
        }
        print(f"\nnative-histogram e2e: {report}")
