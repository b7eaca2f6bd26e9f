"""CacheSet: the per-registry set of metered caches, exported by one scrape-time collector."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import Metric

from ..registry import CatalogueCollector, ComponentKey, PerfRegistry

if TYPE_CHECKING:
    from ._base import MeteredCache

ERR_DUPLICATE = "a cache named {!r} is already registered in this registry"
ERR_TOO_MANY = (
    "this registry already exports {} caches (max_series_per_metric // 3); "
    "cache names must come from code, not from traffic"
)

_COUNTERS = (
    "cache_load_errors_total",
    "cache_coalesced_total",
    "cache_rejected_total",
)


class CacheSet(Mapping[str, "MeteredCache[Any, Any]"], CatalogueCollector):
    """Every metered cache of one registry, by name; also the collector that exports them.

    Created on first use by :func:`asgi_perf.cache.caches` and stored as the registry component
    ``"cache.caches"``, so other components find the caches with ``registry.find_component``.
    Each cache's metrics are read from its plain-int counters at scrape time, under its lock when
    it has one.
    """

    metrics = (
        "cache_requests_total",
        "cache_evictions_total",
        "cache_entries",
        "cache_maxsize",
        "cache_load_duration_seconds",
        *_COUNTERS,
    )

    def __init__(self, registry: PerfRegistry) -> None:
        CatalogueCollector.__init__(self, registry)
        self._caches: dict[str, MeteredCache[Any, Any]] = {}
        self._lock = threading.Lock()
        # Every cache adds up to three series to cache_evictions_total.
        self._limit = max(1, registry.max_series_per_metric // 3)
        #: Where this registry's caches count in multi-worker mode (``None``: plain ints). Fixed
        #: here, so every cache of the set counts in one place whenever it was built.
        self.shared = registry.shared
        if self.shared is not None:
            # Multi-worker mode: counters and the load histogram live in shared memory (exact
            # at every scrape); entries and maxsize are still read here and published.
            registry.shared_families.update(
                registry.metric_name(m).removesuffix("_total")
                for m in self.metrics
                if registry.spec(m).kind != "gauge"
            )
        registry.register(self)

    # -- the mapping ---------------------------------------------------------------------------
    def add(self, cache: MeteredCache[Any, Any]) -> None:
        """Register ``cache`` under its name; ``ValueError`` if the name is taken."""
        with self._lock:
            if cache.name in self._caches:
                raise ValueError(ERR_DUPLICATE.format(cache.name))
            if len(self._caches) >= self._limit:
                raise ValueError(ERR_TOO_MANY.format(len(self._caches)))
            self._caches[cache.name] = cache

    def remove(self, name: str) -> None:
        """Stop exporting the cache ``name`` (its name may then be reused)."""
        with self._lock:
            del self._caches[name]

    def __getitem__(self, name: str) -> MeteredCache[Any, Any]:
        return self._caches[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._caches))

    def __len__(self) -> int:
        return len(self._caches)

    # prometheus_client keys its registry by collector, and Mapping would make this unhashable.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    # -- the collector -------------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        with self._lock:
            members = list(self._caches.values())
        if not members:
            return []
        f = self.families()
        for cache in members:
            try:
                stats, buckets = cache._export()
            except Exception as exc:  # noqa: BLE001 - one broken cache must not empty /metrics
                self.registry.report_error("cache", exc)
                continue
            name = stats["name"]
            f["cache_requests_total"].add_metric([name, "hit"], stats["hits"])
            f["cache_requests_total"].add_metric([name, "miss"], stats["misses"])
            for reason, count in stats["evictions"].items():
                f["cache_evictions_total"].add_metric([name, reason], count)
            f["cache_entries"].add_metric([name], stats["entries"])
            f["cache_maxsize"].add_metric([name], stats["maxsize"])
            f["cache_load_duration_seconds"].add_metric([name], buckets, stats["load_seconds"])
            f["cache_load_errors_total"].add_metric([name], stats["load_errors"])
            f["cache_coalesced_total"].add_metric([name], stats["coalesced"])
            f["cache_rejected_total"].add_metric([name], stats["rejected"])
        return list(f.values())


#: The registry's metered caches, by name (``asgi_perf.cache.caches(registry)`` reads them).
COMPONENT_KEY: ComponentKey[CacheSet] = ComponentKey("cache.caches")
