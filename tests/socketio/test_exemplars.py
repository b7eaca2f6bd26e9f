"""Socket.IO handler durations carry the exemplar of the span the handler ran in."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics import exposition

from asgi_perf import PerfRegistry
from asgi_perf.socketio._stats import socketio_stats

generate_latest: Callable[..., bytes] = exposition.generate_latest


def test_handler_duration_bucket_carries_the_span_ids() -> None:
    """A handler observed inside a recording span leaves the span's trace id on its bucket;
    the batcher's histograms, not tied to one request, never carry one."""
    registry = PerfRegistry()
    stats = socketio_stats(registry)
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("event") as span:
        stats.observe_handler(("/", "chat"), 0.02)
        stats.batch_wait.observe(0.01)
    trace_id = f"{span.get_span_context().trace_id:032x}"
    lines = [
        line for line in generate_latest(registry.prometheus).decode().splitlines() if "# {" in line
    ]
    assert len(lines) == 1
    assert lines[0].startswith("socketio_handler_duration_seconds_bucket")
    assert f'trace_id="{trace_id}"' in lines[0]
