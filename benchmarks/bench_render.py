"""Cost of rendering ``/metrics``: prometheus_client's ``generate_latest`` against the fast one.

The registry is what the HTTP middleware exports after synthetic traffic: a Starlette app with
``--routes`` templated routes behind ``PerfMiddleware``, one GET per route (so one
``(method, route, status)`` series each), driven in-process. Two figures per format, in µs per
exported sample:

* **scrape**: ``collect()`` + render, what one ``/metrics`` request costs (the collectors build
  the families on every scrape, for both renderers alike);
* **render only**: the families collected once, then rendered: the part the renderer owns;
* **collect() alone**: the collectors building the families, the floor of any text renderer.

Rounds are interleaved (noise hits every contender alike); the figures are medians (``--best``:
the best round, for a machine too busy for medians to mean much). The fast
renderer is warmed by one render first: its label cache lives across scrapes, and the cold
render is reported separately.

Usage: ./scripts/bench render [--routes 10 100 400] [--rounds 15] [--best]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf.export._render import FastRenderer
from asgi_perf.testing import scrape


class Snapshot:
    """Families collected once: render-only timing, no collector work."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def _endpoint(request: Request) -> Response:
    return PlainTextResponse("ok")


def http_registry(routes: int) -> PerfRegistry:
    """The registry the middleware fills after one GET to each of ``routes`` routes."""
    registry = PerfRegistry()
    app = Starlette(routes=[Route(f"/r{i}/{{item_id}}", _endpoint) for i in range(routes)])
    app.add_middleware(PerfMiddleware, registry=registry)

    async def traffic() -> None:
        for i in range(routes):
            response = await scrape(app, f"/r{i}/42")
            assert response.status == 200, response.status

    asyncio.run(traffic())
    return registry


def per_sample_us(render: Callable[[], object], samples: int) -> float:
    start = time.perf_counter()
    render()
    return (time.perf_counter() - start) / samples * 1e6


Row = tuple[str, int, float, float, float, float, float, float]


def measure(
    routes: int, rounds: int, stat: Callable[[list[float]], float] = statistics.median
) -> list[Row]:
    registry = http_registry(routes).prometheus
    snapshot = Snapshot(list(registry.collect()))
    samples = sum(len(family.samples) for family in snapshot.families)
    rows = []
    for label, library, openmetrics in (
        ("0.0.4", generate_latest, False),
        ("OpenMetrics", om_generate_latest, True),
    ):
        fast = FastRenderer(openmetrics=openmetrics)
        cold = per_sample_us(lambda fast=fast: fast.render(snapshot), samples)  # type: ignore[misc]
        # One renderer per source, as the metrics app keeps one per registry: a renderer keeps
        # the last scrape's series in order, and alternating two sources would void that.
        scraper = FastRenderer(openmetrics=openmetrics)
        contenders: dict[str, Callable[[], object]] = {
            "collect": lambda: list(registry.collect()),
            "library scrape": lambda library=library: library(registry),  # type: ignore[misc]
            "fast scrape": lambda fast=scraper: fast.render(registry),  # type: ignore[misc]
            "library render": lambda library=library: library(snapshot),  # type: ignore[misc]
            "fast render": lambda fast=fast: fast.render(snapshot),  # type: ignore[misc]
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, render in contenders.items():
                times[name].append(per_sample_us(render, samples))
        med = {name: stat(values) for name, values in times.items()}
        rows.append(
            (
                label,
                samples,
                med["library scrape"],
                med["fast scrape"],
                med["library render"],
                med["fast render"],
                cold,
                med["collect"],
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, nargs="+", default=[10, 100, 400])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--best", action="store_true", help="the best round instead of the median (busy machine)"
    )
    args = parser.parse_args()
    stat: Callable[[list[float]], float] = min if args.best else statistics.median
    which = "best round" if args.best else "medians"
    print(f"Rendering /metrics, µs per sample ({args.rounds} interleaved rounds, {which})")
    print()
    print(
        "| routes | samples | format | generate_latest scrape | fast scrape | ratio "
        "| generate_latest render only | fast render only | ratio | fast, cold cache "
        "| collect() alone |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for routes in args.routes:
        for fmt, samples, lib_s, fast_s, lib_r, fast_r, cold, collect in measure(
            routes, args.rounds, stat
        ):
            print(
                f"| {routes} | {samples} | {fmt} | {lib_s:.2f} | {fast_s:.2f} | "
                f"{lib_s / fast_s:.1f}x | {lib_r:.2f} | {fast_r:.2f} | {lib_r / fast_r:.1f}x "
                f"| {cold:.2f} | {collect:.2f} |"
            )


if __name__ == "__main__":
    main()
