"""The ``/metrics`` ASGI app: content negotiation, gzip, optional auth, off-loop rendering."""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .._types import OWN_ENDPOINT_KEY, Message, Receive, Scope, Send
from ..compat import exposed
from ..registry import PerfRegistry
from ._multiprocess import MULTIPROCESS
from ._render import RenderError, Renderers

ERR_TOKEN = "token must be a non-empty string"
ERR_BASIC = "basic_auth must be a (username, password) pair of non-empty strings"
ERR_ALLOW = "allow entry {!r} is not an IP address or network: {}"
ERR_ALLOW_EMPTY = (
    "allow must name at least one IP address or network; an empty allow-list would let no one "
    "in (pass allow=None for no address restriction)"
)
WARN_OPEN_OPERATIONS = (
    "the operations endpoints (summary, history, alerts, dashboard) are on with no token, "
    "basic_auth or allow: anyone who reaches the app can read them (slow SQL text, host figures); "
    "protect them with basic_auth= or allow="
)

logger = logging.getLogger("asgi_perf.export")
ERR_REGISTRY = "metrics_app needs a PerfRegistry or a prometheus_client CollectorRegistry, got {!r}"

#: Last path segments served as operations endpoints (with ``operations=True``) instead of the
#: metrics text: the three JSON endpoints, the dashboard page and the page's script and stylesheet.
OPS_ENDPOINTS = frozenset(
    {
        "summary",
        "history",
        "alerts",
        "dashboard",
        "dashboard.js",
        "dashboard.css",
        "uplot.js",
        "uplot.css",
    }
)

#: Responses smaller than this are sent uncompressed: gzip would cost more than it saves.
GZIP_MIN_SIZE = 500


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: Sequence[tuple[bytes, bytes]] = (),
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class MetricsApp:
    """ASGI app serving a registry in the Prometheus text format or OpenMetrics.

    Build it with :func:`metrics_app`.
    """

    def __init__(
        self,
        registry: PerfRegistry | CollectorRegistry,
        *,
        token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        allow: Iterable[str] | None = None,
        gzip: bool = True,
        render_in_thread: bool = True,
        operations: bool = False,
    ) -> None:
        if isinstance(registry, PerfRegistry):
            self.perf: PerfRegistry | None = registry
            self.prometheus = registry.prometheus
        elif isinstance(registry, CollectorRegistry):
            self.perf = None
            self.prometheus = registry
        else:
            raise ValueError(ERR_REGISTRY.format(registry))
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError(ERR_TOKEN)
        if basic_auth is not None and (
            not isinstance(basic_auth, tuple)
            or len(basic_auth) != 2
            or not all(isinstance(part, str) and part for part in basic_auth)
        ):
            raise ValueError(ERR_BASIC)
        networks = []
        for entry in [allow] if isinstance(allow, str) else allow or ():
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except (TypeError, ValueError) as exc:
                raise ValueError(ERR_ALLOW.format(entry, exc)) from None
        if allow is not None and not networks:
            raise ValueError(ERR_ALLOW_EMPTY)
        self._token = f"Bearer {token}".encode() if token else None
        self._basic = f"{basic_auth[0]}:{basic_auth[1]}".encode() if basic_auth else None
        self._networks = tuple(networks)
        self._gzip = gzip
        self._in_thread = render_in_thread
        self._fast = Renderers()
        self.operations = operations
        if operations and not (token or basic_auth or networks):
            logger.warning(WARN_OPEN_OPERATIONS)
        if self.perf is not None:
            # With PROMETHEUS_MULTIPROC_DIR set, every worker shares its counters and publishes
            # the rest; any worker serves the merged view (ValueError if the directory is unusable).
            from ._multiprocess import enable_from_environment

            enable_from_environment(self.perf)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        # Tells a PerfMiddleware around this app that the request is the package's own traffic.
        scope[OWN_ENDPOINT_KEY] = True
        method = scope.get("method")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"Method Not Allowed\n", extra=[(b"allow", b"GET, HEAD")])
            return
        denied = self.check_access(scope)
        if denied is not None:
            await _respond(send, *denied)
            return
        endpoint = str(scope.get("path") or "").rstrip("/").rpartition("/")[2]
        if endpoint in OPS_ENDPOINTS:
            if not self.operations:
                await _respond(send, 404, b"Not Found\n", head=method == "HEAD")
                return
            await self.serve_operations(endpoint, scope, send, head=method == "HEAD")
            return
        await self.serve_metrics(scope, send, head=method == "HEAD")

    async def serve_operations(
        self, endpoint: str, scope: Scope, send: Send, *, head: bool
    ) -> None:
        """The JSON endpoints (summary, history, alerts), the dashboard page and its assets."""
        from .. import operations  # the operations layer loads only when one of its paths is hit

        if self.perf is None:
            await _respond(send, 404, b"Not Found: operations need a PerfRegistry\n", head=head)
            return
        status, body, content_type, headers = await operations.render_endpoint(
            endpoint, self.perf, bytes(scope.get("query_string") or b""), self._in_thread
        )
        await _respond(send, status, body, content_type, headers, head=head)

    def check_access(
        self, scope: Scope
    ) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]] | None:
        """``None`` if the request may read metrics, else (status, body, type, headers) to send."""
        if self._networks:
            client = scope.get("client")
            try:
                address = ipaddress.ip_address(client[0]) if client else None
            except ValueError:
                address = None
            if address is None or not any(address in net for net in self._networks):
                return 403, b"Forbidden\n", "text/plain; charset=utf-8", []
        if self._token is not None or self._basic is not None:
            given = _header(scope, b"authorization").encode("latin-1")
            ok = (self._token is not None and hmac.compare_digest(given, self._token)) or (
                self._basic is not None and self._basic_ok(given, self._basic)
            )
            if not ok:
                challenge = b'Basic realm="metrics"' if self._basic else b'Bearer realm="metrics"'
                return (
                    401,
                    b"Unauthorized\n",
                    "text/plain; charset=utf-8",
                    [(b"www-authenticate", challenge)],
                )
        return None

    @staticmethod
    def _basic_ok(given: bytes, expected: bytes) -> bool:
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, expected)

    async def serve_metrics(self, scope: Scope, send: Send, *, head: bool) -> None:
        accept = _header(scope, b"accept")
        wants_gzip = self._gzip and "gzip" in _header(scope, b"accept-encoding").lower()
        render = self._renderer(accept, wants_gzip)
        if self._in_thread:
            # Rendering walks every sample; a 20k-sample registry takes tens of milliseconds,
            # which must not stall the event loop serving the application.
            loop = asyncio.get_running_loop()
            body, encoding, content_type = await loop.run_in_executor(None, render)
        else:
            body, encoding, content_type = render()
        extra = [(b"vary", b"Accept, Accept-Encoding")]
        if encoding:
            extra.append((b"content-encoding", encoding.encode("ascii")))
        await _respond(send, 200, body, content_type, extra, head=head)

    def _renderer(self, accept: str, wants_gzip: bool) -> Callable[[], tuple[bytes, str, str]]:
        encoder, content_type = choose_encoder(accept)
        fast = self._fast.for_encoder(encoder)
        registry: Any = self.prometheus
        merged = self.perf.find_component(MULTIPROCESS) if self.perf is not None else None
        if merged is not None:
            registry = merged.view
        if self.perf is not None:
            registry = exposed(registry, self.perf.compat, self.perf.namespace)

        def render() -> tuple[bytes, str, str]:
            body: Any = None
            if fast is not None:
                try:
                    body = fast.render(registry)
                except RenderError as exc:
                    # prometheus_client renders what the fast path cannot, as it always did.
                    if self.perf is not None:
                        self.perf.report_error("exposition", exc)
            if body is None:
                body = encoder(registry)
            if wants_gzip and len(body) >= GZIP_MIN_SIZE:
                return gzip.compress(body, compresslevel=5), "gzip", content_type
            return body, "", content_type

        return render


def metrics_app(
    registry: PerfRegistry | CollectorRegistry,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    allow: Iterable[str] | None = None,
    gzip: bool = True,
    render_in_thread: bool = True,
    operations: bool = False,
) -> MetricsApp:
    """An ASGI app that serves ``registry`` for Prometheus.

    Mount it with ``app.add_route("/metrics", metrics_app(registry))`` (a route, so ``/metrics`` is
    served as is and never redirected to ``/metrics/``), or run it as an app of its own.

    :param token: require ``Authorization: Bearer <token>``.
    :param basic_auth: require HTTP basic auth with this ``(username, password)``.
        With both ``token`` and ``basic_auth``, either is accepted.
    :param allow: client IPs or networks (``"10.0.0.0/8"``) allowed to scrape; others get 403.
        An empty list is a ``ValueError``; ``None`` (the default) means no address restriction.
    :param gzip: compress when the client accepts gzip.
    :param render_in_thread: render in the default thread pool so a large registry does not block
        the event loop.
    :param operations: also serve the operations endpoints: a path whose last segment is one of
        :data:`OPS_ENDPOINTS` is served as that endpoint (off: such a path is a 404). On with no
        ``token``, ``basic_auth`` or ``allow``, one warning is logged here.
    """
    return MetricsApp(
        registry,
        token=token,
        basic_auth=basic_auth,
        allow=allow,
        gzip=gzip,
        render_in_thread=render_in_thread,
        operations=operations,
    )


__all__ = ["OPS_ENDPOINTS", "MetricsApp", "metrics_app"]
