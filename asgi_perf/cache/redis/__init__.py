"""The Redis tier: a metered local cache in front of Redis, shared by every process.

:class:`TieredCache` looks in the local tier, then Redis, then runs the loader once per key;
writes and invalidations reach other processes through Redis pub/sub; Redis is an optimisation,
never a dependency (see ``docs/cache.md``). Requires the ``redis`` extra.
"""

from ... import _optional

with _optional.requires("asgi_perf.cache.redis", extra="redis"):
    import redis  # noqa: F401

from ._codec import ERR_KEY_TYPE, JsonSerializer, Key, PickleSerializer, Serializer
from ._decorator import ERR_NOT_ASYNC, TieredCached, cached_tiered
from ._tiered import (
    ERR_BREAKER,
    ERR_CLIENT,
    ERR_DECODE,
    ERR_LOCAL,
    ERR_NAMESPACE,
    ERR_PING,
    ERR_SERIALIZER,
    ERR_TIMEOUT,
    SCAN_COUNT,
    TieredCache,
)

__all__ = [
    "ERR_BREAKER",
    "ERR_CLIENT",
    "ERR_DECODE",
    "ERR_KEY_TYPE",
    "ERR_LOCAL",
    "ERR_NAMESPACE",
    "ERR_NOT_ASYNC",
    "ERR_PING",
    "ERR_SERIALIZER",
    "ERR_TIMEOUT",
    "SCAN_COUNT",
    "JsonSerializer",
    "Key",
    "PickleSerializer",
    "Serializer",
    "TieredCache",
    "TieredCached",
    "cached_tiered",
]
