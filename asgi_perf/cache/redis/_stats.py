"""The Redis tier's plain-int counters, its circuit breaker, and the scrape-time collector.

As for the local caches, nothing here calls prometheus_client on the request path: counters are
ints and dicts of ints on a :class:`TierStats`, and one :class:`TierSet` per registry turns every
tier's counters into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping

from prometheus_client.metrics_core import Metric
from redis.exceptions import ResponseError

from ..._histogram import PlainHistogram
from ..._shared import COUNTER, SharedCounterDict, SharedPlainHistogram, SharedStore
from ...catalogue import CATALOGUE
from ...registry import CatalogueCollector, ComponentKey, PerfRegistry

logger = logging.getLogger("asgi_perf.cache")

#: Registry component key of the per-registry :class:`TierSet`.
#: Redis commands, by the ``operation`` label they are counted under.
OPERATIONS = ("get", "set", "delete", "invalidate_prefix", "publish", "subscribe")
#: How often one tier logs one kind of failure (seconds).
LOG_INTERVAL = 60.0

ERR_TIER_DUPLICATE = "the local cache {!r} already fronts another tiered cache"


#: Scalar counters: their metric and label values after the tier's name.
SHARED_SCALARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hits": ("cache_tier_requests_total", ("redis", "hit")),
    "misses": ("cache_tier_requests_total", ("redis", "miss")),
    "read_errors": ("cache_tier_requests_total", ("redis", "error")),
    "resubscribes": ("cache_redis_resubscribes_total", ()),
}
#: Counter dicts keyed by their last label value.
SHARED_MAPPINGS: dict[str, str] = {
    "errors": "cache_redis_errors_total",
    "skipped": "cache_redis_skipped_total",
    "fallbacks": "cache_redis_fallbacks_total",
    "serialization": "cache_redis_serialization_errors_total",
    "invalidations": "cache_redis_invalidations_total",
}


class TierStats:
    """Counters of one Redis tier (read by the collector; written on the event loop only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.misses = 0
        self.read_errors = 0
        self.errors = dict.fromkeys(OPERATIONS, 0)
        self.skipped = dict.fromkeys(OPERATIONS[:-1], 0)
        self.fallbacks = {"error": 0, "circuit_open": 0}
        self.serialization = {"dumps": 0, "loads": 0}
        self.invalidations = {"sent": 0, "received": 0, "malformed": 0}
        self.resubscribes = 0
        self.subscribed = 0
        buckets = tuple(CATALOGUE["cache_redis_duration_seconds"].buckets or ())
        self.durations = {op: PlainHistogram(buckets) for op in OPERATIONS[:-1]}
        self.circuit_open: Callable[[], bool] = lambda: False

    def share(self, registry: PerfRegistry, store: SharedStore) -> None:
        """Multi-worker mode: move every counter and histogram into ``store`` (once, before the
        tier is used). The writers keep their code: the dicts become shared mappings and the
        instance a :class:`SharedTierStats` whose scalar counters are properties over slots."""
        n = self.name
        scalars = {attr: getattr(self, attr) for attr in SHARED_SCALARS}
        slots = []
        for metric, extra in SHARED_SCALARS.values():
            spec = registry.spec(metric)
            family = registry.metric_name(metric).removesuffix("_total")
            labels = list(zip(spec.labels, (n, *extra), strict=True))
            slots.append(store.allocate(family, COUNTER, spec.help, labels))
        self.__class__ = SharedTierStats
        assert isinstance(self, SharedTierStats)
        self._store = store
        self._slots = tuple(slots)
        for attr, value in scalars.items():
            setattr(self, attr, value)
        for attr, metric in SHARED_MAPPINGS.items():
            plain: dict[str, int] = getattr(self, attr)
            shared = _TierCounts(registry, store, metric, n)
            shared.update(plain)  # every label allocated now: exported as zeros, as before
            setattr(self, attr, shared)
        spec = registry.spec("cache_redis_duration_seconds")
        self.durations = {
            op: SharedPlainHistogram(
                hist.bounds,
                store,
                registry.metric_name(spec.name),
                spec.help,
                [("cache", n), ("operation", op)],
            )
            for op, hist in self.durations.items()
        }


def _slot_count(index: int) -> property:
    def get(stats: SharedTierStats) -> int:
        return int(stats._store.values[stats._slots[index]])

    def put(stats: SharedTierStats, value: int) -> None:
        stats._store.values[stats._slots[index]] = value

    return property(get, put)


class SharedTierStats(TierStats):
    """A tier's counters in the worker's shared-memory file (see :meth:`TierStats.share`)."""

    _store: SharedStore
    _slots: tuple[int, ...]

    hits = _slot_count(0)
    misses = _slot_count(1)
    read_errors = _slot_count(2)
    resubscribes = _slot_count(3)


class _TierCounts(MutableMapping[str, float]):
    """``{label value: count}`` of one tier over a :class:`SharedCounterDict` keyed by
    ``(tier name, label value)``."""

    def __init__(self, registry: PerfRegistry, store: SharedStore, metric: str, name: str) -> None:
        spec = registry.spec(metric)
        family = registry.metric_name(metric).removesuffix("_total")
        self._series = SharedCounterDict(store, family, spec.help, spec.labels)
        self._name = name

    def __getitem__(self, label: str) -> float:
        return self._series[(self._name, label)]

    def __setitem__(self, label: str, value: float) -> None:
        self._series[(self._name, label)] = value

    def __delitem__(self, label: str) -> None:
        del self._series[(self._name, label)]

    def __iter__(self) -> Iterator[str]:
        return (key[1] for key in self._series)

    def __len__(self) -> int:
        return len(self._series)


class CircuitBreaker:
    """Skip Redis for ``reset_after`` seconds after ``threshold`` consecutive failures.

    Closed: every call goes through. Open: calls are skipped until ``reset_after`` has passed,
    then exactly one call probes Redis (half-open); its success closes the circuit, its failure
    opens it for another ``reset_after``. A probe that ends neither way (cancelled) frees the slot.

    :meth:`allow` hands each admitted call a token; a verdict counts only with the current one.
    Opening the circuit and admitting a probe each start a new generation, so a command sent
    before the circuit opened, that ends after, can neither close it nor free the probe slot.
    """

    def __init__(self, threshold: int, reset_after: float, timer: Callable[[], float]) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.timer = timer
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.opened = 0
        self.generation = 0

    @property
    def is_open(self) -> bool:
        """True while calls are being skipped (or one probe is out)."""
        return self.opened_at is not None

    def allow(self) -> int | None:
        """A token if the next call may go to Redis (claims the probe slot when half-open),
        else None."""
        if self.opened_at is None:
            return self.generation
        if self.probing or self.timer() - self.opened_at < self.reset_after:
            return None
        self.probing = True
        self.generation += 1
        return self.generation

    def success(self, token: int) -> None:
        if token != self.generation:
            return
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self, token: int) -> None:
        if token != self.generation:
            return
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            if self.opened_at is None:
                self.opened += 1
            self.opened_at = self.timer()
            self.generation += 1

    def release(self, token: int) -> None:
        if token == self.generation:
            self.probing = False


class RateLimitedLog:
    """Log one kind of failure at most once per :data:`LOG_INTERVAL`; count what was held back."""

    def __init__(self, name: str, timer: Callable[[], float]) -> None:
        self.name = name
        self.timer = timer
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def report(self, what: str, exc: BaseException, *, detail: bool = True) -> None:
        # The exception's text only where it cannot hold a key or a value (see _describe); for a
        # serializer error only its type: json's messages quote the offending value.
        now = self.timer()
        last = self._last.get(what)
        if last is not None and now - last < LOG_INTERVAL:
            self._held[what] = self._held.get(what, 0) + 1
            return
        self._last[what] = now
        held = self._held.pop(what, 0)
        reason = _describe(exc) if detail else type(exc).__name__
        logger.warning(
            "tiered cache %r: %s failed (%s); the caller was served without it "
            "(%d similar failures not logged since the last report)",
            self.name,
            what,
            reason,
            held,
        )


def _describe(exc: BaseException) -> str:
    """An exception for the log, without cache keys.

    Connection and timeout errors name the server, never a key. A Redis *error reply* can quote
    the command's arguments (``ERR unknown command 'GET', with args beginning with: 'ns:key'``
    where a command is renamed or disabled), so of a reply only its error code is kept.
    """
    if isinstance(exc, ResponseError):
        code = str(exc).split(" ", 1)[0]
        return f"{type(exc).__name__}: {code}"
    return f"{type(exc).__name__}: {exc}"


class TierSet(CatalogueCollector):
    """Every Redis tier of one registry; also the collector that exports them."""

    metrics = tuple(name for name, spec in CATALOGUE.items() if spec.component == "cache_redis")

    def __init__(self, registry: PerfRegistry) -> None:
        super().__init__(registry)
        self._tiers: dict[str, TierStats] = {}
        self._lock = threading.Lock()
        #: Where every tier of this registry counts in multi-worker mode (``None``: plain ints).
        self.shared = registry.shared
        if self.shared is not None:
            # Counters and durations in shared memory; the circuit and subscription gauges are
            # still read here and published.
            registry.shared_families.update(
                registry.metric_name(m).removesuffix("_total")
                for m in self.metrics
                if registry.spec(m).kind != "gauge"
            )
        registry.register(self)

    def add(self, stats: TierStats) -> None:
        with self._lock:
            if stats.name in self._tiers:
                raise ValueError(ERR_TIER_DUPLICATE.format(stats.name))
            self._tiers[stats.name] = stats
        if self.shared is not None:
            stats.share(self.registry, self.shared)

    def collect(self) -> Iterable[Metric]:
        # Never empty: the set is created by the first tier it holds.
        with self._lock:
            members = list(self._tiers.values())
        f = self.families()
        for s in members:
            n = s.name
            requests = f["cache_tier_requests_total"]
            for result, count in (("hit", s.hits), ("miss", s.misses), ("error", s.read_errors)):
                requests.add_metric([n, "redis", result], count)
            for family, counts in (
                ("cache_redis_errors_total", s.errors),
                ("cache_redis_skipped_total", s.skipped),
                ("cache_redis_fallbacks_total", s.fallbacks),
                ("cache_redis_serialization_errors_total", s.serialization),
                ("cache_redis_invalidations_total", s.invalidations),
            ):
                for label, count in list(counts.items()):
                    f[family].add_metric([n, label], count)
            for op, hist in s.durations.items():
                buckets, total, _count = hist.cumulative()
                f["cache_redis_duration_seconds"].add_metric([n, op], buckets, total)
            f["cache_redis_resubscribes_total"].add_metric([n], s.resubscribes)
            f["cache_redis_subscribed"].add_metric([n], s.subscribed)
            f["cache_redis_circuit_open"].add_metric([n], 1 if s.circuit_open() else 0)
        return list(f.values())


#: The registry's Redis tiers, exported by one collector.
TIERS: ComponentKey[TierSet] = ComponentKey("cache.tiers")


def tiers(registry: PerfRegistry) -> TierSet:
    """The registry's set of Redis tiers (created on first use)."""
    return registry.component(TIERS, lambda: TierSet(registry))
