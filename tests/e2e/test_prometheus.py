"""Real Prometheus scraping a 4-worker uvicorn app (totals, rate, quantiles, rules, a killed
worker) and two Socket.IO nodes sharing Redis (per-node gauges summed in PromQL)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from asgi_perf.socketio import unbatch

from .._server import ROOT, ServerFactory, free_port
from .._time import eventually, wait_until
from ..conftest import need_service
from .test_multiprocess_server import worker_pids

pytestmark = pytest.mark.e2e

WORKERS = 4
SENT = 200
SOCKETIO_APP = "tests.apps.socketio_app:app"


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

    def tsdb_series(self) -> int:
        """Series in the TSDB's head block."""
        r = httpx.get(self.base + "/api/v1/status/tsdb", timeout=10)
        r.raise_for_status()
        return int(r.json()["data"]["headStats"]["numSeries"])

    def series_names(self, match: str) -> set[str]:
        r = httpx.get(self.base + "/api/v1/series", params={"match[]": match}, timeout=10)
        r.raise_for_status()
        return {s["__name__"] for s in r.json()["data"]}


@contextmanager
def run_prometheus(
    binary: str, tmp_path: Path, targets: list[str], *, features: tuple[str, ...] = ()
) -> Iterator[Prometheus]:
    """A Prometheus on 127.0.0.1 scraping ``targets`` every 0.5 s, with the shipped rules loaded
    (and ``--enable-feature=`` each of ``features``)."""
    rules = subprocess.run(
        [sys.executable, "-m", "asgi_perf", "rules"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    (tmp_path / "rules.yml").write_bytes(rules)
    hosts = ", ".join(f"'{t.removeprefix('http://')}'" for t in targets)
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n"
        f"rule_files: ['{tmp_path / 'rules.yml'}']\n"
        "scrape_configs:\n  - job_name: app\n"
        f"    static_configs:\n      - targets: [{hosts}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *(f"--enable-feature={feature}" for feature in features),
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

        wait_until(ready, "Prometheus is ready")
        yield Prometheus(base)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    with run_prometheus(prometheus_bin, tmp_path, [app]) as prom:
        yield prom, app, directory


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
    wait_until(lambda: prom.scalar(total) == SENT // 2, "Prometheus counts the first half")
    victim = sorted(worker_pids(directory))[0]
    os.kill(victim, signal.SIGKILL)
    # A new client: a kept-alive connection to the killed worker would be reset.
    with httpx.Client(base_url=app, timeout=10) as client:
        for _ in range(SENT // 2):
            assert client.get("/pid").status_code == 200
    wait_until(lambda: prom.scalar(total) == SENT, "Prometheus counts every request")
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
    wait_until(
        lambda: prom.scalar('sum(cache_entries{cache="words"})') == 3 * WORKERS,
        "gauges summed over live workers",
    )
    groups = httpx.get(prom.base + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    assert all(rule["health"] != "err" for rule in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] == "err"
    ]


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.service("redis")
async def test_two_socketio_nodes_are_summed_in_promql(
    prometheus_bin: str, tmp_path: Path, server: ServerFactory, redis_url: str
) -> None:
    """Two uvicorn nodes share Redis through AsyncRedisManager; Prometheus scrapes both.

    Node A holds 2 clients and node B 1: the per-node gauges sum to 3 in PromQL, one batched
    broadcast from A reaches every client exactly once, in order, and a client leaving B shows in
    the sum.
    """
    env = {"SIO_REDIS_URL": redis_url, "SIO_CHANNEL": f"asgi-perf-test-{uuid.uuid4().hex}"}
    node_a = server(SOCKETIO_APP, env=env, ready_path="/metrics")
    node_b = server(SOCKETIO_APP, env=env, ready_path="/metrics")
    received: list[list[int]] = [[], [], []]
    clients = []
    with run_prometheus(prometheus_bin, tmp_path, [node_a, node_b]) as prom:
        try:
            for i, base in enumerate((node_a, node_a, node_b)):
                client = socketio.AsyncClient(reconnection=False)
                client.on("tick", received[i].append)
                unbatch(client)
                await client.connect(base, transports=["websocket"], wait_timeout=10)
                clients.append(client)

            async def scalar(promql: str) -> float | None:
                return await asyncio.to_thread(prom.scalar, promql)

            async def connections(expected: float) -> bool:
                return await scalar('sum(socketio_connections{namespace="/"})') == expected

            await eventually(lambda: connections(3), "sum of both nodes' connection gauges is 3")
            per_node = await asyncio.to_thread(
                prom.query, 'sum by (instance) (socketio_connections{namespace="/"})'
            )
            assert sorted(float(r["value"][1]) for r in per_node) == [1.0, 2.0]
            assert await clients[0].call("stream", {"n": 30}, timeout=30) == "done"

            async def delivered() -> bool:
                return all(len(r) >= 30 for r in received)

            await eventually(delivered, "the broadcast reaches every client")
            assert received == [list(range(30))] * 3

            async def batches() -> bool:
                return await scalar('sum(socketio_batches_total{event="tick"})') == 1

            await eventually(batches, "one batch, counted on the emitting node only")
            await clients[2].disconnect()
            await eventually(lambda: connections(2), "a client leaving node B lowers the sum")
        finally:
            for client in clients:
                await client.disconnect()
