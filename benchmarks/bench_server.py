"""Server-bound HTTP benchmark: what each contender costs a real, saturated server.

uvicorn (1 worker, httptools + uvloop, access log off) serves a 54-route JSON API
(``benchmarks/_apps.py:server_app``) pinned to core 0; wrk (``-t1 -c16``, keep-alive) loads it
from core 1, cycling 1,000 distinct ids on ``/items/{id}``, then the 10-chunk ``/export`` stream.
Every contender's server runs at once (idle ones cost nothing); rounds are interleaved, the order
rotating each round, and every figure is the median of rounds.

Why the server must be CPU-bound: when the server idles between requests, a middleware's cost
fills idle time and req/s barely moves, so a ratio to bare says little. The server's CPU time per
request (utime + stime from ``/proc/<pid>/stat`` over the measured window, divided by the requests
served) is what the middleware adds whatever the load; the utilisation column says whether the
req/s ratio means anything (it should be ~95% or more).

Usage:
  ./scripts/bench server [--rounds 5] [--duration 10] [--stream-duration 5]
                         [--contenders bare,asgi-perf,minimal,...] [--before REF] [--no-gc]
  ./scripts/bench server --profile asgi-perf [--duration 20]   # py-spy sample of the server
  ./scripts/bench server --allocations [--requests 2000]  # instructions, allocations (callgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_CORE = "0"
CLIENT_CORE = "1"
ITEM_IDS = 1000
DEFAULT_CONTENDERS = (
    "bare,asgi-perf,minimal,prometheus-fastapi-instrumentator,starlette-exporter,opentelemetry-asgi"
)
MIN_UTILISATION = 0.95
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """
local paths = {%(paths)s}
local requests = {}
for i, path in ipairs(paths) do requests[i] = wrk.format("GET", path) end
local n = 0
request = function()
  n = n %% #requests + 1
  return requests[n]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%.1f %%.1f\\n", summary.requests,
    summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Run:
    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    cpu_seconds: float
    wall_seconds: float
    gc: dict[str, Any] | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6

    @property
    def utilisation(self) -> float:
        return self.cpu_seconds / self.wall_seconds


@dataclass
class Server:
    contender: str
    port: int
    proc: subprocess.Popen[bytes]
    gc_path: str | None = None
    gc_seq: int = 0
    runs: dict[str, list[Run]] = field(default_factory=lambda: collections.defaultdict(list))

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all its threads) so far."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def gc_totals(self) -> dict[str, Any] | None:
        """The collector's totals so far (the server writes them on SIGUSR1)."""
        if self.gc_path is None:
            return None
        self.gc_seq += 1
        os.kill(self.proc.pid, signal.SIGUSR1)
        for _ in range(200):
            try:
                totals: dict[str, Any] = json.loads(Path(self.gc_path).read_text())
            except (OSError, ValueError):
                totals = {}
            if totals.get("seq") == self.gc_seq:
                return totals
            time.sleep(0.01)
        raise RuntimeError(f"{self.contender}: no GC totals from the server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_command(port: int) -> list[str]:
    return [
        "taskset", "-c", SERVER_CORE, sys.executable, "-m", "uvicorn", "benchmarks._apps:served",
        "--factory", "--host", "127.0.0.1", "--port", str(port), "--http", "httptools",
        "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def server_env(contender: str, before: str | None, gc_path: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_CONTENDER": contender}
    if before:
        env["BENCH_BEFORE_PATH"] = before
    if gc_path:
        env["BENCH_GC_STATS"] = gc_path
    return env


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def start(contender: str, before: str | None, gc_dir: str | None) -> Server:
    port = free_port()
    gc_path = os.path.join(gc_dir, f"{port}.json") if gc_dir else None
    proc = subprocess.Popen(
        uvicorn_command(port), cwd=ROOT, env=server_env(contender, before, gc_path)
    )
    wait_listening(port, proc)
    return Server(contender, port, proc, gc_path)


def write_scripts(directory: str) -> dict[str, str]:
    scripts = {}
    for case, paths in (
        ("items", [f"/items/{i}" for i in range(1, ITEM_IDS + 1)]),
        ("stream", ["/export"]),
    ):
        path = os.path.join(directory, f"{case}.lua")
        Path(path).write_text(WRK_SCRIPT % {"paths": ", ".join(f'"{p}"' for p in paths)})
        scripts[case] = path
    return scripts


def wrk(server: Server, script: str, seconds: int, connections: int) -> Run:
    gc_before = server.gc_totals()
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    done = subprocess.run(
        ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "--timeout", "10s", "-s", script, f"http://127.0.0.1:{server.port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    t1, cpu1 = time.monotonic(), server.cpu_seconds()
    gc_after = server.gc_totals()
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", done.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    requests, micros, errors, non_2xx = (int(found.group(i)) for i in range(1, 5))
    gc = None
    if gc_before is not None and gc_after is not None:
        gc = {
            "seconds": gc_after["seconds"] - gc_before["seconds"],
            "passes": [a - b for a, b in zip(gc_after["passes"], gc_before["passes"], strict=True)],
        }
    return Run(
        requests, micros / 1e6, errors, non_2xx,
        float(found.group(5)) / 1000, float(found.group(6)) / 1000,
        cpu1 - cpu0, t1 - t0, gc,
    )  # fmt: skip


def prepare_before(ref: str, directory: str) -> str:
    """``ref``'s asgi_perf package, renamed asgi_perf_before, under ``directory``."""
    archive = subprocess.run(
        ["git", "archive", ref, "asgi_perf"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    os.rename(os.path.join(directory, "asgi_perf"), os.path.join(directory, "asgi_perf_before"))
    return directory


def summarise(servers: list[Server], case: str) -> list[dict[str, Any]]:
    bare = next((s for s in servers if s.contender == "bare"), None)
    rows = []
    for server in servers:
        runs = server.runs[case]
        row: dict[str, Any] = {
            "contender": server.contender,
            "rps": statistics.median(r.rps for r in runs),
            "p50": statistics.median(r.p50_ms for r in runs),
            "p99": statistics.median(r.p99_ms for r in runs),
            "cpu_us": statistics.median(r.cpu_us for r in runs),
            "util": statistics.median(r.utilisation for r in runs),
            "errors": sum(r.errors + r.non_2xx for r in runs),
        }
        if bare is not None:
            # Paired per round (same minute of machine noise), then the median of the pairs.
            pairs = list(zip(runs, bare.runs[case], strict=True))
            row["ratio"] = statistics.median(r.rps / b.rps for r, b in pairs)
            row["delta_us"] = statistics.median(r.cpu_us - b.cpu_us for r, b in pairs)
        gcs = [r.gc for r in runs if r.gc is not None]
        if gcs:
            row["gc_share"] = statistics.median(
                g["seconds"] / r.cpu_seconds for g, r in zip(gcs, runs, strict=True)
            )
            row["gc_per_1k"] = statistics.median(
                sum(g["passes"]) / r.requests * 1000 for g, r in zip(gcs, runs, strict=True)
            )
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    gc = "gc_share" in rows[0]
    print(f"\n{title}\n")
    head = (
        "| contender | req/s | ratio to bare | p50 | p99 | server CPU/request | Δ vs bare "
        "| server CPU |"
    )
    print(head + (" GC passes/1k req | GC share of CPU |" if gc else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if gc else ""))
    for row in rows:
        bare = row["contender"] == "bare"
        cells = [
            row["contender"],
            f"{row['rps']:,.0f}",
            "1.00×" if bare else f"{row.get('ratio', float('nan')):.2f}×",  # noqa: RUF001
            f"{row['p50']:.2f} ms",
            f"{row['p99']:.2f} ms",
            f"{row['cpu_us']:.1f} µs",
            "" if bare else f"{row.get('delta_us', float('nan')):+.1f} µs",
            f"{row['util']:.0%}",
        ]
        if gc:
            cells += [f"{row['gc_per_1k']:.1f}", f"{row['gc_share']:.1%}"]
        print("| " + " | ".join(cells) + " |")
    low = [r["contender"] for r in rows if r["util"] < MIN_UTILISATION]
    if low:
        print(
            f"\nWARNING: server CPU below {MIN_UTILISATION:.0%} for {', '.join(low)}: the server "
            "was not saturated (another process on core 0, or the client too slow), so req/s "
            "ratios understate the cost; read CPU/request."
        )
    failed = [r["contender"] for r in rows if r["errors"]]
    if failed:
        print(f"\nWARNING: socket errors or non-2xx responses for {', '.join(failed)}")


def benchmark(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("needs wrk and taskset (apt-get install wrk util-linux)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores: the server on one, the load generator on the other")
    contenders = args.contenders.split(",")
    work = tempfile.mkdtemp(prefix="asgi-perf-bench-server-")
    servers: list[Server] = []
    try:
        before = None
        if args.before:
            before = prepare_before(args.before, work)
            contenders.insert(1, "asgi-perf before")
        scripts = write_scripts(work)
        gc_dir = work if args.gc else None
        servers = [start(c, before, gc_dir) for c in contenders]
        for server in servers:  # warm-up: route caches, label children, first allocations
            wrk(server, scripts["items"], 2, args.connections)
            if args.stream_duration:
                wrk(server, scripts["stream"], 1, args.connections)
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for server in order:
                run = wrk(server, scripts["items"], args.duration, args.connections)
                server.runs["items"].append(run)
                if args.stream_duration:
                    stream = wrk(server, scripts["stream"], args.stream_duration, args.connections)
                    server.runs["stream"].append(stream)
                print(
                    f"round {r + 1}/{args.rounds} {server.contender}: {run.rps:,.0f} req/s, "
                    f"{run.cpu_us:.1f} µs CPU/request, CPU {run.utilisation:.0%}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server in servers:
            server.proc.send_signal(signal.SIGINT)
        for server in servers:
            server.proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    import starlette
    import uvicorn

    versions = f"uvicorn {uvicorn.__version__}, starlette {starlette.__version__}"
    print(
        f"python {platform.python_version()}, {versions}, {os.cpu_count()} cores, "
        f"{datetime.date.today()}; "
        f"`./scripts/bench server --rounds {args.rounds} --duration {args.duration} "
        f"--stream-duration {args.stream_duration}"
        + (f" --before {args.before}" if args.before else "")
        + ("" if args.gc else " --no-gc")
        + "`"
    )
    print(
        f"uvicorn 1 worker (--http httptools --loop uvloop, no access log) on core {SERVER_CORE}; "
        f"wrk -t1 -c{args.connections} keep-alive on core {CLIENT_CORE}; "
        f"{args.rounds} interleaved rounds, medians; ratio and Δ paired per round"
    )
    print_table(
        f"**`GET /items/{{id}}`**, {ITEM_IDS:,} distinct ids, {args.duration} s per run",
        summarise(servers, "items"),
    )
    if args.stream_duration:
        print_table(
            f"**`GET /export`**, 10-chunk StreamingResponse, {args.stream_duration} s per run",
            summarise(servers, "stream"),
        )


# -- where the time goes: py-spy on the running server ----------------------------------------


def package_of(frame: str) -> str:
    """``function (path:line)`` -> a short owner: asgi_perf, starlette, uvicorn, asyncio, ..."""
    found = re.search(r"\((.*):\d+\)$", frame)
    path = found.group(1) if found else frame
    for name in ("asgi_perf", "starlette", "uvicorn", "prometheus_client", "anyio", "benchmarks"):
        if f"/{name}/" in path or path.startswith(f"{name}/"):
            return name
    if "/asyncio/" in path:
        return "asyncio"
    return "python stdlib" if "/lib/python" in path else path


def profile(args: argparse.Namespace) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    work = tempfile.mkdtemp(prefix="asgi-perf-bench-profile-")
    port = free_port()
    out = os.path.join(work, "samples.txt")
    # py-spy starts the server, so it may read its memory without extra privileges.
    command = [spy, "record", "--rate", str(args.rate), "--format", "raw", "-o", out, "--function"]
    command += ["--nonblocking", "--", *uvicorn_command(port)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=server_env(args.profile, None, None), stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port, proc)
        scripts = write_scripts(work)
        case = "stream" if args.profile_stream else "items"
        server = Server(args.profile, port, proc)
        subprocess.run(
            ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{args.connections}",
             f"-d{args.duration}s", "-s", scripts[case], f"http://127.0.0.1:{server.port}"],
            capture_output=True, check=True,
        )  # fmt: skip
    finally:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        for pid in children.read_text().split() if children.exists() else ():
            os.kill(int(pid), signal.SIGINT)
        proc.wait(timeout=60)
    leaf: collections.Counter[str] = collections.Counter()
    owners: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(out).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if any(frame.startswith("_find_and_load") for frame in frames):
            continue  # start-up (imports), not serving
        total += n
        leaf[frames[-1]] += n
        owners[package_of(frames[-1])] += n
        for frame in set(frames):
            if "asgi_perf/" in frame:
                inclusive[frame] += n
    shutil.rmtree(work, ignore_errors=True)
    print(f"{total} samples of the server at {args.rate} Hz, `{args.profile}`, {case}")
    print("\nself time by owner of the running frame\n\n| owner | share |\n|---|---:|")
    for owner, n in owners.most_common(12):
        print(f"| {owner} | {n / total:.1%} |")
    print(f"\ntop {args.top} functions by self time\n\n| function | share |\n|---|---:|")
    for frame, n in leaf.most_common(args.top):
        print(f"| `{frame}` | {n / total:.1%} |")
    if inclusive:
        print("\nasgi_perf frames on the stack (inclusive)\n\n| frame | share |\n|---|---:|")
        for frame, n in inclusive.most_common(args.top):
            print(f"| `{frame}` | {n / total:.1%} |")


# -- allocations per request: callgrind counts the allocator's calls -------------------------

ALLOCATORS = ("_PyObject_Malloc", "_PyObject_Calloc", "_PyObject_Realloc")


def allocation_child(contender: str, path: str, requests: int) -> None:
    """Serve ``requests`` in-process requests to the server app (run under callgrind)."""
    os.environ["BENCH_CONTENDER"] = contender
    from benchmarks._apps import served
    from benchmarks.bench_http import _receive, _send, scope_for

    app = served()

    async def serve() -> None:
        for i in range(50):
            await app(scope_for(path.replace("{id}", str(i + 1))), _receive, _send)
        for i in range(requests):
            await app(scope_for(path.replace("{id}", str(i % ITEM_IDS + 1))), _receive, _send)

    asyncio.run(serve())


def callgrind_counts(argv: list[str]) -> tuple[int, int]:
    """Instructions executed and allocator calls made by ``python argv...`` under callgrind."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
             sys.executable, *argv],
            capture_output=True, check=True, text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
        )  # fmt: skip
        collected = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
        if collected is None:
            raise RuntimeError("callgrind printed no instruction count:\n" + done.stderr[-2000:])
        names: dict[str, str] = {}
        calls: collections.Counter[str] = collections.Counter()
        callee = ""
        for line in Path(out.name).read_text(errors="replace").splitlines():
            # "fn=(id) name" / "cfn=(id) name" the first time, "cfn=(id)" after; each
            # "calls=N ..." line follows the "cfn=" of the function it calls.
            if line.startswith(("fn=", "cfn=")):
                ref, _, name = line.partition("=")[2].partition(" ")
                if name:
                    names[ref] = name
                if line.startswith("cfn="):
                    callee = names.get(ref, ref)
            elif line.startswith("calls=") and callee in ALLOCATORS:
                calls[callee] += int(line[6:].split()[0])
        return int(collected.group(1)), sum(calls.values())


def allocations(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package 'valgrind')")
    contenders = args.contenders.split(",")
    env_note = ""
    if args.before:
        os.environ["BENCH_BEFORE_PATH"] = prepare_before(
            args.before, tempfile.mkdtemp(prefix="asgi-perf-bench-before-")
        )
        contenders.insert(1, "asgi-perf before")
        env_note = f", asgi-perf before = {args.before}"
    print(
        f"per request, in-process, counted by callgrind over {args.requests} requests after a "
        f"warm-up (the difference between {args.requests} and 0 requests){env_note}\n"
    )
    print(
        "| contender | /items/{id} instructions | allocations "
        "| /export (10 chunks) instructions | allocations |\n|---|---:|---:|---:|---:|"
    )
    bare: dict[str, tuple[float, float]] = {}
    for contender in contenders:
        cells = [contender]
        for path in ("/items/{id}", "/export"):
            argv = [__file__, "--allocation-child", contender, path]
            instructions0, allocs0 = callgrind_counts([*argv, "0"])
            instructions1, allocs1 = callgrind_counts([*argv, str(args.requests)])
            per = (
                (instructions1 - instructions0) / args.requests,
                (allocs1 - allocs0) / args.requests,
            )
            base = bare.setdefault(path, per)
            if contender == "bare":
                cells += [f"{per[0] / 1000:.1f}k", f"{per[1]:.0f}"]
            else:
                cells += [
                    f"{per[0] / 1000:.1f}k ({(per[0] - base[0]) / 1000:+.1f}k)",
                    f"{per[1]:.0f} ({per[1] - base[1]:+.0f})",
                ]
        print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds per /items run")
    parser.add_argument("--stream-duration", type=int, default=5, help="0: no stream runs")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--contenders", default=DEFAULT_CONTENDERS)
    parser.add_argument("--before", metavar="REF", help="also run asgi-perf as of this git ref")
    parser.add_argument(
        "--no-gc", dest="gc", action="store_false", help="do not time the collector's passes"
    )
    parser.add_argument("--profile", metavar="CONTENDER", help="sample one server with py-spy")
    parser.add_argument("--profile-stream", action="store_true", help="profile /export")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--allocations", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--allocation-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allocation_child:
        contender, path, n = args.allocation_child
        allocation_child(contender, path, int(n))
    elif args.profile:
        profile(args)
    elif args.allocations:
        allocations(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
