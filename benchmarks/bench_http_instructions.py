"""HTTP middleware cost in CPU instructions per request, counted by valgrind's callgrind.

Wall-clock and CPU-time benchmarks on a shared machine move with whatever else runs; an
instruction count does not (the same binary and input give the same count, whatever the load).
Each case runs the app in a child process under callgrind twice, with 0 and with N requests after
the same warm-up, and the difference divided by N is the cost of one request (``_callgrind.py``).
``--no-gc`` disables the cyclic garbage collector in the child, to separate the middleware's own
code path from collector passes whose cost grows with everything alive in the process.

Usage: ./scripts/bench http_instructions [--requests 1000] [--no-gc] [--contenders bare,...]
The exemplar cases: --contenders
  "bare,asgi-perf exemplars off,asgi-perf no span,bare in span,asgi-perf in span"
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._callgrind import per_operation, require_valgrind  # noqa: E402

CASES = [(10, "/items/1", "10 routes, plain"), (200, "/items/1", "200 routes, plain")]
CASES.append((10, "/stream", "10 routes, 10-chunk stream"))


def child(contender: str, routes: int, path: str, requests: int, no_gc: bool) -> None:
    """Serve ``requests`` requests to one app in this process (run under callgrind)."""
    from benchmarks._apps import CONTENDERS, EXEMPLAR_CONTENDERS
    from benchmarks.bench_http import _receive, _send, scope_for

    if no_gc:
        gc.disable()
    app = {**CONTENDERS, **EXEMPLAR_CONTENDERS}[contender](routes)

    async def serve() -> None:
        for _ in range(20):  # warm-up: route caches, label children, lazy imports
            await app(scope_for(path), _receive, _send)
        for _ in range(requests):
            await app(scope_for(path), _receive, _send)

    asyncio.run(serve())


def per_request(contender: str, routes: int, path: str, requests: int, no_gc: bool) -> float:
    argv = [__file__, *(["--no-gc"] if no_gc else []), "--child", contender, str(routes), path]
    return per_operation(argv, requests)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--no-gc", action="store_true")
    parser.add_argument("--contenders", default="bare,asgi-perf")
    parser.add_argument("--child", nargs=4, metavar=("CONTENDER", "ROUTES", "PATH", "N"))
    args = parser.parse_args()
    if args.child:
        contender, routes, path, n = args.child
        child(contender, int(routes), path, int(n), args.no_gc)
        return
    require_valgrind()
    contenders = args.contenders.split(",")
    gc_note = "cyclic GC off" if args.no_gc else "cyclic GC on"
    print(f"python {sys.version.split()[0]}; {args.requests} requests per case; {gc_note}")
    print("instructions per request (thousands); overhead vs bare")
    print("| contender | " + " | ".join(label for _, _, label in CASES) + " |")
    print("|---|" + "---|" * len(CASES))
    bare: dict[str, float] = {}
    for contender in contenders:
        cells = []
        for routes, path, label in CASES:
            count = per_request(contender, routes, path, args.requests, args.no_gc)
            if contender == "bare":
                bare[label] = count
                cells.append(f"{count / 1000:.1f}k")
            else:
                added = count - bare.get(label, 0.0)
                cells.append(f"{count / 1000:.1f}k (+{added / 1000:.1f}k)")
        print(f"| {contender} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
