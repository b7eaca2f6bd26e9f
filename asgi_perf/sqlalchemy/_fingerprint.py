"""SQL statement operations and fingerprints: bounded, literal-free names for statements.

``operation_of(sql)`` maps a statement onto a small fixed set of verbs (``SELECT``, ``INSERT``,
..., ``OTHER``) for the ``operation`` label. ``normalise(sql, dialect=...)`` drops every comment
and collapses every literal, bind placeholder, IN-list and multi-row ``VALUES`` list, lexing the
statement as the engine's database does, so one statement shape gives one fingerprint whatever its
values: the fingerprint is safe to show (no parameter, literal or comment survives) and their
number is bounded by the statement shapes in the code, not by the traffic.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

#: Operation label for statements whose verb is outside :data:`OPERATIONS`.
OTHER_OPERATION = "OTHER"

#: The verbs kept as ``operation`` labels; anything else is ``OTHER``.
OPERATIONS = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "VALUES",
        "CREATE", "DROP", "ALTER", "TRUNCATE", "COMMENT", "GRANT", "REVOKE",
        "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
        "SET", "SHOW", "EXPLAIN", "ANALYZE", "VACUUM", "PRAGMA", "CALL", "EXEC", "EXECUTE",
        "COPY", "LOCK", "LISTEN", "NOTIFY", "DECLARE", "FETCH", "CLOSE", "PREPARE", "REFRESH",
    }
)  # fmt: skip

#: Longest normalised SQL kept for display (slow-query log, recent list).
MAX_SQL_CHARS = 2000

_LEADING_JUNK = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")
# After a CTE list, the main statement's verb follows the closing parenthesis of the last CTE.
_CTE_VERB = re.compile(r"\)\s*(SELECT|INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)

# Literals and comments are found by lexers that split a statement the way a database does: each
# may hide the others' delimiters ('--' in a string, a quote in a comment, '*/' in a dollar quote).
# Some lexing depends on a server setting (PostgreSQL's standard_conforming_strings, MySQL's
# NO_BACKSLASH_ESCAPES and ANSI_QUOTES), so a dialect has one lexer per setting, and whatever any of
# them calls a literal or a comment is redacted: whichever setting is live, nothing survives; the
# price is over-redaction (a standard string ending in a backslash hides the statement's rest), the
# safe direction. A lexer must follow its database exactly: one that ended a literal or comment
# sooner or later would carry on in step with no setting at all.
#
# A word right before a quote or "$" is a token of its own, so a prefix or delimiter only counts
# where the database sees a token start: "name'x'" is no E-string, "a$b$" no dollar quote, "aq'x'"
# no Oracle q-quote (other words are skipped inside the regex engine, never seen in Python). An
# unterminated string or comment swallows the rest; an unterminated quoted identifier is ignored,
# so an identifier can never keep a literal's text visible.
_FLAT = r"/\*.*?(?:\*/|\Z)"
_STANDARD = r"'(?:[^']|'')*(?:'|\Z)"  # '' doubles a quote, a backslash is a character
_BACKSLASHED = r"'(?:[^'\\]|\\.|'')*(?:'|\Z)"  # and \' escapes one
_DQ_STANDARD = r'"(?:[^"]|"")*(?:"|\Z)'
_DQ_BACKSLASHED = r'"(?:[^"\\]|\\.|"")*(?:"|\Z)'
_DQ_IDENTIFIER = r'"(?:[^"]|"")*"'
_BACKTICK = r"`(?:[^`]|``)*`"  # MySQL, SQLite
_DOLLAR = r"\$(?P<tag>(?:[^\W\d]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)"  # PostgreSQL
# Oracle: q'[...]', q'{...}', q'(...)', q'<...>' or q'c...c' for any other non-space character c.
_Q_QUOTE = (
    r"[Nn]?[Qq]'(?:\[.*?(?:\]'|\Z)|\{.*?(?:\}'|\Z)|\(.*?(?:\)'|\Z)|<.*?(?:>'|\Z)"
    r"|(?P<q>\S).*?(?:(?P=q)'|\Z))"
)


def _lexer(
    *,
    line_end: str = "\n",
    hash_comments: bool = False,
    dashes: str = "--",
    nested: bool = False,
    strings: str = _STANDARD,
    prefixes: str = "[NnXx]",
    extra_literals: tuple[str, ...] = (),
    double_quotes: str = _DQ_STANDARD,
    identifiers: tuple[str, ...] = (_BACKTICK,),
    word_chars: str = r"[\w$]",
    needs: str = "",
) -> tuple[re.Pattern[str], str]:
    """One lexer, and the character without which it splits a statement like the dialect's first
    lexer (so it need not run): the backslash for backslash escapes, CR for CR-ended comments."""
    starts = f"#|{dashes}" if hash_comments else dashes
    comments = [rf"(?:{starts})[^{line_end}]*"]
    if not nested:
        comments.append(_FLAT)
    literals = (*extra_literals, f"(?:{prefixes})?{strings}")
    if double_quotes == _DQ_IDENTIFIER:
        identifiers += (_DQ_IDENTIFIER,)
    else:
        literals += (double_quotes,)
    tokens = [f"(?P<comment>{'|'.join(comments)})"]
    if nested:  # PostgreSQL and SQL Server nest block comments: the depth is counted in code
        tokens.append(r"(?P<nested>/\*)")
    tokens.append(f"(?P<literal>{'|'.join(literals)})")
    if identifiers:
        tokens.append(f"(?P<identifier>{'|'.join(identifiers)})")
    # From a word's start only: the engine then skips the inside of every word at once.
    tokens.append(f"(?P<word>(?<!{word_chars})[^\\W\\d]{word_chars}*(?=['\"$]))")
    return re.compile("|".join(tokens), re.DOTALL), needs


_E_STRING = rf"[Ee]{_BACKSLASHED}"
_POSTGRESQL = tuple(
    _lexer(
        line_end="\r\n",
        nested=True,
        strings=strings,
        prefixes="[BbXxNn]|[Uu]&",
        extra_literals=(_E_STRING, _DOLLAR),
        double_quotes=_DQ_IDENTIFIER,
        identifiers=(),
        needs=needs,
    )
    for strings, needs in ((_STANDARD, ""), (_BACKSLASHED, "\\"))  # standard_conforming_strings
)
_MYSQL = tuple(
    _lexer(
        hash_comments=True,
        dashes=r"--(?=[\x00-\x20]|\Z)",  # '--' only when a space or control character follows
        strings=strings,
        prefixes="[NnBbXx]",
        double_quotes=quotes,
        needs=needs,
    )
    for strings, quotes, needs in (
        (_STANDARD, _DQ_STANDARD, ""),  # NO_BACKSLASH_ESCAPES (a "..." name spans the same text)
        (_BACKSLASHED, _DQ_BACKSLASHED, "\\"),  # the default
        (_BACKSLASHED, _DQ_IDENTIFIER, "\\"),  # ANSI_QUOTES
    )
)
_SQLITE = (_lexer(prefixes="[Xx]", identifiers=(_BACKTICK, r"\[[^\]]*\]")),)
_ORACLE = tuple(
    _lexer(
        line_end=line_end,
        extra_literals=(_Q_QUOTE,),
        prefixes="[Nn]",
        double_quotes=_DQ_IDENTIFIER,
        identifiers=(),
        word_chars=r"[\w$#]",
        needs=needs,
    )
    # Whether a lone CR ends a -- comment is not documented: both ways.
    for line_end, needs in (("\n", ""), ("\r\n", "\r"))
)
_MSSQL = tuple(
    _lexer(
        line_end=line_end,
        nested=True,
        prefixes="[Nn]",
        identifiers=(r"\[(?:[^\]]|\]\])*\]",),
        word_chars=r"[\w@$#]",
        needs=needs,
    )
    for line_end, needs in (("\n", ""), ("\r\n", "\r"))
)
# For statements that mix forms no one database accepts together (a dollar quote and a "..."
# string, say), the all-rules mode also runs two lexers that know every form at once.
_MIXED = tuple(
    _lexer(
        line_end="\r\n",
        hash_comments=True,
        nested=True,
        strings=strings,
        prefixes="[BbXxNn]|[Uu]&",
        extra_literals=(_E_STRING, _DOLLAR, _Q_QUOTE),
        double_quotes=quotes,
        needs=needs,
    )
    for strings, quotes, needs in (
        (_STANDARD, _DQ_STANDARD, ""),
        (_BACKSLASHED, _DQ_BACKSLASHED, "\\"),
    )
)
_ALL = _POSTGRESQL + _MYSQL + _SQLITE + _ORACLE + _MSSQL + _MIXED

#: Dialects lexed by their own rules alone; any other (SQLite included) by every lexer at once.
LEXED_DIALECTS = {
    "postgresql": _POSTGRESQL,
    "mysql": _MYSQL,
    "mariadb": _MYSQL,
    "oracle": _ORACLE,
    "mssql": _MSSQL,
}
_COMMENT_EDGES = re.compile(r"/\*|\*/")
# Without any of these, no lexer finds a literal or a comment (most ORM statements).
_MAY_HIDE = re.compile(r"['\"#$]|--|/\*")
# The lexers of the all-rules mode split a statement differently only where one of these occurs
# (or a second "/*", which may nest); without them the first mixed lexer finds all that they do.
# A [bracketed] name counts only if it holds a delimiter ("__[POSTCOMPILE_x]" does not).
_SPLITS_DIFFERENTLY = re.compile(
    r"[#$\"`\\\r]|[Qq]'|--(?![\x00-\x20]|\Z)|\[[^\]]*?[-'\"#$`/\\]|\]\]"
)

# Then placeholders and numbers, then the list shapes built from the collapsed ``?`` tokens.
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"__\[POSTCOMPILE_\w+(?:~~[^\]]*)?\]"), "?"),  # SQLAlchemy expanding IN
    (re.compile(r"%\(\w+\)s|%s|\$\d+|(?<![:\w]):\w+|\?"), "?"),  # bind placeholders
    # A number is everything from its first digit to the end of the word: 1_000 and 0b101
    # (PostgreSQL 16), 0x1F, 1e-5, 1.5f and 2d (Oracle) all go whole, never leaving a tail behind.
    (re.compile(r"(?<![\w.])-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\w*"), "?"),
    (re.compile(r"\b(?:TRUE|FALSE|NULL)\b", re.IGNORECASE), "?"),
    (re.compile(r"\s+"), " "),
    (re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)"), "(?)"),
    (re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+"), "(?)"),
    (re.compile(r"\bIN\s*\(\?\)", re.IGNORECASE), "IN (...)"),
)


def operation_of(sql: str) -> str:
    """The statement's verb (``SELECT``, ``INSERT``, ...) or ``OTHER``; ``WITH`` looks past CTEs."""
    start = _LEADING_JUNK.match(sql)
    pos = start.end() if start is not None else 0
    word = _WORD.match(sql, pos)
    if word is None:
        return OTHER_OPERATION
    verb = word.group().upper()
    if verb == "WITH":
        found = _CTE_VERB.findall(sql, word.end())
        # The last match is the outermost statement: CTE bodies come before it.
        return found[-1].upper() if found else "SELECT"
    if verb in OPERATIONS:
        return verb
    return OTHER_OPERATION


def normalise(sql: str, *, dialect: str | None = None) -> str:
    """``sql`` with literals, comments, placeholders, IN-lists and multi-row VALUES collapsed.

    ``dialect`` is SQLAlchemy's dialect name. PostgreSQL, MySQL/MariaDB, Oracle and SQL Server
    statements are lexed by that database's rules (under each setting that changes them); any
    other dialect, SQLite and ``None`` included, by all of those rules at once (and by lexers that
    know every form together, for statements mixing them), so a literal or comment in any of their
    forms is redacted. ``"..."`` is kept as an identifier on PostgreSQL and
    Oracle, where it always is one, and redacted elsewhere (MySQL, SQLite and SQL Server can read it
    as a string). ``#`` starts a comment on MySQL/MariaDB and in the all-rules mode, never on
    PostgreSQL (an operator) or SQL Server (temporary tables).
    """
    lexers = LEXED_DIALECTS.get(dialect or "")
    if lexers is None:
        plain = _SPLITS_DIFFERENTLY.search(sql) is None and sql.count("/*") < 2
        lexers = _MIXED[:1] if plain else _ALL
    sql = _redact(sql, lexers)
    for pattern, replacement in _NORMALISERS:
        sql = pattern.sub(replacement, sql)
    sql = sql.strip()
    if len(sql) > MAX_SQL_CHARS:
        sql = sql[: MAX_SQL_CHARS - 3] + "..."
    return sql


def _spans(sql: str, lexer: re.Pattern[str]) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is a literal rather than a comment) of each literal and comment."""
    pos = 0
    search = lexer.search
    while (match := search(sql, pos)) is not None:
        kind = match.lastgroup
        start, pos = match.span()
        if kind == "literal":
            yield start, pos, True
        elif kind == "comment":
            yield start, pos, False
        elif kind == "nested":
            depth = 1
            for edge in _COMMENT_EDGES.finditer(sql, pos):
                depth += 1 if edge.group() == "/*" else -1
                if not depth:
                    pos = edge.end()
                    break
            else:
                pos = len(sql)  # unterminated: the rest is comment
            yield start, pos, False


def _redact(sql: str, lexers: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    if _MAY_HIDE.search(sql) is None:
        return sql
    spans = sorted(
        span for lexer, needs in lexers if not needs or needs in sql for span in _spans(sql, lexer)
    )
    if not spans:
        return sql
    out: list[str] = []
    pos = 0
    start, end, literal = spans[0]
    for s, e, lit in spans[1:]:
        if s < end:  # overlapping: one redaction covering both
            end = max(end, e)
            literal = literal or lit
            continue
        out += (sql[pos:start], "?" if literal else " ")
        pos, start, end, literal = end, s, e, lit
    out += (sql[pos:start], "?" if literal else " ", sql[end:])
    return "".join(out)


def fingerprint_id(normalised: str) -> str:
    """A short stable id for a normalised statement (16 hex digits)."""
    return hashlib.blake2b(normalised.encode("utf-8", "replace"), digest_size=8).hexdigest()


class FingerprintCache:
    """``statement -> (fingerprint, normalised sql)`` with a hard size cap.

    Normalising runs a dozen regexes; statements repeat, so it runs once per distinct text. When
    the cache is full it starts over rather than grow: a flood of distinct texts costs CPU, never
    memory.
    """

    __slots__ = ("_cache", "_dialect", "_limit")

    def __init__(self, limit: int = 1000, *, dialect: str | None = None) -> None:
        self._limit = limit
        self._dialect = dialect
        self._cache: dict[str, tuple[str, str]] = {}

    def get(self, sql: str) -> tuple[str, str]:
        found = self._cache.get(sql)
        if found is None:
            norm = normalise(sql, dialect=self._dialect)
            found = (fingerprint_id(norm), norm)
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[sql] = found
        return found

    def __len__(self) -> int:
        return len(self._cache)


__all__ = [
    "LEXED_DIALECTS",
    "MAX_SQL_CHARS",
    "OPERATIONS",
    "OTHER_OPERATION",
    "FingerprintCache",
    "fingerprint_id",
    "normalise",
    "operation_of",
]
