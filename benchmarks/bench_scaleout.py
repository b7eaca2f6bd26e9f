"""Multi-worker mode: scrape time of the merged view, and req/s with 2 uvicorn workers vs 1.

Usage: ./scripts/bench scaleout [--rounds N]
       ./scripts/bench scaleout --mode merge [--rounds N] [--routes 10,100,400] [--native]
       ./scripts/bench scaleout --mode throughput [--rounds N] [--seconds S] [--pin-wrk CPU]
       [--close]

``scrape`` (default): each worker file holds a realistic registry (50 routes x 2 statuses of HTTP
series); time to collect the merged view with 4 live workers, then after 200 worker restarts.

``merge``: 4 real worker processes (this one and 3 children) in multi-worker mode, each with
``routes`` x 3 statuses of HTTP series in shared memory: time of the merged collect, then of
rendering the whole ``/metrics`` body from it (what a scrape of any worker costs). ``--native``:
native histograms on (10 durations per series, one native bucket each), the body in protobuf
(what Prometheus asks for with native histograms on).

``throughput``: ``examples/multiworker_app.py`` (multi-worker mode on, a fresh
PROMETHEUS_MULTIPROC_DIR each) and its bare twin without asgi-perf (``benchmarks/_scale_apps.py``),
each under uvicorn with ``--workers 1`` and ``--workers 2``, loaded by ``wrk -t1 -c16``. Also
reports the CPU the server processes and wrk used (cores busy = CPU seconds / wall seconds), and
checks that the merged ``/metrics`` counted the requests wrk completed.

Rounds are interleaved; the tables report medians.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import generate_latest

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf.export import Multiprocess, enable_multiprocess
from asgi_perf.export import _mp_store as store
from asgi_perf.export._protobuf import ProtobufRenderer
from asgi_perf.export._render import Renderers
from asgi_perf.http._stats import HTTP_STATS


def worker_registry() -> PerfRegistry:
    reg = PerfRegistry()
    PerfMiddleware(lambda s, r, se: None, registry=reg)  # type: ignore[arg-type,return-value]
    stats = reg.find_component(HTTP_STATS)
    assert stats is not None
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


def scrape_mode(rounds: int) -> None:
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
        for _ in range(rounds):
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


# -- merge: the merged view of 4 real workers in shared memory, by route count -------------------
#: --native: durations per series, one native bucket each (schema 3).
NATIVE_DURATIONS = tuple(0.001 * 1.5**k for k in range(10))


def record_routes(registry: PerfRegistry, routes: int) -> None:
    PerfMiddleware(lambda s, r, se: None, registry=registry)  # type: ignore[arg-type,return-value]
    stats = registry.find_component(HTTP_STATS)
    assert stats is not None
    durations = NATIVE_DURATIONS if registry.native is not None else (0.01,)
    for i in range(routes):
        for status in ("200", "404", "500"):
            for duration in durations:
                stats.record("GET", f"/r{i}/{{id}}", status, duration, duration / 2, 10, 100)


def merge_worker(routes: int, native: bool) -> None:
    """One worker of ``--mode merge``: its series in shared memory, its snapshot published; it
    stays alive until its stdin closes."""
    registry = PerfRegistry(native_histograms=native)
    record_routes(registry, routes)
    enable_multiprocess(registry, interval=3600).publish()
    print("ready", flush=True)
    sys.stdin.read()


def merge_cost(routes: int, rounds: int, native: bool) -> tuple[float, float, int]:
    """Best ms of the merged collect and of the whole /metrics body (protobuf with ``native``),
    4 workers, ``routes``."""
    flags = ["--native"] if native else []
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        others = [
            subprocess.Popen(
                [
                    *(sys.executable, __file__, "--mode", "merge-worker"),
                    *("--routes", str(routes), *flags),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            for _ in range(3)
        ]
        try:
            for proc in others:
                assert proc.stdout is not None
                assert proc.stdout.readline() == b"ready\n"
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            try:
                registry = PerfRegistry(native_histograms=native)
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            record_routes(registry, routes)
            mp = enable_multiprocess(registry, directory, interval=3600)
            render: Any = Renderers().for_encoder(generate_latest)
            if native:
                render = ProtobufRenderer()
            assert render is not None
            collect, whole = [], []
            samples = 0
            for _ in range(rounds):
                start = time.perf_counter()
                families = list(mp.collect())
                middle = time.perf_counter()
                render.render(mp.view)
                collect.append((middle - start) * 1000)
                whole.append((time.perf_counter() - middle) * 1000)
                samples = sum(len(f.samples) for f in families)
            mp.close()
        finally:
            for proc in others:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
    return min(collect), min(whole), samples


def merge_mode(rounds: int, route_counts: list[int], native: bool) -> None:
    kind = "native histograms, protobuf body" if native else "text body"
    print(f"Merged view of 4 workers (3 statuses per route; {kind}; best of the rounds)")
    print()
    print("| routes | samples | merged collect | whole /metrics body |")
    print("|---:|---:|---:|---:|")
    for routes in route_counts:
        collect, whole, samples = merge_cost(routes, rounds, native)
        print(f"| {routes} | {samples:,} | {collect:.1f} ms | {whole:.1f} ms |")


# -- throughput: req/s with 2 workers vs 1 ---------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
SERVERS = (
    ("bare", "benchmarks._scale_apps:app", 1),
    ("bare", "benchmarks._scale_apps:app", 2),
    ("asgi-perf", "examples.multiworker_app:app", 1),
    ("asgi-perf", "examples.multiworker_app:app", 2),
)


@dataclass
class Server:
    app: str
    workers: int
    proc: subprocess.Popen[bytes]
    port: int
    rps: list[float] = field(default_factory=list)
    server_cores: list[float] = field(default_factory=list)
    wrk_cores: list[float] = field(default_factory=list)
    busiest: list[float] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    completed: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds of the uvicorn process and of every worker it started, by pid."""
        root = psutil.Process(self.proc.pid)
        out: dict[int, float] = {}
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[proc.pid] = times.user + times.system
        return out


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (``/proc/stat``, all but idle/iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    ticks = sum(fields) - fields[3] - fields[4]
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(app: str, spec: str, workers: int, scratch: Path, stock: bool) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if app == "asgi-perf":
        directory = scratch / f"metrics-{workers}"
        directory.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if stock:
        cmd = [sys.executable, "-m", "uvicorn", spec, "--port", str(port),
               "--workers", str(workers), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    else:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "_uvicorn_workers.py"), spec, str(port),
               str(workers)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    server = Server(app, workers, proc, port)
    for _ in range(300):
        try:
            urllib.request.urlopen(server.url + "/work", timeout=1).read()
        except OSError:
            time.sleep(0.1)
        else:
            break
    # uvicorn answers once the first worker is up: wait until every worker has served a request.
    pids: set[str] = set()
    deadline = time.monotonic() + 30
    while len(pids) < workers and time.monotonic() < deadline:
        with urllib.request.urlopen(server.url + "/work", timeout=1) as response:
            pids.add(response.read().decode())
    return server


def run_wrk(
    server: Server, seconds: int, pin: str | None, close: bool = False
) -> tuple[float, int, float]:
    """(req/s, requests completed, wrk CPU seconds) of one wrk run against ``server``.

    ``close``: a new connection per request (``Connection: close``), so the kernel hands each one
    to whichever worker waits: the load spreads over the workers instead of staying on the one
    that accepted wrk's 16 keep-alive connections.
    """
    cmd = ["wrk", "-t1", "-c16", f"-d{seconds}s", server.url + "/work"]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    if pin is not None:
        cmd = ["taskset", "-c", pin, *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rps is None or count is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(rps.group(1)), int(count.group(1)), cpu


def counted_requests(server: Server) -> float:
    """http_requests_total for /work with status 200, from the merged /metrics of any worker."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = r'^http_requests_total\{method="GET",route="/work",status="200"\} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


def throughput_mode(
    rounds: int, seconds: int, pin: str | None, stock: bool, close: bool = False
) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("throughput mode needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as scratch:
        servers = [start_server(app, spec, n, Path(scratch), stock) for app, spec, n in SERVERS]
        try:
            for server in servers:
                server.completed += run_wrk(server, 2, pin, close)[1]  # warm-up
            for _ in range(rounds):
                for server in servers:
                    cpu_before, machine_before = server.cpu_seconds(), busy_cpu_seconds()
                    start = time.monotonic()
                    rps, count, wrk_cpu = run_wrk(server, seconds, pin, close)
                    wall = time.monotonic() - start
                    cpu_after, machine = server.cpu_seconds(), busy_cpu_seconds() - machine_before
                    used = {p: t - cpu_before.get(p, 0.0) for p, t in cpu_after.items()}
                    server.server_cores.append(sum(used.values()) / wall)
                    server.cpu_us.append(sum(used.values()) / count * 1e6)
                    # Whatever else ran meanwhile (other jobs on a shared machine, the kernel).
                    server.other_cores.append((machine - sum(used.values()) - wrk_cpu) / wall)
                    server.busiest.append(max(used.values()) / sum(used.values()))
                    server.wrk_cores.append(wrk_cpu / wall)
                    server.rps.append(rps)
                    server.completed += count
            time.sleep(2.5)  # every worker publishes within its 1 s interval
            checks = [(s, counted_requests(s)) for s in servers if s.app == "asgi-perf"]
        finally:
            for server in servers:
                server.proc.terminate()
            for server in servers:
                server.proc.wait()
    med = {(s.app, s.workers): statistics.median(s.rps) for s in servers}
    print(
        ("stock `uvicorn --workers N`" if stock else "uvicorn supervisor, TCP_NODELAY restored")
        + f", 1 or 2 workers, wrk -t1 -c16 -d{seconds}s"
        + (" with Connection: close" if close else "")
        + (f" pinned to CPU {pin}" if pin else "")
        + f", {rounds} interleaved rounds, {os.cpu_count()} CPUs"
    )
    print(
        "| app | workers | req/s (median) | vs 1 worker | vs bare | server CPU µs/request "
        "| server cores busy | busiest process' share | wrk cores busy | other cores busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in servers:
        one = med[(s.app, 1)]
        bare = med[("bare", s.workers)]
        print(
            f"| {s.app} | {s.workers} | {med[(s.app, s.workers)]:,.0f} | "
            f"{med[(s.app, s.workers)] / one:.2f}x | {med[(s.app, s.workers)] / bare:.2f}x | "
            f"{statistics.median(s.cpu_us):.0f} | "
            f"{statistics.median(s.server_cores):.2f} | {statistics.median(s.busiest):.0%} | "
            f"{statistics.median(s.wrk_cores):.2f} | {statistics.median(s.other_cores):.2f} |"
        )
    for s, counted in checks:
        print(
            f"asgi-perf, {s.workers} worker(s): merged /metrics counted {counted:,.0f} requests "
            f"with status 200; wrk completed {s.completed:,}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--mode", choices=("scrape", "merge", "merge-worker", "throughput"), default="scrape"
    )
    parser.add_argument(
        "--routes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10, 100, 400],
        help="route counts (merge)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="default 15 (scrape), 5 (throughput)"
    )
    parser.add_argument(
        "--native", action="store_true", help="native histograms on (merge; protobuf body)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per run (throughput)")
    parser.add_argument("--pin-wrk", default=None, help="taskset CPU list for wrk (throughput)")
    parser.add_argument(
        "--close", action="store_true", help="a new connection per request (throughput)"
    )
    parser.add_argument(
        "--stock-uvicorn",
        action="store_true",
        help="run `uvicorn --workers N` as is (Nagle delay on keep-alive; see _uvicorn_workers.py)",
    )
    args = parser.parse_args()
    if args.mode == "scrape":
        scrape_mode(args.rounds or 15)
    elif args.mode == "merge":
        merge_mode(args.rounds or 15, args.routes, args.native)
    elif args.mode == "merge-worker":
        merge_worker(args.routes[0], args.native)
    else:
        throughput_mode(
            args.rounds or 5, args.seconds, args.pin_wrk, args.stock_uvicorn, args.close
        )


if __name__ == "__main__":
    main()
