"""A v2-write to v1-write forwarder, so influxdb-client can write into InfluxDB 1.6.

InfluxDB 1.6 has no ``/api/v2/write`` (1.8 added it). ``python -m bench.sink
PORT`` listens on 127.0.0.1:PORT, accepts ``POST /api/v2/write?bucket=db/rp``
and forwards each body, unchanged, to the local InfluxDB's ``/write?db=db&rp=rp``
over a keep-alive connection per server thread. It runs in its own process so
it takes no CPU time from the benchmark's caller thread.
"""

from __future__ import annotations

import http.client
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from ._common import INFLUX_HOST, INFLUX_PORT

_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_local = threading.local()


def _upstream() -> http.client.HTTPConnection:
    conn: http.client.HTTPConnection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = http.client.HTTPConnection(INFLUX_HOST, INFLUX_PORT, timeout=60)
        _local.conn = conn
    return conn


class Forwarder(BaseHTTPRequestHandler):
    """Handles ``/api/v2/write`` (forwarded) and ``/ping`` (204)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        """Forward a v2 write to the v1 ``/write`` endpoint; answer with its status."""
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path != "/api/v2/write":
            self._answer(404, b"not found")
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        db, _, rp = query.get("bucket", "").partition("/")
        params = {"db": db, "precision": _PRECISION.get(query.get("precision", "ns"), "n")}
        if rp:
            params["rp"] = rp
        conn = _upstream()
        try:
            conn.request("POST", "/write?" + urlencode(params), body)
            reply = conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            _local.conn = None
            self._answer(503, b"upstream unavailable")
            return
        self._answer(reply.status, data)

    def do_GET(self) -> None:
        """``/ping`` answers 204; anything else 404."""
        self._answer(204 if self.path.startswith("/ping") else 404, b"")

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""


def main(argv: list[str]) -> int:
    """Serve on 127.0.0.1:``argv[0]`` until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", int(argv[0])), Forwarder)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
