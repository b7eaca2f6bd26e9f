"""Scrape time of the merged multi-worker view: 4 live workers, then after 200 worker restarts.

Usage: ./scripts/bench scaleout [--rounds N]
Each worker file holds a realistic registry (50 routes x 2 statuses of HTTP series). Rounds are
interleaved; the table reports medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import generate_latest

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf import _mp_store as store
from asgi_perf._http import HttpStats
from asgi_perf.multiprocess import Multiprocess, enable_multiprocess


def worker_registry() -> PerfRegistry:
    reg = PerfRegistry()
    PerfMiddleware(lambda s, r, se: None, registry=reg)  # type: ignore[arg-type,return-value]
    stats: HttpStats = reg.find_component("http")
    for route in range(50):
        for status in ("200", "404"):
            stats.record("GET", f"/r{route}", status, 0.01, 0.005, 10, 100)
    return reg


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def setup(directory: Path, restarts: int) -> Multiprocess:
    reg = worker_registry()
    mp = enable_multiprocess(reg, directory, interval=3600)
    live = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(3)
    ]
    data = store.encode(0, "0", worker_registry().prometheus.collect())
    for proc in live:
        store.write_atomic(directory / store.snapshot_name(proc.pid, "1".zfill(20)), data)
    gone = dead_pid()
    for n in range(restarts):
        store.write_atomic(directory / store.snapshot_name(gone, str(n).zfill(20)), data)
    mp._live = live  # type: ignore[attr-defined]
    return mp


def scrape_ms(mp: Multiprocess, compact: bool) -> float:
    start = time.perf_counter()
    metrics = list(mp.collect(compact=compact))
    assert metrics
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, list[float]] = {
        "4 workers": [],
        "4 + 200 dead, no compaction": [],
        "4 + 200 dead, compacted": [],
    }
    single = worker_registry()
    results["1 process, no multi-worker mode"] = []
    with (
        tempfile.TemporaryDirectory() as a,
        tempfile.TemporaryDirectory() as b,
        tempfile.TemporaryDirectory() as c,
    ):
        fresh = setup(Path(a), 0)
        churned = setup(Path(b), 200)
        compacted = setup(Path(c), 200)
        scrape_ms(compacted, True)  # the first scrape folds the 200 files
        for _ in range(args.rounds):
            start = time.perf_counter()
            generate_latest(single.prometheus)
            results["1 process, no multi-worker mode"].append((time.perf_counter() - start) * 1000)
            results["4 workers"].append(scrape_ms(fresh, True))
            results["4 + 200 dead, no compaction"].append(scrape_ms(churned, False))
            results["4 + 200 dead, compacted"].append(scrape_ms(compacted, True))
        for mp in (fresh, churned, compacted):
            for proc in mp._live:  # type: ignore[attr-defined]
                proc.kill()
            mp.close()
    base = statistics.median(results["4 workers"])
    print("| scenario | collect (ms, median) | vs 4 workers |")
    print("|---|---|---|")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
