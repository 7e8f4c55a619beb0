"""TopicSupervisor: the supervision tree of one topic.

Created by the RootSupervisor the first time a topic is logged. It

- appends every accepted chunk to the topic's write-ahead log, which numbers
  it, before the caller is answered;
- owns one DestinationWorker per destination that takes the topic, and keeps
  each chunk in that destination's :class:`~datalogger.lane.Lane` until the
  worker reports it settled; a worker that dies is restarted and handed every
  chunk it held again, in order;
- reports to the ProcessStatus actor, per destination, the sequence number up
  to which every chunk is settled, and deletes log segments every destination
  is past;
- on start, replays from the log every chunk a destination had not settled,
  in order, before any new chunk.

When the log cannot be opened (a read-only or full disk, a missing
permission) the supervisor does not wedge: it answers every chunk with
:class:`LogRejected` (``StorageError`` and the reason), answers flushes with
the reason and shows it in ``stats()`` as ``wal_error``, and tries to open the
log again on every chunk and on a timer, until it works.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import time
from collections import deque
from datetime import timedelta
from typing import Any

import attrs
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from ..config import Config
from ..delivery import describe
from ..exceptions import InvalidData, StorageError
from ..lane import Lane
from ..messages import (
    AttemptFailed,
    ChunkSettled,
    DeliverChunk,
    DeliverChunks,
    DirectLog,
    ItemsProcessed,
    LogAccepted,
    LogRejected,
    Membership,
    PlacementReport,
    ProcessStatusMoved,
    ProcessStatusSync,
    ProcessStatusSynced,
    RouteStatus,
    StartTopic,
    StartWorker,
    TopicChunk,
    TopicFlushed,
    TopicFlushRequest,
    TopicSpilled,
    TopicSpillRequest,
    TopicStatsReply,
    TopicStatsRequest,
    WalSync,
    WatermarksReply,
    WatermarksRequest,
    WorkerFlush,
)
from ..names import file_name
from ..placement import Member, owner_for
from ..stamps import UNIT_NS, LogClock, stamp_rows
from ..validation import require_rows
from ..wal import WalReader, WriteAheadLog
from .destination_worker import DestinationWorker

log = logging.getLogger("datalogger.topic")

RESTART_WINDOW = 10.0
"""Seconds over which worker restarts are counted for back-off."""
RESTART_BURST = 5
"""Restarts within the window before a restart is delayed."""
RESTART_DELAY = 1.0
"""Seconds a restart is delayed once the burst is exceeded."""
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


def entity(topic: str, destination: str) -> str:
    """The process-status entity of a destination for a topic."""
    return f"{topic}/{destination}"


@attrs.define
class Blocked:
    """A chunk waiting for room under ``overflow = "block"``."""

    id: int
    message: TopicChunk


class TopicSupervisor(ActorTypeDispatcher):
    """Supervises the workers of one topic and owns its write-ahead log."""

    def __init__(self) -> None:
        super().__init__()
        self.topic = ""
        self.config: Config | None = None
        self.wal: WriteAheadLog | None = None
        self.process_status: Any = None
        self.lanes: dict[str, Lane] = {}
        self.readers: dict[str, WalReader] = {}
        """Per lane: reads back from the log the chunks the lane holds only there."""
        self.workers: dict[str, Any] = {}
        self.restarts: dict[str, deque[float]] = {}
        self.recovering = True
        self.held: list[TopicChunk] = []
        self.blocked: deque[Blocked] = deque()
        self.blocked_ids = itertools.count(1)
        self.flush_waiters: list[tuple[int, int, Any]] = []
        self.unsynced_replies: list[tuple[Any, LogAccepted]] = []
        self.wal_sync_pending = False
        self.wal_timer = False
        self.status_timer = False
        self.linger_timers: set[str] = set()
        self._read_back_later: set[str] = set()
        self.reported: dict[str, int] = {}
        self.exiting = False
        self.members: tuple[Member, ...] | None = None
        self.owners: dict[str, str | None] = {}
        self.root: Any = None
        self.status_syncs: dict[int, list[tuple[int, Any]]] = {}
        self.sync_ids = itertools.count(1)
        self.wal_error: str | None = None
        """Why the write-ahead log cannot be opened (None once it is open)."""
        self.wal_tries = 0
        self.rows_only = True
        self.clock: LogClock | None = None
        """Log times for chunks, when a destination wants rows stamped (``log_time``)."""

    # ------------------------------------------------------------------ setup
    def receiveMsg_StartTopic(self, message: StartTopic, sender: Any) -> None:
        """Start a worker per destination, open the log, ask where each one stopped.

        A second StartTopic (or Thespian's retry of this one) changes nothing.
        When the log cannot be opened (the disk is read-only, full, not ours),
        the topic stays up: chunks are refused with a ``StorageError`` naming the
        reason, and the log is opened again on the next chunk and on a timer,
        so the topic heals by itself once the fault is gone.
        """
        if self.config is not None:
            return
        try:
            self._take_up(message, sender)
        except BaseException:
            # Leave the actor as it was, so Thespian's retry of the message starts afresh.
            for address in self.workers.values():
                self.send(address, ActorExitRequest())
            self.workers.clear()
            self.lanes.clear()
            self.restarts.clear()
            self.config = None
            raise

    def _take_up(self, message: StartTopic, sender: Any) -> None:
        self.topic = message.topic
        config: Config = message.config
        self.config = config
        self.process_status = message.process_status
        self.members = message.members
        self.root = sender
        specs = config.destinations_for(message.topic)
        self.rows_only = any(spec.rows_only for spec in specs)
        units = [UNIT_NS[spec.log_time[1]] for spec in specs if spec.log_time is not None]
        self.clock = LogClock(max(units)) if units else None
        for spec in specs:
            # Spill files left by earlier builds (before lanes read back from the log): the log holds
            # every unsettled chunk, so they are redundant.
            shutil.rmtree(
                os.path.join(config.data_dir, "spill", file_name(spec.name), file_name(message.topic)),
                ignore_errors=True,
            )
            self.lanes[spec.name] = Lane(spec, functools.partial(self._read_back, spec.name))
            self.restarts[spec.name] = deque()
            self._start_worker(spec.name)
        if self._open_wal():
            self._begin_recovery()
        else:
            self._retry_wal_later()

    def _open_wal(self) -> bool:
        """Open the write-ahead log; on failure remember why (``wal_error``) and return False."""
        if self.wal is not None:
            return True
        assert self.config is not None
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
        if self.clock is not None and self.wal.last_logged is not None:
            self.clock.restore(*self.wal.last_logged)
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
        self.wakeupAfter(timedelta(seconds=delay), ("wal-open", self.wal_tries))

    def _begin_recovery(self) -> None:
        if self.process_status is None:
            self._recover({})
        else:
            entities = tuple(entity(self.topic, name) for name in self.lanes)
            self.send(self.process_status, WatermarksRequest(0, entities))
            self.wakeupAfter(timedelta(seconds=RECOVERY_WAIT), ("recovery", 0))

    def receiveMsg_WatermarksReply(self, message: WatermarksReply, sender: Any) -> None:
        """Where each destination stopped: replay the rest of the log."""
        if self.recovering and self.wal is not None:
            self._recover(message.items)

    def _recover(self, items: dict[str, int]) -> None:
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
            self.receiveMsg_TopicChunk(chunk, None)

    def _start_worker(self, name: str) -> None:
        assert self.config is not None
        lane = self.lanes[name]
        spec = lane.spec
        if self.members is None:  # one process, no convention: the worker runs here
            address = self.createActor(DestinationWorker)
        else:
            owner = owner_for(self.topic, name, spec.requires, self.members)
            self.owners[name] = owner
            self._report_placement()
            if owner is None:
                lane.counters.error(
                    f"no member has the capabilities {', '.join(spec.requires)}: chunks wait on disk"
                )
                log.warning("topic %s: no member can run destination %s", self.topic, name)
                return
            address = self.createActor(
                DestinationWorker,
                targetActorRequirements={"node": owner, "requires": list(spec.requires)},
            )
        self.workers[name] = address
        self.send(address, StartWorker(self.topic, spec, self.config.data_dir))

    def _report_placement(self) -> None:
        if self.root is not None:
            self.send(self.root, PlacementReport(self.topic, dict(self.owners)))

    def receiveMsg_Membership(self, message: Membership, sender: Any) -> None:
        """Members joined or left: move each destination whose owner changed, resending its chunks."""
        self.members = tuple(message.members)
        if self.exiting:
            return
        for name, lane in self.lanes.items():
            owner = owner_for(self.topic, name, lane.spec.requires, self.members)
            if owner == self.owners.get(name) and name in self.workers:
                continue
            old = self.workers.pop(name, None)
            if old is not None:
                self.send(old, ActorExitRequest())
            log.warning("topic %s: destination %s moves to %s", self.topic, name, owner)
            self._start_worker(name)
            lane.reset_handoff()
            self._push(name)

    def _hand_over(self, name: str, chunks: list[tuple[int, list[dict[str, Any]]]]) -> None:
        lane = self.lanes[name]
        lane.queue_handoff(chunks)
        self._push(name)
        self._retry_read_back(name)

    def _retry_read_back(self, name: str) -> None:
        """A lane could not read its chunks back from the log: try again in a second."""
        if self.lanes[name].read_error and name not in self._read_back_later:
            self._read_back_later.add(name)
            self.wakeupAfter(timedelta(seconds=1.0), ("read-back", name))

    def _push(self, name: str, now: bool = False) -> None:
        """Send the worker what waits for it, merged, keeping at most a window of groups out.

        Unless ``now``, a hand-over soon after the last one waits up to the destination's
        ``linger`` on a timer, so that chunks logged one after another go as one group:
        every message to the worker and back costs this actor time the next caller waits.
        """
        address = self.workers.get(name)
        if address is None:
            return  # restarting: the chunks stay in the lane and are handed over again
        lane = self.lanes[name]
        spec = lane.spec
        # A worker that buffers does its own batching; send_async runs max_in_flight at once.
        window = 1 << 30 if spec.buffer is not None else (spec.max_in_flight if spec.send_async else 1)
        if len(lane.handed_groups) >= window:
            return  # the worker is busy: its ChunkSettled or AttemptFailed pushes again
        if not now and not self.flush_waiters:  # a flush waits: no lingering until answered
            wait = lane.linger_left(time.monotonic(), MERGE_ROWS)
            if wait > 0:
                if name not in self.linger_timers:
                    self.linger_timers.add(name)
                    self.wakeupAfter(timedelta(seconds=wait), ("linger", name))
                return
        while True:
            group = lane.next_group(window, MERGE_ROWS)
            if not group:
                return
            lane.last_handoff = time.monotonic()
            if len(group) == 1:
                self.send(address, DeliverChunk(*group[0]))
            else:
                self.send(address, DeliverChunks(group))

    # ------------------------------------------------------------------ intake
    def receiveMsg_DirectLog(self, message: DirectLog, sender: Any) -> None:
        """A chunk sent straight here by a client that learnt this address (rows checked there)."""
        if message.topic != self.topic:
            # a route learnt from an earlier node: this address is another topic's now
            self.send(sender, RouteStatus(message.topic, False, message.ref))
            return
        if self.exiting:
            self.send(sender, LogRejected("NotRunning", "the node is shutting down", message.ref))
            return
        chunk = TopicChunk(self.topic, message.rows, sender, message.ref)
        if self.rows_only:  # a client without the configuration checked only the values
            try:
                require_rows(message.rows, self.topic)
            except InvalidData as exc:
                self._reject(chunk, "InvalidData", str(exc))
                return
        self.receiveMsg_TopicChunk(chunk, sender)

    def receiveMsg_TopicChunk(self, message: TopicChunk, sender: Any) -> None:
        """Log a chunk and hand it to every lane, or hold it under ``block``."""
        if self.wal is None:
            if not self._open_wal():
                self._reject(message, "StorageError", self.wal_error or "write-ahead log unavailable")
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

    def _reject(self, message: TopicChunk, error: str, text: str) -> None:
        if message.reply_to is not None:
            self.send(message.reply_to, LogRejected(error, text, message.ref))
        else:
            log.warning("topic %s: a chunk without reply address rejected: %s", self.topic, text)

    def _admit(self, message: TopicChunk) -> None:
        assert self.wal is not None and self.config is not None
        logged_ns = self.clock.take(len(message.rows)) if self.clock is not None else time.time_ns()
        try:
            seq = self._append(message.rows, logged_ns)
        except StorageError as exc:
            log.error("topic %s: %s", self.topic, exc)
            self._reject(message, "StorageError", str(exc))
            return
        except Exception as exc:
            log.error("topic %s: write-ahead log append failed: %s", self.topic, describe(exc))
            name = type(exc).__name__ if type(exc).__name__ == "InvalidData" else "DataLoggerError"
            self._reject(message, name, f"write-ahead log: {describe(exc)}")
            return
        policy = self.config.wal.fsync
        reply = LogAccepted(self.topic, seq, message.ref, self.myAddress)
        if policy == "always":
            if message.reply_to is not None:
                self.unsynced_replies.append((message.reply_to, reply))
            if not self.wal_sync_pending:
                self.wal_sync_pending = True
                self.send(self.myAddress, WalSync())
        elif message.reply_to is not None:
            # Answer before handing the chunk on: the caller waits on this send only.
            self.send(message.reply_to, reply)
        for name, lane in self.lanes.items():
            self._hand_over(name, lane.offer(seq, self._lane_rows(name, message.rows, logged_ns)))
        if policy == "interval" and not self.wal_timer:
            self.wal_timer = True
            self.wakeupAfter(timedelta(seconds=self.config.wal.fsync_interval), ("wal", 0))

    def _append(self, rows: list[Any], logged_ns: int) -> int:
        """Append to the log; when that fails, free the settled segments and try once more."""
        assert self.wal is not None
        try:
            return self.wal.append(rows, logged_ns)
        except StorageError:
            before = self.wal.bytes_on_disk
            self._report_status()  # deletes what every destination has settled
            if self.wal.bytes_on_disk >= before:
                raise
            return self.wal.append(rows, logged_ns)

    def receiveMsg_WalSync(self, message: WalSync, sender: Any) -> None:
        """Group commit: one fsync for every chunk appended since the last one."""
        assert self.wal is not None
        self.wal_sync_pending = False
        replies, self.unsynced_replies = self.unsynced_replies, []
        try:
            self.wal.sync(force=True)
        except StorageError as exc:
            log.error("topic %s: %s", self.topic, exc)
            text = f"{exc} (the chunk may still be delivered, but it is not safe on disk)"
            for reply_to, reply in replies:
                self.send(reply_to, LogRejected("StorageError", text, reply.ref))
            return
        for reply_to, reply in replies:
            self.send(reply_to, reply)

    def _block(self, message: TopicChunk) -> None:
        entry = Blocked(next(self.blocked_ids), message)
        self.blocked.append(entry)
        timeout = min(
            (lane.spec.block_timeout for lane in self.lanes.values() if lane.spec.overflow == "block"),
            default=0.0,
        )
        self.wakeupAfter(timedelta(seconds=timeout), ("blocked", entry.id))

    def _admit_blocked(self) -> None:
        while self.blocked and self._room_for(len(self.blocked[0].message.rows)):
            self._admit(self.blocked.popleft().message)

    # ------------------------------------------------------------------ outcomes
    def receiveMsg_ChunkSettled(self, message: ChunkSettled, sender: Any) -> None:
        """A worker finished with chunks: count, free room, report progress, wake flushes."""
        lane = self.lanes.get(message.destination)
        if lane is None:
            return
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
            self.wakeupAfter(timedelta(seconds=STATUS_EVERY), ("status", 0))
        self._admit_blocked()
        self._answer_flushes()

    def receiveMsg_AttemptFailed(self, message: AttemptFailed, sender: Any) -> None:
        """Count a failed attempt that will be retried."""
        lane = self.lanes.get(message.destination)
        if lane is not None:
            lane.counters.add("failed")
            lane.counters.add("retried")
            lane.counters.error(message.error)
            lane.released(message.seqs)  # parked for its retry: later chunks may go
            self._push(message.destination)

    def _status_items(self) -> tuple[tuple[str, int], ...]:
        return tuple((entity(self.topic, name), lane.watermark()) for name, lane in self.lanes.items())

    def _report_status(self) -> None:
        items = []
        for name, lane in self.lanes.items():
            mark = lane.watermark()
            if mark > self.reported.get(name, 0):
                self.reported[name] = mark
                items.append((entity(self.topic, name), mark))
        if items and self.process_status is not None:
            self.send(self.process_status, ItemsProcessed(tuple(items)))
        if self.wal is not None and self.lanes:
            self.wal.remove_through(min(self.reported.values()))

    def receiveMsg_ProcessStatusMoved(self, message: ProcessStatusMoved, sender: Any) -> None:
        """ProcessStatus restarted: send it where every destination stands."""
        self.process_status = message.address
        self.send(self.process_status, ItemsProcessed(self._status_items()))

    # ------------------------------------------------------------------ supervision
    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """Restart a dead worker and give it back every chunk it held."""
        for name, address in list(self.workers.items()):
            if address == message.childAddress:
                del self.workers[name]
                if self.exiting:
                    return
                lane = self.lanes[name]
                lane.counters.add("restarts")
                lane.counters.error(f"worker for {name} exited; restarted")
                log.warning("worker %s/%s exited; restarting", self.topic, name)
                history = self.restarts[name]
                now = time.monotonic()
                history.append(now)
                while history and now - history[0] > RESTART_WINDOW:
                    history.popleft()
                if len(history) > RESTART_BURST:
                    self.wakeupAfter(timedelta(seconds=RESTART_DELAY), ("restart", name))
                else:
                    self._restart(name)
                return

    def _restart(self, name: str) -> None:
        if self.exiting or name in self.workers:
            return
        self._start_worker(name)
        self.lanes[name].reset_handoff()
        self._push(name)

    # ------------------------------------------------------------------ timers
    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Hand-over lingers, log fsyncs, status reports, block time-outs, restarts, recovery time-out."""
        kind, value = message.payload
        if kind == "linger":
            self.linger_timers.discard(value)
            if value in self.lanes:
                self._push(value, now=True)
        elif kind == "wal":
            self.wal_timer = False
            self._sync_wal()
        elif kind == "wal-open" and value == self.wal_tries and self.wal is None:
            if self._open_wal():
                self._begin_recovery()
            else:
                self._retry_wal_later()
        elif kind == "status":
            self.status_timer = False
            self._report_status()
        elif kind == "read-back":
            self._read_back_later.discard(value)
            if value in self.lanes:
                self._hand_over(value, self.lanes[value].refill())
                self._retry_read_back(value)
        elif kind == "restart":
            self._restart(value)
        elif kind == "recovery" and self.recovering:
            log.warning("topic %s: no answer from ProcessStatus; replaying the whole log", self.topic)
            self._recover({})
        elif kind == "blocked":
            self._unblock_expired(value)
        elif kind == "synced":  # ProcessStatus did not confirm: answer the flushes anyway
            self.receiveMsg_ProcessStatusSynced(ProcessStatusSynced(value), None)

    def _sync_wal(self, force: bool = False) -> None:
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
                if entry.message.reply_to is not None:
                    self.send(
                        entry.message.reply_to,
                        LogRejected(
                            "Backpressure",
                            f"topic {self.topic}: a destination with overflow=block stayed full",
                            entry.message.ref,
                        ),
                    )
                self._admit_blocked()
                return

    # ------------------------------------------------------------------ queries
    def receiveMsg_TopicStatsRequest(self, message: TopicStatsRequest, sender: Any) -> None:
        """Report the counters of every lane."""
        logged = self.wal.last_seq if self.wal is not None else max(
            (lane.max_seq for lane in self.lanes.values()), default=0
        )
        wal = {
            "wal_bytes": self.wal.bytes_on_disk if self.wal is not None else 0,
            "wal_corrupt_records": self.wal.corrupt_records if self.wal is not None else 0,
            "wal_error": self.wal_error,
        }
        stats = {
            name: {
                **lane.snapshot(),
                **wal,
                "logged_seq": logged,
                "settled_seq": lane.watermark(),
            }
            for name, lane in self.lanes.items()
        }
        self.send(sender, TopicStatsReply(message.token, self.topic, stats, os.getpid()))

    def receiveMsg_TopicFlushRequest(self, message: TopicFlushRequest, sender: Any) -> None:
        """Answer once every chunk numbered so far is settled."""
        for name in self.lanes:
            self._push(name, now=True)  # a flush does not wait out a linger
        if message.urgent:
            for address in self.workers.values():
                self.send(address, WorkerFlush())
        if self.wal is None:  # unsettled chunks may wait in a log that cannot be read
            self.send(sender, TopicFlushed(message.token, self.topic, self.wal_error))
            return
        last = self.wal.last_seq
        self.flush_waiters.append((message.token, last, sender))
        self._answer_flushes()

    def _answer_flushes(self) -> None:
        if not self.flush_waiters:
            return
        if self.recovering:
            return
        remaining = []
        ready = []
        for token, watermark, reply_to in self.flush_waiters:
            if all(lane.settled_through(watermark) for lane in self.lanes.values()):
                ready.append((token, reply_to))
            else:
                remaining.append((token, watermark, reply_to))
        self.flush_waiters = remaining
        if ready:
            self._sync_status(ready)

    def _sync_status(self, ready: list[tuple[int, Any]]) -> None:
        """Have ProcessStatus store where every destination stands, then answer the flushes,
        so that ``last_processed()`` right after ``flush()`` is current."""
        if self.process_status is None:
            for token, reply_to in ready:
                self.send(reply_to, TopicFlushed(token, self.topic))
            return
        for name, lane in self.lanes.items():
            self.reported[name] = max(self.reported.get(name, 0), lane.watermark())
        key = next(self.sync_ids)
        self.status_syncs[key] = ready
        self.send(self.process_status, ProcessStatusSync(self._status_items(), key))
        self.wakeupAfter(timedelta(seconds=STATUS_SYNC_WAIT), ("synced", key))

    def receiveMsg_ProcessStatusSynced(self, message: ProcessStatusSynced, sender: Any) -> None:
        """The status is stored: answer the flushes that waited for it."""
        waiting = self.status_syncs.pop(message.token, None)
        if waiting is None:
            return
        for token, reply_to in waiting:
            self.send(reply_to, TopicFlushed(token, self.topic))
        if sender is not None and self.wal is not None and self.lanes:
            self.wal.remove_through(min(self.reported.values()))

    def receiveMsg_TopicSpillRequest(self, message: TopicSpillRequest, sender: Any) -> None:
        """Shutdown: sync the log, stop the workers, report what is left for the next start."""
        self.exiting = True
        self._sync_wal(force=True)
        for reply_to, reply in self.unsynced_replies:
            self.send(reply_to, reply)
        self.unsynced_replies = []
        rows = sum(lane.buffered_rows() for lane in self.lanes.values())
        for entry in self.blocked:
            if entry.message.reply_to is not None:
                self.send(
                    entry.message.reply_to,
                    LogRejected("NotRunning", "the node is shutting down", entry.message.ref),
                )
        self.blocked.clear()
        for address in self.workers.values():
            self.send(address, ActorExitRequest())
        self.send(sender, TopicSpilled(message.token, self.topic, rows, self._status_items()))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """Children are stopped by Thespian; stop restarting them, close files."""
        self.exiting = True
        if self.wal is not None:
            self.wal.close()

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("TopicSupervisor %s ignored %r", self.topic, type(message).__name__)
