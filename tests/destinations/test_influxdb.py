"""InfluxDBDestination against the real InfluxDB 1.x server (.ci/start-influxdb)."""

from __future__ import annotations

import socket
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from datalogger import Backpressure, ConfigError, DataLoggerError, PermanentError
from datalogger.destinations.influx_client import MAX_DATAGRAM, InfluxHTTP, InfluxUnavailable, series_rows
from datalogger.destinations.influxdb import InfluxDBDestination
from tests.services import influxdb_or_skip, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> tuple[str, int, int]:
    return influxdb_or_skip()


@pytest.fixture
def database(server: tuple[str, int, int]) -> Iterator[str]:
    """A fresh database, dropped afterwards."""
    host, http_port, _ = server
    name = unique_name("dl")
    with InfluxHTTP(host, http_port) as admin:
        admin.post_query(f'CREATE DATABASE "{name}"')
        yield name
        admin.post_query(f'DROP DATABASE "{name}"')


@pytest.fixture
def dest(server: tuple[str, int, int], database: str) -> Iterator[InfluxDBDestination]:
    host, http_port, udp_port = server
    destination = InfluxDBDestination(
        database=database, host=host, http_port=http_port, udp_port=udp_port, tags=["host"]
    )
    yield destination
    destination.close()


def count(dest: InfluxDBDestination, measurement: str, field: str = "v") -> int:
    series = dest.query(f'SELECT count("{field}") FROM "{measurement}"')
    return int(series[0]["values"][0][1]) if series else 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_100k_rows_over_http(dest: InfluxDBDestination) -> None:
    rows = [{"time": i, "host": f"h{i % 7}", "v": i * 0.5, "n": i} for i in range(100_000)]
    assert dest.send_data("cpu", rows) == 100_000
    assert count(dest, "cpu") == 100_000
    assert count(dest, "cpu", "n") == 100_000


def test_values_round_trip_exactly(dest: InfluxDBDestination) -> None:
    tricky = 'quote " back \\ slash\nnew line, comma = equals'
    rows = [
        {"time": 1, "host": "a b,c=d\te", "s": tricky, "f": 0.1, "i": -(2**63), "b": False},
        {"time": 2, "host": "plain", "s": "", "f": 1e300, "i": 2**63 - 1, "b": True},
    ]
    assert dest.send_data("odd measurement, name", rows) == 2
    got = series_rows(dest.query('SELECT * FROM "odd measurement, name"', epoch="ns")[0])
    assert got == [
        {"time": 1, "host": "a b,c=d\te", "s": tricky, "f": 0.1, "i": -(2**63), "b": False},
        {"time": 2, "host": "plain", "s": "", "f": 1e300, "i": 2**63 - 1, "b": True},
    ]


def test_time_units_and_server_time(server: tuple[str, int, int], database: str) -> None:
    host, http_port, _ = server
    dest = InfluxDBDestination(
        database=database, host=host, http_port=http_port, precision="ms", measurement="m_{topic}"
    )
    when = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    dest.send_data("t", [{"time": when, "v": 1}, {"time": 1704164645.5, "v": 2}, {"v": 3}])
    got = series_rows(dest.query("SELECT v FROM m_t", epoch="ms")[0])
    assert got[:2] == [{"time": 1704164645500, "v": 2}, {"time": 1704164645678, "v": 1}]
    assert got[2]["v"] == 3 and got[2]["time"] > 1704164645678  # stamped by the server
    dest.close()


def test_bad_rows_raise_after_the_good_rows_land(dest: InfluxDBDestination) -> None:
    bad: list[dict[str, Any]] = [
        {"time": 2, "host": "x\ny", "v": 1},
        {"time": 3, "v": None},
        {"time": 4, "v": float("nan")},
    ]
    good: list[dict[str, Any]] = [{"time": t, "host": "h", "v": t} for t in (1, 5, 6)]
    with pytest.raises(PermanentError) as info:
        dest.send_data("mixed", [good[0], *bad, *good[1:]])
    assert info.value.rows == bad
    assert "3 of 6 rows" in str(info.value)
    assert count(dest, "mixed") == 3


def test_rows_that_raise_while_encoding_are_rejected_alone(dest: InfluxDBDestination) -> None:
    # Decimal("sNaN") has no float, 1e300 s has no ns timestamp, "\ud800" no UTF-8:
    # each is its row's error, never the chunk's (once a ValueError failed it all, retried).
    bad: list[dict[str, Any]] = [
        {"time": 2, "host": "h", "v": Decimal("sNaN")},
        {"time": 1e300, "host": "h", "v": 3},
        {"time": 4, "host": "h", "v": 4, "s": "\ud800"},
    ]
    good: list[dict[str, Any]] = [{"time": t, "host": "h", "v": t} for t in (1, 5, 6)]
    with pytest.raises(PermanentError) as info:
        dest.send_data("raising", [good[0], *bad, *good[1:]])
    assert info.value.rows == bad
    assert "sNaN" in info.value.reasons[0] and "not finite" in info.value.reasons[1]
    assert "Unicode" in info.value.reasons[2]
    assert count(dest, "raising") == 3


def test_field_type_conflict_is_permanent(dest: InfluxDBDestination) -> None:
    dest.send_data("conflict", [{"time": 1, "v": 1.5}])
    rows: list[dict[str, Any]] = [
        {"time": 2, "v": 2.5},
        {"time": 3, "v": "text"},
        {"time": 4, "v": 4.5},
    ]
    with pytest.raises(PermanentError) as info:
        dest.send_data("conflict", rows)
    assert "field type conflict" in str(info.value)
    assert info.value.rows == [rows[1]]  # InfluxDB wrote the others
    assert count(dest, "conflict") == 3


def test_conflict_inside_one_request_rejects_it_all(dest: InfluxDBDestination) -> None:
    # A new field with two types in one request: InfluxDB writes none of its points.
    rows: list[dict[str, Any]] = [
        {"time": 1, "v": 1},
        {"time": 2, "v": "text"},
        {"time": 3, "v": 3},
    ]
    with pytest.raises(PermanentError, match="field type conflict") as info:
        dest.send_data("new_conflict", rows)
    assert info.value.rows == [] and info.value.unsure == rows  # which line? not said
    assert count(dest, "new_conflict") == 0
    # as the framework does: the unsure rows are tried again in halves
    from datalogger.delivery import DestinationHost
    from datalogger.isolation import deliver_isolating

    host = DestinationHost(_spec(dest), "new_conflict")
    outcome = deliver_isolating(host.send, rows)
    host.close()
    assert list(outcome.dead) == [1] and "field type conflict" in outcome.dead[1]
    assert count(dest, "new_conflict") == 2


def _spec(dest: InfluxDBDestination) -> Any:
    from datalogger.config import DestinationSpec

    options = {"database": dest.database, "host": dest.host, "http_port": dest.http_port}
    return DestinationSpec(name="influx", type="influxdb", options=options)


def test_batches_of_batch_size(server: tuple[str, int, int], database: str) -> None:
    host, http_port, _ = server
    dest = InfluxDBDestination(database=database, host=host, http_port=http_port, batch_size=7)
    dest.send_data("small", [{"time": 0, "v": 1}])  # the field is an integer in this shard
    rows = [{"time": i, "v": "s" if i in (3, 12) else i} for i in range(1, 31)]
    with pytest.raises(PermanentError) as info:
        dest.send_data("small", rows)
    # each conflicting row was in its own request of 7 lines: the other 28 landed
    assert info.value.rows == [rows[2], rows[11]]
    assert count(dest, "small") == 1 + 28
    dest.close()


def test_connection_refused_is_transient() -> None:
    dest = InfluxDBDestination(
        database="x", host="127.0.0.1", http_port=closed_port(), password="s3cret-pw", username="u"
    )
    with pytest.raises(InfluxUnavailable) as info:
        dest.send_data("t", [{"v": 1}])
    assert not isinstance(info.value, PermanentError)
    assert isinstance(info.value, DataLoggerError)
    assert dest.ping() is False
    assert "s3cret-pw" not in str(info.value) + repr(dest) + repr(dest.http)


def test_ping_query_and_post_query(dest: InfluxDBDestination, database: str) -> None:
    assert dest.ping() is True
    dest.post_query(f'CREATE RETENTION POLICY "short" ON "{database}" DURATION 1h REPLICATION 1')
    names = [row["name"] for row in series_rows(dest.query("SHOW RETENTION POLICIES")[0])]
    assert "short" in names
    dest.post_query(f'DROP RETENTION POLICY "short" ON "{database}"')
    names = [row["name"] for row in series_rows(dest.query("SHOW RETENTION POLICIES")[0])]
    assert "short" not in names
    with pytest.raises(PermanentError, match="error parsing query"):
        dest.query("SELEKT 1")


def test_retention_policy_option(server: tuple[str, int, int], database: str) -> None:
    host, http_port, _ = server
    admin = InfluxHTTP(host, http_port, database)
    admin.post_query(f'CREATE RETENTION POLICY "rp1" ON "{database}" DURATION 2h REPLICATION 1')
    dest = InfluxDBDestination(
        database=database, host=host, http_port=http_port, retention_policy="rp1"
    )
    dest.send_data("m", [{"v": 1}, {"v": 2, "time": time.time_ns() - 10**9}])
    series = admin.query(f'SELECT count(v) FROM "{database}"."rp1"."m"')
    assert series[0]["values"][0][1] == 2
    assert admin.query(f'SELECT count(v) FROM "{database}"."autogen"."m"') == []
    dest.close()
    admin.close()


def test_push_batches_and_flushes(server: tuple[str, int, int], database: str) -> None:
    host, http_port, _ = server
    dest = InfluxDBDestination(
        database=database, host=host, http_port=http_port, batch_size=3, flush_interval=3600
    )
    point = {"measurement": "pushed", "tags": {"host": "a"}, "fields": {"v": 1}}
    assert [dest.push({**point, "time": t}) for t in range(1, 6)] == [0, 0, 3, 0, 0]
    assert count(dest, "pushed") == 3
    assert dest.flush_points() == 2
    assert count(dest, "pushed") == 5
    dest.push({**point, "time": 6})
    dest.close()  # writes what is queued
    assert (
        InfluxHTTP(host, http_port, database).query("SELECT count(v) FROM pushed")[0]["values"][0][
            1
        ]
        == 6
    )


def test_push_writes_after_flush_interval(server: tuple[str, int, int], database: str) -> None:
    host, http_port, _ = server
    dest = InfluxDBDestination(
        database=database, host=host, http_port=http_port, flush_interval=0.0
    )
    assert dest.push({"measurement": "m", "fields": {"v": 1.0}}) == 1
    with pytest.raises(DataLoggerError):
        dest.push({"measurement": "m", "fields": {"v": None}})  # nothing to write
    dest.close()


def test_push_queue_is_bounded() -> None:
    dest = InfluxDBDestination(
        database="x",
        host="127.0.0.1",
        http_port=closed_port(),
        max_queue_size=2,
        flush_interval=3600,
    )
    dest.push({"measurement": "m", "fields": {"v": 1}})
    dest.push({"measurement": "m", "fields": {"v": 2}})
    with pytest.raises(Backpressure):
        dest.push({"measurement": "m", "fields": {"v": 3}})
    with pytest.raises(InfluxUnavailable):
        dest.flush_points()  # the points stay queued
    with pytest.raises(Backpressure):
        dest.push({"measurement": "m", "fields": {"v": 3}})
    dest.close()  # logs the lost points, does not raise


def test_udp_delivery_to_the_udp_listener(server: tuple[str, int, int]) -> None:
    host, http_port, udp_port = server
    measurement = unique_name("udp")
    dest = InfluxDBDestination(
        database="udp_test", host=host, http_port=http_port, udp_port=udp_port, protocol="udp"
    )
    rows = [{"time": i + 1, "v": i} for i in range(50)]
    assert dest.send_data(measurement, rows) == 50
    deadline = time.monotonic() + 15
    seen = 0
    while time.monotonic() < deadline and seen < 50:
        time.sleep(0.2)
        try:
            seen = count(dest, measurement)
        except PermanentError:  # the listener creates "udp_test" on its first batch
            seen = 0
    assert seen == 50
    dest.post_query(f'DROP MEASUREMENT "{measurement}"')
    dest.close()


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def receive_all(sock: socket.socket) -> list[tuple[bytes, Any]]:
    got = []
    try:
        while True:
            got.append(sock.recvfrom(65536))
    except TimeoutError:
        return got


def test_udp_datagrams_stay_under_64k(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    dest = InfluxDBDestination(database="x", udp_port=port, host="127.0.0.1", protocol="udp")
    rows = [{"time": i, "s": "x" * 200} for i in range(2000)]
    rows.insert(10, {"time": 10**9, "s": "y" * MAX_DATAGRAM})  # can never fit
    with pytest.raises(PermanentError) as info:
        dest.send_data("big", rows)
    assert info.value.rows == [rows[10]]
    datagrams = receive_all(receiver)
    assert all(len(data) <= MAX_DATAGRAM for data, _ in datagrams)
    lines = b"\n".join(data for data, _ in datagrams).decode().split("\n")
    assert lines == [f'big s="{"x" * 200}" {i}' for i in range(2000)]
    assert len(datagrams) >= 2000 * 210 // MAX_DATAGRAM
    # sent round-robin over the pool of 5 sockets
    assert len({addr for _, addr in datagrams}) == 5
    dest.close()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="database"):
        InfluxDBDestination()
    with pytest.raises(ConfigError, match="protocol"):
        InfluxDBDestination(database="d", protocol="tcp")
    with pytest.raises(ConfigError, match="url"):
        InfluxDBDestination(protocol="v2", org="o", bucket="b")
    with pytest.raises(ConfigError, match="precision"):
        InfluxDBDestination(database="d", precision="h")
    with pytest.raises(ConfigError, match="batch_size"):
        InfluxDBDestination(database="d", batch_size=0)


DOC = Path(__file__).parents[2] / "docs" / "destinations" / "influxdb.md"


def test_doc_toml_example_builds_destinations() -> None:
    text = DOC.read_text()
    toml_text = text.split("```toml\n", 1)[1].split("```", 1)[0]
    framework = {"type", "prefix", "retry", "buffer", "send_async", "overflow"}
    for options in tomllib.loads(toml_text)["destinations"].values():
        assert options["type"] == "influxdb"
        dest = InfluxDBDestination(**{k: v for k, v in options.items() if k not in framework})
        assert "..." not in repr(dest)  # the token is not shown
        dest.close()


def test_doc_python_example_runs(server: tuple[str, int, int]) -> None:
    host, http_port, _ = server
    database = unique_name("doc")
    code = DOC.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"telemetry"', f'"{database}"')
    code = code.replace('host="127.0.0.1"', f'host="{host}", http_port={http_port}')
    scope: dict[str, Any] = {}
    exec(code, scope)
    with InfluxHTTP(host, http_port, database) as admin:
        assert admin.query("SELECT count(load) FROM cpu")[0]["values"][0][1] == 2
        admin.post_query(f'DROP DATABASE "{database}"')
