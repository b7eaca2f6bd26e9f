"""Real Prometheus 2.42+ scraping native histograms over the protobuf exposition.

Two Prometheus servers scrape the same app: one with ``--enable-feature=native-histograms`` (it
asks for protobuf and stores the native series) and one without (it reads the text format and
stores the classic ``_bucket`` series). The p99 each computes from the same traffic must agree
within the classic bucket holding it, and the first stores far fewer series.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from asgi_perf.catalogue import LATENCY_BUCKETS
from asgi_perf.export import rules_yaml

from .._server import ServerFactory, free_port
from .._time import wait_until
from .test_prometheus import Prometheus, prometheus_bin  # noqa: F401 - the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "tests.apps.native_app:app"
#: Request latencies in ms, spread over several classic buckets (each sent REPEAT times).
LATENCIES = (1, 2, 4, 8, 15, 30, 60, 90, 120, 180)
REPEAT = 20
P99_NATIVE = "histogram_quantile(0.99, sum(rate(http_request_duration_seconds[1m])))"
P99_CLASSIC = (
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))"
)


class Server(Prometheus):
    def tsdb_series(self) -> int:
        r = httpx.get(self.base + "/api/v1/status/tsdb", timeout=10)
        r.raise_for_status()
        return int(r.json()["data"]["headStats"]["numSeries"])

    def series_names(self, match: str) -> set[str]:
        r = httpx.get(self.base + "/api/v1/series", params={"match[]": match}, timeout=10)
        r.raise_for_status()
        return {s["__name__"] for s in r.json()["data"]}


@contextmanager
def run_prometheus(binary: str, directory: Path, target: str, *, native: bool) -> Iterator[Server]:
    directory.mkdir()
    (directory / "rules.yml").write_text(rules_yaml())
    (directory / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n"
        f"rule_files: ['{directory / 'rules.yml'}']\n"
        "scrape_configs:\n  - job_name: app\n"
        f"    static_configs:\n      - targets: ['{target.removeprefix('http://')}']\n"
    )
    port = free_port()
    args = [
        binary,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if native:
        args.append("--enable-feature=native-histograms")
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(base + "/-/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "Prometheus is ready")
        yield Server(base)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _count(server: Server, promql: str) -> float | None:
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
    with (
        run_prometheus(prometheus_bin, tmp_path / "native", app, native=True) as native,
        run_prometheus(prometheus_bin, tmp_path / "classic", app, native=False) as classic,
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

            def answers(p: Server = prom) -> bool:
                return p.scalar(p95_rule) is not None

            wait_until(answers, "the p95 rule answers")
            p95 = prom.scalar(p95_rule)
            assert p95 is not None
            assert 0 < p95 < 0.5
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
