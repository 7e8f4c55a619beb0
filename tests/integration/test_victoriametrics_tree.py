"""The InfluxDB destination's ``protocol = "v2"`` through the whole actor tree, on VictoriaMetrics.

Rows are counted in VictoriaMetrics (``/api/v1/export``). The tests that count
write requests or stop the server use a private VictoriaMetrics of their own
(own port, own data dir), never the shared one of ``.ci/start-victoriametrics``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.deadletters import DeadLetterStore
from tests.conftest import free_port
from tests.services import unique_name, victoriametrics_or_skip
from tests.victoria import PrivateVictoriaMetrics, samples, series_of, write_counters

pytestmark = pytest.mark.integration

StartNode = Callable[..., datalogger.DataLogger]
BASE_MS = 1_767_225_600_000
"""2026-01-01 in milliseconds."""


@pytest.fixture
def private_vm(tmp_path: Path) -> Iterator[PrivateVictoriaMetrics]:
    """A VictoriaMetrics server of this test only."""
    server = PrivateVictoriaMetrics(free_port(), tmp_path / "vm")
    try:
        yield server
    finally:
        server.close()


def v2_config(tmp_path: Path, url: str, **options: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "vm": {
                "type": "influxdb",
                "protocol": "v2",
                "url": url,
                "org": "datalogger",
                "bucket": "test",
                "precision": "ms",
                "tags": ["host"],
                **options,
            }
        },
    }


def points(start: int, n: int) -> list[dict[str, Any]]:
    """Rows with distinct millisecond timestamps and one field ``v``."""
    return [{"time": BASE_MS + i, "host": f"h{i % 5}", "v": i * 0.25} for i in range(start, start + n)]


def lane(dl: datalogger.DataLogger, topic: str) -> dict[str, Any]:
    stats: dict[str, Any] = dl.stats()["topics"][topic]["vm"]
    return stats


@pytest.mark.timeout(120)
def test_buffered_chunks_go_in_batches_of_batch_size(
    tmp_path: Path, start_node: StartNode, private_vm: PrivateVictoriaMetrics
) -> None:
    topic = unique_name("batch")
    dl = start_node(
        v2_config(tmp_path, private_vm.url, batch_size=2_000, buffer={"max_size": 5_000, "interval": 0.2})
    )
    before, _ = write_counters(private_vm.url)
    for chunk in range(40):
        dl.log(topic, points(chunk * 500, 500))
    dl.flush(timeout=60)

    assert samples(private_vm.url, topic, expect=20_000) == 20_000
    requests = write_counters(private_vm.url, samples_at_least=20_000)[0] - before
    assert 10 <= requests < 40, requests  # none over batch_size lines; chunks merged
    stats = lane(dl, topic)
    assert (stats["delivered"], stats["dead_lettered"]) == (20_000, 0)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_server_stopped_and_started_mid_run_loses_nothing(
    tmp_path: Path, start_node: StartNode, private_vm: PrivateVictoriaMetrics
) -> None:
    topic = unique_name("restart")
    dl = start_node(
        v2_config(
            tmp_path,
            private_vm.url,
            timeout=2.0,
            retry={"max_attempts": 100, "initial_delay": 0.1, "max_delay": 1.0, "jitter": 0.1},
        )
    )
    errors: list[BaseException] = []

    def bounce() -> None:
        try:
            private_vm.stop()  # SIGTERM, wait for the exit
            time.sleep(2)
            private_vm.start()  # same port and data
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    restarter = threading.Thread(target=bounce, daemon=True)
    for chunk in range(40):  # 20,000 rows in chunks of 500, over about 4 s
        if chunk == 10:
            restarter.start()
        dl.log(topic, points(chunk * 500, 500))
        time.sleep(0.1)
    restarter.join(90)
    assert not errors, f"restarting VictoriaMetrics failed: {errors[0]!r}"
    dl.flush(timeout=90)

    assert samples(private_vm.url, topic, expect=20_000) == 20_000
    stats = lane(dl, topic)
    assert stats["failed"] >= 1, "the stop did not make any attempt fail"
    assert (stats["delivered"], stats["dead_lettered"]) == (20_000, 0)


@pytest.mark.timeout(60)
def test_rows_that_cannot_be_written_are_dead_lettered_and_the_rest_stored(
    tmp_path: Path, start_node: StartNode
) -> None:
    url = victoriametrics_or_skip()
    topic = unique_name("bad")
    dl = start_node(v2_config(tmp_path, url))
    rows: list[dict[str, Any]] = points(0, 20)
    rows[3]["v"] = 2**63  # beyond a signed 64-bit field (a dict would be written as JSON text)
    rows[11] = {"time": BASE_MS + 11, "host": "h1"}  # no field
    dl.log(topic, rows)
    dl.flush(timeout=30)

    stored = series_of(url, topic, "v", expect=18)
    assert [t - BASE_MS for t, _, _ in stored] == [i for i in range(20) if i not in (3, 11)]
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters(topic, "vm"))
    assert sorted(row["time"] - BASE_MS for letter in letters for row in letter.rows) == [3, 11]
    stats = lane(dl, topic)
    assert (stats["delivered"], stats["dead_lettered"]) == (18, 2)
