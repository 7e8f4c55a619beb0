"""The client spool: rows a handle could not send yet, kept on disk across restarts of the app.

A handle given a ``spool_dir`` writes there the rows its background sender
could not hand to the node (see :mod:`datalogger.batching`); they are sent, in
order per topic, once the node is back, by this process or by the next one
started with the same ``spool_dir``.

Layout::

    <spool_dir>/<slot>/lock                  held with flock(2) by the process using the slot
    <spool_dir>/<slot>/topics/<topic>/       a SpoolQueue per topic (datalogger.spool_queue)

Several processes may share one ``spool_dir`` (the workers of a pre-fork web
server): each takes the first slot whose lock it can get, and the kernel
releases the lock when the process dies, however it dies. A slot whose lock is
free but which still holds rows belongs to a process that is gone; any handle
adopts it (:func:`adopt_orphans`), drains it and lets it go again. A forked
child shares its parent's lock, so it takes a slot of its own
(:meth:`Spool.forget`).

Crash semantics are those of :class:`~datalogger.spool_queue.SpoolQueue`: a row is
on disk once :meth:`Spool.push` returns (a crash of the app loses nothing
written), and a chunk is removed only by :meth:`Spool.pop` after the node
accepted it, so a crash in between sends it again (at least once).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .spool_queue import SpoolQueue
from .validation import TOPIC_PATTERN

__all__ = ["MAX_SLOTS", "Spool", "SpoolKeeper", "adopt_orphans"]

log = logging.getLogger("datalogger.client")

MAX_SLOTS = 1024
"""Most processes that can share one ``spool_dir`` at once."""
_SEGMENT_BYTES = 4 * 1024 * 1024

Rows = list[dict[str, Any]]


def _try_lock(slot: Path) -> int | None:
    """Open and flock ``slot/lock`` without waiting; the fd, or None when another process holds it."""
    slot.mkdir(parents=True, exist_ok=True)
    fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


class Spool:
    """One slot of a ``spool_dir``: a SpoolQueue per topic, held under the slot's lock.

    Used by one thread (the handle's sender) at a time.
    """

    def __init__(self, directory: Path, lock_fd: int) -> None:
        self.directory = directory
        self._lock_fd: int | None = lock_fd
        self._queues: dict[str, SpoolQueue] = {}
        topics = directory / "topics"
        if topics.is_dir():
            for entry in sorted(topics.iterdir()):
                if entry.is_dir() and TOPIC_PATTERN.match(entry.name):
                    self._queue(entry.name)
        self._bytes = sum(q.bytes_on_disk for q in self._queues.values())

    @classmethod
    def open_free(cls, spool_dir: str | os.PathLike[str]) -> Spool:
        """Take the first slot of ``spool_dir`` no other process holds.

        Raises:
            OSError: the directory cannot be created or every slot is taken.
        """
        root = Path(spool_dir)
        for number in range(MAX_SLOTS):
            slot = root / str(number)
            fd = _try_lock(slot)
            if fd is not None:
                return cls(slot, fd)
        raise OSError(errno.EBUSY, f"all {MAX_SLOTS} slots of the spool directory are in use", str(root))

    def _queue(self, topic: str) -> SpoolQueue:
        queue = self._queues.get(topic)
        if queue is None:
            queue = SpoolQueue(
                self.directory / "topics" / topic, segment_bytes=_SEGMENT_BYTES, fsync="interval"
            )
            self._queues[topic] = queue
        return queue

    @property
    def rows(self) -> int:
        """Rows waiting, over all topics."""
        return sum(q.rows for q in self._queues.values())

    @property
    def bytes(self) -> int:
        """Bytes of the spool files (as last measured after a push or a pop)."""
        return self._bytes

    def topics(self) -> list[str]:
        """The topics with rows waiting."""
        return [topic for topic, queue in self._queues.items() if queue.rows]

    def rows_of(self, topic: str) -> int:
        """Rows of ``topic`` waiting."""
        queue = self._queues.get(topic)
        return queue.rows if queue is not None else 0

    def has(self, topic: str) -> bool:
        """True when rows of ``topic`` wait here (newer rows of it must wait behind them)."""
        queue = self._queues.get(topic)
        return queue is not None and queue.rows > 0

    def push(self, topic: str, rows: Rows) -> None:
        """Append ``rows`` behind what waits for ``topic``.

        Raises:
            OSError: the write failed (a full disk): nothing was added.
        """
        queue = self._queue(topic)
        before = queue.bytes_on_disk
        queue.push(0, rows)
        self._bytes += queue.bytes_on_disk - before

    def peek(self, topic: str, max_rows: int) -> Rows:
        """The oldest rows of ``topic`` (whole chunks, at least one), still kept."""
        queue = self._queues.get(topic)
        if queue is None:
            return []
        return [row for _, chunk in queue.peek(max_rows) for row in chunk]

    def pop(self, topic: str, max_rows: int) -> int:
        """Remove what :meth:`peek` with the same ``max_rows`` returned; the rows removed."""
        queue = self._queues[topic]
        before = queue.bytes_on_disk
        rows = sum(len(chunk) for _, chunk in queue.pop(max_rows))
        self._bytes = max(0, self._bytes - (before - queue.bytes_on_disk))
        return rows

    def sync(self) -> None:
        """fsync pushes when the interval has passed (call now and then)."""
        for queue in self._queues.values():
            queue.sync()

    def close(self) -> None:
        """Close the files and let the slot go. Idempotent."""
        for queue in self._queues.values():
            try:
                queue.close()
            except OSError as exc:
                log.warning("closing the spool %s: %s", queue.path, exc)
        self._queues.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def forget(self) -> None:
        """In a forked child: drop this process's share of the parent's slot, touching no file."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._queues.clear()


def adopt_orphans(spool_dir: str | os.PathLike[str], own: Spool | None) -> list[Spool]:
    """Slots of ``spool_dir`` whose process is gone and which still hold rows, now held by us."""
    root = Path(spool_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.is_dir() or not entry.name.isdigit():
            continue
        if own is not None and entry == own.directory:
            continue
        topics = entry / "topics"
        if not topics.is_dir() or not any(topics.iterdir()):
            continue
        fd = _try_lock(entry)
        if fd is None:
            continue
        spool = Spool(entry, fd)
        if spool.rows:
            found.append(spool)
        else:
            spool.close()
    return found


class SpoolKeeper:
    """This process's slot of a ``spool_dir`` and the slots it adopted, under one lock.

    The lock covers disk work only (a push, a peek, a pop); the caller never
    holds it while it waits for the node.

    Args:
        spool_dir: the directory shared by the processes of an application.
        max_bytes: most bytes this process's slot may hold.
    """

    def __init__(self, spool_dir: str | os.PathLike[str], max_bytes: int) -> None:
        self.spool_dir = os.fspath(spool_dir)
        self.max_bytes = int(max_bytes)
        self.lock = threading.Lock()
        self.own: Spool | None = None
        self.adopted: list[Spool] = []

    def open(self) -> list[tuple[Any, int]]:
        """Take a slot and adopt orphans; ``(key, rows)`` of what they hold (key as in
        :mod:`datalogger.client_queue`).

        Raises:
            OSError: ``spool_dir`` cannot be used.
        """
        with self.lock:
            self.own = Spool.open_free(self.spool_dir)
            self.adopted = adopt_orphans(self.spool_dir, self.own)
            return [*self._holding(self.own, own=True), *self._found(self.adopted)]

    def adopt(self) -> list[tuple[Any, int]]:
        """Adopt slots left since by processes that are gone; ``(key, rows)`` they hold."""
        with self.lock:
            found = adopt_orphans(self.spool_dir, self.own)
            self.adopted.extend(found)
            return self._found(found)

    def _found(self, spools: list[Spool]) -> list[tuple[Any, int]]:
        return [item for spool in spools for item in self._holding(spool, own=False)]

    @staticmethod
    def _holding(spool: Spool, own: bool) -> list[tuple[Any, int]]:
        return [(topic if own else ("adopted", topic), spool.rows_of(topic)) for topic in spool.topics()]

    def sources(self) -> list[tuple[Spool, str, Any]]:
        """``(spool, topic, key)`` of every topic waiting, adopted slots first (they are older)."""
        with self.lock:
            spools = [*self.adopted, *([self.own] if self.own is not None else [])]
            return [
                (spool, topic, topic if spool is self.own else ("adopted", topic))
                for spool in spools
                for topic in spool.topics()
            ]

    def has(self, topic: str) -> bool:
        """True when rows of ``topic`` wait in this process's slot (newer ones wait behind them)."""
        own = self.own
        return own is not None and own.has(topic)

    def push(self, topic: str, rows: Rows) -> None:
        """Append ``rows`` to this process's slot.

        Raises:
            OSError: ``max_bytes`` is reached or the write failed (a full disk): nothing was added.
        """
        with self.lock:
            if self.own is None:
                raise OSError("the spool is closed")
            if self.own.bytes >= self.max_bytes:
                raise OSError(f"spool_max_bytes ({self.max_bytes}) reached")
            self.own.push(topic, rows)

    def peek(self, spool: Spool, topic: str, max_rows: int) -> Rows:
        """See :meth:`Spool.peek`."""
        with self.lock:
            return spool.peek(topic, max_rows)

    def pop(self, spool: Spool, topic: str, max_rows: int) -> int:
        """See :meth:`Spool.pop` (pushes since the peek went behind: the front is the same)."""
        with self.lock:
            return spool.pop(topic, max_rows)

    def release_empty(self) -> None:
        """Let go of adopted slots that were sent."""
        with self.lock:
            for spool in [s for s in self.adopted if not s.rows]:
                spool.close()
                self.adopted.remove(spool)

    def sync(self) -> None:
        """fsync recent pushes when the interval has passed."""
        with self.lock:
            if self.own is not None:
                self.own.sync()

    def close(self) -> None:
        """Close every slot held. Idempotent."""
        with self.lock:
            for spool in [self.own, *self.adopted]:
                if spool is not None:
                    spool.close()
            self.own, self.adopted = None, []

    def forget(self) -> None:
        """In a forked child: drop the parent's slots without touching them."""
        for spool in [self.own, *self.adopted]:
            if spool is not None:
                spool.forget()
        self.lock = threading.Lock()
        self.own, self.adopted = None, []
