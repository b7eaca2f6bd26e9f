"""The webhook notifier: JSON POSTs from a worker thread, with a deadline, retries and backoff.

``notify()`` only puts the alert on a bounded queue, so the event loop (or whatever evaluates the
rules) never waits for a slow or dead receiver. When the queue is full the alert is dropped and
counted, rather than growing memory without bound.

Each attempt has one deadline, ``timeout`` seconds from its start, that covers name resolution,
connecting, the TLS handshake, sending the request and reading the whole response: every socket
read and write is given what is left of it, so a receiver that answers one byte at a time cannot
hold the worker past it. Redirects are never followed (a 3xx is a failed delivery): following one
would hand the alert, and any ``Authorization`` header, to a host nobody configured.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import queue
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

logger = logging.getLogger("asgi_perf.alerts")

# Messages never quote the URL: Slack- and Teams-style URLs hold their secret in the path.
ERR_URL = "webhook url must be an absolute http:// or https:// URL with a host, got {}"
ERR_URL_CREDENTIALS = (
    "webhook url must not hold credentials (user:password@host): they would be sent to nobody; "
    "pass headers={{'Authorization': ...}} instead"
)
ERR_WEBHOOK_OPTION = "webhook {} must be a number {}, got {!r}"
ERR_SSL_CONTEXT = "webhook ssl_context must be an ssl.SSLContext, got {!r}"

# Read (and discard) at most this much of a response body: only the status matters.
_MAX_RESPONSE_BODY = 64 * 1024

Report = Callable[[str], None]


def _loggable(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: Slack-style URLs hold their secret in the path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # checked by _check_url() first
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _check_url(url: object) -> SplitResult:
    if not isinstance(url, str):
        raise ValueError(ERR_URL.format(f"a {type(url).__name__}"))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            ERR_URL.format(f"scheme {parts.scheme!r}" if parts.scheme else "no scheme")
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError(ERR_URL.format("an invalid port")) from None
    if any(c <= " " or c == "\x7f" for c in url):
        raise ValueError(ERR_URL.format("whitespace or control characters"))
    if not url.isascii():  # http.client sends the request line as ASCII: it would never deliver
        raise ValueError(ERR_URL.format("non-ASCII characters (percent-encode them)"))
    if parts.username is not None or parts.password is not None:
        raise ValueError(ERR_URL_CREDENTIALS)
    return parts


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        # A zero socket timeout would mean non-blocking, not "no time left".
        raise TimeoutError("deadline passed")
    return left


def _connect(address: tuple[str, int], deadline: float) -> socket.socket:
    """``socket.create_connection`` within ``deadline``, name resolution included."""
    host, port = address
    resolved: list[Any] = []

    def resolve() -> None:
        try:
            resolved.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as exc:
            resolved.append(exc)

    # getaddrinfo() takes no timeout: it runs aside, and a stuck resolver is left behind.
    resolver = threading.Thread(target=resolve, name="asgi-perf-webhook-dns", daemon=True)
    resolver.start()
    resolver.join(_remaining(deadline))
    if not resolved:
        raise TimeoutError("name resolution ran past the deadline")
    if isinstance(resolved[0], OSError):
        raise resolved[0]
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, sockaddr in resolved[0]:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                break
        else:
            try:
                sock.settimeout(_remaining(deadline))  # what is left for the TLS handshake
            except TimeoutError:
                sock.close()
                raise
            return sock
    raise error


class _DeadlineReader(io.RawIOBase):
    """The socket's raw reader, each read given what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What ``http.client`` sees as its socket: writes and reads bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: Any) -> None:
        # Since Python 3.5 the timeout bounds the whole sendall(), not each chunk.
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, timeout: float, **kwargs: Any) -> None:
        super().__init__(host, timeout=timeout, **kwargs)
        # Built by the handler right as the attempt starts, so the deadline counts from here.
        self._deadline = time.monotonic() + timeout
        self._create_connection = self._deadline_connection

    def _deadline_connection(self, address: tuple[str, int], *args: Any) -> socket.socket:
        return _connect(address, self._deadline)

    def connect(self) -> None:
        self.timeout = _remaining(self._deadline)
        super().connect()  # for HTTPS the handshake is bounded by self.timeout as a whole
        self.sock = _DeadlineSocket(self.sock, self._deadline)


class _HTTPSConnection(_HTTPConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._ssl_context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._ssl_context)  # type: ignore[arg-type]


def _opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """urllib without its redirect handler (a 3xx raises HTTPError) and with the deadline."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # http_proxy / https_proxy / no_proxy, as urlopen() did
        _HTTPHandler(),
        _HTTPSHandler(context),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class WebhookNotifier:
    """POSTs each notification as JSON to ``url``.

    :param timeout: seconds per attempt: one deadline for resolving, connecting, sending and
        reading the whole response.
    :param retries: further attempts after a failed one (connection error, timeout, 5xx or 429).
    :param backoff: seconds before the first retry; doubled for each further one.
    :param queue_size: alerts waiting to be sent before new ones are dropped.
    :param headers: extra request headers (e.g. an ``Authorization`` for the receiver).
    :param ssl_context: for ``https://``; the default verifies the certificate and host name
        against the system's CAs. Pass your own context for a private CA (or, explicitly, to
        turn verification off).

    A 3xx is a failed delivery: redirects are never followed. A URL holding credentials
    (``user:password@``) raises ``ValueError``; put them in ``headers``. Logs name the receiver by
    :attr:`target` (``scheme://host[:port]``) only, never by the URL: path and query may hold a
    secret.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        queue_size: int = 100,
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        _check_url(url)
        checks: tuple[tuple[str, object, str, Callable[[float], bool]], ...] = (
            ("timeout", timeout, "> 0", lambda v: v > 0),
            ("retries", retries, ">= 0", lambda v: v >= 0 and v == int(v)),
            ("backoff", backoff, ">= 0", lambda v: v >= 0),
            ("queue_size", queue_size, ">= 1", lambda v: v >= 1 and v == int(v)),
        )
        for option, value, rule, ok in checks:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise ValueError(ERR_WEBHOOK_OPTION.format(option, rule, value))
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ValueError(ERR_SSL_CONTEXT.format(ssl_context))
        self.name = name
        self.url = url
        self.target = _loggable(url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        # Built here, not taken from ssl's module default, which code elsewhere can swap for an
        # unverified one.
        self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._opener = _opener(self.ssl_context)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._queue: queue.Queue[tuple[dict[str, Any], Report] | None] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def notify(self, alert: dict[str, Any], report: Report) -> None:
        self._ensure_worker()
        try:
            self._queue.put_nowait((alert, report))
        except queue.Full:
            report("dropped")
            logger.warning("webhook queue full: alert %s %s dropped", alert["rule"], alert["state"])

    def _ensure_worker(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="asgi-perf-webhook", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                alert, report = item
                report("sent" if self._deliver(alert) else "failed")
            finally:
                self._queue.task_done()

    def _deliver(self, alert: dict[str, Any]) -> bool:
        body = json.dumps(alert, default=str).encode()
        for attempt in range(self.retries + 1):
            if attempt and self._stop.wait(self.backoff * 2 ** (attempt - 1)):
                return False  # closing: give up instead of sleeping through shutdown
            request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
                self.url, data=body, headers=self._headers, method="POST"
            )
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    response.read(_MAX_RESPONSE_BODY)
            except urllib.error.HTTPError as exc:
                exc.close()  # it holds the response's socket
                if 300 <= exc.code < 400:
                    logger.warning(
                        "webhook %s answered HTTP %d: redirects are not followed, alert %s "
                        "not delivered",
                        self.target,
                        exc.code,
                        alert.get("rule"),
                    )
                    return False
                if exc.code < 500 and exc.code != 429:
                    logger.warning("webhook %s refused alert: HTTP %d", self.target, exc.code)
                    return False  # a 4xx will not get better by retrying
                error: Exception = exc
            except (OSError, ValueError, http.client.HTTPException) as exc:
                # HTTPException (a garbled response) is no OSError: uncaught, it would end the
                # worker thread and strand every later alert.
                error = exc
            else:
                return True
            reason = str(error) if isinstance(error, OSError) else type(error).__name__
            logger.info("webhook attempt %d to %s failed: %s", attempt + 1, self.target, reason)
        logger.warning("webhook %s: alert %s not delivered", self.target, alert.get("rule"))
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was handled; ``False`` if ``timeout`` ran out first."""
        if self._thread is None:
            return True
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker: pending retries give up, queued alerts are still attempted once."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # pragma: no cover - a wedged receiver; the thread is a daemon
            return
        thread.join(timeout)


__all__ = ["WebhookNotifier"]
