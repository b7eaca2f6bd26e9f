"""Fast rendering of the Prometheus text format 0.0.4 and OpenMetrics 1.0 text.

prometheus_client's ``generate_latest`` formats every sample from scratch: it sorts the labels,
escapes every label value three times over and formats the line, 5-9 µs per sample. A series'
label string never changes between scrapes, so :class:`FastRenderer` renders ``name{labels} ``
once per series and reuses it: a series found at the same position as in the previous scrape
costs one dict comparison, any other a lookup in a bounded cache; then the value is formatted.

The output is what the installed prometheus_client writes for the same families (HELP/TYPE
munging, escaping, value formatting, ``_created``/``_gsum``/``_gcount`` moved to gauges in the
0.0.4 format, exemplars and ``# EOF`` in OpenMetrics). What it does not handle (native histogram
samples, anything that raises while formatting) raises :class:`RenderError`, and the caller
renders the scrape with prometheus_client instead.

The package's own collectors hand their series over as rows (:mod:`asgi_perf._rows`) while the
renderer reads the registry: their lines are written straight from the numbers, each series'
prefixes rendered once, without a prometheus_client ``Sample`` per value. Every other collector
is rendered from its samples.

Besides prometheus_client and the standard library only the core's rows and bucket labels are
imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from prometheus_client import exposition as _text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from .._histogram import bucket_labels
from .._rows import Attached, RowsRequest, attached, reading_rows

#: Rendered series kept across scrapes; past this the cache is emptied at the next scrape, so
#: label churn costs re-rendering, never memory.
MAX_CACHED_SERIES = 65_536

_go_string: Callable[[Any], str] = floatToGoString

# Name escaping (the ``escaping=`` negotiated from the Accept header) arrived after
# prometheus_client 0.20, which writes names as they are. Use the library's own
# functions where they exist, so names come out exactly as the installed version writes them.
_escape_metric_name: Callable[[str, str], str] | None = getattr(_om, "escape_metric_name", None)
_escape_label_name: Callable[[str, str], str] | None = getattr(_om, "escape_label_name", None)
_escape_name: Callable[[str, str, Callable[[str, int], bool]], str] | None = getattr(
    _om, "_escape", None
)
_labelname_rune: Callable[[str, int], bool] | None = getattr(_om, "_is_legacy_labelname_rune", None)
_is_legacy_metric_name: Callable[[str], bool] | None = getattr(
    _om, "_is_valid_legacy_metric_name", None
)
_is_valid_exemplar_metric: Callable[[Metric, Sample], bool] = _om._is_valid_exemplar_metric
ALLOW_UTF8: str | None = getattr(_om, "ALLOWUTF8", None)
UNDERSCORES: str | None = getattr(_om, "UNDERSCORES", None)

_HAS_NATIVE: bool = "native_histogram" in Sample._fields
_INF = math.inf
# ints in this range format as "<int>.0", as repr(float(n)) does: below -1e16 repr switches to
# exponents, and from 1e6 up floatToGoString does (Go's %g style).
_INT_LOW = -(10**15)
_INT_HIGH = 1_000_000

# The 0.0.4 format has no type for these OpenMetrics samples: generate_latest writes them as
# gauge families of their own after the family, in this order.
_OM_SUFFIXES = ("_created", "_gcount", "_gsum")
_TEXT_TYPES = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}


# (sample name, labels, rendered ``name{labels} ``) per series of a family, in scrape order.
_Row = tuple[str, dict[str, str], str]
_Rows = dict[str, list[_Row]]


# Per family handed over as rows: label values -> the series' rendered prefixes, in sample order.
_Tables = dict[tuple[Any, ...], dict[tuple[str, ...], tuple[str, ...]]]
_ATTACH = RowsRequest(attach=True)


def _format(value: Any) -> str:
    """A sample value as prometheus_client writes it (the renderers' inline formatting)."""
    kind = type(value)
    if kind is float and -_INF < value < _INT_HIGH:
        return repr(value)
    if kind is int and _INT_LOW < value < _INT_HIGH:
        return f"{value}.0"
    return _go_string(value)


class RenderError(Exception):
    """The fast renderer cannot render a family; render the scrape with prometheus_client."""


class Collects(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _version(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


class FastRenderer:
    """Renders a registry as one text format, caching each series' ``name{labels}`` prefix.

    :param openmetrics: OpenMetrics 1.0 text instead of the Prometheus text format 0.0.4.
    :param escaping: the name escaping scheme prometheus_client's ``choose_encoder`` negotiated
        (``None``: the installed library's default).
    :param native: the negotiated OpenMetrics version includes native histogram samples
        (2.0 and later); such samples raise :class:`RenderError`, an OpenMetrics 1.0 scrape skips
        them as prometheus_client does.
    :param cache: series prefixes shared by renderers; one per configuration is created if omitted.
    """

    def __init__(
        self,
        *,
        openmetrics: bool,
        escaping: str | None = None,
        native: bool = False,
        cache: SeriesCache | None = None,
    ) -> None:
        if escaping is None:
            escaping = UNDERSCORES
        self.openmetrics = openmetrics
        self.escaping = escaping
        self.native = native
        self._cache = cache if cache is not None else SeriesCache()
        self._series = self._cache.table()
        self._headers: dict[tuple[str, str, str, str], str] = {}
        self._rows: _Rows = {}
        self._tables: _Tables = {}
        self._names: dict[tuple[str, bool], tuple[bool, str]] = {}

    # -- names -----------------------------------------------------------------------------------
    def _metric_name(self, name: str) -> str:
        if _escape_metric_name is None or self.escaping is None:  # pragma: no cover - older client
            return name
        return _escape_metric_name(name, self.escaping)

    def _label_name(self, name: str) -> str:
        if _escape_label_name is None or self.escaping is None:  # pragma: no cover - older client
            return name
        return _escape_label_name(name, self.escaping)

    def _sample_name(self, name: str) -> str:
        if self.openmetrics and _escape_name is not None and _labelname_rune is not None:
            # generate_latest (OpenMetrics) escapes sample names with the label-name rules.
            assert self.escaping is not None
            return _escape_name(name, self.escaping, _labelname_rune)
        return self._metric_name(name)

    def _quoted(self, name: str) -> bool:
        """A UTF-8 name written inside the braces, as ``{"name",labels}``."""
        return (
            self.escaping == ALLOW_UTF8
            and _is_legacy_metric_name is not None
            and not _is_legacy_metric_name(name)
        )

    def _name(self, name: str, label: bool) -> tuple[bool, str]:
        """(written inside the braces?, escaped name) of a sample or label name, cached: the
        library's escaping walks the name a character at a time."""
        names = self._names
        known = names.get((name, label))
        if known is None:
            if label:
                known = (False, self._label_name(name))
            elif self._quoted(name):
                known = (True, self._metric_name(name))
            else:
                known = (False, self._sample_name(name))
            if len(names) < MAX_CACHED_SERIES:
                names[name, label] = known
        return known

    def _prefix(self, name: str, labels: dict[str, str]) -> str:
        parts = [
            f'{self._name(k, True)[1]}="{_escape_value(v)}"' for k, v in sorted(labels.items())
        ]
        quoted, sample = self._name(name, False)
        if quoted:
            return "{" + ",".join([sample, *parts]) + "} "
        if parts:
            return sample + "{" + ",".join(parts) + "} "
        return sample + " "

    # -- families --------------------------------------------------------------------------------
    def _header(self, metric: Metric) -> str:
        key = (metric.name, metric.type, metric.documentation, metric.unit)
        header = self._headers.get(key)
        if header is not None:
            return header
        doc = metric.documentation
        if self.openmetrics:
            name = self._metric_name(metric.name)
            lines = [f"# HELP {name} {_escape_value(doc)}", f"# TYPE {name} {metric.type}"]
            if metric.unit:
                lines.append(f"# UNIT {name} {metric.unit}")
        else:
            mname = metric.name
            if metric.type == "counter":
                mname += "_total"
            elif metric.type == "info":
                mname += "_info"
            name = self._metric_name(mname)
            help_text = doc.replace("\\", r"\\").replace("\n", r"\n")
            mtype = _TEXT_TYPES.get(metric.type, metric.type)
            lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {mtype}"]
        header = "\n".join(lines)
        if len(self._headers) < MAX_CACHED_SERIES:
            self._headers[key] = header
        return header

    def render(self, registry: Collects) -> bytes:
        """The exposition of everything ``registry.collect()`` yields.

        Errors from ``collect()`` itself propagate unchanged; a family that cannot be rendered
        raises :class:`RenderError`.
        """
        cache = self._cache
        cache.start_scrape()
        out: list[str] = []
        rows: _Rows = {}
        tables: _Tables = {}
        # The package's own collectors hand their series over as rows (asgi_perf._rows): no
        # prometheus_client Sample is built for them; every other collector is read as it is.
        with reading_rows(_ATTACH):
            for metric in registry.collect():
                try:
                    out.append(self._header(metric))
                    carried = attached(metric)
                    if carried is not None:
                        self._row_lines(metric, carried, out, tables)
                    elif self.openmetrics:
                        self._openmetrics_samples(metric, out, rows)
                    else:
                        self._text_samples(metric, out, rows)
                except Exception as exc:
                    raise RenderError(f"cannot render {metric.name!r}: {exc!r}") from exc
        # Families gone from this scrape are dropped: the rows never outgrow the registry.
        self._rows = rows
        self._tables = tables
        if self.openmetrics:
            out.append("# EOF")
        elif not out:
            return b""
        out.append("")
        return "\n".join(out).encode("utf-8")

    def _row_lines(
        self, metric: Metric, carried: Attached, out: list[str], out_tables: _Tables
    ) -> None:
        """The lines of a family handed over as rows: the samples ``to_metric`` would build,
        each series' prefixes rendered once and kept while the series is in the scrape."""
        family, labelnames = carried
        kind = family.kind
        key = (metric.name, kind, family.bounds, labelnames)
        prev = self._tables.get(key, {})
        table: dict[tuple[str, ...], tuple[str, ...]] = {}
        out_tables[key] = table
        append = out.append
        fmt = _format
        if kind == "histogram":
            les = (*bucket_labels(family.bounds), "+Inf")
            # As HistogramMetricFamily: no _count/_sum when a bucket bound is negative.
            totals = float(les[0]) >= 0
            buckets = len(les)
            # Exemplars are OpenMetrics only; the 0.0.4 format has none.
            exemplars = family.exemplars if self.openmetrics else None
            for values, (cumulative, total) in family.rows:
                prefixes = prev.get(values) or self._series_prefixes(
                    metric.name, kind, labelnames, values, les
                )
                table[values] = prefixes
                if len(cumulative) != buckets:
                    raise ValueError(f"{len(cumulative)} bucket counts for {buckets} buckets")
                kept = exemplars.get(values) if exemplars else None
                if kept is None:
                    # The prefixes end with _count's and _sum's: zip stops at the buckets.
                    for prefix, value in zip(prefixes, cumulative, strict=False):
                        append(prefix + fmt(value))
                else:
                    for prefix, value, exemplar in zip(prefixes, cumulative, kept, strict=False):
                        line = prefix + fmt(value)
                        append(line if exemplar is None else line + _exemplar_text(exemplar))
                if totals:
                    append(prefixes[-2] + fmt(cumulative[-1]))
                    append(prefixes[-1] + fmt(total))
        elif kind == "summary":
            for values, (count, total) in family.rows:
                prefixes = prev.get(values) or self._series_prefixes(
                    metric.name, kind, labelnames, values
                )
                table[values] = prefixes
                append(prefixes[0] + fmt(count))
                append(prefixes[1] + fmt(total))
        else:
            for values, value in family.rows:
                prefixes = prev.get(values) or self._series_prefixes(
                    metric.name, kind, labelnames, values
                )
                table[values] = prefixes
                append(prefixes[0] + fmt(value))

    def _series_prefixes(
        self,
        name: str,
        kind: str,
        labelnames: tuple[str, ...],
        values: tuple[str, ...],
        les: tuple[str, ...] = (),
    ) -> tuple[str, ...]:
        labels = dict(zip(labelnames, values, strict=True))
        prefix = self._prefix
        if kind == "histogram":
            buckets = [prefix(f"{name}_bucket", {**labels, "le": le}) for le in les]
            return (*buckets, prefix(f"{name}_count", labels), prefix(f"{name}_sum", labels))
        if kind == "summary":
            return (prefix(f"{name}_count", labels), prefix(f"{name}_sum", labels))
        if kind == "counter":
            return (prefix(f"{name}_total", labels),)
        return (prefix(name, labels),)

    def _text_samples(self, metric: Metric, out: list[str], rows_out: _Rows) -> None:
        series = self._series
        get = series.get
        room = self._cache.room
        prefix_of = self._prefix
        append = out.append
        # The family's series as rendered last scrape, in order: a series at the same position
        # with equal labels reuses its prefix for the cost of one dict comparison.
        prev = self._rows.get(metric.name, ())
        n_prev = len(prev)
        rows: list[_Row] = []
        keep = rows.append
        rows_out[metric.name] = rows
        base = metric.name
        moved = {base + suffix: suffix for suffix in _OM_SUFFIXES}
        extra: dict[str, list[str]] | None = None
        for i, sample in enumerate(metric.samples):
            name = sample[0]
            labels = sample[1]
            if i < n_prev and (row := prev[i])[0] == name and row[1] == labels:
                prefix = row[2]
            else:
                key = (name, *labels.items())
                cached = get(key)
                if cached is None:
                    cached = prefix_of(name, labels)
                    if room():
                        series[key] = cached
                prefix = cached
                # A private copy: the collector's dict may be reused and changed in place.
                row = (name, dict(labels), prefix)
            keep(row)
            if _HAS_NATIVE and sample[5] is not None:
                raise RenderError("native histogram samples")
            value: Any = sample[2]  # float by annotation; collectors pass ints too
            kind = type(value)
            if kind is float and -_INF < value < _INT_HIGH:
                text = repr(value)
            elif kind is int and _INT_LOW < value < _INT_HIGH:
                text = f"{value}.0"
            else:
                text = _go_string(value)
            timestamp = sample[3]
            if timestamp is None:
                line = prefix + text
            else:
                line = f"{prefix}{text} {int(float(timestamp) * 1000):d}"
            if name in moved:
                if extra is None:
                    extra = {}
                extra.setdefault(moved[name], []).append(line)
            else:
                append(line)
        if extra:
            help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            for suffix, lines in sorted(extra.items()):
                name = self._metric_name(base + suffix)
                append(f"# HELP {name} {help_text}")
                append(f"# TYPE {name} gauge")
                out.extend(lines)

    def _openmetrics_samples(self, metric: Metric, out: list[str], rows_out: _Rows) -> None:
        series = self._series
        get = series.get
        room = self._cache.room
        prefix_of = self._prefix
        append = out.append
        # The family's series as rendered last scrape, in order: a series at the same position
        # with equal labels reuses its prefix for the cost of one dict comparison.
        prev = self._rows.get(metric.name, ())
        n_prev = len(prev)
        rows: list[_Row] = []
        keep = rows.append
        rows_out[metric.name] = rows
        for i, sample in enumerate(metric.samples):
            name = sample[0]
            labels = sample[1]
            if i < n_prev and (row := prev[i])[0] == name and row[1] == labels:
                prefix = row[2]
            else:
                key = (name, *labels.items())
                cached = get(key)
                if cached is None:
                    cached = prefix_of(name, labels)
                    if room():
                        series[key] = cached
                prefix = cached
                # A private copy: the collector's dict may be reused and changed in place.
                row = (name, dict(labels), prefix)
            keep(row)
            if _HAS_NATIVE and sample[5] is not None:
                if self.native:
                    raise RenderError("native histogram samples")
                continue  # OpenMetrics 1.0 has no native histograms: generate_latest skips them
            value: Any = sample[2]  # float by annotation; collectors pass ints too
            kind = type(value)
            if kind is float and -_INF < value < _INT_HIGH:
                text = repr(value)
            elif kind is int and _INT_LOW < value < _INT_HIGH:
                text = f"{value}.0"
            else:
                text = _go_string(value)
            timestamp = sample[3]
            exemplar = sample[4]
            if timestamp is None and not exemplar:
                append(prefix + text)
                continue
            line = prefix + text
            if timestamp is not None:
                line += f" {timestamp}"
            if exemplar:
                line += self._exemplar(metric, sample)
            append(line)

    @staticmethod
    def _exemplar(metric: Metric, sample: Sample) -> str:
        exemplar = sample.exemplar
        assert exemplar is not None
        if not _is_valid_exemplar_metric(metric, sample):
            raise ValueError(
                f"Metric {metric.name} has exemplars, but is not a histogram bucket or counter"
            )
        return _exemplar_text(exemplar)


def _exemplar_text(exemplar: Exemplar) -> str:
    """`` # {labels} value [timestamp]``: an OpenMetrics exemplar as prometheus_client writes it."""
    labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(exemplar.labels.items()))
    text = f" # {{{labels}}} {_go_string(exemplar.value)}"
    if exemplar.timestamp is not None:
        text += f" {exemplar.timestamp}"
    return text


class SeriesCache:
    """Rendered ``name{labels} `` prefixes: one table per renderer, one bound over all of them.

    A table is keyed by (sample name, *label items). When a scrape starts with the cache full,
    every table is emptied, and while it is full no series is added: a label set that churns costs
    re-rendering, never unbounded memory.
    """

    def __init__(self, max_series: int = MAX_CACHED_SERIES) -> None:
        if max_series < 0:
            raise ValueError(f"max_series must be >= 0, got {max_series!r}")
        self.max_series = max_series
        self._tables: list[dict[tuple[Any, ...], str]] = []

    def table(self) -> dict[tuple[Any, ...], str]:
        table: dict[tuple[Any, ...], str] = {}
        self._tables.append(table)
        return table

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables)

    def start_scrape(self) -> None:
        if len(self) >= self.max_series:
            for table in self._tables:
                table.clear()

    def room(self) -> bool:
        return len(self) < self.max_series


class Renderers:
    """The fast renderer for each encoder prometheus_client's ``choose_encoder`` picks.

    Recognises ``generate_latest`` of either format, bare or as the ``functools.partial``
    carrying the negotiated ``escaping``/``version``; any other encoder gets ``None`` (render
    with it as is). Renderers share one :class:`SeriesCache`, so Accept headers that vary cannot
    multiply the memory the cache may hold.
    """

    def __init__(self, max_series: int = MAX_CACHED_SERIES) -> None:
        self.cache = SeriesCache(max_series)
        self._renderers: dict[tuple[bool, str | None, bool], FastRenderer] = {}

    def for_encoder(self, encoder: Callable[..., bytes]) -> FastRenderer | None:
        func: Any = encoder
        keywords: dict[str, Any] = {}
        if isinstance(encoder, partial):
            if encoder.args:
                return None
            func, keywords = encoder.func, dict(encoder.keywords)
        if func is _text.generate_latest:
            openmetrics = False
        elif func is _om.generate_latest:
            openmetrics = True
        else:
            return None
        escaping = keywords.pop("escaping", None)
        native = False
        if openmetrics and "version" in keywords:
            version = _version(str(keywords.pop("version")))
            if version is None:
                return None
            native = version >= (2, 0, 0)
        if keywords or not (escaping is None or isinstance(escaping, str)):
            return None
        key = (openmetrics, escaping, native)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = FastRenderer(
                openmetrics=openmetrics, escaping=escaping, native=native, cache=self.cache
            )
            self._renderers[key] = renderer
        return renderer


__all__ = ["MAX_CACHED_SERIES", "FastRenderer", "RenderError", "Renderers", "SeriesCache"]
