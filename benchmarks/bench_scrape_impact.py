"""What a scrape costs the app: request latency under steady load, with and without scrapes.

The app (``benchmarks/_impact_app.py``) has 400 routes, every one of them served once before
measuring, so ``/metrics`` holds ~15k samples. It runs under uvicorn (one worker) in two variants
on the same code: ``before`` renders ``/metrics`` with prometheus_client's ``generate_latest``
and builds the JSON summary through ``collect()`` (the paths before the fast renderer and the
rows); ``after`` is the package as it is.

wrk loads the app below saturation at a steady pace (each connection waits ``--delay`` ms
between requests, over random routes) and reports the latency percentiles; meanwhile a scraper
fetches nothing, ``/metrics`` once a second (as Prometheus would, OpenMetrics and gzip), or
``/metrics`` and ``/metrics/summary`` once a second each. Rounds are interleaved; the table shows
medians over rounds.

Usage: ./scripts/bench scrape_impact [--rounds 3] [--seconds 10] [--connections 8] [--delay 40]
       [--routes 400]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("before", "after")
CONDITIONS = ("no scrape", "/metrics 1/s", "/metrics + summary 1/s")
#: What Prometheus 2.42 sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/r" .. math.random(0, {last}) .. "/1")
end
function delay()
  return {delay}
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Cell:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    scrape: list[float] = field(default_factory=list)
    summary: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, accept: str = "*/*") -> float:
    """Fetch ``url`` whole; the ms it took."""
    request = urllib.request.Request(url, headers={"Accept": accept, "Accept-Encoding": "gzip"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def start_server(variant: str, routes: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_VARIANT": variant,
        "BENCH_ROUTES": str(routes),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks._impact_app:app", "--port", str(port),
         "--log-level", "error", "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"the {variant} server did not start")
    for i in range(routes):  # one series per route before measuring
        get(f"{base}/r{i}/1")
    get(f"{base}/metrics", PROMETHEUS_ACCEPT)
    get(f"{base}/metrics/summary")
    return proc, base


def scraper(base: str, condition: str, stop: threading.Event, cell: Cell) -> None:
    if condition == "no scrape":
        return
    tick = time.monotonic()
    while not stop.is_set():
        cell.scrape.append(get(f"{base}/metrics", PROMETHEUS_ACCEPT))
        if condition.endswith("summary 1/s"):
            cell.summary.append(get(f"{base}/metrics/summary"))
        tick += 1.0
        stop.wait(max(0.0, tick - time.monotonic()))


def run_wrk(base: str, script: Path, seconds: int, connections: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests/s) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         base],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)\s*$", out, re.MULTILINE))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if set(found) != {"50", "99"} or rate is None:
        raise RuntimeError(out)
    return _ms(found["50"]), _ms(found["99"]), float(rate.group(1))


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--delay", type=int, default=40, help="ms each connection waits")
    parser.add_argument("--routes", type=int, default=400)
    args = parser.parse_args()
    cells = {(v, c): Cell() for v in VARIANTS for c in CONDITIONS}
    servers = {v: start_server(v, args.routes) for v in VARIANTS}
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(LUA.replace("{last}", str(args.routes - 1)).replace("{delay}", str(args.delay)))
        script = Path(f.name)
        for _ in range(args.rounds):
            for condition in CONDITIONS:
                for variant in VARIANTS:
                    base = servers[variant][1]
                    cell = cells[(variant, condition)]
                    stop = threading.Event()
                    thread = threading.Thread(target=scraper, args=(base, condition, stop, cell))
                    thread.start()
                    p50, p99, rate = run_wrk(base, script, args.seconds, args.connections)
                    stop.set()
                    thread.join()
                    cell.p50.append(p50)
                    cell.p99.append(p99)
                    cell.rate.append(rate)
        script.unlink()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    samples = get_samples(args.routes)
    print(
        f"{args.routes} routes (~{samples:,} samples), wrk -c{args.connections} with "
        f"{args.delay} ms between requests per connection, {args.seconds} s x {args.rounds} "
        "rounds (medians)"
    )
    print()
    print("| variant | scrapes | app p50 | app p99 | req/s | /metrics took | summary took |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (variant, condition), cell in cells.items():
        scrape = f"{statistics.median(cell.scrape):.0f} ms" if cell.scrape else "—"
        summary = f"{statistics.median(cell.summary):.0f} ms" if cell.summary else "—"
        print(
            f"| {variant} | {condition} | {statistics.median(cell.p50):.2f} ms | "
            f"{statistics.median(cell.p99):.2f} ms | {statistics.median(cell.rate):.0f} | "
            f"{scrape} | {summary} |"
        )


def get_samples(routes: int) -> int:
    """Samples in the app's ``/metrics`` (counted on an in-process twin of the app)."""
    os.environ["BENCH_ROUTES"] = str(routes)
    sys.path.insert(0, str(ROOT))
    from prometheus_client import generate_latest

    from asgi_perf import PerfMiddleware
    from asgi_perf.http._stats import HTTP_STATS
    from benchmarks._impact_app import registry

    PerfMiddleware(lambda s, r, se: None, registry=registry)  # type: ignore[arg-type,return-value]
    stats = registry.find_component(HTTP_STATS)
    assert stats is not None
    for i in range(routes):
        stats.record("GET", f"/r{i}/{{id}}", "200", 0.001, 0.001, 0, 2)
    text = generate_latest(registry.prometheus).decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


if __name__ == "__main__":
    main()
