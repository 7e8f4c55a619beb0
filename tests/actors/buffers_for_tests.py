"""DataBuffer subclasses for the BufferActor tests.

They live in an importable module because on ``multiprocTCPBase`` the
BufferActors import them in other processes; for the same reason they record
what happens to files (JSON lines) that the tests read back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from datalogger.buffer import DataBuffer


def read_events(directory: str | os.PathLike[str], name: str) -> list[dict[str, Any]]:
    """The events recorded in ``directory/name.jsonl``, oldest first."""
    path = Path(directory) / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RecordingBuffer(DataBuffer):
    """Records every handle_flush call (key, data, meta, wall time) to ``flushes.jsonl``."""

    partitions = 2
    interval = 10.0

    def __init__(self, record_dir: str | os.PathLike[str], **settings: Any) -> None:
        super().__init__(**settings)
        self.record_dir = os.fspath(record_dir)

    def record(self, name: str, **event: Any) -> None:
        """Append one event to ``record_dir/name.jsonl``."""
        event["at"] = time.time()
        event["pid"] = os.getpid()
        with open(Path(self.record_dir) / f"{name}.jsonl", "a") as handle:
            handle.write(json.dumps(event) + "\n")

    def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
        """Record the flush; return ``("ok", key, len(data))``."""
        self.record("flushes", key=key, data=data, meta=meta)
        return ["ok", key, len(data)]

    def handle_error(self, key: Any, data: list[Any], meta: Any = None) -> None:
        """Record the data given up on."""
        self.record("errors", key=key, data=data, meta=meta)


class FlakyBuffer(RecordingBuffer):
    """Fails the first ``failures`` attempts of each partition, then records flushes."""

    def __init__(self, record_dir: str | os.PathLike[str], failures: int, **settings: Any) -> None:
        super().__init__(record_dir, **settings)
        self.failures = failures

    def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
        """Record the attempt; raise while failures are left."""
        self.record("attempts", key=key, data=data)
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database is down")
        return super().handle_flush(key, data, meta)


class BrokenBuffer(RecordingBuffer):
    """handle_flush always fails."""

    def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
        """Record the attempt, then raise."""
        self.record("attempts", key=key, data=data)
        raise ConnectionError("database is down")
