"""Helpers for the multi-worker tests: real live and dead processes, snapshot files, scrapes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from asgi_perf import PerfRegistry
from asgi_perf.export import _mp_store as store


@contextmanager
def live_process() -> Iterator[int]:
    """The pid of a real process that stays alive for the block."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    """The pid of a real process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_worker(directory: Path, pid: int, registry: PerfRegistry, token: str = "1") -> Path:
    """Publish ``registry`` as worker ``pid`` would (same encoder, same atomic write)."""
    path = directory / store.snapshot_name(pid, token.zfill(20))
    store.write_atomic(path, store.encode(pid, token.zfill(20), registry.prometheus.collect()))
    return path


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in values.items() if n == name)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse(httpx.get(base + "/metrics", timeout=10).text)
