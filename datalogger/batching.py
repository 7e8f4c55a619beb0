"""The client side of the fire-and-forget paths: a bounded queue and one sender thread per handle.

``log_nowait()``, ``broadcast()``, the request-analytics middleware and the
logging handler all end in :meth:`ClientSender.put` or
:meth:`ClientSender.put_event`: rows (checked by the caller) or events are
appended to an in-process queue (:mod:`datalogger.client_queue`) under a lock
held for that append only, and the call returns. It never waits for the node, whether the node is up, slow or
gone.

One background thread per handle sends the queue: each topic's rows as chunks
of up to :data:`MAX_CHUNK_ROWS`, after waiting :data:`LINGER` seconds for more
to gather, and the events to the node's PubSub actor. When the node cannot be
reached (see :mod:`datalogger.connection`) the thread keeps the rows and tries
again with growing pauses (:data:`BACKOFF_FIRST` to :data:`BACKOFF_MAX`
seconds), finding the node again by name when it returns.

What is kept, and where:

- In memory, up to ``buffer_rows`` rows (chunks being sent included).
- With a ``spool_dir``, rows that wait for the node are moved to disk
  (:mod:`datalogger.client_spool`) by the sender as soon as a send fails, and
  while memory is half full: they survive a crash or restart of the
  application and are sent, oldest first per topic, when the node is back. A
  caller that finds memory full moves the queue to disk itself (the one case
  where a put touches the disk).
- A row that fits neither is dropped: memory full and no ``spool_dir``, or the
  spool refused (``spool_max_bytes`` reached, or the disk full).
- Events (``broadcast``) are kept in memory only, up to ``buffer_rows``.

Nothing is dropped silently: every row or event dropped is counted
(:meth:`ClientSender.stats`, exported as metrics by :mod:`datalogger.metrics`)
and reported by a WARNING on the ``datalogger.client`` logger at most once a
:data:`WARN_EVERY` seconds. A row the node refuses (it cannot be stored) is
counted as dropped and logged as an ERROR.

Delivery is at least once: a chunk whose answer is lost with the node is sent
again, so a restart of the node in the middle of a send can store it twice.
Order is kept per topic, across the spool and restarts of the app.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from .client_queue import MAX_CHUNK_ROWS, MAX_EVENTS_PER_SEND, ClientQueue
from .client_spool import Spool, SpoolKeeper
from .connection import Link
from .exceptions import DataLoggerError, DeliveryTimeout, NotRunning
from .messages import LogAccepted, PubSubBroadcast, PubSubBroadcasts

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "LINGER",
    "MAX_CHUNK_ROWS",
    "WARN_EVERY",
    "ClientSender",
    "LazyRow",
]

log = logging.getLogger("datalogger.client")

LINGER = 0.2
"""Seconds queued rows and events wait for more before they are sent (unless a chunk is full
or a flush waits): every send costs the application's process a round trip of Thespian's
transport, so fewer, fuller sends leave more of its time to the application."""
MAX_EVENTS_PER_MESSAGE = MAX_EVENTS_PER_SEND
"""Most events in one :class:`~datalogger.messages.PubSubBroadcasts` (one message and one
acknowledgement for many events; the PubSub actor queues them per subscriber): a round of
events of one topic is one message."""
BACKOFF_FIRST = 0.05
"""Seconds before the first retry after the node could not be reached."""
BACKOFF_MAX = 2.0
"""Longest pause between retries."""
WARN_EVERY = 60.0
"""Seconds between two warnings about dropped rows."""
ADOPT_EVERY = 30.0
"""Seconds between looks for spool slots left by processes that are gone."""
PATIENCE = 10.0
"""Seconds the sender waits for the node to take a message before it counts the node as away
(a caller's blocking call waits ``connect_timeout`` only; a refused connection is seen at once)."""
REFUSALS = ("InvalidInput", "InvalidTopic", "InvalidData")
"""Answers meaning the node will never take a chunk (it is dropped and counted)."""

Rows = list[dict[str, Any]]


class LazyRow:
    """A row the sender thread builds (``build(source)``) instead of the caller.

    The logging handler queues its records this way: the caller's share of the
    work is then a queue append, and the row is built in the background. A row
    whose ``build`` raises is dropped and counted.
    """

    __slots__ = ("build", "source")

    def __init__(self, build: Callable[[Any], dict[str, Any]], source: Any) -> None:
        self.build = build
        self.source = source


def _grouped(events: list[PubSubBroadcast]) -> list[PubSubBroadcasts]:
    """Runs of events of one topic and scope, each as one message, in order."""
    groups: list[PubSubBroadcasts] = []
    run: list[Any] = []
    for index, message in enumerate(events):
        run.append(message.event)
        following = events[index + 1] if index + 1 < len(events) else None
        if (
            following is None
            or (following.topic, following.scope) != (message.topic, message.scope)
            or len(run) >= MAX_EVENTS_PER_MESSAGE
        ):
            groups.append(PubSubBroadcasts(message.topic, tuple(run), message.scope))
            run = []
    return groups


class _Retry(DataLoggerError):
    """The node is there but did not take the chunk now (Backpressure, a failing log)."""


class ClientSender:
    """The queue and background sender of one handle (see the module docstring).

    Args:
        link: the handle's way to the node.
        buffer_rows: most rows (and most events) held in memory.
        spool_dir: where rows that wait for the node are kept on disk; None: memory only.
        spool_max_bytes: most bytes this process's spool may hold.
        log_timeout: seconds a chunk's answer is awaited before it is sent again.
    """

    def __init__(
        self,
        link: Link,
        *,
        buffer_rows: int = 100_000,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 1 << 30,
        log_timeout: float = 30.0,
    ) -> None:
        self._link = link
        self.buffer_rows = int(buffer_rows)
        self.spool_dir = os.fspath(spool_dir) if spool_dir is not None else None
        self.spool_max_bytes = int(spool_max_bytes)
        self.log_timeout = float(log_timeout)
        self._reset()

    def _reset(self) -> None:
        """A fresh sender (also in a forked child, which must not send the parent's rows)."""
        self._queue = ClientQueue(self.buffer_rows)
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._close_deadline = 0.0
        self._hurry = False
        self._retry_at = 0.0
        self._backoff = 0.0
        self._outage_since: float | None = None
        self._warned_drops = 0
        self._last_warning = -WARN_EVERY
        self._next_adopt = time.monotonic() + ADOPT_EVERY
        self._spools: SpoolKeeper | None = None
        if self.spool_dir is not None:
            self._open_spools(self.spool_dir)

    # ------------------------------------------------------------------ callers' side
    def put(self, topic: str, rows: Rows) -> bool:
        """Queue checked rows for ``topic``; False when they were dropped. Never waits for the node."""
        queue = self._queue
        if queue.closing:
            raise NotRunning("this datalogger handle has been closed")
        if not queue.put(topic, rows):
            if self._spools is None:
                queue.refuse(len(rows))
                return False
            self._spool_memory()  # memory is full: move it to the spool, in order, then queue these
            if not queue.put(topic, rows):
                queue.refuse(len(rows))
                return False
        if self._thread is None:
            self._ensure_thread()
        return True

    def put_one(self, topic: str, row: Any) -> bool:
        """:meth:`put` of one row (the middleware's and the logging handler's path)."""
        if self._queue.closing or not self._queue.put_one(topic, row):
            return self.put(topic, [row])  # closed or full: the general path decides
        if self._thread is None:
            self._ensure_thread()
        return True

    def put_event(self, message: PubSubBroadcast) -> bool:
        """Queue a broadcast; False when it was dropped (the event queue is full). Never waits."""
        if self._queue.closing:
            raise NotRunning("this datalogger handle has been closed")
        queued = self._queue.put_event(message)
        if self._thread is None:
            self._ensure_thread()
        return queued

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="datalogger-client", daemon=True)
                self._thread = thread
                thread.start()

    def stats(self) -> dict[str, Any]:
        """Counters: rows ``queued`` (memory) and ``spooled`` (disk) now, ``sent``, ``dropped``, ..."""
        return {
            **self._queue.counters(),
            "buffer_rows": self.buffer_rows,
            "spool_dir": self.spool_dir,
            **self._link.status(),
        }

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every row queued (or spooled) so far has been accepted by the node, or dropped.

        Raises:
            DeliveryTimeout: rows are still waiting after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        queue = self._queue
        target = queue.snapshot()
        with queue.cond:
            if not queue.behind(target):
                return
        self._ensure_thread()
        with queue.cond:
            while queue.behind(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reason = f" (last error: {queue.last_error})" if queue.last_error else ""
                    raise DeliveryTimeout(
                        f"client queue: {queue.behind(target)} rows or events not accepted by the "
                        f"node after {timeout:g}s{reason}"
                    )
                self._hurry = True
                self._retry_at = 0.0
                queue.cond.notify_all()
                queue.cond.wait(min(remaining, 0.05))

    def close(self, timeout: float = 10.0) -> None:
        """Send what waits (for up to ``timeout`` s), spool or count what is left, stop the thread."""
        queue = self._queue
        with queue.cond:
            if queue.closing:
                return
            queue.closing = True
            self._close_deadline = time.monotonic() + timeout
            self._retry_at = 0.0
            queue.cond.notify_all()
            work = queue.has_work()
        if self._thread is None and work:
            self._ensure_thread()
        if self._thread is not None:
            self._thread.join(timeout + 5.0)
        elif self._spools is not None:
            self._spools.close()

    def after_fork(self) -> None:
        """In a forked child: start empty (the parent sends its own rows), in a slot of its own."""
        if self._spools is not None:
            self._spools.forget()
        self._reset()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            while True:
                try:
                    if not self._cycle():
                        return
                except Exception as exc:  # a bug must not stop the sender with rows queued
                    log.exception("datalogger client: unexpected error in the sender; retrying")
                    self._failed(exc)
        finally:
            self._finish()

    def _cycle(self) -> bool:
        """Wait for rows, send them; False when the sender should stop."""
        queue = self._queue
        with queue.cond:
            while not queue.closing and not queue.has_work():
                queue.cond.wait(ADOPT_EVERY if self._spools is not None else WARN_EVERY)
                if self._adopt_due() or self._drops_to_report():
                    break
            if queue.closing and (time.monotonic() >= self._close_deadline or not queue.has_work()):
                return False
            linger_until = time.monotonic() + LINGER  # let more rows gather (a put's notify
            while not queue.closing and not self._hurry and not queue.has_full_chunk():  # wakes us)
                left = linger_until - time.monotonic()
                if left <= 0:
                    break
                queue.cond.wait(left)
            self._hurry = False
        self._back_off()
        self._warn_if_dropped()
        self._adopt()
        try:
            self._send_round()
        except (DataLoggerError, OSError) as exc:
            self._failed(exc)
            if queue.closing and self._spools is not None:
                return False  # what is left goes to the spool; the next start sends it
        else:
            self._recovered()
        return True

    def _back_off(self) -> None:
        """Wait until the next retry, keeping queued rows in the spool meanwhile."""
        queue = self._queue
        while True:
            self._spool_memory()
            self._warn_if_dropped()
            with queue.cond:
                wait = self._retry_at - time.monotonic()
                if queue.closing:
                    wait = min(wait, self._close_deadline - time.monotonic())
                if wait <= 0 or self._hurry:
                    return
                queue.cond.wait(min(wait, 0.1))

    def _send_round(self) -> None:
        """Send the spools (oldest first), then memory, then events; raise on the first failure."""
        spools = self._spools
        if spools is not None:
            for spool, topic, key in spools.sources():
                self._send_spooled(spools, spool, topic, key)
            spools.release_empty()
        queue = self._queue
        while True:
            chunks = queue.take(spools.has if spools is not None else _never)
            if not chunks:
                break
            chunks = [(topic, self._materialize(topic, rows)) for topic, rows in chunks]
            for index, (topic, rows) in enumerate(chunks):
                try:
                    sent, error = self._send_chunk(topic, rows)
                except BaseException:
                    queue.give_back(chunks[index:])
                    raise
                queue.finished(topic, len(rows), sent, error)
        self._send_events()
        if spools is not None:
            spools.sync()

    def _send_spooled(self, spools: SpoolKeeper, spool: Spool, topic: str, key: Any) -> None:
        while True:
            rows = spools.peek(spool, topic, MAX_CHUNK_ROWS)
            if not rows:
                return
            sent, error = self._send_chunk(topic, rows)  # no lock is held while the node is asked
            popped = spools.pop(spool, topic, MAX_CHUNK_ROWS)
            self._queue.finished_spooled(key, len(rows), popped, sent, error)

    def _materialize(self, topic: str, rows: list[Any]) -> Rows:
        """Build the :class:`LazyRow` rows; drop (and count) those that fail."""
        built: Rows = []
        append = built.append
        failed: Exception | None = None
        for row in rows:
            if type(row) is LazyRow:
                try:
                    row = row.build(row.source)
                except Exception as exc:
                    failed = exc
                    continue
            append(row)
        lost = len(rows) - len(built)
        if lost:
            self._queue.lost(topic, lost, f"a row of {topic} could not be built: {failed!r}")
            log.error("datalogger client: %d rows of %s could not be built: %r", lost, topic, failed)
        return built

    def _send_chunk(self, topic: str, rows: Rows) -> tuple[bool, str | None]:
        """Log a chunk; (True, None) when accepted, (False, why) when refused for good.

        Raises:
            DataLoggerError: the node did not take it now (away, slow, full): send it again later.
        """
        reply = self._link.log(
            topic, rows, self.log_timeout, on_wait=self._while_waiting, patience=self._patience()
        )
        if isinstance(reply, LogAccepted):
            return True, None
        if reply.error in REFUSALS:
            log.error(
                "datalogger client: the node refused %d rows of %s: %s", len(rows), topic, reply.message
            )
            return False, f"{reply.error}: {reply.message}"
        raise _Retry(f"{reply.error}: {reply.message}")

    def _send_events(self) -> None:
        """Send up to :data:`MAX_EVENTS_PER_SEND` events: one batch a round, so rows never wait
        behind a stream of events that outpaces the PubSub actor."""
        batch = self._queue.take_events(MAX_EVENTS_PER_SEND)
        if not batch:
            return
        messages = _grouped(batch)
        try:  # one pickling check for the whole batch; event by event only when it fails
            pickle.dumps(messages, pickle.HIGHEST_PROTOCOL)
        except Exception:
            messages = _grouped(self._picklable(batch))
        unpicklable = len(batch) - sum(len(m.events) for m in messages)
        try:
            self._link.broadcast(messages, patience=self._patience())
        except BaseException as exc:
            delivered = getattr(exc, "delivered", 0)  # those the node took are not sent twice,
            uncertain = getattr(exc, "uncertain", 0)  # nor one that may have arrived
            taken = [len(m.events) for m in messages]
            left = [
                PubSubBroadcast(m.topic, event, m.scope)
                for m in messages[delivered + uncertain :]
                for event in m.events
            ]
            self._queue.events_ended(
                sum(taken[:delivered]), unpicklable + sum(taken[delivered : delivered + uncertain]), left
            )
            raise
        self._queue.events_ended(len(batch) - unpicklable, unpicklable, [])

    def _patience(self) -> float:
        return max(PATIENCE, getattr(self._link, "connect_timeout", 0.0))

    def _picklable(self, batch: list[PubSubBroadcast]) -> list[PubSubBroadcast]:
        """The events that can travel (an event is any object, checked here, not in the caller)."""
        kept = []
        for message in batch:
            try:
                pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                self._queue.error(f"an event cannot be pickled: {type(exc).__name__}: {exc}")
                log.error("datalogger client: dropped a broadcast event that cannot be pickled: %s", exc)
                continue
            kept.append(message)
        return kept

    def _while_waiting(self) -> None:
        """Called while a chunk's answer is awaited: keep memory from filling up behind it."""
        if self._spools is not None and self._queue.queued >= self.buffer_rows // 2:
            self._spool_memory()
        self._warn_if_dropped()

    # ------------------------------------------------------------------ failures
    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._queue.error(f"{type(exc).__name__}: {exc}")
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
        self._retry_at = now + self._backoff
        if self._outage_since is None:
            self._outage_since = now
            where = "memory and the spool" if self._spools is not None else "memory"
            log.warning(
                "datalogger client: cannot send (%s); keeping %d rows in %s (up to %d in memory) "
                "and retrying", exc, self._queue.queued + self._queue.spooled, where, self.buffer_rows,
            )
        self._spool_memory()

    def _recovered(self) -> None:
        since, self._outage_since, self._backoff = self._outage_since, None, 0.0
        if since is not None:
            log.warning("datalogger client: the node answers again after %.1fs", time.monotonic() - since)

    def _drops_to_report(self) -> bool:
        return self._queue.dropped + self._queue.events_dropped != self._warned_drops

    def _warn_if_dropped(self) -> None:
        now = time.monotonic()
        counters = self._queue.counters()
        dropped = counters["dropped"] + counters["events_dropped"]
        if dropped == self._warned_drops or now - self._last_warning < WARN_EVERY:
            return
        new, self._warned_drops, self._last_warning = dropped - self._warned_drops, dropped, now
        spool = f"spool: {counters['spool_error'] or 'full'}" if self.spool_dir else "no spool_dir"
        log.warning(
            "datalogger client: %d more rows or events dropped (in all %d rows, %d events; memory "
            "holds %d rows, %s; last send error: %s)", new, counters["dropped"],
            counters["events_dropped"], self.buffer_rows, spool, counters["last_error"],
        )

    # ------------------------------------------------------------------ spool
    def _open_spools(self, spool_dir: str) -> None:
        spools = SpoolKeeper(spool_dir, self.spool_max_bytes)
        try:
            found = spools.open()
        except OSError as exc:
            self._queue.error(str(exc), spool=True)
            log.error("datalogger client: cannot use spool_dir %s: %s", spool_dir, exc)
            return
        self._spools = spools
        self._count_found(found, "in the spool")

    def _count_found(self, found: list[tuple[Any, int]], where: str) -> None:
        for key, rows in found:
            self._queue.found_in_spool(key, rows)
        total = sum(rows for _, rows in found)
        if total:
            log.warning("datalogger client: %d rows found %s %s; sending them", total, where, self.spool_dir)
            self._ensure_thread()  # without waiting for a put

    def _adopt_due(self) -> bool:
        return self._spools is not None and time.monotonic() >= self._next_adopt

    def _adopt(self) -> None:
        if self._spools is None or not self._adopt_due():
            return
        self._next_adopt = time.monotonic() + ADOPT_EVERY
        try:
            found = self._spools.adopt()
        except OSError as exc:
            log.warning("datalogger client: cannot look for spools left by other processes: %s", exc)
            return
        self._count_found(found, "left by a process that is gone in the spool")

    def _spool_memory(self) -> None:
        """Move queued rows (of topics not being sent) to the spool; keep what it cannot take."""
        spools = self._spools
        if spools is None:
            return
        queue = self._queue
        failed: dict[str, Rows] = {}
        error: OSError | None = None
        for topic, rows in queue.take_for_spool().items():
            rows = self._materialize(topic, rows)
            if error is None:
                try:
                    spools.push(topic, rows)
                    queue.moved_to_spool(len(rows))
                    continue
                except OSError as exc:
                    error = exc
            failed[topic] = rows
        if failed:
            queue.give_back(list(failed.items()))  # older than what was queued meanwhile
        if error is not None:
            queue.error(str(error), spool=True)

    # ------------------------------------------------------------------ end
    def _finish(self) -> None:
        """The thread ends (closing): spool or count what could not be sent, let the slot go."""
        self._spool_memory()
        rows, events = self._queue.drop_remaining()
        if rows or events:
            log.error(
                "datalogger client: closing with the node unreachable: %d rows and %d events dropped "
                "(set spool_dir to keep rows across restarts)", rows, events,
            )
        if self._spools is not None:
            spooled = self._queue.spooled
            if spooled:
                log.warning(
                    "datalogger client: %d rows stay in the spool %s for the next start",
                    spooled,
                    self.spool_dir,
                )
            self._spools.close()


def _never(topic: str) -> bool:
    return False
