"""Real Prometheus scraping a 4-worker uvicorn app: totals, rate, quantiles, rules, a killed worker."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._multiprocess import poll
from ._server import ROOT, ServerFactory, free_port
from .conftest import need_service
from .test_multiprocess_server import worker_pids

WORKERS = 4
SENT = 200


@pytest.fixture
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        need_service("prometheus", "install the Debian package 'prometheus'")
    assert path is not None
    return path


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, promql: str) -> list[Any]:
        r = httpx.get(self.base + "/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        result: list[Any] = r.json()["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(
    prometheus_bin: str, tmp_path: Path, server: ServerFactory
) -> Iterator[tuple[Prometheus, str, Path]]:
    """An app on 4 workers (multi-worker mode) and a Prometheus scraping it every 0.5 s."""
    directory = tmp_path / "mp"
    directory.mkdir()
    app = server(
        "tests.apps.scale_app:app",
        "--workers",
        str(WORKERS),
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "ASGI_PERF_MULTIPROC_INTERVAL": "0.1"},
    )
    rules = subprocess.run(
        [sys.executable, "-m", "asgi_perf", "rules"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    (tmp_path / "rules.yml").write_bytes(rules)
    target = app.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n"
        f"rule_files: ['{tmp_path / 'rules.yml'}']\n"
        "scrape_configs:\n  - job_name: app\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(base + "/-/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, "Prometheus is ready")
        yield Prometheus(base), app, directory
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_prometheus_sees_every_worker_and_totals_never_go_back(
    prometheus: tuple[Prometheus, str, Path],
) -> None:
    """sum(http_requests_total) equals what was sent across 4 workers, through a killed worker.

    rate() and histogram_quantile() answer, the shipped rules load healthy, and resets() over the
    run is 0: killing a worker never made a counter go backwards.
    """
    prom, app, directory = prometheus
    total = 'sum(http_requests_total{route="/pid"})'
    with httpx.Client(base_url=app, timeout=10) as client:
        for _ in range(SENT // 2):
            assert client.get("/pid").status_code == 200
    poll(lambda: prom.scalar(total) == SENT // 2, "Prometheus counts the first half")
    victim = sorted(worker_pids(directory))[0]
    os.kill(victim, signal.SIGKILL)
    # A new client: a kept-alive connection to the killed worker would be reset.
    with httpx.Client(base_url=app, timeout=10) as client:
        for _ in range(SENT // 2):
            assert client.get("/pid").status_code == 200
    poll(lambda: prom.scalar(total) == SENT, "Prometheus counts every request")
    assert prom.scalar('sum(resets(http_requests_total{route="/pid"}[5m]))') == 0
    rate = prom.scalar('sum(rate(http_requests_total{route="/pid"}[1m]))')
    assert rate is not None
    assert rate > 0
    p95 = prom.scalar(
        "histogram_quantile(0.95, sum by (le) "
        '(rate(http_request_duration_seconds_bucket{route="/pid"}[1m])))'
    )
    assert p95 is not None
    assert not math.isnan(p95)
    assert p95 > 0
    # Live workers' gauges: 3 cache entries each, the replacement included.
    poll(
        lambda: prom.scalar('sum(cache_entries{cache="words"})') == 3 * WORKERS,
        "gauges summed over live workers",
    )
    groups = httpx.get(prom.base + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    assert all(rule["health"] != "err" for rule in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] == "err"
    ]
