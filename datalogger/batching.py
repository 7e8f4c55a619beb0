"""Client-side batching for ``DataLogger.log_nowait``.

``log_nowait(topic, row)`` checks the row and queues it in the caller's
process, then returns: no round trip to the node. A background thread sends
each topic's queued rows as one chunk when ``max_rows`` have gathered or
``interval`` seconds have passed, whichever is first.

What may be lost: rows queued but not yet accepted by the node are in this
process's memory only. They are lost if this process dies before
:meth:`ClientBatcher.flush` (called by ``DataLogger.flush``) has returned;
once it has, they are in the node's write-ahead log. The queue is bounded by
``max_queued`` rows: beyond it, new rows are dropped, counted in ``dropped``
and reported with a warning, so the caller never blocks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .exceptions import DataLoggerError, DeliveryTimeout, InvalidInput
from .validation import normalize_data, validate_topic

__all__ = ["ClientBatcher"]

log = logging.getLogger("datalogger.batching")


class ClientBatcher:
    """Queues rows per topic and sends them in chunks from a background thread."""

    def __init__(
        self,
        send: Callable[[str, list[dict[str, Any]]], Any],
        *,
        max_rows: int = 1000,
        interval: float = 0.05,
        max_queued: int = 200_000,
    ) -> None:
        self._send = send
        self.max_rows = max_rows
        self.interval = interval
        self.max_queued = max_queued
        self._queues: dict[str, list[dict[str, Any]]] = {}
        self._queued = 0
        self._sending = 0
        self._lock = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.sent = 0
        self.errors = 0
        self.last_error: str | None = None
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="datalogger-batcher", daemon=True)
        self._thread.start()

    def add(self, topic: str, data: Any) -> None:
        """Queue a row or rows for ``topic``; never blocks.

        Raises:
            InvalidTopic, InvalidData: the input is bad (checked here, in the caller).
        """
        topic = validate_topic(topic)
        rows = normalize_data(data)
        with self._lock:
            if self._closed:
                raise DataLoggerError("this datalogger handle is closed")
            if self._queued + len(rows) > self.max_queued:
                self.dropped += len(rows)
                now = time.monotonic()
                if now - self._last_warning > 10:
                    self._last_warning = now
                    log.warning(
                        "log_nowait queue full (%d rows): %d rows dropped so far", self._queued, self.dropped
                    )
                return
            queue = self._queues.setdefault(topic, [])
            queue.extend(rows)
            self._queued += len(rows)
            if len(queue) >= self.max_rows:
                self._lock.notify_all()

    def _take(self) -> list[tuple[str, list[dict[str, Any]]]]:
        chunks = []
        for topic, rows in self._queues.items():
            for start in range(0, len(rows), self.max_rows):
                chunks.append((topic, rows[start : start + self.max_rows]))
        self._queues = {}
        return chunks

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closed and not any(len(q) >= self.max_rows for q in self._queues.values()):
                    self._lock.wait(self.interval)
                chunks = self._take()
                self._sending += sum(len(rows) for _, rows in chunks)
                closed = self._closed
            for topic, rows in chunks:
                self._deliver(topic, rows)
            with self._lock:
                self._lock.notify_all()
            if closed and not chunks:
                return

    def _deliver(self, topic: str, rows: list[dict[str, Any]]) -> None:
        delay = 0.05
        while True:
            try:
                self._send(topic, rows)
                with self._lock:
                    self.sent += len(rows)
                    self._queued -= len(rows)
                    self._sending -= len(rows)
                return
            except InvalidInput as exc:  # checked in add(): only a node-side refusal gets here
                with self._lock:
                    self.errors += 1
                    self.dropped += len(rows)
                    self.last_error = str(exc)
                    self._queued -= len(rows)
                    self._sending -= len(rows)
                log.error("log_nowait: %d rows for %s refused: %s", len(rows), topic, exc)
                return
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                    self.last_error = str(exc)
                    if self._closed and self._give_up:
                        self.dropped += len(rows)
                        self._queued -= len(rows)
                        self._sending -= len(rows)
                        return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    _give_up = False

    def pending(self) -> int:
        """Rows queued or being sent."""
        with self._lock:
            return self._queued

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every row queued so far has been accepted by the node.

        Raises:
            DeliveryTimeout: rows are still queued after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._lock.notify_all()
            while self._queued > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryTimeout(f"log_nowait: {self._queued} rows not accepted after {timeout:g}s")
                self._lock.notify_all()
                self._lock.wait(min(remaining, self.interval))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (waiting up to ``timeout``), then stop the thread."""
        try:
            self.flush(timeout)
        except DeliveryTimeout:
            log.error("log_nowait: %d rows could not be sent before closing", self.pending())
        with self._lock:
            self._closed = True
            self._give_up = True
            self._lock.notify_all()
        self._thread.join(timeout)
