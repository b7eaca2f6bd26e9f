"""Metered caches: cachetools caches that count, ``cached`` for sync and async functions.

``LRUCache``, ``LFUCache``, ``TTLCache`` and ``TLRUCache`` behave exactly like cachetools' and count
hits, misses and evictions by reason as plain ints; one scrape-time collector per registry exports
them; ``cached`` memoizes ``def`` and ``async def`` functions with one load per key (see
``docs/cache.md``). :mod:`asgi_perf.cache.redis` adds a Redis tier behind any of them. Requires
the ``cachetools`` extra.
"""

from .. import _optional

with _optional.requires("asgi_perf.cache", extra="cachetools"):
    import cachetools  # noqa: F401

from .._checks import ERR_REGISTRY
from ._base import ERR_LOCK, ERR_MAXSIZE, ERR_NAME, CacheStats, EvictionStats, Lock, MeteredCache
from ._caches import ERR_JITTER, ERR_TTL, ERR_TTU, LFUCache, LRUCache, TLRUCache, TTLCache, caches
from ._collector import COMPONENT_KEY, ERR_DUPLICATE, ERR_TOO_MANY, CacheSet
from ._decorators import (
    ERR_ASYNC_CONDITION,
    ERR_GENERATOR,
    ERR_KEY,
    ERR_LOCK_MISMATCH,
    ERR_NOT_METERED,
    Cached,
    CacheInfo,
    cached,
)

__all__ = [
    "COMPONENT_KEY",
    "ERR_ASYNC_CONDITION",
    "ERR_DUPLICATE",
    "ERR_GENERATOR",
    "ERR_JITTER",
    "ERR_KEY",
    "ERR_LOCK",
    "ERR_LOCK_MISMATCH",
    "ERR_MAXSIZE",
    "ERR_NAME",
    "ERR_NOT_METERED",
    "ERR_REGISTRY",
    "ERR_TOO_MANY",
    "ERR_TTL",
    "ERR_TTU",
    "CacheInfo",
    "CacheSet",
    "CacheStats",
    "Cached",
    "EvictionStats",
    "LFUCache",
    "LRUCache",
    "Lock",
    "MeteredCache",
    "TLRUCache",
    "TTLCache",
    "cached",
    "caches",
]
