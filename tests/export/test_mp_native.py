"""Native histograms in multi-worker mode: every worker's native series merged into the scrape
(asgi_perf.export._mp_store and _multiprocess), compaction of dead workers, the protobuf
exposition of the merged view."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily

from asgi_perf import NativeHistograms, PerfMiddleware, PerfRegistry, _native_snapshots
from asgi_perf import _shared as shared
from asgi_perf._native import NativeSnapshot
from asgi_perf._native_layout import SCHEMA_BIAS
from asgi_perf._shared_native import SharedNativeHistogram
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.export import metrics_app
from asgi_perf.export._protobuf import PROTOBUF_TYPE

from .._multiprocess import parse
from .._time import FakeClock
from ._protoc import Message, decode, one
from .test_protobuf import PROMETHEUS_NATIVE_ACCEPT, _expand

pytestmark = pytest.mark.anyio

DURATION = "http_request_duration_seconds"
SERIES = (("method", "GET"), ("route", "/a"), ("status", "200"))


@pytest.fixture
def mpdir(tmp_path: Path) -> Path:
    d = tmp_path / "mp"
    d.mkdir()
    return d


def worker(
    directory: Path, native: NativeHistograms, values: list[float]
) -> tuple[SharedNativeHistogram, Any]:
    """One worker's duration series in a store of its own, and the in-process twin."""
    hist = SharedNativeHistogram(
        (0.1, 1.0),
        shared.SharedStore(directory, shared.NATIVE_CAPACITY),
        DURATION,
        "Duration.",
        list(SERIES),
        native=native,
        count_as=("http_requests", "Requests."),
    )
    reference = native.histogram((0.1, 1.0))
    for v in values:
        hist.observe(v)
        reference.observe(v)
    return hist, reference


def merged(directory: Path) -> tuple[store.Families, store.Natives]:
    families: store.Families = {}
    natives: store.Natives = {}
    assert store.merge_shared(families, directory, natives=natives) == []
    return families, natives


def spread(n: int, scale: float = 1.0) -> list[float]:
    return [scale * 1.07 ** (i % 90) / 1000 for i in range(n)]


def test_workers_at_different_schemas_merge_at_the_lowest(mpdir: Path) -> None:
    """Three workers whose series dropped to different schemas: the merged series is the
    native merge of the three (lowest schema, buckets added), its classic part their sum, and
    http_requests_total still its count."""
    one_worker = worker(mpdir, NativeHistograms(schema=3, max_buckets=200), spread(50))
    two = worker(mpdir, NativeHistograms(schema=3, max_buckets=12), spread(400, 3))
    three = worker(mpdir, NativeHistograms(schema=3, max_buckets=200), [-0.5, 0.0, 2.0])
    schemas = {h.snapshot().schema for h, _ in (one_worker, two, three)}
    assert len(schemas) == 2
    families, natives = merged(mpdir)
    want = _native_snapshots.merge([r.snapshot() for _, r in (one_worker, two, three)])
    (metric,) = [m for m in store.to_metrics(families, natives) if m.name == DURATION]
    snap = metric.native.series[SERIES]  # type: ignore[attr-defined]
    assert snap == want
    assert snap.schema == min(schemas)
    assert snap.observations == 453
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in metric.samples}
    assert values[(f"{DURATION}_count", SERIES)] == 453
    le = tuple(sorted((*SERIES, ("le", "0.1"))))
    assert values[(f"{DURATION}_bucket", le)] == sum(
        r.counts[0] for _, r in (one_worker, two, three)
    )
    requests = families["http_requests"][2][("http_requests_total", SERIES)]
    assert requests == 453


def test_without_natives_the_merge_leaves_them_out(mpdir: Path) -> None:
    """A reader that does not ask for native parts (an older caller) gets the classic part."""
    worker(mpdir, NativeHistograms(), [0.2, 0.3])
    families: store.Families = {}
    assert store.merge_shared(families, mpdir) == []
    (metric,) = [m for m in store.to_metrics(families) if m.name == DURATION]
    assert not hasattr(metric, "native")


def test_snapshot_files_carry_native_parts_both_ways() -> None:
    """A published snapshot keeps a histogram's native part; decoding checks it in full."""
    hist = NativeHistograms(schema=2).histogram(())
    for v in (0.001, 0.2, -3.0, 0.0):
        hist.observe(v)
    family = HistogramMetricFamily("lat", "L.", labels=["route"])
    _native_snapshots.add_histogram(family, ["/a"], hist)
    data = store.encode(7, "1", [family])
    snap = store.decode(data)
    assert snap.native == [("lat", (("route", "/a"),), _native_snapshots.parts_of(hist.snapshot()))]
    assert _native_snapshots.merged_snapshot([snap.native[0][2]]) == hist.snapshot()
    raw = json.loads(data)
    for bad in (
        [99, 0.0, 0, 0.0, [], []],
        [2, 0.0, 0, 0.0, [[1, -1]], []],
        [2, 0.0, "0", 0, [], []],
    ):
        raw["native"][0][2] = bad
        with pytest.raises(store.CorruptSnapshot):
            store.decode(json.dumps(raw).encode())


# -- the real HTTP path, served -------------------------------------------------------------------


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def shared_registry(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch, native: NativeHistograms, **kw: Any
) -> PerfRegistry:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mpdir))
    return PerfRegistry(native_histograms=native, **kw)


async def _get(app: Any, path: str, n: int, headers: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        for _ in range(n - 1):
            await c.get(path, headers=headers)
        return await c.get(path, headers=headers)


def histograms(body: bytes, name: str) -> dict[tuple[tuple[str, str], ...], Message]:
    families = {one(f, "name"): f for f in decode(body)}
    return {
        tuple(sorted((one(p, "name"), one(p, "value")) for p in m["label"])): one(m, "histogram")
        for m in families[name]["metric"]
    }


WORKER = """
import sys
from asgi_perf import NativeHistograms, PerfRegistry, PerfMiddleware
from asgi_perf.http._stats import HTTP_STATS

async def app(scope, receive, send):
    pass

reg = PerfRegistry(native_histograms=NativeHistograms(max_buckets=int(sys.argv[2])))
PerfMiddleware(app, registry=reg)
stats = reg.find_component(HTTP_STATS)
for i in range(int(sys.argv[1])):
    stats.record("GET", "__unmatched__", "200", 1.05 ** (i % 150) / 1000, 0.001, 1, 2)
print("counted", flush=True)
if sys.argv[3] == "wait":
    sys.stdin.read()
"""


def run_worker(mpdir: Path, n: int, max_buckets: int, kill: bool) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, str(n), str(max_buckets), "wait" if kill else "exit"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"counted\n"
        if kill:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


async def test_protobuf_of_the_merged_view_counts_every_worker(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two other workers (one SIGKILLed, one exited) and this one: the protobuf scrape's native
    histogram counts every request, its buckets are the merge of the three, and the scrapes
    after compaction never count less, then add this worker's new requests."""
    run_worker(mpdir, 300, 20, kill=True)
    run_worker(mpdir, 120, 160, kill=False)
    registry = shared_registry(mpdir, monkeypatch, NativeHistograms())
    middleware = PerfMiddleware(_ok, registry=registry)
    await _get(middleware, "/a", 5)
    app = metrics_app(registry, render_in_thread=False)
    # A bare app's requests are unmatched: the workers record under the same route.
    series = (("method", "GET"), ("route", "__unmatched__"), ("status", "200"))
    counts = []
    for _ in range(2):
        response = await _get(app, "/metrics", 1, {"accept": PROMETHEUS_NATIVE_ACCEPT})
        assert response.headers["content-type"] == PROTOBUF_TYPE
        h = histograms(response.content, DURATION)[series]
        counts.append(one(h, "sample_count"))
        positive = _expand(h["positive_span"], h["positive_delta"])
        assert sum(positive.values()) + one(h, "zero_count", 0) == one(h, "sample_count")
        assert one(h, "schema") < 3  # the killed worker's series had dropped its schema
    assert counts == [425, 425]
    # Both dead workers were compacted, their native parts with them.
    assert [p.name for p in shared.worker_files(mpdir)] == [registry.shared.keys_path.name]  # type: ignore[union-attr]
    compacted = json.loads((mpdir / store.COMPACTED).read_bytes())
    assert [n[0] for n in compacted["native"]] == [DURATION, "http_request_ttfb_seconds"]
    await _get(middleware, "/a", 3)
    response = await _get(app, "/metrics", 1, {"accept": PROMETHEUS_NATIVE_ACCEPT})
    assert one(histograms(response.content, DURATION)[series], "sample_count") == 428
    # Text: the classic buckets, as the single-process exposition shows them.
    text = parse(generate_latest(mp.enable_multiprocess(registry).view).decode())
    assert text[(f"{DURATION}_count", series)] == 428
    assert text[("http_requests_total", series)] == 428


async def test_native_only_merged_view_shows_inf_count_and_sum_in_text(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Native only: the merged text has one +Inf bucket, _count and _sum (as one process
    shows); protobuf has no classic bucket, only native ones; the serving worker's exemplar
    rides on the one bucket there is."""
    registry = shared_registry(
        mpdir,
        monkeypatch,
        NativeHistograms(classic=False),
        exemplars=lambda: {"trace_id": "abc"},
    )
    middleware = PerfMiddleware(_ok, registry=registry)
    await _get(middleware, "/a", 4)
    app = metrics_app(registry, render_in_thread=False)
    text = (await _get(app, "/metrics", 1, {"accept": "application/openmetrics-text"})).text
    buckets = [line for line in text.splitlines() if line.startswith(f"{DURATION}_bucket")]
    assert len(buckets) == 1
    assert 'le="+Inf"' in buckets[0]
    assert 'trace_id="abc"' in buckets[0]
    response = await _get(app, "/metrics", 1, {"accept": PROMETHEUS_NATIVE_ACCEPT})
    (h,) = histograms(response.content, DURATION).values()
    assert "bucket" not in h
    assert one(h, "sample_count") == 4


async def test_a_full_file_is_counted_and_the_request_still_served(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for a native run: the request is answered as always, the error counted (as for
    every shared series)."""
    registry = shared_registry(mpdir, monkeypatch, NativeHistograms())
    assert registry.shared is not None
    registry.shared.capacity = 200  # the self-metrics fit, a native series does not
    response = await _get(PerfMiddleware(_ok, registry=registry), "/a", 2)
    assert response.status_code == 200
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "http"}
    )
    assert errors == 2


def test_a_torn_read_is_taken_and_counted(mpdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series that stays mid-rewrite through every retry (its writer died inside one) is
    read as the header names it, and counted as a multi-worker error."""
    monkeypatch.setattr("asgi_perf._native_layout.READ_RETRIES", 2)
    hist, reference = worker(mpdir, NativeHistograms(), [0.5, 0.25])
    values = hist._store.values
    values[hist._slot + hist._layout.seq] = 1
    registry = shared_registry(mpdir, monkeypatch, NativeHistograms())
    view = mp.enable_multiprocess(registry, mpdir, interval=3600)
    try:
        (metric,) = [m for m in view.view.collect() if m.name == DURATION]
        snap: NativeSnapshot = metric.native.series[SERIES]  # type: ignore[attr-defined]
        assert snap == reference.snapshot()
        errors = registry.prometheus.get_sample_value(
            "asgi_perf_instrumentation_errors_total", {"component": "multiprocess"}
        )
        assert errors == 1
    finally:
        view.close()


async def test_the_instrumentator_preset_keeps_its_high_resolution_histogram(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrumentator preset with native histograms, multi-worker: the label-less
    high-resolution histogram stays classic (as in one process), the duration one is native."""
    registry = shared_registry(
        mpdir, monkeypatch, NativeHistograms(), compat="prometheus-fastapi-instrumentator"
    )
    await _get(PerfMiddleware(_ok, registry=registry), "/a", 3)
    view = mp.enable_multiprocess(registry, mpdir, interval=3600)
    try:
        metrics = {m.name: m for m in view.view.collect()}
    finally:
        view.close()
    highr = metrics["http_request_duration_highr_seconds"]
    assert not hasattr(highr, "native")
    counts = [s.value for s in highr.samples if s.name.endswith("_count")]
    assert counts == [3]
    (snap,) = metrics[DURATION].native.series.values()  # type: ignore[attr-defined]
    assert snap.observations == 3
    # This worker's own view (what its summary reads) has both too.
    own = {m.name: m for m in registry.prometheus.collect()}
    assert own["http_request_duration_highr_seconds"].samples[-1].value > 0
    assert hasattr(own[DURATION], "native")


def test_timers_keep_native_buckets_and_exemplars(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timers of a multi-worker registry with native histograms and an exemplar source: the
    merged timer histogram has native buckets, the +Inf bucket this worker's exemplar (native
    only), and the timer statistics read the native buckets."""
    registry = shared_registry(
        mpdir,
        monkeypatch,
        NativeHistograms(classic=False),
        exemplars=lambda: {"trace_id": "t1"},
    )
    clock = FakeClock(1000.0)  # each timed block takes exactly as long as the test says
    monkeypatch.setattr("asgi_perf.operations._timing.perf_counter", clock)
    for ms in (1, 2, 4, 8, 16, 32, 64, 128):
        with registry.timer("job"):
            clock.advance(ms / 1000)
    view = mp.enable_multiprocess(registry, mpdir, interval=3600)
    try:
        (metric,) = [m for m in view.view.collect() if m.name == "app_timer_duration_seconds"]
    finally:
        view.close()
    (snap,) = metric.native.series.values()  # type: ignore[attr-defined]
    assert snap.observations == 8
    (inf,) = [s for s in metric.samples if s.name.endswith("_bucket")]
    assert inf.labels["le"] == "+Inf"
    assert inf.exemplar is not None
    assert inf.exemplar.labels == {"trace_id": "t1"}
    stats = registry.stats("job")
    p99, longest = stats["p99"], stats["max"]
    assert p99 is not None
    assert longest is not None
    assert longest == pytest.approx(0.128)
    assert 0.06 < p99 <= longest


async def test_the_publish_leaves_shared_native_series_to_the_scrape(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's publish takes no snapshot of the native series every scrape reads from shared
    memory (their families are not published), and still publishes the rest; this worker's own
    view, read without the publish's request, keeps them."""
    registry = shared_registry(mpdir, monkeypatch, NativeHistograms())
    await _get(PerfMiddleware(_ok, registry=registry), "/a", 3)
    view = mp.enable_multiprocess(registry, mpdir, interval=3600)
    taken: list[object] = []
    original = SharedNativeHistogram.snapshot

    def counting(self: SharedNativeHistogram) -> NativeSnapshot:
        taken.append(self)
        return original(self)

    monkeypatch.setattr(SharedNativeHistogram, "snapshot", counting)
    try:
        assert view.publish()
        assert taken == []
        published = store.decode(view.path.read_bytes())
        names = {family[0] for family in published.families}
        assert "http_requests_in_progress" in names
        assert DURATION not in names
        assert published.native == []
        own = {m.name: m for m in registry.prometheus.collect()}
        (snap,) = own[DURATION].native.series.values()  # type: ignore[attr-defined]
        assert snap.observations == 3
        assert taken
    finally:
        view.close()


@pytest.mark.parametrize("slot", ["zero count", "pairs used", "bucket code", "schema"])
def test_a_corrupt_native_run_is_skipped_and_reported(mpdir: Path, slot: str) -> None:
    """A slot of a worker's native run holding what no writer writes (an infinity where a count
    or a bucket code goes, a schema outside -4..8): that worker's file is skipped and reported,
    the other workers' series still merge, and compaction leaves the file in place rather than
    writing a compacted file it could not read back."""
    native = NativeHistograms(classic=False)
    bad, _ = worker(mpdir, native, spread(20))
    worker(mpdir, native, spread(30))
    layout = bad._layout
    area = bad._slot + layout.area_at(0)
    where = {
        "zero count": (bad._slot + layout.zero, math.inf),
        "pairs used": (area + 1, math.inf),
        "bucket code": (area + 2, math.inf),
        "schema": (area, 40.0 + SCHEMA_BIAS),
    }[slot]
    bad._store.values[where[0]] = where[1]
    families: store.Families = {}
    natives: store.Natives = {}
    failed = store.merge_shared(families, mpdir, natives=natives)
    assert len(failed) == 1
    [(_, parts)] = natives[DURATION].items()
    assert _native_snapshots.merged_snapshot(list(parts)).observations == 30  # the good worker's
    assert store.compact(mpdir, [], shared.worker_files(mpdir)) == 1  # the good one only
    assert bad._store.keys_path.exists()  # left for every scrape to skip and report
    compacted = store.load(mpdir / store.COMPACTED)  # readable: nothing corrupt went in
    assert compacted is not None
    assert "native" in json.loads((mpdir / store.COMPACTED).read_text())
