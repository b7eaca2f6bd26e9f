"""The fast renderer: parsers read the same families as from prometheus_client; bounded cache."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar, Sample, Timestamp
from prometheus_client.utils import floatToGoString

from asgi_perf import PerfMiddleware, PerfRegistry, metrics_app
from asgi_perf.cache import LRUCache
from asgi_perf.export._render import FastRenderer, RenderError, Renderers
from asgi_perf.sqlalchemy import instrument_engine
from asgi_perf.testing import scrape

from .._asgi import Receiver, Sender, http_scope
from .._sqlalchemy import sqlite_engine

pytestmark = pytest.mark.anyio

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
om_generate_latest: Callable[..., bytes] = om_exposition.generate_latest
text_generate_latest: Callable[..., bytes] = generate_latest
parse_text: Callable[[str], Iterable[Metric]] = text_string_to_metric_families
parse_om: Callable[[str], Iterable[Metric]] = om_parser.text_string_to_metric_families


class Families:
    """A collector yielding fixed families: both renderers read exactly the same input."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _value_key(value: Any) -> str:
    return repr(float(value)) if value is not None else "None"


def _exemplar_key(exemplar: Exemplar | None) -> Any:
    if exemplar is None:
        return None
    return (sorted(exemplar.labels.items()), _value_key(exemplar.value), str(exemplar.timestamp))


def parsed(body: bytes, openmetrics: bool) -> Any:
    """What prometheus_client's parser reads: families and samples in order, NaN-safe values.

    A body the parser rejects is read as the rejection's type, so two bodies the parser rejects
    alike compare equal.
    """
    text = body.decode("utf-8")
    try:
        families = list(parse_om(text) if openmetrics else parse_text(text))
    except Exception as exc:
        return ("rejected", type(exc).__name__)
    return [
        (
            f.name,
            f.type,
            f.documentation,
            f.unit,
            [
                (
                    s.name,
                    sorted(s.labels.items()),
                    _value_key(s.value),
                    str(s.timestamp),
                    _exemplar_key(s.exemplar),
                )
                for s in f.samples
            ],
        )
        for f in families
    ]


# -- random registries ---------------------------------------------------------------------------

ESCAPES = st.sampled_from(["\\", '"', "\n", "é", "\u2603", "\U0001f600", "\\n", '\\"', "{}", ","])
LABEL_VALUES = st.lists(
    st.one_of(ESCAPES, st.text(st.characters(codec="utf-8"), max_size=5)),
    max_size=3,
).map("".join)
HELP = st.lists(st.one_of(ESCAPES, st.text(max_size=6, alphabet="ab \t#")), max_size=3).map("".join)
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e300, -1e300, 5e-324, 1e-5, 0.1, 1e6]
SPECIAL += [999_999.0, 1_000_000.0, 123456789.123, 1e16, -1e16, 1e22, 2.5e-7]
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
)
NON_NEGATIVE = st.one_of(
    st.sampled_from([0.0, 1.0, 1e6, 1e300, 5e-324, 123456789.5, math.inf]),
    st.floats(min_value=0, allow_infinity=False),
    st.integers(0, 10**18),
)
TIMESTAMPS = st.one_of(
    st.none(),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.builds(Timestamp, st.integers(0, 4 * 10**9), st.integers(0, 10**9 - 1)),
)
LABEL_NAME = st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_]{0,6}\Z").filter(
    lambda n: not n.startswith("__") and n not in {"le", "quantile"}
)


@st.composite
def exemplars(draw: st.DrawFn) -> Exemplar | None:
    if not draw(st.booleans()):
        return None
    labels = draw(st.dictionaries(LABEL_NAME, LABEL_VALUES, max_size=2))
    value = draw(st.sampled_from([0.0, 1.5, 1e-9, 42.0, 1e7]))
    return Exemplar(labels, value, draw(st.one_of(st.none(), st.floats(0, 4e9))))


@st.composite
def family(draw: st.DrawFn, name: str) -> Metric:
    labelnames = draw(st.lists(LABEL_NAME, max_size=3, unique=True))
    doc = draw(HELP)
    kind = draw(
        st.sampled_from(
            [
                "counter",
                "gauge",
                "histogram",
                "gaugehistogram",
                "summary",
                "info",
                "stateset",
                "unknown",
            ]
        )
    )
    rows = draw(
        st.lists(st.tuples(*[LABEL_VALUES] * len(labelnames)), max_size=3, unique_by=lambda r: r)
    )
    metric: Metric
    if kind == "counter":
        metric = CounterMetricFamily(name, doc, labels=labelnames)
        for row in rows:
            metric.add_metric(
                list(row),
                draw(NON_NEGATIVE),
                created=draw(st.one_of(st.none(), st.floats(0, 4e9))),
                timestamp=draw(TIMESTAMPS),
            )
            exemplar = draw(exemplars())
            if exemplar is not None:  # add_metric(exemplar=) is newer than prometheus_client 0.20
                at = max(i for i, s in enumerate(metric.samples) if s.name == f"{name}_total")
                metric.samples[at] = metric.samples[at]._replace(exemplar=exemplar)
    elif kind == "gauge":
        unit = draw(st.sampled_from(["", "seconds"]))
        metric = GaugeMetricFamily(name, doc, labels=labelnames, unit=unit)
        for row in rows:
            metric.add_metric(list(row), draw(VALUES), timestamp=draw(TIMESTAMPS))
    elif kind in ("histogram", "gaugehistogram"):
        bounds = sorted(set(draw(st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=4))))
        if kind == "histogram":
            metric = HistogramMetricFamily(name, doc, labels=labelnames)
        else:
            metric = GaugeHistogramMetricFamily(name, doc, labels=labelnames)
        for row in rows:
            counts = sorted(draw(st.lists(st.integers(0, 10**7), min_size=len(bounds) + 1)))
            counts = counts[: len(bounds) + 1]
            les = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
            total = draw(st.floats(-1e9, 1e9))
            if kind == "histogram":
                buckets: list[Any] = [
                    (le, float(n), ex)
                    if (ex := draw(exemplars())) is not None and n > 0
                    else (le, float(n))
                    for le, n in zip(les, counts, strict=True)
                ]
                metric.add_metric(list(row), buckets, total if counts[-1] else 0.0)
            else:
                pairs = [(le, float(n)) for le, n in zip(les, counts, strict=True)]
                metric.add_metric(list(row), pairs, total)
    elif kind == "summary":
        metric = SummaryMetricFamily(name, doc, labels=labelnames)
        for row in rows:
            metric.add_metric(
                list(row), draw(st.integers(0, 10**9)), draw(NON_NEGATIVE), draw(TIMESTAMPS)
            )
    elif kind == "info":
        metric = InfoMetricFamily(name, doc, labels=labelnames)
        for row in rows:
            extra = draw(st.dictionaries(LABEL_NAME, LABEL_VALUES, max_size=2))
            metric.add_metric(list(row), {k: v for k, v in extra.items() if k not in labelnames})
    elif kind == "stateset":
        metric = StateSetMetricFamily(name, doc, labels=labelnames)
        for row in rows:
            states = draw(st.dictionaries(LABEL_NAME, st.booleans(), min_size=1, max_size=3))
            metric.add_metric(list(row), states)
    else:
        metric = UnknownMetricFamily(name, doc, labels=labelnames)
        for row in rows:
            metric.add_metric(list(row), draw(VALUES), timestamp=draw(TIMESTAMPS))
    return metric


@st.composite
def registries(draw: st.DrawFn) -> Families:
    # Distinct stems, so no family's samples can be read as another's (x and x_total, x_info...).
    names = draw(
        st.lists(
            st.from_regex(r"\A[a-zA-Z_:][a-zA-Z0-9_:]{0,8}\Z"),
            max_size=5,
            unique_by=lambda n: n.split("_")[0],
        )
    )
    return Families([draw(family(f"{name}_m{i}")) for i, name in enumerate(names)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registry=registries())
def test_parsers_read_the_same_families_as_from_prometheus_client(registry: Families) -> None:
    """For random registries (every type, escapes, NaN/±Inf, exemplars, timestamps) prometheus_
    client's parsers read the same families from the fast renderer as from generate_latest, for
    the text format 0.0.4 and OpenMetrics, on a cold and on a warm cache."""
    text = FastRenderer(openmetrics=False)
    openmetrics = FastRenderer(openmetrics=True)
    for renderer, library, is_om in (
        (text, generate_latest, False),
        (openmetrics, om_generate_latest, True),
    ):
        try:
            expected = parsed(library(registry), is_om)
        except Exception:
            # What prometheus_client cannot render, the fast path must refuse too.
            with pytest.raises(RenderError):
                renderer.render(registry)
            continue
        assert parsed(renderer.render(registry), is_om) == expected
        assert parsed(renderer.render(registry), is_om) == expected


# -- fixed cases ---------------------------------------------------------------------------------


def _everything() -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("jobs", 'Jobs with "quotes", \\ and\nnewlines.', ["kind"], registry=registry)
    counter.labels('a"b\\c\nd é').inc(3)
    counter.labels("traced").inc(2, exemplar={"trace_id": 'x"y'})
    Gauge("temperature", "T.", registry=registry).set(-0.0)
    hist = Histogram(
        "latency_seconds", "L.", ["route"], registry=registry, buckets=(0.001, 0.5, 2.5e6)
    )
    hist.labels("/a").observe(0.2)
    hist.labels("/b").observe(3e7)
    registry.register(
        Families(
            [
                InfoMetricFamily("build", "B.", value={"version": "1.2"}),
                StateSetMetricFamily("state", "S.", value={"up": True, "down": False}),
                UnknownMetricFamily("mystery", "M.", value=math.nan),
                GaugeHistogramMetricFamily("queue", "Q.", buckets=[("+Inf", 3.0)], gsum_value=4),
            ]
        )
    )
    return registry


@pytest.mark.parametrize("openmetrics", [False, True])
def test_output_equals_the_installed_prometheus_client(openmetrics: bool) -> None:
    """On a registry with every metric type the bytes equal what prometheus_client writes."""
    registry = _everything()
    library = om_generate_latest if openmetrics else generate_latest
    renderer = FastRenderer(openmetrics=openmetrics)
    assert renderer.render(registry) == library(registry)
    assert renderer.render(registry) == library(registry)  # warm cache


@pytest.mark.parametrize("openmetrics", [False, True])
def test_created_series_follow_prometheus_client_switch(openmetrics: bool) -> None:
    """With ``_created`` series turned off (``PROMETHEUS_DISABLE_CREATED_SERIES`` or
    ``disable_created_metrics()``) the families carry none, and neither output has any."""
    import prometheus_client

    registry = CollectorRegistry()
    Counter("jobs", "J.", registry=registry).inc()
    Histogram("work_seconds", "W.", registry=registry).observe(1)
    library = om_generate_latest if openmetrics else generate_latest
    switch: dict[str, Callable[[], None]] = {
        "off": prometheus_client.disable_created_metrics,
        "on": prometheus_client.enable_created_metrics,
    }
    switch["off"]()  # read when the families are collected
    try:
        body = FastRenderer(openmetrics=openmetrics).render(registry)
        assert body == library(registry)
    finally:
        switch["on"]()
    assert b"_created" not in body


def test_empty_registry() -> None:
    """An empty registry renders as prometheus_client renders it: nothing, or just ``# EOF``."""
    empty = CollectorRegistry()
    assert FastRenderer(openmetrics=False).render(empty) == generate_latest(empty) == b""
    assert FastRenderer(openmetrics=True).render(empty) == om_generate_latest(empty)


ESCAPINGS = [
    "",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "text/plain; version=1.0.0; escaping=underscores",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=values",
    "application/openmetrics-text",
]


@pytest.mark.parametrize("accept", ESCAPINGS)
def test_names_escaped_as_negotiated(accept: str) -> None:
    """Metric and label names that are not legacy names (dots, colons) come out exactly as the
    installed prometheus_client writes them for each negotiated escaping."""
    if om_exposition.__dict__.get("escape_metric_name") is None:
        pytest.skip("this prometheus_client has no name escaping")
    gauge = GaugeMetricFamily("my.metric", "D.", labels=["a.b", "ok"])
    gauge.add_metric(["x", "y"], 1)
    gauge.add_metric(["z", "w"], 2, timestamp=12.5)
    counter = CounterMetricFamily("rule:requests", "R.", labels=["c"], created=3.0)
    counter.add_metric(["v"], 2, created=5.0)
    bare = GaugeMetricFamily("plain.name", "P.", value=3)
    registry = Families([gauge, counter, bare])
    encoder, _ = choose_encoder(accept)
    renderer = Renderers().for_encoder(encoder)
    assert renderer is not None
    assert renderer.render(registry) == encoder(registry)


@pytest.mark.parametrize(
    ("encoder", "expected"),
    [
        (generate_latest, (False, None, False)),
        (om_generate_latest, (True, None, False)),
        (partial(om_generate_latest, version="2.0.0"), (True, None, True)),
        (partial(om_generate_latest, version="1.0.0", escaping="dots"), (True, "dots", False)),
        (partial(text_generate_latest, escaping="allow-utf-8"), (False, "allow-utf-8", False)),
        (partial(om_generate_latest, version="one"), None),
        (partial(om_generate_latest, version="1.0.0", other=1), None),
        (partial(generate_latest, CollectorRegistry()), None),
        (partial(text_generate_latest, escaping=3), None),
        (lambda registry: b"", None),
    ],
)
def test_encoders_recognised(encoder: Any, expected: tuple[bool, str | None, bool] | None) -> None:
    """choose_encoder's encoders map to a fast renderer of that format, escaping and version;
    anything else (other keywords, bound arguments, other callables) to none."""
    renderers = Renderers()
    renderer = renderers.for_encoder(encoder)
    if expected is None:
        assert renderer is None
        return
    assert renderer is not None
    openmetrics, escaping, native = expected
    assert renderer.openmetrics is openmetrics
    assert renderer.native is native
    if escaping is not None:
        assert renderer.escaping == escaping
    assert renderers.for_encoder(encoder) is renderer  # one renderer per configuration


def test_label_churn_does_not_grow_the_cache() -> None:
    """Series that come and go are cached up to the bound and no further; the output stays right
    and a stable registry renders from the cache (no new entries on a second scrape)."""
    renderers = Renderers(max_series=50)
    renderer = renderers.for_encoder(generate_latest)
    assert renderer is not None
    sizes = []
    for scrape_no in range(30):
        gauge = GaugeMetricFamily("churn", "C.", labels=["id"])
        for i in range(20):
            gauge.add_metric([f"{scrape_no}-{i}"], i)
        registry = Families([gauge])
        assert renderer.render(registry) == generate_latest(registry)
        sizes.append(len(renderers.cache))
    assert max(sizes) <= 50
    stable = Families([GaugeMetricFamily("stable", "S.", value=1)])
    renderer.render(stable)
    before = len(renderers.cache)
    renderer.render(stable)
    assert len(renderers.cache) == before > 0


@pytest.mark.parametrize("openmetrics", [False, True])
def test_series_that_move_or_change_in_place_render_right(openmetrics: bool) -> None:
    """A series inserted mid-family shifts every later one, and a collector may reuse its label
    dicts and change them in place: every scrape still renders exactly as prometheus_client."""
    library = om_generate_latest if openmetrics else generate_latest
    renderer = FastRenderer(openmetrics=openmetrics)
    reused = [{"route": f"/r{i}"} for i in range(4)]

    def scrape_of(routes: list[str]) -> Families:
        gauge = Metric("g", "G.", "gauge")
        for labels, route in zip(reused, routes, strict=False):
            labels["route"] = route  # the same dict objects, new contents
            gauge.samples.append(Sample("g", labels, 1.0, None, None))
        return Families([gauge])

    for routes in (["/a", "/b", "/c"], ["/a", "/new", "/b", "/c"], ["/c", "/b", "/a"], ["/x"]):
        registry = scrape_of(routes)
        assert renderer.render(registry) == library(registry)


def test_negative_bound_rejected() -> None:
    """A negative cache bound is a configuration error."""
    with pytest.raises(ValueError, match="max_series"):
        Renderers(max_series=-1)


def test_collect_errors_propagate_unchanged() -> None:
    """An error raised by a collector is not a rendering error: it propagates as it is."""

    class Broken:
        def collect(self) -> Iterator[Metric]:
            raise KeyError("collector")

    with pytest.raises(KeyError, match="collector"):
        FastRenderer(openmetrics=False).render(Broken())


def test_invalid_exemplar_refused_like_prometheus_client() -> None:
    """An exemplar on a gauge is refused by both renderers."""
    gauge = Metric("g", "G.", "gauge")
    gauge.add_sample("g", {}, 1.0, exemplar=Exemplar({"a": "b"}, 1.0))
    with pytest.raises(ValueError, match="exemplars"):
        om_generate_latest(Families([gauge]))
    with pytest.raises(RenderError, match="exemplars"):
        FastRenderer(openmetrics=True).render(Families([gauge]))


def _native_histogram_family() -> Metric:
    from prometheus_client.samples import BucketSpan, NativeHistogram

    metric = Metric("nh_seconds", "Native.", "histogram")
    native = NativeHistogram(3, 1.5, 0, 0.001, 0, (BucketSpan(0, 1),), None, (3,), None)
    metric.samples.append(Sample("nh_seconds", {"route": "/"}, None, None, None, native))  # type: ignore[arg-type]
    return metric


needs_native = pytest.mark.skipif(
    "native_histogram" not in Sample._fields, reason="no native histograms in prometheus_client"
)


@needs_native
def test_native_histograms_skipped_in_openmetrics_1() -> None:
    """OpenMetrics 1.0 has no native histograms: their samples are left out, as generate_latest
    does; the 0.0.4 format and OpenMetrics 2.0 refuse them."""
    registry = Families([_native_histogram_family(), GaugeMetricFamily("g", "G.", value=1)])
    assert FastRenderer(openmetrics=True).render(registry) == om_generate_latest(registry)
    with pytest.raises(RenderError):
        FastRenderer(openmetrics=False).render(registry)
    with pytest.raises(RenderError):
        FastRenderer(openmetrics=True, native=True).render(registry)


@needs_native
async def test_metrics_app_falls_back_to_prometheus_client(registry: PerfRegistry) -> None:
    """A scrape the fast renderer refuses (a native histogram over OpenMetrics 2.0) is rendered
    by prometheus_client instead, and counted as an exposition error."""
    registry.prometheus.register(Families([_native_histogram_family()]))
    response = await scrape(
        metrics_app(registry),
        headers=[("accept", "application/openmetrics-text; version=2.0.0")],
    )
    assert response.status == 200
    assert 'nh_seconds{route="/"} {count:3,sum:1.5,schema:0' in response.text
    assert (
        registry.prometheus.get_sample_value(
            "asgi_perf_instrumentation_errors_total", {"component": "exposition"}
        )
        == 1.0
    )


async def _real_registry() -> PerfRegistry:
    """HTTP traffic through the middleware, SQL through an instrumented engine, a metered cache."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    registry = PerfRegistry(namespace="svc")
    middleware = PerfMiddleware(app, registry=registry)
    for i in range(5):
        await middleware(http_scope(f"/items/{i}", "GET"), Receiver(), Sender())
        await middleware(http_scope("/ok", "POST"), Receiver(), Sender())
    with pytest.raises(RuntimeError):
        await middleware(http_scope("/boom"), Receiver(), Sender())
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main")
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with pytest.raises(Exception, match="no such table"):
            conn.execute(text("SELECT * FROM missing"))
    engine.dispose()
    cache: LRUCache[str, int] = LRUCache(2, name="squares", registry=registry)
    for key in "abcab":
        if cache.get(key) is None:
            cache[key] = 1
    registry.report_error("test", ValueError("counted"))
    return registry


def _promtool(promtool: str, body: bytes) -> tuple[int, str]:
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    return result.returncode, (result.stdout + result.stderr).decode()


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
async def test_real_app_scrape_reads_the_same(accept: str, promtool: str) -> None:
    """A real registry (middleware, SQL, cache, self-metrics): both renderers give families that
    parse the same from one collected snapshot, and the app serves the fast rendering.

    ``promtool check metrics`` passes cleanly on the 0.0.4 scrape. It reads OpenMetrics with its
    0.0.4 parser, whose linter wants HELP on ``<name>_total``: there it must parse without error
    and say exactly what it says about prometheus_client's own OpenMetrics output.
    """
    registry = await _real_registry()
    openmetrics = bool(accept)
    snapshot = Families(registry.prometheus.collect())
    library = om_generate_latest if openmetrics else generate_latest
    fast_body = FastRenderer(openmetrics=openmetrics).render(snapshot)
    library_body = library(snapshot)
    assert parsed(fast_body, openmetrics) == parsed(library_body, openmetrics)
    assert not isinstance(parsed(fast_body, openmetrics), tuple)  # the parser accepted it
    app = metrics_app(registry)
    response = await scrape(app, headers=[("accept", accept)] if accept else [])
    assert len(app._fast.cache) > 0  # the fast path rendered it
    assert b"svc_http_request_duration_seconds_bucket" in response.body
    assert b"svc_db_query_duration_seconds" in response.body
    assert b'cache="squares"' in response.body
    if openmetrics:
        assert response.body.endswith(b"# EOF\n")
        code, output = _promtool(promtool, fast_body)
        assert code != 1, output  # 1: a parse error; 3: lint remarks only
        assert (code, output) == _promtool(promtool, library_body)
    else:
        assert _promtool(promtool, response.body) == (0, "")
    assert registry.prometheus.get_sample_value(
        "svc_asgi_perf_instrumentation_errors_total", {"component": "exposition"}
    ) in (None, 0.0)
