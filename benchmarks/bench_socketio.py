"""Socket.IO benchmark: per-message ``sio.emit`` (bare, and with the hook) vs the asgi-perf Batcher.

One uvicorn process per contender (1 worker, 127.0.0.1) runs ``benchmarks._socketio_app``; each
has its own client processes (``benchmarks._socketio_clients``: real ``socketio.AsyncClient``s
over websocket, ``--clients`` in all), connected once. Rounds are interleaved — every round runs
every contender, in rotating order — and the table shows medians over rounds:

* flood: the server emits as fast as it can; delivered messages/s (one message reaching one
  client), from the request until the last delivery;
* server CPU per 1k delivered messages (user + system time of the server process, read from
  ``/proc/<pid>/stat`` before and after each phase), in the flood and in the paced phase;
* paced: the server emits ``--rate`` messages/s to all clients for ``--seconds``; end-to-end p50
  and p99 latency over every delivery (each payload carries its emit time).

The run is bounded: every wait has a timeout, and past ``--deadline`` seconds no new phase starts.

Usage: ./scripts/bench socketio [--rounds 3] [--clients 20] [--rate 1500] [--seconds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("bare", "hook", "batcher")
LABELS = {
    "bare": "per-message `sio.emit`",
    "hook": "per-message `sio.emit` + `instrument_socketio`",
    "batcher": "`Batcher` (+ hook)",
}
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from ``/proc/<pid>/stat`` (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Contender:
    """One server process and its client processes."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BENCH_SIO_MODE": mode,
            "BENCH_SIO_MAX_ITEMS": str(args.max_items),
            "BENCH_SIO_MAX_DELAY": str(args.max_delay),
        }
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "benchmarks._socketio_app:app",
             "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--no-access-log", "--timeout-graceful-shutdown", "1"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        self.clients: list[subprocess.Popen[str]] = []
        self.flood_n = 0
        self.flood: list[tuple[float, float, float]] = []  # (msg/s, CPU ms per 1k, server busy)
        self.paced: list[tuple[float, float, float]] = []  # (p50 ms, p99 ms, CPU ms per 1k)
        self.missing = 0

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"{self.mode} server exited with {self.server.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.mode} server did not start within {timeout}s")

    def connect(self, clients: int, procs: int) -> None:
        for i in range(procs):
            n = clients // procs + (1 if i < clients % procs else 0)
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._socketio_clients",
                 "--url", self.url, "--clients", str(n)],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            self.clients.append(proc)
        self.sizes = [self._read(proc)["ready"] for proc in self.clients]

    @staticmethod
    def _write(proc: subprocess.Popen[str], order: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(order) + "\n")
        proc.stdin.flush()

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process exited with {proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def phase(
        self, name: str, cmd: dict[str, Any], per_client: int, timeout: float, *, latencies: bool
    ) -> tuple[int, int, float, float, list[float]]:
        """Run one phase: (expected, delivered, seconds, server CPU seconds, latencies)."""
        for i, proc in enumerate(self.clients):
            arm = {"arm": True, "expected": per_client * self.sizes[i], "latencies": latencies}
            self._write(proc, arm)
        for proc in self.clients:
            self._read(proc)
        cpu0 = cpu_seconds(self.server.pid)
        start = time.monotonic()
        for i, proc in enumerate(self.clients):
            self._write(proc, {"phase": name, "cmd": cmd, "send": i == 0, "timeout": timeout})
        answers = [self._read(proc) for proc in self.clients]
        cpu = cpu_seconds(self.server.pid) - cpu0
        expected = per_client * sum(self.sizes)
        delivered = sum(a["delivered"] for a in answers)
        end = max(a["last"] for a in answers) if delivered == expected else time.monotonic()
        lat = [x for a in answers for x in a.get("latencies", ())]
        self.missing += expected - delivered
        return expected, delivered, end - start, cpu, lat

    def close(self) -> None:
        for proc in self.clients:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write('{"quit": true}\n')
                    proc.stdin.flush()
                except OSError:
                    pass
        for proc in self.clients:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.server.terminate()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()


def calibrate(c: Contender, args: argparse.Namespace) -> None:
    """Size the flood so it lasts about ``--flood-seconds`` for this contender."""
    probe = 100 if c.mode != "batcher" else 2000
    _, delivered, seconds, _, _ = c.phase(
        "flood", {"n": probe, "pad": args.pad}, probe, args.timeout, latencies=False
    )
    per_client_rate = delivered / max(seconds, 1e-3) / sum(c.sizes)
    c.flood_n = max(probe, min(200_000, int(per_client_rate * args.flood_seconds)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20, help="websocket clients per server")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes per server")
    parser.add_argument("--flood-seconds", type=float, default=1.0, help="target flood length")
    parser.add_argument("--rate", type=float, default=1500, help="paced emits/s (to all clients)")
    parser.add_argument("--seconds", type=float, default=1, help="paced phase length")
    parser.add_argument("--pad", type=int, default=32, help="payload padding, characters")
    parser.add_argument("--max-items", type=int, default=100, help="Batcher max_items")
    parser.add_argument("--max-delay", type=float, default=0.01, help="Batcher max_delay, s")
    parser.add_argument("--timeout", type=float, default=15, help="bound on each phase's wait")
    parser.add_argument("--deadline", type=float, default=60, help="start no phase after this")
    args = parser.parse_args()
    began = time.monotonic()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
        f"{args.clients} websocket clients in {args.client_procs} processes per server; "
        f"Batcher(max_items={args.max_items}, max_delay={args.max_delay})"
    )
    contenders = [Contender(mode, args) for mode in CONTENDERS]
    try:
        for c in contenders:
            c.wait_ready()
            c.connect(args.clients, args.client_procs)
        for c in contenders:
            calibrate(c, args)
        done = 0
        for r in range(args.rounds):
            if time.monotonic() - began > args.deadline:
                print(f"deadline reached after {done} rounds")
                break
            # Rotate the order: no contender always runs first (or right after the heaviest).
            for c in contenders[r % 3 :] + contenders[: r % 3]:
                cmd = {"n": c.flood_n, "pad": args.pad}
                _, delivered, seconds, cpu, _ = c.phase(
                    "flood", cmd, c.flood_n, args.timeout, latencies=False
                )
                c.flood.append((delivered / seconds, cpu / delivered * 1e6, cpu / seconds))
                cmd = {"rate": args.rate, "seconds": args.seconds, "pad": args.pad}
                per_client = int(args.rate * args.seconds)
                _, delivered, _, cpu, lat = c.phase(
                    "paced", cmd, per_client, args.seconds + args.timeout, latencies=True
                )
                c.paced.append(
                    (
                        percentile(lat, 0.50) * 1e3,
                        percentile(lat, 0.99) * 1e3,
                        cpu / max(delivered, 1) * 1e6,
                    )
                )
            done += 1
    finally:
        for c in contenders:
            c.close()
    report(contenders, args, done, time.monotonic() - began)


def report(contenders: list[Contender], args: argparse.Namespace, rounds: int, took: float) -> None:
    med = statistics.median
    bare = next(c for c in contenders if c.mode == "bare")
    bare_rate = med(r for r, _, _ in bare.flood)
    bare_cpu = med(x for _, x, _ in bare.flood)
    bare_paced_cpu = med(x for _, _, x in bare.paced)
    print(
        f"\n{rounds} interleaved rounds in {took:.0f}s; medians. Flood: as fast as the server "
        f"emits. Paced: {args.rate:g} emits/s x {args.clients} clients "
        f"= {args.rate * args.clients:,.0f} deliveries/s for {args.seconds:g}s."
    )
    print(
        "| contender | flood delivered msg/s | ratio | server busy "
        "| server CPU ms / 1k msgs (flood) | paced p50 ms | paced p99 ms "
        "| server CPU ms / 1k msgs (paced) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in contenders:
        rate = med(r for r, _, _ in c.flood)
        cpu = med(x for _, x, _ in c.flood)
        busy = med(b for _, _, b in c.flood)
        p50 = med(p for p, _, _ in c.paced)
        p99 = med(p for _, p, _ in c.paced)
        pcpu = med(x for _, _, x in c.paced)
        print(
            f"| {LABELS[c.mode]} | {rate:,.0f} | {rate / bare_rate:.2f}x | {busy:.0%} "
            f"| {cpu:.2f} ({cpu / bare_cpu:.2f}x) | {p50:.1f} | {p99:.1f} "
            f"| {pcpu:.2f} ({pcpu / bare_paced_cpu:.2f}x) |"
        )
    print("\nserver busy: server CPU seconds per wall second in the flood (1.0 = one core).")
    for c in contenders:
        rates = ", ".join(f"{r:,.0f}" for r, _, _ in c.flood)
        print(
            f"{c.mode}: flood n={c.flood_n} emits; per-round msg/s: {rates}; "
            f"missing deliveries (timeouts): {c.missing}"
        )


if __name__ == "__main__":
    main()
