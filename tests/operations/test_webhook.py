"""asgi_perf.operations._webhook: redirects, the per-attempt deadline, credentials and TLS.

Every receiver here is a real server on 127.0.0.1: an HTTP server for redirects, a raw TCP one
that answers one byte at a time, and an HTTPS one with a certificate made for the test.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from asgi_perf import PerfRegistry
from asgi_perf.operations._alerts import AlertManager, AlertRule
from asgi_perf.operations._webhook import (
    ERR_SSL_CONTEXT,
    ERR_URL,
    ERR_URL_CREDENTIALS,
    WebhookNotifier,
)
from asgi_perf.testing import sample

from .._ops import exact

ALERT = {"rule": "HighCpu", "state": "firing"}


class Server:
    """A real HTTP server on 127.0.0.1 that records every request and answers ``status``."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(hook: WebhookNotifier) -> list[str]:
    outcomes: list[str] = []
    hook.notify(dict(ALERT), outcomes.append)
    assert hook.flush(timeout=60)
    hook.close()
    return outcomes


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(
    status: int, registry: PerfRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A 3xx to another host is a failed, counted delivery: the alert and its Authorization
    header never reach the redirect target, and the redirect is not retried."""
    elsewhere = Server()
    receiver = Server(status, location=f"{elsewhere.url}/stolen?token=LoCaTiOnSeCrEt")
    try:
        hook = WebhookNotifier(
            f"{receiver.url}/hook", headers={"Authorization": "Bearer s3cr3t"}, backoff=0.01
        )
        rule = AlertRule("Now", "http.in_progress", ">", 0)
        manager = AlertManager(registry, [rule], notifiers=[hook])
        with caplog.at_level(logging.DEBUG, logger="asgi_perf.alerts"):
            manager.evaluate({"http.in_progress": 1})
            assert hook.flush(timeout=60)
            hook.close()
        assert elsewhere.requests == []
        assert [(method, path) for method, path, _ in receiver.requests] == [("POST", "/hook")]
        assert receiver.requests[0][2]["Authorization"] == "Bearer s3cr3t"
        outcomes = {"notifier": "webhook", "outcome": "failed"}
        assert sample(registry, "asgi_perf_alert_notifications_total", outcomes) == 1
        sent = {"notifier": "webhook", "outcome": "sent"}
        assert not sample(registry, "asgi_perf_alert_notifications_total", sent)
        assert f"HTTP {status}: redirects are not followed" in caplog.text
        assert "LoCaTiOnSeCrEt" not in caplog.text
        assert "stolen" not in caplog.text
    finally:
        receiver.close()
        elsewhere.close()


class Dripper:
    """A raw TCP receiver on 127.0.0.1: reads the request, then answers one byte every 0.1 s
    for 30 s, in the status line and headers or in the body.

    ``closed_early`` is set when the client closes the connection before the 30 s are over,
    ``finished`` when the server got to the end of its drip.
    """

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.closed_early = threading.Event()
        self.finished = threading.Event()
        self.got_request = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            json.loads(body)
            self.got_request.set()
            if self.phase == "body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(300):
                try:
                    conn.sendall(b"a")
                except OSError:  # EPIPE / ECONNRESET: the client has gone
                    self.closed_early.set()
                    return
                time.sleep(0.1)
            self.finished.set()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_one_deadline_covers_a_dripping_response(phase: str) -> None:
    """A receiver answering one byte at a time cannot hold the worker past the attempt's
    deadline: with timeout=1 and no retries the attempt fails and the connection is closed
    long before the receiver's 30 s of dripping are over (each byte alone comes well within
    the timeout, so a per-read timeout would wait for all of them)."""
    dripper = Dripper(phase)
    try:
        hook = WebhookNotifier(dripper.url, timeout=1, retries=0)
        outcomes: list[str] = []
        hook.notify(dict(ALERT), outcomes.append)
        assert dripper.got_request.wait(30)
        assert dripper.closed_early.wait(60)
        assert not dripper.finished.is_set()
        assert hook.flush(timeout=60)
        assert outcomes == ["failed"]
        hook.close()
    finally:
        dripper.close()


def test_a_garbled_response_fails_without_killing_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A response http.client cannot parse (no OSError) fails the delivery; the worker lives on
    for the next alert, and the log names the error's kind."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"garbage\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    hook = WebhookNotifier(f"http://127.0.0.1:{listener.getsockname()[1]}/SeCrEt", retries=0)
    outcomes: list[str] = []
    with caplog.at_level(logging.DEBUG, logger="asgi_perf.alerts"):
        for _ in range(2):
            hook.notify(dict(ALERT), outcomes.append)
            assert hook.flush(timeout=60)
        hook.close()
    listener.close()
    assert outcomes == ["failed", "failed"]
    assert "BadStatusLine" in caplog.text
    assert "SeCrEt" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "http://user:PaSsWoRd@example.com/hook",
        "https://PaSsWoRd@example.com/hook",
        "http://user:@example.com/hook",
    ],
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    """user:password@ in the URL raises ValueError at construction (urllib would send them to
    nobody), and the message does not repeat them."""
    with pytest.raises(ValueError, match=exact(ERR_URL_CREDENTIALS)) as error:
        WebhookNotifier(url)
    assert "PaSsWoRd" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "got"),
    [
        ("ftp://x/SeCrEt", "scheme 'ftp'"),
        ("/relative/SeCrEt", "no scheme"),
        ("http:///SeCrEt", "scheme 'http'"),
        ("http://example.com:bad/SeCrEt", "an invalid port"),
        ("http://example.com:70000/SeCrEt", "an invalid port"),
        ("http://example.com/SeCrEt Token", "whitespace or control characters"),
        ("http://example.com/SeCrEt\nHost: x", "whitespace or control characters"),
        (b"http://example.com/SeCrEt", "a bytes"),
        ("http://example.com/SeCrEt/café", "non-ASCII characters (percent-encode them)"),
    ],
)
def test_bad_urls_are_refused_without_repeating_them(url: Any, got: str) -> None:
    """A URL that could never deliver raises ValueError at construction; the message names what
    is wrong but never quotes the URL, whose path may hold a secret."""
    with pytest.raises(ValueError, match=exact(ERR_URL.format(got))) as error:
        WebhookNotifier(url)
    assert "SeCrEt" not in str(error.value)


def test_tls_is_verified_by_default() -> None:
    """The default context checks the certificate chain and the host name; it is built by the
    notifier, so a process-wide swap of ssl's default https context does not turn it off."""
    hook = WebhookNotifier("https://hooks.example.com/x")
    assert hook.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert hook.ssl_context.check_hostname
    own = ssl.create_default_context()
    assert WebhookNotifier("https://hooks.example.com/x", ssl_context=own).ssl_context is own
    with pytest.raises(ValueError, match=exact(ERR_SSL_CONTEXT.format("no"))):
        WebhookNotifier("https://hooks.example.com/x", ssl_context="no")  # type: ignore[arg-type]


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTPS server on 127.0.0.1 with a self-signed certificate; yields (url, cert)."""
    if shutil.which("openssl") is None:  # pragma: no cover - present wherever the suite runs
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    yield server.url.replace("http://", "https://") + "/hook", cert
    server.close()


def test_an_untrusted_certificate_is_refused(
    https_server: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver whose certificate the system does not trust gets nothing; with a context that
    trusts it (a private CA, say) the same receiver gets the alert."""
    url, cert = https_server
    with caplog.at_level(logging.DEBUG, logger="asgi_perf.alerts"):
        assert _send(WebhookNotifier(url, retries=0)) == ["failed"]
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    trusting = ssl.create_default_context(cafile=str(cert))
    assert _send(WebhookNotifier(url, retries=0, ssl_context=trusting)) == ["sent"]


def test_name_resolution_is_inside_the_deadline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A resolver that never answers (a fault a test cannot cause for real) fails the attempt at
    its deadline; one that fails fails the attempt at once. Neither stops the worker."""
    release = threading.Event()
    answers: list[str] = []

    def resolver(host: str, *args: Any) -> Any:
        answers.append(host)
        if host == "stuck.example":
            release.wait(60)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with caplog.at_level(logging.DEBUG, logger="asgi_perf.alerts"):
        assert _send(WebhookNotifier("http://stuck.example/x", timeout=0.2, retries=0)) == [
            "failed"
        ]
        assert _send(WebhookNotifier("http://gone.example/x", retries=0)) == ["failed"]
    release.set()
    assert answers == ["stuck.example", "gone.example"]
    assert "name resolution ran past the deadline" in caplog.text
    assert "Name or service not known" in caplog.text
