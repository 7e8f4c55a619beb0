"""Prometheus exposition of a node's counters.

:class:`StatsCollector` calls a ``stats()`` function (``DataLogger.stats``) on
every scrape and turns its answer into metric families, labelled by ``topic``
and ``destination``; :func:`serve_metrics` serves them over HTTP::

    dl = datalogger.start("datalogger.toml")
    server = serve_metrics(dl.stats, 9464, dead_letter_dir=".datalogger/dead_letters")
    ...
    server.shutdown()

``datalogger run --metrics-port 9464`` does the same for a node run from the
command line. The endpoint has no authentication and names every topic and
destination, so it listens on 127.0.0.1 unless told otherwise: scrape it from
the same host, or put an authenticating proxy in front of it.

Metrics, labelled ``{topic, destination}`` unless noted:

- counters ``datalogger_rows_{received,replayed,delivered,dead_lettered,spilled,dropped}_total``
  (rows), ``datalogger_attempts_{failed,retried}_total`` (attempts) and
  ``datalogger_worker_restarts_total``;
- gauges ``datalogger_buffered_rows``, ``datalogger_wal_only_rows``, ``datalogger_wal_bytes``,
  ``datalogger_logged_seq`` and ``datalogger_settled_seq`` (their difference is the lag, in
  chunks, the dashboard shows),
  ``datalogger_wal_corrupt_records`` (damaged records found in the topic's log),
  ``datalogger_wal_broken`` (1 while the topic's log cannot be opened),
  ``datalogger_delivery_latency_seconds{quantile="0.5"|"0.99"}``, ``datalogger_failing`` (0/1);
- timestamps (epoch seconds, absent while unset): ``datalogger_last_error_timestamp_seconds``,
  ``datalogger_last_success_timestamp_seconds``, ``datalogger_failing_since_timestamp_seconds``
  (alert on ``time() - datalogger_failing_since_timestamp_seconds > 60``);
- dead letters on disk: ``datalogger_dead_letters`` and ``datalogger_dead_letter_rows``;
- ``datalogger_rejected_frames_total{reason}``: frames the node dropped unread (no valid
  signature, too large, a forbidden class; see docs/security.md);
- without labels: ``datalogger_rejected_calls_total``, ``datalogger_up`` (1 when ``stats()``
  answered this scrape);
- the handle's own client counters (``stats()["client"]``, or ``client_stats_fn``, which
  answers even while the node is away): gauges ``datalogger_client_queued_rows`` (memory),
  ``datalogger_client_spooled_rows`` (``spool_dir``), ``datalogger_client_connected`` (0/1),
  counters ``datalogger_client_{sent,dropped,spooled,errors,reconnects}_total`` and
  ``datalogger_client_events_{sent,dropped}_total``. In a pre-fork web server each worker
  process has its own handle and counters;
- the node's PubSub actor (``datalogger run --metrics-port``, or ``pubsub_fn``):
  ``datalogger_pubsub_broadcasts_total{topic}``, ``datalogger_pubsub_subscribers{topic}``,
  and per subscriber ``datalogger_pubsub_events_{delivered,dropped}_total{topic,subscriber}``
  and ``datalogger_pubsub_events_pending{topic,subscriber}``.

docs/metrics.md lists every metric with its meaning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .exceptions import ConfigError

try:
    from prometheus_client import start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # an optional dependency
    raise ConfigError(
        "Prometheus metrics need prometheus-client: pip install 'datalogger[metrics]'"
    ) from exc

__all__ = [
    "CLIENT_COUNTERS",
    "CLIENT_GAUGES",
    "COUNTERS",
    "GAUGES",
    "StatsCollector",
    "serve_metrics",
    "serve_node_metrics",
]

log = logging.getLogger("datalogger.metrics")

LABELS = ("topic", "destination")

#: stats() counter -> (metric name without ``_total``, help text).
COUNTERS: dict[str, tuple[str, str]] = {
    "received": ("datalogger_rows_received", "Rows accepted for the destination."),
    "replayed": ("datalogger_rows_replayed", "Rows replayed from the write-ahead log on start."),
    "delivered": ("datalogger_rows_delivered", "Rows the destination took."),
    "dead_lettered": ("datalogger_rows_dead_lettered", "Rows given up on, kept as dead letters."),
    "spilled": (
        "datalogger_rows_spilled",
        "Rows over max_buffered_rows, held only in the write-ahead log and read back from it.",
    ),
    "dropped": ("datalogger_rows_dropped", "Rows dropped by overflow = drop_oldest."),
    "failed": ("datalogger_attempts_failed", "Failed delivery attempts."),
    "retried": ("datalogger_attempts_retried", "Attempts scheduled again after a failure."),
    "restarts": ("datalogger_worker_restarts", "Restarts of the destination's worker."),
}

#: stats() value -> (metric name, help text), for values that go up and down.
GAUGES: dict[str, tuple[str, str]] = {
    "buffered": (
        "datalogger_buffered_rows",
        "Rows accepted and not yet settled for the destination, in memory or only in the write-ahead log.",
    ),
    "wal_only_rows": (
        "datalogger_wal_only_rows",
        "Rows over max_buffered_rows now held only in the write-ahead log, not in memory.",
    ),
    "wal_bytes": ("datalogger_wal_bytes", "Bytes of write-ahead log on disk for the topic."),
    "logged_seq": ("datalogger_logged_seq", "Sequence number of the topic's last logged chunk."),
    "settled_seq": (
        "datalogger_settled_seq",
        "Sequence number up to which the destination settled every chunk; "
        "lag = logged_seq - settled_seq.",
    ),
    "wal_corrupt_records": (
        "datalogger_wal_corrupt_records",
        "Damaged records found in the topic's write-ahead log (their chunks are lost).",
    ),
}

#: stats() timestamp -> (metric name, help text); left out while the value is None.
TIMESTAMPS: dict[str, tuple[str, str]] = {
    "last_error_at": (
        "datalogger_last_error_timestamp_seconds",
        "When the destination last failed (epoch seconds).",
    ),
    "last_success_at": (
        "datalogger_last_success_timestamp_seconds",
        "When the destination last took a chunk (epoch seconds).",
    ),
    "failing_since": (
        "datalogger_failing_since_timestamp_seconds",
        "Since when the destination has been failing (epoch seconds); absent when it is not.",
    ),
}

QUANTILES = (("0.5", "latency_p50"), ("0.99", "latency_p99"))


class StatsCollector(Collector):
    """A collector asking ``stats_fn`` for the node's counters on each scrape.

    Args:
        stats_fn: returns a dict shaped like ``DataLogger.stats()``.
        dead_letter_dir: the node's ``<data_dir>/dead_letters``; ``None`` leaves
            the dead-letter gauges out.
        pubsub_fn: returns a dict shaped like ``datalogger.pubsub.stats()``;
            ``None`` leaves the pubsub families out.
        client_stats_fn: returns the handle's client counters
            (``DataLogger.client_stats``); used instead of ``stats()["client"]``,
            and still answered while the node is away.

    A failing ``stats_fn`` does not fail the scrape: ``datalogger_up`` is 0
    and the other families are left out; a failing ``pubsub_fn`` leaves the
    pubsub families out.
    """

    def __init__(
        self,
        stats_fn: Callable[[], Mapping[str, Any]],
        dead_letter_dir: str | os.PathLike[str] | None = None,
        pubsub_fn: Callable[[], Mapping[str, Any]] | None = None,
        client_stats_fn: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._stats_fn = stats_fn
        self._dead_letter_dir = dead_letter_dir
        self._pubsub_fn = pubsub_fn
        self._client_stats_fn = client_stats_fn

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of one scrape."""
        up = GaugeMetricFamily("datalogger_up", "1 when the node answered stats() for this scrape.")
        try:
            stats = self._stats_fn()
        except Exception as exc:  # a scrape reports the node down, never fails
            log.warning("metrics: stats() failed: %s", exc)
            up.add_metric([], 0)
            yield up
            yield from self._client()
            yield from self._dead_letters()
            return
        up.add_metric([], 1)
        yield up
        yield from _lane_metrics(_topics_or_summary(stats))
        rejected = CounterMetricFamily(
            "datalogger_rejected_calls", "log() calls the node refused (bad topic or data)."
        )
        rejected.add_metric([], float(stats.get("rejected") or 0))
        yield rejected
        frames = CounterMetricFamily(
            "datalogger_rejected_frames",
            "Frames the node dropped unread (no valid signature, too large, a forbidden class).",
            labels=("reason",),
        )
        security = stats.get("security") or {}
        for reason, count in sorted((security.get("rejected_by_reason") or {}).items()):
            frames.add_metric([reason], float(count))
        yield frames
        yield from self._client(stats.get("client"))
        yield from self._dead_letters()
        yield from self._pubsub()

    def _client(self, client: Mapping[str, Any] | None = None) -> Iterator[Metric]:
        if self._client_stats_fn is not None:
            try:
                client = self._client_stats_fn()
            except Exception as exc:  # never fails the scrape
                log.warning("metrics: client_stats() failed: %s", exc)
                return
        if client:
            yield from _client_metrics(client)

    def _pubsub(self) -> Iterator[Metric]:
        if self._pubsub_fn is None:
            return
        try:
            stats = self._pubsub_fn()
        except Exception as exc:  # the PubSub actor not answering must not fail the scrape
            log.warning("metrics: pubsub stats failed: %s", exc)
            return
        yield from _pubsub_metrics(stats)

    def _dead_letters(self) -> Iterator[Metric]:
        if self._dead_letter_dir is None:
            return
        from .deadletters import DeadLetterStore

        letters = GaugeMetricFamily(
            "datalogger_dead_letters", "Dead letters on disk.", labels=LABELS
        )
        rows = GaugeMetricFamily(
            "datalogger_dead_letter_rows", "Rows held by the dead letters on disk.", labels=LABELS
        )
        try:
            summary = DeadLetterStore(self._dead_letter_dir).summary()
        except Exception as exc:  # an unreadable store must not fail the scrape
            log.warning("metrics: cannot read dead letters: %s", exc)
            return
        for item in summary:
            letters.add_metric([item.topic, item.destination], item.letters)
            rows.add_metric([item.topic, item.destination], item.rows)
        yield letters
        yield rows


def _topics_or_summary(stats: Mapping[str, Any]) -> Mapping[str, Any]:
    """Per-topic counters; on a node with too many topics for them, the sums per destination
    under the topic label ``*`` (``stats()["summary"]``)."""
    topics = stats.get("topics") or {}
    summary = stats.get("summary") or {}
    if not topics and summary.get("topics"):
        return {"*": summary.get("destinations") or {}}
    return topics


def _lane_metrics(topics: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Iterator[Metric]:
    counters = {
        key: CounterMetricFamily(name, text, labels=LABELS)
        for key, (name, text) in COUNTERS.items()
    }
    gauges = {
        key: GaugeMetricFamily(name, text, labels=LABELS) for key, (name, text) in GAUGES.items()
    }
    stamps = {
        key: GaugeMetricFamily(name, text, labels=LABELS)
        for key, (name, text) in TIMESTAMPS.items()
    }
    failing = GaugeMetricFamily(
        "datalogger_failing", "1 while the destination is failing, else 0.", labels=LABELS
    )
    broken = GaugeMetricFamily(
        "datalogger_wal_broken",
        "1 while the topic's write-ahead log cannot be opened (log() raises StorageError).",
        labels=LABELS,
    )
    latency = GaugeMetricFamily(
        "datalogger_delivery_latency_seconds",
        "Delivery latency of recent chunks, by quantile.",
        labels=(*LABELS, "quantile"),
    )
    for topic, destinations in sorted(topics.items()):
        for destination, lane in sorted(destinations.items()):
            labels = [topic, destination]
            for key, family in counters.items():
                family.add_metric(labels, float(lane.get(key) or 0))
            for key, gauge in gauges.items():
                gauge.add_metric(labels, float(lane.get(key) or 0))
            for key, gauge in stamps.items():
                if lane.get(key) is not None:
                    gauge.add_metric(labels, float(lane[key]))
            failing.add_metric(labels, 0 if lane.get("failing_since") is None else 1)
            broken.add_metric(labels, 0 if not lane.get("wal_error") else 1)
            for quantile, key in QUANTILES:
                if lane.get(key) is not None:
                    latency.add_metric([*labels, quantile], float(lane[key]))
    yield from counters.values()
    yield from gauges.values()
    yield from stamps.values()
    yield failing
    yield broken
    yield latency


def _pubsub_metrics(stats: Mapping[str, Any]) -> Iterator[Metric]:
    broadcasts = CounterMetricFamily(
        "datalogger_pubsub_broadcasts", "Events broadcast on the topic on this node.", labels=["topic"]
    )
    subscribers = GaugeMetricFamily(
        "datalogger_pubsub_subscribers", "Subscribers of the topic on this node.", labels=["topic"]
    )
    for topic, counters in sorted((stats.get("topics") or {}).items()):
        broadcasts.add_metric([topic], float(counters.get("broadcast") or 0))
        subscribers.add_metric([topic], float(counters.get("subscribers") or 0))
    labels = ("topic", "subscriber")
    delivered = CounterMetricFamily(
        "datalogger_pubsub_events_delivered", "Events sent to the subscriber.", labels=labels
    )
    dropped = CounterMetricFamily(
        "datalogger_pubsub_events_dropped",
        "Events dropped for the subscriber alone: it was max_pending events behind.",
        labels=labels,
    )
    pending = GaugeMetricFamily(
        "datalogger_pubsub_events_pending",
        "Events the subscriber has not acknowledged: sent, or waiting in its queue.",
        labels=labels,
    )
    for sub in stats.get("subscribers") or ():
        key = [str(sub.get("topic")), str(sub.get("address"))]
        delivered.add_metric(key, float(sub.get("delivered") or 0))
        dropped.add_metric(key, float(sub.get("dropped") or 0))
        pending.add_metric(key, float(sub.get("pending") or 0))
    yield from (broadcasts, subscribers, delivered, dropped, pending)


#: client counter -> (metric name without ``_total``, help text).
CLIENT_COUNTERS: dict[str, tuple[str, str]] = {
    "sent": ("datalogger_client_sent", "Rows this process's handle sent to the node."),
    "dropped": (
        "datalogger_client_dropped",
        "Rows this process's handle dropped: memory and spool full, or refused by the node.",
    ),
    "spooled_total": ("datalogger_client_spooled", "Rows this process's handle wrote to spool_dir."),
    "events_sent": ("datalogger_client_events_sent", "Broadcast events sent to the node."),
    "events_dropped": ("datalogger_client_events_dropped", "Broadcast events dropped (queue full)."),
    "errors": ("datalogger_client_errors", "Failed sends of the handle's background sender."),
    "reconnects": ("datalogger_client_reconnects", "Times the handle found its node again."),
}

#: client value -> (metric name, help text), for values that go up and down.
CLIENT_GAUGES: dict[str, tuple[str, str]] = {
    "queued": ("datalogger_client_queued_rows", "Rows queued in this process's memory, not yet sent."),
    "spooled": ("datalogger_client_spooled_rows", "Rows waiting in spool_dir, not yet sent."),
    "connected": ("datalogger_client_connected", "1 while the handle reaches its node, else 0."),
}


def _client_metrics(client: Mapping[str, Any]) -> Iterator[Metric]:
    for key, (name, text) in CLIENT_GAUGES.items():
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], float(client.get(key) or 0))
        yield gauge
    for key, (name, text) in CLIENT_COUNTERS.items():
        family = CounterMetricFamily(name, text)
        family.add_metric([], float(client.get(key) or 0))
        yield family


def serve_metrics(
    stats_fn: Callable[[], Mapping[str, Any]],
    port: int,
    addr: str = "127.0.0.1",
    *,
    dead_letter_dir: str | os.PathLike[str] | None = None,
    pubsub_fn: Callable[[], Mapping[str, Any]] | None = None,
    client_stats_fn: Callable[[], Mapping[str, Any]] | None = None,
) -> Any:
    """Serve Prometheus metrics of ``stats_fn`` on ``http://addr:port/metrics``.

    Uses a fresh :class:`~prometheus_client.CollectorRegistry` holding only a
    :class:`StatsCollector`: no process or platform collectors. Served from a
    daemon thread.

    Args:
        stats_fn: returns a dict shaped like ``DataLogger.stats()``.
        port: the TCP port; 0 picks a free one (read ``server.server_port``).
        addr: the address to listen on. The endpoint has no authentication:
            keep the default loopback address unless a proxy guards it.
        dead_letter_dir: ``<data_dir>/dead_letters`` for the dead-letter gauges.
        pubsub_fn: returns ``datalogger.pubsub.stats()``, for the pubsub families.
        client_stats_fn: the handle's ``client_stats`` (its client counters,
            exported even while the node is away).

    Returns:
        The HTTP server; ``server.shutdown()`` then ``server.server_close()`` stops it.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats_fn, dead_letter_dir, pubsub_fn, client_stats_fn))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


def serve_node_metrics(handle: Any, port: int) -> Any:
    """Serve ``handle.stats()``, its node's dead letters and PubSub counters on ``127.0.0.1:port``.

    Loopback only: the endpoint has no authentication and names every topic
    and destination (see the module docstring). Returns the server.
    """
    from . import pubsub

    config = getattr(handle, "config", None)
    dead_letter_dir = os.path.join(config.data_dir, "dead_letters") if config else None
    return serve_metrics(
        handle.stats,
        port,
        "127.0.0.1",
        dead_letter_dir=dead_letter_dir,
        pubsub_fn=lambda: pubsub.stats(handle, timeout=2.0),
        client_stats_fn=getattr(handle, "client_stats", None),
    )
