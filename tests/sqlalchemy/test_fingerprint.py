"""asgi_perf.sqlalchemy._fingerprint: operations and literal-free, bounded statement fingerprints."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_perf.sqlalchemy._fingerprint import (
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
    ("sql", "expected"),
    [
        (  # MySQL, or PostgreSQL with standard_conforming_strings off
            "SELECT id FROM users WHERE pw = 'it\\'s hunter2 secret' AND x = 1",
            "SELECT id FROM users WHERE pw = ?",  # on PostgreSQL the rest is a new string
        ),
        (
            "SELECT id FROM t WHERE token = E'ab\\'cd secret-token' AND y = 2",
            "SELECT id FROM t WHERE token = ? AND y = ?",
        ),
        (
            "SELECT id FROM t WHERE token = e'a\\\\' AND y = 2",
            "SELECT id FROM t WHERE token = ? AND y = ?",
        ),
        ('SELECT id FROM users WHERE pw = "hunter2"', "SELECT id FROM users WHERE pw = ?"),
        (
            'SELECT id FROM users WHERE pw = "a\\"b" AND x = 1',
            "SELECT id FROM users WHERE pw = ?",
        ),
        # PostgreSQL standard string ending in a backslash, then a second literal: over-redacted.
        ("SELECT 'C:\\', 'hunter2' FROM t", "SELECT ?"),
        ("SELECT id FROM t WHERE name='C:\\' OR pw = 'hunter2'", "SELECT id FROM t WHERE name=?"),
        ("SELECT `it's` FROM t WHERE a = 'x'", "SELECT `it's` FROM t WHERE a = ?"),
        ("SELECT `unterminated, 'hunter2'", "SELECT `unterminated, ?"),
    ],
)
def test_escaped_and_double_quoted_literals_are_redacted(sql: str, expected: str) -> None:
    """Backslash-escaped quotes, E'' strings and double-quoted strings leave no literal text."""
    assert normalise(sql) == expected


def test_double_quotes_are_identifiers_only_when_the_dialect_says_so() -> None:
    """With double_quoted_identifiers, "..." is kept as a name (a quote inside it starts nothing)."""
    sql = 'SELECT "it\'s", "Name" FROM "t" WHERE pw = \'hunter2\' AND "x""y" = 1'
    assert normalise(sql, double_quoted_identifiers=True) == (
        'SELECT "it\'s", "Name" FROM "t" WHERE pw = ? AND "x""y" = ?'
    )
    assert normalise(sql) == "SELECT ?, ? FROM ? WHERE pw = ? AND ? = ?"
    cache = FingerprintCache(double_quoted_identifiers=True)
    assert cache.get('SELECT "a" FROM t')[1] == 'SELECT "a" FROM t'
    assert FingerprintCache().get('SELECT "a" FROM t')[1] == "SELECT ? FROM t"


def _standard(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _backslashed(s: str, quote: str = "'", prefix: str = "") -> str:
    return prefix + quote + s.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


QUOTING: dict[str, Callable[[str], str]] = {
    "standard": _standard,
    "backslash": _backslashed,
    "E-string": lambda s: _backslashed(s, prefix="E"),
    "double-quoted": lambda s: _backslashed(s, quote='"'),
    "double-quoted doubled": lambda s: '"' + s.replace('"', '""') + '"',
    "dollar": lambda s: "$q$" + s + "$q$",
}
tricky = st.text(st.sampled_from("ab '\"\\`$-/*;(),\n"), max_size=20)


@settings(max_examples=1000, deadline=None)
@given(
    secret=tricky.map(lambda s: "zq" + s),
    decoy=tricky,
    styles=st.tuples(st.sampled_from(sorted(QUOTING)), st.sampled_from(sorted(QUOTING))),
    identifiers=st.booleans(),
)
def test_secret_literal_never_survives(
    secret: str, decoy: str, styles: tuple[str, str], identifiers: bool
) -> None:
    """A random secret in any quoting style, after any other literal, never reaches the output."""
    if "$q$" in secret:
        return  # not a valid dollar-quoted literal
    if identifiers and "double-quoted" in styles[1]:
        return  # there "..." is a name, as the dialect says, not a literal
    before, quoted = QUOTING[styles[0]](decoy), QUOTING[styles[1]](secret)
    if "$q$" in decoy or (identifiers and "double-quoted" in styles[0]):
        before = "1"
    sql = f"SELECT a FROM t WHERE b = {before} AND pw = {quoted} AND c = 1"
    out = normalise(sql, double_quoted_identifiers=identifiers)
    assert "zq" not in out
