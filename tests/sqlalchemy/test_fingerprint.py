"""asgi_perf.sqlalchemy._fingerprint: operations and literal-free, bounded statement fingerprints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc

from asgi_perf import PerfRegistry
from asgi_perf.operations._endpoints import render_endpoint
from asgi_perf.registry import SLOW_QUERIES
from asgi_perf.sqlalchemy import instrument_engine
from asgi_perf.sqlalchemy._fingerprint import (
    LEXED_DIALECTS,
    MAX_SQL_CHARS,
    FingerprintCache,
    fingerprint_id,
    normalise,
    operation_of,
)


@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("SELECT 1", "SELECT"),
        ("  select * from t", "SELECT"),
        ("-- note\nINSERT INTO t VALUES (1)", "INSERT"),
        ("/* a */ /* b */ update t set x = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b", "SELECT"),
        ("WITH a AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM a)", "DELETE"),
        ("WITH RECURSIVE", "SELECT"),
        ("PRAGMA user_version", "PRAGMA"),
        ("frobnicate the database", "OTHER"),
        ("", "OTHER"),
        ("((", "OTHER"),
    ],
)
def test_operation_is_a_bounded_verb(sql: str, operation: str) -> None:
    """The operation is the statement's verb (past comments and CTEs) or OTHER."""
    assert operation_of(sql) == operation


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = 'x''y' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (...)"),
        ("SELECT * FROM t WHERE id IN (__[POSTCOMPILE_id_1])", "SELECT * FROM t WHERE id IN (...)"),
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)", "INSERT INTO t (a, b) VALUES (?)"),
        ("SELECT :a, %(b)s, %s, $1, ?", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT x::int, t1.c2 FROM t1 -- trailing", "SELECT x::int, t1.c2 FROM t1"),
        ("SELECT $$secret$$, $tag$x$tag$, -1.5e3, 0xff, NULL", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT   a\n\tFROM /* c */ t", "SELECT a FROM t"),
        ("SELECT 'a -- b', '/* x' FROM t -- it's", "SELECT ?, ? FROM t"),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT 1_000_123, 0b1011, 0o777, 0X1F, 12e, 123abc", "SELECT ?, ?, ?, ?, ?, ?"),
        ("SELECT 1.5f, 2d, .5e-3, -7.25E+10 FROM t1", "SELECT ?, ?, ?, ? FROM t1"),
    ],
)
def test_normalise_collapses_values(sql: str, expected: str) -> None:
    """Literals, placeholders, IN-lists, multi-row VALUES, comments and whitespace collapse."""
    assert normalise(sql) == expected


def test_long_sql_is_truncated() -> None:
    """A huge statement is cut to MAX_SQL_CHARS for display."""
    out = normalise("SELECT " + ", ".join(f"col_{i}" for i in range(2000)))
    assert len(out) == MAX_SQL_CHARS
    assert out.endswith("...")


def test_fingerprint_cache_is_bounded() -> None:
    """The statement cache never holds more than its limit, and still answers correctly."""
    cache = FingerprintCache(limit=10)
    for i in range(35):
        fid, sql = cache.get(f"SELECT c{i % 20} FROM t WHERE x = {i}")
        assert fid == fingerprint_id(sql)
        assert len(cache) <= 10


# No backslashes here: a standard string holding one is ambiguous (it may escape the quote on MySQL)
# and is redacted together with the rest of the statement; test_secret_literal_never_survives
# covers them.
literal = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(abs(f))),
    st.text(alphabet=st.sampled_from("ab '-/*$;(),\n"), max_size=30).map(
        lambda s: "'" + s.replace("'", "''") + "'"
    ),
    st.text(st.characters(exclude_characters="\\"), max_size=30).map(
        lambda s: "'" + s.replace("'", "''") + "'"
    ),
)


@settings(max_examples=1000, deadline=None)
@given(
    values=st.lists(literal, min_size=1, max_size=40),
    name=literal,
    shape=st.sampled_from(["in", "values"]),
)
def test_random_literals_and_list_lengths_give_one_fingerprint_per_shape(
    values: list[str], name: str, shape: str
) -> None:
    """1,000 statements with random literals and IN/VALUES list lengths map onto 2 fingerprints."""
    if shape == "in":
        sql = f"SELECT id FROM users WHERE name = {name} AND id IN ({', '.join(values)})"
        expected = "SELECT id FROM users WHERE name = ? AND id IN (...)"
    else:
        rows = ", ".join(f"({v}, {name})" for v in values)
        sql = f"INSERT INTO users (id, name) VALUES {rows}"
        expected = "INSERT INTO users (id, name) VALUES (?)"
    assert normalise(sql) == expected


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        (  # MySQL, or PostgreSQL with standard_conforming_strings off
            "SELECT id FROM users WHERE pw = 'it\\'s hunter2 secret' AND x = 1",
            None,
            "SELECT id FROM users WHERE pw = ?",  # on PostgreSQL the rest is a new string
        ),
        (
            "SELECT id FROM t WHERE token = E'ab\\'cd secret-token' AND y = 2",
            "postgresql",
            "SELECT id FROM t WHERE token = ? AND y = ?",
        ),
        (  # where E'' means nothing, E is a name and the rest an unterminated string
            "SELECT id FROM t WHERE token = E'ab\\'cd secret-token' AND y = 2",
            None,
            "SELECT id FROM t WHERE token = ?",
        ),
        (
            "SELECT id FROM t WHERE token = e'a\\\\' AND y = 2",
            None,
            "SELECT id FROM t WHERE token = ? AND y = ?",
        ),
        ('SELECT id FROM users WHERE pw = "hunter2"', None, "SELECT id FROM users WHERE pw = ?"),
        (
            'SELECT id FROM users WHERE pw = "a\\"b" AND x = 1',
            None,
            "SELECT id FROM users WHERE pw = ?",
        ),
        # PostgreSQL standard string ending in a backslash, then a second literal: over-redacted.
        ("SELECT 'C:\\', 'hunter2' FROM t", None, "SELECT ?"),
        (
            "SELECT id FROM t WHERE name='C:\\' OR pw = 'hunter2'",
            None,
            "SELECT id FROM t WHERE name=?",
        ),
        ("SELECT `it's` FROM t WHERE a = 'x'", "mysql", "SELECT `it's` FROM t WHERE a = ?"),
        ("SELECT `unterminated, 'hunter2'", "mysql", "SELECT `unterminated, ?"),
        ("SELECT [it's] FROM t WHERE a = 'x'", "mssql", "SELECT [it's] FROM t WHERE a = ?"),
    ],
)
def test_escaped_and_double_quoted_literals_are_redacted(
    sql: str, dialect: str | None, expected: str
) -> None:
    """Backslash-escaped quotes, E'' strings and double-quoted strings leave no literal text."""
    assert normalise(sql, dialect=dialect) == expected


def test_double_quotes_are_identifiers_only_when_the_dialect_says_so() -> None:
    """On PostgreSQL and Oracle "..." is kept as a name (a quote inside it starts nothing);
    elsewhere it may be a string, and is redacted."""
    sql = 'SELECT "it\'s", "Name" FROM "t" WHERE pw = \'hunter2\' AND "x""y" = 1'
    for dialect in ("postgresql", "oracle"):
        assert normalise(sql, dialect=dialect) == (
            'SELECT "it\'s", "Name" FROM "t" WHERE pw = ? AND "x""y" = ?'
        )
    for other in (None, "sqlite", "mysql", "mariadb", "mssql", "duckdb"):
        assert normalise(sql, dialect=other) == "SELECT ?, ? FROM ? WHERE pw = ? AND ? = ?"
    cache = FingerprintCache(dialect="postgresql")
    assert cache.get('SELECT "a" FROM t')[1] == 'SELECT "a" FROM t'
    assert FingerprintCache().get('SELECT "a" FROM t')[1] == "SELECT ? FROM t"


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        # PostgreSQL nests block comments; the text after the inner */ is still comment.
        ("/* a /* b */ password=hunter2 */ SELECT 1", "postgresql", "SELECT ?"),
        ("SELECT 1 /* a /* b /* c */ */ hunter2 */ FROM t", "postgresql", "SELECT ? FROM t"),
        ("SELECT 1 /* a /* unterminated */ hunter2", "postgresql", "SELECT ?"),
        ("SELECT 1 /* a /* b */ hunter2 */ FROM t", "mssql", "SELECT ? FROM t"),
        # Where comments do not nest, the rest after the first */ is SQL, kept.
        ("SELECT 1 /* a /* b */ FROM t", "mysql", "SELECT ? FROM t"),
        ("SELECT 1 /* a /* b */ FROM t", "oracle", "SELECT ? FROM t"),
        # The all-rules mode redacts what either reading calls a comment.
        ("/* a /* b */ password=hunter2 */ SELECT 1", None, "SELECT ?"),
        ("/* a /* b */ password=hunter2 */ SELECT 1", "sqlite", "SELECT ?"),
        # '#' is a MySQL comment, PostgreSQL's XOR, SQL Server's temporary-table prefix.
        ("SELECT a # hunter2\nFROM t", "mysql", "SELECT a FROM t"),
        ("SELECT a # hunter2\nFROM t", "mariadb", "SELECT a FROM t"),
        ("SELECT a # hunter2\nFROM t", None, "SELECT a FROM t"),
        ("SELECT a # b FROM t WHERE c = 'x'", "postgresql", "SELECT a # b FROM t WHERE c = ?"),
        ("SELECT * FROM #temp WHERE c = N'x'", "mssql", "SELECT * FROM #temp WHERE c = ?"),
        ("SELECT 1 -- hunter2\nFROM t", "mysql", "SELECT ? FROM t"),
        ("SELECT 1--1 FROM t", "mysql", "SELECT ?-? FROM t"),  # MySQL: -- needs a space after
        ("SELECT 1 -- hunter2\r'x' FROM t", "postgresql", "SELECT ? ? FROM t"),  # CR ends it
        # Dollar quotes, with and without a tag; "a$b$" is a name, "$1" a placeholder.
        ("SELECT $$it's hunter2$$, $t$x$$y$t$ FROM t", "postgresql", "SELECT ?, ? FROM t"),
        ("SELECT a$b$ FROM t WHERE pw = 'x$b$ hunter2'", "postgresql", "SELECT a$b$ FROM t WHERE pw = ?"),
        ("SELECT $1, $tag$hunter2", "postgresql", "SELECT ?, ?"),
        # E'', N'', U&'', B'', X''.
        ("SELECT E'\\' hunter2', N'hunter2', U&'hunter2', B'01', X'ff'", "postgresql", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT N'it''s hunter2', _utf8mb4'hunter2'", "mysql", "SELECT ?, _utf8mb4?"),
        ("SELECT N'it''s hunter2'", "mssql", "SELECT ?"),
        # Oracle q-quotes, with every kind of delimiter.
        ("SELECT q'[it's hunter2]', Q'{a}' FROM dual", "oracle", "SELECT ?, ? FROM dual"),
        ("SELECT q'(it's)', q'<it's>', nq'!it's!', q'#it's#' FROM dual", "oracle", "SELECT ?, ?, ?, ? FROM dual"),
        ("SELECT q'[it's hunter2", "oracle", "SELECT ?"),
        ("SELECT seq'x' FROM dual", "oracle", "SELECT seq? FROM dual"),  # no q-quote inside a name
        # SQLite's [names] may hold a quote; SQLAlchemy's expanding IN is no such name.
        ("SELECT [it's] FROM t WHERE pw = 'hunter2'", "sqlite", "SELECT [it?"),
        ("SELECT a FROM t WHERE b IN (__[POSTCOMPILE_b]) AND c = 'x'", "sqlite", "SELECT a FROM t WHERE b IN (...) AND c = ?"),
        # Elsewhere the quote inside opens a string that never ends: over-redacted, not leaked.
        ("SELECT q'[it's hunter2]' FROM dual", None, "SELECT ?"),
    ],
)  # fmt: skip
def test_comments_and_literals_of_every_dialect_are_redacted(
    sql: str, dialect: str | None, expected: str
) -> None:
    """Nested comments, '#' and '--' comments, dollar quotes, prefixed strings and Oracle
    q-quotes are redacted by the dialect's own rules; legitimate SQL around them is kept."""
    assert normalise(sql, dialect=dialect) == expected


def test_known_dialects_and_the_all_rules_mode() -> None:
    """PostgreSQL, MySQL, MariaDB, Oracle and SQL Server are lexed by their own rules; SQLite and
    any other dialect by every rule at once."""
    assert set(LEXED_DIALECTS) == {"postgresql", "mysql", "mariadb", "oracle", "mssql"}
    assert normalise("SELECT a # b", dialect="postgresql") == "SELECT a # b"
    assert normalise("SELECT a # b", dialect="sqlite") == "SELECT a"
    assert normalise("SELECT a # b", dialect="duckdb") == "SELECT a"


# -- a secret planted in every comment and literal form of every dialect ---------------------------
def _clean(text: str, *bad: str) -> str:
    """``text`` without any of ``bad``; repeated, since a removal can make a new occurrence."""
    while any(b in text for b in bad):
        for b in bad:
            text = text.replace(b, "")
    return text


def _doubled(text: str, quote: str = "'", prefix: str = "") -> str:
    return prefix + quote + text.replace(quote, quote * 2) + quote


def _escaped(text: str, quote: str = "'", prefix: str = "") -> str:
    return prefix + quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _delimited(text: str, opening: str, closing: str) -> str:
    """``opening text closing``, ``text`` stripped of the closing's first character if the
    closing would otherwise appear early."""
    if (text + closing).find(closing) != len(text):
        text = text.replace(closing[0], "")
    return opening + text + closing


Form = Callable[[str], str]
LINE: Form = lambda s: "1 -- " + _clean(s, "\n", "\r") + "\n"  # noqa: E731
HASH: Form = lambda s: "1 # " + _clean(s, "\n", "\r") + "\n"  # noqa: E731
BLOCK: Form = lambda s: "1 /* " + _clean(s, "/*", "*/") + " */"  # noqa: E731
NESTED: Form = lambda s: "1 /* a /* b */ " + _clean(s, "/*", "*/") + " */"  # noqa: E731
STANDARD: Form = _doubled
ESCAPED: Form = _escaped
FORMS: dict[str, Form] = {
    "line": LINE,
    "hash": HASH,
    "block": BLOCK,
    "nested": NESTED,
    "standard": STANDARD,
    "escaped": ESCAPED,
    "E": lambda s: _escaped(s, prefix="E"),
    "N standard": lambda s: _doubled(s, prefix="N"),
    "N escaped": lambda s: _escaped(s, prefix="N"),
    "dollar": lambda s: _delimited(s, "$$", "$$"),
    "dollar tag": lambda s: _delimited(s, "$q$", "$q$"),
    "dq doubled": lambda s: _doubled(s, '"'),
    "dq escaped": lambda s: _escaped(s, '"'),
    "q[]": lambda s: _delimited(s, "q'[", "]'"),
    "q{}": lambda s: _delimited(s, "q'{", "}'"),
    "q()": lambda s: _delimited(s, "Q'(", ")'"),
    "q<>": lambda s: _delimited(s, "nq'<", ">'"),
    "q!!": lambda s: _delimited(s, "q'!", "!'"),
    "q##": lambda s: _delimited(s, "q'#", "#'"),
}
PG = ["line", "block", "nested", "E", "dollar", "dollar tag"]
MYSQL = ["hash", "line", "block"]
# Each server setting that changes the lexing, with its dialect and the forms valid under it.
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "postgresql": ("postgresql", [*PG, "standard", "N standard"]),
    "postgresql standard_conforming_strings=off": ("postgresql", [*PG, "escaped", "N escaped"]),
    "mysql": ("mysql", [*MYSQL, "escaped", "N escaped", "dq escaped"]),
    "mysql ANSI_QUOTES": ("mysql", [*MYSQL, "escaped", "N escaped"]),
    "mysql NO_BACKSLASH_ESCAPES": ("mysql", [*MYSQL, "standard", "N standard", "dq doubled"]),
    "mariadb": ("mariadb", [*MYSQL, "escaped", "N escaped", "dq escaped"]),
    "sqlite": ("sqlite", ["line", "block", "standard", "dq doubled"]),
    "oracle": ("oracle", ["line", "block", "standard", "N standard", "q[]", "q{}", "q()",
                          "q<>", "q!!", "q##"]),
    "mssql": ("mssql", ["line", "block", "nested", "standard", "N standard"]),
}  # fmt: skip
# Every character that delimits something somewhere; no "z", so "zq" marks the secret alone.
tricky = st.text(st.sampled_from("ab '\"\\`$#-/*;()[]{}<>!|\n\rqQENn"), max_size=20)


@st.composite
def planted(draw: st.DrawFn) -> tuple[str, str | None]:
    """(a statement holding a secret "zq..." in a comment or literal, a dialect to read it as):
    the statement's own dialect, or one lexed by every rule at once."""
    dialect, forms = SETTINGS[draw(st.sampled_from(sorted(SETTINGS)))]
    decoy = FORMS[draw(st.sampled_from(forms))](draw(tricky))
    secret = FORMS[draw(st.sampled_from(forms))]("zq" + draw(tricky))
    sql = f"SELECT a, {decoy} FROM t WHERE b = {secret} AND c = 1"
    return sql, draw(st.sampled_from([dialect, None, "sqlite", "duckdb"]))


@settings(max_examples=2000, deadline=None)
@given(statement=planted())
def test_a_planted_secret_never_survives(statement: tuple[str, str | None]) -> None:
    """A random secret in any comment or literal form a dialect accepts, after any other of its
    forms, never reaches the normalised text, read as that dialect or by every rule at once."""
    sql, dialect = statement
    assert "zq" not in normalise(sql, dialect=dialect)


@settings(max_examples=1000, deadline=None)
@given(
    forms=st.tuples(st.sampled_from(sorted(FORMS)), st.sampled_from(sorted(FORMS))),
    decoy=tricky,
    secret=tricky.map(lambda s: "zq" + s),
    dialect=st.sampled_from([None, "sqlite", "duckdb"]),
)
def test_forms_of_different_dialects_mixed_never_leak_in_the_all_rules_mode(
    forms: tuple[str, str], decoy: str, secret: str, dialect: str | None
) -> None:
    """Read by every rule at once (SQLite, unknown dialects), a statement mixing forms no single
    database accepts together (a dollar quote, then a "..." string) still keeps no secret."""
    sql = f"SELECT a, {FORMS[forms[0]](decoy)} FROM t WHERE b = {FORMS[forms[1]](secret)} AND c = 1"
    assert "zq" not in normalise(sql, dialect=dialect)


def test_a_planted_secret_reaches_no_log_summary_or_dashboard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """End to end on a real SQLite engine with a slow-query threshold of 1 ns (every statement is
    slow, failed ones included): a secret planted in any comment or literal form of any dialect
    appears in no slow-query log record (message or attributes), no statement_stats row, not in
    registry.summary() and not in the JSON the dashboard polls (summary, history, alerts)."""
    engine = create_engine("sqlite://")
    registry = PerfRegistry()
    handle = instrument_engine(
        engine,
        registry=registry,
        slow_query_threshold=1e-9,  # the smallest allowed: every statement is slow
        slow_log_interval=0,
        statement_stats=True,
    )
    slow_log = registry.find_component(SLOW_QUERIES)
    assert slow_log is not None

    @settings(max_examples=150, deadline=None)
    @given(statement=planted())
    def check(statement: tuple[str, str | None]) -> None:
        sql, _ = statement  # the engine's dialect decides how it is read: SQLite, every rule
        caplog.clear()
        # Invalid for SQLite, mostly: a failed statement is still a slow one.
        with engine.connect() as conn, contextlib.suppress(sa_exc.DBAPIError):
            conn.exec_driver_sql(sql)
        recent = slow_log.recent(limit=1)[0]
        assert recent["fingerprint"] == fingerprint_id(normalise(sql, dialect="sqlite"))
        records = [r for r in caplog.records if r.name == "asgi_perf.sqlalchemy"]
        assert records  # the slow-query record was written
        shown = [r.getMessage() + repr(vars(r)) for r in records]
        shown.append(json.dumps(handle.statement_stats()))
        shown.append(json.dumps(registry.summary(), default=str))
        for endpoint in ("summary", "history", "alerts"):
            status, body, _, _ = asyncio.run(render_endpoint(endpoint, registry, b"", False))
            assert status == 200
            shown.append(body.decode())
        for text in shown:
            assert "zq" not in text

    with caplog.at_level(logging.WARNING, logger="asgi_perf.sqlalchemy"):
        check()
    handle.detach()
    engine.dispose()
