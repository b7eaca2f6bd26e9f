"""A benchmark client process: real ``socketio.AsyncClient``s over websocket to one server.

``bench_socketio.py`` starts a few of these per contender (``--url``, ``--clients``) and drives
them with one JSON command per line on stdin; each answers with one JSON line on stdout:

* startup: connect every client (each joins room ``all``), then ``{"ready": n}``;
* ``{"arm": true, "expected": k, "latencies": bool}``: reset the counters, answer
  ``{"armed": true}`` — every process is armed before any phase starts, so no early delivery
  is counted against the wrong phase;
* ``{"phase": "flood"|"paced", "cmd": {...}, "send": bool, "timeout": s}``: the process with
  ``send`` asks the server to run the phase (an acknowledged event); every process waits until
  its clients received ``expected`` messages (or ``timeout``) and answers
  ``{"delivered", "last", "latencies"?}`` — ``last`` is the ``time.monotonic()`` of the last
  delivery, comparable across processes on Linux;
* ``{"quit": true}``: disconnect and exit.

Every client uses :func:`asgi_perf.socketio.unbatch`, so batched payloads reach the same
per-message handler as unbatched ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import socketio

from asgi_perf.socketio import unbatch


class Receiver:
    """Counts this process's deliveries; optionally records each delivery's latency."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.latencies: list[float] | None = None
        self.last = 0.0
        self.done = asyncio.Event()

    def arm(self, expected: int, *, latencies: bool) -> None:
        self.count = 0
        self.expected = expected
        self.latencies = [] if latencies else None
        self.done.clear()

    def on_message(self, data: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.latencies is not None:
            self.latencies.append(now - data["t"])
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.done.set()


async def phase(
    clients: list[socketio.AsyncClient], receiver: Receiver, order: dict[str, Any]
) -> dict[str, Any]:
    timeout = float(order["timeout"])
    try:
        if order["send"]:
            await clients[0].call(order["phase"], order["cmd"], timeout=timeout)
        await asyncio.wait_for(receiver.done.wait(), timeout)
    except (TimeoutError, asyncio.TimeoutError, socketio.exceptions.TimeoutError):
        pass  # reported as missing deliveries
    out: dict[str, Any] = {"delivered": receiver.count, "last": receiver.last}
    if receiver.latencies is not None:
        out["latencies"] = [round(x, 6) for x in receiver.latencies]
    return out


def answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run(url: str, n: int) -> None:
    receiver = Receiver()
    clients: list[socketio.AsyncClient] = []
    loop = asyncio.get_running_loop()
    try:
        for _ in range(n):
            client = socketio.AsyncClient(reconnection=False)
            client.on("m", receiver.on_message)
            unbatch(client)
            await client.connect(url, transports=["websocket"], wait_timeout=10)
            clients.append(client)
        answer({"ready": n})
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return  # the parent is gone
            order = json.loads(line)
            if order.get("quit"):
                return
            if order.get("arm"):
                receiver.arm(int(order["expected"]), latencies=bool(order["latencies"]))
                answer({"armed": True})
                continue
            answer(await phase(clients, receiver, order))
    finally:
        for client in clients:
            await client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.clients))


if __name__ == "__main__":
    main()
