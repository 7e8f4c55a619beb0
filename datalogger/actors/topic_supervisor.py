"""TopicSupervisor: the supervision tree of one topic.

Created by the RootSupervisor the first time a topic is logged. It owns one
DestinationWorker per destination that takes the topic, numbers the topic's
chunks, and keeps each chunk in a :class:`~datalogger.lane.Lane` until the
worker reports it settled. A worker that dies is restarted and handed every
chunk it held again, in order.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections import deque
from datetime import timedelta
from typing import Any

import attrs
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from ..config import Config
from ..lane import Lane
from ..messages import (
    AttemptFailed,
    ChunkSettled,
    DeliverChunk,
    LogAccepted,
    LogRejected,
    StartTopic,
    StartWorker,
    TopicChunk,
    TopicFlushed,
    TopicFlushRequest,
    TopicSpilled,
    TopicSpillRequest,
    TopicStatsReply,
    TopicStatsRequest,
    WorkerFlush,
)
from ..spill import SpillQueue
from .destination_worker import DestinationWorker

log = logging.getLogger("datalogger.topic")

RESTART_WINDOW = 10.0
"""Seconds over which worker restarts are counted for back-off."""
RESTART_BURST = 5
"""Restarts within the window before a restart is delayed."""
RESTART_DELAY = 1.0
"""Seconds a restart is delayed once the burst is exceeded."""


@attrs.define
class Blocked:
    """A chunk waiting for room under ``overflow = "block"``."""

    id: int
    message: TopicChunk
    reply_to: Any


class TopicSupervisor(ActorTypeDispatcher):
    """Supervises the workers of one topic."""

    def __init__(self) -> None:
        super().__init__()
        self.topic = ""
        self.config: Config | None = None
        self.lanes: dict[str, Lane] = {}
        self.workers: dict[str, Any] = {}
        self.restarts: dict[str, deque[float]] = {}
        # Sequence numbers continue across restarts: microseconds at start.
        self.seq = time.time_ns() // 1000
        self.blocked: deque[Blocked] = deque()
        self.blocked_ids = itertools.count(1)
        self.flush_waiters: list[tuple[int, int, Any]] = []

    # ------------------------------------------------------------------ setup
    def receiveMsg_StartTopic(self, message: StartTopic, sender: Any) -> None:
        """Create a worker per destination that takes the topic; pick up spilled data."""
        self.topic = message.topic
        self.config = message.config
        for spec in message.config.destinations_for(message.topic):
            directory = os.path.join(message.config.data_dir, "spill", spec.name, message.topic)
            lane = Lane(spec, functools.partial(SpillQueue, directory))
            self.lanes[spec.name] = lane
            self.restarts[spec.name] = deque()
            self._start_worker(spec.name)
            if os.path.isdir(directory):
                self._hand_over(spec.name, lane.adopt_spill())

    def _start_worker(self, name: str) -> None:
        assert self.config is not None
        address = self.createActor(DestinationWorker)
        self.workers[name] = address
        self.send(address, StartWorker(self.topic, self.lanes[name].spec, self.config.data_dir))

    def _hand_over(self, name: str, chunks: list[tuple[int, list[dict[str, Any]]]]) -> None:
        address = self.workers.get(name)
        if address is None:
            return  # restarting: the chunks stay in the lane and are resent
        for seq, rows in chunks:
            self.send(address, DeliverChunk(seq, rows))

    # ------------------------------------------------------------------ intake
    def receiveMsg_TopicChunk(self, message: TopicChunk, sender: Any) -> None:
        """Number a chunk and hand it to every lane, or hold it under ``block``."""
        if self.blocked or not self._room_for(len(message.rows)):
            self._block(message)
            return
        self._admit(message)

    def _room_for(self, rows: int) -> bool:
        return all(
            lane.has_room(rows) for lane in self.lanes.values() if lane.spec.overflow == "block"
        )

    def _admit(self, message: TopicChunk) -> None:
        self.seq += 1
        for name, lane in self.lanes.items():
            self._hand_over(name, lane.offer(self.seq, message.rows))
        if message.reply_to is not None:
            self.send(message.reply_to, LogAccepted(self.topic, self.seq, message.ref))

    def _block(self, message: TopicChunk) -> None:
        entry = Blocked(next(self.blocked_ids), message, message.reply_to)
        self.blocked.append(entry)
        timeout = min(
            (
                lane.spec.block_timeout
                for lane in self.lanes.values()
                if lane.spec.overflow == "block"
            ),
            default=0.0,
        )
        self.wakeupAfter(timedelta(seconds=timeout), ("blocked", entry.id))

    def _admit_blocked(self) -> None:
        while self.blocked and self._room_for(len(self.blocked[0].message.rows)):
            self._admit(self.blocked.popleft().message)

    # ------------------------------------------------------------------ outcomes
    def receiveMsg_ChunkSettled(self, message: ChunkSettled, sender: Any) -> None:
        """A worker finished with chunks: count, free room, wake flushes."""
        lane = self.lanes.get(message.destination)
        if lane is None:
            return
        counters = lane.counters
        counters.add("delivered", message.delivered_rows)
        counters.add("dead_lettered", message.dead_rows)
        counters.latencies.append(message.latency)
        if message.error:
            counters.error(message.error)
        self._hand_over(message.destination, lane.settle(message.seqs))
        self._admit_blocked()
        self._answer_flushes()

    def receiveMsg_AttemptFailed(self, message: AttemptFailed, sender: Any) -> None:
        """Count a failed attempt that will be retried."""
        lane = self.lanes.get(message.destination)
        if lane is not None:
            lane.counters.add("failed")
            lane.counters.add("retried")
            lane.counters.error(message.error)

    # ------------------------------------------------------------------ supervision
    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """Restart a dead worker and give it back every chunk it held."""
        for name, address in list(self.workers.items()):
            if address == message.childAddress:
                del self.workers[name]
                if self._exiting:
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
        if self._exiting or name in self.workers:
            return
        self._start_worker(name)
        self._hand_over(name, self.lanes[name].resend())

    _exiting = False

    # ------------------------------------------------------------------ timers
    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Block time-outs and delayed restarts."""
        kind, value = message.payload
        if kind == "restart":
            self._restart(value)
        elif kind == "blocked":
            for entry in list(self.blocked):
                if entry.id == value:
                    self.blocked.remove(entry)
                    if entry.reply_to is not None:
                        self.send(
                            entry.reply_to,
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
        stats = {name: lane.snapshot() for name, lane in self.lanes.items()}
        self.send(sender, TopicStatsReply(message.token, self.topic, stats))

    def receiveMsg_TopicFlushRequest(self, message: TopicFlushRequest, sender: Any) -> None:
        """Answer once every chunk numbered so far is settled."""
        if message.urgent:
            for address in self.workers.values():
                self.send(address, WorkerFlush())
        self.flush_waiters.append((message.token, self.seq, sender))
        self._answer_flushes()

    def _answer_flushes(self) -> None:
        if not self.flush_waiters:
            return
        remaining = []
        for token, watermark, reply_to in self.flush_waiters:
            if all(lane.settled_through(watermark) for lane in self.lanes.values()):
                self.send(reply_to, TopicFlushed(token, self.topic))
            else:
                remaining.append((token, watermark, reply_to))
        self.flush_waiters = remaining

    def receiveMsg_TopicSpillRequest(self, message: TopicSpillRequest, sender: Any) -> None:
        """Shutdown: write every unsettled chunk to disk and stop the workers."""
        self._exiting = True
        rows = 0
        for lane in self.lanes.values():
            rows += lane.spill_everything()
            lane.close()
        for entry in self.blocked:
            if entry.reply_to is not None:
                self.send(
                    entry.reply_to,
                    LogRejected("NotRunning", "the node is shutting down", entry.message.ref),
                )
        self.blocked.clear()
        for address in self.workers.values():
            self.send(address, ActorExitRequest())
        self.send(sender, TopicSpilled(message.token, self.topic, rows))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """Children are stopped by Thespian; stop restarting them, close spill files."""
        self._exiting = True
        for lane in self.lanes.values():
            lane.close()

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("TopicSupervisor %s ignored %r", self.topic, type(message).__name__)
