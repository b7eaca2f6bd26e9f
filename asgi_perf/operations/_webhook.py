"""The webhook notifier: JSON POSTs from a worker thread, with timeout, retries and backoff.

``notify()`` only puts the alert on a bounded queue, so the event loop (or whatever evaluates the
rules) never waits for a slow or dead receiver. When the queue is full the alert is dropped and
counted, rather than growing memory without bound.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("asgi_perf.alerts")

ERR_URL = "webhook url must be an absolute http:// or https:// URL, got {!r}"
ERR_WEBHOOK_OPTION = "webhook {} must be a number {}, got {!r}"

Report = Callable[[str], None]


def _loggable(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: Slack-style URLs hold their secret in the path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class WebhookNotifier:
    """POSTs each notification as JSON to ``url``.

    :param timeout: seconds per attempt.
    :param retries: further attempts after a failed one (connection error, 5xx or 429).
    :param backoff: seconds before the first retry; doubled for each further one.
    :param queue_size: alerts waiting to be sent before new ones are dropped.
    :param headers: extra request headers (e.g. an ``Authorization`` for the receiver).

    Logs name the receiver by :attr:`target` (``scheme://host[:port]``) only, never by the URL:
    credentials, path and query may hold a secret.
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
    ) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(ERR_URL.format(url))
        checks: tuple[tuple[str, object, str, Callable[[float], bool]], ...] = (
            ("timeout", timeout, "> 0", lambda v: v > 0),
            ("retries", retries, ">= 0", lambda v: v >= 0 and v == int(v)),
            ("backoff", backoff, ">= 0", lambda v: v >= 0),
            ("queue_size", queue_size, ">= 1", lambda v: v >= 1 and v == int(v)),
        )
        for option, value, rule, ok in checks:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise ValueError(ERR_WEBHOOK_OPTION.format(option, rule, value))
        self.name = name
        self.url = url
        self.target = _loggable(url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
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
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    response.read()
            except urllib.error.HTTPError as exc:
                exc.close()  # it holds the response's socket
                if exc.code < 500 and exc.code != 429:
                    logger.warning("webhook %s refused alert: HTTP %d", self.target, exc.code)
                    return False  # a 4xx will not get better by retrying
                error: Exception = exc
            except (OSError, ValueError, http.client.HTTPException) as exc:
                # HTTPException (a garbled response, a URL http.client rejects) is no OSError:
                # uncaught, it would end the worker thread and strand every later alert.
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
