"""Multi-worker totals are exact at every instant: real uvicorn, two workers, no waiting.

The publish interval is set to an hour, so nothing here can be explained by a snapshot: every
counter and histogram sample must come from the workers' shared-memory files as they are now.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from asgi_perf import _shared as shared

from .._multiprocess import scrape
from .._server import ServerFactory
from .._time import wait_until

pytestmark = pytest.mark.e2e

WORKERS = 2
ROUNDS = 4
SENT = 300

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def pid_total(values: Samples, name: str, **match: str) -> float:
    """The sum of ``name`` over the series of route ``/pid`` that carry ``match``."""
    want = {("route", "/pid"), *match.items()}
    return sum(v for (n, labels), v in values.items() if n == name and want <= set(labels))


async def send(base: str, n: int) -> tuple[Counter[int], int]:
    """``n`` GET /pid on fresh connections (so both workers take some): who served, body bytes."""
    served: Counter[int] = Counter()
    body_bytes = 0
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=20)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:
        sem = asyncio.Semaphore(20)

        async def one() -> None:
            nonlocal body_bytes
            async with sem:
                response = await client.get("/pid")
                served[response.json()] += 1
                body_bytes += len(response.content)

        await asyncio.gather(*(one() for _ in range(n)))
    return served, body_bytes


def start(server: ServerFactory, directory: Path) -> str:
    base = server(
        "tests.apps.scale_app:app",
        "--workers",
        str(WORKERS),
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "ASGI_PERF_MULTIPROC_INTERVAL": "3600"},
    )
    # Both workers up and recording (each has written its index file).
    wait_until(
        lambda: len(asyncio.run(send(base, 20))[0]) == WORKERS, "both workers answer requests"
    )
    return base


@pytest.mark.slow
def test_a_scrape_right_after_traffic_counts_every_request(
    server: ServerFactory, tmp_path: Path
) -> None:
    """N requests over two workers, scraped at once (no sleep), count exactly N, round after round.

    Requests, the duration histogram's buckets and count, and the response-size sum (the bodies'
    exact byte count) all match what the client saw, whichever worker serves the scrape.
    """
    directory = tmp_path / "mp"
    directory.mkdir()
    base = start(server, directory)
    before = scrape(base)
    served_by: Counter[int] = Counter()
    for _ in range(ROUNDS):
        served, body_bytes = asyncio.run(send(base, SENT))
        served_by += served
        after = scrape(base)  # immediately
        for name in ("http_requests_total", "http_request_duration_seconds_count"):
            assert pid_total(after, name) - pid_total(before, name) == SENT, name
        inf = pid_total(after, "http_request_duration_seconds_bucket", le="+Inf")
        assert inf - pid_total(before, "http_request_duration_seconds_bucket", le="+Inf") == SENT
        sizes = pid_total(after, "http_response_size_bytes_sum")
        assert sizes - pid_total(before, "http_response_size_bytes_sum") == body_bytes
        assert pid_total(after, "http_response_size_bytes_count") == pid_total(
            after, "http_requests_total"
        )
        before = after
    assert len(served_by) == WORKERS  # both workers took part


@pytest.mark.slow
def test_a_sigkilled_worker_loses_nothing_and_its_replacement_adds_up(
    server: ServerFactory, tmp_path: Path
) -> None:
    """SIGKILL a worker right after its traffic: the next scrape still counts all of it.

    The killed worker's files are summed (like prometheus_client's files of dead pids), then
    compacted; uvicorn's replacement writes files of its own, and its requests add to the total.
    """
    directory = tmp_path / "mp"
    directory.mkdir()
    base = start(server, directory)
    baseline = pid_total(scrape(base), "http_requests_total")
    served, _ = asyncio.run(send(base, SENT))
    victim = max(served, key=lambda pid: served[pid])
    os.kill(victim, signal.SIGKILL)
    assert pid_total(scrape(base), "http_requests_total") - baseline == SENT

    survivor = next(pid for pid in served if pid != victim) if len(served) > 1 else None

    def replaced() -> bool:
        answering = set(asyncio.run(send(base, 10))[0])  # traffic first: files come with it
        writers = {int(p.name.split("_")[2]) for p in shared.worker_files(directory)}
        new = answering - {victim, survivor}
        return len(answering) == WORKERS and victim not in answering and new <= writers

    wait_until(replaced, "uvicorn replaces the killed worker and the new one records")
    now = pid_total(scrape(base), "http_requests_total")
    assert now - baseline >= SENT
    served, _ = asyncio.run(send(base, SENT))
    assert pid_total(scrape(base), "http_requests_total") - now == SENT
    # The killed worker's files were folded into the compacted file, its counts kept.
    assert not any(f"_{victim}_" in p.name for p in shared.worker_files(directory))
    assert (directory / "asgi_perf_compacted.json").exists()
