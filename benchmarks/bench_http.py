"""HTTP middleware benchmark: asgi-perf vs the peers, side by side in one run.

(a) in-process µs/request calling the ASGI app directly, 10 and 200 routes, plain and 10-chunk
    streaming; interleaved rounds, median of rounds; overhead = contender - bare.
(b) over HTTP: each app under uvicorn (1 worker, 127.0.0.1) loaded by wrk; req/s ratio to bare.
(c) /metrics render time for a registry of ~20k samples.

Usage: ./scripts/bench http [--rounds 15] [--requests 2000] [--http-seconds 5] [--skip-http]
       [--exemplars]  (asgi-perf with exemplars off, with no span, and inside a span, instead of
                       the peers; compare "asgi-perf in span" with "bare in span")
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._apps import CONTENDERS, EXEMPLAR_CONTENDERS

ROOT = Path(__file__).resolve().parent.parent


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def time_requests(app: Any, path: str, n: int) -> float:
    """Mean CPU seconds per request over n sequential in-process requests.

    Thread CPU time, not wall time: on a shared machine the time the OS gives other processes
    would otherwise land on whichever contender happened to be running.
    """
    perf = time.thread_time
    start = perf()
    for _ in range(n):
        # A fresh scope per request, as a server gives: routers write into it.
        await app(scope_for(path), _receive, _send)
    return (perf() - start) / n


async def in_process(routes: int, path: str, rounds: int, requests: int) -> dict[str, float]:
    apps = {name: make(routes) for name, make in CONTENDERS.items()}
    for app in apps.values():  # warm up: build middleware stacks, fill caches
        await time_requests(app, path, 200)
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():  # interleaved: noise hits every contender alike
            gc.collect()
            samples[name].append(await time_requests(app, path, requests))
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_wrk(url: str, seconds: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(out)
    return float(match.group(1))


def over_http(seconds: float, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_ROUTES": "10"}
    try:
        for name, factory in CONTENDERS.items():
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", f"benchmarks._apps:{factory.__name__}",
                 "--factory", "--port", str(port), "--log-level", "error", "--no-access-log"],
                cwd=ROOT, env=env,
            )  # fmt: skip
            procs[name] = (proc, f"http://127.0.0.1:{port}/items/42")
        for _, url in procs.values():
            port = int(url.split(":")[2].split("/")[0])
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", port), 0.2):
                        break
                except OSError:
                    time.sleep(0.1)
        for _, url in procs.values():
            run_wrk(url, 1)  # warm-up
        for _ in range(rounds):
            for name, (_, url) in procs.items():
                results[name].append(run_wrk(url, seconds))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait()
    return {name: statistics.median(v) for name, v in results.items()}


def render_times(rounds: int) -> dict[str, tuple[int, float]]:
    """Median ms to render /metrics after traffic that creates ~20k asgi-perf samples."""
    from prometheus_client import REGISTRY, generate_latest

    from benchmarks._apps import asgi_perf, instrumentator, starlette_exporter

    out: dict[str, tuple[int, float]] = {}
    routes = 400
    for name, make in (
        ("asgi-perf", asgi_perf),
        ("prometheus-fastapi-instrumentator", instrumentator),
        ("starlette-exporter", starlette_exporter),
    ):
        app = make(routes)

        async def traffic(app: Any = app) -> None:
            for i in range(routes - 2):
                for _ in range(3):
                    await app(scope_for(f"/r{i}/7"), _receive, _send)

        asyncio.run(traffic())
        registry = _registry_of(app, name, REGISTRY)
        text = generate_latest(registry)
        n = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            generate_latest(registry)
            times.append(time.perf_counter() - start)
        out[name] = (n, statistics.median(times) * 1000)
    return out


def _registry_of(app: Any, name: str, default: Any) -> Any:
    if name == "asgi-perf":
        stack = app.build_middleware_stack()
        while not hasattr(stack, "registry"):
            stack = stack.app
        return stack.registry.prometheus
    if name == "prometheus-fastapi-instrumentator":
        for mw in app.user_middleware:
            registry = mw.kwargs.get("registry")
            if registry is not None:
                return registry
    return default


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--http-seconds", type=float, default=5)
    parser.add_argument("--http-rounds", type=int, default=3)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--exemplars", action="store_true")
    args = parser.parse_args()
    if args.exemplars:
        CONTENDERS.clear()
        CONTENDERS.update(EXEMPLAR_CONTENDERS)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")

    print("\n(a) in-process, µs/request (median of interleaved rounds); overhead vs bare")
    cases = [(10, "/items/42"), (200, "/items/42"), (10, "/stream")]
    table: dict[str, dict[str, float]] = {}
    for routes, path in cases:
        label = f"{routes} routes, {'10-chunk stream' if path == '/stream' else 'plain'}"
        table[label] = asyncio.run(in_process(routes, path, args.rounds, args.requests))
    header = "| contender | " + " | ".join(table) + " |"
    print(header)
    print("|---" * (len(table) + 1) + "|")
    for name in CONTENDERS:
        cells = []
        for results in table.values():
            bare = results["bare"]
            value = results[name]
            cells.append(f"{value:.1f}" if name == "bare" else f"{value:.1f} (+{value - bare:.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")

    if not args.skip_http:
        if shutil.which("wrk") is None:
            print("\n(b) skipped: wrk not installed (apt-get install wrk)")
        else:
            print(
                f"\n(b) uvicorn, 1 worker, wrk -t1 -c16, {args.http_seconds:g}s x "
                f"{args.http_rounds} interleaved rounds"
            )
            rps = over_http(args.http_seconds, args.http_rounds)
            print("| contender | req/s | ratio to bare |\n|---|---|---|")
            for name, value in rps.items():
                print(f"| {name} | {value:,.0f} | {value / rps['bare']:.2f}x |")

    if args.exemplars:
        return
    print("\n(c) /metrics render (generate_latest), 398 routes x 3 requests of traffic")
    print("| contender | samples | ms/render |\n|---|---|---|")
    for name, (n, ms) in render_times(max(5, args.rounds)).items():
        print(f"| {name} | {n:,} | {ms:.1f} |")


if __name__ == "__main__":
    main()
