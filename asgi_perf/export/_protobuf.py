"""The Prometheus protobuf exposition: length-delimited ``io.prometheus.client.MetricFamily``.

Prometheus scrapes native histograms only in this format (``--enable-feature=native-histograms``
makes it ask for protobuf first). The encoder is written by hand over the few message types of
``metrics.proto``: it needs no ``protobuf`` package (and no generated code to keep in step with
one), and it measured faster than building messages with that package (see
``docs/performance.md``). Each series' encoded labels are cached as the text renderer caches its
prefixes, so a scrape mostly packs numbers.

Families map as Prometheus' Go client maps them: counters (named with ``_total``), gauges,
summaries, histograms (classic buckets and, where a collector attached them, native buckets),
gauge histograms; info (``_info``) and stateset families are gauges; unknown ones untyped.
Exemplars ride on counters and buckets. ``_created`` samples are left out, as older Go clients
do. A family this encoder cannot represent
raises :class:`~asgi_perf.export._render.RenderError`, and the scrape is served as text instead.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from prometheus_client.metrics_core import Metric

from .._native import NativeSnapshot, Spans
from .._native_snapshots import NativeFamily
from ._render import MAX_CACHED_SERIES, Collects, RenderError

#: The content type Prometheus asks for (and this exposition answers with).
PROTOBUF_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

# MetricFamily.type
COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM, GAUGE_HISTOGRAM = range(6)

_double: Callable[[float], bytes] = struct.Struct("<d").pack


def varint(value: int) -> bytes:
    """An unsigned (or two's-complement 64-bit, when negative) base-128 varint."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


def zigzag(value: int) -> int:
    """The ``sint32``/``sint64`` mapping: small magnitudes, either sign, encode short."""
    return value << 1 if value >= 0 else (-value << 1) - 1


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` already includes wire type 2)."""
    return _SMALL[tag] + varint(len(payload)) + payload


def _text(tag: int, text: str) -> bytes:
    return _field(tag, text.encode("utf-8"))


def _label_pair(name: str, value: str) -> bytes:
    # LabelPair { name = 1; value = 2; }
    return _field(0x0A, _text(0x0A, name) + _text(0x12, value))


def _count(tag_int: int, tag_float: int, value: Any) -> bytes:
    """A count as ``uint64`` when it is a whole number >= 0, else as its ``*_float`` twin."""
    if type(value) is int and value >= 0:
        return _SMALL[tag_int] + varint(value)
    value = float(value)
    if value >= 0 and value.is_integer() and value < 2**63:
        return _SMALL[tag_int] + varint(int(value))
    return _SMALL[tag_float] + _double(value)


def _spans(tag_span: int, tag_delta: int, side: Spans) -> bytes:
    # BucketSpan { sint32 offset = 1; uint32 length = 2; }, deltas packed sint64.
    out = [
        _field(tag_span, b"\x08" + varint(zigzag(offset)) + b"\x10" + varint(length))
        for offset, length in side.spans
    ]
    if side.deltas:
        out.append(_field(tag_delta, b"".join(varint(zigzag(d)) for d in side.deltas)))
    return b"".join(out)


def native_fields(snap: NativeSnapshot) -> bytes:
    """The native part of a ``Histogram`` message (schema, zero bucket, spans and deltas)."""
    out = [
        b"\x28" + varint(zigzag(snap.schema)),  # schema = 5 (sint32)
        b"\x31" + _double(snap.zero_threshold),  # zero_threshold = 6
        b"\x38" + varint(snap.zero_count),  # zero_count = 7
        _spans(0x4A, 0x52, snap.negative),  # negative_span = 9, negative_delta = 10
        _spans(0x62, 0x6A, snap.positive),  # positive_span = 12, positive_delta = 13
    ]
    if not snap.positive.spans and not snap.negative.spans and not snap.zero_count:
        # An empty native histogram still needs a (0, 0) span, or it reads as a classic one.
        out.append(_field(0x62, b"\x08\x00\x10\x00"))
    return b"".join(out)


def _exemplar(exemplar: Any) -> bytes:
    """``Exemplar { repeated LabelPair label = 1; double value = 2; Timestamp timestamp = 3; }``"""
    out = [_label_pair(k, v) for k, v in sorted(exemplar.labels.items())]
    out.append(b"\x11" + _double(exemplar.value))
    ts = exemplar.timestamp
    if ts is not None:
        seconds = getattr(ts, "sec", None)
        if seconds is None:
            whole = math.floor(float(ts))
            seconds, nanos = whole, min(round((float(ts) - whole) * 1e9), 999_999_999)
        else:
            nanos = ts.nsec
        out.append(_field(0x1A, b"\x08" + varint(seconds) + b"\x10" + varint(nanos)))
    return b"".join(out)


def _timestamp(sample: Any) -> bytes:
    ts = sample[3]
    if ts is None:
        return b""
    return b"\x30" + varint(int(float(ts) * 1000))  # timestamp_ms = 6 (int64)


class ProtobufRenderer:
    """Encodes a registry as length-delimited ``MetricFamily`` messages.

    :param max_series: encoded label sets kept across scrapes; past it the cache is emptied at the
        next scrape (label churn costs re-encoding, never memory).
    """

    def __init__(self, max_series: int = MAX_CACHED_SERIES) -> None:
        self.max_series = max_series
        self._labels: dict[tuple[Any, ...], bytes] = {}
        self._bounds: dict[str, bytes] = {}
        self._headers: dict[tuple[str, str, int], bytes] = {}

    def render(self, registry: Collects) -> bytes:
        if len(self._labels) >= self.max_series:
            self._labels.clear()
        out: list[bytes] = []
        for metric in registry.collect():
            try:
                body = self._family(metric)
            except RenderError:
                raise
            except Exception as exc:
                raise RenderError(f"cannot encode {metric.name!r}: {exc!r}") from exc
            if body:
                out.append(varint(len(body)))
                out.append(body)
        return b"".join(out)

    # -- pieces ----------------------------------------------------------------------------------
    def _label_bytes(self, labels: dict[str, str], skip: str = "") -> bytes:
        key = (skip, *labels.items())
        cached = self._labels.get(key)
        if cached is None:
            cached = b"".join(
                _label_pair(name, value) for name, value in sorted(labels.items()) if name != skip
            )
            if len(self._labels) < self.max_series:
                self._labels[key] = cached
        return cached

    def _header(self, name: str, documentation: str, kind: int) -> bytes:
        key = (name, documentation, kind)
        header = self._headers.get(key)
        if header is None:
            header = _text(0x0A, name) + _text(0x12, documentation) + b"\x18" + _SMALL[kind]
            if len(self._headers) < self.max_series:
                self._headers[key] = header
        return header

    def _bound(self, le: str) -> bytes:
        encoded = self._bounds.get(le)
        if encoded is None:
            encoded = b"\x11" + _double(float(le))  # Bucket.upper_bound = 2
            if len(self._bounds) < self.max_series:
                self._bounds[le] = encoded
        return encoded

    # -- families --------------------------------------------------------------------------------
    def _family(self, metric: Metric) -> bytes:
        kind = metric.type
        if kind == "counter":
            return self._simple(metric, metric.name + "_total", COUNTER, 0x1A, {"_total"})
        if kind == "gauge":
            return self._simple(metric, metric.name, GAUGE, 0x12, {""})
        if kind == "info":
            return self._simple(metric, metric.name + "_info", GAUGE, 0x12, {"_info"})
        if kind == "stateset":
            return self._simple(metric, metric.name, GAUGE, 0x12, {""})
        if kind in ("unknown", "untyped"):
            return self._simple(metric, metric.name, UNTYPED, 0x2A, {""})
        if kind == "summary":
            return self._summary(metric)
        if kind in ("histogram", "gaugehistogram"):
            return self._histogram(metric)
        raise RenderError(f"no protobuf type for {metric.name!r} of type {kind!r}")

    def _simple(self, metric: Metric, name: str, kind: int, tag: int, suffixes: set[str]) -> bytes:
        """One value per series: Counter = 3, Gauge = 2 or Untyped = 5 in ``Metric``."""
        base = metric.name
        allowed = {base + suffix for suffix in suffixes}
        created = base + "_created"
        parts = [self._header(name, metric.documentation, kind)]
        tag_byte = _SMALL[tag]
        for sample in metric.samples:
            sample_name = sample[0]
            if sample_name not in allowed:
                if sample_name == created:
                    continue
                raise RenderError(f"sample {sample_name!r} does not belong to {name!r}")
            if kind == COUNTER and sample[4] is not None:
                value = b"\x09" + _double(sample[2])
                value += _field(0x12, _exemplar(sample[4]))  # Counter.exemplar = 2
                body = self._label_bytes(sample[1]) + _field(tag, value)
            else:
                # Counter/Gauge/Untyped { double value = 1; }: always 9 bytes.
                body = self._label_bytes(sample[1]) + tag_byte + b"\x09\x09" + _double(sample[2])
            parts.append(_field(0x22, body + _timestamp(sample)))
        return b"".join(parts)

    def _summary(self, metric: Metric) -> bytes:
        base = metric.name
        series: dict[tuple[Any, ...], list[Any]] = {}
        for sample in metric.samples:
            name, labels, value = sample[0], sample[1], sample[2]
            if name == base:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "quantile"))
                entry = series.setdefault(key, [labels, None, None, [], sample])
                entry[3].append(
                    b"\x09" + _double(float(labels["quantile"])) + b"\x11" + _double(value)
                )
            elif name in (base + "_count", base + "_sum"):
                entry = series.setdefault(
                    tuple(sorted(labels.items())), [labels, None, None, [], sample]
                )
                entry[1 if name.endswith("_count") else 2] = value
            elif name != base + "_created":
                raise RenderError(f"sample {name!r} does not belong to summary {base!r}")
        parts = [self._header(base, metric.documentation, SUMMARY)]
        for labels, count, total, quantiles, sample in series.values():
            body = b""
            if count is not None:
                body += b"\x08" + varint(_uint(count))
            if total is not None:
                body += b"\x11" + _double(total)
            body += b"".join(_field(0x1A, q) for q in quantiles)
            parts.append(
                _field(
                    0x22,
                    self._label_bytes(labels, "quantile") + _field(0x22, body) + _timestamp(sample),
                )
            )
        return b"".join(parts)

    def _histogram(self, metric: Metric) -> bytes:
        base = metric.name
        gauge = metric.type == "gaugehistogram"
        count_name = base + ("_gcount" if gauge else "_count")
        sum_name = base + ("_gsum" if gauge else "_sum")
        bucket_name = base + "_bucket"
        native: NativeFamily | None = getattr(metric, "native", None)
        bounds = self._bounds
        # Keyed by the label items in the collector's order (``le`` last in a bucket, as
        # prometheus_client builds them): one tuple per sample, no sort. A series seen under
        # another order is found through its sorted items, computed once per series.
        series: dict[tuple[Any, ...], list[Any]] = {}
        by_sorted: dict[tuple[Any, ...], list[Any]] = {}
        for sample in metric.samples:
            name, labels, value = sample[0], sample[1], sample[2]
            items = tuple(labels.items())
            if name == bucket_name:
                if items and items[-1][0] == "le":
                    items = items[:-1]
                else:
                    items = tuple(item for item in items if item[0] != "le")
            elif name not in (count_name, sum_name):
                if name == base + "_created":
                    continue
                raise RenderError(f"sample {name!r} does not belong to histogram {base!r}")
            entry = series.get(items)
            if entry is None:
                ordered = tuple(sorted(items))
                entry = by_sorted.get(ordered)
                if entry is None:
                    entry = by_sorted[ordered] = [labels, None, None, [], sample, ordered]
                series[items] = entry
            if name == bucket_name:
                le = labels["le"]
                if le == "+Inf":
                    if entry[1] is None:
                        entry[1] = value
                    continue
                bound = bounds.get(le)
                if bound is None:
                    bound = self._bound(le)
                exemplar = sample[4]
                if exemplar is None and type(value) is int and value >= 0:
                    # Bucket { cumulative_count = 1; upper_bound = 2; } framed as Histogram's
                    # field 3, built in one concatenation: the common case, once per bucket.
                    v = _SMALL[value] if value < 0x80 else varint(value)
                    entry[3].append(b"\x1a" + _SMALL[10 + len(v)] + b"\x08" + v + bound)
                else:
                    bucket = _count(0x08, 0x21, value) + bound
                    if exemplar is not None:
                        bucket += _field(0x1A, _exemplar(exemplar))  # Bucket.exemplar = 3
                    entry[3].append(_field(0x1A, bucket))
            elif name == count_name:
                entry[1] = value
            else:
                entry[2] = value
        parts = [self._header(base, metric.documentation, GAUGE_HISTOGRAM if gauge else HISTOGRAM)]
        for labels, count, total, buckets, sample, ordered in by_sorted.values():
            snap = native.series.get(ordered) if native is not None else None
            body: list[bytes] = []
            if snap is not None:
                body.append(b"\x08" + varint(snap.observations))
            elif count is not None:
                body.append(_count(0x08, 0x21, count))
            if total is not None:
                body.append(b"\x11" + _double(total))
            body.extend(buckets)
            if snap is not None:
                body.append(native_fields(snap))
            parts.append(
                _field(
                    0x22,
                    self._label_bytes(labels, "le")
                    + _field(0x3A, b"".join(body))
                    + _timestamp(sample),
                )
            )
        return b"".join(parts)


def _uint(value: Any) -> int:
    """A summary's count: ``uint64`` only in the format (no float twin)."""
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise RenderError(f"summary count {value!r} is not a count")
    return int(number)


def parse_accept(accept: str) -> bool:
    """Whether ``accept`` asks for the protobuf exposition before any text format.

    Prometheus (with native histograms on) sends the protobuf type first with the highest
    ``q``; a scraper that names it with a lower ``q`` than a text type, or not at all, gets text.
    """
    best: tuple[float, int, bool] | None = None
    for position, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for field in fields[1:]:
            key, _, value = field.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            continue
        if not 0 < q <= 1:
            continue
        is_proto = (
            media == "application/vnd.google.protobuf"
            and params.get("proto") == "io.prometheus.client.MetricFamily"
            and params.get("encoding") == "delimited"
        )
        # The highest q wins; among equal q, the first listed (the scraper's order).
        if best is None or (q, -position) > best[:2]:
            best = (q, -position, is_proto)
    return best is not None and best[2]


__all__ = ["PROTOBUF_TYPE", "ProtobufRenderer", "native_fields", "parse_accept", "varint", "zigzag"]
