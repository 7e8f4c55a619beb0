"""Destinations used by the tests. They live in an importable module because
multiprocTCPBase builds them in other processes; they record to files so the
test process can see what happened."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from datalogger import Destination, PermanentError


def _append(path: str, record: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def _write_atomic(path: str, text: str) -> None:
    """Write a file so a reader never sees it half-written."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def read_lines(path: str) -> list[Any]:
    """Records appended by ``_append``."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rows_in(directory: str, topic: str) -> list[dict[str, Any]]:
    """Rows a recording destination stored for ``topic``."""
    return [row for chunk in read_lines(os.path.join(directory, f"{topic}.jsonl")) for row in chunk["rows"]]


class Recorder(Destination):
    """Records each chunk as one JSON line per topic; optionally slow for one topic."""

    def __init__(self, *, directory: str, slow_topic: str | None = None, delay: float = 0.0) -> None:
        self.directory = directory
        self.slow_topic = slow_topic
        self.delay = delay

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        if topic == self.slow_topic:
            time.sleep(self.delay)
        _append(
            os.path.join(self.directory, f"{topic}.jsonl"),
            {"at": time.time(), "pid": os.getpid(), "rows": data},
        )
        return len(data)


class Flaky(Recorder):
    """Fails the first ``failures`` attempts (counted on disk, across restarts), then records."""

    def __init__(self, *, directory: str, failures: int = 3) -> None:
        super().__init__(directory=directory)
        self.failures = failures

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        counter = os.path.join(self.directory, f"{topic}.attempts")
        _append(counter, time.time())
        if len(read_lines(counter)) <= self.failures:
            raise ConnectionError(f"attempt {len(read_lines(counter))} refused")
        return super().send_data(topic, data)


class Switchable(Recorder):
    """Down (raising a transient error) while ``<directory>/down`` exists; records otherwise.

    ``<directory>/<topic>.down`` takes down one topic only. Rows with
    ``"bad": true`` are always rejected as permanent errors.
    """

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        if os.path.exists(os.path.join(self.directory, "down")) or os.path.exists(
            os.path.join(self.directory, f"{topic}.down")
        ):
            raise ConnectionError("destination is down")
        bad = [row for row in data if row.get("bad")]
        good = [row for row in data if not row.get("bad")]
        if good:
            super().send_data(topic, good)
        if bad:
            raise PermanentError(f"{len(bad)} rows rejected", rows=bad)
        return len(good)


class Callbacks(Recorder):
    """Records on_success/on_error calls; raises for rows with ``"fail": true``."""

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> dict[str, Any]:
        if any(row.get("fail") for row in data):
            raise PermanentError("row marked fail")
        super().send_data(topic, data)
        return {"stored": len(data), "pid": os.getpid()}

    def on_success(self, result: Any, topic: str, data: list[dict[str, Any]]) -> None:
        _append(
            os.path.join(self.directory, "callbacks.jsonl"),
            {"kind": "success", "result": result, "topic": topic, "data": data},
        )

    def on_error(self, reason: Any, topic: str, data: list[dict[str, Any]]) -> None:
        _append(
            os.path.join(self.directory, "callbacks.jsonl"),
            {
                "kind": "error",
                "reason": str(reason),
                "type": type(reason).__name__,
                "topic": topic,
                "data": data,
            },
        )


class CrashOnMarker(Recorder):
    """Kills its own process (as SIGKILL would) on the first chunk holding ``{"crash": true}``."""

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        marker = os.path.join(self.directory, "crashed")
        if any(row.get("crash") for row in data) and not os.path.exists(marker):
            _append(marker, os.getpid())
            os._exit(9)
        return super().send_data(topic, data)


class RaisesOnce(Recorder):
    """Raises RuntimeError on the first chunk holding ``{"boom": true}``, then works."""

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        marker = os.path.join(self.directory, "raised")
        if any(row.get("boom") for row in data) and not os.path.exists(marker):
            _append(marker, os.getpid())
            raise RuntimeError("boom")
        return super().send_data(topic, data)


class Pid(Recorder):
    """Records, and writes its worker's pid to ``<directory>/<topic>.pid`` when built."""

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        os.makedirs(self.directory, exist_ok=True)
        _write_atomic(os.path.join(self.directory, f"{topic}.pid"), str(os.getpid()))
        return super().send_data(topic, data)


class NeedsOption(Destination):
    """A destination with a required option, for config validation tests."""

    def __init__(self, *, url: str, retries: int = 1) -> None:
        self.url = url

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        return len(data)


class PidSqlite(Destination):
    """The SQLite destination, writing its worker's pid to ``<pid_dir>/<topic>.pid``."""

    def __init__(self, *, path: str, pid_dir: str, delay: float = 0.0) -> None:
        from datalogger.destinations.sqlite import SqliteDestination

        self.inner = SqliteDestination(path=path)
        self.pid_dir = pid_dir
        self.delay = delay

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        os.makedirs(self.pid_dir, exist_ok=True)
        _write_atomic(os.path.join(self.pid_dir, f"{topic}.pid"), str(os.getpid()))
        if self.delay:
            time.sleep(self.delay)
        return self.inner.send_data(topic, data)

    def close(self) -> None:
        self.inner.close()


class RefusesMarked(Recorder):
    """Refuses a whole chunk, as one transaction would, when any row has ``"bad": true``;
    the framework has to find those rows itself."""

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        _append(os.path.join(self.directory, f"{topic}.calls"), len(data))
        bad = [row for row in data if row.get("bad")]
        if bad:
            raise PermanentError(f"row {bad[0]['n']} refused")
        return super().send_data(topic, data)
