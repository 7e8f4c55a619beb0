"""Summaries of recorded requests: counts, top paths, status classes, latency percentiles.

Rows are the ``RequestLog`` rows the middleware logged, read back from a
destination with :func:`load_rows_sqlite` or :func:`load_rows_postgres`, or any
iterable of dicts with the same keys. :func:`summarize` reduces them to a
:class:`Summary` and :func:`render_summary` turns that into rich tables.

Percentiles use the *nearest-rank* method: with the ``n`` durations sorted in
ascending order, the p-th percentile is the value at 1-based rank
``ceil(p / 100 * n)``. It is always one of the observed values (no
interpolation); for ``n = 10``, p50 is the 5th value, p95 and p99 the 10th.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from rich.console import Group, RenderableType
from rich.table import Table

from ..exceptions import DataLoggerError
from .request_log import coerce_datetime, detect_device

__all__ = [
    "Summary",
    "format_ms",
    "load_rows_postgres",
    "load_rows_sqlite",
    "parse_since",
    "percentile",
    "render_summary",
    "summarize",
]

TOP_N = 10
_SINCE_PART = re.compile(r"(\d+)([smhdw])")
_SINCE = re.compile(r"(?:\d+[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@attrs.frozen
class Summary:
    """Aggregates over a set of request rows."""

    #: Number of requests.
    requests: int
    #: Up to 10 ``(path, count)`` pairs, most requested first (ties by path).
    top_paths: list[tuple[str, int]]
    #: Requests per status class: ``{"2xx": n, "4xx": n, ...}`` (``"other"``
    #: for codes outside 100-599), sorted by class.
    status_classes: dict[str, int]
    #: Nearest-rank percentiles of ``duration_ms``; None when there are no rows.
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    #: Requests per device type.
    devices: dict[str, int]
    #: Up to 10 ``(referer, count)`` pairs, requests without a referer left out.
    top_referers: list[tuple[str, int]]
    #: Start of the window: the ``since`` given to :func:`summarize`, else the
    #: earliest ``inserted_at`` among the rows (None when there are none).
    since: datetime | None
    #: End of the window: ``now`` (UTC) when the summary was made.
    until: datetime


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank ``p``-th percentile (0 < p <= 100) of ascending ``sorted_values``."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _top(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]


def _status_class(value: Any) -> str:
    try:
        code = int(value)
    except (TypeError, ValueError):
        return "other"
    return f"{code // 100}xx" if 100 <= code <= 599 else "other"


def summarize(
    rows: Iterable[dict[str, Any]],
    now: datetime | None = None,
    since: datetime | None = None,
) -> Summary:
    """Reduce request rows to a :class:`Summary`.

    Args:
        rows: dicts with the ``RequestLog`` columns. Missing or malformed
            values are tolerated: a row without ``duration_ms`` is counted but
            left out of the percentiles; one without ``device_type`` has it
            detected from ``user_agent``.
        now: end of the window (default: the current UTC time).
        since: when given, rows with ``inserted_at`` before it (or without a
            readable one) are left out.
    """
    until = coerce_datetime(now) if now is not None else datetime.now(UTC)
    start = coerce_datetime(since) if since is not None else None
    paths: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    devices: Counter[str] = Counter()
    referers: Counter[str] = Counter()
    durations: list[float] = []
    earliest: datetime | None = None
    count = 0
    for row in rows:
        moment = _row_time(row)
        if start is not None and (moment is None or moment < start):
            continue
        if moment is not None and (earliest is None or moment < earliest):
            earliest = moment
        count += 1
        paths[str(row.get("path") or "/")] += 1
        statuses[_status_class(row.get("status_code"))] += 1
        devices[str(row.get("device_type") or detect_device(row.get("user_agent")))] += 1
        if row.get("referer"):
            referers[str(row["referer"])] += 1
        try:
            durations.append(float(row["duration_ms"]))
        except (KeyError, TypeError, ValueError):
            pass
    durations.sort()
    return Summary(
        requests=count,
        top_paths=_top(paths),
        status_classes=dict(sorted(statuses.items())),
        p50_ms=percentile(durations, 50),
        p95_ms=percentile(durations, 95),
        p99_ms=percentile(durations, 99),
        devices=dict(sorted(devices.items(), key=lambda item: (-item[1], item[0]))),
        top_referers=_top(referers),
        since=start if start is not None else earliest,
        until=until,
    )


def _row_time(row: dict[str, Any]) -> datetime | None:
    value = row.get("inserted_at")
    if value is None:
        return None
    try:
        return coerce_datetime(value)
    except ValueError:
        return None


def _since_filter(
    rows: Iterable[dict[str, Any]], since: datetime | None
) -> Iterator[dict[str, Any]]:
    """Yield rows with ``inserted_at`` made a UTC datetime, keeping those at/after ``since``."""
    start = coerce_datetime(since) if since is not None else None
    for row in rows:
        moment = _row_time(row)
        if moment is not None:
            row["inserted_at"] = moment
        if start is None or (moment is not None and moment >= start):
            yield row


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_rows_sqlite(
    path: str | Path, table: str = "requests", since: datetime | None = None
) -> list[dict[str, Any]]:
    """Read request rows from a SQLite file written by the SQLite destination.

    The file is opened read-only. ``inserted_at`` is returned as a UTC
    datetime whether it was stored as an ISO string or an epoch number.

    Args:
        path: the database file.
        table: the table holding the rows (the topic's table).
        since: keep only rows with ``inserted_at`` at or after this moment.

    Raises:
        DataLoggerError: the file or table cannot be read.
    """
    file = Path(path)
    if not file.is_file():
        raise DataLoggerError(f"no SQLite database at {str(file)!r}")
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DataLoggerError(f"cannot open SQLite database {str(file)!r}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        cursor = conn.execute(f"SELECT * FROM {_quote(table)}")
        return list(_since_filter((dict(row) for row in cursor), since))
    except sqlite3.Error as exc:
        raise DataLoggerError(f"cannot read table {table!r} from {str(file)!r}: {exc}") from exc
    finally:
        conn.close()


def load_rows_postgres(
    dsn: str,
    schema: str = "public",
    table: str = "requests",
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Read request rows from a PostgreSQL table written by the PostgreSQL destination.

    When ``inserted_at`` is a timestamp column the ``since`` filter runs in
    the database; otherwise rows are filtered after reading.

    Raises:
        DataLoggerError: psycopg is missing, or the table cannot be read. The
            message never contains the DSN (it may hold a password).
    """
    try:
        import psycopg
        from psycopg import sql
        from psycopg.rows import dict_row
    except ImportError as exc:
        raise DataLoggerError(
            "load_rows_postgres needs psycopg: pip install 'datalogger[postgres]'"
        ) from exc
    where = f"{schema}.{table}"
    try:
        with psycopg.connect(dsn, connect_timeout=10, row_factory=dict_row) as conn:
            kind = conn.execute(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s AND column_name = 'inserted_at'",
                (schema, table),
            ).fetchone()
            query = sql.SQL("SELECT * FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            in_sql = since is not None and kind is not None and "timestamp" in kind["data_type"]
            if in_sql:
                query = sql.SQL("{} WHERE inserted_at >= %s").format(query)
                cursor = conn.execute(query, (coerce_datetime(since),))
            else:
                cursor = conn.execute(query)
            rows = cursor.fetchall()
    except psycopg.Error as exc:
        detail = exc.diag.message_primary or type(exc).__name__
        raise DataLoggerError(f"cannot read {where} from PostgreSQL: {detail}") from exc
    return list(_since_filter(rows, None if in_sql else since))


def parse_since(text: str) -> timedelta:
    """Parse a window length: ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"``, ``"1w"`` or ``"1h30m"``.

    Raises:
        ValueError: the text is not one or more ``<integer><s|m|h|d|w>`` parts,
            or the total is zero.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as '1h', not {type(text).__name__}")
    compact = text.strip().lower()
    if not _SINCE.fullmatch(compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h, 2d, 1w)")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _SINCE_PART.findall(compact))
    if seconds == 0:
        raise ValueError(f"duration {text!r} is zero")
    return timedelta(seconds=seconds)


def format_ms(value: float | None) -> str:
    """A latency as the summary tables (and the dashboard) show it: ``"12.3 ms"``, or ``"-"``."""
    return "-" if value is None else f"{value:.1f} ms"


def _counts_table(title: str, header: str, items: Iterable[tuple[str, int]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(header)
    table.add_column("Requests", justify="right")
    for name, count in items:
        table.add_row(name, str(count))
    return table


def render_summary(summary: Summary) -> RenderableType:
    """Render ``summary`` as a group of rich tables (print it with a rich Console)."""
    window = "all rows" if summary.since is None else f"since {summary.since.isoformat()}"
    overview = Table(title=f"Requests ({window})", title_justify="left")
    for column in ("Requests", "p50", "p95", "p99"):
        overview.add_column(column, justify="right")
    overview.add_row(
        str(summary.requests),
        format_ms(summary.p50_ms),
        format_ms(summary.p95_ms),
        format_ms(summary.p99_ms),
    )
    return Group(
        overview,
        _counts_table("Top paths", "Path", summary.top_paths),
        _counts_table("Status classes", "Status", summary.status_classes.items()),
        _counts_table("Devices", "Device", summary.devices.items()),
        _counts_table("Top referers", "Referer", summary.top_referers),
    )
