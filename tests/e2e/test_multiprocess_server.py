"""Multi-worker mode end to end: real uvicorn with several workers sharing one directory."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from asgi_perf.export import _mp_store as store

from .._multiprocess import scrape, total
from .._server import ServerFactory
from .._time import wait_until

pytestmark = pytest.mark.e2e

WORKERS = 3
SENT = 60


def worker_pids(directory: Path) -> set[int]:
    return {ids[0] for p in store.snapshot_files(directory) if (ids := store.parse_name(p))}


@pytest.mark.slow
def test_every_worker_is_counted_and_totals_survive_a_killed_worker(
    server: ServerFactory, tmp_path: Path
) -> None:
    """Requests served by any of 3 workers add up in every scrape; SIGKILL of one never lowers them.

    The killed worker's gauges (its cache entries) leave the sum until uvicorn's replacement
    publishes its own; its counters stay, folded into the compacted file.
    """
    directory = tmp_path / "mp"
    directory.mkdir()
    base = server(
        "tests.apps.scale_app:app",
        "--workers",
        str(WORKERS),
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "ASGI_PERF_MULTIPROC_INTERVAL": "0.1"},
    )
    wait_until(lambda: len(worker_pids(directory)) == WORKERS, "every worker publishes")
    with httpx.Client(base_url=base, timeout=10) as client:
        served_by = {client.get("/pid").json() for _ in range(SENT)}
    assert served_by <= worker_pids(directory)

    def requests_total() -> float:
        values = scrape(base)
        return sum(
            v
            for (name, labels), v in values.items()
            if name == "http_requests_total" and ("route", "/pid") in labels
        )

    wait_until(lambda: requests_total() == SENT, f"the merged total reaches {SENT}")
    assert total(scrape(base), "cache_entries") == 3 * WORKERS

    def process_pids() -> set[str]:
        """Whose process metrics the merged scrape shows: one series per worker, by pid."""
        return {
            dict(labels).get("pid", "")
            for (name, labels) in scrape(base)
            if name == "process_resident_memory_bytes"
        }

    assert process_pids() == {str(pid) for pid in worker_pids(directory)}

    victim = sorted(worker_pids(directory))[0]
    os.kill(victim, signal.SIGKILL)
    seen = []

    def replaced() -> bool:
        seen.append(requests_total())
        pids = worker_pids(directory)
        return victim not in pids and len(pids) == WORKERS

    wait_until(replaced, "the killed worker is compacted and replaced")
    assert all(value == SENT for value in seen), seen  # never backwards, nothing lost
    wait_until(
        lambda: total(scrape(base), "cache_entries") == 3 * WORKERS, "gauges of live workers"
    )
    # The killed worker's process series left with it (and were not compacted into a total).
    wait_until(
        lambda: process_pids() == {str(pid) for pid in worker_pids(directory)},
        "process metrics of the live workers only",
    )
    assert str(victim) not in process_pids()
    assert (directory / store.COMPACTED).exists()
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(SENT):
            client.get("/pid")
    wait_until(lambda: requests_total() == 2 * SENT, "requests after the restart add up")
