"""Cost of the operations layer: timing a function, and building a summary / snapshot.

Per-call overhead of ``@registry.timed`` against the bare function, prometheus_client's own
``Histogram.time()`` decorator and an OpenTelemetry SDK histogram, measured side by side in one
run: interleaved rounds, the median of each. Then the absolute cost of one summary build (what
``/metrics/summary`` and each monitor sample pay) for a registry with many routes.

Usage: ./scripts/bench operations [--rounds 15] [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as PromHistogram

from asgi_perf import PerfRegistry
from asgi_perf.catalogue import LATENCY_BUCKETS
from asgi_perf.operations import Monitor


def work() -> int:
    return 1


def contenders() -> dict[str, Callable[[], int]]:
    registry = PerfRegistry()
    out: dict[str, Callable[[], int]] = {"bare function": work}
    out["asgi-perf @registry.timed"] = registry.timed("work")(work)
    prom = PromHistogram(
        "work_seconds", "w", ["name"], registry=CollectorRegistry(), buckets=LATENCY_BUCKETS
    )
    out["prometheus_client Histogram.time()"] = prom.labels("work").time()(work)
    try:
        from opentelemetry.sdk.metrics import MeterProvider
    except ImportError:
        print("opentelemetry-sdk not installed: skipping that contender", file=sys.stderr)
    else:
        meter = MeterProvider().get_meter("bench")
        hist = meter.create_histogram("work_seconds")
        attrs = {"name": "work"}
        perf = time.perf_counter

        def otel() -> int:
            start = perf()
            try:
                return work()
            finally:
                hist.record(perf() - start, attrs)

        out["OpenTelemetry SDK histogram"] = otel
    return out


def per_call_ns(func: Callable[[], int], calls: int) -> float:
    perf = time.perf_counter
    start = perf()
    for _ in range(calls):
        func()
    return (perf() - start) / calls * 1e9


def summary_cost(routes: int, rounds: int) -> tuple[float, float]:
    """Median ms of one summary build and one monitor sample for ``routes`` routes."""
    registry = PerfRegistry()
    from asgi_perf.http._stats import HttpStats

    stats = HttpStats(registry, LATENCY_BUCKETS, LATENCY_BUCKETS, (64.0, 1024.0, 65536.0))
    registry.register(stats)
    for i in range(routes):
        for status in ("200", "404", "500"):
            stats.record("GET", f"/r{i}/{{id}}", status, 0.01, 0.005, 0, 100)
    monitor = Monitor(registry)
    build, sample = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        registry.summary()
        t1 = time.perf_counter()
        monitor.sample()
        t2 = time.perf_counter()
        build.append((t1 - t0) * 1e3)
        sample.append((t2 - t1) * 1e3)
    return statistics.median(build), statistics.median(sample)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    funcs = contenders()
    results: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(args.rounds):  # interleaved: machine noise hits every contender alike
        for name, func in funcs.items():
            results[name].append(per_call_ns(func, args.calls))
    bare = statistics.median(results["bare function"])
    ours = statistics.median(results["asgi-perf @registry.timed"]) - bare
    print(
        f"Timing a sync function ({args.rounds} interleaved rounds x {args.calls} calls, medians)"
    )
    print()
    print("| contender | ns/call | overhead vs bare | overhead vs asgi-perf |")
    print("|---|---:|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        extra = median - bare
        ratio = "—" if name == "bare function" else f"{extra / ours:.2f}x"
        print(f"| {name} | {median:.0f} | +{extra:.0f} ns | {ratio} |")
    print()
    print("Summary build and monitor sample (3 statuses per route, medians of 15)")
    print()
    print("| routes | summary build | monitor sample |")
    print("|---:|---:|---:|")
    for routes in (10, 100, 500):
        build, sample = summary_cost(routes, 15)
        print(f"| {routes} | {build:.2f} ms | {sample:.2f} ms |")


if __name__ == "__main__":
    main()
