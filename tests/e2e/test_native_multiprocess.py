"""Native histograms across real uvicorn workers, scraped by a real Prometheus 2.42.

Three workers record the HTTP duration histogram with native buckets in shared memory; a
Prometheus with ``--enable-feature=native-histograms`` scrapes the merged view over protobuf.
Its native histogram counts every request sent, whichever worker served it; protoc's decoding of
a protobuf scrape and the text scrape promtool checks agree on that count; a SIGKILLed worker's
requests stay in the total, which never goes backwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .._multiprocess import parse
from .._server import ServerFactory
from .._time import wait_until
from ..export._protoc import decode, one
from ..export.test_protobuf import PROMETHEUS_NATIVE_ACCEPT
from .test_prometheus import (  # noqa: F401 - the fixture
    Prometheus,
    prometheus_bin,
    run_prometheus,
)
from .test_promtool_all import promtool_check

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 3
ROUTE = "/pid/{ms}"
#: Request latencies in ms (each sent once per round).
LATENCIES = (0, 1, 2, 4, 8, 15, 30, 60)
COUNT = f'histogram_count(sum(http_request_duration_seconds{{route="{ROUTE}"}}))'


async def send(base: str, rounds: int) -> Counter[int]:
    """``rounds`` x LATENCIES requests on fresh connections (so every worker takes some)."""
    served: Counter[int] = Counter()
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=16)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def one_request(ms: int) -> None:
            response = await client.get(f"/pid/{ms}")
            assert response.status_code == 200
            served[response.json()] += 1

        for _ in range(rounds):
            await asyncio.gather(*(one_request(ms) for ms in LATENCIES))
    return served


def scraped_count(base: str) -> tuple[int, float]:
    """The route's request count from a protobuf scrape (decoded by protoc) and from a text
    scrape, summed over statuses."""
    body = httpx.get(
        base + "/metrics", headers={"accept": PROMETHEUS_NATIVE_ACCEPT}, timeout=10
    ).content
    families = {one(f, "name"): f for f in decode(body)}
    native = 0
    for metric in families["http_request_duration_seconds"]["metric"]:
        labels = {one(p, "name"): one(p, "value") for p in metric["label"]}
        if labels["route"] == ROUTE:
            h = one(metric, "histogram")
            assert one(h, "schema") == 3
            native += one(h, "sample_count")
    text = parse(httpx.get(base + "/metrics", timeout=10).text)
    classic = sum(
        v
        for (name, labels), v in text.items()
        if name == "http_request_duration_seconds_count" and ("route", ROUTE) in labels
    )
    return native, classic


def test_prometheus_counts_every_request_of_every_worker_natively(
    prometheus_bin: str,  # noqa: F811 - the fixture
    promtool: str,
    tmp_path: Path,
    server: ServerFactory,
) -> None:
    """Three workers, one native histogram: Prometheus' histogram_count equals the requests sent
    across the workers, before and after one is SIGKILLed; protoc and the text scrape (which
    promtool passes) agree with it."""
    directory = tmp_path / "mp"
    directory.mkdir()
    base = server(
        "tests.apps.native_app:app",
        "--workers",
        str(WORKERS),
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "ASGI_PERF_MULTIPROC_INTERVAL": "3600"},
        ready_path="/metrics",
    )
    served: Counter[int] = Counter()

    def all_workers_answer() -> bool:
        served.update(asyncio.run(send(base, 2)))
        return len(served) == WORKERS

    wait_until(all_workers_answer, "every worker answers")
    sent = sum(served.values())
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    with run_prometheus(prometheus_bin, prom_dir, [base], features=("native-histograms",)) as prom:
        wait_until(lambda: prom.scalar(COUNT) == sent, "Prometheus holds the first requests")
        more = asyncio.run(send(base, 25))
        served.update(more)
        sent += sum(more.values())
        assert len(more) == WORKERS
        wait_until(lambda: prom.scalar(COUNT) == sent, "Prometheus counts every request")
        assert scraped_count(base) == (sent, sent)
        # Stored as a native histogram: no classic _bucket series.
        assert prom.series_names(
            "{__name__=~'http_request_duration_seconds.*', route='/pid/{ms}'}"
        ) == {"http_request_duration_seconds"}
        code, lines = promtool_check(promtool, httpx.get(base + "/metrics", timeout=10).content)
        assert code == 0, lines

        victim = max(more, key=lambda pid: more[pid])
        os.kill(victim, signal.SIGKILL)
        assert scraped_count(base) == (sent, sent)  # at once, from the killed worker's file

        after = asyncio.run(send(base, 10))
        assert victim not in after
        sent += sum(after.values())
        wait_until(lambda: prom.scalar(COUNT) == sent, "the total keeps growing after the kill")
        assert scraped_count(base) == (sent, sent)
        # Never backwards in Prometheus either, over the whole run.
        (series,) = prom.query(f"({COUNT})[2m:500ms]")
        counts = [float(value) for _, value in series["values"]]
        assert counts == sorted(counts)
        # The subquery's steps are aligned to 500 ms: its last one may precede the last scrape.
        assert counts[-1] <= sent
