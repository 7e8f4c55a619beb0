"""The requests behind the dashboard's analytics: history from the destination, live from pubsub.

A :class:`RequestStore` holds request rows in memory, one per ``request_id``:
the history is read from the SQLite or PostgreSQL destination that stores the
requests topic (with :func:`~datalogger.analytics.load_rows_sqlite` /
:func:`~datalogger.analytics.load_rows_postgres`, the readers of ``datalogger
analytics``), and each :class:`~datalogger.analytics.RequestLog` broadcast by the
middleware is added as it arrives. A request seen both ways counts once.

:func:`analytics_view` reduces the rows of a window with
:func:`~datalogger.analytics.summarize`, the function behind ``datalogger
analytics``, so that the page and the command give the same numbers for the
same rows and window; the time series (requests per second, p50/p95/p99 per
bucket) is that same :func:`summarize` applied to each bucket.

No value from the browser reaches SQL: a window is one of :data:`WINDOWS`, and
becomes a ``datetime`` parameter of the readers' fixed queries.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ..analytics.request_log import coerce_datetime
from ..analytics.summary import (
    format_ms,
    load_rows_postgres,
    load_rows_sqlite,
    parse_since,
    summarize,
)
from ..config import DASHBOARD_WINDOWS, DESTINATION_TYPES, Config
from ..exceptions import ConfigError, DataLoggerError

__all__ = [
    "SERIES_BUCKETS",
    "WINDOWS",
    "HistorySource",
    "RequestStore",
    "analytics_view",
    "history_source",
    "series",
    "window_start",
]

#: The windows the page offers (``datalogger analytics --since`` values, and ``all``).
WINDOWS = DASHBOARD_WINDOWS
#: Buckets of the time series over a window.
SERIES_BUCKETS = 60

Loader = Callable[[datetime | None], list[dict[str, Any]]]


def window_start(window: str, now: datetime) -> datetime | None:
    """The start of ``window`` (``"1h"``, ... or ``"all"``: None) ending at ``now``.

    Raises:
        ValueError: ``window`` is neither ``all`` nor a duration.
    """
    return None if window == "all" else now - parse_since(window)


@attrs.frozen
class HistorySource:
    """Where past requests are read from."""

    #: Reads the rows logged at or after a moment (None: all of them).
    load: Loader
    #: What it reads, for the page (never a DSN: it may hold a password).
    description: str


def history_source(config: Config, topic: str, name: str | None = None) -> HistorySource | None:
    """The SQLite or PostgreSQL destination of ``config`` holding ``topic``'s rows, as a reader.

    Args:
        config: the node's configuration.
        topic: the requests topic.
        name: a destination name (``dashboard.history``); None: the first
            SQLite or PostgreSQL destination that takes ``topic``.

    Returns:
        None when no such destination is configured (the page is then live only).

    Raises:
        ConfigError: ``name`` is not a SQLite or PostgreSQL destination taking ``topic``.
    """
    kinds = {DESTINATION_TYPES["sqlite"]: "sqlite", DESTINATION_TYPES["postgres"]: "postgres"}
    candidates = [spec for spec in config.destinations_for(topic) if spec.type in kinds]
    if name is not None:
        candidates = [spec for spec in candidates if spec.name == name]
        if not candidates:
            raise ConfigError(
                f"dashboard.history: {name!r} is not a SQLite or PostgreSQL destination "
                f"taking topic {topic!r}"
            )
    if not candidates:
        return None
    spec = candidates[0]
    options = dict(spec.options)
    table = str(options.get("table", "{topic}")).replace("{topic}", topic)
    if kinds[spec.type] == "sqlite":
        path = str(options["path"])

        def load_sqlite(since: datetime | None) -> list[dict[str, Any]]:
            return load_rows_sqlite(path, table, since)

        return HistorySource(load_sqlite, f"SQLite destination {spec.name!r}, table {table!r}")
    from ..destinations import _pg_schema

    conninfo = _pg_schema.conninfo(
        options.get("dsn"),
        options.get("host", "127.0.0.1"),
        options.get("port", 5432),
        options.get("user"),
        options.get("password"),
        options.get("dbname"),
    )
    schema = str(options.get("schema", "public")).replace("{topic}", topic)

    def load_postgres(since: datetime | None) -> list[dict[str, Any]]:
        return load_rows_postgres(conninfo, schema=schema, table=table, since=since)

    return HistorySource(
        load_postgres, f"PostgreSQL destination {spec.name!r}, table {schema}.{table}"
    )


def _key(row: dict[str, Any]) -> str:
    request_id = row.get("request_id")
    if isinstance(request_id, str) and request_id:
        return request_id
    text = json.dumps(row, sort_keys=True, default=str)
    return "row:" + hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _moment(row: dict[str, Any]) -> datetime | None:
    value = row.get("inserted_at")
    if value is None:
        return None
    try:
        return coerce_datetime(value)
    except ValueError:
        return None


class RequestStore:
    """Request rows in memory, one per ``request_id``, for the windows the page shows.

    Thread-safe: live events arrive on the subscription's thread while
    snapshots are made on others.

    Args:
        source: where the history is read from; None: live events only.
        max_rows: most rows kept; beyond it the oldest go, and a window reaching
            back past them is reported incomplete (:meth:`complete`).
    """

    def __init__(self, source: HistorySource | None, max_rows: int = 100_000) -> None:
        self.source = source
        self.max_rows = max_rows
        #: Live events added (from pubsub).
        self.live_received = 0
        #: Why the last history read failed, or None.
        self.history_error: str | None = None
        #: When the history was last read (epoch seconds), or None.
        self.history_loaded_at: float | None = None
        #: How many times the history was read.
        self.history_reads = 0
        #: Bumped on every change.
        self.version = 0
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._horizon: datetime | None = None  # the history read reaches back to here
        self._everything = False  # ... or to the first row
        self._dropped_until: datetime | None = None  # rows up to here were left out (max_rows)

    def __len__(self) -> int:
        """Rows held."""
        return len(self._rows)

    def add_event(self, event: Any) -> None:
        """Add one live event: a ``RequestLog`` (or a row dict)."""
        row = event.to_row() if hasattr(event, "to_row") else dict(event)
        with self._lock:
            self.live_received += 1
            self._merge([row])

    def _merge(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            moment = _moment(row)
            if moment is not None:
                row["inserted_at"] = moment
            self._rows[_key(row)] = row
        if len(self._rows) > self.max_rows:
            oldest = datetime.min.replace(tzinfo=UTC)
            ordered = sorted(self._rows.items(), key=lambda item: item[1].get("inserted_at") or oldest)
            cut = len(ordered) - self.max_rows
            last_dropped = ordered[cut - 1][1].get("inserted_at") or oldest
            if self._dropped_until is None or last_dropped > self._dropped_until:
                self._dropped_until = last_dropped
            self._rows = dict(ordered[cut:])
        self.version += 1

    def complete(self, start: datetime | None) -> bool:
        """False when rows logged after ``start`` (None: ever) were left out for ``max_rows``."""
        return self._dropped_until is None or (start is not None and start > self._dropped_until)

    def covers(self, start: datetime | None) -> bool:
        """True when the history read so far reaches back to ``start`` (None: to the first row)."""
        if self._everything:
            return True
        return start is not None and self._horizon is not None and self._horizon <= start

    def load_history(self, start: datetime | None, now: float) -> None:
        """Read the history from ``start`` on (None: all) and merge it; a failure is kept, not raised.

        The read reaches back to the earliest ``start`` read so far, so that
        a wider window, once read, stays covered by later reads.
        """
        if self.source is None:
            return
        if self._everything:
            start = None
        elif start is not None and self._horizon is not None and self._horizon < start:
            start = self._horizon
        try:
            rows = self.source.load(start)
        except DataLoggerError as exc:
            self.history_error = str(exc)
            return
        with self._lock:
            self._merge(rows)
            self.history_error = None
            self.history_loaded_at = now
            self.history_reads += 1
            self._everything = start is None
            self._horizon = start

    def rows_since(self, start: datetime | None) -> list[dict[str, Any]]:
        """The rows logged at or after ``start`` (all rows for None), as a new list."""
        with self._lock:
            rows = list(self._rows.values())
        if start is None:
            return rows
        return [row for row in rows if row.get("inserted_at") is not None and row["inserted_at"] >= start]

    def forget_before(self, start: datetime) -> None:
        """Drop the rows logged before ``start``: no window shown reaches back that far."""
        with self._lock:
            old = [
                key
                for key, row in self._rows.items()
                if row.get("inserted_at") is None or row["inserted_at"] < start
            ]
            for key in old:
                del self._rows[key]
            if old:
                self.version += 1
            if self._everything or (self._horizon is not None and self._horizon < start):
                self._everything = False
                self._horizon = start
            if self._dropped_until is not None and self._dropped_until < start:
                self._dropped_until = None


def series(
    rows: list[dict[str, Any]], start: datetime | None, until: datetime, buckets: int = SERIES_BUCKETS
) -> dict[str, Any]:
    """Requests per second and p50/p95/p99 per time bucket of ``[start, until]``.

    Each bucket is reduced with :func:`summarize`. Without ``start`` the
    window begins at the earliest row (or a minute before ``until``).

    Returns:
        ``{"step": seconds, "t": [bucket start, epoch s], "rps": [...],
        "p50": [...], "p95": [...], "p99": [...]}``; percentiles of empty
        buckets are None.
    """
    if start is None:
        moments = [row["inserted_at"] for row in rows if isinstance(row.get("inserted_at"), datetime)]
        start = min(moments, default=until - timedelta(minutes=1))
    span = max(1.0, (until - start).total_seconds())
    step = max(1, math.ceil(span / buckets))
    count = max(1, math.ceil(span / step))
    grouped: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for row in rows:
        moment = row.get("inserted_at")
        if not isinstance(moment, datetime):
            continue
        index = int((moment - start).total_seconds() // step)
        if 0 <= index < count:
            grouped[index].append(row)
        elif index == count:  # the row logged at ``until`` itself
            grouped[-1].append(row)
    out: dict[str, Any] = {"step": step, "t": [], "rps": [], "p50": [], "p95": [], "p99": []}
    for index, bucket in enumerate(grouped):
        begin = start + timedelta(seconds=index * step)
        summary = summarize(bucket, now=begin + timedelta(seconds=step))
        out["t"].append(begin.timestamp())
        out["rps"].append(summary.requests / step)
        out["p50"].append(summary.p50_ms)
        out["p95"].append(summary.p95_ms)
        out["p99"].append(summary.p99_ms)
    return out


def analytics_view(rows: list[dict[str, Any]], window: str, now: datetime) -> dict[str, Any]:
    """The page's analytics for ``window`` ending at ``now``, JSON-ready.

    The numbers are :func:`summarize` of ``rows`` with ``since`` = the window's
    start: what ``datalogger analytics --since WINDOW`` prints for the same rows.
    Latencies come as numbers (``p50_ms``) and as the command prints them
    (``p50``: ``"12.3 ms"``).
    """
    start = window_start(window, now)
    summary = summarize(rows, now=now, since=start)
    inside = rows if start is None else [
        r for r in rows if r.get("inserted_at") and r["inserted_at"] >= start
    ]
    span = (now - (start or summary.since or now)).total_seconds()
    return {
        "window": window,
        "requests": summary.requests,
        "rate": summary.requests / span if span >= 1 else None,
        "p50_ms": summary.p50_ms,
        "p95_ms": summary.p95_ms,
        "p99_ms": summary.p99_ms,
        "p50": format_ms(summary.p50_ms),
        "p95": format_ms(summary.p95_ms),
        "p99": format_ms(summary.p99_ms),
        "status_classes": sorted(summary.status_classes.items()),
        "top_paths": summary.top_paths,
        "devices": list(summary.devices.items()),
        "top_referers": summary.top_referers,
        "since": summary.since.isoformat() if summary.since else None,
        "until": summary.until.isoformat(),
        "series": series(inside, start, now),
    }
