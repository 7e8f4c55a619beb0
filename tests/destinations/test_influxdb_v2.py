"""The v2 protocol of InfluxDBDestination.

The requests themselves (path, parameters, token header, batches, error
answers) are checked against a small recording HTTP server on 127.0.0.1. The
writes are checked against a real server: VictoriaMetrics (Debian package
``victoria-metrics``, started by ``.ci/start-victoriametrics``), which accepts
``/api/v2/write``, read back with its ``/api/v1/export``. No InfluxDB 2.x is
packaged for the test machine. VictoriaMetrics keeps numeric values only and
names each field's series ``<measurement>_<field>``; the tests check those
differences too, as the destination page documents them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from datalogger import PermanentError
from datalogger.destinations.influx_client import InfluxUnavailable, InfluxV2
from datalogger.destinations.influxdb import InfluxDBDestination
from tests.conftest import free_port
from tests.services import unique_name, victoriametrics_or_skip
from tests.victoria import export, samples, series_of

TOKEN = "tok-very-secret"


class Recorder(ThreadingHTTPServer):
    """Records every request and answers with ``status`` and ``reply``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []
        self.status = 204
        self.reply = b""


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        url = urlsplit(self.path)
        self.server.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "params": {k: v[0] for k, v in parse_qs(url.query).items()},
                "headers": dict(self.headers),
                "body": self.rfile.read(length).decode(),
            }
        )
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.reply)))
        self.end_headers()
        self.wfile.write(self.server.reply)

    do_POST = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def v2_dest(recorder: Recorder, **options: Any) -> InfluxDBDestination:
    host, port = recorder.server_address[:2]
    return InfluxDBDestination(
        protocol="v2",
        url=f"http://{host!s}:{port}",
        token=TOKEN,
        org="my-org",
        bucket="my-bucket",
        tags=["host"],
        **options,
    )


def test_v2_write_request(recorder: Recorder) -> None:
    dest = v2_dest(recorder, precision="ms", batch_size=2)
    rows: list[dict[str, Any]] = [
        {"time": 1, "host": "a", "v": 1.5},
        {"time": 2, "v": 2},
        {"time": 3, "s": "x y"},
    ]
    assert dest.send_data("cpu", rows) == 3
    assert len(recorder.requests) == 2  # batches of 2 lines
    first = recorder.requests[0]
    assert first["method"] == "POST"
    assert first["path"] == "/api/v2/write"
    assert first["params"] == {"org": "my-org", "bucket": "my-bucket", "precision": "ms"}
    assert first["headers"]["Authorization"] == f"Token {TOKEN}"
    assert first["body"].split("\n") == ["cpu,host=a v=1.5 1", "cpu v=2i 2"]
    assert recorder.requests[1]["body"] == 'cpu s="x y" 3'
    assert TOKEN not in repr(dest)
    dest.close()


def test_v2_4xx_is_permanent_and_names_the_line(recorder: Recorder) -> None:
    dest = v2_dest(recorder)
    recorder.status = 400
    message = "partial write error (1 written): unable to parse 'cpu v=2i 2': bad"
    recorder.reply = json.dumps({"code": "invalid", "message": message}).encode()
    rows = [{"time": 1, "v": 1}, {"time": 2, "v": 2}]
    with pytest.raises(PermanentError) as info:
        dest.send_data("cpu", rows)
    assert info.value.rows == [rows[1]]
    assert "unable to parse" in str(info.value)
    dest.close()


def test_v2_5xx_is_transient(recorder: Recorder) -> None:
    dest = v2_dest(recorder)
    recorder.status = 503
    recorder.reply = b'{"code": "unavailable", "message": "try later"}'
    with pytest.raises(InfluxUnavailable, match="503") as info:
        dest.send_data("cpu", [{"v": 1}])
    assert not isinstance(info.value, PermanentError)
    assert TOKEN not in str(info.value)
    dest.close()


def test_v2_client_is_created_lazily(recorder: Recorder) -> None:
    dest = v2_dest(recorder)
    assert dest._v2 is not None and dest._v2._client is None  # no pool before a fork
    dest.send_data("cpu", [{"v": 1}])
    assert dest._v2._client is not None
    dest.close()


# -- against a real server: VictoriaMetrics ------------------------------------------

BASE_MS = 1_767_225_600_000
"""2026-01-01 in milliseconds: VictoriaMetrics keeps milliseconds."""


@pytest.fixture
def vm() -> str:
    return victoriametrics_or_skip()


def vm_dest(url: str, **options: Any) -> InfluxDBDestination:
    options.setdefault("tags", ["host"])
    return InfluxDBDestination(
        protocol="v2", url=url, token="unused", org="dl", bucket="test", **options
    )


def test_v2_writes_points_to_victoriametrics(vm: str) -> None:
    dest = vm_dest(vm, precision="ms", batch_size=3)
    meas = unique_name("v2")
    rows = [
        {"time": BASE_MS + i, "host": f"h{i % 2}", "v": i * 0.5, "n": i, "ok": i % 3 == 0}
        for i in range(10)
    ]
    assert dest.send_data(meas, rows) == 10
    dest.close()

    assert series_of(vm, meas, "v", expect=10) == [
        (BASE_MS + i, i * 0.5, {"host": f"h{i % 2}"}) for i in range(10)
    ]
    assert [value for _, value, _ in series_of(vm, meas, "n")] == list(range(10))
    assert [value for _, value, _ in series_of(vm, meas, "ok")] == [
        1.0 if i % 3 == 0 else 0.0 for i in range(10)
    ]  # booleans are stored as 1 and 0
    assert samples(vm, meas, expect=30) == 30  # one sample per field of each point, nothing else


@pytest.mark.parametrize(
    ("precision", "stamp"),
    [
        ("s", 1_767_225_600),
        ("ms", 1_767_225_600_123),
        ("us", 1_767_225_600_123_456),
        ("ns", 1_767_225_600_123_456_789),
    ],
)
def test_v2_precision_reaches_the_server(vm: str, precision: str, stamp: int) -> None:
    dest = vm_dest(vm, precision=precision)
    meas = unique_name("prec")
    when = datetime(2026, 1, 1, 0, 0, 1, 250_000, tzinfo=UTC)
    dest.send_data(meas, [{"time": stamp, "host": "a", "v": 1}, {"time": when, "host": "b", "v": 2}])
    dest.close()
    if precision == "s":
        expected = [(1_767_225_600_000, 1.0), (1_767_225_601_000, 2.0)]  # whole seconds
    else:
        expected = [(1_767_225_600_123, 1.0), (1_767_225_601_250, 2.0)]  # whole ms
    assert [(t, v) for t, v, _ in series_of(vm, meas, "v", expect=2)] == expected


def test_v2_rows_without_time_get_the_servers_time(vm: str) -> None:
    dest = vm_dest(vm)
    meas = unique_name("notime")
    before = int(time.time() * 1000)
    dest.send_data(meas, [{"host": "a", "v": 1.0}])
    dest.close()
    after = int(time.time() * 1000)
    [(stamp, value, _)] = series_of(vm, meas, "v")
    assert value == 1.0
    assert before - 1000 <= stamp <= after + 1000


def test_v2_rows_that_cannot_be_encoded_are_rejected_and_the_rest_written(vm: str) -> None:
    dest = vm_dest(vm, precision="ms")
    meas = unique_name("bad")
    rows: list[Any] = [
        {"time": BASE_MS, "v": 1},
        {"time": BASE_MS + 1, "v": object()},  # no field value (a list would be JSON text)
        {"time": BASE_MS + 2, "host": "x"},  # no field at all
        "not a row",
        {"time": BASE_MS + 3, "v": 3},
    ]
    with pytest.raises(PermanentError, match="3 of 5 rows") as info:
        dest.send_data(meas, rows)
    assert info.value.rows == [rows[1], rows[2], rows[3]]
    assert [(t, v) for t, v, _ in series_of(vm, meas, "v", expect=2)] == [
        (BASE_MS, 1.0),
        (BASE_MS + 3, 3.0),
    ]
    dest.close()


def test_victoriametrics_keeps_numbers_only_and_drops_unparsable_lines_silently(vm: str) -> None:
    """The differences from InfluxDB that docs/destinations/influxdb.md states.

    A string field is stored as its number, or 0 when it is not one. A line
    VictoriaMetrics cannot parse is left out with a 204, where InfluxDB answers
    400 and datalogger dead-letters the row: our encoder never writes such a
    line, so only a hand-made one shows it.
    """
    dest = vm_dest(vm, precision="ms")
    meas = unique_name("typ")
    assert dest.send_data(meas, [{"time": BASE_MS, "num": "12.5", "word": "text"}]) == 1
    dest.close()
    assert [v for _, v, _ in series_of(vm, meas, "num")] == [12.5]
    assert [v for _, v, _ in series_of(vm, meas, "word")] == [0.0]

    client = InfluxV2(vm, None, "dl", "test", precision="ms")
    client.write([f"{meas} broken", f"{meas} ok=1 {BASE_MS}"])  # no error raised
    client.close()
    assert [v for _, v, _ in series_of(vm, meas, "ok")] == [1.0]
    assert not export(vm, f'{{__name__=~"{meas}_b.*"}}', expect=0)


def test_v2_ping_and_push_on_victoriametrics(vm: str) -> None:
    dest = vm_dest(vm, precision="ms", batch_size=2, flush_interval=3600)
    assert dest.ping() is True
    meas = unique_name("push")
    assert dest.push({"measurement": meas, "tags": {"host": "a"}, "fields": {"v": 1}, "time": BASE_MS}) == 0
    assert dest.push({"measurement": meas, "fields": {"v": 2}, "time": BASE_MS + 1}) == 2
    assert dest.push({"measurement": meas, "fields": {"v": 3}, "time": BASE_MS + 2}) == 0
    dest.close()  # writes the queued point
    assert [(t, v) for t, v, _ in series_of(vm, meas, "v", expect=3)] == [
        (BASE_MS, 1.0),
        (BASE_MS + 1, 2.0),
        (BASE_MS + 2, 3.0),
    ]
    down = vm_dest(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    assert down.ping() is False
    down.close()


def test_v2_writes_what_influxdb_client_writes(vm: str) -> None:
    """The same rows through the destination and through influxdb-client's own
    ``Point`` + ``WriteApi`` land as the same series, samples and tags."""
    from influxdb_client import InfluxDBClient, Point, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS

    ours, theirs = unique_name("ours"), unique_name("theirs")
    rows = [
        {"time": BASE_MS + i, "host": f"web {i % 3}", "load": i / 7, "procs": 100 + i, "up": i % 2 == 0}
        for i in range(50)
    ]
    dest = vm_dest(vm, precision="ms")
    assert dest.send_data(ours, rows) == 50
    dest.close()
    with InfluxDBClient(url=vm, token="unused", org="dl") as client:
        write_api = client.write_api(write_options=SYNCHRONOUS)
        points = []
        for row in rows:
            point = Point(theirs).tag("host", row["host"]).time(row["time"], WritePrecision.MS)
            for key in ("load", "procs", "up"):
                point = point.field(key, row[key])
            points.append(point)
        write_api.write(bucket="test", org="dl", record=points)

    for field in ("load", "procs", "up"):
        assert series_of(vm, ours, field, expect=50) == series_of(vm, theirs, field, expect=50)
        assert len(series_of(vm, ours, field)) == 50
