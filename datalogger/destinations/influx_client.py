"""Small clients for InfluxDB: the 1.x HTTP API, 1.x UDP and the v2 write API.

:class:`InfluxHTTP` (ping, query, write), :class:`InfluxUDP` (fire-and-forget
writes over a pool of sockets) and :class:`InfluxV2` (writes through
``influxdb_client``). Each ``write`` takes a list of lines and raises
:class:`LinesRejected` naming the refused lines when it can tell.


``InfluxHTTP`` is built on :mod:`http.client` with one keep-alive connection, reopened when the
server closed it. Not thread-safe: use one client per thread (each datalogger
destination instance has its own).

Errors are translated into datalogger's exceptions:

* HTTP 4xx (a bad line, a field type conflict, a bad query, a missing
  database): :class:`datalogger.PermanentError`, with InfluxDB's error text.
* HTTP 5xx, 408, 429, timeouts and connection errors: :class:`InfluxUnavailable`, a
  transient :class:`datalogger.DataLoggerError` (the write is retried).

Credentials are sent as HTTP basic auth, never in the URL, and never appear in
messages or reprs.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import socket
import ssl as ssl_module
from typing import Any
from urllib.parse import urlencode

from ..exceptions import DataLoggerError, PermanentError
from ..lineprotocol import normalize_precision

__all__ = [
    "MAX_DATAGRAM",
    "InfluxHTTP",
    "InfluxUDP",
    "InfluxUnavailable",
    "InfluxV2",
    "LinesRejected",
    "series_rows",
]

#: Largest UDP datagram sent, in bytes (InfluxDB reads UDP into a 64 KiB buffer).
MAX_DATAGRAM = 64_000

_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
# Errors meaning "the kept-alive connection was closed by the server": retry once.
#: 4xx answers that mean "try again later" rather than "bad data".
_TRANSIENT_4XX = frozenset({408, 429})
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class InfluxUnavailable(DataLoggerError):
    """InfluxDB could not be reached or answered 5xx: a transient failure."""


class LinesRejected(PermanentError):
    """InfluxDB refused a write (HTTP 4xx) or lines could not be sent.

    Args:
        message: the reason, with InfluxDB's error text.
        line_indices: indices (in the written list) of the refused lines when
            the error names them; None when all or an unknown subset of the
            lines were refused (InfluxDB 1.x may still have written some).
    """

    def __init__(self, message: str, line_indices: list[int] | None = None) -> None:
        super().__init__(message)
        self.line_indices = line_indices


def quoted_lines(message: str, lines: list[str]) -> list[int] | None:
    """Indices of the lines quoted in InfluxDB's "unable to parse" errors, or None."""
    return [i for i, line in enumerate(lines) if f"unable to parse '{line}'" in message] or None


def series_rows(series: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn one series from :meth:`InfluxHTTP.query` into a list of row dicts.

    Each row maps the series' columns to the values, plus its tags.
    """
    columns = series.get("columns", [])
    tags = series.get("tags") or {}
    return [
        {**tags, **dict(zip(columns, values, strict=False))} for values in series.get("values", [])
    ]


class InfluxHTTP:
    """A client for one InfluxDB 1.x database over HTTP.

    Args:
        host: server host name.
        http_port: HTTP API port.
        database: the database to write to and query.
        username: user for basic auth, or None.
        password: password for basic auth (never shown).
        ssl: use HTTPS (with certificate verification).
        retention_policy: retention policy to write to (None: the default).
        precision: unit of the timestamps written: ``ns``, ``us``, ``ms`` or ``s``.
        timeout: socket timeout in seconds.
    """

    def __init__(
        self,
        host: str = "localhost",
        http_port: int = 8086,
        database: str = "",
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        retention_policy: str | None = None,
        precision: str = "ns",
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.http_port = http_port
        self.database = database
        self.username = username
        self.ssl = ssl
        self.retention_policy = retention_policy
        self.precision = normalize_precision(precision)
        self.timeout = timeout
        self._headers: dict[str, str] = {}
        if username is not None or password is not None:
            token = f"{username or ''}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        scheme = "https" if self.ssl else "http"
        user = f"{self.username}:***@" if self.username is not None else ""
        where = f"{scheme}://{user}{self.host}:{self.http_port}"
        return f"InfluxHTTP({where}, database={self.database!r})"

    # -- connection -----------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.ssl:
                self._conn = http.client.HTTPSConnection(
                    self.host,
                    self.http_port,
                    timeout=self.timeout,
                    context=ssl_module.create_default_context(),
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self.host, self.http_port, timeout=self.timeout
                )
        return self._conn

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> InfluxHTTP:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body). Connection failures raise."""
        url = path + ("?" + urlencode(params) if params else "")
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        where = f"{method} {path} on {self.host}:{self.http_port}"
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except _STALE as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed the idle connection: reconnect once
                raise InfluxUnavailable(f"{where}: connection lost: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise InfluxUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, what: str, status: int, data: bytes) -> None:
        if status < 300:
            return
        message = _error_text(data)
        text = f"InfluxDB {what} failed with HTTP {status}: {message}"
        if 400 <= status < 500 and status not in _TRANSIENT_4XX:
            raise PermanentError(text)
        raise InfluxUnavailable(text)

    # -- API ------------------------------------------------------------------

    def ping(self) -> bool:
        """True when the server answers ``GET /ping`` with 204; False otherwise."""
        try:
            status, _ = self._request("GET", "/ping")
        except InfluxUnavailable:
            return False
        return status == 204

    def query(self, q: str, epoch: str | None = None) -> list[dict[str, Any]]:
        """Run a read query (``GET /query``) on the database.

        Args:
            q: InfluxQL, e.g. ``SELECT count(*) FROM cpu``.
            epoch: return times as integers in this unit (``ns``, ``u``, ``ms``,
                ``s``...) instead of RFC 3339 strings.

        Returns:
            Every series of every statement, each a dict with ``name``,
            ``tags`` (possibly empty), ``columns`` and ``values``. Use
            :func:`series_rows` to get row dicts.

        Raises:
            PermanentError: a bad query, or a statement error such as a
                missing database.
            InfluxUnavailable: server unreachable or 5xx.
        """
        params = {"db": self.database, "q": q}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        if epoch:
            params["epoch"] = epoch
        status, data = self._request("GET", "/query", params)
        return self._parse_query("query", status, data)

    def post_query(self, q: str) -> list[dict[str, Any]]:
        """Run a query that changes the server (``POST /query``): CREATE, DROP, ALTER...

        Returns:
            The series of the answer (usually none).

        Raises:
            PermanentError: a bad query or a statement error.
            InfluxUnavailable: server unreachable or 5xx.
        """
        params = {"q": q}
        if self.database:
            params["db"] = self.database
        status, data = self._request("POST", "/query", params)
        return self._parse_query("post_query", status, data)

    def _parse_query(self, what: str, status: int, data: bytes) -> list[dict[str, Any]]:
        self._check(what, status, data)
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise InfluxUnavailable(f"InfluxDB {what}: answer is not JSON") from exc
        if "error" in answer:
            raise PermanentError(f"InfluxDB {what} failed: {answer['error']}")
        series: list[dict[str, Any]] = []
        for result in answer.get("results", []):
            if "error" in result:
                raise PermanentError(f"InfluxDB {what} failed: {result['error']}")
            for one in result.get("series", []):
                series.append(
                    {
                        "name": one.get("name"),
                        "tags": one.get("tags") or {},
                        "columns": one.get("columns", []),
                        "values": one.get("values", []),
                    }
                )
        return series

    def write(self, lines: list[str] | str, body: bytes | None = None) -> None:
        """Write lines of line protocol (``POST /write``) to the database.

        ``body``, if given, is ``lines`` already joined and encoded (UTF-8).

        Raises:
            LinesRejected: HTTP 4xx; the message has InfluxDB's error text,
                which quotes unparseable lines. The other lines of the
                request may have been written (InfluxDB does partial writes).
            InfluxUnavailable: server unreachable or 5xx.
        """
        if body is None:
            body = (lines if isinstance(lines, str) else "\n".join(lines)).encode("utf-8")
        params = {"db": self.database, "precision": _V1_PRECISION[self.precision]}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        status, data = self._request("POST", "/write", params, body, "application/octet-stream")
        try:
            self._check("write", status, data)
        except PermanentError as exc:
            found = None if isinstance(lines, str) else quoted_lines(str(exc), lines)
            raise LinesRejected(str(exc), found) from exc


def _error_text(data: bytes) -> str:
    """InfluxDB's error message from an error response body."""
    text = data.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        return text[:2000] or "(no message)"
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    return text[:2000]


class InfluxUDP:
    """Fire-and-forget writes to an InfluxDB 1.x UDP listener.

    Lines are packed into datagrams of at most ``max_datagram`` bytes, sent
    round-robin over a pool of ``pool_size`` sockets (created on first write).
    Nothing confirms delivery: points are lost when the listener is down or
    its buffers overflow. The listener's own ``precision`` setting decides how
    timestamps are read.
    """

    def __init__(
        self, host: str, udp_port: int, pool_size: int = 5, max_datagram: int = MAX_DATAGRAM
    ) -> None:
        self.host, self.udp_port = host, udp_port
        self.pool_size, self.max_datagram = pool_size, max_datagram
        self._sockets: list[socket.socket] = []
        self._cycle: itertools.cycle[socket.socket] | None = None
        self._address: Any = None

    def __repr__(self) -> str:
        return f"InfluxUDP({self.host}:{self.udp_port}, pool_size={self.pool_size})"

    def write(self, lines: list[str]) -> int:
        """Send the lines; return the number of datagrams sent.

        Raises:
            LinesRejected: lines longer than ``max_datagram`` (the others were sent).
            InfluxUnavailable: the host does not resolve or a send failed.
        """
        too_big: list[int] = []
        sent = 0
        datagram = bytearray()
        for i, line in enumerate(lines):
            data = line.encode("utf-8")
            if len(data) > self.max_datagram:
                too_big.append(i)
                continue
            if datagram and len(datagram) + 1 + len(data) > self.max_datagram:
                sent += self._send(datagram)
                datagram = bytearray()
            if datagram:
                datagram += b"\n"
            datagram += data
        if datagram:
            sent += self._send(datagram)
        if too_big:
            raise LinesRejected(
                f"{len(too_big)} lines longer than the UDP limit of {self.max_datagram} bytes",
                too_big,
            )
        return sent

    def _send(self, datagram: bytearray) -> int:
        where = f"UDP {self.host}:{self.udp_port}"
        if self._cycle is None:
            try:
                info = socket.getaddrinfo(self.host, self.udp_port, type=socket.SOCK_DGRAM)[0]
            except OSError as exc:
                raise InfluxUnavailable(f"{where}: cannot resolve: {exc}") from exc
            self._address = info[4]
            self._sockets = [
                socket.socket(info[0], socket.SOCK_DGRAM) for _ in range(self.pool_size)
            ]
            self._cycle = itertools.cycle(self._sockets)
        try:
            next(self._cycle).sendto(datagram, self._address)
        except OSError as exc:
            raise InfluxUnavailable(f"{where}: send failed: {exc}") from exc
        return 1

    def close(self) -> None:
        """Close the sockets."""
        for sock in self._sockets:
            sock.close()
        self._sockets, self._cycle = [], None


class InfluxV2:
    """Writes to the InfluxDB v2 API (``/api/v2/write``) through ``influxdb_client``.

    The client and its synchronous WriteApi are created on first use, so no
    connection pool exists before the process forks. The token is never shown.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        org: str,
        bucket: str,
        precision: str = "ns",
        timeout: float = 10.0,
    ) -> None:
        self.url, self.org, self.bucket = url, org, bucket
        self.precision = normalize_precision(precision)
        self.timeout = timeout
        self._token = token
        self._client: Any = None
        self._write_api: Any = None

    def __repr__(self) -> str:
        return f"InfluxV2({self.url}, org={self.org!r}, bucket={self.bucket!r})"

    def _api(self) -> tuple[Any, Any]:
        if self._client is None:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            self._client = InfluxDBClient(
                url=self.url,
                token=self._token or "",
                org=self.org,
                timeout=int(self.timeout * 1000),
            )
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        return self._client, self._write_api

    def ping(self) -> bool:
        """True when the server answers its ping endpoint."""
        try:
            return bool(self._api()[0].ping())
        except Exception:  # any failure means "not alive"
            return False

    def write(self, lines: list[str], body: bytes | None = None) -> None:
        """Write the lines to the bucket (``body``: the lines, joined in UTF-8, if at hand).

        Raises:
            LinesRejected: HTTP 4xx (but 408/429), with InfluxDB's message.
            InfluxUnavailable: unreachable, 5xx, 408 or 429.
        """
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        _, write_api = self._api()
        try:
            write_api.write(
                bucket=self.bucket,
                org=self.org,
                record="\n".join(lines) if body is None else body,
                write_precision=self.precision,
            )
        except ApiException as exc:
            text = f"InfluxDB v2 write failed with HTTP {exc.status}: {_v2_message(exc)}"
            status = exc.status or 0
            if 400 <= status < 500 and status not in _TRANSIENT_4XX:
                raise LinesRejected(text, quoted_lines(text, lines)) from exc
            raise InfluxUnavailable(text) from exc
        except (OSError, HTTPError) as exc:
            raise InfluxUnavailable(f"InfluxDB v2 at {self.url}: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the WriteApi and the client."""
        if self._client is not None:
            self._write_api.close()
            self._client.close()
            self._client = self._write_api = None


def _v2_message(exc: Any) -> str:
    """The message of an influxdb_client ApiException (JSON body ``message``)."""
    body = getattr(exc, "body", None) or ""
    try:
        return str(json.loads(body).get("message", body))
    except (ValueError, AttributeError, TypeError):
        return str(body or getattr(exc, "reason", ""))[:2000]
