"""The flow of one topic's chunks to one destination, as a plain class.

A :class:`Lane` lives in a TopicSupervisor, one per destination. It keeps a
copy of every chunk handed to the destination's worker until the worker
reports it settled (delivered or dead-lettered), so a crashed worker can be
given its chunks again. It bounds the rows held in memory with
``max_buffered_rows`` and applies the destination's ``overflow`` policy:

``spill``
    Chunks beyond the bound are not kept in memory: the lane keeps only their
    sequence numbers and row counts, and reads their rows back from the
    topic's write-ahead log (which holds every chunk anyway) to hand them to
    the worker, in order, as room frees up. Nothing is written twice.
``block``
    :meth:`Lane.has_room` says no; the supervisor holds the caller.
``drop_oldest``
    The oldest chunks not yet handed to the worker are dropped and counted.

The lane has no actor code: the supervisor sends what its methods return.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .config import DestinationSpec
from .exceptions import StorageError

__all__ = ["COUNTER_NAMES", "Chunk", "Lane", "LaneCounters"]

log = logging.getLogger("datalogger.lane")

Chunk = tuple[int, list[dict[str, Any]]]
"""A sequence number and its rows."""

ReadBack = Callable[[list[int]], list[Chunk]]
"""Reads the chunks numbered so (ascending) back from the write-ahead log, in order;
a chunk the log no longer holds is missing from the answer."""

COUNTER_NAMES = (
    "received",
    "replayed",
    "delivered",
    "failed",
    "retried",
    "dead_lettered",
    "spilled",
    "dropped",
    "restarts",
)


class LaneCounters:
    """Counters of one (topic, destination), as reported by ``stats()``."""

    def __init__(self) -> None:
        self.values: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.failing_since: float | None = None
        self.last_success_at: float | None = None
        self.latencies: deque[float] = deque(maxlen=1024)

    def add(self, name: str, amount: int = 1) -> None:
        """Increase counter ``name``."""
        self.values[name] += amount

    def error(self, message: str, failing: bool = True) -> None:
        """Remember the last error and when it happened.

        ``failing`` starts the failing clock; rows rejected from a chunk whose
        other rows were delivered do not: the destination works.
        """
        self.last_error = message
        self.last_error_at = time.time()
        if failing and self.failing_since is None:
            self.failing_since = self.last_error_at

    def success(self) -> None:
        """A chunk was delivered: the destination is not failing any more."""
        self.last_success_at = time.time()
        self.failing_since = None

    def snapshot(self, buffered: int, wal_only_rows: int) -> dict[str, Any]:
        """The counters as a plain dict."""
        ordered = sorted(self.latencies)

        def quantile(q: float) -> float | None:
            if not ordered:
                return None
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {
            **self.values,
            "buffered": buffered,
            "wal_only_rows": wal_only_rows,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "failing_since": self.failing_since,
            "last_success_at": self.last_success_at,
            "latency_p50": quantile(0.50),
            "latency_p99": quantile(0.99),
        }


class Lane:
    """The chunks of one topic on their way to one destination."""

    def __init__(self, spec: DestinationSpec, read_back: ReadBack) -> None:
        self.spec = spec
        self._read_back = read_back
        self.inflight: dict[int, list[dict[str, Any]]] = {}
        self.inflight_rows = 0
        self.backlog: deque[Chunk] = deque()
        self.backlog_rows = 0
        self.on_disk: deque[tuple[int, int]] = deque()
        """``(seq, rows)`` of chunks over the bound, held only in the write-ahead log."""
        self.on_disk_rows = 0
        self.read_error = False
        """The last read back from the log failed: try again later (see :meth:`refill`)."""
        self.unsettled: set[int] = set()
        self.max_seq = 0
        self.counters = LaneCounters()
        # Hand-over to the worker: chunks wait here while the worker is busy with
        # ``window`` groups, then go as one merged group (fewer messages, bigger writes).
        self.waiting: deque[Chunk] = deque()
        self.waiting_rows = 0
        self.handed_groups: list[set[int]] = []
        self.last_handoff = float("-inf")
        """``time.monotonic()`` of the last group handed over (for ``linger``)."""

    # -------------------------------------------------------------- intake
    def has_room(self, rows: int) -> bool:
        """True when ``rows`` more rows fit under ``max_buffered_rows``."""
        held = self.inflight_rows + self.backlog_rows
        return held == 0 or held + rows <= self.spec.max_buffered_rows

    def offer(self, seq: int, rows: list[dict[str, Any]]) -> list[Chunk]:
        """Take a new chunk; return the chunks to hand to the worker now."""
        self.counters.add("received", len(rows))
        self.unsettled.add(seq)
        self.max_seq = max(self.max_seq, seq)
        overflow = self.spec.overflow
        if overflow == "spill" and (self.on_disk or self._full()):
            # Over the bound: the rows are in the write-ahead log already; keep the number only.
            self.on_disk.append((seq, len(rows)))
            self.on_disk_rows += len(rows)
            self.counters.add("spilled", len(rows))
            return self._refill()
        if overflow == "drop_oldest" and (self.backlog or not self.has_room(len(rows))):
            self.backlog.append((seq, rows))
            self.backlog_rows += len(rows)
            self._drop_oldest()
            return self._refill()
        return [self._send(seq, rows)]

    def _full(self) -> bool:
        """No chunk more goes to memory: ``max_buffered_rows`` are held (a chunk may overshoot)."""
        held = self.inflight_rows + self.backlog_rows
        return held > 0 and held >= self.spec.max_buffered_rows

    def _drop_oldest(self) -> None:
        # The worker holds up to the limit, the backlog up to the limit again;
        # beyond that the oldest chunks of the backlog go, so the newest survive.
        limit = self.spec.max_buffered_rows
        while len(self.backlog) > 1 and self.backlog_rows > limit:
            seq, rows = self.backlog.popleft()
            self.backlog_rows -= len(rows)
            self.unsettled.discard(seq)
            self.counters.add("dropped", len(rows))

    def _send(self, seq: int, rows: list[dict[str, Any]]) -> Chunk:
        self.inflight[seq] = rows
        self.inflight_rows += len(rows)
        return seq, rows

    def _refill(self) -> list[Chunk]:
        out: list[Chunk] = []
        limit = self.spec.max_buffered_rows
        while self.backlog and (not self.inflight or self.inflight_rows + len(self.backlog[0][1]) <= limit):
            seq, rows = self.backlog.popleft()
            self.backlog_rows -= len(rows)
            out.append(self._send(seq, rows))
        while self.on_disk and (not self.inflight or self.inflight_rows < limit):
            room = max(1, limit - self.inflight_rows)
            taken: list[tuple[int, int]] = []
            total = 0
            for seq, count in self.on_disk:
                if total >= room:  # the last chunk taken may overshoot, as in offer()
                    break
                taken.append((seq, count))
                total += count
            try:
                found = self._read_back([seq for seq, _ in taken])
            except StorageError as exc:
                self.read_error = True
                self.counters.error(f"reading back from the write-ahead log: {exc}")
                log.error("cannot read chunks back from the write-ahead log (tried again later): %s", exc)
                break
            self.read_error = False
            for _ in taken:
                self.on_disk.popleft()
            self.on_disk_rows -= total
            rows_of = dict(found)
            for seq, count in taken:
                chunk_rows = rows_of.get(seq)
                if chunk_rows is None:
                    # Damaged in the log (already logged and counted there): it cannot be
                    # delivered; forget it rather than hold every later chunk back for ever.
                    self.unsettled.discard(seq)
                    self.counters.add("dropped", count)
                    self.counters.error(f"chunk {seq} could not be read back from the write-ahead log")
                    log.error("chunk %d (%d rows) unreadable in the write-ahead log", seq, count)
                    continue
                out.append(self._send(seq, chunk_rows))
        return out

    def refill(self) -> list[Chunk]:
        """Chunks that fit now (after a failed read back from the log, say)."""
        return self._refill()

    # -------------------------------------------------------------- outcomes
    # -------------------------------------------------------------- hand-over
    def queue_handoff(self, chunks: list[Chunk]) -> None:
        """Chunks to hand to the worker, in order."""
        self.waiting.extend(chunks)
        self.waiting_rows += sum(len(rows) for _, rows in chunks)

    def linger_left(self, now: float, merge_rows: int) -> float:
        """Seconds the waiting chunks should still wait to be merged (0: hand them over now).

        The first chunk after a quiet spell goes at once; after that, groups go at most
        one per ``linger`` seconds, or as soon as a full group waits: ``merge_rows`` rows,
        or half of ``max_buffered_rows``, so that lingering never drives the lane into its
        overflow policy nor slows the drain of a backlog.
        """
        full = min(merge_rows, max(1, self.spec.max_buffered_rows // 2))
        if not self.waiting or self.waiting_rows >= full:
            return 0.0
        return max(0.0, self.last_handoff + self.spec.linger - now)

    def next_group(self, window: int, merge_rows: int) -> list[Chunk]:
        """The next group to send the worker, or [] while ``window`` groups are out."""
        if not self.waiting or len(self.handed_groups) >= window:
            return []
        group: list[Chunk] = []
        rows = 0
        while self.waiting and (not group or rows + len(self.waiting[0][1]) <= merge_rows):
            chunk = self.waiting.popleft()
            group.append(chunk)
            rows += len(chunk[1])
        self.waiting_rows -= rows
        self.handed_groups.append({seq for seq, _ in group})
        return group

    def released(self, seqs: tuple[int, ...]) -> None:
        """The worker is done with these chunks (settled, or parked waiting for a retry)."""
        done = set(seqs)
        for group in self.handed_groups:
            group -= done
        self.handed_groups = [g for g in self.handed_groups if g]

    def reset_handoff(self) -> None:
        """A new worker: everything unsettled in memory is to be handed over again, in order."""
        self.handed_groups = []
        self.waiting = deque(self.resend())
        self.waiting_rows = sum(len(rows) for _, rows in self.waiting)

    def settle(self, seqs: tuple[int, ...]) -> list[Chunk]:
        """Forget settled chunks; return the chunks that now fit."""
        self.released(seqs)
        for seq in seqs:
            rows = self.inflight.pop(seq, None)
            if rows is not None:
                self.inflight_rows -= len(rows)
            self.unsettled.discard(seq)
        return self._refill()

    def resend(self) -> list[Chunk]:
        """Every chunk the worker held, in order, for a restarted worker."""
        return sorted(self.inflight.items())

    def settled_through(self, seq: int) -> bool:
        """True when no chunk with a sequence number <= ``seq`` is unsettled."""
        return not self.unsettled or min(self.unsettled) > seq

    def watermark(self) -> int:
        """The sequence number up to which every chunk offered is settled."""
        if self.unsettled:
            return min(self.unsettled) - 1
        return self.max_seq

    def start_after(self, seq: int) -> None:
        """Chunks up to ``seq`` were settled by an earlier run."""
        self.max_seq = max(self.max_seq, seq)

    def buffered_rows(self) -> int:
        """Rows not yet settled, in memory or held only in the write-ahead log."""
        return self.inflight_rows + self.backlog_rows + self.on_disk_rows

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``stats()``."""
        return self.counters.snapshot(self.buffered_rows(), self.on_disk_rows)
