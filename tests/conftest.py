"""Shared fixtures: asyncio backend, service gating, real uvicorn, promtool and Pushgateway."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from asgi_perf import PerfRegistry

from ._pushgateway import Pushgateway, binary, run_pushgateway
from ._server import ServerFactory, serve_app

REQUIRE_SERVICES = os.environ.get("ASGI_PERF_REQUIRE_SERVICES") == "1"


def need_service(name: str, reason: str) -> None:
    """Skip (on a laptop) or fail (in CI, ``ASGI_PERF_REQUIRE_SERVICES=1``) for a missing service."""
    message = f"{name} is not available: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (ASGI_PERF_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(autouse=True)
def _close_sqlite_connections() -> Iterator[None]:
    """Close the SQLite connections a test's engines opened and did not close.

    Python 3.13 warns about an sqlite3 connection left to the garbage collector (an error here);
    a test that builds an engine should not have to dispose of it to stay quiet.
    """
    opened: list[sqlite3.Connection] = []

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            opened.append(dbapi_connection)

    event.listen(Pool, "connect", on_connect)
    try:
        yield
    finally:
        event.remove(Pool, "connect", on_connect)
        for connection in opened:
            with contextlib.suppress(sqlite3.ProgrammingError):  # owned by another thread
                connection.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> PerfRegistry:
    """A fresh registry per test: no state shared between tests."""
    return PerfRegistry()


@pytest.fixture
def promtool() -> str:
    """Path to Prometheus' promtool (Debian package ``prometheus``)."""
    path = shutil.which("promtool")
    if path is None:
        need_service("promtool", "install the Debian package 'prometheus'")
    assert path is not None
    return path


@pytest.fixture
def postgres_dsn() -> str:
    """libpq-style DSN of the local PostgreSQL server (database ``test``, trust auth)."""
    if not port_open("127.0.0.1", 5432):
        need_service("PostgreSQL", "nothing listens on 127.0.0.1:5432")
    return os.environ.get("ASGI_PERF_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def redis_url() -> str:
    """URL of the local Redis server."""
    if not port_open("127.0.0.1", 6379):
        need_service("Redis", "nothing listens on 127.0.0.1:6379")
    return os.environ.get("ASGI_PERF_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def server() -> Iterator[ServerFactory]:
    """Start ``module:attr`` apps under a real uvicorn subprocess on 127.0.0.1; yields a factory."""
    with serve_app() as factory:
        yield factory


def _pushgateway_binary() -> str:
    path = binary()
    if path is None:
        need_service("Pushgateway", "install the Debian package 'prometheus-pushgateway'")
    assert path is not None
    return path


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    """A real Pushgateway on 127.0.0.1, in memory, fresh for each test."""
    with run_pushgateway(_pushgateway_binary(), tmp_path) as gateway:
        yield gateway


@pytest.fixture
def pushgateway_auth(tmp_path: Path) -> Iterator[Pushgateway]:
    """A real Pushgateway that requires HTTP basic auth (``gateway.auth`` holds the credentials)."""
    with run_pushgateway(_pushgateway_binary(), tmp_path, basic_auth=True) as gateway:
        yield gateway
