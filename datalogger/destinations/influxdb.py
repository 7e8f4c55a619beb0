"""The InfluxDB destination: rows to points over HTTP (1.x), UDP (1.x) or the v2 API.

Each row (dict) becomes one point: keys listed in ``tags`` are tags, the
``time_key`` value is the timestamp, every other key is a field. See
:mod:`datalogger.lineprotocol` for the encoding rules (None and NaN values are
skipped, rows that cannot be encoded are rejected as permanent errors).

A row without a time gets the time it was logged, in ``precision`` units and
unique per row (:meth:`InfluxDBDestination.log_time`, :mod:`datalogger.stamps`),
so that no two points of one series collapse; ``server_timestamps = true``
leaves such rows to the server's clock instead.

Modelled on ex_flux's ``ExFlux.Database``: a pool of UDP sockets, batching,
``ping``, ``query``, ``post_query`` and ``push`` of single points.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import Backpressure, ConfigError, PermanentError
from ..lineprotocol import (
    ROW_ERRORS,
    LineProtocolError,
    encode_point,
    join_lines,
    normalize_precision,
    rows_encoder,
    to_timestamp,
)
from ..stamps import UNIT_NS
from .base import Destination, Rows
from .influx_client import InfluxHTTP, InfluxUDP, InfluxV2, LinesRejected

__all__ = ["InfluxDBDestination"]

log = logging.getLogger(__name__)

_PROTOCOLS = ("http", "udp", "v2")
_CONFLICT = re.compile(
    r'input field "(?P<field>[^"]*)" on measurement "(?P<meas>[^"]*)" is type (?P<type>\w+)'
    r".*dropped=(?P<dropped>\d+)",
    re.S,
)
_PY_TYPES: dict[str, type] = {"integer": int, "float": float, "string": str, "boolean": bool}


class InfluxDBDestination(Destination):
    """Write rows to InfluxDB as points.

    All options are keyword-only; see docs/destinations/influxdb.md.

    Raises:
        ConfigError: an option is missing or invalid.
    """

    def __init__(
        self,
        *,
        database: str | None = None,
        host: str = "localhost",
        http_port: int = 8086,
        udp_port: int = 8089,
        protocol: str = "http",
        pool_size: int = 5,
        batch_size: int = 5000,
        max_queue_size: int = 100_000,
        flush_interval: float = 1.0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        retention_policy: str | None = None,
        precision: str = "ns",
        measurement: str = "{topic}",
        tags: Sequence[str] = (),
        time_key: str | None = "time",
        server_timestamps: bool = False,
        timeout: float = 10.0,
        url: str | None = None,
        token: str | None = None,
        org: str | None = None,
        bucket: str | None = None,
    ) -> None:
        if protocol not in _PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(_PROTOCOLS)}, not {protocol!r}")
        if protocol == "v2":
            missing = [k for k, v in {"url": url, "org": org, "bucket": bucket}.items() if not v]
            if missing:
                raise ConfigError(f"protocol 'v2' needs the options: {', '.join(missing)}")
            if importlib.util.find_spec("influxdb_client") is None:
                raise ConfigError("protocol 'v2' needs pip install 'datalogger[influx]'")
        elif not database:
            raise ConfigError("the option 'database' is required")
        for name, value in (("pool_size", pool_size), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if max_queue_size < 1 or flush_interval < 0:
            raise ConfigError("max_queue_size must be >= 1 and flush_interval >= 0")
        try:
            self.precision = normalize_precision(precision)
            measurement.format(topic="t")
        except (ValueError, KeyError, IndexError) as exc:
            raise ConfigError(f"bad precision or measurement template: {exc}") from exc
        self.database = database or ""
        self.host, self.http_port, self.udp_port = host, http_port, udp_port
        self.protocol, self.pool_size, self.batch_size = protocol, pool_size, batch_size
        self.max_queue_size, self.flush_interval = max_queue_size, flush_interval
        self.username, self.ssl, self.retention_policy = username, ssl, retention_policy
        self.measurement, self.tags, self.time_key = measurement, list(tags), time_key or None
        self.server_timestamps = bool(server_timestamps)
        self._last_stamp = 0
        self.timeout, self.url, self.org, self.bucket = timeout, url, org, bucket
        self._password, self._token = password, token
        self._http: InfluxHTTP | None = None
        self._udp = InfluxUDP(host, udp_port, pool_size) if protocol == "udp" else None
        self._v2 = (
            InfluxV2(url or "", token, org or "", bucket or "", self.precision, timeout)
            if protocol == "v2"
            else None
        )
        self._queue: list[tuple[str, dict[str, Any]]] = []
        self._first_queued = 0.0

    def __repr__(self) -> str:
        where = self.url if self.protocol == "v2" else f"{self.host}:{self.http_port}"
        return (
            f"InfluxDBDestination(protocol={self.protocol!r}, {where}, "
            f"database={self.database!r}, bucket={self.bucket!r})"
        )

    # -- Destination ------------------------------------------------------------

    @classmethod
    def log_time(cls, options: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(time_key, precision)``: rows without a time get the time of ``log()``.

        None with ``server_timestamps`` (or no ``time_key``): the server stamps them.
        """
        if options.get("server_timestamps") or not options.get("time_key", "time"):
            return None
        return str(options.get("time_key", "time")), normalize_precision(
            str(options.get("precision", "ns"))
        )

    def _stamp_missing(self, data: Rows) -> Rows:
        """Rows without a time, sent here directly (not through ``log()``), get one now, unique."""
        key = self.time_key
        if key is None or self.server_timestamps:
            return data
        missing = [i for i, row in enumerate(data) if isinstance(row, dict) and row.get(key) is None]
        if not missing:
            return data
        first = max(time.time_ns() // UNIT_NS[self.precision], self._last_stamp + 1)
        self._last_stamp = first + len(missing) - 1
        stamped = list(data)
        for offset, index in enumerate(missing):
            stamped[index] = {**data[index], key: first + offset}
        return stamped

    def send_data(self, topic: str, data: Rows) -> int:
        """Write the rows as points, in requests of ``batch_size`` lines.

        Returns:
            The number of points written (sent, for UDP).

        Raises:
            PermanentError: rows that can never be written, in ``rows``, raised
                after the other rows were written.
            InfluxUnavailable: the server is unreachable or failing (retried).
        """
        meas = self.measurement.format(topic=topic)
        stamped = self._stamp_missing(data)
        try:
            encoder = rows_encoder(meas, self.tags, self.time_key, self.precision)
        except LineProtocolError as exc:
            raise PermanentError(f"measurement {meas!r} cannot be written: {exc}") from exc
        lines, good, bad = encoder.encode(stamped)
        if stamped is data:
            original = _same
        else:  # report rows as given, not as stamped here
            originals = {id(row): data[i] for i, row in enumerate(stamped)}

            def original(row: Any) -> Any:
                return originals[id(row)]

        rejected = [original(row) for row in bad]
        reasons = [self._encode_reason(row, meas) for row in bad]
        unsure: Rows = []
        refused = "a batch was refused"
        written = 0
        skip = {*self.tags, self.time_key}
        for start in range(0, len(lines), self.batch_size):
            batch = lines[start : start + self.batch_size]
            rows = good[start : start + self.batch_size]
            body, unencodable = join_lines(batch)
            if unencodable:  # lone surrogates: those rows are bad, the others go
                out = set(unencodable)
                for index in unencodable:
                    rejected.append(original(rows[index]))
                    reasons.append(self._encode_reason(rows[index], meas))
                batch = [line for i, line in enumerate(batch) if i not in out]
                rows = [row for i, row in enumerate(rows) if i not in out]
                if not batch:
                    continue
            try:
                self._write(batch, body)
            except LinesRejected as exc:
                indices = exc.line_indices
                if indices is None:
                    items = [(meas, {k: v for k, v in r.items() if k not in skip}) for r in rows]
                    indices = _conflicting(str(exc), items)
                if indices is None and len(rows) > 1:
                    # Refused as a batch, but which lines? The framework tries them again in
                    # halves (points written twice with the same time are overwritten).
                    unsure.extend(original(row) for row in rows)
                    refused = str(exc)
                    continue
                lost = rows if indices is None else [rows[i] for i in indices]
                rejected.extend(original(row) for row in lost)
                reasons.extend(str(exc) for _ in lost)
                # A partial write reports one kind of error: points it dropped for another
                # reason (beyond the retention policy) go unreported. So the rest of the
                # request is written again (points with the same time are overwritten).
                named = {id(row) for row in lost}
                unsure.extend(original(row) for row in rows if id(row) not in named)
                continue
            written += len(batch)
        if rejected or unsure:
            first = reasons[0] if reasons else refused
            raise PermanentError(
                f"InfluxDB: {len(rejected) + len(unsure)} of {len(data)} rows for {topic!r} "
                f"rejected; {first}",
                rows=rejected,
                reasons=reasons,
                unsure=unsure,
            )
        return written

    def close(self) -> None:
        """Write the points queued by :meth:`push` (best effort), then close everything."""
        if self._queue:
            try:
                self.flush_points()
            except Exception as exc:  # closing must not fail
                log.warning(
                    "InfluxDB: %d queued points not written on close: %s", len(self._queue), exc
                )
                self._queue.clear()
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._udp is not None:
            self._udp.close()
        if self._v2 is not None:
            self._v2.close()

    # -- ex_flux-style calls ----------------------------------------------------------

    def ping(self) -> bool:
        """True when the server is alive (HTTP ``/ping`` answers 204)."""
        if self._v2 is not None:
            return self._v2.ping()
        return self.http.ping()

    def query(self, q: str, epoch: str | None = None) -> list[dict[str, Any]]:
        """Run an InfluxQL read query (1.x HTTP API); see :meth:`InfluxHTTP.query`."""
        return self.http.query(q, epoch=epoch)

    def post_query(self, q: str) -> list[dict[str, Any]]:
        """Run a changing InfluxQL query (CREATE, DROP...) with ``POST /query``."""
        return self.http.post_query(q)

    def push(self, point: Mapping[str, Any]) -> int:
        """Queue one point; write the queue when it holds ``batch_size`` points
        or ``flush_interval`` seconds passed since its first point (checked here).

        Args:
            point: ``{"measurement": str, "tags": {...}, "fields": {...},
                "time": optional}``; ``time`` as for rows.

        Returns:
            The number of points written by this call (0 when only queued).

        Raises:
            InvalidData: the point cannot be encoded (it is not queued).
            Backpressure: ``max_queue_size`` points are already queued.
            PermanentError, InfluxUnavailable: from the write it triggered;
                the point stays queued on a transient error.
        """
        if len(self._queue) >= self.max_queue_size:
            raise Backpressure(f"InfluxDB push queue is full ({self.max_queue_size} points)")
        try:
            stamp = to_timestamp(point.get("time"), self.precision)
            line = encode_point(
                point["measurement"], point.get("tags") or {}, point["fields"], stamp
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise LineProtocolError(f"not a point dict: {exc!r}") from exc
        if not self._queue:
            self._first_queued = time.monotonic()
        self._queue.append((line, dict(point)))
        if (
            len(self._queue) >= self.batch_size
            or time.monotonic() - self._first_queued >= self.flush_interval
        ):
            return self.flush_points()
        return 0

    def flush_points(self) -> int:
        """Write every point queued by :meth:`push`; return how many were written."""
        written = 0
        rejected: list[dict[str, Any]] = []
        reasons: list[str] = []
        while self._queue:
            batch = self._queue[: self.batch_size]
            lines = [line for line, _ in batch]
            points = [p for _, p in batch]
            try:
                self._write(lines)
            except LinesRejected as exc:
                indices = exc.line_indices
                if indices is None:
                    items = [(str(p["measurement"]), p["fields"]) for p in points]
                    indices = _conflicting(str(exc), items)
                lost = points if indices is None else [points[i] for i in indices]
                rejected.extend(lost)
                reasons.append(str(exc))
                written += len(batch) - len(lost)
            except Exception:
                if rejected:  # already out of the queue: do not lose them silently
                    log.error("InfluxDB rejected %d pushed points: %s", len(rejected), reasons)
                raise
            else:
                written += len(batch)
            del self._queue[: len(batch)]
        if rejected:
            raise PermanentError(
                "InfluxDB rejected points: " + "; ".join(reasons[:3]), rows=rejected
            )
        return written

    @property
    def http(self) -> InfluxHTTP:
        """The HTTP client of the 1.x API (created on first use)."""
        if self._http is None:
            self._http = InfluxHTTP(
                self.host,
                self.http_port,
                self.database,
                self.username,
                self._password,
                self.ssl,
                self.retention_policy,
                self.precision,
                self.timeout,
            )
        return self._http

    def _encode_reason(self, row: Any, meas: str) -> str:
        """Why a row that encode_rows refused cannot be encoded."""
        if not isinstance(row, Mapping):
            return f"a row is not a dict but {type(row).__name__}"
        skip = {*self.tags, self.time_key}
        try:
            stamp = to_timestamp(row.get(self.time_key) if self.time_key else None, self.precision)
            encode_point(
                meas,
                {k: row[k] for k in self.tags if k in row},
                {k: v for k, v in row.items() if k not in skip},
                stamp,
            )
        except ROW_ERRORS as exc:
            return f"first bad row: {exc}"
        return "a row cannot be encoded"

    # -- writers ---------------------------------------------------------------------

    def _write(self, lines: list[str], body: bytes | None = None) -> None:
        """Write one batch with the configured protocol (``body``: the lines, joined in UTF-8)."""
        if self._udp is not None:
            self._udp.write(lines)
        elif self._v2 is not None:
            self._v2.write(lines, body)
        else:
            self.http.write(lines, body)


def _conflicting(message: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int] | None:
    """Indices of the points of a "field type conflict" error, or None when unsure.

    ``items`` are the (measurement, fields) of the batch's points. The guess is
    used only when it accounts for exactly the ``dropped=N`` points InfluxDB reports.
    """
    match = _CONFLICT.search(message)
    if match is None or match["type"] not in _PY_TYPES:
        return None
    field, meas, kind = match["field"], match["meas"], _PY_TYPES[match["type"]]
    hits = [
        i
        for i, (name, fields) in enumerate(items)
        if name == meas and field in fields and _is_kind(fields[field], kind)
    ]
    return hits if hits and len(hits) == int(match["dropped"]) else None


def _same(row: Any) -> Any:
    return row


def _is_kind(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
