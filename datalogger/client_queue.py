"""The bounded in-process queue of a handle, and its counters: the policy, without threads or I/O.

Callers put rows (``put``, ``put_one``) and events (``put_event``); the
handle's sender (:mod:`datalogger.batching`) takes chunks, reports how each
ended, moves rows to and from the spool, and waits on :attr:`ClientQueue.cond`.
Every method holds the queue's lock for a few dictionary and list operations
only, never across I/O.

Rows are counted per *key*: the topic for this process's rows, ``("adopted",
topic)`` for rows found in a spool left by another process. Rows of a key
settle (sent, or dropped) in the order they were offered, so :meth:`behind`
can tell a ``flush()`` when every row offered before it has settled.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from .messages import PubSubBroadcast

__all__ = ["MAX_CHUNK_ROWS", "MAX_EVENTS_PER_SEND", "ClientQueue"]

MAX_CHUNK_ROWS = 1000
"""Most rows of one topic sent as one chunk (pickling a chunk holds the interpreter lock the
application's threads wait for: about 1 ms per 1,000 rows)."""
MAX_EVENTS_PER_SEND = 500
"""Most broadcast events handed to the PubSub actor in one round; as many waiting are sent
at once, without waiting for more to gather (a whole chunk of events)."""

Rows = list[Any]


class ClientQueue:
    """Rows per topic and events, at most ``buffer_rows`` of each in memory."""

    def __init__(self, buffer_rows: int) -> None:
        self.buffer_rows = int(buffer_rows)
        self.cond = threading.Condition(threading.Lock())
        """Guards everything here; the sender waits on it for work."""
        self.rows: dict[str, Rows] = {}
        self.queued = 0
        """Rows in memory, chunks being sent included."""
        self.inflight: set[str] = set()
        """Topics with a chunk being sent (their other rows wait behind it)."""
        self.events: deque[PubSubBroadcast] = deque()
        self.events_inflight = 0
        self.spooled = 0
        """Rows waiting in the spools."""
        self.closing = False
        self.offered: dict[Any, int] = {}
        self.settled: dict[Any, int] = {}
        self.sent = 0
        self.dropped = 0
        self.spooled_total = 0
        self.events_sent = 0
        self.events_dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.spool_error: str | None = None

    # ------------------------------------------------------------------ callers
    def put(self, topic: str, rows: Rows) -> bool:
        """Queue ``rows``; False, counting nothing, when memory is full (the caller decides)."""
        count = len(rows)
        with self.cond:
            if self.queued + count > self.buffer_rows:
                return False
            queue = self.rows.get(topic)
            if queue is None:
                self.rows[topic] = queue = []
            queue.extend(rows)
            self.queued += count
            self.offered[topic] = self.offered.get(topic, 0) + count
            if self.queued == count or len(queue) >= MAX_CHUNK_ROWS:
                self.cond.notify()
        return True

    def put_one(self, topic: str, row: Any) -> bool:
        """:meth:`put` of one row, without a list."""
        with self.cond:
            if self.queued >= self.buffer_rows:
                return False
            queue = self.rows.get(topic)
            if queue is None:
                self.rows[topic] = queue = []
            queue.append(row)
            self.queued += 1
            self.offered[topic] = self.offered.get(topic, 0) + 1
            if self.queued == 1 or len(queue) >= MAX_CHUNK_ROWS:
                self.cond.notify()
        return True

    def put_event(self, message: PubSubBroadcast) -> bool:
        """Queue an event; False (counted in ``events_dropped``) when ``buffer_rows`` wait already."""
        with self.cond:
            if len(self.events) >= self.buffer_rows:
                self.events_dropped += 1
                return False
            self.events.append(message)
            if len(self.events) == 1 or len(self.events) == MAX_EVENTS_PER_SEND:
                self.cond.notify()
        return True

    def refuse(self, count: int) -> None:
        """Count rows a caller could not queue (memory full, no room in a spool either)."""
        with self.cond:
            self.dropped += count

    # ------------------------------------------------------------------ flush
    def snapshot(self) -> dict[Any, int]:
        """Rows offered so far, per key (what a ``flush()`` waits for)."""
        with self.cond:
            return dict(self.offered)

    def behind(self, target: dict[Any, int]) -> int:
        """Rows of the ``target`` snapshot not settled yet, plus events waiting (hold the lock)."""
        rows = sum(max(0, n - self.settled.get(key, 0)) for key, n in target.items())
        return rows + len(self.events) + self.events_inflight

    def _settle(self, key: Any, count: int) -> None:
        self.settled[key] = self.settled.get(key, 0) + count

    # ------------------------------------------------------------------ the sender
    def has_work(self) -> bool:
        """Rows or events to send (hold the lock)."""
        return bool(self.rows) or bool(self.events) or self.spooled > 0

    def has_full_chunk(self) -> bool:
        """A topic has a whole chunk waiting, or a round's worth of events wait (hold the lock)."""
        if len(self.events) >= MAX_EVENTS_PER_SEND:
            return True
        return any(len(rows) >= MAX_CHUNK_ROWS for rows in self.rows.values())

    def take(self, waits_behind_spool: Any) -> list[tuple[str, Rows]]:
        """A chunk of each topic not being sent and with nothing older in a spool."""
        chunks = []
        with self.cond:
            for topic in list(self.rows):
                if topic in self.inflight or waits_behind_spool(topic):
                    continue
                rows = self.rows[topic]
                chunk, rest = rows[:MAX_CHUNK_ROWS], rows[MAX_CHUNK_ROWS:]
                if rest:
                    self.rows[topic] = rest
                else:
                    del self.rows[topic]
                self.inflight.add(topic)
                chunks.append((topic, chunk))
        return chunks

    def give_back(self, chunks: list[tuple[str, Rows]]) -> None:
        """Chunks not sent go back in front of what was queued since (order per topic kept)."""
        with self.cond:
            for topic, rows in chunks:
                self.rows[topic] = rows + self.rows.get(topic, [])
                self.inflight.discard(topic)

    def finished(self, topic: str, count: int, sent: bool, error: str | None = None) -> None:
        """A chunk taken from memory ended: sent, or refused by the node (dropped)."""
        with self.cond:
            self.inflight.discard(topic)
            self.queued -= count
            self._ended(topic, count, sent, error)
            self.cond.notify_all()

    def finished_spooled(
        self, key: Any, count: int, popped: int, sent: bool, error: str | None = None
    ) -> None:
        """A chunk of a spool ended (sent, or refused): ``popped`` rows left the spool."""
        with self.cond:
            self.spooled -= popped
            self._ended(key, count, sent, error)
            self.cond.notify_all()

    def _ended(self, key: Any, count: int, sent: bool, error: str | None) -> None:
        self._settle(key, count)
        if sent:
            self.sent += count
        else:
            self.dropped += count
            self.errors += 1
            self.last_error = error

    def lost(self, topic: str, count: int, error: str) -> None:
        """Rows in memory that could not be built (a lazy row that raised): dropped."""
        with self.cond:
            self.dropped += count
            self.errors += count
            self.queued -= count
            self._settle(topic, count)
            self.last_error = error

    def take_for_spool(self) -> dict[str, Rows]:
        """The rows of every topic not being sent, out of memory (still counted as queued)."""
        with self.cond:
            taken = {t: rows for t, rows in self.rows.items() if t not in self.inflight}
            for topic in taken:
                del self.rows[topic]
        return taken

    def moved_to_spool(self, count: int) -> None:
        """Rows taken with :meth:`take_for_spool` are in the spool now."""
        with self.cond:
            self.queued -= count
            self.spooled += count
            self.spooled_total += count

    def found_in_spool(self, key: Any, count: int) -> None:
        """Rows found in a spool (left by an earlier run): offered, to settle as they are sent."""
        with self.cond:
            self.offered[key] = self.offered.get(key, 0) + count
            self.spooled += count

    def take_events(self, most: int) -> list[PubSubBroadcast]:
        """Up to ``most`` events, oldest first (counted as in flight until :meth:`events_ended`)."""
        with self.cond:
            batch = [self.events.popleft() for _ in range(min(most, len(self.events)))]
            self.events_inflight = len(batch)
        return batch

    def events_ended(self, sent: int, dropped: int, left: list[PubSubBroadcast]) -> None:
        """Of the events taken, ``sent`` went, ``dropped`` are lost, ``left`` go back in front."""
        with self.cond:
            self.events_sent += sent
            self.events_dropped += dropped
            self.events.extendleft(reversed(left))
            self.events_inflight = 0
            self.cond.notify_all()

    def error(self, text: str, *, spool: bool = False, count: bool = True) -> None:
        """Record an error (``spool``: of the spool, kept apart from send errors)."""
        with self.cond:
            if spool:
                self.spool_error = text
            else:
                self.last_error = text
                if count:
                    self.errors += 1

    def drop_remaining(self) -> tuple[int, int]:
        """The sender stops: rows and events still in memory are dropped; (rows, events)."""
        with self.cond:
            rows, events = self.queued, len(self.events)
            self.dropped += rows
            for topic, waiting in self.rows.items():
                self._settle(topic, len(waiting))
            self.rows.clear()
            self.queued = 0
            self.events_dropped += events
            self.events.clear()
            self.cond.notify_all()
        return rows, events

    def counters(self) -> dict[str, Any]:
        """``queued``, ``spooled``, ``sent``, ``dropped``, ``spooled_total``, ``events_*``, errors."""
        with self.cond:
            return {
                "queued": self.queued,
                "spooled": self.spooled,
                "sent": self.sent,
                "dropped": self.dropped,
                "spooled_total": self.spooled_total,
                "events_queued": len(self.events),
                "events_sent": self.events_sent,
                "events_dropped": self.events_dropped,
                "errors": self.errors,
                "last_error": self.last_error,
                "spool_error": self.spool_error,
            }
