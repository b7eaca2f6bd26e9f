"""Cost of the operations layer: timing a function, and building a summary / snapshot.

Per-call overhead of ``@registry.timed`` against the bare function, prometheus_client's own
``Histogram.time()`` decorator and an OpenTelemetry SDK histogram, measured side by side in one
run: interleaved rounds, the median of each. Then the absolute cost of one summary build (what
``/metrics/summary`` and each monitor sample pay) for a registry with many routes.

The summary table also times the summary built the way it was before the HTTP series were read
as rows (every figure through ``collect()``), on the same registry.

Usage: ./scripts/bench operations [--rounds 15] [--calls 20000] [--routes 10,100,400]
       [--summary-only]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as PromHistogram

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf.catalogue import LATENCY_BUCKETS
from asgi_perf.http._stats import HTTP_STATS
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


def _traffic(registry: PerfRegistry, routes: int) -> None:
    """``routes`` routes x 3 statuses of recorded requests (the HTTP store the middleware fills)."""
    PerfMiddleware(_noop, registry=registry)
    stats: Any = registry.find_component(HTTP_STATS)
    for i in range(routes):
        for status in ("200", "404", "500"):
            stats.record("GET", f"/r{i}/{{id}}", status, 0.01, 0.005, 0, 100)


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    return None


def _collect_only_summary(registry: PerfRegistry) -> Callable[[], object] | None:
    """The summary as it was built before rows: every figure read through ``collect()``
    (``None`` on a version without rows, where that is simply ``registry.summary()``)."""
    from asgi_perf.operations import _samples, _summary

    if "rows" not in inspect.signature(_samples.Samples).parameters:
        return None
    system = _summary.Summarizer.of(registry)._read_sampler.read

    def build() -> object:
        now = time.time()
        samples = _samples.Samples(registry, rows=False)
        base = _samples.Window(registry.started_at)
        reading = _samples.Reading(registry, samples, base, _samples.Window(now), now)
        return _summary._build(reading, system)

    return build


def summary_cost(routes: int, rounds: int) -> tuple[float, float | None, float]:
    """Best ms of one summary build, of one built through collect() only, and of one monitor
    sample, for ``routes`` routes."""
    registry = PerfRegistry()
    _traffic(registry, routes)
    old = _collect_only_summary(registry)
    monitor = Monitor(registry)
    build: list[float] = []
    before: list[float] = []
    sample: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        registry.summary()
        t1 = time.perf_counter()
        monitor.sample()
        t2 = time.perf_counter()
        if old is not None:
            old()
        t3 = time.perf_counter()
        build.append((t1 - t0) * 1e3)
        sample.append((t2 - t1) * 1e3)
        before.append((t3 - t2) * 1e3)
    return min(build), (min(before) if old is not None else None), min(sample)


def timing_table(rounds: int, calls: int) -> None:
    funcs = contenders()
    results: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):  # interleaved: machine noise hits every contender alike
        for name, func in funcs.items():
            results[name].append(per_call_ns(func, calls))
    bare = statistics.median(results["bare function"])
    ours = statistics.median(results["asgi-perf @registry.timed"]) - bare
    print(f"Timing a sync function ({rounds} interleaved rounds x {calls} calls, medians)")
    print()
    print("| contender | ns/call | overhead vs bare | overhead vs asgi-perf |")
    print("|---|---:|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        extra = median - bare
        ratio = "—" if name == "bare function" else f"{extra / ours:.2f}x"
        print(f"| {name} | {median:.0f} | +{extra:.0f} ns | {ratio} |")
    print()
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument(
        "--routes", type=lambda v: [int(x) for x in v.split(",")], default=[10, 100, 400]
    )
    parser.add_argument("--summary-only", action="store_true", help="skip the timing table")
    args = parser.parse_args()
    if not args.summary_only:
        timing_table(args.rounds, args.calls)
    print("Summary build and monitor sample (3 statuses per route; best of 15 rounds)")
    print()
    print("| routes | summary build | same, every figure via collect() | monitor sample |")
    print("|---:|---:|---:|---:|")
    for routes in args.routes:
        build, before, sample = summary_cost(routes, 15)
        old = "—" if before is None else f"{before:.2f} ms"
        print(f"| {routes} | {build:.2f} ms | {old} | {sample:.2f} ms |")


if __name__ == "__main__":
    main()
