"""Node-wide requests (stats, flush, shutdown) gathered from the TopicSupervisors.

The RootSupervisor sends one request per supervisor, not per topic: a
supervisor answers for every topic it hosts. :class:`Gather` collects those
answers; :func:`summarize` and :func:`merge_summaries` sum per-topic counters
into the summary ``stats()`` shows by default on a node with many topics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["DETAIL_TOPICS", "SUMMED", "Gather", "merge_summaries", "summarize"]

DETAIL_TOPICS = 200
"""``stats()`` without ``detail`` shows per-topic counters up to this many topics."""

SUMMED = (
    "received",
    "replayed",
    "delivered",
    "failed",
    "retried",
    "dead_lettered",
    "spilled",
    "dropped",
    "restarts",
    "buffered",
    "wal_only_rows",
    "wal_bytes",
)
"""The per-destination counters a summary sums over topics."""


@attrs.define
class Gather:
    """A node-wide request waiting for one answer from each supervisor in ``waiting``."""

    kind: str
    reply_to: Any
    ref: int
    waiting: set[str]
    results: dict[str, Any] = attrs.field(factory=dict)
    detail: bool = True
    """For stats: per-topic counters were asked for."""

    def arrived(self, key: str, value: Any) -> bool:
        """Record ``key``'s answer; True once every supervisor answered."""
        if key in self.waiting:
            self.waiting.discard(key)
            self.results[key] = value
        return not self.waiting

    def gone(self, key: str) -> bool:
        """Supervisor ``key`` exited without answering; True once no answer is awaited."""
        self.waiting.discard(key)
        return not self.waiting

    @property
    def done(self) -> bool:
        """True when no answer is awaited."""
        return not self.waiting


def summarize(topics: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Sum the counters of ``topics`` (topic -> destination -> counters) per destination.

    Returns ``{"topics": n, "destinations": {name: {counter: sum}}, "failing": [topic, ...]}``;
    ``failing`` names the topics with a destination failing now (at most 100).
    """
    destinations: dict[str, dict[str, int]] = {}
    failing: list[str] = []
    for topic, lanes in topics.items():
        bad = False
        for name, counters in lanes.items():
            sums = destinations.setdefault(name, dict.fromkeys(SUMMED, 0))
            for key in SUMMED:
                sums[key] += int(counters.get(key) or 0)
            bad = bad or counters.get("failing_since") is not None or bool(counters.get("wal_error"))
        if bad and len(failing) < 100:
            failing.append(topic)
    return {"topics": len(topics), "destinations": destinations, "failing": sorted(failing)}


def merge_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One summary from several (one per supervisor)."""
    merged: dict[str, Any] = {"topics": 0, "destinations": {}, "failing": []}
    for summary in summaries:
        merged["topics"] += summary.get("topics", 0)
        for name, sums in summary.get("destinations", {}).items():
            target = merged["destinations"].setdefault(name, dict.fromkeys(SUMMED, 0))
            for key in SUMMED:
                target[key] += sums.get(key, 0)
        merged["failing"].extend(summary.get("failing", ()))
    merged["failing"] = sorted(merged["failing"])[:100]
    return merged
