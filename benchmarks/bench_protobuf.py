"""The protobuf exposition and native histograms: encoder cost, observation cost, series count.

Three tables:

1. **Encoding** ``/metrics`` as protobuf, µs per exported text sample, on the registry the HTTP
   middleware fills after one GET to each of ``--routes`` routes (the one ``bench_render`` uses):
   the hand-written encoder against the ``protobuf`` package (messages built from the same
   families, then ``SerializeToString`` with length prefixes; its message classes are made from
   ``tests/export/data/metrics.proto`` with ``protoc``), next to the fast text renderer. Render
   only: the families are collected once. Classic histograms, and native ones (classic kept).
2. **Recording**, instructions per observation (valgrind's callgrind: the count does not move
   with the machine's load, unlike a wall-clock figure on a shared machine) and ns per
   observation: ``PlainHistogram.observe`` against ``NativeHistogram.observe`` (classic + native,
   and native only), and the HTTP store's ``record()`` (what the middleware calls once per
   request) without and with native histograms. Observations cycle through 100 durations from
   0.5 ms to 0.4 s (about 30 native buckets).
3. **Series** Prometheus stores for the same traffic: every text sample with classic histograms
   (what a Prometheus without native histograms keeps), against the protobuf exposition's series
   with native histograms (each histogram one series; Prometheus 2.42 with the feature on keeps
   only the native series of a histogram that has both).

Rounds are interleaved and the figures are medians.

Usage: ./scripts/bench protobuf [--routes 10 100 400] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import NativeHistograms, PerfMiddleware, PerfRegistry
from asgi_perf._histogram import PlainHistogram
from asgi_perf._shared import NATIVE_CAPACITY, SharedPlainHistogram, SharedStore
from asgi_perf._shared_native import SharedNativeHistogram
from asgi_perf.catalogue import LATENCY_BUCKETS
from asgi_perf.export._protobuf import ProtobufRenderer
from asgi_perf.export._render import FastRenderer
from asgi_perf.http._stats import (
    HttpStats,
    NativeHttpStats,
    SharedHttpStats,
    SharedNativeHttpStats,
)
from asgi_perf.testing import scrape

PROTO = Path(__file__).resolve().parent.parent / "tests" / "export" / "data" / "metrics.proto"


class Snapshot:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def _endpoint(request: Request) -> Response:
    return PlainTextResponse("ok")


def http_registry(routes: int, native: NativeHistograms | None) -> PerfRegistry:
    registry = PerfRegistry(native_histograms=native)
    app = Starlette(routes=[Route(f"/r{i}/{{item_id}}", _endpoint) for i in range(routes)])
    app.add_middleware(PerfMiddleware, registry=registry)

    async def traffic() -> None:
        for i in range(routes):
            for item in (1, 22, 333):  # a few distinct durations per series
                response = await scrape(app, f"/r{i}/{item}")
                assert response.status == 200, response.status

    asyncio.run(traffic())
    return registry


# -- the protobuf package's encoder --------------------------------------------------------------


def package_encoder() -> Callable[[Snapshot], bytes] | None:
    """An encoder built on the ``protobuf`` package (``None`` without it or without protoc)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]
    except ImportError:
        return None
    protoc = shutil.which("protoc")
    if protoc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.pb"
        subprocess.run(
            [protoc, f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name], check=True
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    family_class: Any = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("io.prometheus.client.MetricFamily")
    )
    types = {"counter": 0, "gauge": 1, "summary": 2, "histogram": 4}

    def encode(registry: Snapshot) -> bytes:
        out: list[bytes] = []
        for metric in registry.collect():
            kind = metric.type
            fam = family_class()
            fam.name = metric.name + ("_total" if kind == "counter" else "")
            fam.help = metric.documentation
            fam.type = types[kind]
            if kind in ("histogram", "summary"):
                series: dict[tuple[Any, ...], Any] = {}
                for s in metric.samples:
                    key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                    m = series.get(key)
                    if m is None:
                        m = series[key] = fam.metric.add()
                        for k, v in key:
                            pair = m.label.add()
                            pair.name, pair.value = k, v
                    if kind == "summary":
                        if s.name.endswith("_count"):
                            m.summary.sample_count = int(s.value)
                        elif s.name.endswith("_sum"):
                            m.summary.sample_sum = s.value
                    elif s.name.endswith("_bucket"):
                        if s.labels["le"] != "+Inf":
                            b = m.histogram.bucket.add()
                            b.cumulative_count = int(s.value)
                            b.upper_bound = float(s.labels["le"])
                    elif s.name.endswith("_count"):
                        m.histogram.sample_count = int(s.value)
                    elif s.name.endswith("_sum"):
                        m.histogram.sample_sum = s.value
                native = getattr(metric, "native", None)
                if native is not None:
                    for key, snap in native.series.items():
                        h = series[key].histogram
                        h.schema = snap.schema
                        h.zero_threshold = snap.zero_threshold
                        h.zero_count = snap.zero_count
                        for offset, length in snap.positive.spans:
                            span = h.positive_span.add()
                            span.offset, span.length = offset, length
                        h.positive_delta.extend(snap.positive.deltas)
            else:
                for s in metric.samples:
                    m = fam.metric.add()
                    for k, v in sorted(s.labels.items()):
                        pair = m.label.add()
                        pair.name, pair.value = k, v
                    if kind == "counter":
                        m.counter.value = s.value
                    else:
                        m.gauge.value = s.value
            body = fam.SerializeToString()
            out.append(_VarintBytes(len(body)))
            out.append(body)
        return b"".join(out)

    return encode


def per_sample_us(render: Callable[[], object], samples: int) -> float:
    start = time.perf_counter()
    render()
    return (time.perf_counter() - start) / samples * 1e6


def encoding(routes: int, rounds: int) -> list[tuple[str, int, dict[str, float]]]:
    rows = []
    package = package_encoder()
    for label, native in (("classic", None), ("native + classic", NativeHistograms())):
        registry = http_registry(routes, native).prometheus
        snapshot = Snapshot(list(registry.collect()))
        samples = sum(len(f.samples) for f in snapshot.families)
        text = FastRenderer(openmetrics=False)
        hand = ProtobufRenderer()
        text.render(snapshot)
        hand.render(snapshot)  # warm: both keep their label caches across scrapes
        contenders: dict[str, Callable[[], object]] = {
            "text": lambda text=text, snapshot=snapshot: text.render(snapshot),  # type: ignore[misc]
            "hand": lambda hand=hand, snapshot=snapshot: hand.render(snapshot),  # type: ignore[misc]
        }
        if package is not None:
            contenders["package"] = lambda snapshot=snapshot: package(snapshot)  # type: ignore[misc]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, render in contenders.items():
                times[name].append(per_sample_us(render, samples))
        rows.append((label, samples, {name: statistics.median(v) for name, v in times.items()}))
    return rows


# -- recording -----------------------------------------------------------------------------------


def per_call_ns(call: Callable[[float], object], values: list[float]) -> float:
    start = time.perf_counter()
    for v in values:
        call(v)
    return (time.perf_counter() - start) / len(values) * 1e9


def recorders() -> dict[str, Callable[[float], object]]:
    bounds = tuple(LATENCY_BUCKETS)
    plain = PlainHistogram(bounds)
    both = NativeHistograms().histogram(bounds)
    native_only = NativeHistograms(classic=False).histogram(bounds)
    classic_store = HttpStats(PerfRegistry(), bounds, bounds)
    native_store = NativeHttpStats(PerfRegistry(), bounds, bounds, NativeHistograms())
    # Multi-worker mode: the same stores in shared memory (a scratch directory per process).
    scratch = _SCRATCH.setdefault("dir", tempfile.TemporaryDirectory())
    store = SharedStore(scratch.name, NATIVE_CAPACITY)
    shared_plain = SharedPlainHistogram(bounds, store, "p", "P.", [])
    shared_native = SharedNativeHistogram(bounds, store, "n", "N.", [], native=NativeHistograms())
    shared_classic_store = SharedHttpStats(PerfRegistry(), bounds, bounds, store)
    shared_native_store = SharedNativeHttpStats(
        PerfRegistry(), bounds, bounds, store, NativeHistograms()
    )

    def record(store: HttpStats) -> Callable[[float], object]:
        def call(v: float) -> None:
            store.record("GET", "/items/{id}", "200", v, v, 0, 2)

        return call

    return {
        "PlainHistogram.observe": plain.observe,
        "NativeHistogram.observe (classic + native)": both.observe,
        "NativeHistogram.observe (native only)": native_only.observe,
        "HttpStats.record (classic)": record(classic_store),
        "NativeHttpStats.record (classic + native)": record(native_store),
        "SharedPlainHistogram.observe (multi-worker)": shared_plain.observe,
        "SharedNativeHistogram.observe (multi-worker, classic + native)": shared_native.observe,
        "SharedHttpStats.record (multi-worker, classic)": record(shared_classic_store),
        "SharedNativeHttpStats.record (multi-worker, classic + native)": record(
            shared_native_store
        ),
    }


_SCRATCH: dict[str, tempfile.TemporaryDirectory[str]] = {}


VALUES = [0.0005 * (1.07**i) for i in range(100)]


def recording(rounds: int) -> dict[str, float]:
    values = VALUES * 1000
    contenders = recorders()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            times[name].append(per_call_ns(call, values))
    return {name: statistics.median(v) for name, v in times.items()}


# -- series --------------------------------------------------------------------------------------


def series(routes: int) -> tuple[int, int]:
    """(series with classic histograms, series with native-only histograms) for one traffic."""
    classic = http_registry(routes, None).prometheus
    text_series = sum(len(f.samples) for f in classic.collect())
    native = http_registry(routes, NativeHistograms(classic=False)).prometheus
    native_series = 0
    for family in native.collect():
        if family.type == "histogram":
            sums = [s for s in family.samples if s.name.endswith("_sum")]
            native_series += len(sums)  # one native series per histogram series
        else:
            native_series += len(family.samples)
    return text_series, native_series


def child(name: str, n: int) -> None:
    """Run under callgrind: ``n`` observations of one contender after the same warm-up."""
    call = recorders()[name]
    for v in VALUES * 10:
        call(v)
    for i in range(n):
        call(VALUES[i % 100])


def encoders(routes: int, native: bool) -> tuple[dict[str, Callable[[], object]], int]:
    registry = http_registry(routes, NativeHistograms() if native else None).prometheus
    snapshot = Snapshot(list(registry.collect()))
    samples = sum(len(f.samples) for f in snapshot.families)
    text = FastRenderer(openmetrics=False)
    hand = ProtobufRenderer()
    out: dict[str, Callable[[], object]] = {
        "text": lambda: text.render(snapshot),
        "hand": lambda: hand.render(snapshot),
    }
    package = package_encoder()
    if package is not None:
        out["package"] = lambda: package(snapshot)
    return out, samples


def encode_child(name: str, routes: int, native: bool, n: int) -> None:
    render = encoders(routes, native)[0][name]
    render()  # warm: label caches live across scrapes
    for _ in range(n):
        render()


def encode_instructions(routes: int, native: bool, n: int = 5) -> dict[str, float] | None:
    """Instructions per text sample of each encoder (render only), under callgrind."""
    if shutil.which("valgrind") is None:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._callgrind import per_operation

    names, samples = encoders(routes, native)
    flag = "1" if native else "0"
    return {
        name: per_operation([__file__, "--encode-child", name, str(routes), flag], n) / samples
        for name in names
    }


def instructions(n: int = 20_000) -> dict[str, float] | None:
    if shutil.which("valgrind") is None:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._callgrind import per_operation

    return {name: per_operation([__file__, "--child", name], n) for name in recorders()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, nargs="+", default=[10, 100, 400])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--encode-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument(
        "--instructions-routes", type=int, default=100, help="routes for the callgrind counts"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if args.encode_child:
        name, routes, native, n = args.encode_child
        encode_child(name, int(routes), native == "1", int(n))
        return
    print(f"1. Encoding /metrics, µs per text sample (render only, {args.rounds} rounds, medians)")
    print()
    print(
        "| routes | histograms | samples | text 0.0.4 (fast) | protobuf, hand-written "
        "| protobuf, `protobuf` package | package / hand-written |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for routes in args.routes:
        for label, samples, med in encoding(routes, args.rounds):
            pkg = med.get("package")
            pkg_text = f"{pkg:.2f}" if pkg is not None else "n/a"
            ratio = f"{pkg / med['hand']:.1f}x" if pkg is not None else "n/a"
            print(
                f"| {routes} | {label} | {samples} | {med['text']:.2f} | {med['hand']:.2f} "
                f"| {pkg_text} | {ratio} |"
            )
    print()
    routes = args.instructions_routes
    print(f"Instructions per text sample at {routes} routes (callgrind, render only):")
    print()
    print(
        "| histograms | text 0.0.4 (fast) | protobuf, hand-written | protobuf, `protobuf` package |"
    )
    print("|---|---:|---:|---:|")
    for label, native in (("classic", False), ("native + classic", True)):
        counts = encode_instructions(routes, native)
        if counts is None:
            print(f"| {label} | n/a (no valgrind) | | |")
            continue
        pkg = f"{counts['package']:.0f}" if "package" in counts else "n/a"
        print(f"| {label} | {counts['text']:.0f} | {counts['hand']:.0f} | {pkg} |")
    print()
    print(f"2. Recording, per observation (ns: {args.rounds} rounds, medians)")
    print()
    counts = instructions()
    print("| contender | instructions | ns |")
    print("|---|---:|---:|")
    for name, ns in recording(args.rounds).items():
        count = f"{counts[name]:.0f}" if counts is not None else "n/a (no valgrind)"
        print(f"| {name} | {count} | {ns:.0f} |")
    print()
    print("3. Series for the same traffic (3 GETs to each route)")
    print()
    print("| routes | classic histograms | native histograms (classic off) | ratio |")
    print("|---:|---:|---:|---:|")
    for routes in args.routes:
        classic, native = series(routes)
        print(f"| {routes} | {classic} | {native} | {classic / native:.1f}x |")


if __name__ == "__main__":
    main()
