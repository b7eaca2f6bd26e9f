"""Native histograms: configuration, bucket indexing, the bucket limit, merges, the wiring."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.metrics_core import HistogramMetricFamily

from asgi_perf import NativeHistograms, PerfRegistry
from asgi_perf._histogram import PlainHistogram
from asgi_perf._native import (
    DEFAULT_ZERO_THRESHOLD,
    ERR_BOTH,
    ERR_CLASSIC,
    ERR_FACTOR,
    ERR_MAX_BUCKETS,
    ERR_NATIVE,
    ERR_SCHEMA,
    ERR_ZERO,
    MIN_SCHEMA,
    NativeHistogram,
    NativeSnapshot,
    Spans,
    downscale,
    expand,
    schema_for_factor,
    spans_of,
)
from asgi_perf._native_snapshots import (
    NativeParts,
    add_histogram,
    from_json,
    merge,
    merge_parts,
    merged_snapshot,
    parts_from_json,
    parts_of,
    parts_to_json,
    to_json,
)
from asgi_perf._shared import NATIVE_CAPACITY

POSITIVE = st.floats(1e-9, 1e9)
VALUES = st.lists(st.one_of(POSITIVE, POSITIVE.map(lambda v: -v), st.just(0.0)), max_size=80)


def _index(value: float, schema: int) -> int:
    """Reference bucket index: the ``i`` with ``base**(i-1) < |v| <= base**i``."""
    return math.ceil(math.log2(abs(value)) * 2.0**schema)


def _clear_of_boundaries(value: float, schema: int) -> bool:
    if value == 0:
        return True
    x = math.log2(abs(value)) * 2.0**schema
    return abs(x - round(x)) > 1e-6


def _buckets(values: list[float], schema: int) -> tuple[dict[int, int], dict[int, int]]:
    pos: dict[int, int] = {}
    neg: dict[int, int] = {}
    for v in values:
        if v:
            side = pos if v > 0 else neg
            i = _index(v, schema)
            side[i] = side.get(i, 0) + 1
    return pos, neg


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": 9}, ERR_SCHEMA.format(9)),
        ({"schema": -5}, ERR_SCHEMA.format(-5)),
        ({"schema": 2.0}, ERR_SCHEMA.format(2.0)),
        ({"schema": True}, ERR_SCHEMA.format(True)),
        ({"bucket_factor": 1.0}, ERR_FACTOR.format(1.0)),
        ({"bucket_factor": math.inf}, ERR_FACTOR.format(math.inf)),
        ({"bucket_factor": "2"}, ERR_FACTOR.format("2")),
        ({"schema": 3, "bucket_factor": 1.1}, ERR_BOTH),
        ({"zero_threshold": -1e-9}, ERR_ZERO.format(-1e-9)),
        ({"zero_threshold": math.nan}, ERR_ZERO.format(math.nan)),
        ({"max_buckets": 0}, ERR_MAX_BUCKETS.format(0)),
        ({"max_buckets": 10.0}, ERR_MAX_BUCKETS.format(10.0)),
        ({"classic": 1}, ERR_CLASSIC.format(1)),
    ],
)
def test_bad_configuration_is_a_value_error(kwargs: dict[str, object], message: str) -> None:
    """Every bad setting fails at construction with its message."""
    with pytest.raises(ValueError, match=re.escape(message)):
        NativeHistograms(**kwargs)  # type: ignore[arg-type]


def test_defaults_and_bucket_factor() -> None:
    """Schema 3 by default; a bucket factor picks the largest schema not finer than it."""
    default = NativeHistograms()
    assert (default.schema, default.zero_threshold, default.max_buckets, default.classic) == (
        3,
        DEFAULT_ZERO_THRESHOLD,
        160,
        True,
    )
    assert NativeHistograms(bucket_factor=1.1).schema == 3
    assert NativeHistograms(bucket_factor=2).schema == 0
    assert NativeHistograms(bucket_factor=1.0001).schema == 8
    assert NativeHistograms(bucket_factor=1e300).schema == MIN_SCHEMA
    for factor in (1.001, 1.05, 1.1, 1.5, 2, 4, 300):
        schema = schema_for_factor(factor)
        assert 2 ** (2.0**-schema) <= factor or schema == 8


def test_registry_setting() -> None:
    """``native_histograms=True`` is the defaults, False/None off, anything else a ValueError."""
    assert PerfRegistry().native is None
    assert PerfRegistry(native_histograms=False).native is None
    assert PerfRegistry(native_histograms=True).native == NativeHistograms()
    custom = NativeHistograms(schema=1, classic=False)
    assert PerfRegistry(native_histograms=custom).native is custom
    with pytest.raises(ValueError, match="native_histograms must be"):
        PerfRegistry(native_histograms="yes")  # type: ignore[arg-type]
    assert ERR_NATIVE.startswith("native_histograms must be")


def test_multi_worker_mode_keeps_native_histograms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, native buckets are kept in shared memory: no warning,
    the configuration as given, and a shared-memory file sized for native series."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="asgi_perf"):
        registry = PerfRegistry(native_histograms=True)
    assert registry.native == NativeHistograms()
    assert registry.shared is not None
    assert registry.shared.capacity == NATIVE_CAPACITY
    assert not caplog.messages


# -- indexing ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(schema=st.integers(MIN_SCHEMA, 8), values=VALUES)
def test_observations_land_in_their_buckets(schema: int, values: list[float]) -> None:
    """Each observation lands in bucket ``i`` with ``base**(i-1) < |v| <= base**i``; zero in the
    zero bucket; the classic part is a PlainHistogram's."""
    values = [v for v in values if _clear_of_boundaries(v, schema)]
    hist = NativeHistogram((0.5, 2.0), schema, DEFAULT_ZERO_THRESHOLD, 10_000)
    plain = PlainHistogram((0.5, 2.0))
    for v in values:
        hist.observe(v)
        plain.observe(v)
    assert hist.counts == plain.counts
    assert (hist.positive, hist.negative) == _buckets(values, schema)
    assert hist.zero_count == values.count(0.0)
    assert hist.snapshot().observations == len(values)


@pytest.mark.parametrize("schema", range(MIN_SCHEMA, 9))
def test_powers_of_two_are_upper_bounds(schema: int) -> None:
    """An exact power of two is the upper bound of its bucket (upper bounds are inclusive)."""
    hist = NativeHistogram((), schema, 0.0, 10_000)
    for exp in range(-20, 21):
        hist.observe(2.0**exp)
    for exp in range(-20, 21):
        if exp % (2 ** max(-schema, 0)) == 0:
            # 2**exp is a bucket boundary at this schema: its index is exp * 2**schema exactly.
            assert hist.positive.get(exp * 2**schema if schema >= 0 else exp >> -schema)


def test_zero_threshold() -> None:
    """Values within ±zero_threshold count in the zero bucket, not in a regular one."""
    hist = NativeHistograms(zero_threshold=0.001).histogram(())
    for v in (0.0, 0.001, -0.0005, 0.002, -0.002):
        hist.observe(v)
    snap = hist.snapshot()
    assert snap.zero_count == 3
    assert snap.zero_threshold == 0.001
    assert sum(hist.positive.values()) == 1
    assert sum(hist.negative.values()) == 1


# -- the bucket limit ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    schema=st.integers(0, 8),
    max_buckets=st.integers(1, 12),
    values=st.lists(st.one_of(POSITIVE, POSITIVE.map(lambda v: -v)), min_size=1, max_size=80),
)
def test_the_bucket_limit_lowers_the_resolution(
    schema: int, max_buckets: int, values: list[float]
) -> None:
    """Past ``max_buckets`` the schema drops until the buckets fit (or -4): the result equals a
    histogram built at the final schema from the start, and no observation is lost."""
    hist = NativeHistogram((), schema, DEFAULT_ZERO_THRESHOLD, max_buckets)
    for v in values:
        hist.observe(v)
    assert len(hist.positive) + len(hist.negative) <= max_buckets or hist.schema == MIN_SCHEMA
    assert hist.schema <= schema
    reference = NativeHistogram((), hist.schema, DEFAULT_ZERO_THRESHOLD, 10_000)
    for v in values:
        reference.observe(v)
    assert (hist.positive, hist.negative) == (reference.positive, reference.negative)
    assert hist.snapshot().observations == len(values)


def test_downscale_merges_pairs() -> None:
    """Lowering the schema by one merges buckets (2k-1, 2k) into k."""
    assert downscale({1: 1, 2: 2, 3: 4, 0: 8, -1: 16}, 1) == {1: 3, 2: 4, 0: 24}
    assert downscale({5: 1}, 0) == {5: 1}


# -- spans, snapshots, merges --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(-300, 300), st.integers(0, 10**6), max_size=30))
def test_spans_round_trip(buckets: dict[int, int]) -> None:
    """Spans and deltas expand back to the populated buckets (empty ones are dropped)."""
    side = spans_of(buckets)
    assert expand(side) == {i: n for i, n in buckets.items() if n}
    assert sum(length for _, length in side.spans) == len(side.deltas)


def test_spans_layout() -> None:
    """The first offset is the first index, later ones the gap; deltas are differences."""
    assert spans_of({-2: 3, -1: 5, 3: 5, 4: 1}) == Spans(((-2, 2), (3, 2)), (3, 2, 0, -4))
    assert spans_of({}) == Spans((), ())


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.tuples(st.integers(MIN_SCHEMA, 8), VALUES), min_size=1, max_size=4))
def test_merge_downscales_to_the_lowest_schema(parts: list[tuple[int, list[float]]]) -> None:
    """Merging workers' histograms of different schemas equals one histogram at the lowest schema
    fed every observation."""
    low = min(schema for schema, _ in parts)
    snaps = []
    reference = NativeHistogram((), low, DEFAULT_ZERO_THRESHOLD, 10_000)
    for schema, values in parts:
        hist = NativeHistogram((), schema, DEFAULT_ZERO_THRESHOLD, 10_000)
        for v in values:
            hist.observe(v)
            reference.observe(v)
        snaps.append(hist.snapshot())
    merged = merge(snaps)
    want = reference.snapshot()
    assert merged.schema == low
    assert (merged.positive, merged.negative, merged.zero_count, merged.observations) == (
        want.positive,
        want.negative,
        want.zero_count,
        want.observations,
    )
    # Summed in another order: equal up to rounding relative to the magnitudes added.
    magnitude = sum(abs(v) for _, values in parts for v in values)
    assert math.isclose(merged.sum, want.sum, rel_tol=1e-9, abs_tol=1e-12 * magnitude + 1e-12)


def test_merge_takes_the_widest_zero_threshold() -> None:
    """Workers with different zero thresholds merge under the widest."""
    a = NativeSnapshot(0, 0.0, 3, 0.001, 0, Spans((), ()), Spans((), ()))
    b = NativeSnapshot(0, 0.0, 2, 0.01, 0, Spans((), ()), Spans((), ()))
    assert merge([a, b]).zero_threshold == 0.01


def test_snapshot_retries_a_racing_schema_change() -> None:
    """A scrape that saw the schema change while copying the buckets copies again."""

    class Racing(NativeHistogram):
        __slots__ = ("reads",)

        def __getattribute__(self, name: str) -> object:
            if name == "schema":
                reads = object.__getattribute__(self, "reads")
                object.__setattr__(self, "reads", reads + 1)
                if reads == 1:  # between the first read and the check
                    return 2
            return object.__getattribute__(self, name)

    hist = Racing((), 3, DEFAULT_ZERO_THRESHOLD, 100)
    object.__setattr__(hist, "reads", 0)
    hist.observe(1.0)
    object.__setattr__(hist, "reads", 0)
    assert hist.snapshot().observations == 1
    assert object.__getattribute__(hist, "reads") >= 3


def test_add_histogram() -> None:
    """A plain histogram adds its classic samples only; a native one also its snapshot, keyed by
    the series' sorted labels; native-only shows +Inf, count and sum."""
    family = HistogramMetricFamily("h", "H.", labels=["b", "a"])
    plain = PlainHistogram((1.0,))
    plain.observe(0.5)
    assert add_histogram(family, ["x", "y"], plain) == 1
    assert getattr(family, "native", None) is None
    native = NativeHistograms(classic=False).histogram((1.0,))
    native.observe(0.5)
    native.observe(5.0)
    assert add_histogram(family, ["x", "z"], native) == 2
    assert list(family.native.series) == [(("a", "z"), ("b", "x"))]  # type: ignore[attr-defined]
    samples = [(s.name, s.labels.get("le"), s.value) for s in family.samples[-3:]]
    assert samples == [("h_bucket", "+Inf", 2), ("h_count", None, 2), ("h_sum", None, 5.5)]


# -- the duration histograms of every feature ----------------------------------------------------


def test_every_duration_histogram_keeps_native_buckets() -> None:
    """With native histograms on, SQL query durations, Socket.IO handler durations and timers
    carry native buckets (over protobuf); histograms that are not durations stay classic."""
    from sqlalchemy import text

    from asgi_perf.export._protobuf import ProtobufRenderer
    from asgi_perf.socketio._stats import SocketIOStats
    from asgi_perf.sqlalchemy import instrument_engine

    from ._sqlalchemy import sqlite_engine
    from .export._protoc import decode, one

    registry = PerfRegistry(native_histograms=NativeHistograms(schema=2))
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with registry.timer("job"):
        pass
    stats = SocketIOStats(registry)
    registry.register(stats)
    stats.observe_handler(("/", "chat"), 0.003)
    stats.batch_wait.observe(0.01)
    families = {one(f, "name"): f for f in decode(ProtobufRenderer().render(registry.prometheus))}

    def schema(name: str) -> object:
        return one(one(families[name]["metric"][0], "histogram"), "schema")

    assert schema("db_query_duration_seconds") == 2
    assert schema("socketio_handler_duration_seconds") == 2
    assert schema("app_timer_duration_seconds") == 2
    assert schema("socketio_batch_wait_seconds") is None
    assert schema("db_pool_checkout_seconds") is None
    engine.dispose()


def test_native_only_quantiles_keep_the_native_resolution() -> None:
    """Native only, ``cumulative()`` (what timer stats and summaries estimate quantiles from)
    gives the native buckets' bounds: a timer's p50 is within one native bucket of the truth."""
    from asgi_perf._histogram import quantile

    hist = NativeHistograms(schema=3, classic=False).histogram((0.1, 1.0))
    values = [0.001 * i for i in range(1, 1001)]  # 1 ms .. 1 s
    for v in (*values, 0.0, -0.5):
        hist.observe(v)
    buckets, total, count = hist.cumulative()
    assert count == len(values) + 2
    assert math.isclose(total, sum(values) - 0.5)
    assert buckets[-1][0] == "+Inf"
    assert buckets[-1][1] == count
    pairs = [(float(le), float(n)) for le, n in buckets]
    assert pairs == sorted(pairs)
    factor = 2 ** (2**-3)
    assert 0.5 / factor <= quantile(0.5, pairs) <= 0.5 * factor
    with_classic = NativeHistograms().histogram((0.1, 1.0))
    with_classic.observe(0.5)
    assert [le for le, _ in with_classic.cumulative()[0]] == ["0.1", "1.0", "+Inf"]


def test_native_only_timer_stats() -> None:
    """A timer of a native-only registry reports percentiles from the native buckets."""
    from asgi_perf.operations._timing import Timings

    registry = PerfRegistry(native_histograms=NativeHistograms(classic=False))
    timings = Timings.of(registry)
    for ms in range(1, 101):
        timings.record("job", ms / 1000)
    stats = registry.stats("job")
    assert stats["count"] == 100
    p50 = stats["p50"]
    assert p50 is not None
    assert 0.045 <= p50 <= 0.055


# -- the scrape's merge of parts: equal to merge() -------------------------------------------------
WORKER = st.tuples(
    st.integers(MIN_SCHEMA, 8),
    st.sampled_from([DEFAULT_ZERO_THRESHOLD, 0.0, 1e-3]),
    st.integers(1, 40),  # max_buckets: small ones lower the schema as it fills
    VALUES,  # empty for an idle worker; negative values and zeros too
)


def _worker_snapshot(worker: tuple[int, float, int, list[float]]) -> NativeSnapshot:
    schema, threshold, max_buckets, values = worker
    hist = NativeHistogram((), schema, threshold, max_buckets)
    for v in values:
        hist.observe(v)
    return hist.snapshot()


def _as_stored(parts: NativeParts, order: list[int]) -> NativeParts:
    """``parts`` as a shared-memory run holds them: float pairs in first-use order."""
    pairs = list(parts.pairs)
    flat = [float(pairs[2 * i + k]) for i in order for k in (0, 1)]
    return parts._replace(pairs=flat)


@settings(max_examples=300, deadline=None)
@given(workers=st.lists(WORKER, min_size=1, max_size=5), data=st.data())
def test_merged_parts_equal_the_reference_merge(
    workers: list[tuple[int, float, int, list[float]]], data: st.DataObject
) -> None:
    """Workers of different schemas and zero thresholds (negative, zero and no observations
    included), read as the scrape reads them (float pairs in any order): their merged snapshot
    is exactly merge() of their snapshots, and the compacted file's form is to_json() of it."""
    snaps = [_worker_snapshot(w) for w in workers]
    parts = []
    for snap in snaps:
        own = parts_of(snap)
        order = data.draw(st.permutations(range(len(own.pairs) // 2)))
        parts.append(_as_stored(own, order))
    want = merge(snaps)
    assert merged_snapshot(parts) == want
    assert merged_snapshot([parts_of(s) for s in snaps]) == want
    assert parts_to_json(merge_parts(parts)) == to_json(want)
    assert merged_snapshot([parts_from_json(to_json(want))]) == want
    for snap, part in zip(snaps, parts, strict=True):
        assert merged_snapshot([part]) == snap


def test_merged_parts_add_a_repeated_code() -> None:
    """Parts that name a bucket twice (a part as a reader may get it) add both counts."""
    parts = NativeParts(0, 0.0, 1, 7.0, [4.0, 2.0, 5.0, 1.0, 4.0, 3.0])
    snap = merged_snapshot([parts])
    assert expand(snap.positive) == {2: 5}
    assert expand(snap.negative) == {2: 1}
    assert snap.observations == 7


@pytest.mark.parametrize(
    "positive",
    [[[3, 2], [3, 5]], [[3, 2], [3, 0]], [[3, 0], [4, 1], [3, 7]], [[1, 1], [2, 0]]],
)
def test_parts_from_json_read_as_from_json(positive: list[list[int]]) -> None:
    """A snapshot file's bucket lists read as parts as from_json() reads them: a repeated index
    keeps its last count, and a count of zero is no bucket."""
    raw = [1, 0.0, 2, 1.5, positive, [[-2, 4]]]
    assert merged_snapshot([parts_from_json(raw)]) == from_json(raw)
