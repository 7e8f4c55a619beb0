"""The bounded in-process queue of a handle, and its counters: the policy, without threads or I/O.

Callers put rows (``put``, ``put_one``) and events (``put_event``); the
handle's sender (:mod:`datalogger.batching`) takes chunks, reports how each
ended, moves rows to and from the spool, and waits on :attr:`ClientQueue.cond`.
Every method holds the queue's lock for a few dictionary and list operations
only, never across I/O.

The one-row puts of the middleware and the logging handler (:meth:`ClientQueue.put_one`,
:meth:`ClientQueue.put_event`) take no lock at all: they append to a deque (one atomic
operation) and read a flag; only when the sender is asleep waiting for work, or a whole
chunk has gathered while it lingers, do they take the lock to wake it. A request thread
then never waits for a lock the sender holds while the interpreter lock is switched
away from it. Every locked method first moves those rows into the per-topic lists
(:meth:`ClientQueue._drain`), so order per topic is kept.

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
        self.inbox: deque[tuple[str, Any]] = deque()
        """Rows put by :meth:`put_one`, not yet moved into :attr:`rows` (no lock needed)."""
        self.sleeping = False
        """The sender waits on :attr:`cond` for work: a lock-free put must wake it."""
        self.lingering = False
        """The sender waits for more rows: a lock-free put wakes it once a chunk is whole."""
        self._queued = 0
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

    @property
    def queued(self) -> int:
        """Rows in memory, chunks being sent included."""
        return self._queued + len(self.inbox)

    # ------------------------------------------------------------------ callers
    def put(self, topic: str, rows: Rows) -> bool:
        """Queue ``rows``; False, counting nothing, when memory is full (the caller decides)."""
        count = len(rows)
        with self.cond:
            self._drain()  # rows put one by one before these go first
            if self._queued + count > self.buffer_rows:
                return False
            queue = self.rows.get(topic)
            if queue is None:
                self.rows[topic] = queue = []
            queue.extend(rows)
            self._queued += count
            self.offered[topic] = self.offered.get(topic, 0) + count
            if self.sleeping or len(queue) >= MAX_CHUNK_ROWS:
                self.cond.notify()
        return True

    def put_one(self, topic: str, row: Any) -> bool:
        """:meth:`put` of one row, without a list and without the lock (see the module docstring)."""
        inbox = self.inbox
        if self._queued + len(inbox) >= self.buffer_rows:
            return False
        inbox.append((topic, row))
        if self.sleeping or (self.lingering and len(inbox) >= MAX_CHUNK_ROWS):
            self._wake()
        return True

    def put_event(self, message: PubSubBroadcast) -> bool:
        """Queue an event; False (counted in ``events_dropped``) when ``buffer_rows`` wait already.

        Takes no lock unless the event is dropped or the sender must be woken.
        """
        events = self.events
        if len(events) >= self.buffer_rows:
            with self.cond:
                self.events_dropped += 1
            return False
        events.append(message)
        if self.sleeping or (self.lingering and len(events) >= MAX_EVENTS_PER_SEND):
            self._wake()
        return True

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def _drain(self) -> None:
        """Move the rows of :meth:`put_one` into their topics' lists (hold the lock)."""
        inbox = self.inbox
        if not inbox:
            return
        rows, offered = self.rows, self.offered
        popleft = inbox.popleft
        for _ in range(len(inbox)):  # what put_one appends meanwhile waits for the next drain
            topic, row = popleft()
            queue = rows.get(topic)
            if queue is None:
                rows[topic] = queue = []
            queue.append(row)
            offered[topic] = offered.get(topic, 0) + 1
            self._queued += 1

    def wait(self, timeout: float, linger: bool = False) -> None:
        """The sender waits (hold the lock): for work, or (``linger``) for a whole chunk.

        Lock-free puts wake it: any put while it waits for work, a put that makes
        a chunk's worth of rows or a round's worth of events while it lingers. The
        flag is set before the inbox is looked at, so a put either is seen here or
        sees the flag.
        """
        if linger:
            self.lingering = True
            ready = len(self.inbox) >= MAX_CHUNK_ROWS or len(self.events) >= MAX_EVENTS_PER_SEND
        else:
            self.sleeping = True
            ready = bool(self.inbox) or bool(self.events)
        try:
            if not ready:
                self.cond.wait(timeout)
        finally:
            self.sleeping = self.lingering = False
        self._drain()

    def refuse(self, count: int) -> None:
        """Count rows a caller could not queue (memory full, no room in a spool either)."""
        with self.cond:
            self.dropped += count

    # ------------------------------------------------------------------ flush
    def snapshot(self) -> dict[Any, int]:
        """Rows offered so far, per key (what a ``flush()`` waits for)."""
        with self.cond:
            self._drain()
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
        self._drain()
        return bool(self.rows) or bool(self.events) or self.spooled > 0

    def has_full_chunk(self) -> bool:
        """A topic has a whole chunk waiting, or a round's worth of events wait (hold the lock)."""
        self._drain()
        if len(self.events) >= MAX_EVENTS_PER_SEND:
            return True
        return any(len(rows) >= MAX_CHUNK_ROWS for rows in self.rows.values())

    def take(self, waits_behind_spool: Any) -> list[tuple[str, Rows]]:
        """A chunk of each topic not being sent and with nothing older in a spool."""
        chunks = []
        with self.cond:
            self._drain()
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
            self._drain()  # the chunks are older than anything put meanwhile
            for topic, rows in chunks:
                self.rows[topic] = rows + self.rows.get(topic, [])
                self.inflight.discard(topic)

    def finished(self, topic: str, count: int, sent: bool, error: str | None = None) -> None:
        """A chunk taken from memory ended: sent, or refused by the node (dropped)."""
        with self.cond:
            self.inflight.discard(topic)
            self._queued -= count
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
            self._queued -= count
            self._settle(topic, count)
            self.last_error = error

    def take_for_spool(self) -> dict[str, Rows]:
        """The rows of every topic not being sent, out of memory (still counted as queued)."""
        with self.cond:
            self._drain()
            taken = {t: rows for t, rows in self.rows.items() if t not in self.inflight}
            for topic in taken:
                del self.rows[topic]
        return taken

    def moved_to_spool(self, count: int) -> None:
        """Rows taken with :meth:`take_for_spool` are in the spool now."""
        with self.cond:
            self._queued -= count
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
            self._drain()
            rows, events = self._queued, len(self.events)
            self.dropped += rows
            for topic, waiting in self.rows.items():
                self._settle(topic, len(waiting))
            self.rows.clear()
            self._queued = 0
            self.events_dropped += events
            self.events.clear()
            self.cond.notify_all()
        return rows, events

    def counters(self) -> dict[str, Any]:
        """``queued``, ``spooled``, ``sent``, ``dropped``, ``spooled_total``, ``events_*``, errors."""
        with self.cond:
            self._drain()
            return {
                "queued": self._queued,
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
