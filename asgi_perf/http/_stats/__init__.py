"""The HTTP series store: plain counters on the event-loop thread, exported at scrape time.

One class per configuration, chosen once when the middleware builds the registry's ``http``
component (:data:`HTTP_STATS`), so each request path runs only what its configuration needs:

* ``_plain``: the per-process store, :class:`HttpStats`, that every other one builds on, and
  :class:`HighrHttpStats` with the label-less high-resolution histogram;
* ``_native``: native histograms per process (:class:`NativeHttpStats`,
  :class:`NativeHighrHttpStats`);
* ``_shared``: multi-worker mode, the series in shared memory (:class:`SharedHttpStats`,
  :class:`SharedHighrHttpStats`);
* ``_shared_native``: multi-worker mode with native histograms (:class:`SharedNativeHttpStats`,
  :class:`SharedNativeHighrHttpStats`);
* ``_exemplars``: exemplars on the duration buckets (:class:`ExemplarHttpStats`, and
  :func:`keep_exemplars` for every other store).
"""

from ._exemplars import ExemplarHttpStats, keep_exemplars
from ._native import NativeHighrHttpStats, NativeHttpStats
from ._plain import (
    ERR_SHARED_BUCKETS,
    ERR_SHARED_LABELS,
    HTTP_STATS,
    ExtraLabels,
    HighrHttpStats,
    HttpStats,
)
from ._shared import SharedHighrHttpStats, SharedHttpStats
from ._shared_native import SharedNativeHighrHttpStats, SharedNativeHttpStats

__all__ = [
    "ERR_SHARED_BUCKETS",
    "ERR_SHARED_LABELS",
    "HTTP_STATS",
    "ExemplarHttpStats",
    "ExtraLabels",
    "HighrHttpStats",
    "HttpStats",
    "NativeHighrHttpStats",
    "NativeHttpStats",
    "SharedHighrHttpStats",
    "SharedHttpStats",
    "SharedNativeHighrHttpStats",
    "SharedNativeHttpStats",
    "keep_exemplars",
]
