"""Timer durations carry the exemplar of the span the timed code ran in."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics import exposition

from asgi_perf import PerfRegistry

generate_latest: Callable[..., bytes] = exposition.generate_latest


def test_timer_bucket_carries_the_span_ids() -> None:
    """A timer that ends inside a recording span keeps the span's trace id on its bucket; the
    exact extremes and the JSON stats are unchanged by it."""
    registry = PerfRegistry()
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("job") as span, registry.timer("job"):
        pass
    with registry.timer("job"):
        pass
    trace_id = f"{span.get_span_context().trace_id:032x}"
    lines = [
        line for line in generate_latest(registry.prometheus).decode().splitlines() if "# {" in line
    ]
    assert len(lines) == 1
    assert lines[0].startswith("app_timer_duration_seconds_bucket{le=")
    assert f'trace_id="{trace_id}"' in lines[0]
    assert registry.stats("job")["count"] == 2
