"""The exemplar sources a registry resolves at construction, and the per-bucket store."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from prometheus_client.samples import Exemplar

from asgi_perf import PerfRegistry
from asgi_perf._exemplars import (
    ERR_EXEMPLAR_LABELS,
    ERR_EXEMPLAR_NAME,
    ERR_EXEMPLARS,
    EXEMPLAR_COMPONENT,
    MAX_EXEMPLAR_RUNES,
    ExemplarHistogram,
    _span_lookup,
    check_labels,
    histogram_class,
    opentelemetry_source,
)
from asgi_perf._histogram import PlainHistogram


class _RecordOnly(Sampler):
    """Spans that record but are not sampled: their traces are never exported."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "record only"


@pytest.fixture
def tracer() -> Tracer:
    """A tracer of a local SDK provider (the global provider is never set)."""
    return TracerProvider().get_tracer("tests")


def _kept(hist: PlainHistogram) -> list[Exemplar | None]:
    """The histogram's exemplars (read through a call: mypy keeps no narrowing across it)."""
    assert hist.exemplars is not None
    return hist.exemplars


def _errors(registry: PerfRegistry) -> float:
    value = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": EXEMPLAR_COMPONENT}
    )
    return value or 0.0


def test_opentelemetry_source_gives_the_current_span_ids(tracer: Tracer) -> None:
    """With opentelemetry-api installed a registry's default source gives the recording,
    sampled span's trace and span ids, hex as in a traceparent header; none outside a span."""
    source = PerfRegistry().exemplar_source
    assert source is not None
    assert source() is None
    with tracer.start_as_current_span("work") as span:
        context = span.get_span_context()
        assert source() == {
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
        }
    assert source() is None


def test_unsampled_spans_give_no_exemplar() -> None:
    """A span that is not recording, or records but is not sampled, leads to no exported trace,
    so it gives no exemplar."""
    source = PerfRegistry().exemplar_source
    assert source is not None
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    for sampler in (ALWAYS_OFF, _RecordOnly()):
        tracer = TracerProvider(sampler=sampler).get_tracer("tests")
        with tracer.start_as_current_span("work"):
            assert source() is None


def test_without_opentelemetry_there_is_no_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-api the default registry has no source at all (the instruments then
    build their plain recorders), and exemplars=False has none either."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # the import now fails
    assert PerfRegistry().exemplar_source is None
    monkeypatch.undo()
    registry = PerfRegistry(exemplars=False)
    assert registry.exemplar_source is None
    assert histogram_class(registry) is PlainHistogram


@pytest.mark.parametrize("bad", [None, "otel", 1, 0.5, {"trace_id": "x"}])
def test_exemplars_option_is_checked(bad: Any) -> None:
    """Anything but a bool or a callable is refused at construction."""
    with pytest.raises(ValueError, match="exemplars must be True") as info:
        PerfRegistry(exemplars=bad)
    assert str(info.value) == ERR_EXEMPLARS.format(bad)


def test_a_callable_source_is_used_and_copied() -> None:
    """A caller's source gives its labels (a private copy); None or an empty mapping gives none."""
    given: list[Mapping[str, str] | None] = [{"request_id": "r-1"}, None, {}]
    registry = PerfRegistry(exemplars=lambda: given.pop(0))
    source = registry.exemplar_source
    assert source is not None
    first = source()
    assert first == {"request_id": "r-1"}
    assert source() is None
    assert source() is None
    assert _errors(registry) == 0


@pytest.mark.parametrize(
    "returned",
    [
        ["trace_id"],
        {"trace-id": "abc"},
        {"0id": "abc"},
        {1: "abc"},
        {"trace_id": 123},
        {"trace_id": "x" * (MAX_EXEMPLAR_RUNES - len("trace_id") + 1)},
    ],
)
def test_a_callable_source_returning_bad_labels_is_counted(returned: Any) -> None:
    """Labels that are not a mapping of valid names to strings within OpenMetrics' 128 runes give
    no exemplar and are counted as an instrumentation error."""
    registry = PerfRegistry(exemplars=lambda: returned)
    assert registry.exemplar_source is not None
    assert registry.exemplar_source() is None
    assert _errors(registry) == 1


def test_a_callable_source_that_raises_is_contained() -> None:
    """A source that raises gives no exemplar; the error is counted, never raised."""

    def broken() -> Mapping[str, str] | None:
        raise RuntimeError("no trace here")

    registry = PerfRegistry(exemplars=broken)
    assert registry.exemplar_source is not None
    assert registry.exemplar_source() is None
    assert _errors(registry) == 1


def test_label_check_limits_and_messages() -> None:
    """128 runes of names and values together pass (counted in characters, not bytes); 129 do
    not; a bad name or value says what was wrong."""
    name = "id"
    exact = {name: "é" * (MAX_EXEMPLAR_RUNES - len(name))}
    assert check_labels(exact) == exact
    with pytest.raises(ValueError, match="129 runes"):
        check_labels({name: "é" * (MAX_EXEMPLAR_RUNES - len(name) + 1)})
    with pytest.raises(ValueError, match="not a valid Prometheus label name") as info:
        check_labels({"a b": "x"})
    assert str(info.value) == ERR_EXEMPLAR_NAME.format("a b")
    with pytest.raises(ValueError, match="must return None or a mapping") as info:
        check_labels("trace")
    assert str(info.value) == ERR_EXEMPLAR_LABELS.format("trace")


def test_histogram_keeps_the_latest_exemplar_per_bucket() -> None:
    """put_exemplar keeps one exemplar per bucket, the latest; exported() adds it to its bucket
    as (le, count, exemplar), the others stay pairs; nothing is allocated before the first."""
    hist = PlainHistogram((0.1, 1.0))
    hist.observe(0.05)
    assert hist.exemplars is None
    assert hist.exported() == hist.cumulative()
    hist.put_exemplar(0.05, {"trace_id": "a"})
    hist.put_exemplar(0.07, {"trace_id": "b"})
    hist.put_exemplar(5.0, {"trace_id": "c"})
    buckets, total, count = hist.exported()
    assert (total, count) == (0.05, 1)
    assert [b[:2] for b in buckets] == [("0.1", 1), ("1.0", 1), ("+Inf", 1)]
    first, second, inf = buckets
    assert first[2].labels == {"trace_id": "b"}
    assert first[2].value == 0.07
    assert len(second) == 2
    assert inf[2].labels == {"trace_id": "c"}
    assert math.isfinite(inf[2].timestamp)


def test_exemplar_histogram_asks_the_source_per_observation() -> None:
    """The histogram built for a registry with a source records as the plain one and keeps what
    the source gives for the observation's bucket."""
    given: Iterator[Mapping[str, str] | None] = iter([None, {"trace_id": "t"}])
    registry = PerfRegistry(exemplars=lambda: next(given))
    hist = histogram_class(registry)((0.1, 1.0))
    assert isinstance(hist, ExemplarHistogram)
    hist.observe(0.5)
    assert hist.exemplars is None
    hist.observe(0.5)
    assert hist.counts == [0, 2, 0]
    assert hist.sum == 1.0
    [_, kept, _] = _kept(hist)
    assert kept is not None
    assert kept.labels == {"trace_id": "t"}


def test_the_fast_span_check_agrees_with_the_public_api(tracer: Tracer) -> None:
    """The span lookup that skips get_current_span() reads OpenTelemetry's own context variable
    and key, and its answer matches the public API's in and out of a span."""
    from opentelemetry import trace

    lookup = _span_lookup()
    assert lookup is not None
    get_context, key = lookup
    assert get_context().get(key) is None
    with tracer.start_as_current_span("work") as span:
        assert get_context().get(key) is span is trace.get_current_span()


@pytest.mark.parametrize(
    "breakage", ["probe disagrees", "no context variable", "no runtime context"]
)
def test_without_the_fast_span_check_the_public_api_answers(
    monkeypatch: pytest.MonkeyPatch, tracer: Tracer, breakage: str
) -> None:
    """OpenTelemetry internals that are not as expected (a release that moved them, another
    runtime context): the probe disagrees or fails, and the source asks get_current_span(),
    with the same answers."""
    from types import SimpleNamespace

    import opentelemetry.context
    import opentelemetry.trace

    if breakage == "probe disagrees":
        # A span set through the public API that the context variable does not show.
        empty = opentelemetry.context.Context
        monkeypatch.setattr(opentelemetry.trace, "set_span_in_context", lambda *a: empty())
    elif breakage == "no context variable":
        runtime = SimpleNamespace(_current_context="not a ContextVar")
        monkeypatch.setattr(opentelemetry.context, "_RUNTIME_CONTEXT", runtime)
        monkeypatch.setattr(opentelemetry.context, "get_current", lambda: None)
    else:
        monkeypatch.setattr(opentelemetry.context, "_RUNTIME_CONTEXT", None)
        monkeypatch.setattr(opentelemetry.context, "get_current", lambda: None)
    assert _span_lookup() is None
    source = opentelemetry_source()
    monkeypatch.undo()
    assert source is not None
    assert source() is None
    with tracer.start_as_current_span("work") as span:
        assert source() == {
            "trace_id": f"{span.get_span_context().trace_id:032x}",
            "span_id": f"{span.get_span_context().span_id:016x}",
        }


def test_resolve_source_refuses_anything_else() -> None:
    """Called directly (as the registry does after its own check), a value that is neither a
    bool nor a callable is still a ValueError."""
    from asgi_perf._exemplars import resolve_source

    with pytest.raises(ValueError, match="exemplars must be True"):
        resolve_source("yes", PerfRegistry())
