"""SQLAlchemy: statement timing, slow-query reports, pool health and queries per request.

``instrument_engine(engine, registry=..., name="main")`` instruments a sync ``Engine`` or an
``AsyncEngine`` (see ``docs/sqlalchemy.md``). Bad options raise ``ValueError`` with the messages in
this module's ``ERR_*`` constants. Requires the ``sqlalchemy`` extra.
"""

from .. import _optional

with _optional.requires("asgi_perf.sqlalchemy", extra="sqlalchemy"):
    import sqlalchemy  # noqa: F401

from .._checks import ERR_REGISTRY
from ._engine import (
    CANCELLED,
    DBAPI_ERRORS,
    ERR_ENGINE,
    ERR_INTERVAL,
    ERR_MAX_FINGERPRINTS,
    ERR_N_PLUS_ONE,
    ERR_NAME,
    ERR_NAME_TAKEN,
    ERR_OTHER_REGISTRY,
    ERR_THRESHOLD,
    ERROR,
    OK,
    SLOW_QUERIES,
    InstrumentedEngine,
    SlowQueryLog,
    instrument_engine,
)

__all__ = [
    "CANCELLED",
    "DBAPI_ERRORS",
    "ERROR",
    "ERR_ENGINE",
    "ERR_INTERVAL",
    "ERR_MAX_FINGERPRINTS",
    "ERR_NAME",
    "ERR_NAME_TAKEN",
    "ERR_N_PLUS_ONE",
    "ERR_OTHER_REGISTRY",
    "ERR_REGISTRY",
    "ERR_THRESHOLD",
    "OK",
    "SLOW_QUERIES",
    "InstrumentedEngine",
    "SlowQueryLog",
    "instrument_engine",
]
