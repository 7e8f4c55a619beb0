"""The state of one topic inside a TopicSupervisor, as a plain class.

A :class:`TopicState` owns one topic's write-ahead log, its
:class:`~datalogger.lane.Lane` per destination, the watermarks reported to
ProcessStatus, the hand-over window and linger towards the workers, the
callers held under ``overflow = "block"`` and the flushes waiting for it. A
TopicSupervisor hosts many of them (``dict`` topic -> state); the state never
talks to Thespian: it calls its :class:`TopicHost` to send a message, to
schedule a timer (a :class:`~datalogger.messages.TopicTimer` that the
supervisor hands back to :meth:`TopicState.on_timer`) or to find the worker of
a destination. Its clocks are injected, so it is unit-tested with fake ones.

Each topic keeps its own order: chunks are numbered by its log, handed to each
worker in that order, and a topic's state never waits on another topic's.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from ..config import Config
from ..delivery import describe
from ..exceptions import StorageError
from ..lane import COUNTER_NAMES, Chunk, Lane
from ..messages import (
    AttemptFailed,
    ChunkSettled,
    DeliverChunk,
    DeliverChunks,
    LogAccepted,
    LogRejected,
    PlacementReport,
    TopicChunk,
    TopicTimer,
    WalSync,
    WatermarksRequest,
)
from ..names import file_name
from ..placement import Member, owner_for
from ..stamps import UNIT_NS, LogClock, stamp_rows
from ..wal import WalReader, WriteAheadLog

__all__ = [
    "MERGE_ROWS",
    "RECOVERY_WAIT",
    "STATUS_EVERY",
    "STATUS_SYNC_WAIT",
    "WAL_RETRY_MAX",
    "TopicHost",
    "TopicState",
    "entity",
]

log = logging.getLogger("datalogger.topic")

MERGE_ROWS = 10_000
"""Most rows merged into one hand-over to a worker (a single chunk may be larger)."""
STATUS_EVERY = 0.2
"""Seconds between reports to ProcessStatus (and log clean-ups) while chunks settle."""
RECOVERY_WAIT = 10.0
"""Seconds to wait for ProcessStatus at start before replaying the whole log."""
STATUS_SYNC_WAIT = 2.0
"""Seconds a flush waits for ProcessStatus to confirm it stored the topic's status."""
WAL_RETRY_MAX = 30.0
"""Longest wait between two tries to open a write-ahead log that could not be opened."""


_EPOCHS = itertools.count(1)


def entity(topic: str, destination: str) -> str:
    """The process-status entity of a destination for a topic."""
    return f"{topic}/{destination}"


class TopicHost(Protocol):
    """What a :class:`TopicState` needs from the supervisor that hosts it."""

    @property
    def address(self) -> Any:
        """The supervisor's address (the route a caller may send chunks to)."""

    @property
    def process_status(self) -> Any:
        """The ProcessStatus actor's address, or None (no status kept)."""

    @property
    def root(self) -> Any:
        """The RootSupervisor's address, or None."""

    def send(self, address: Any, message: Any) -> None:
        """Send ``message`` to ``address``."""

    def schedule(self, seconds: float, timer: TopicTimer) -> None:
        """Hand ``timer`` back to :meth:`TopicState.on_timer` after ``seconds``."""

    def worker(self, name: str, owner: str | None) -> Any:
        """The worker of destination ``name`` on member ``owner``, or None while it restarts."""

    def token(self, topic: str) -> int:
        """A fresh token whose reply (watermarks, status sync) is routed to ``topic``'s state."""

    def report(self, items: tuple[tuple[str, int], ...]) -> None:
        """Tell ProcessStatus these watermarks (the supervisor sends its topics' in one message)."""

    def sync_status(self, topic: str, items: tuple[tuple[str, int], ...]) -> int:
        """Have ProcessStatus store ``items`` now; return the token ``status_synced`` gets."""

    def flushed(self, topic: str, key: int, error: str | None) -> None:
        """The flush ``key`` is settled for ``topic`` (or cannot be: ``error``)."""


@attrs.define
class Blocked:
    """A chunk waiting for room under ``overflow = "block"``."""

    id: int
    message: TopicChunk


class TopicState:
    """One topic: its log, its lanes, its watermarks, its hand-over and its flushes.

    Args:
        topic: the topic.
        config: the node's configuration.
        host: the supervisor (see :class:`TopicHost`).
        members: live members of a convention; None on one node without one.
        clock: monotonic seconds (``time.monotonic``).
        wall_ns: wall-clock nanoseconds (``time.time_ns``), the log time of a chunk.
    """

    def __init__(
        self,
        topic: str,
        config: Config,
        host: TopicHost,
        members: tuple[Member, ...] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.topic = topic
        self.config = config
        self.host = host
        self.members = members
        self.clock = clock
        self.wall_ns = wall_ns
        self.wal: WriteAheadLog | None = None
        self.wal_error: str | None = None
        """Why the write-ahead log cannot be opened (None once it is open)."""
        self.wal_tries = 0
        self.lanes: dict[str, Lane] = {}
        self.owners: dict[str, str | None] = {}
        self.recovering = True
        self.recovery_token = 0
        self.held: list[TopicChunk] = []
        self.blocked: deque[Blocked] = deque()
        self.blocked_ids = itertools.count(1)
        self.flush_waiters: list[tuple[int, int]] = []
        """``(flush key, last sequence number)`` of the flushes waiting for this topic."""
        self.unsynced_replies: list[tuple[Any, LogAccepted]] = []
        self.wal_sync_pending = False
        self.wal_timer = False
        self.status_timer = False
        self.linger_timers: set[str] = set()
        self.reported: dict[str, int] = {}
        self.status_syncs: dict[int, list[int]] = {}
        self.exiting = False
        self.epoch = next(_EPOCHS)
        """Tells this state's timers from those of an earlier state of the same topic."""
        self.last_active = clock()
        """``clock()`` of the last chunk, settle or flush (for ``idle_after``)."""
        specs = config.destinations_for(topic)
        self.rows_only = any(spec.rows_only for spec in specs)
        units = [UNIT_NS[spec.log_time[1]] for spec in specs if spec.log_time is not None]
        self.log_clock = LogClock(max(units)) if units else None
        """Log times for chunks, when a destination wants rows stamped (``log_time``)."""
        self.readers: dict[str, WalReader] = {}
        """Per lane: reads back from the log the chunks the lane holds only there."""
        self.read_back_later: set[str] = set()
        for spec in specs:
            # Spill files left by earlier builds (before lanes read back from the log): the log
            # holds every unsettled chunk, so they are redundant.
            shutil.rmtree(
                os.path.join(config.data_dir, "spill", file_name(spec.name), file_name(topic)),
                ignore_errors=True,
            )
            self.lanes[spec.name] = Lane(spec, functools.partial(self._read_back, spec.name))
            self.owners[spec.name] = self._owner(spec.name)
        if members is not None:
            self._report_placement()

    def _timer(self, kind: str, value: Any) -> TopicTimer:
        return TopicTimer(self.topic, kind, value, self.epoch)

    # ------------------------------------------------------------------ setup
    def start(self) -> None:
        """Open the log and ask ProcessStatus where each destination stopped."""
        if self.open_wal():
            self._begin_recovery()
        else:
            self._retry_wal_later()

    def _owner(self, name: str) -> str | None:
        if self.members is None:
            return None
        spec = self.lanes[name].spec
        owner = owner_for(self.topic, name, spec.requires, self.members)
        if owner is None:
            self.lanes[name].counters.error(
                f"no member has the capabilities {', '.join(spec.requires)}: chunks wait on disk"
            )
            log.warning("topic %s: no member can run destination %s", self.topic, name)
        return owner

    def _report_placement(self) -> None:
        if self.host.root is not None:
            self.host.send(self.host.root, PlacementReport(self.topic, dict(self.owners)))

    def open_wal(self) -> bool:
        """Open the write-ahead log; on failure remember why (``wal_error``) and return False."""
        if self.wal is not None:
            return True
        config = self.config
        fsync = "never" if config.wal.fsync == "always" else config.wal.fsync
        try:
            self.wal = WriteAheadLog(
                os.path.join(config.data_dir, "wal"),
                self.topic,
                fsync=fsync,  # type: ignore[arg-type]
                segment_bytes=config.wal.segment_bytes,
                fsync_interval=config.wal.fsync_interval,
            )
        except Exception as exc:
            error = str(exc) if isinstance(exc, StorageError) else describe(exc)
            if error != self.wal_error:
                log.error("topic %s: cannot open its write-ahead log: %s", self.topic, error)
            self.wal_error = error
            for lane in self.lanes.values():
                lane.counters.error(f"write-ahead log: {error}")
            return False
        if self.wal_error is not None:
            log.warning("topic %s: write-ahead log open again", self.topic)
            for lane in self.lanes.values():
                if (lane.counters.last_error or "").startswith("write-ahead log"):
                    lane.counters.failing_since = None  # that failure is over
        self.wal_error = None
        self.wal_tries = 0
        if self.log_clock is not None and self.wal.last_logged is not None:
            self.log_clock.restore(*self.wal.last_logged)
        return True

    def _read_back(self, name: str, seqs: list[int]) -> list[tuple[int, list[Any]]]:
        """A lane over its bound wants chunks back from the log: read, stamped as it gets them."""
        if self.wal is None:
            raise StorageError(self.wal_error or "the write-ahead log is not open")
        reader = self.readers.get(name)
        if reader is None:
            reader = self.readers[name] = WalReader(self.wal)
        return [(seq, self._lane_rows(name, rows, ns)) for seq, ns, rows in reader.read(seqs)]

    def _lane_rows(self, name: str, rows: list[Any], logged_ns: int) -> list[Any]:
        """The rows as the destination ``name`` gets them: stamped with the log time if it asks."""
        wanted = self.lanes[name].spec.log_time
        if wanted is None:
            return rows
        return stamp_rows(rows, wanted[0], wanted[1], logged_ns)

    def _retry_wal_later(self) -> None:
        delay = min(WAL_RETRY_MAX, 2.0**self.wal_tries)
        self.wal_tries += 1
        self.host.schedule(delay, self._timer("wal-open", self.wal_tries))

    def _begin_recovery(self) -> None:
        assert self.wal is not None
        if self.host.process_status is None or self.wal.last_seq == 0:
            # an empty log has nothing to replay, whatever ProcessStatus says (marks are
            # clamped to the log's end): a new topic needs no round trip
            self.recover({})
        else:
            entities = tuple(entity(self.topic, name) for name in self.lanes)
            self.recovery_token = self.host.token(self.topic)
            self.host.send(self.host.process_status, WatermarksRequest(self.recovery_token, entities))
            self.host.schedule(RECOVERY_WAIT, self._timer("recovery", self.recovery_token))

    def watermarks(self, items: dict[str, int]) -> None:
        """Where each destination stopped (ProcessStatus's answer): replay the rest of the log."""
        if self.recovering and self.wal is not None:
            self.recover(items)

    def recover(self, items: dict[str, int]) -> None:
        """Replay from the log every chunk a destination has not settled, then the held chunks."""
        assert self.wal is not None
        self.recovering = False
        last = self.wal.last_seq
        marks = {}
        for name, lane in self.lanes.items():
            # A mark past the log's end means the log lost its tail (power failure):
            # those numbers are handed out again, so they must count as new.
            mark = min(items.get(entity(self.topic, name), 0), last)
            lane.start_after(mark)
            marks[name] = mark
            self.reported[name] = mark
        replayed = 0
        if self.lanes and last > min(marks.values()):
            for seq, logged_ns, rows in self.wal.chunks_from(min(marks.values())):
                for name, lane in self.lanes.items():
                    if seq > marks[name]:
                        lane.counters.add("replayed", len(rows))
                        stamped = self._lane_rows(name, rows, logged_ns)
                        self._hand_over(name, lane.offer(seq, stamped))
                replayed += 1
        if replayed:
            log.warning("topic %s: replaying %d chunks from the write-ahead log", self.topic, replayed)
        held, self.held = self.held, []
        for chunk in held:
            self.chunk(chunk)

    # ------------------------------------------------------------------ workers
    def membership(self, members: tuple[Member, ...]) -> list[str]:
        """Members joined or left: return the destinations whose owner changed (resent in full)."""
        self.members = members
        moved = []
        for name in self.lanes:
            owner = self._owner(name)
            if owner != self.owners.get(name):
                log.warning("topic %s: destination %s moves to %s", self.topic, name, owner)
                self.owners[name] = owner
                moved.append(name)
                self.worker_back(name)
        if moved:
            self._report_placement()
        return moved

    def worker_exited(self, name: str) -> None:
        """The worker of ``name`` died: count it; its chunks wait in the lane."""
        lane = self.lanes[name]
        lane.counters.add("restarts")
        lane.counters.error(f"worker for {name} exited; restarted")

    def worker_back(self, name: str) -> None:
        """A new worker for ``name``: hand it every unsettled chunk again, in order."""
        if self.exiting or name not in self.lanes:
            return
        self.lanes[name].reset_handoff()
        self.push(name)

    def _hand_over(self, name: str, chunks: list[Chunk]) -> None:
        self.lanes[name].queue_handoff(chunks)
        self.push(name)
        self._retry_read_back(name)

    def _retry_read_back(self, name: str) -> None:
        """A lane could not read its chunks back from the log: try again in a second."""
        if self.lanes[name].read_error and name not in self.read_back_later:
            self.read_back_later.add(name)
            self.host.schedule(1.0, self._timer("read-back", name))

    def push(self, name: str, now: bool = False) -> None:
        """Send the worker what waits for it, merged, keeping at most a window of groups out.

        Unless ``now``, a hand-over soon after the last one waits up to the destination's
        ``linger`` on a timer, so that chunks logged one after another go as one group.
        """
        address = self.host.worker(name, self.owners.get(name))
        if address is None:
            return  # restarting: the chunks stay in the lane and are handed over again
        lane = self.lanes[name]
        spec = lane.spec
        # A worker that buffers does its own batching; send_async runs max_in_flight at once.
        window = 1 << 30 if spec.buffer is not None else (spec.max_in_flight if spec.send_async else 1)
        if len(lane.handed_groups) >= window:
            return  # the worker is busy: its ChunkSettled or AttemptFailed pushes again
        if not now and not self.flush_waiters:  # a flush waits: no lingering until answered
            wait = lane.linger_left(self.clock(), MERGE_ROWS)
            if wait > 0:
                if name not in self.linger_timers:
                    self.linger_timers.add(name)
                    self.host.schedule(wait, self._timer("linger", name))
                return
        while True:
            group = lane.next_group(window, MERGE_ROWS)
            if not group:
                return
            lane.last_handoff = self.clock()
            if len(group) == 1:
                self.host.send(address, DeliverChunk(self.topic, *group[0]))
            else:
                self.host.send(address, DeliverChunks(self.topic, group))

    # ------------------------------------------------------------------ intake
    def chunk(self, message: TopicChunk) -> None:
        """Log a chunk and hand it to every lane, or hold it under ``block``."""
        self.last_active = self.clock()
        if self.exiting:
            self.reject(message, "NotRunning", "the node is shutting down")
            return
        if self.wal is None:
            if not self.open_wal():
                self.reject(message, "StorageError", self.wal_error or "write-ahead log unavailable")
                return
            self._begin_recovery()
        if self.recovering:
            self.held.append(message)
        elif self.blocked or not self._room_for(len(message.rows)):
            self._block(message)
        else:
            self._admit(message)

    def _room_for(self, rows: int) -> bool:
        return all(lane.has_room(rows) for lane in self.lanes.values() if lane.spec.overflow == "block")

    def reject(self, message: TopicChunk, error: str, text: str) -> None:
        """Answer a chunk with :class:`LogRejected` (or log it, without a reply address)."""
        if message.reply_to is not None:
            self.host.send(message.reply_to, LogRejected(error, text, message.ref))
        else:
            log.warning("topic %s: a chunk without reply address rejected: %s", self.topic, text)

    def _admit(self, message: TopicChunk) -> None:
        assert self.wal is not None
        rows = message.rows
        logged_ns = self.log_clock.take(len(rows)) if self.log_clock is not None else self.wall_ns()
        try:
            seq = self._append(rows, logged_ns)
        except StorageError as exc:
            log.error("topic %s: %s", self.topic, exc)
            self.reject(message, "StorageError", str(exc))
            return
        except Exception as exc:
            log.error("topic %s: write-ahead log append failed: %s", self.topic, describe(exc))
            name = type(exc).__name__ if type(exc).__name__ == "InvalidData" else "DataLoggerError"
            self.reject(message, name, f"write-ahead log: {describe(exc)}")
            return
        policy = self.config.wal.fsync
        reply = LogAccepted(self.topic, seq, message.ref, self.host.address)
        if policy == "always":
            if message.reply_to is not None:
                self.unsynced_replies.append((message.reply_to, reply))
            if not self.wal_sync_pending:
                self.wal_sync_pending = True
                self.host.send(self.host.address, WalSync(self.topic))
        elif message.reply_to is not None:
            # Answer before handing the chunk on: the caller waits on this send only.
            self.host.send(message.reply_to, reply)
        for name, lane in self.lanes.items():
            self._hand_over(name, lane.offer(seq, self._lane_rows(name, rows, logged_ns)))
        if policy == "interval" and not self.wal_timer:
            self.wal_timer = True
            self.host.schedule(self.config.wal.fsync_interval, self._timer("wal", 0))

    def _append(self, rows: list[Any], logged_ns: int) -> int:
        """Append to the log; when that fails, free the settled segments and try once more."""
        assert self.wal is not None
        try:
            return self.wal.append(rows, logged_ns)
        except StorageError:
            before = self.wal.bytes_on_disk
            self.report_status()  # deletes what every destination has settled
            if self.wal.bytes_on_disk >= before:
                raise
            return self.wal.append(rows, logged_ns)

    def wal_sync(self) -> None:
        """Group commit: one fsync for every chunk appended since the last one."""
        self.wal_sync_pending = False
        replies, self.unsynced_replies = self.unsynced_replies, []
        if self.wal is None:
            return
        try:
            self.wal.sync(force=True)
        except StorageError as exc:
            log.error("topic %s: %s", self.topic, exc)
            text = f"{exc} (the chunk may still be delivered, but it is not safe on disk)"
            for reply_to, reply in replies:
                self.host.send(reply_to, LogRejected("StorageError", text, reply.ref))
            return
        for reply_to, reply in replies:
            self.host.send(reply_to, reply)

    def _block(self, message: TopicChunk) -> None:
        entry = Blocked(next(self.blocked_ids), message)
        self.blocked.append(entry)
        timeout = min(
            (lane.spec.block_timeout for lane in self.lanes.values() if lane.spec.overflow == "block"),
            default=0.0,
        )
        self.host.schedule(timeout, self._timer("blocked", entry.id))

    def _admit_blocked(self) -> None:
        while self.blocked and self._room_for(len(self.blocked[0].message.rows)):
            self._admit(self.blocked.popleft().message)

    # ------------------------------------------------------------------ outcomes
    def settled(self, message: ChunkSettled) -> None:
        """A worker finished with chunks: count, free room, report progress, wake flushes."""
        lane = self.lanes.get(message.destination)
        if lane is None:
            return
        self.last_active = self.clock()
        counters = lane.counters
        counters.add("delivered", message.delivered_rows)
        counters.add("dead_lettered", message.dead_rows)
        counters.latencies.append(message.latency)
        if message.delivered_rows:
            counters.success()
        if message.dead_rows:
            counters.add("failed")  # the attempt that gave up (retried ones were counted already)
        if message.error:
            counters.error(message.error, failing=message.delivered_rows == 0)
        self._hand_over(message.destination, lane.settle(message.seqs))
        if not self.status_timer and lane.watermark() > self.reported.get(message.destination, 0):
            self.status_timer = True
            self.host.schedule(STATUS_EVERY, self._timer("status", 0))
        self._admit_blocked()
        self._answer_flushes()

    def attempt_failed(self, message: AttemptFailed) -> None:
        """Count a failed attempt that will be retried."""
        lane = self.lanes.get(message.destination)
        if lane is not None:
            lane.counters.add("failed")
            lane.counters.add("retried")
            lane.counters.error(message.error)
            lane.released(message.seqs)  # parked for its retry: later chunks may go
            self.push(message.destination)

    def status_items(self) -> tuple[tuple[str, int], ...]:
        """``(entity, watermark)`` of every destination."""
        return tuple((entity(self.topic, name), lane.watermark()) for name, lane in self.lanes.items())

    def report_status(self) -> None:
        """Report watermarks that moved to ProcessStatus; delete settled log segments."""
        items = []
        for name, lane in self.lanes.items():
            mark = lane.watermark()
            if mark > self.reported.get(name, 0):
                self.reported[name] = mark
                items.append((entity(self.topic, name), mark))
        if items and self.host.process_status is not None:
            self.host.report(tuple(items))
        if self.wal is not None and self.lanes and not self.recovering:
            self.wal.remove_through(min(self.reported.values()))

    # ------------------------------------------------------------------ timers
    def on_timer(self, kind: str, value: Any) -> None:
        """A timer this state scheduled is due."""
        if kind == "linger":
            self.linger_timers.discard(value)
            if value in self.lanes:
                self.push(value, now=True)
        elif kind == "wal":
            self.wal_timer = False
            self.sync_wal()
        elif kind == "wal-open" and value == self.wal_tries and self.wal is None:
            if self.open_wal():
                self._begin_recovery()
            else:
                self._retry_wal_later()
        elif kind == "status":
            self.status_timer = False
            self.report_status()
        elif kind == "read-back":
            self.read_back_later.discard(value)
            if value in self.lanes:
                self._hand_over(value, self.lanes[value].refill())
        elif kind == "recovery" and self.recovering and self.wal is not None and value == self.recovery_token:
            log.warning("topic %s: no answer from ProcessStatus; replaying the whole log", self.topic)
            self.recover({})
        elif kind == "blocked":
            self._unblock_expired(value)
        elif kind == "synced":  # ProcessStatus did not confirm: answer the flushes anyway
            self.status_synced(value)

    def sync_wal(self, force: bool = False) -> None:
        """Apply the fsync policy now (``force``: fsync whatever it is); errors are logged."""
        if self.wal is None:
            return
        try:
            self.wal.sync(force=force)
        except StorageError as exc:
            log.error("topic %s: %s", self.topic, exc)

    def _unblock_expired(self, blocked_id: int) -> None:
        for entry in list(self.blocked):
            if entry.id == blocked_id:
                self.blocked.remove(entry)
                self.reject(
                    entry.message,
                    "Backpressure",
                    f"topic {self.topic}: a destination with overflow=block stayed full",
                )
                self._admit_blocked()
                return

    # ------------------------------------------------------------------ queries
    def stats(self) -> dict[str, dict[str, Any]]:
        """The counters of every lane, as ``stats()`` shows them."""
        logged = self.wal.last_seq if self.wal is not None else max(
            (lane.max_seq for lane in self.lanes.values()), default=0
        )
        wal = {
            "wal_bytes": self.wal.bytes_on_disk if self.wal is not None else 0,
            "wal_corrupt_records": self.wal.corrupt_records if self.wal is not None else 0,
            "wal_error": self.wal_error,
        }
        return {
            name: {**lane.snapshot(), **wal, "logged_seq": logged, "settled_seq": lane.watermark()}
            for name, lane in self.lanes.items()
        }

    def flush(self, key: int, urgent: bool = True) -> None:
        """Call ``host.flushed(topic, key, ...)`` once every chunk numbered so far is settled."""
        self.last_active = self.clock()
        for name in self.lanes:
            self.push(name, now=True)  # a flush does not wait out a linger
        if self.wal is None:  # unsettled chunks may wait in a log that cannot be read
            self.host.flushed(self.topic, key, self.wal_error or "write-ahead log unavailable")
            return
        self.flush_waiters.append((key, self.wal.last_seq))
        self._answer_flushes()

    def _answer_flushes(self) -> None:
        if not self.flush_waiters or self.recovering:
            return
        remaining = []
        ready = []
        for key, mark in self.flush_waiters:
            if all(lane.settled_through(mark) for lane in self.lanes.values()):
                ready.append(key)
            else:
                remaining.append((key, mark))
        self.flush_waiters = remaining
        if ready:
            self._sync_status(ready)

    def _sync_status(self, ready: list[int]) -> None:
        """Have ProcessStatus store where every destination stands, then answer the flushes,
        so that ``last_processed()`` right after ``flush()`` is current."""
        if self.host.process_status is None:
            for key in ready:
                self.host.flushed(self.topic, key, None)
            return
        for name, lane in self.lanes.items():
            self.reported[name] = max(self.reported.get(name, 0), lane.watermark())
        token = self.host.sync_status(self.topic, self.status_items())
        self.status_syncs[token] = ready
        self.host.schedule(STATUS_SYNC_WAIT, self._timer("synced", token))

    def status_synced(self, token: int, confirmed: bool = False) -> None:
        """The status is stored (or the wait for it ended): answer the flushes that waited."""
        waiting = self.status_syncs.pop(token, None)
        if waiting is None:
            return
        for key in waiting:
            self.host.flushed(self.topic, key, None)
        if confirmed and self.wal is not None and self.lanes:
            self.wal.remove_through(min(self.reported.values()))

    def restore_counters(self, counters: dict[str, dict[str, Any]]) -> None:
        """Go on counting from ``counters`` (what :meth:`release` returned for this topic)."""
        for name, snapshot in counters.items():
            lane = self.lanes.get(name)
            if lane is None:
                continue
            for key in COUNTER_NAMES:
                lane.counters.values[key] += int(snapshot.get(key) or 0)
            lane.counters.last_error = snapshot.get("last_error")
            lane.counters.last_error_at = snapshot.get("last_error_at")
            lane.counters.last_success_at = snapshot.get("last_success_at")

    # ------------------------------------------------------------------ idle and shutdown
    def settled_all(self) -> bool:
        """True when nothing of this topic is unsettled, waiting or owed an answer."""
        return (
            not self.recovering
            and self.wal is not None
            and not self.blocked
            and not self.held
            and not self.flush_waiters
            and not self.unsynced_replies
            and not self.status_syncs
            and all(lane.buffered_rows() == 0 and not lane.waiting for lane in self.lanes.values())
        )

    def idle(self, now: float, idle_after: float) -> bool:
        """True when the topic may be released: settled, and quiet for ``idle_after`` seconds."""
        return now - self.last_active >= idle_after and self.settled_all()

    def release(self) -> dict[str, dict[str, Any]]:
        """Report the final watermarks, close the log; return the last counters (for stats).

        Call only when :meth:`idle`. The topic comes back as a new state on its next
        chunk: its log and the watermarks ProcessStatus keeps are intact.
        """
        self.report_status()
        counters = self.stats()
        self.exiting = True
        if self.wal is not None:
            self.wal.close()
            self.wal = None
        return counters

    def spill(self) -> tuple[int, tuple[tuple[str, int], ...]]:
        """Shutdown: sync the log, answer waiting callers; return unsettled rows and status items."""
        self.exiting = True
        self.sync_wal(force=True)
        for reply_to, reply in self.unsynced_replies:
            self.host.send(reply_to, reply)
        self.unsynced_replies = []
        rows = sum(lane.buffered_rows() for lane in self.lanes.values())
        for entry in self.blocked:
            self.reject(entry.message, "NotRunning", "the node is shutting down")
        self.blocked.clear()
        return rows, self.status_items()

    def close(self) -> None:
        """Close files (the actor is stopping)."""
        self.exiting = True
        if self.wal is not None:
            self.wal.close()

    def release_handle(self) -> None:
        """Close the log's open file until the next append (bounds open files)."""
        if self.wal is not None:
            self.wal.release_handle()  # closing the file fsyncs it (unless fsync = "never")
