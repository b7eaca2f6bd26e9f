"""Compatibility with the peers' metric names, so existing dashboards and queries keep answering.

A :class:`Compat` describes how the HTTP metrics are *exposed*: other metric names, other label
names, constant labels, the value of the unmatched route, grouped status classes, the peers'
default buckets and prometheus-fastapi-instrumentator's label-less high-resolution histogram.
``PerfRegistry(compat="prometheus-fastapi-instrumentator")`` picks a named preset from
:data:`PRESETS`; ``Compat.preset(name, **changes)`` starts from one and changes some knobs.

Names and labels are rewritten when ``/metrics`` (or a push) is rendered, never on the request
path: the registry, the summary, the dashboard and the alert rules keep the catalogue's names.
Only two knobs reach the request path, and both are decided when the middleware is built: the
status grouping (a different table, same lookup) and the high-resolution histogram (one more
observation per request, only when it is configured).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from ._histogram import check_buckets
from ._labels import UNMATCHED
from ._native_snapshots import NativeFamily
from ._rows import materialize
from .catalogue import CATALOGUE, HIGHR_BUCKETS, STANDARD_METRICS

#: The catalogue metric of the label-less high-resolution duration histogram.
HIGHR_METRIC = "http_request_duration_highr_seconds"
#: prometheus-fastapi-instrumentator's ``latency_highr_buckets`` (``metrics.default()``): the
#: catalogue's buckets of :data:`HIGHR_METRIC`.
PFI_HIGHR_BUCKETS: tuple[float, ...] = HIGHR_BUCKETS
#: prometheus_client's default histogram buckets: starlette-exporter's default, and the
#: OpenTelemetry semantic conventions' advice for ``http.server.request.duration``.
PROMETHEUS_DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: The HTTP label names a :class:`Compat` may rename.
HTTP_LABELS = frozenset({"method", "route", "status", "exception"})

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

ERR_PRESET = "unknown compat preset {!r}; the presets are {}"
ERR_COMPAT = "compat must be a preset name ({}) or a Compat, got {!r}"
ERR_RENAME_METRIC = "metric_names: {!r} is not an HTTP metric of the catalogue"
ERR_METRIC_NAME = "metric_names: {!r} is not a valid Prometheus metric name"
ERR_COUNTER_NAME = "metric_names: counter {!r} must keep the _total suffix, got {!r}"
ERR_DUPLICATE_NAME = "metric_names: two metrics would be exposed as {!r}"
ERR_PRESET_OPTION = "Compat.preset({!r}): {}"
ERR_RENAME_LABEL = "label_names: {!r} is not an HTTP label ({})"
ERR_LABEL_NAME = "{}: {!r} is not a valid Prometheus label name"
ERR_DUPLICATE_LABEL = "label {!r} would appear twice on one series"
ERR_LABEL_VALUE = "extra_labels: the value of {!r} must be a string, got {!r}"
ERR_UNMATCHED = "unmatched must be a non-empty string or None, got {!r}"


def _frozen(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class Compat:
    """How the HTTP metrics are exposed, for dashboards written against another library.

    :param metric_names: catalogue name -> exposed name (the registry's namespace is applied
        to it as to every name). Counters keep their ``_total`` suffix.
    :param label_names: HTTP label (``method``, ``route``, ``status``, ``exception``) -> exposed
        label name, on every HTTP metric.
    :param extra_labels: constant labels added to every HTTP series (starlette-exporter's
        ``app_name``).
    :param unmatched: the route label's value for requests no route matched (default
        ``__unmatched__``).
    :param group_status: the middleware's default for ``group_status`` (``2xx`` instead of
        ``200``); an explicit ``group_status=`` on the middleware wins.
    :param buckets: the middleware's default duration buckets; an explicit ``buckets=`` wins.
    :param highr_buckets: also record ``http_request_duration_highr_seconds``, a histogram
        without labels, with these buckets (one more observation per request).
    """

    metric_names: Mapping[str, str] = field(default_factory=dict)
    label_names: Mapping[str, str] = field(default_factory=dict)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    unmatched: str | None = None
    group_status: bool = False
    buckets: tuple[float, ...] | None = None
    highr_buckets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        names = _frozen(self.metric_names)
        labels = _frozen(self.label_names)
        extra = _frozen(self.extra_labels)
        exposed = [names.get(m, m) for m, spec in CATALOGUE.items() if spec.component == "http"]
        others = {m for m, spec in CATALOGUE.items() if spec.component != "http"}
        for target in exposed:
            if exposed.count(target) > 1 or target in others or target in STANDARD_METRICS:
                raise ValueError(ERR_DUPLICATE_NAME.format(target))
        for source, target in names.items():
            spec = CATALOGUE.get(source)
            if spec is None or spec.component != "http":
                raise ValueError(ERR_RENAME_METRIC.format(source))
            if not isinstance(target, str) or not _NAME_RE.match(target):
                raise ValueError(ERR_METRIC_NAME.format(target))
            if spec.kind == "counter" and not target.endswith("_total"):
                raise ValueError(ERR_COUNTER_NAME.format(source, target))
        for source, target in labels.items():
            if source not in HTTP_LABELS:
                raise ValueError(ERR_RENAME_LABEL.format(source, ", ".join(sorted(HTTP_LABELS))))
            if not isinstance(target, str) or not _LABEL_RE.match(target) or target == "le":
                raise ValueError(ERR_LABEL_NAME.format("label_names", target))
        for name, value in extra.items():
            if not isinstance(name, str) or not _LABEL_RE.match(name) or name.startswith("__"):
                raise ValueError(ERR_LABEL_NAME.format("extra_labels", name))
            if not isinstance(value, str):
                raise ValueError(ERR_LABEL_VALUE.format(name, value))
        final = [labels.get(label, label) for label in HTTP_LABELS] + list(extra)
        for label in final:
            if final.count(label) > 1 or label in ("le", "quantile"):
                raise ValueError(ERR_DUPLICATE_LABEL.format(label))
        if self.unmatched is not None and (
            not isinstance(self.unmatched, str) or not self.unmatched
        ):
            raise ValueError(ERR_UNMATCHED.format(self.unmatched))
        object.__setattr__(self, "metric_names", names)
        object.__setattr__(self, "label_names", labels)
        object.__setattr__(self, "extra_labels", extra)
        object.__setattr__(self, "group_status", bool(self.group_status))
        if self.buckets is not None:
            object.__setattr__(self, "buckets", check_buckets(self.buckets))
        if self.highr_buckets is not None:
            object.__setattr__(self, "highr_buckets", check_buckets(self.highr_buckets))

    @classmethod
    def preset(cls, name: str, **changes: Any) -> Compat:
        """The preset ``name`` (see :data:`PRESETS`), with some knobs changed."""
        try:
            base = PRESETS[name]
        except (KeyError, TypeError):
            raise ValueError(ERR_PRESET.format(name, ", ".join(sorted(PRESETS)))) from None
        if not changes:
            return base
        try:
            return replace(base, **changes)
        except TypeError as exc:  # an unknown knob
            raise ValueError(ERR_PRESET_OPTION.format(name, exc)) from None

    @property
    def renames(self) -> bool:
        """Whether exposition rewrites anything (names, labels or values)."""
        return bool(self.metric_names or self.label_names or self.extra_labels or self.unmatched)

    def exposed_name(self, name: str) -> str:
        """The exposed name of catalogue metric ``name``, before the namespace."""
        return self.metric_names.get(name, name)


PRESETS: Mapping[str, Compat] = MappingProxyType(
    {
        # Instrumentator().instrument(app).expose(app) with metrics.default():
        # http_requests_total{handler,status,method} (status grouped), the duration histogram
        # by handler and method, request/response size summaries by handler, the label-less
        # high-resolution histogram; untemplated requests labelled "none".
        "prometheus-fastapi-instrumentator": Compat(
            metric_names={"http_requests_in_progress": "http_requests_inprogress"},
            label_names={"route": "handler"},
            unmatched="none",
            group_status=True,
            highr_buckets=PFI_HIGHR_BUCKETS,
        ),
        # PrometheusMiddleware with its defaults: starlette_requests_total and
        # starlette_request_duration_seconds by method, path, status_code and app_name.
        "starlette-exporter": Compat(
            metric_names={
                "http_requests_total": "starlette_requests_total",
                "http_request_duration_seconds": "starlette_request_duration_seconds",
                "http_requests_in_progress": "starlette_requests_in_progress",
            },
            label_names={"route": "path", "status": "status_code"},
            extra_labels={"app_name": "starlette"},
            buckets=PROMETHEUS_DEFAULT_BUCKETS,
        ),
        # opentelemetry-instrumentation-asgi (stable HTTP semantic conventions) read through the
        # OpenTelemetry Prometheus exporter.
        "opentelemetry": Compat(
            metric_names={
                "http_request_duration_seconds": "http_server_request_duration_seconds",
                "http_requests_in_progress": "http_server_active_requests",
            },
            label_names={
                "method": "http_request_method",
                "route": "http_route",
                "status": "http_response_status_code",
            },
            buckets=PROMETHEUS_DEFAULT_BUCKETS,
        ),
    }
)


def resolve(compat: Compat | str | None) -> Compat | None:
    """A preset name or a :class:`Compat` as a :class:`Compat` (``None`` stays ``None``)."""
    if compat is None or isinstance(compat, Compat):
        return compat
    if isinstance(compat, str):
        return Compat.preset(compat)
    raise ValueError(ERR_COMPAT.format(", ".join(sorted(PRESETS)), compat))


class Collects(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Plan:
    """How one exposed family is rewritten."""

    __slots__ = ("extra", "labels", "name", "old", "route", "unmatched")

    def __init__(
        self,
        old: str,
        name: str,
        labels: Mapping[str, str],
        extra: Mapping[str, str],
        unmatched: str | None,
    ) -> None:
        self.old = old
        self.name = name
        self.labels = labels
        self.extra = dict(extra)
        self.route = labels.get("route", "route")
        self.unmatched = unmatched

    def apply(self, family: Metric) -> Metric:
        copy = Metric(self.name, family.documentation, family.type, family.unit)
        cut = len(self.old)
        relabel = self._relabel
        copy.samples = [
            sample._replace(name=self.name + sample.name[cut:], labels=relabel(sample.labels))
            for sample in family.samples
        ]
        native: NativeFamily | None = getattr(family, "native", None)
        if native is not None:
            # The native buckets travel beside the samples, keyed by the same labels: renamed too.
            moved = NativeFamily()
            for key, snapshot in native.series.items():
                moved.series[tuple(sorted(relabel(dict(key)).items()))] = snapshot
            copy.native = moved  # type: ignore[attr-defined]
        return copy

    def _relabel(self, labels: Mapping[str, str]) -> dict[str, str]:
        rename = self.labels
        out = {rename.get(k, k): v for k, v in labels.items()}
        if self.unmatched is not None and out.get(self.route) == UNMATCHED:
            out[self.route] = self.unmatched
        if self.extra:
            out.update(self.extra)
        return out


class CompatView:
    """Another collector's families with a :class:`Compat`'s names, labels and values.

    Families that are not HTTP metrics pass through as they are; the others are copied with the
    new names once per scrape (a dict comprehension per series).
    """

    def __init__(self, source: Collects, compat: Compat, namespace: str = "") -> None:
        self.source = source
        self.compat = compat

        def full(name: str) -> str:
            return f"{namespace}_{name}" if namespace else name

        self._plans: dict[str, _Plan] = {}
        for name, spec in CATALOGUE.items():
            if spec.component != "http":
                continue
            old = full(name)
            new = full(compat.exposed_name(name))
            if spec.kind == "counter":
                old, new = old.removesuffix("_total"), new.removesuffix("_total")
            self._plans[old] = _Plan(
                old, new, compat.label_names, compat.extra_labels, compat.unmatched
            )

    def collect(self) -> Iterator[Metric]:
        plans = self._plans
        for family in self.source.collect():
            plan = plans.get(family.name)
            # A family handed over as rows (asgi_perf._rows) gets its samples to be renamed.
            yield family if plan is None else plan.apply(materialize(family))


def exposed(source: Collects, compat: Compat | None, namespace: str = "") -> Collects:
    """``source`` as Prometheus should see it: through a :class:`CompatView` when ``compat``
    renames anything, else ``source`` itself."""
    if compat is None or not compat.renames:
        return source
    return CompatView(source, compat, namespace)


__all__ = [
    "ERR_COMPAT",
    "ERR_COUNTER_NAME",
    "ERR_DUPLICATE_LABEL",
    "ERR_DUPLICATE_NAME",
    "ERR_LABEL_NAME",
    "ERR_LABEL_VALUE",
    "ERR_METRIC_NAME",
    "ERR_PRESET",
    "ERR_PRESET_OPTION",
    "ERR_RENAME_LABEL",
    "ERR_RENAME_METRIC",
    "ERR_UNMATCHED",
    "HIGHR_METRIC",
    "HTTP_LABELS",
    "PFI_HIGHR_BUCKETS",
    "PRESETS",
    "PROMETHEUS_DEFAULT_BUCKETS",
    "Collects",
    "Compat",
    "CompatView",
    "exposed",
    "resolve",
]
