"""asgi_perf.sqlalchemy on real SQLite (sync and aiosqlite): timing, errors, slow queries, pool."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import threading
import weakref
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import generate_latest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy import exc as sa_exc

from asgi_perf import PerfRegistry
from asgi_perf.registry import SLOW_QUERIES
from asgi_perf.sqlalchemy import (
    ERR_ENGINE,
    ERR_INTERVAL,
    ERR_MAX_FINGERPRINTS,
    ERR_N_PLUS_ONE,
    ERR_NAME,
    ERR_NAME_TAKEN,
    ERR_OTHER_REGISTRY,
    ERR_REGISTRY,
    ERR_THRESHOLD,
    InstrumentedEngine,
    instrument_engine,
)
from asgi_perf.sqlalchemy._stats import SLOW_GROUP_SAMPLES, SlowQueryLog, slow_log_for
from asgi_perf.testing import sample, samples

from .._sqlalchemy import aiosqlite_engine, sqlite_engine
from .._time import FakeClock

DURATION = "db_query_duration_seconds"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake perf_counter for the instrumentation; engines built with it sleep in fake time."""
    fake = FakeClock()
    monkeypatch.setattr("asgi_perf.sqlalchemy._engine.perf_counter", fake)
    return fake


def slow_list(registry: PerfRegistry) -> SlowQueryLog:
    return slow_log_for(registry)


def count(
    registry: PerfRegistry, operation: str, outcome: str = "ok", engine: str = "main"
) -> float:
    value = sample(
        registry,
        DURATION,
        {"engine": engine, "operation": operation, "outcome": outcome},
        suffix="_count",
    )
    return value or 0.0


def errors(registry: PerfRegistry, error: str, engine: str = "main") -> float:
    return sample(registry, "db_query_errors_total", {"engine": engine, "error": error}) or 0.0


def users_table(metadata: MetaData) -> Table:
    return Table(
        "users",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50), unique=True),
    )


# -- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, ERR_NAME.format("")),
        ({"name": "a b"}, ERR_NAME.format("a b")),
        ({"slow_query_threshold": 0}, ERR_THRESHOLD.format(0)),
        ({"slow_query_threshold": True}, ERR_THRESHOLD.format(True)),
        ({"slow_query_threshold": float("inf")}, ERR_THRESHOLD.format(float("inf"))),
        ({"slow_log_interval": -1}, ERR_INTERVAL.format(-1)),
        ({"max_fingerprints": 0}, ERR_MAX_FINGERPRINTS.format(0)),
        ({"max_fingerprints": "9"}, ERR_MAX_FINGERPRINTS.format("9")),
        ({"n_plus_one_threshold": 1}, ERR_N_PLUS_ONE.format(1)),
    ],
)
def test_bad_configuration_raises_value_error(
    registry: PerfRegistry, kwargs: dict[str, Any], message: str
) -> None:
    """Every bad option fails at construction with its documented message, attaching nothing."""
    engine = create_engine("sqlite://")
    with pytest.raises(ValueError, match="^" + __import__("re").escape(message) + "$"):
        instrument_engine(engine, registry=registry, **kwargs)
    assert "do_execute" not in vars(engine.dialect)


def test_rejects_non_engines_and_non_registries(registry: PerfRegistry) -> None:
    """Something that is not an Engine/AsyncEngine, or a registry that is not a PerfRegistry, fails."""
    with pytest.raises(ValueError, match="needs a sqlalchemy Engine") as info:
        instrument_engine(object(), registry=registry)
    assert str(info.value).startswith(ERR_ENGINE.split("{")[0])
    with pytest.raises(ValueError, match="registry must be a PerfRegistry") as info2:
        instrument_engine(create_engine("sqlite://"), registry="nope")  # type: ignore[arg-type]
    assert str(info2.value) == ERR_REGISTRY.format("nope")


def test_idempotent_and_conflicts(registry: PerfRegistry) -> None:
    """Instrumenting twice returns the same handle; another registry or a taken name is refused."""
    engine = create_engine("sqlite://")
    handle = instrument_engine(engine, registry=registry, name="main")
    assert instrument_engine(engine, registry=registry, name="main") is handle
    with pytest.raises(ValueError, match="already instrumented") as info:
        instrument_engine(engine, registry=PerfRegistry(), name="main")
    assert str(info.value) == ERR_OTHER_REGISTRY
    with pytest.raises(ValueError, match="already used") as info2:
        instrument_engine(create_engine("sqlite://"), registry=registry, name="main")
    assert str(info2.value) == ERR_NAME_TAKEN.format("main")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert count(registry, "SELECT") == 1  # one wrapper, one observation
    handle.detach()
    again = instrument_engine(engine, registry=PerfRegistry(), name="main")
    assert again is not handle
    again.detach()


# -- timing --------------------------------------------------------------------------------------
def test_sync_sqlite_statements_are_timed_by_operation(registry: PerfRegistry) -> None:
    """Each cursor execution is one observation labelled by engine, operation and outcome."""
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main", slow_query_threshold=None)
    metadata = MetaData()
    users = users_table(metadata)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(insert(users).values(name="a"))
        conn.execute(select(users)).all()
        conn.execute(select(users).where(users.c.id.in_([1, 2, 3]))).all()
        conn.execute(users.update().values(name="b"))
        conn.execute(users.delete())
        conn.exec_driver_sql("WITH x AS (SELECT 1) SELECT * FROM x").all()
        pragmas = count(registry, "PRAGMA")  # create_all ran its own PRAGMAs
        conn.exec_driver_sql("/* hint */ PRAGMA user_version").all()
    assert count(registry, "SELECT") == 3
    assert count(registry, "INSERT") == 1
    assert count(registry, "UPDATE") == 1
    assert count(registry, "DELETE") == 1
    assert count(registry, "PRAGMA") == pragmas + 1
    assert count(registry, "CREATE") == 1
    total = sample(
        registry,
        DURATION,
        {"engine": "main", "operation": "SELECT", "outcome": "ok"},
        suffix="_sum",
    )
    assert total is not None
    assert total > 0


def test_executemany_is_one_observation_plus_rows(registry: PerfRegistry) -> None:
    """An executemany is one observation per cursor execution and adds its parameter sets to rows."""
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main")
    metadata = MetaData()
    users = users_table(metadata)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(insert(users), [{"name": f"u{i}"} for i in range(25)])
    assert count(registry, "INSERT") == 1
    assert sample(registry, "db_rows_total", {"engine": "main", "operation": "INSERT"}) == 25


def test_insertmanyvalues_batches_are_observed_each_and_rows_counted_once(
    registry: PerfRegistry,
) -> None:
    """insertmanyvalues: one observation per batch INSERT, all rows counted exactly once."""
    engine = sqlite_engine(insertmanyvalues_page_size=10)
    instrument_engine(engine, registry=registry, name="main")
    metadata = MetaData()
    users = users_table(metadata)
    with engine.begin() as conn:
        metadata.create_all(conn)
        result = conn.execute(
            insert(users).returning(users.c.id), [{"name": f"u{i}"} for i in range(25)]
        )
        assert len(result.all()) == 25
    assert count(registry, "INSERT") == 3  # 10 + 10 + 5
    assert sample(registry, "db_rows_total", {"engine": "main", "operation": "INSERT"}) == 25


@pytest.mark.anyio
async def test_async_engine_is_instrumented_through_sync_engine(
    registry: PerfRegistry, clock: FakeClock
) -> None:
    """An AsyncEngine (aiosqlite) is instrumented via its sync_engine; detach cleans it."""
    engine = aiosqlite_engine(clock=clock)  # SELECT 1 takes 0 s, sleep(0.03) exactly 0.03 s
    handle = instrument_engine(engine, registry=registry, name="main", slow_query_threshold=0.01)
    assert handle.engine is engine.sync_engine
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        await conn.execute(text("SELECT sleep(0.03)"))
    assert count(registry, "SELECT") == 2
    assert sample(registry, "db_slow_queries_total", {"engine": "main", "operation": "SELECT"}) == 1
    handle.detach()
    await engine.dispose()


# -- errors and cancellation ---------------------------------------------------------------------
def test_failed_statement_recorded_with_duration_and_error_class(registry: PerfRegistry) -> None:
    """Bad SQL and a constraint violation are `error` observations with PEP 249 class labels."""
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main")
    metadata = MetaData()
    users = users_table(metadata)
    with engine.connect() as conn:
        metadata.create_all(conn)
        conn.execute(insert(users).values(name="a"))
        with pytest.raises(sa_exc.IntegrityError):
            conn.execute(insert(users).values(name="a"))
        with pytest.raises(sa_exc.OperationalError):
            conn.execute(text("SELEKT 1"))
    assert count(registry, "INSERT", "error") == 1
    assert count(registry, "OTHER", "error") == 1
    assert errors(registry, "IntegrityError") == 1
    assert errors(registry, "OperationalError") == 1
    total = sample(
        registry,
        DURATION,
        {"engine": "main", "operation": "INSERT", "outcome": "error"},
        suffix="_sum",
    )
    assert total is not None
    assert total > 0


def test_thousand_failures_leave_no_state(registry: PerfRegistry) -> None:
    """1,000 failing queries are 1,000 errors and leave nothing behind on connections or handle."""
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="main")
    with engine.connect() as conn:
        for i in range(1000):
            with pytest.raises(sa_exc.OperationalError):
                conn.execute(text(f"SELECT * FROM missing_{i % 7}"))
        assert dict(conn.info) == {}
        assert dict(conn.connection.info) == {}
    assert errors(registry, "OperationalError") == 1000
    assert count(registry, "SELECT", "error") == 1000
    assert len(handle._statements) == 0  # failures are never cached per statement
    assert len(handle._fingerprints) == 0


def test_error_before_the_cursor_counted_once_by_handle_error(registry: PerfRegistry) -> None:
    """A failure before any cursor runs (a bind processor raising) is counted once, untimed."""

    class Boom(TypeDecorator[str]):
        impl = String
        cache_ok = True

        def process_bind_param(self, value: Any, dialect: Any) -> Any:
            raise RuntimeError("bad value")

    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main")
    with engine.connect() as conn, pytest.raises(sa_exc.StatementError):
        conn.execute(select(bindparam("x", type_=Boom())), {"x": "v"})
    assert errors(registry, "RuntimeError") == 1
    assert samples(registry, DURATION, suffix="_count") == []


def test_double_handle_error_records_once(registry: PerfRegistry) -> None:
    """The same exception seen twice by handle_error is counted once (fault injected by hand)."""
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="main")

    class Ctx:
        original_exception = ValueError("x")

    handle._on_handle_error(Ctx())
    handle._on_handle_error(Ctx())
    assert errors(registry, "ValueError") == 1


@pytest.mark.anyio
async def test_cancelled_async_query_is_cancelled_not_error(registry: PerfRegistry) -> None:
    """A statement whose task is cancelled mid-flight is recorded as `cancelled`, not an error."""
    started, release = threading.Event(), threading.Event()
    engine = aiosqlite_engine(started=started, release=release)
    instrument_engine(engine, registry=registry, name="main")

    async def run() -> None:
        async with engine.connect() as conn:
            # Runs until released (60 s is only a bound): the cancel always finds it running.
            await conn.execute(text("SELECT sleep(60)"))

    task = asyncio.ensure_future(run())
    try:
        await anyio.to_thread.run_sync(started.wait)
        # The statement is running: cancelling the task cancels the future it waits on, now.
        task.cancel()
    finally:
        # Its thread stops sleeping (the connection can then close); its result is dropped.
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert count(registry, "SELECT", "cancelled") == 1
    assert count(registry, "SELECT", "error") == 0
    assert samples(registry, "db_query_errors_total") == []
    await engine.dispose()


def test_instrumentation_error_never_breaks_the_query(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If recording raises, the statement still returns and the error is counted (fail open)."""
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="main")

    def broken(*args: Any) -> Any:
        raise RuntimeError("recording failed")

    monkeypatch.setattr(handle._stats, "duration_series", broken)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
        with pytest.raises(sa_exc.OperationalError):
            conn.execute(text("SELEKT"))
    assert (
        sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "sqlalchemy"}) == 2
    )


# -- slow queries and privacy --------------------------------------------------------------------
def test_slow_query_counted_logged_and_listed(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """A statement over the threshold is counted, logged with fingerprint and engine, and listed."""
    engine = sqlite_engine(clock=clock)  # SELECT 1 takes 0 s, sleep(0.02) exactly 0.02 s
    instrument_engine(engine, registry=registry, name="main", slow_query_threshold=0.01)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.sqlalchemy"), engine.connect() as conn:
        conn.execute(text("SELECT sleep(0.02) WHERE 1 IN (1, 2, 3)"))
        conn.execute(text("SELECT 1"))
    assert sample(registry, "db_slow_queries_total", {"engine": "main", "operation": "SELECT"}) == 1
    records = [r for r in caplog.records if r.name == "asgi_perf.sqlalchemy"]
    assert len(records) == 1
    record = records[0]
    assert record.engine == "main"  # type: ignore[attr-defined]
    assert record.sql == "SELECT sleep(?) WHERE ? IN (...)"  # type: ignore[attr-defined]
    assert record.duration == pytest.approx(0.02)  # type: ignore[attr-defined]
    # The operations layer's contract: the list is the registry component under this key.
    slow_log = registry.find_component(SLOW_QUERIES)
    assert slow_log is not None
    recent = slow_log.recent()
    assert len(recent) == 1
    assert set(recent[0]) == {
        "engine",
        "operation",
        "fingerprint",
        "sql",
        "duration",
        "time",
        "count",
    }
    assert recent[0]["fingerprint"] == record.fingerprint  # type: ignore[attr-defined]
    assert recent[0]["count"] == 1


def test_slow_log_is_rate_limited_but_every_occurrence_listed(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The same slow fingerprint logs once per interval; the list and counter see every one."""
    engine = sqlite_engine()
    instrument_engine(
        engine, registry=registry, name="main", slow_query_threshold=0.005, slow_log_interval=3600
    )
    with caplog.at_level(logging.WARNING, logger="asgi_perf.sqlalchemy"), engine.connect() as conn:
        for seconds in (0.01, 0.011, 0.012):
            conn.execute(text("SELECT sleep(:s)"), {"s": seconds})
    assert len([r for r in caplog.records if r.name == "asgi_perf.sqlalchemy"]) == 1
    recent = slow_list(registry).recent()
    assert [r["count"] for r in recent] == [3, 2, 1]  # newest first
    assert len(slow_list(registry).recent(limit=2)) == 2


def test_slow_queries_are_grouped_by_fingerprint(registry: PerfRegistry, clock: FakeClock) -> None:
    """One statement shape run slow many times is one group: its count, p95, max and last seen,
    with the normalised statement only (no parameter, literal or comment)."""
    engine = sqlite_engine(clock=clock)
    instrument_engine(engine, registry=registry, name="main", slow_query_threshold=0.01)
    with engine.connect() as conn:
        for i in range(20):
            conn.execute(text("SELECT sleep(:s) /* user 7 */"), {"s": 0.02 + i / 1000})
        conn.execute(text("SELECT sleep(0.05), 'secret-literal'"))
    groups = slow_list(registry).groups()
    assert [g["count"] for g in groups] == [1, 20]  # most recently seen first
    latest, repeated = groups
    assert repeated["sql"] == "SELECT sleep(?)"
    assert repeated["operation"] == "SELECT"
    assert repeated["max"] == pytest.approx(0.039)
    assert repeated["p95"] == pytest.approx(0.038)  # nearest rank: the 19th of 20
    assert repeated["last_seen"] <= latest["last_seen"]
    assert "secret-literal" not in repr(groups)
    assert "user 7" not in repr(groups)
    assert slow_list(registry).groups(limit=1) == [latest]


def test_slow_query_groups_are_bounded() -> None:
    """Past ``max_fingerprints`` shapes the least recently seen group is forgotten; a group's p95
    covers its most recent ``SLOW_GROUP_SAMPLES`` runs."""
    log = SlowQueryLog(max_fingerprints=2)
    log.add("e", "SELECT", "a", "SELECT a", 1.0)
    log.add("e", "SELECT", "b", "SELECT b", 1.0)
    log.add("e", "SELECT", "a", "SELECT a", 2.0)  # a is now the most recent
    log.add("e", "SELECT", "c", "SELECT c", 1.0)  # forgets b
    assert [g["fingerprint"] for g in log.groups()] == ["c", "a"]
    for _ in range(SLOW_GROUP_SAMPLES):
        log.add("e", "SELECT", "c", "SELECT c", 0.5)
    (c,) = log.groups(limit=1)
    assert (c["count"], c["p95"], c["max"]) == (SLOW_GROUP_SAMPLES + 1, 0.5, 1.0)


def test_secret_parameters_never_logged_or_labelled(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A secret bound parameter or literal appears in no log record, label or recent entry."""
    secret = "hunter2-secret-value"
    engine = sqlite_engine()
    instrument_engine(
        engine, registry=registry, name="main", slow_query_threshold=0.001, slow_log_interval=0
    )
    with caplog.at_level(logging.DEBUG, logger="asgi_perf"), engine.connect() as conn:
        conn.execute(text("SELECT sleep(0.005), :password"), {"password": secret})
        conn.exec_driver_sql(f"SELECT sleep(0.005), '{secret}'")
        with pytest.raises(sa_exc.OperationalError):
            conn.execute(text("SELEKT :password"), {"password": secret})
    assert len(caplog.records) >= 2
    assert secret not in caplog.text
    assert secret not in generate_latest(registry.prometheus).decode()
    assert secret not in repr(slow_list(registry).recent())


@pytest.mark.parametrize("hide", [False, True])
def test_log_parameters_is_opt_in_and_respects_hide_parameters(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture, hide: bool
) -> None:
    """log_parameters=True adds parameters to the log record, unless the engine hides them."""
    engine = sqlite_engine(hide_parameters=hide)
    instrument_engine(
        engine, registry=registry, name="main", slow_query_threshold=0.001, log_parameters=True
    )
    with caplog.at_level(logging.WARNING, logger="asgi_perf.sqlalchemy"), engine.connect() as conn:
        conn.execute(text("SELECT sleep(0.005), :v"), {"v": "visible-value"})
    assert ("visible-value" in caplog.text) is not hide
    assert "visible-value" not in repr(slow_list(registry).recent())


def test_statement_stats_bounded_by_max_fingerprints(registry: PerfRegistry) -> None:
    """Per-fingerprint stats group IN-list lengths together and fold the excess into overflow."""
    engine = sqlite_engine()
    handle = instrument_engine(
        engine, registry=registry, name="main", statement_stats=True, max_fingerprints=2
    )
    with engine.connect() as conn:
        for n in range(1, 6):
            conn.exec_driver_sql(f"SELECT 1 WHERE 1 IN ({', '.join('1' * n)})")
        conn.exec_driver_sql("SELECT 2 AS a")
        conn.exec_driver_sql("SELECT 3 AS b")
        conn.exec_driver_sql("SELECT 4 AS c")
    stats = handle.statement_stats()
    by_sql = {row["sql"]: row for row in stats}
    assert by_sql["SELECT ? WHERE ? IN (...)"]["count"] == 5
    assert by_sql["SELECT ? AS a"]["count"] == 1
    assert by_sql["__overflow__"]["count"] == 2
    assert len(stats) == 3
    assert all(row["max"] <= row["total"] for row in stats)
    assert instrument_engine(sqlite_engine(), registry=registry, name="x").statement_stats() == []


# -- pool ----------------------------------------------------------------------------------------
def test_pool_exhaustion_counts_exactly_one_timeout(registry: PerfRegistry, tmp_path: Path) -> None:
    """pool_size=1, max_overflow=0, pool_timeout=0.1 and a held connection: exactly one timeout."""
    engine = create_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    instrument_engine(engine, registry=registry, name="main")
    held = engine.connect()
    with pytest.raises(sa_exc.TimeoutError):
        engine.connect()
    assert sample(registry, "db_pool_checkout_timeouts_total", {"engine": "main"}) == 1
    assert sample(registry, "db_pool_checked_out", {"engine": "main"}) == 1
    assert sample(registry, "db_pool_size", {"engine": "main"}) == 1
    assert sample(registry, "db_pool_overflow", {"engine": "main"}) == 0
    assert sample(registry, "db_pool_checkout_seconds", {"engine": "main"}, suffix="_count") == 2
    held.close()
    assert sample(registry, "db_pool_checked_out", {"engine": "main"}) == 0
    assert sample(registry, "db_pool_checked_in", {"engine": "main"}) == 1
    assert sample(registry, "db_connections_created_total", {"engine": "main"}) == 1


def test_pool_metrics_survive_dispose_and_detach_removes_everything(
    registry: PerfRegistry, tmp_path: Path
) -> None:
    """After dispose() the new pool is read and timed; detach() leaves no listener or wrapper."""
    engine = create_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    handle = instrument_engine(engine, registry=registry, name="main")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert sample(registry, "db_pool_checked_in", {"engine": "main"}) == 0
    held = engine.connect()
    assert sample(registry, "db_pool_checked_out", {"engine": "main"}) == 1
    with pytest.raises(sa_exc.TimeoutError):
        engine.connect()
    assert sample(registry, "db_pool_checkout_timeouts_total", {"engine": "main"}) == 1
    assert sample(registry, "db_connections_created_total", {"engine": "main"}) == 2
    held.invalidate()
    held.close()
    assert sample(registry, "db_connections_invalidated_total", {"engine": "main"}) == 1

    listeners = list(handle._listeners)
    handle.detach()
    handle.detach()  # idempotent
    for identifier, fn in listeners:
        assert not event.contains(engine, identifier, fn)  # type: ignore[arg-type]
    assert not {"do_execute", "do_executemany", "do_execute_no_params"} & set(vars(engine.dialect))
    assert "connect" not in vars(engine.pool)
    assert samples(registry, "db_pool_size") == []
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert count(registry, "SELECT") == 0


def test_pool_without_counters_exports_no_pool_gauges(registry: PerfRegistry) -> None:
    """NullPool keeps no counts: no pool gauges are invented for it, statements are still timed."""
    from sqlalchemy.pool import NullPool

    engine = create_engine("sqlite://", poolclass=NullPool)
    handle = instrument_engine(engine, registry=registry, name="main")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert samples(registry, "db_pool_size") == []
    assert count(registry, "SELECT") == 1
    assert isinstance(handle, InstrumentedEngine)


def test_exposition_passes_promtool(registry: PerfRegistry, promtool: str, tmp_path: Path) -> None:
    """Every SQLAlchemy family passes `promtool check metrics`."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    instrument_engine(engine, registry=registry, name="main", slow_query_threshold=0.5)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with pytest.raises(sa_exc.OperationalError):
            conn.execute(text("SELEKT"))
    body = generate_latest(registry.prometheus)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"db_pool_size" in body


# -- less common paths ---------------------------------------------------------------------------
def test_no_parameters_and_executemany_failures_are_timed(registry: PerfRegistry) -> None:
    """do_execute_no_params and a failing executemany are observed like any other execution."""
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main", slow_query_threshold=None)
    metadata = MetaData()
    users = users_table(metadata)
    with engine.connect() as conn:
        metadata.create_all(conn)
        raw = conn.execution_options(no_parameters=True)
        before = count(registry, "SELECT")
        raw.exec_driver_sql("SELECT 1")
        assert count(registry, "SELECT") == before + 1
        with pytest.raises(sa_exc.OperationalError):
            raw.exec_driver_sql("SELEKT 1")
        with pytest.raises(sa_exc.IntegrityError):
            conn.execute(insert(users), [{"name": "same"}, {"name": "same"}])
    assert count(registry, "OTHER", "error") == 1
    assert count(registry, "INSERT", "error") == 1
    assert errors(registry, "IntegrityError") == 1


def test_statement_cache_starts_over_when_full(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct statement texts without end never grow the per-statement cache past its cap."""
    monkeypatch.setattr("asgi_perf.sqlalchemy._engine._MAX_CACHED_STATEMENTS", 5)
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="main", statement_stats=True)
    with engine.connect() as conn:
        for i in range(12):
            conn.exec_driver_sql(f"SELECT {i}")
    assert len(handle._statements) <= 5
    assert count(registry, "SELECT") == 12
    assert sum(row["count"] for row in handle.statement_stats()) == 12  # nothing lost


def test_duration_series_are_capped_by_the_registry(tmp_path: Path) -> None:
    """Past max_series_per_metric, new (operation, outcome) pairs fold into __overflow__."""
    registry = PerfRegistry(max_series_per_metric=2)
    engine = sqlite_engine()
    instrument_engine(engine, registry=registry, name="main")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        conn.exec_driver_sql("PRAGMA user_version")
        conn.exec_driver_sql("CREATE TABLE a (x int)")
        conn.exec_driver_sql("DROP TABLE a")
    assert count(registry, "__overflow__") == 2
    assert sample(registry, "asgi_perf_series_overflow_total", {"metric": DURATION}) == 2


def test_slow_list_is_bounded_and_forgets_oldest_fingerprints() -> None:
    """The recent list keeps maxlen entries and at most max_fingerprints counts."""
    from asgi_perf.sqlalchemy import SlowQueryLog

    log = SlowQueryLog(maxlen=3, max_fingerprints=2)
    for fp in ("a", "b", "c", "a"):
        log.add("main", "SELECT", fp, "SELECT ?", 1.0)
    assert len(log) == 3
    assert [e["fingerprint"] for e in log.recent()] == ["a", "c", "b"]
    assert log.recent()[0]["count"] == 1  # "a" was forgotten when "c" arrived
    assert log.recent(limit=-1) == []


def test_failures_inside_recording_paths_are_reported_not_raised(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Broken pool reads, checkout observation, handle_error and connect hooks fail open."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    handle = instrument_engine(engine, registry=registry, name="main")

    class BadPool:
        def size(self) -> int:
            raise RuntimeError("pool broke")

    class BadCtx:
        @property
        def original_exception(self) -> Any:
            raise RuntimeError("ctx broke")

    monkeypatch.setattr(handle, "current_pool", BadPool)
    generate_latest(registry.prometheus)
    handle._on_handle_error(BadCtx())

    class BadLock:
        def __enter__(self) -> None:
            raise RuntimeError("lock broke")

        def __exit__(self, *args: object) -> None:
            return None

    monkeypatch.setattr(handle._series, "checkout", None)
    with engine.connect() as conn:  # checkout observation fails: the connection still works
        conn.execute(text("SELECT 1"))
    monkeypatch.setattr(handle, "_wrap_pool", lambda: BadLock().__enter__())
    engine.dispose()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    errors_total = sample(
        registry, "asgi_perf_instrumentation_errors_total", {"component": "sqlalchemy"}
    )
    assert errors_total is not None
    assert errors_total >= 4  # scrape, handle_error, checkouts, the connect hook


def test_handle_error_ignores_exit_exceptions_and_detach_tolerates_replaced_hooks(
    registry: PerfRegistry,
) -> None:
    """A non-Exception in handle_error is not an error; detach leaves others' replacements alone."""
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="main")

    class Ctx:
        original_exception = KeyboardInterrupt()

    handle._on_handle_error(Ctx())
    assert samples(registry, "db_query_errors_total") == []

    def mine(*args: Any) -> None:
        return None

    engine.dialect.do_execute = mine  # type: ignore[method-assign,assignment]
    for identifier, fn in handle._listeners:
        event.remove(engine, identifier, fn)
    handle.detach()
    assert engine.dialect.do_execute is mine


def test_request_finished_in_another_context_clears_it(registry: PerfRegistry) -> None:
    """A request hook finished outside the context it started in falls back to clearing."""
    import contextvars

    from asgi_perf.sqlalchemy._stats import RequestQueries

    instrument_engine(sqlite_engine(), registry=registry, name="main")
    hook = next(h for h in registry.request_hooks if isinstance(h, RequestQueries))
    state = contextvars.copy_context().run(hook.request_started)
    hook.request_finished(state)
    assert hook.var.get() is None
    assert sample(registry, "db_queries_per_request", {"engine": "main"}, suffix="_count") == 1


def test_statement_stats_survive_a_statement_cache_reset(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts per fingerprint never go down when the statement-text cache starts over."""
    monkeypatch.setattr("asgi_perf.sqlalchemy._engine._MAX_CACHED_STATEMENTS", 200)
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="main", statement_stats=True)
    with engine.connect() as conn:
        for _ in range(50):
            conn.execute(text("SELECT 1"))
        for i in range(201):  # distinct texts, one shape: fills the cache and resets it
            conn.execute(text(f"SELECT {i} + 1"))
        for _ in range(5):
            conn.execute(text("SELECT 1"))
    by_sql = {row["sql"]: row for row in handle.statement_stats()}
    assert by_sql["SELECT ?"]["count"] == 55
    assert by_sql["SELECT ? + ?"]["count"] == 201
    assert "__overflow__" not in by_sql  # two fingerprints are far below max_fingerprints


def test_statement_stats_are_exact_under_threads(registry: PerfRegistry, tmp_path: Path) -> None:
    """8 threads running distinct statements while stats are read: exact counts, no errors."""
    import sys

    engine = sqlite_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=8)
    handle = instrument_engine(
        engine,
        registry=registry,
        name="main",
        slow_query_threshold=None,
        statement_stats=True,
        max_fingerprints=10_000,
    )
    threads_n, per_thread = 8, 300
    barrier = threading.Barrier(threads_n + 1)
    done = threading.Event()

    def run(t: int) -> None:
        with engine.connect() as conn:
            barrier.wait()
            for i in range(per_thread):
                # A distinct alias is a distinct fingerprint: every statement adds an entry.
                conn.exec_driver_sql(f"SELECT {i} AS c_{t}_{i}")
                conn.exec_driver_sql("SELECT 7 AS shared")

    def read() -> None:
        barrier.wait()
        while not done.is_set():
            handle.statement_stats()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads_n)]
        reader = threading.Thread(target=read)
        for thread in [*workers, reader]:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        reader.join()
    finally:
        sys.setswitchinterval(interval)
    instrumentation_errors = sample(
        registry, "asgi_perf_instrumentation_errors_total", {"component": "sqlalchemy"}
    )
    assert instrumentation_errors is None
    by_sql = {row["sql"]: row["count"] for row in handle.statement_stats()}
    assert by_sql["SELECT ? AS shared"] == threads_n * per_thread
    assert len(by_sql) == threads_n * per_thread + 1
    assert all(n == 1 for sql, n in by_sql.items() if sql != "SELECT ? AS shared")
    assert count(registry, "SELECT") == 2 * threads_n * per_thread


def test_sqlite_double_quoted_and_escaped_literals_never_logged(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """SQLite runs "secret" as a string: it and backslash-quoted text are redacted from logs."""
    secret = "hunter2-secret-value"
    engine = sqlite_engine(clock=clock)
    handle = instrument_engine(
        engine,
        registry=registry,
        name="main",
        slow_query_threshold=0.01,
        slow_log_interval=0,
        statement_stats=True,
    )
    with caplog.at_level(logging.WARNING, logger="asgi_perf.sqlalchemy"), engine.connect() as conn:
        assert conn.exec_driver_sql(f'SELECT sleep(0.02), "{secret}"').one()[1] == secret
        conn.exec_driver_sql(f"SELECT sleep(0.02), 'C:\\', '{secret}'")
    assert len(caplog.records) == 2
    assert secret not in caplog.text
    assert secret not in repr(slow_list(registry).recent())
    assert secret not in repr(handle.statement_stats())


def test_instrumenting_keeps_no_engine_alive() -> None:
    """An engine the app has dropped, with its registry, is freed: no process-wide table of
    instrumented engines keeps it (or its handle) alive."""
    registry = PerfRegistry()
    engine = sqlite_engine()
    handle = instrument_engine(engine, registry=registry, name="dropped")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine_ref, handle_ref = weakref.ref(engine), weakref.ref(handle)
    engine.dispose()
    del engine, handle, registry, conn
    gc.collect()
    assert engine_ref() is None
    assert handle_ref() is None


def test_a_dropped_engine_frees_its_name() -> None:
    """Once an instrumented engine is gone, its name on the registry can be used again."""
    registry = PerfRegistry()
    first = sqlite_engine()
    instrument_engine(first, registry=registry, name="main").detach()
    del first
    gc.collect()
    second = sqlite_engine()
    assert instrument_engine(second, registry=registry, name="main").name == "main"
