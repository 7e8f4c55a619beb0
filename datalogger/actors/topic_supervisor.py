"""TopicSupervisor: the supervision tree of one topic, or of a share of many.

Created by the RootSupervisor. A *dedicated* supervisor hosts one topic (or
the topics ``isolate`` names); a *shared* one hosts every topic the root's
stable hash places on it. Each topic's state is a plain
:class:`~datalogger.core.topic_state.TopicState`: its own write-ahead log,
lanes, watermarks, order and flushes. The supervisor

- appends every accepted chunk to its topic's log before the caller is
  answered (in the topic's state);
- owns one DestinationWorker per destination (per member, in a convention),
  shared by its topics: every chunk goes to it with its topic; a worker that
  dies is restarted (with back-off) and every topic hands it again each chunk
  it held, in order;
- answers node-wide requests (stats, flush, shutdown) once for all its topics;
- releases a topic idle for ``idle_after`` with everything settled (its state
  and files); a dedicated supervisor left with no topic asks the root to let
  it exit, so its processes go; the topic comes back on its next chunk;
- keeps at most :data:`MAX_OPEN_LOGS` log files open (least recently used).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from ..config import Config
from ..core.gather import summarize
from ..core.handles import HandleLRU
from ..core.restarts import RestartBackoff
from ..core.timers import TimerQueue
from ..core.topic_state import STATUS_EVERY, TopicState, entity
from ..exceptions import InvalidData
from ..messages import (
    AttemptFailed,
    ChunkSettled,
    DirectLog,
    HostTopics,
    ItemsProcessed,
    LogRejected,
    Membership,
    ProcessStatusMoved,
    ProcessStatusSync,
    ProcessStatusSynced,
    RouteStatus,
    StartSupervisor,
    StartWorker,
    SupervisorIdle,
    SupervisorStay,
    SupervisorTimer,
    TopicChunk,
    TopicFlushed,
    TopicFlushRequest,
    TopicSpilled,
    TopicSpillRequest,
    TopicStatsReply,
    TopicStatsRequest,
    TopicTimer,
    WalSync,
    WatermarksReply,
    WorkerFlush,
)
from ..placement import Member
from ..validation import require_rows
from .destination_worker import DestinationWorker

__all__ = ["MAX_OPEN_LOGS", "TopicSupervisor", "entity"]

log = logging.getLogger("datalogger.topic")

MAX_OPEN_LOGS = 256
"""Most write-ahead-log files one supervisor keeps open; the least recently used close."""

WorkerKey = tuple[str, "str | None"]
"""A worker: the destination's name and the member it runs on (None: here)."""


class _Host:
    """What the topics' states see of their supervisor (see :class:`TopicHost`)."""

    def __init__(self, actor: TopicSupervisor) -> None:
        self.actor = actor

    @property
    def address(self) -> Any:
        return self.actor.myAddress

    @property
    def process_status(self) -> Any:
        return self.actor.process_status

    @property
    def root(self) -> Any:
        return self.actor.root if self.actor.members is not None else None

    def send(self, address: Any, message: Any) -> None:
        self.actor.send(address, message)

    def schedule(self, seconds: float, timer: TopicTimer) -> None:
        # status reports of many topics fire together: one ItemsProcessed (one write) for all
        grid = STATUS_EVERY if timer.kind == "status" else 0.0
        wait = self.actor.timers.add(time.monotonic(), seconds, timer, grid)
        if wait is not None:
            self.actor.wakeupAfter(timedelta(seconds=wait), SupervisorTimer("tick"))

    def worker(self, name: str, owner: str | None) -> Any:
        return self.actor.worker(name, owner)

    def token(self, topic: str) -> int:
        token = next(self.actor.tokens)
        self.actor.token_topics[token] = topic
        return token

    def report(self, items: tuple[tuple[str, int], ...]) -> None:
        self.actor.outgoing_items.extend(items)

    def sync_status(self, topic: str, items: tuple[tuple[str, int], ...]) -> int:
        token = self.token(topic)
        self.actor.outgoing_syncs.append((topic, token, items))
        return token

    def flushed(self, topic: str, key: int, error: str | None) -> None:
        self.actor.topic_flushed(topic, key, error)


class TopicSupervisor(ActorTypeDispatcher):
    """Hosts the states of its topics and supervises their workers."""

    def __init__(self) -> None:
        super().__init__()
        self.config: Config | None = None
        self.process_status: Any = None
        self.members: tuple[Member, ...] | None = None
        self.root: Any = None
        self.shared = False
        self.label = ""
        self.host = _Host(self)
        self.states: dict[str, TopicState] = {}
        self.assigned: set[str] = set()
        """Topics the root routes here (a shared supervisor keeps them after their release)."""
        self.released: dict[str, dict[str, Any]] = {}
        """Released topic -> its last counters (for stats)."""
        self.released_marks: dict[str, dict[str, int]] = {}
        """Released topic -> where each destination stood (to take it up without asking)."""
        self.workers: dict[WorkerKey, Any] = {}
        self.restarting: set[WorkerKey] = set()
        self.backoff = RestartBackoff()
        self.tokens = itertools.count(1)
        self.token_topics: dict[int, str] = {}
        self.flushes: dict[int, tuple[int, Any, set[str], dict[str, str]]] = {}
        """Flush key -> (root's token, reply address, topics still unsettled, errors)."""
        self.handles = HandleLRU(MAX_OPEN_LOGS)
        self.timers = TimerQueue()
        """The topics' timers, behind one Thespian wakeup (see datalogger.core.timers)."""
        self.received = 0
        """Chunks the root forwarded here (compared by the root before letting it exit)."""
        self.leaving = False
        self.exiting = False
        self.outgoing_items: list[tuple[str, int]] = []
        """Watermarks the topics reported while one message was handled: sent as one."""
        self.outgoing_syncs: list[tuple[str, int, tuple[tuple[str, int], ...]]] = []
        """(topic, token, items) to store now: one ProcessStatusSync for all of them."""
        self.syncs: dict[int, list[tuple[str, int]]] = {}
        """Token of a ProcessStatusSync sent -> the (topic, token) it answers."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Dispatch, then send ProcessStatus what the topics reported, in one message each."""
        try:
            super().receiveMessage(message, sender)
        finally:
            self._send_status()

    def _send_status(self) -> None:
        if self.process_status is None:
            self.outgoing_items.clear()
            self.outgoing_syncs.clear()
            return
        if self.outgoing_items:
            self.send(self.process_status, ItemsProcessed(tuple(self.outgoing_items)))
            self.outgoing_items = []
        if self.outgoing_syncs:
            token = next(self.tokens)
            self.syncs[token] = [(topic, t) for topic, t, _ in self.outgoing_syncs]
            items = tuple(item for _, _, batch in self.outgoing_syncs for item in batch)
            self.outgoing_syncs = []
            self.send(self.process_status, ProcessStatusSync(items, token))

    # ------------------------------------------------------------------ setup
    def receiveMsg_StartSupervisor(self, message: StartSupervisor, sender: Any) -> None:
        """Take the configuration; topics come with their chunks, or in :class:`HostTopics`."""
        if self.config is not None:
            return
        self.config = message.config
        self.process_status = message.process_status
        self.members = message.members
        self.root = sender
        self.shared = message.shared
        self.label = message.label
        if self.config.idle_after > 0:
            self._idle_timer()

    def _idle_timer(self) -> None:
        assert self.config is not None
        every = max(0.05, min(self.config.idle_after / 2, 30.0))
        self.wakeupAfter(timedelta(seconds=every), SupervisorTimer("idle"))

    def receiveMsg_HostTopics(self, message: HostTopics, sender: Any) -> None:
        """Open these topics now: their logs may hold chunks to replay."""
        for topic in message.topics:
            self._state(topic)

    def _state(self, topic: str) -> TopicState:
        state = self.states.get(topic)
        if state is not None:
            return state
        assert self.config is not None
        state = TopicState(topic, self.config, self.host, self.members)
        self.states[topic] = state
        self.assigned.add(topic)
        counters = self.released.pop(topic, None)
        if counters is not None:
            state.restore_counters(counters)
        marks = self.released_marks.pop(topic, None)
        if marks is not None and state.open_wal():
            state.recover(marks)  # released by this supervisor: it knows where they stood
        else:
            state.start()
        self._used(topic)
        return state

    def _used(self, topic: str) -> None:
        for old in self.handles.used(topic):
            state = self.states.get(old)
            if state is not None:
                state.release_handle()

    # ------------------------------------------------------------------ workers
    def worker(self, name: str, owner: str | None) -> Any:
        """The worker of destination ``name`` on ``owner``, started on first use."""
        key = (name, owner)
        address = self.workers.get(key)
        if address is not None or self.exiting or key in self.restarting:
            return address
        if self.members is not None and owner is None:
            return None  # no member can run it: chunks wait in the lane and the log
        assert self.config is not None
        spec = next(spec for spec in self.config.destinations if spec.name == name)
        self._close_handles()  # a forked worker would inherit them, and keep deleted segments
        if self.members is None:  # one process, no convention: the worker runs here
            address = self.createActor(DestinationWorker)
        else:
            address = self.createActor(
                DestinationWorker,
                targetActorRequirements={"node": owner, "requires": list(spec.requires)},
            )
        self.workers[key] = address
        self.send(address, StartWorker(spec, self.config.data_dir))
        return address

    def _close_handles(self) -> None:
        """Close every open log file (the next append opens it again)."""
        self.handles.clear()
        for state in self.states.values():
            state.release_handle()

    def _users(self, key: WorkerKey) -> list[TopicState]:
        name, owner = key
        return [s for s in self.states.values() if name in s.lanes and s.owners.get(name) == owner]

    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """Restart a dead worker; its topics give it back every chunk it held."""
        for key, address in list(self.workers.items()):
            if address != message.childAddress:
                continue
            del self.workers[key]
            if self.exiting:
                return
            users = self._users(key)
            if not users:
                return  # a worker no topic needs any more
            for state in users:
                state.worker_exited(key[0])
            log.warning("worker %s of %s exited; restarting", key[0], self.label)
            delay = self.backoff.exited(key, time.monotonic())
            if delay > 0:
                self.restarting.add(key)
                self.wakeupAfter(timedelta(seconds=delay), SupervisorTimer("restart", key))
            else:
                self._restart(key)
            return

    def _restart(self, key: WorkerKey) -> None:
        self.restarting.discard(key)
        for state in self._users(key):
            state.worker_back(key[0])

    def receiveMsg_Membership(self, message: Membership, sender: Any) -> None:
        """Members joined or left: move each destination whose owner changed."""
        self.members = tuple(message.members)
        if self.exiting:
            return
        for state in self.states.values():
            state.membership(self.members)
        for key, address in list(self.workers.items()):
            if not self._users(key):
                del self.workers[key]
                self.send(address, ActorExitRequest())

    # ------------------------------------------------------------------ intake
    def receiveMsg_TopicChunk(self, message: TopicChunk, sender: Any) -> None:
        """A chunk from the root: log it in its topic's state."""
        self.received += 1
        self.leaving = False
        self._chunk(message)

    def _chunk(self, message: TopicChunk) -> None:
        if self.exiting:
            if message.reply_to is not None:
                rejected = LogRejected("NotRunning", "the node is shutting down", message.ref)
                self.send(message.reply_to, rejected)
            return
        state = self._state(message.topic)
        state.chunk(message)
        self._used(message.topic)

    def receiveMsg_DirectLog(self, message: DirectLog, sender: Any) -> None:
        """A chunk sent straight here by a client that learnt this address (rows checked there)."""
        if self.exiting:
            self.send(sender, LogRejected("NotRunning", "the node is shutting down", message.ref))
            return
        if message.topic not in self.assigned or self.leaving:
            # a route learnt earlier: the topic is not (or no longer) here; ask the root
            self.send(sender, RouteStatus(message.topic, False, message.ref))
            return
        chunk = TopicChunk(message.topic, message.rows, sender, message.ref)
        state = self._state(message.topic)
        if state.rows_only:  # a client without the configuration checked only the values
            try:
                require_rows(message.rows, message.topic)
            except InvalidData as exc:
                state.reject(chunk, "InvalidData", str(exc))
                return
        state.chunk(chunk)
        self._used(message.topic)

    def receiveMsg_WalSync(self, message: WalSync, sender: Any) -> None:
        """Group commit of one topic's log."""
        state = self.states.get(message.topic)
        if state is not None:
            state.wal_sync()

    # ------------------------------------------------------------------ outcomes
    def receiveMsg_ChunkSettled(self, message: ChunkSettled, sender: Any) -> None:
        """A worker finished with chunks of a topic."""
        state = self.states.get(message.topic)
        if state is not None:
            state.settled(message)

    def receiveMsg_AttemptFailed(self, message: AttemptFailed, sender: Any) -> None:
        """A worker will retry chunks of a topic."""
        state = self.states.get(message.topic)
        if state is not None:
            state.attempt_failed(message)

    def receiveMsg_WatermarksReply(self, message: WatermarksReply, sender: Any) -> None:
        """Where a topic's destinations stopped: it replays the rest of its log."""
        topic = self.token_topics.pop(message.token, None)
        state = self.states.get(topic) if topic is not None else None
        if state is not None and state.recovery_token == message.token:
            state.watermarks(message.items)

    def receiveMsg_ProcessStatusSynced(self, message: ProcessStatusSynced, sender: Any) -> None:
        """Topics' status is stored: answer the flushes that waited for it."""
        for topic, token in self.syncs.pop(message.token, ()):
            self.token_topics.pop(token, None)
            state = self.states.get(topic)
            if state is not None:
                state.status_synced(token, confirmed=True)

    def receiveMsg_ProcessStatusMoved(self, message: ProcessStatusMoved, sender: Any) -> None:
        """ProcessStatus restarted: send it where every destination of every topic stands."""
        self.process_status = message.address
        items = [item for state in self.states.values() for item in state.status_items()]
        items += [
            (entity(topic, name), mark)
            for topic, marks in self.released_marks.items()
            for name, mark in marks.items()
        ]
        if items:
            self.send(self.process_status, ItemsProcessed(tuple(items)))

    # ------------------------------------------------------------------ timers
    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Topic timers go to their topic; restarts and the idle sweep are the supervisor's."""
        payload = message.payload
        if isinstance(payload, TopicTimer):
            self._topic_timer(payload)
        elif isinstance(payload, SupervisorTimer):
            if payload.kind == "tick":
                self._tick()
            elif payload.kind == "restart":
                self._restart(payload.value)
            elif payload.kind == "idle" and not self.exiting:
                self._sweep_idle()
                self._idle_timer()

    def _topic_timer(self, timer: TopicTimer) -> None:
        state = self.states.get(timer.topic)
        if timer.kind == "synced":
            self.token_topics.pop(timer.value, None)
        if state is not None and state.epoch == timer.epoch:
            state.on_timer(timer.kind, timer.value)

    def _tick(self) -> None:
        """Run every topic timer that is due; ask for a wakeup at the next one."""
        due, wait = self.timers.due(time.monotonic())
        for timer in due:
            self._topic_timer(timer)
        if wait is not None:
            self.wakeupAfter(timedelta(seconds=wait), SupervisorTimer("tick"))

    def _sweep_idle(self) -> None:
        """Release every topic idle for ``idle_after`` with everything settled."""
        assert self.config is not None
        now = time.monotonic()
        for topic, state in list(self.states.items()):
            if not state.idle(now, self.config.idle_after):
                continue
            self.released[topic] = state.release()
            self.released_marks[topic] = dict(state.reported)
            del self.states[topic]
            self.handles.forget(topic)
            for token in [t for t, owner in self.token_topics.items() if owner == topic]:
                del self.token_topics[token]
        if not self.states and not self.shared and not self.leaving and self.released:
            self.leaving = True
            self.send(self.root, SupervisorIdle(self.received, dict(self.released)))
        if not self.states and self.workers and not self.shared:
            for address in self.workers.values():  # no topic left: the workers' processes go
                self.send(address, ActorExitRequest())
            self.workers.clear()

    def receiveMsg_SupervisorStay(self, message: SupervisorStay, sender: Any) -> None:
        """The root forwarded chunks after this supervisor asked to exit: it stays."""
        self.leaving = False

    # ------------------------------------------------------------------ queries
    def receiveMsg_TopicStatsRequest(self, message: TopicStatsRequest, sender: Any) -> None:
        """The counters of every topic hosted (and released), in one reply."""
        topics = {topic: state.stats() for topic, state in self.states.items()}
        topics.update((t, c) for t, c in self.released.items() if t not in topics)
        self.send(
            sender,
            TopicStatsReply(message.token, topics if message.detail else {}, summarize(topics), os.getpid()),
        )

    def receiveMsg_TopicFlushRequest(self, message: TopicFlushRequest, sender: Any) -> None:
        """Answer once every chunk numbered so far in every topic is settled."""
        key = next(self.tokens)
        self.flushes[key] = (message.token, sender, set(self.states), {})
        for state in list(self.states.values()):
            state.flush(key)  # hands over what lingers, before the workers empty their buffers
        if message.urgent:
            for address in self.workers.values():
                self.send(address, WorkerFlush())
        self._flush_done(key)

    def topic_flushed(self, topic: str, key: int, error: str | None) -> None:
        """A topic's part of flush ``key`` is settled (or cannot be: ``error``)."""
        entry = self.flushes.get(key)
        if entry is None:
            return
        entry[2].discard(topic)
        if error is not None:
            entry[3][topic] = error
        self._flush_done(key)

    def _flush_done(self, key: int) -> None:
        entry = self.flushes.get(key)
        if entry is not None and not entry[2]:
            del self.flushes[key]
            self.send(entry[1], TopicFlushed(entry[0], entry[3]))

    def receiveMsg_TopicSpillRequest(self, message: TopicSpillRequest, sender: Any) -> None:
        """Shutdown: sync every log, stop the workers, report what is left for the next start."""
        self.exiting = True
        rows = 0
        items: list[tuple[str, int]] = []
        for state in self.states.values():
            left, status = state.spill()
            rows += left
            items.extend(status)
        items += [
            (entity(topic, name), mark)
            for topic, marks in self.released_marks.items()
            for name, mark in marks.items()
        ]
        for address in self.workers.values():
            self.send(address, ActorExitRequest())
        self.send(sender, TopicSpilled(message.token, rows, tuple(items)))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """Children are stopped by Thespian; stop restarting them, close files."""
        self.exiting = True
        for state in self.states.values():
            state.close()

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("TopicSupervisor %s ignored %r", self.label, type(message).__name__)
