"""Helpers for the SQLAlchemy tests: engines with a real sleeping SQL function, URL builders."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._time import FakeClock


def add_sleep_function(
    engine: Engine,
    started: threading.Event | None = None,
    clock: FakeClock | None = None,
    release: threading.Event | None = None,
) -> None:
    """Give every SQLite connection of ``engine`` a ``sleep(seconds)`` SQL function.

    ``started`` is set when a sleep begins, so a test can cancel a statement that is really running.
    With ``clock`` (monkeypatched over the engine module's ``perf_counter``), the sleep advances
    that fake clock instead of waiting: ``SELECT sleep(0.02)`` then takes exactly 0.02 s and every
    other statement exactly 0 s, however loaded the machine is. With ``release``, the sleep ends
    when the test sets it (``seconds`` is then only a bound against hanging).
    """

    def sleep(seconds: float) -> int:
        if started is not None:
            started.set()
        if clock is not None:
            clock.advance(seconds)
        elif release is not None:
            release.wait(seconds)
        else:
            time.sleep(seconds)
        return 1

    @event.listens_for(engine, "connect")
    def _register(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("sleep", 1, sleep)


def sqlite_engine(url: str = "sqlite://", clock: FakeClock | None = None, **kw: Any) -> Engine:
    """A sync SQLite engine with ``sleep()`` (advancing ``clock`` when given)."""
    engine = create_engine(url, **kw)
    add_sleep_function(engine, clock=clock)
    return engine


def aiosqlite_engine(
    url: str = "sqlite+aiosqlite://",
    started: threading.Event | None = None,
    clock: FakeClock | None = None,
    release: threading.Event | None = None,
    **kw: Any,
) -> AsyncEngine:
    """An aiosqlite engine with ``sleep()`` (advancing ``clock``, or ended by ``release``)."""
    engine = create_async_engine(url, **kw)
    add_sleep_function(engine.sync_engine, started, clock, release)
    return engine


def sa_url(dsn: str, driver: str) -> str:
    """A SQLAlchemy URL for the libpq-style ``dsn`` with ``driver`` (``psycopg``, ``asyncpg``)."""
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)
