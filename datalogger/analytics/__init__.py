"""Request analytics: record every HTTP request of a web app through datalogger.

``DataLoggerMiddleware`` (``AnalyticsASGIMiddleware`` / ``AnalyticsWSGIMiddleware``) turns each request into
a :class:`RequestLog` (client IP hashed, device detected, session counted) and
log it to a topic; :func:`summarize` and :func:`render_summary` report on the
rows once a destination has stored them.
"""

from __future__ import annotations

from .middleware import (
    AnalyticsASGIMiddleware,
    AnalyticsWSGIMiddleware,
    DataLoggerMiddleware,
    SessionTracker,
)
from .request_log import (
    DEVICE_TYPES,
    IP_SALT_ENV,
    RequestLog,
    coerce_datetime,
    detect_device,
    hash_ip,
    resolve_salt,
)
from .summary import (
    Summary,
    format_ms,
    load_rows_postgres,
    load_rows_sqlite,
    parse_since,
    percentile,
    render_summary,
    summarize,
)

__all__ = [
    "DEVICE_TYPES",
    "IP_SALT_ENV",
    "AnalyticsASGIMiddleware",
    "AnalyticsWSGIMiddleware",
    "DataLoggerMiddleware",
    "RequestLog",
    "SessionTracker",
    "Summary",
    "coerce_datetime",
    "detect_device",
    "format_ms",
    "hash_ip",
    "load_rows_postgres",
    "load_rows_sqlite",
    "parse_since",
    "percentile",
    "render_summary",
    "resolve_salt",
    "summarize",
]
