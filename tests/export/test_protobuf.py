"""The protobuf exposition: protoc reads what the families say; negotiation by Accept header."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from asgi_perf import NativeHistograms, PerfMiddleware, PerfRegistry, metrics_app
from asgi_perf._native import NativeHistogram
from asgi_perf._native_snapshots import add_histogram
from asgi_perf.catalogue import LATENCY_BUCKETS
from asgi_perf.export._protobuf import (
    PROTOBUF_TYPE,
    ProtobufRenderer,
    native_fields,
    parse_accept,
    varint,
    zigzag,
)
from asgi_perf.export._render import RenderError

from ._protoc import Message, decode, labels, one, split_delimited
from .test_render import Families, _everything, registries

pytestmark = pytest.mark.anyio

#: What Prometheus 2.42 sends with ``--enable-feature=native-histograms``.
PROMETHEUS_NATIVE_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;"
    "q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
#: What it sends without the feature.
PROMETHEUS_TEXT_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

TYPES = {
    "counter": "COUNTER",
    "gauge": "GAUGE",
    "info": "GAUGE",
    "stateset": "GAUGE",
    "unknown": "UNTYPED",
    "summary": "SUMMARY",
    "histogram": "HISTOGRAM",
    "gaugehistogram": "GAUGE_HISTOGRAM",
}


def _v(value: Any) -> str:
    return repr(float(value))


def _ts(sample: Any) -> int | None:
    return None if sample.timestamp is None else int(float(sample.timestamp) * 1000)


def _exemplar(exemplar: Exemplar | None) -> Any:
    if exemplar is None:
        return None
    ts = None if exemplar.timestamp is None else float(exemplar.timestamp)
    return (sorted(exemplar.labels.items()), _v(exemplar.value), ts)


def expected(families: Iterable[Metric]) -> list[Any]:
    """What the exposition must carry, read off the families as the Go client maps them."""
    out = []
    for f in families:
        base = f.name
        name = {"counter": base + "_total", "info": base + "_info"}.get(f.type, base)
        metrics: list[Any] = []
        if f.type in ("histogram", "gaugehistogram", "summary"):
            grouped: dict[Any, dict[str, Any]] = {}
            gauge = f.type == "gaugehistogram"
            for s in f.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                entry = grouped.setdefault(key, {"buckets": [], "ts": _ts(s)})
                if s.name == base + "_bucket":
                    if s.labels["le"] != "+Inf":
                        ub = _v(s.labels["le"])
                        entry["buckets"].append((ub, _v(s.value), _exemplar(s.exemplar)))
                    else:
                        # Without a _count sample (prometheus_client drops _count and _sum when a
                        # bound is negative) the +Inf bucket is the count.
                        entry.setdefault("count", _v(s.value))
                elif s.name == base + ("_gcount" if gauge else "_count"):
                    entry["count"] = _v(s.value)
                elif s.name == base + ("_gsum" if gauge else "_sum"):
                    entry["sum"] = _v(s.value)
            for key, e in grouped.items():
                metrics.append((list(key), e.get("count"), e.get("sum"), e["buckets"], e["ts"]))
        else:
            for s in f.samples:
                if s.name.endswith("_created"):
                    continue
                ex = _exemplar(s.exemplar) if f.type == "counter" else None
                metrics.append((sorted(s.labels.items()), _v(s.value), _ts(s), ex))
        out.append((name, f.documentation, TYPES[f.type], metrics))
    return out


def _decoded_exemplar(message: Message | None) -> Any:
    if message is None:
        return None
    ts = one(message, "timestamp")
    seconds = None if ts is None else one(ts, "seconds", 0) + one(ts, "nanos", 0) / 1e9
    return (sorted(labels(message)), _v(one(message, "value", 0.0)), seconds)


def _count(message: Message, name: str) -> str | None:
    whole = one(message, name)
    if whole is not None:
        return _v(whole)
    floating = one(message, name + "_float")
    return None if floating is None else _v(floating)


def read(families: list[Message]) -> list[Any]:
    """The same shape as :func:`expected`, from protoc's decoding."""
    out = []
    for fam in families:
        kind = one(fam, "type", "COUNTER")
        metrics: list[Any] = []
        for m in fam.get("metric", []):
            ts = one(m, "timestamp_ms")
            if kind in ("HISTOGRAM", "GAUGE_HISTOGRAM"):
                h = one(m, "histogram")
                buckets = [
                    (
                        _v(one(b, "upper_bound")),
                        _count(b, "cumulative_count"),
                        _decoded_exemplar(one(b, "exemplar")),
                    )
                    for b in h.get("bucket", [])
                ]
                total = one(h, "sample_sum")
                metrics.append(
                    (
                        sorted(labels(m)),
                        _count(h, "sample_count"),
                        None if total is None else _v(total),
                        buckets,
                        ts,
                    )
                )
            elif kind == "SUMMARY":
                s = one(m, "summary")
                metrics.append(
                    (
                        sorted(labels(m)),
                        _v(one(s, "sample_count")),
                        _v(one(s, "sample_sum")),
                        [],
                        ts,
                    )
                )
            else:
                field = {"COUNTER": "counter", "GAUGE": "gauge", "UNTYPED": "untyped"}[kind]
                value = one(m, field)
                ex = _decoded_exemplar(one(value, "exemplar")) if kind == "COUNTER" else None
                metrics.append((sorted(labels(m)), _v(one(value, "value", 0.0)), ts, ex))
        out.append((one(fam, "name"), one(fam, "help", ""), kind, metrics))
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, with float exemplar timestamps compared to within a microsecond."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=1e-6)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _summary_rows(families: Iterable[Metric]) -> list[Any]:
    # Summaries here have no quantiles; count and sum only.
    rows = expected(families)
    return [
        (n, d, k, [(m[0], m[1], m[2], [], m[4]) for m in ms] if k == "SUMMARY" else ms)
        for n, d, k, ms in rows
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registry=registries())
def test_protoc_reads_what_the_families_say(registry: Families) -> None:
    """For random registries (every type, escapes, NaN/±Inf, exemplars, timestamps) protoc decodes
    the stream into the families, names, help, types, labels, values and exemplars the registry
    holds, mapped as Prometheus' Go client maps them, on a cold and a warm cache."""
    renderer = ProtobufRenderer()
    want = _summary_rows(registry.families)
    for _ in range(2):
        body = renderer.render(registry)
        assert same(read(decode(body)), want)


def test_every_prometheus_client_type() -> None:
    """A prometheus_client registry with every type: protoc reads the same families (the
    ``_created`` series are left out, as the Go client leaves them out)."""
    registry = _everything()
    got = read(decode(ProtobufRenderer().render(registry)))
    assert same(got, _summary_rows(registry.collect()))
    names = [row[0] for row in got]
    assert "jobs_total" in names
    assert "build_info" in names
    assert not any(name.endswith("_created") for name in names)


def test_quantiles_of_a_summary() -> None:
    """Summary quantiles are Quantile messages; the ``quantile`` label is not a label."""
    from prometheus_client.metrics_core import SummaryMetricFamily

    family = SummaryMetricFamily("rpc", "R.", labels=["m"])
    family.add_metric(["a"], 4, 10.0)
    family.add_sample("rpc", {"m": "a", "quantile": "0.5"}, 2.5)
    family.add_sample("rpc", {"m": "a", "quantile": "0.99"}, 4.0)
    [fam] = decode(ProtobufRenderer().render(Families([family])))
    [metric] = fam["metric"]
    assert labels(metric) == [("m", "a")]
    summary = one(metric, "summary")
    assert one(summary, "sample_count") == 4
    assert [(one(q, "quantile"), one(q, "value")) for q in summary["quantile"]] == [
        (0.5, 2.5),
        (0.99, 4.0),
    ]


@pytest.mark.parametrize(
    "family",
    [
        CounterMetricFamily("c", "C.", labels=["a"]),
        HistogramMetricFamily("h", "H.", labels=["a"]),
    ],
)
def test_a_sample_of_another_family_cannot_be_encoded(family: Metric) -> None:
    """A sample whose name does not belong to its family raises RenderError (the app then
    serves text)."""
    family.add_sample("stranger", {"a": "x"}, 1.0)
    with pytest.raises(RenderError):
        ProtobufRenderer().render(Families([family]))


def test_an_unknown_type_or_a_bad_count_cannot_be_encoded() -> None:
    """A family type the format has no message for, or a summary count that is no count, raises
    RenderError."""
    odd = Metric("odd", "O.", "unknown")
    odd.type = "mystery"
    with pytest.raises(RenderError):
        ProtobufRenderer().render(Families([odd]))
    from prometheus_client.metrics_core import SummaryMetricFamily

    summary = SummaryMetricFamily("s", "S.", count_value=0, sum_value=0)
    summary.samples[0] = summary.samples[0]._replace(value=-1.0)
    with pytest.raises(RenderError):
        ProtobufRenderer().render(Families([summary]))


def test_label_cache_is_bounded() -> None:
    """Past ``max_series`` encoded label sets the cache is emptied at the next scrape."""
    registry = CollectorRegistry()
    counter = Counter("c", "C.", ["i"], registry=registry)
    for i in range(10):
        counter.labels(str(i)).inc()
    renderer = ProtobufRenderer(max_series=4)
    first = renderer.render(registry)
    assert len(renderer._labels) == 4
    assert renderer.render(registry) == first
    assert len(renderer._labels) <= 4


# -- wire-level pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**63, b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),
        (-1, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    ],
)
def test_varint(value: int, encoded: bytes) -> None:
    """Base-128 varints, negative numbers as 64-bit two's complement (the protobuf spec's
    examples)."""
    assert varint(value) == encoded


def test_zigzag() -> None:
    """sint32/sint64: 0, -1, 1, -2 map to 0, 1, 2, 3."""
    assert [zigzag(v) for v in (0, -1, 1, -2, 2147483647, -2147483648)] == [
        0,
        1,
        2,
        3,
        4294967294,
        4294967295,
    ]


def test_timestamps_and_float_counts() -> None:
    """A sample timestamp becomes ``timestamp_ms``; a count that is not a whole number goes to
    the ``*_float`` field."""
    family = HistogramMetricFamily("h", "H.")
    family.add_metric([], [("1", 0.5), ("+Inf", 1.5)], 2.0, timestamp=12.3456)
    [fam] = decode(ProtobufRenderer().render(Families([family])))
    [metric] = fam["metric"]
    assert one(metric, "timestamp_ms") == 12345
    hist = one(metric, "histogram")
    assert one(hist, "sample_count_float") == 1.5
    assert one(one(hist, "bucket"), "cumulative_count_float") == 0.5


# -- native histograms ---------------------------------------------------------------------------


def _expand(spans: list[Message], deltas: list[int]) -> dict[int, int]:
    """Bucket index -> count, read back as Prometheus reads spans and deltas."""
    out: dict[int, int] = {}
    index = 0
    count = 0
    it = iter(deltas)
    for span in spans:
        # The first offset is the first index; each later one the gap after the previous span.
        index += one(span, "offset", 0)
        for _ in range(one(span, "length", 0)):
            count += next(it)
            out[index] = count
            index += 1
    return out


def _reference_index(value: float, schema: int) -> int:
    """The bucket ``i`` with ``base**(i-1) < |value| <= base**i`` by logarithms (values near a
    boundary are avoided by the caller)."""
    return math.ceil(math.log2(abs(value)) * 2.0**schema)


def _near_boundary(value: float, schema: int) -> bool:
    x = math.log2(abs(value)) * 2.0**schema
    return abs(x - round(x)) < 1e-6


def _native_family(hist: NativeHistogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily("lat", "L.", labels=["route"])
    add_histogram(family, ["/a"], hist)
    return family


@settings(max_examples=100, deadline=None)
@given(
    schema=st.integers(-4, 8),
    values=st.lists(
        st.one_of(
            st.floats(1e-6, 1e6),
            st.floats(-1e6, -1e-6),
            st.just(0.0),
        ),
        max_size=60,
    ),
)
def test_native_buckets_decode_to_the_observations(schema: int, values: list[float]) -> None:
    """protoc reads schema, zero bucket, spans and deltas that expand to exactly the buckets the
    observations fall in (by the definition ``base**(i-1) < v <= base**i``)."""
    values = [v for v in values if v == 0 or not _near_boundary(v, schema)]
    hist = NativeHistograms(schema=schema, max_buckets=1000).histogram((0.1, 1.0))
    for v in values:
        hist.observe(v)
    [fam] = decode(ProtobufRenderer().render(Families([_native_family(hist)])))
    [metric] = fam["metric"]
    h = one(metric, "histogram")
    assert one(h, "schema", 0) == schema
    assert one(h, "sample_count", 0) == len(values)
    assert one(h, "zero_count", 0) == values.count(0.0)
    assert one(h, "zero_threshold") == hist.zero_threshold
    # The classic buckets stay alongside.
    assert [one(b, "upper_bound") for b in h["bucket"]] == [0.1, 1.0]
    want_pos: dict[int, int] = {}
    want_neg: dict[int, int] = {}
    for v in values:
        if v:
            side = want_pos if v > 0 else want_neg
            i = _reference_index(v, schema)
            side[i] = side.get(i, 0) + 1
    assert _expand(h.get("positive_span", []), h.get("positive_delta", [])) == want_pos
    assert _expand(h.get("negative_span", []), h.get("negative_delta", [])) == want_neg


def test_an_empty_native_histogram_has_a_span() -> None:
    """With no observation the histogram still carries a (0, 0) span, so Prometheus reads it as
    native, not as a classic histogram with no buckets."""
    hist = NativeHistograms(classic=False).histogram(())
    [fam] = decode(ProtobufRenderer().render(Families([_native_family(hist)])))
    h = one(fam["metric"][0], "histogram")
    assert one(h, "positive_span") == {"offset": [0], "length": [0]}
    assert one(h, "sample_count") == 0
    assert b"b\x04\x08\x00\x10\x00" in native_fields(hist.snapshot())


def test_native_only_text_shows_count_and_sum() -> None:
    """With classic buckets off the text formats carry ``+Inf``, ``_count`` and ``_sum`` only;
    protobuf carries no classic bucket, just the native ones."""
    hist = NativeHistograms(classic=False).histogram((0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        hist.observe(v)
    family = _native_family(hist)
    assert [(s.name, s.labels.get("le"), s.value) for s in family.samples] == [
        ("lat_bucket", "+Inf", 3),
        ("lat_count", None, 3),
        ("lat_sum", None, 5.55),
    ]
    [fam] = decode(ProtobufRenderer().render(Families([family])))
    h = one(fam["metric"][0], "histogram")
    assert "bucket" not in h
    assert sum(h["positive_delta"][:1]) == 1
    assert one(h, "sample_count") == 3


# -- negotiation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "protobuf"),
    [
        (PROMETHEUS_NATIVE_ACCEPT, True),
        (PROMETHEUS_TEXT_ACCEPT, False),
        ("", False),
        ("*/*", False),
        (PROTOBUF_TYPE, True),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily", False),
        ("application/vnd.google.protobuf;proto=other;encoding=delimited", False),
        (
            "text/plain;q=0.9,application/vnd.google.protobuf;"
            "proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5",
            False,
        ),
        (
            "text/plain,application/vnd.google.protobuf;"
            "proto=io.prometheus.client.MetricFamily;encoding=delimited",
            False,
        ),
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
            "encoding=delimited;q=0,text/plain",
            False,
        ),
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
            "encoding=delimited;q=bad,text/plain;q=0.1",
            False,
        ),
        (
            ",,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
            "encoding=delimited",
            True,
        ),
    ],
)
def test_parse_accept(accept: str, protobuf: bool) -> None:
    """Protobuf is served when the scraper ranks it first (highest q, then listed order)."""
    assert parse_accept(accept) is protobuf


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_metrics_app_negotiates_protobuf_with_native_buckets() -> None:
    """Prometheus' native-histogram Accept header gets protobuf with native buckets for the HTTP
    histograms; its text Accept header gets text with the classic buckets, as before."""
    registry = PerfRegistry(native_histograms=True)
    middleware = PerfMiddleware(_app, registry=registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(middleware), base_url="http://t"
    ) as client:
        for _ in range(3):
            await client.get("/x")
    app = metrics_app(registry, render_in_thread=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        r = await client.get("/metrics", headers={"accept": PROMETHEUS_NATIVE_ACCEPT})
        assert r.headers["content-type"] == PROTOBUF_TYPE
        assert "Accept" in r.headers["vary"]
        families = {one(f, "name"): f for f in decode(r.content)}
        text = await client.get("/metrics", headers={"accept": PROMETHEUS_TEXT_ACCEPT})
    duration = one(families["http_request_duration_seconds"]["metric"][0], "histogram")
    assert one(duration, "schema") == 3
    assert sum(duration["positive_delta"][:1]) >= 1
    assert len(duration["bucket"]) == len(LATENCY_BUCKETS)  # +Inf is the count
    ttfb = one(families["http_request_ttfb_seconds"]["metric"][0], "histogram")
    assert "positive_span" in ttfb
    assert one(families["http_requests_total"]["metric"][0], "counter") == {"value": [3.0]}
    assert text.headers["content-type"].startswith("application/openmetrics-text")
    assert b"http_request_duration_seconds_bucket{" in text.content


async def test_native_buckets_and_exemplars_together() -> None:
    """With native histograms and an exemplar source both on, the HTTP and timer histograms keep
    both: protobuf carries the native buckets and the classic buckets' exemplars, OpenMetrics
    the exemplars."""
    from asgi_perf._exemplars import NativeExemplarHistogram, histogram_class

    registry = PerfRegistry(
        native_histograms=True, exemplars=lambda: {"trace_id": "0af7651916cd43dd"}
    )
    assert isinstance(histogram_class(registry)((0.1, 1.0)), NativeExemplarHistogram)
    middleware = PerfMiddleware(_app, registry=registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(middleware), base_url="http://t"
    ) as client:
        await client.get("/x")
    with registry.timer("job"):
        pass
    app = metrics_app(registry, render_in_thread=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        r = await client.get("/metrics", headers={"accept": PROMETHEUS_NATIVE_ACCEPT})
        text = await client.get("/metrics", headers={"accept": PROMETHEUS_TEXT_ACCEPT})
    families = {one(f, "name"): f for f in decode(r.content)}
    for name in ("http_request_duration_seconds", "app_timer_duration_seconds"):
        hist = one(families[name]["metric"][0], "histogram")
        assert one(hist, "schema") == 3
        exemplars = [one(b, "exemplar") for b in hist["bucket"] if "exemplar" in b]
        assert [labels(e) for e in exemplars] == [[("trace_id", "0af7651916cd43dd")]]
    lines = text.content.decode().splitlines()
    for name in ("http_request_duration_seconds", "app_timer_duration_seconds"):
        marked = [x for x in lines if x.startswith(name + "_bucket{") and " # {" in x]
        assert len(marked) == 1
        assert 'trace_id="0af7651916cd43dd"' in marked[0]


@pytest.mark.parametrize(
    ("preset", "duration"),
    [
        ("opentelemetry", "http_server_request_duration_seconds"),
        ("starlette-exporter", "starlette_request_duration_seconds"),
        ("prometheus-fastapi-instrumentator", "http_request_duration_seconds"),
    ],
)
async def test_a_compat_preset_keeps_the_native_buckets(preset: str, duration: str) -> None:
    """Renamed families keep their native buckets under the new names and labels; the
    instrumentator's preset keeps its label-less high-resolution histogram beside them."""
    registry = PerfRegistry(native_histograms=True, compat=preset, process_metrics=False)
    middleware = PerfMiddleware(_app, registry=registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(middleware), base_url="http://t"
    ) as client:
        await client.get("/x")
    app = metrics_app(registry, render_in_thread=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        r = await client.get("/metrics", headers={"accept": PROMETHEUS_NATIVE_ACCEPT})
    families = {one(f, "name"): f for f in decode(r.content)}
    hist = one(families[duration]["metric"][0], "histogram")
    assert one(hist, "schema") == 3
    assert one(hist, "sample_count") == 1
    if preset == "prometheus-fastapi-instrumentator":
        highr = one(families["http_request_duration_highr_seconds"]["metric"][0], "histogram")
        assert one(highr, "sample_count") == 1
        assert labels(families[duration]["metric"][0])[0][0] == "handler"


async def test_native_only_keeps_the_exemplar_on_its_one_bucket() -> None:
    """Native only, the text formats show one +Inf bucket: it carries the latest exemplar."""
    registry = PerfRegistry(
        native_histograms=NativeHistograms(classic=False),
        exemplars=lambda: {"trace_id": "abc"},
        process_metrics=False,
    )
    middleware = PerfMiddleware(_app, registry=registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(middleware), base_url="http://t"
    ) as client:
        await client.get("/x")
    app = metrics_app(registry, render_in_thread=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        text = await client.get("/metrics", headers={"accept": PROMETHEUS_TEXT_ACCEPT})
    [line] = [
        x
        for x in text.content.decode().splitlines()
        if x.startswith("http_request_duration_seconds_bucket{")
    ]
    assert 'le="+Inf"' in line
    assert ' # {trace_id="abc"} ' in line


async def test_protobuf_is_gzipped_and_falls_back_to_text() -> None:
    """A large protobuf body is gzipped like text; a registry the encoder cannot represent is
    served as text 0.0.4 and the fault counted."""
    registry = PerfRegistry()
    counter = registry.counter("app_events_total")
    for i in range(100):
        counter.labels(f"event-{i}").inc()
    app = metrics_app(registry, render_in_thread=False)
    headers = {"accept": PROTOBUF_TYPE, "accept-encoding": "gzip"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        r = await client.get("/metrics", headers=headers)
        assert r.headers["content-type"] == PROTOBUF_TYPE
        assert r.headers["content-encoding"] == "gzip"
        assert split_delimited(r.content)  # httpx has already undone the gzip

        odd = Metric("odd", "O.", "unknown")
        odd.type = "mystery"
        registry.prometheus.register(Families([odd]))
        r = await client.get("/metrics", headers={"accept": PROTOBUF_TYPE})
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"odd" in r.content
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "exposition"}
    )
    assert errors == 1.0


def test_exemplar_timestamps_and_label_order() -> None:
    """An exemplar's Timestamp becomes seconds and nanos; a histogram whose ``le`` is not the
    last label, or whose count comes with its labels in another order, is still one series
    (and its ``_created`` sample is left out)."""
    from prometheus_client.samples import Timestamp

    counter = CounterMetricFamily("jobs", "J.", labels=["a"])
    counter.add_metric(["x"], 2.0)
    counter.samples[0] = counter.samples[0]._replace(
        exemplar=Exemplar({"trace": "t1"}, 1.0, Timestamp(5, 250))
    )
    hist = Metric("h", "H.", "histogram")
    hist.add_sample("h_bucket", {"le": "1", "a": "x", "b": "y"}, 1)
    hist.add_sample("h_bucket", {"le": "+Inf", "a": "x", "b": "y"}, 2)
    hist.add_sample("h_count", {"b": "y", "a": "x"}, 2)
    hist.add_sample("h_sum", {"a": "x", "b": "y"}, 3.5)
    hist.add_sample("h_created", {"a": "x", "b": "y"}, 1e9)
    jobs, h = decode(ProtobufRenderer().render(Families([counter, hist])))
    exemplar = one(one(jobs["metric"][0], "counter"), "exemplar")
    assert one(exemplar, "timestamp") == {"seconds": [5], "nanos": [250]}
    assert labels(exemplar) == [("trace", "t1")]
    [metric] = h["metric"]
    assert labels(metric) == [("a", "x"), ("b", "y")]
    histogram = one(metric, "histogram")
    assert (one(histogram, "sample_count"), one(histogram, "sample_sum")) == (2, 3.5)
    assert [one(b, "cumulative_count") for b in histogram["bucket"]] == [1]


async def test_a_plain_registry_falls_back_to_text_too() -> None:
    """A plain CollectorRegistry served over protobuf falls back to text when a family cannot be
    encoded (there is no PerfRegistry to count it in)."""
    registry = CollectorRegistry()
    odd = Metric("odd", "O.", "unknown")
    odd.type = "mystery"
    registry.register(Families([odd]))
    app = metrics_app(registry, render_in_thread=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        r = await client.get("/metrics", headers={"accept": PROTOBUF_TYPE})
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
