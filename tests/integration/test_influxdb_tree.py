"""InfluxDB 1.x through the whole actor tree on multiprocTCPBase, counted with InfluxQL."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.deadletters import DeadLetterStore
from tests.services import influxdb_or_skip, port_open, unavailable, unique_name

pytestmark = pytest.mark.integration

StartNode = Callable[..., datalogger.DataLogger]

RESTART_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "restart-influxdb"
UDP_DATABASE = "udp_test"
"""The database .ci/start-influxdb's UDP listener writes into."""


@pytest.fixture
def server() -> tuple[str, int, int]:
    return influxdb_or_skip()


@pytest.fixture
def database(server: tuple[str, int, int], start_node: StartNode, tmp_path: Path) -> Iterator[str]:
    """A fresh database, created and dropped through a node's destination."""
    name = unique_name("dl")
    admin = start_node(influx_config(tmp_path / "admin", server, name))
    influx = admin.destination("influx")
    influx.post_query(f'CREATE DATABASE "{name}"')
    yield name
    wait_influx_ready(60)
    influx.post_query(f'DROP DATABASE "{name}"')


def influx_config(
    tmp_path: Path, server: tuple[str, int, int], database: str, **options: Any
) -> dict[str, Any]:
    host, http_port, udp_port = server
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "influx": {
                "type": "influxdb",
                "database": database,
                "host": host,
                "http_port": http_port,
                "udp_port": udp_port,
                "tags": ["host"],
                **options,
            }
        },
    }


def count(dl: datalogger.DataLogger, measurement: str, field: str = "v") -> int:
    series = dl.destination("influx").query(f'SELECT count("{field}") FROM "{measurement}"')
    return int(series[0]["values"][0][1]) if series else 0


def lane(dl: datalogger.DataLogger, topic: str) -> dict[str, Any]:
    stats: dict[str, Any] = dl.stats()["topics"][topic]["influx"]
    return stats


def points(start: int, n: int) -> list[dict[str, Any]]:
    """Rows with distinct timestamps (points with equal time and tags overwrite each other)."""
    return [
        {"time": i, "host": f"h{i % 5}", "v": i * 0.25, "n": i} for i in range(start, start + n)
    ]


def influx_restart(action: str) -> None:
    subprocess.run(
        ["bash", str(RESTART_SCRIPT), action], check=True, timeout=90, capture_output=True
    )


def wait_influx_ready(timeout: float) -> None:
    host, http_port, _ = influxdb_or_skip()
    deadline = time.monotonic() + timeout
    while not port_open(host, http_port):
        if time.monotonic() > deadline:
            raise AssertionError(f"InfluxDB not listening within {timeout:g}s")
        time.sleep(0.2)


# -- tests ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_100k_rows_over_http_with_buffering(
    tmp_path: Path, start_node: StartNode, server: tuple[str, int, int], database: str
) -> None:
    topic = unique_name("cpu")
    dl = start_node(
        influx_config(tmp_path, server, database, buffer={"max_size": 10_000, "interval": 0.2})
    )
    for chunk in range(100):
        dl.log(topic, points(chunk * 1_000, 1_000))
    dl.flush(timeout=60)

    assert count(dl, topic) == 100_000
    assert count(dl, topic, "n") == 100_000
    stats = lane(dl, topic)
    assert stats["received"] == 100_000
    assert stats["delivered"] == 100_000
    assert stats["dead_lettered"] == 0


@pytest.mark.timeout(60)
def test_udp_delivery(tmp_path: Path, start_node: StartNode, server: tuple[str, int, int]) -> None:
    topic = unique_name("udp")
    dl = start_node(influx_config(tmp_path, server, UDP_DATABASE, protocol="udp"))
    influx = dl.destination("influx")
    try:
        dl.log(topic, points(0, 50))
        dl.flush(timeout=30)
        deadline = time.monotonic() + 15
        while count(dl, topic) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count(dl, topic) == 50
        assert lane(dl, topic)["delivered"] == 50
    finally:
        influx.post_query(f'DROP MEASUREMENT "{topic}"')


def test_ping_query_and_post_query(
    tmp_path: Path, start_node: StartNode, server: tuple[str, int, int]
) -> None:
    name = unique_name("admin")
    dl = start_node(influx_config(tmp_path, server, name))
    influx = dl.destination("influx")
    assert influx.ping() is True
    influx.post_query(f'CREATE DATABASE "{name}"')
    try:
        influx.post_query(f'CREATE RETENTION POLICY "week" ON "{name}" DURATION 7d REPLICATION 1')
        series = influx.query(f'SHOW RETENTION POLICIES ON "{name}"')
        policies = {row[0]: row for row in series[0]["values"]}
        assert set(policies) == {"autogen", "week"}
        assert policies["week"][1] == "168h0m0s"
        influx.post_query(f'DROP RETENTION POLICY "week" ON "{name}"')
        series = influx.query(f'SHOW RETENTION POLICIES ON "{name}"')
        assert [row[0] for row in series[0]["values"]] == ["autogen"]
    finally:
        influx.post_query(f'DROP DATABASE "{name}"')
    databases = influx.query("SHOW DATABASES")[0]["values"]
    assert [name] not in databases


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_server_restarted_mid_run_loses_nothing(
    tmp_path: Path, start_node: StartNode, server: tuple[str, int, int], database: str
) -> None:
    status = subprocess.run(
        ["bash", str(RESTART_SCRIPT), "status"], check=False, timeout=30, capture_output=True
    )
    if status.returncode != 0:
        unavailable(f"the InfluxDB server was not started by .ci/start-influxdb: {status.stdout!r}")
    topic = unique_name("restart")
    dl = start_node(
        influx_config(
            tmp_path,
            server,
            database,
            timeout=2.0,
            retry={"max_attempts": 100, "initial_delay": 0.1, "max_delay": 1.0, "jitter": 0.1},
        )
    )
    errors: list[BaseException] = []

    def bounce() -> None:
        try:
            influx_restart("stop")  # SIGTERM, wait for the exit
            time.sleep(2)
            influx_restart("start")  # same config and data directory
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    restarter = threading.Thread(target=bounce, daemon=True)
    try:
        for chunk in range(40):  # 20,000 rows in chunks of 500, over about 4 s
            if chunk == 10:
                restarter.start()
            dl.log(topic, points(chunk * 500, 500))
            time.sleep(0.1)
        restarter.join(90)
        assert not errors, f"restarting InfluxDB failed: {errors[0]!r}"
        dl.flush(timeout=90)
        assert count(dl, topic) == 20_000
        stats = lane(dl, topic)
        assert stats["failed"] >= 1, "the restart did not make any attempt fail"
        assert stats["dead_lettered"] == 0
        assert stats["delivered"] == 20_000
    finally:
        restarter.join(90)
        if not port_open(server[0], server[1]):
            influx_restart("start")
        wait_influx_ready(60)


def test_field_type_conflict_dead_letters_only_the_conflicting_rows(
    tmp_path: Path, start_node: StartNode, server: tuple[str, int, int], database: str
) -> None:
    topic = unique_name("typed")
    dl = start_node(influx_config(tmp_path, server, database))
    dl.log(topic, points(0, 10))  # "v" is a float field from now on
    dl.flush(timeout=30)
    rows = points(10, 40)
    bad_times = {13, 30, 49}
    for row in rows:
        if row["time"] in bad_times:
            row["v"] = f"text {row['time']}"
    dl.log(topic, rows)
    dl.flush(timeout=30)

    assert count(dl, topic) == 47
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters(topic, "influx"))
    dead = [row for letter in letters for row in letter.rows]
    assert sorted(row["time"] for row in dead) == sorted(bad_times)
    assert all("field type conflict" in letter.reason for letter in letters)
    stats = lane(dl, topic)
    assert stats["delivered"] == 47
    assert stats["dead_lettered"] == 3
