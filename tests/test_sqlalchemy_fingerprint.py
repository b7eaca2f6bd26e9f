"""asgi_perf._sqlfingerprint: operations and literal-free, bounded statement fingerprints."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_perf._sqlfingerprint import (
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


literal = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(abs(f))),
    st.text(alphabet=st.sampled_from("ab '-/*$;(),\n"), max_size=30).map(
        lambda s: "'" + s.replace("'", "''") + "'"
    ),
    st.text(max_size=30).map(lambda s: "'" + s.replace("'", "''") + "'"),
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
