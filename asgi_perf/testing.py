"""Test helpers for applications that use asgi-perf (and for asgi-perf's own tests).

``fresh_registry()`` gives an isolated registry, ``sample()`` reads one value by catalogue name and
labels, ``series()`` counts a metric's label combinations, ``scrape()`` calls an ASGI app in-process
and returns the response, with no HTTP client needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._types import ASGIApp, Message
from .registry import PerfRegistry


def fresh_registry(*, namespace: str = "", max_series_per_metric: int = 2000) -> PerfRegistry:
    """A new :class:`PerfRegistry` on a new, private Prometheus registry."""
    return PerfRegistry(namespace=namespace, max_series_per_metric=max_series_per_metric)


def sample(
    registry: PerfRegistry,
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    suffix: str = "",
) -> float | None:
    """The current value of ``name`` (a catalogue name, namespace added for you) or ``None``.

    ``suffix`` reads a histogram part: ``"_count"``, ``"_sum"`` or ``"_bucket"`` (with ``le`` in
    ``labels``). Counters are read by their catalogue name, which already ends in ``_total``.
    """
    full = registry.metric_name(name) + suffix
    return registry.prometheus.get_sample_value(full, dict(labels or {}))


def samples(registry: PerfRegistry, name: str, *, suffix: str = "") -> list[dict[str, str]]:
    """The label sets of every sample of ``name`` (with ``suffix``) currently exposed."""
    full = registry.metric_name(name) + suffix
    found: list[dict[str, str]] = []
    for family in registry.prometheus.collect():
        found.extend(dict(s.labels) for s in family.samples if s.name == full)
    return found


def series(registry: PerfRegistry, name: str) -> int:
    """How many distinct label sets ``name`` exposes (histograms: counted once per series)."""
    spec = registry.spec(name)
    suffix = "_count" if spec.kind == "histogram" else ""
    return len(samples(registry, name, suffix=suffix))


@dataclass
class Response:
    """What :func:`scrape` got back."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


async def scrape(
    app: ASGIApp,
    path: str = "/metrics",
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> Response:
    """Call ``app`` in-process with one HTTP request and collect the response.

    ``path`` may carry a query string (``/metrics/history?limit=5``).
    """
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
        "server": ("127.0.0.1", 80),
    }
    sent: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Response(
        status=start["status"],
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])},
        body=body,
    )


__all__ = ["Response", "fresh_registry", "sample", "samples", "scrape", "series"]
