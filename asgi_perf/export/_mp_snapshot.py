"""A worker's snapshot file: what it publishes besides its shared memory, and its format.

A worker writes everything its registry would expose that is not in shared memory (gauges,
collectors' families) as ``asgi_perf_<pid>_<token>.json``; the compacted file of dead workers has
the same format. :func:`encode` writes one, :func:`decode` reads and checks one in full, so a
merge never adds half of a corrupt file. Native histogram parts travel under ``native``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from .._native_snapshots import NativeFamily, NativeParts, parts_from_json, to_json

PREFIX = "asgi_perf_"

LabelKey = tuple[tuple[str, str], ...]
# family name -> (type, help, {(sample name, labels): value}); insertion-ordered.
Families = dict[str, tuple[str, str, dict[tuple[str, LabelKey], float]]]
#: family name -> {sorted series labels: every worker's native part of that series}.
Natives = dict[str, dict[LabelKey, list[NativeParts]]]


@dataclass
class Snapshot:
    """One worker's published state."""

    pid: int
    token: str
    families: list[Any] = field(default_factory=list)
    #: ``[family, sorted label pairs, native parts]`` per native histogram series.
    native: list[tuple[str, LabelKey, NativeParts]] = field(default_factory=list)


def snapshot_name(pid: int, token: str) -> str:
    return f"{PREFIX}{pid}_{token}.json"


def encode(pid: int, token: str, metrics: Iterable[Metric]) -> bytes:
    """Serialise collected metric families (timestamps and exemplars are not carried over; the
    native part of a histogram is)."""
    families = []
    native: list[Any] = []
    for m in metrics:
        families.append(
            [
                m.name,
                m.type,
                m.documentation,
                [[s.name, sorted(s.labels.items()), s.value] for s in m.samples],
            ]
        )
        parts: NativeFamily | None = getattr(m, "native", None)
        if parts is not None and m.type == "histogram":
            native.extend(
                [m.name, [list(pair) for pair in key], to_json(snap)]
                for key, snap in parts.series.items()
            )
    body: dict[str, Any] = {"pid": pid, "token": token, "families": families}
    if native:
        body["native"] = native
    return json.dumps(body).encode()


class CorruptSnapshot(ValueError):
    """A file in the directory is not a readable snapshot (corrupt, truncated, unreadable)."""


def decode(data: bytes) -> Snapshot:
    """The snapshot in ``data``, checked in full; :class:`CorruptSnapshot` for anything else.

    Every field is checked and converted here, so merging a snapshot cannot fail half-way and
    leave part of a corrupt file in the totals.
    """
    try:
        raw = json.loads(data)
        families = [
            [
                _text(name),
                _text(typ),
                _text(help_text),
                [
                    [_text(sample), _labels(labels), _number(value)]
                    for sample, labels, value in _array(samples)
                ],
            ]
            for name, typ, help_text, samples in _array(raw["families"])
        ]
        native = [
            (_text(name), tuple((k, v) for k, v in _labels(labels)), parts_from_json(snap))
            for name, labels, snap in _array(raw.get("native", []))
        ]
        return Snapshot(int(raw["pid"]), _text(raw["token"]), families, native)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptSnapshot(f"{type(exc).__name__}: {exc}") from exc


def _array(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _labels(value: Any) -> list[list[str]]:
    return [[_text(k), _text(v)] for k, v in _array(value)]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


__all__ = [
    "PREFIX",
    "CorruptSnapshot",
    "Families",
    "LabelKey",
    "Natives",
    "Snapshot",
    "decode",
    "encode",
    "snapshot_name",
]
