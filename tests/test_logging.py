"""DataLoggerHandler: records become rows; the application is never blocked nor raised into."""

from __future__ import annotations

import gc
import logging
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.logging import DataLoggerHandler
from tests.conftest import recorder
from tests.dests import rows_in

CALLS = 10_000
MAX_CALL_SECONDS = 0.05
"""No single log call may take longer: the handler must never wait on the node."""
MAX_MEAN_SECONDS = 0.001
"""A log call costs microseconds (a dict and a queue append), not a round trip to the node."""
FAST = {"initial_delay": 0.05, "max_delay": 0.2, "jitter": 0.0, "max_attempts": 1000}


class Capture:
    """A stand-in handle that keeps what ``log_nowait`` was given."""

    def __init__(self, action: Any = None) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.action = action

    def log_nowait(self, topic: str, row: dict[str, Any]) -> None:
        if self.action is not None:
            self.action()
        self.rows.append((topic, row))


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    """A logger of the 'application', left without handlers after the test."""
    logger = logging.getLogger("app.test_logging")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    saved, logger.handlers = logger.handlers, []  # pytest's capture handlers, when present
    yield logger
    logger.handlers = saved


def timed_calls(logger: logging.Logger, count: int) -> tuple[float, float]:
    """Log ``count`` records; return (slowest call, total) in seconds.

    The garbage collector is paused meanwhile: a full collection of the test
    process (tens of milliseconds after many tests) is the interpreter's pause,
    not the handler waiting.
    """
    slowest = total = 0.0
    gc.disable()
    try:
        for i in range(count):
            started = time.perf_counter()
            logger.warning("event %d", i, extra={"n": i})
            took = time.perf_counter() - started
            slowest = max(slowest, took)
            total += took
    finally:
        gc.enable()
    return slowest, total


def test_record_becomes_a_row_with_extra_fields_and_traceback(app_logger: logging.Logger) -> None:
    capture = Capture()
    handler = DataLoggerHandler(topic="app_logs", handle=capture)
    app_logger.addHandler(handler)
    before = datetime.now(UTC)
    app_logger.info("user %s logged in", "ann", extra={"user": "ann", "obj": object()})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        app_logger.exception("failed")
    [(topic, row), (_, failed)] = capture.rows
    assert topic == "app_logs"
    assert row["message"] == "user ann logged in"
    assert (row["level"], row["logger"], row["user"]) == ("INFO", "app.test_logging", "ann")
    assert "obj" not in row, "not msgpack-serialisable: left out"
    assert row["module"] == "test_logging" and isinstance(row["lineno"], int)
    assert before <= row["time"] <= datetime.now(UTC) and row["time"].tzinfo is UTC
    assert "exc_info" not in row
    assert "ZeroDivisionError: division by zero" in failed["exc_info"]
    assert handler.shipped == 2 and handler.dropped == 0


def test_never_raises_and_ignores_its_own_loggers(app_logger: logging.Logger) -> None:
    def fail() -> None:
        raise RuntimeError("queue exploded")

    handler = DataLoggerHandler(handle=Capture(fail))
    app_logger.addHandler(handler)
    app_logger.error("one")
    assert handler.last_error == "RuntimeError: queue exploded"
    bad = logging.LogRecord("app", logging.ERROR, __file__, 1, "bad format %d", ("x",), None)
    handler.handle(bad)  # a formatting error is counted, not raised
    assert (handler.dropped, handler.errors) == (2, 2)
    assert handler.last_error == "TypeError: %d format: a real number is required, not str"

    ok = Capture()
    handler = DataLoggerHandler(handle=ok)
    logging.getLogger("datalogger.anything").addHandler(handler)
    try:
        logging.getLogger("datalogger.anything").warning("internal")
    finally:
        logging.getLogger("datalogger.anything").removeHandler(handler)
    assert ok.rows == []


def test_a_record_logged_while_shipping_is_dropped_not_recursed(
    app_logger: logging.Logger,
) -> None:
    capture = Capture(lambda: app_logger.warning("logged from inside log_nowait"))
    handler = DataLoggerHandler(handle=capture)
    app_logger.addHandler(handler)
    app_logger.warning("outer")
    assert [row["message"] for _, row in capture.rows] == ["outer"]
    assert handler.dropped == 1


def test_records_ship_to_sqlite(
    tmp_path: Path, start_node: Any, app_logger: logging.Logger
) -> None:
    db = tmp_path / "logs.db"
    dl = start_node({"data_dir": str(tmp_path / "state"),
                     "destinations": {"db": {"type": "sqlite", "path": str(db)}}})
    handler = DataLoggerHandler(topic="logs", handle=dl, level=logging.INFO)
    app_logger.addHandler(handler)
    for i in range(500):
        app_logger.info("request %d", i, extra={"status": 200 + i % 2})
    app_logger.debug("below the handler's level")
    dl.flush(timeout=30)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message, level, status, time FROM logs").fetchall()
    assert sorted(r[0] for r in rows) == sorted(f"request {i}" for i in range(500))
    assert {r[1] for r in rows} == {"INFO"}
    assert sum(r[2] for r in rows) == 500 * 200 + 250
    assert datetime.fromisoformat(rows[0][3]).tzinfo is not None
    assert handler.shipped == 500 and handler.dropped == 0


def test_destination_down_never_blocks_then_rows_arrive(
    tmp_path: Path, start_node: Any, app_logger: logging.Logger
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    dl = start_node({"data_dir": str(tmp_path / "state"),
                     "destinations": {"rec": recorder(out, "Switchable", retry=FAST)}})
    handler = DataLoggerHandler(topic="logs", handle=dl)
    app_logger.addHandler(handler)
    slowest, total = timed_calls(app_logger, CALLS)
    assert slowest < MAX_CALL_SECONDS
    assert total < CALLS * MAX_MEAN_SECONDS
    assert rows_in(str(out), "logs") == []
    (out / "down").unlink()
    dl.flush(timeout=60)
    assert sorted(r["n"] for r in rows_in(str(out), "logs")) == list(range(CALLS))
    assert handler.dropped == 0


def test_no_node_never_blocks_then_a_started_node_gets_rows(
    tmp_path: Path, start_node: Any, app_logger: logging.Logger
) -> None:
    with pytest.raises(datalogger.NotRunning):
        datalogger.get_default()
    handler = DataLoggerHandler(topic="logs")  # the default instance, looked up per record
    app_logger.addHandler(handler)
    slowest, total = timed_calls(app_logger, CALLS)  # before any node is started
    assert slowest < MAX_CALL_SECONDS and total < CALLS * MAX_MEAN_SECONDS
    assert (handler.dropped, handler.errors) == (CALLS, 0)

    out = tmp_path / "out"
    dl = start_node({"data_dir": str(tmp_path / "state"),
                     "destinations": {"rec": recorder(out)}})
    app_logger.warning("after start", extra={"n": -1})
    dl.flush(timeout=30)
    assert [r["message"] for r in rows_in(str(out), "logs")] == ["after start"]

    dl.shutdown()
    slowest, total = timed_calls(app_logger, CALLS)  # after the node is gone
    assert slowest < MAX_CALL_SECONDS and total < CALLS * MAX_MEAN_SECONDS
    assert handler.dropped == 2 * CALLS and handler.shipped == 1


@pytest.mark.slow
def test_records_logged_through_a_node_restart_all_arrive(
    tmp_path: Path, app_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler connects by itself (as from dictConfig); the node is SIGKILLed and restarted."""
    import threading

    from tests.node_process import NodeProcess, wait_for

    node = NodeProcess(tmp_path).start()
    handler = DataLoggerHandler(topic="logs", connect={"admin_port": node.port})
    app_logger.addHandler(handler)
    stop = threading.Event()
    logged = 0
    latencies: list[float] = []

    def log_forever() -> None:
        nonlocal logged
        while not stop.is_set():
            started = time.perf_counter()
            app_logger.warning("event %d", logged, extra={"n": logged})
            latencies.append(time.perf_counter() - started)
            logged += 1
            time.sleep(0.001)

    thread = threading.Thread(target=log_forever, daemon=True)
    try:
        thread.start()
        assert wait_for(lambda: len(node.rows("logs")) > 50, 10)
        node.kill()
        time.sleep(1.0)
        node.start()
        time.sleep(0.3)
        stop.set()
        thread.join(10)
        handler.datalogger.flush(timeout=30)
        assert sorted({row["n"] for row in node.rows("logs")}) == list(range(logged))
        assert handler.dropped == 0 and handler.shipped == logged
        latencies.sort()
        assert latencies[-1] < 1.0  # no call waits for the node (the outage lasts more)
        assert latencies[int(len(latencies) * 0.99)] < 0.01  # a queue put (10 ms: a loaded machine)
    finally:
        stop.set()
        app_logger.removeHandler(handler)
        handler.close()
        node.stop()
