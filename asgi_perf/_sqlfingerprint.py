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

# Strings and comments in one left-to-right scan: each may contain the other's delimiters.
# An unterminated string swallows the rest, so no part of a literal can survive.
_QUOTED = re.compile(
    r"(?P<comment>--[^\n]*|/\*.*?(?:\*/|$))"
    r"|(?:[EeBbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|$)"
    r"|\$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|$)",  # PostgreSQL dollar quoting
    re.DOTALL,
)
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


def normalise(sql: str) -> str:
    """``sql`` with literals, placeholders, IN-lists and multi-row VALUES collapsed."""
    sql = _QUOTED.sub(_quoted, sql)
    for pattern, replacement in _NORMALISERS:
        sql = pattern.sub(replacement, sql)
    sql = sql.strip()
    if len(sql) > MAX_SQL_CHARS:
        sql = sql[: MAX_SQL_CHARS - 3] + "..."
    return sql


def _quoted(match: re.Match[str]) -> str:
    return " " if match.group("comment") is not None else "?"


def fingerprint_id(normalised: str) -> str:
    """A short stable id for a normalised statement (16 hex digits)."""
    return hashlib.blake2b(normalised.encode("utf-8", "replace"), digest_size=8).hexdigest()


class FingerprintCache:
    """``statement -> (fingerprint, normalised sql)`` with a hard size cap.

    Normalising runs a dozen regexes; statements repeat, so it runs once per distinct text. When
    the cache is full it starts over rather than grow: a flood of distinct texts costs CPU, never
    memory.
    """

    __slots__ = ("_cache", "_limit")

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._cache: dict[str, tuple[str, str]] = {}

    def get(self, sql: str) -> tuple[str, str]:
        found = self._cache.get(sql)
        if found is None:
            norm = normalise(sql)
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
