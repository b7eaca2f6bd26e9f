"""SQL statement operations and fingerprints: bounded, literal-free names for statements.

``operation_of(sql)`` maps a statement onto a small fixed set of verbs (``SELECT``, ``INSERT``,
..., ``OTHER``) for the ``operation`` label. ``normalise(sql)`` collapses every literal, bind
placeholder, IN-list and multi-row ``VALUES`` list, so one statement shape gives one fingerprint
whatever its values: the fingerprint is safe to show (no parameter or literal survives) and their
number is bounded by the statement shapes in the code, not by the traffic.
"""

from __future__ import annotations

import hashlib
import re

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

# Strings, comments and quoted identifiers in one left-to-right scan: each may contain the others'
# delimiters. Whether a backslash escapes a quote depends on the server (MySQL: yes; PostgreSQL:
# only in E'' strings or with standard_conforming_strings off), so the text is scanned under both
# conventions and the union of what either calls a literal is redacted: whichever is right, no
# literal survives; the cost is over-redaction (a standard string ending in a backslash hides the
# statement's rest), the safe direction. An unterminated string swallows the rest; an unterminated
# identifier quote is ignored, so an identifier can never keep a literal's text visible.
_COMMENT = r"(?P<comment>--[^\n]*|/\*.*?(?:\*/|$))"
_DOLLAR = r"\$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|$)"  # PostgreSQL dollar quoting
_BACKTICK = r"`[^`]*`"  # MySQL identifiers
_DQ_IDENTIFIER = r'"(?:[^"]|"")*"'
_ESCAPED = r"(?:[EeBbXxNn]|[Uu]&)?'(?:[^'\\]|\\.|'')*(?:'|$)"
# E'' (escaped) only as its own token: the "e" of name='x' must not make 'x' an escaped string.
_STANDARD = r"(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*(?:'|$)|(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|$)"
_DQ_ESCAPED = r'"(?:[^"\\]|\\.|"")*(?:"|$)'
_DQ_STANDARD = r'"(?:[^"]|"")*(?:"|$)'


def _scanner(identifiers: str, strings: str) -> re.Pattern[str]:
    return re.compile(f"{_COMMENT}|(?P<identifier>{identifiers})|{strings}|{_DOLLAR}", re.DOTALL)


# (standard scan, backslash scan) for: double quotes are identifiers / double quotes may be strings.
_SCANS = {
    True: (
        _scanner(f"{_BACKTICK}|{_DQ_IDENTIFIER}", _STANDARD),
        _scanner(f"{_BACKTICK}|{_DQ_IDENTIFIER}", _ESCAPED),
    ),
    False: (
        _scanner(_BACKTICK, f"{_STANDARD}|{_DQ_STANDARD}"),
        _scanner(_BACKTICK, f"{_ESCAPED}|{_DQ_ESCAPED}"),
    ),
}
# Then placeholders and numbers, then the list shapes built from the collapsed ``?`` tokens.
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"__\[POSTCOMPILE_\w+(?:~~[^\]]*)?\]"), "?"),  # SQLAlchemy expanding IN
    (re.compile(r"%\(\w+\)s|%s|\$\d+|(?<![:\w]):\w+|\?"), "?"),  # bind placeholders
    (re.compile(r"(?<![\w.])-?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\b"), "?"),
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


def normalise(sql: str, *, double_quoted_identifiers: bool = False) -> str:
    """``sql`` with literals, placeholders, IN-lists and multi-row VALUES collapsed.

    ``double_quoted_identifiers=True`` keeps ``"..."`` as an identifier (PostgreSQL, Oracle);
    by default it is redacted like a string, because MySQL and SQLite (its "DQS" compatibility)
    accept double-quoted string literals.
    """
    sql = _redact_quoted(sql, _SCANS[double_quoted_identifiers])
    for pattern, replacement in _NORMALISERS:
        sql = pattern.sub(replacement, sql)
    sql = sql.strip()
    if len(sql) > MAX_SQL_CHARS:
        sql = sql[: MAX_SQL_CHARS - 3] + "..."
    return sql


def _redact_quoted(sql: str, scans: tuple[re.Pattern[str], ...]) -> str:
    # (start, end, is a literal rather than a comment); identifiers are kept, so not listed.
    spans = sorted(
        (match.start(), match.end(), match.group("comment") is None)
        for scan in scans
        for match in scan.finditer(sql)
        if match.group("identifier") is None
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

    __slots__ = ("_cache", "_double_quoted_identifiers", "_limit")

    def __init__(self, limit: int = 1000, *, double_quoted_identifiers: bool = False) -> None:
        self._limit = limit
        self._double_quoted_identifiers = double_quoted_identifiers
        self._cache: dict[str, tuple[str, str]] = {}

    def get(self, sql: str) -> tuple[str, str]:
        found = self._cache.get(sql)
        if found is None:
            norm = normalise(sql, double_quoted_identifiers=self._double_quoted_identifiers)
            found = (fingerprint_id(norm), norm)
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[sql] = found
        return found

    def __len__(self) -> int:
        return len(self._cache)


__all__ = [
    "MAX_SQL_CHARS",
    "OPERATIONS",
    "OTHER_OPERATION",
    "FingerprintCache",
    "fingerprint_id",
    "normalise",
    "operation_of",
]
