"""RootSupervisor: the router of a node.

Created once per node under the global name :data:`ROOT_NAME`. It checks every
:class:`~datalogger.messages.Log`, places a topic the first time it is logged
(:class:`~datalogger.core.topic_placement.TopicPlacement`: a TopicSupervisor
of its own up to ``max_topic_supervisors``, or one of a shared pool), and
forwards chunks to its supervisor. Because an actor handles one message at a
time, two callers logging a new topic at once cannot create two supervisors or
lose a chunk. It answers node-wide requests (flush, stats, shutdown) with one
round trip per supervisor, not per topic.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from datetime import timedelta
from typing import Any

import attrs
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from .. import lifeline, security
from .._startup import check_data_dir
from .._thespian import check_allowed, default_allowed
from ..config import Config
from ..core.gather import DETAIL_TOPICS, Gather, merge_summaries, summarize
from ..core.topic_placement import TopicPlacement
from ..delivery import describe
from ..exceptions import DataLoggerError, InvalidTopic
from ..lane import COUNTER_NAMES
from ..messages import (
    ConfigureNode,
    FlushReply,
    FlushRequest,
    HostTopics,
    LastProcessedRequest,
    LocateRegistry,
    Log,
    LogRejected,
    Membership,
    MembershipRefused,
    NodeHeartbeat,
    NodeReady,
    NodesReply,
    NodesRequest,
    NodeStartFailed,
    PlacementReport,
    ProcessStatusInfoRequest,
    ProcessStatusMoved,
    ProcessStatusReset,
    ProcessStatusStart,
    ProcessStatusStarted,
    ProcessStatusSync,
    ProcessStatusSynced,
    PubSubPeers,
    RegistryLocated,
    RegistryStart,
    RouteCheck,
    RouteStatus,
    ShutdownReady,
    ShutdownRequest,
    StartSupervisor,
    StatsReply,
    StatsRequest,
    SupervisorIdle,
    SupervisorStay,
    TopicChunk,
    TopicFlushed,
    TopicFlushRequest,
    TopicSpilled,
    TopicSpillRequest,
    TopicStatsReply,
    TopicStatsRequest,
    WatermarksReply,
    WatermarksRequest,
)
from ..names import topic_from_dir
from ..placement import Member
from ..pubsub import PUBSUB_NAME
from ..validation import normalize_data, require_rows, validate_topic
from ..wal import WriteAheadLog
from .cluster_registry import ClusterRegistry
from .process_status import ProcessStatus
from .pubsub import PubSub
from .registry_locator import REGISTRY_NAME, RegistryLocator
from .topic_supervisor import TopicSupervisor, entity

log = logging.getLogger("datalogger.root")

ROOT_NAME = "datalogger-root"
"""The global name of every node's RootSupervisor."""
READY_WAIT = 5.0
"""Seconds a member waits for the leader's membership before it starts alone."""
PROCESS_STATUS_RETRY = 2.0
"""Seconds before a restarted ProcessStatus whose adapter failed is asked to start again."""
OWNER_CHECK_EVERY = 1.0
"""Seconds between checks that the process which started the node still runs."""


class RootSupervisor(ActorTypeDispatcher):
    """Routes chunks to topic supervisors and answers node-wide requests."""

    def __init__(self) -> None:
        super().__init__()
        self._reset()
        self.generation = 0

    def _reset(self) -> None:
        """The state of a RootSupervisor that has no configuration (also after a failed start)."""
        self.config: Config | None = None
        self.placement = TopicPlacement(0, 1, lambda topic: False)
        self.supervisors: dict[str, Any] = {}
        """Supervisor key (see TopicPlacement) -> its address."""
        self.forwarded: dict[str, int] = {}
        """Supervisor key -> chunks forwarded to it (checked before an idle one exits)."""
        self.leaving: list[tuple[str, Any]] = []
        """(key, address) of the dedicated supervisors exiting idle (its slot is free once it is gone)."""
        self.released_stats: dict[str, dict[str, Any]] = {}
        """Topic -> the last counters of a topic whose dedicated supervisor exited idle."""
        self.gathers: dict[int, Gather] = {}
        self.tokens = itertools.count(1)
        self.rejected = 0
        self.last_rejection: str | None = None
        self.shutting_down = False
        self.process_status: Any = None
        self.configured_by: Any = None
        self.waiting_for: set[str] = set()
        self.shutdown_reply: tuple[Any, int, int] | None = None
        self.node: str | None = None
        self.leader: str | None = None
        self.capabilities: tuple[str, ...] = ()
        self.members: tuple[Member, ...] | None = None
        self.registry: Any = None
        self.membership_at = 0.0
        self.placements: dict[str, dict[str, str | None]] = {}
        self.pubsub: Any = None
        self.refused: str | None = None
        self.owner: tuple[int, float | None] | None = None
        self.owner_group: int | None = None

    # ------------------------------------------------------------------ setup
    def receiveMsg_ConfigureNode(self, message: ConfigureNode, sender: Any) -> None:
        """Check the data directory, start ProcessStatus and join the convention.

        Answers :class:`NodeReady` once the process-status adapter is open,
        topics with unsettled chunks are started and, on a TCP node, the
        membership is known; :class:`NodeStartFailed` with the reason when a
        step fails, leaving this actor unconfigured (as it was). A second
        ConfigureNode (or Thespian's retry of one) changes nothing: it is
        answered ``NodeReady`` once the node is ready.
        """
        if self.config is not None:
            if self.configured_by is None:
                self.send(sender, NodeReady(tuple(sorted(self.placement.keys))))
            return
        try:
            check_data_dir(message.config.data_dir)
        except DataLoggerError as exc:
            self.send(sender, NodeStartFailed(str(exc)))
            return
        self.generation += 1
        self.config = message.config
        self.placement = TopicPlacement(
            self.config.dedicated_topic_supervisors,
            self.config.shared_topic_supervisors,
            self.config.isolated,
        )
        self.configured_by = sender
        self.waiting_for = {"process_status"}
        try:
            self._start_process_status()
            if message.node is not None:
                self.node, self.leader = message.node, message.leader
                self.capabilities = tuple(message.capabilities)
                self.pubsub = self.createActor(PubSub, globalName=PUBSUB_NAME)
                self.members = (Member(message.node, self.capabilities, self.myAddress, self.pubsub),)
                self.waiting_for.add("membership")
                self._find_registry()
                self._after(self.config.cluster.heartbeat_interval, "heartbeat")
                self._after(READY_WAIT, "ready")
        except Exception as exc:
            self._fail_start(f"the node's actors did not start: {describe(exc)}")
            return
        if message.owner is not None:
            self.owner = message.owner
            self.owner_group = lifeline.group_of(message.owner[0])
            self._after(OWNER_CHECK_EVERY, "owner")

    def _after(self, seconds: float, what: str) -> None:
        """A timer of this configuration (a timer of an earlier, failed one is ignored)."""
        self.wakeupAfter(timedelta(seconds=seconds), (what, self.generation))

    def _fail_start(self, reason: str) -> None:
        """Answer NodeStartFailed, stop what was started, and forget the configuration."""
        log.error("the node did not start: %s", reason)
        reply_to = self.configured_by
        started = [self.process_status, self.pubsub, *self.supervisors.values()]
        if self.leader is None:
            started.append(self.registry)
        for address in started:
            if address is not None:
                self.send(address, ActorExitRequest())
        self._reset()
        if reply_to is not None:
            self.send(reply_to, NodeStartFailed(reason))

    def _find_registry(self) -> None:
        assert self.config is not None
        if self.leader is None:
            self.registry = self.createActor(ClusterRegistry, globalName=REGISTRY_NAME)
            settings = self.config.cluster
            allowed = check_allowed(settings.allowed_members) or default_allowed(
                (self.node or "127.0.0.1:0").rpartition(":")[0]
            )
            self.send(self.registry, RegistryStart(settings.heartbeat_timeout, self.node, allowed))
            self._heartbeat()
        else:
            self.send(self.createActor(RegistryLocator, targetActorRequirements={}), LocateRegistry())

    def _ready(self, what: str) -> None:
        self.waiting_for.discard(what)
        if self.configured_by is not None and not self.waiting_for:
            self.send(self.configured_by, NodeReady(tuple(sorted(self.placement.keys))))
            self.configured_by = None

    # ------------------------------------------------------------------ convention
    def _heartbeat(self) -> None:
        if self.registry is None or self.node is None:
            return
        self.send(
            self.registry,
            NodeHeartbeat(self.node, self.myAddress, self.capabilities, self._placements(), self.pubsub),
        )

    def _placements(self) -> dict[str, str | None]:
        """``"<topic>/<destination>"`` -> the node delivering it, for the topics routed here."""
        return {
            f"{topic}/{dest}": owner
            for topic, owners in self.placements.items()
            for dest, owner in owners.items()
        }

    def receiveMsg_RegistryLocated(self, message: RegistryLocated, sender: Any) -> None:
        """The leader's registry: start sending heartbeats to it."""
        self.registry = message.address
        self._heartbeat()

    def receiveMsg_Membership(self, message: Membership, sender: Any) -> None:
        """The live members: tell every topic, so destinations move off dead members."""
        if self.config is None:
            return
        self.membership_at = time.monotonic()
        if self.refused is not None and any(m.node == self.node for m in message.members):
            log.warning("node %s: admitted by the leader %s", self.node, self.leader)
            self.refused = None
        if message.members != self.members:
            self.members = tuple(message.members)
            for address in self.supervisors.values():
                self.send(address, message)
            if self.pubsub is not None:
                peers = tuple(m.pubsub for m in self.members if m.node != self.node and m.pubsub)
                self.send(self.pubsub, PubSubPeers(peers))
        self._ready("membership")

    def receiveMsg_MembershipRefused(self, message: MembershipRefused, sender: Any) -> None:
        """The leader will not have this node: say so, and work alone until it is admitted."""
        if self.config is None:
            return
        if self.refused != message.reason:
            log.error("node %s is refused by the leader %s: %s", self.node, self.leader, message.reason)
        self.refused = message.reason
        self.membership_at = time.monotonic()
        self._ready("membership")

    def receiveMsg_PlacementReport(self, message: PlacementReport, sender: Any) -> None:
        """Where a topic's destinations are delivered from (for heartbeats and ``nodes``)."""
        self.placements[message.topic] = dict(message.owners)

    def receiveMsg_NodesRequest(self, message: NodesRequest, sender: Any) -> None:
        """Ask the registry for the members; answer alone without one, or while refused."""
        if self.refused is not None:
            own = {
                "node": self.node,
                "capabilities": list(self.capabilities),
                "last_seen": time.time(),
                "holds": sorted(self._placements()),
                "state": "refused",
                "reason": self.refused,
            }
            self.send(message.reply_to or sender, NodesReply([own], message.ref))
        elif self.registry is not None:
            self.send(self.registry, attrs.evolve(message, reply_to=message.reply_to or sender))
        else:
            self.send(sender, NodesReply([], message.ref))

    def _start_process_status(self) -> None:
        assert self.config is not None
        self.process_status = self.createActor(ProcessStatus)
        settings = self.config.process_status
        self.send(self.process_status, ProcessStatusStart(settings.adapter, dict(settings.options)))

    def receiveMsg_ProcessStatusStarted(self, message: ProcessStatusStarted, sender: Any) -> None:
        """The adapter is open: read the watermarks. It failed: fail the start, or retry later."""
        if self.config is None or sender != self.process_status:
            return
        adapter = self.config.process_status.adapter
        if message.error is not None:
            if self.configured_by is not None:
                self._fail_start(f"the process-status adapter {adapter!r} did not start: {message.error}")
            else:
                log.error(
                    "the process-status adapter %r did not start: %s; trying again in %gs",
                    adapter,
                    message.error,
                    PROCESS_STATUS_RETRY,
                )
                self._after(PROCESS_STATUS_RETRY, "process-status")
            return
        if "process_status" in self.waiting_for:
            self.waiting_for.add("watermarks")
            self.send(self.process_status, WatermarksRequest(-1, None))
            self._ready("process_status")

    def receiveMsg_WatermarksReply(self, message: WatermarksReply, sender: Any) -> None:
        """At start: every topic whose log holds chunks a destination has not settled."""
        if self.configured_by is None or self.config is None:
            return
        hosts: dict[str, list[str]] = {}
        for topic in sorted(self._topics_behind(self.config, message.items)):
            hosts.setdefault(self.placement.key(topic), []).append(topic)
        for key, topics in hosts.items():
            self.send(self._supervisor(key), HostTopics(tuple(topics)))
        self._ready("watermarks")

    @staticmethod
    def _topics_behind(config: Config, marks: dict[str, int]) -> set[str]:
        behind: set[str] = set()
        wal_root = os.path.join(config.data_dir, "wal")
        if not os.path.isdir(wal_root):
            return behind
        for name in os.listdir(wal_root):
            topic = topic_from_dir(os.path.join(wal_root, name))
            specs = config.destinations_for(topic) if topic is not None else ()
            if topic is None or not specs:
                continue
            try:
                wal = WriteAheadLog(wal_root, topic, fsync="never")
                last = wal.last_seq
                wal.close()
            except Exception as exc:
                log.error("cannot open the write-ahead log of %s: %s", topic, exc)
                continue
            if any(marks.get(entity(topic, spec.name), 0) < last for spec in specs):
                behind.add(topic)
        return behind

    def _supervisor(self, key: str) -> Any:
        """The address of supervisor ``key``, started on first use."""
        address = self.supervisors.get(key)
        if address is None:
            assert self.config is not None
            address = self.createActor(TopicSupervisor)
            self.supervisors[key] = address
            self.forwarded[key] = 0
            shared = self.placement.is_shared(key)
            self.send(
                address,
                StartSupervisor(self.config, self.process_status, self.members, shared, key),
            )
        return address

    def _key_of(self, address: Any) -> str | None:
        for key, known in self.supervisors.items():
            if known == address:
                return key
        return None

    # ------------------------------------------------------------------ logging
    def receiveMsg_Log(self, message: Log, sender: Any) -> None:
        """Check a chunk and forward it to its topic's supervisor."""
        try:
            if self.config is None:
                raise DataLoggerError("this node has no configuration yet (start it with datalogger.start)")
            if self.shutting_down:
                raise DataLoggerError("the node is shutting down")
            topic = validate_topic(message.topic)
            rows = normalize_data(message.data)
            if not self.config.destinations_for(topic):
                raise InvalidTopic(f"no destination takes topic {topic!r} (check the prefixes)")
            if self.config.rows_only(topic):
                require_rows(rows, topic)
        except DataLoggerError as exc:
            self.rejected += 1
            self.last_rejection = str(exc)
            name = "NotRunning" if type(exc) is DataLoggerError else type(exc).__name__
            if message.reply:
                self.send(sender, LogRejected(name, str(exc), message.ref))
            else:
                log.warning("rejected a Log message: %s", exc)
            return
        key = self.placement.key(topic)
        address = self._supervisor(key)
        self.forwarded[key] += 1
        self.send(address, TopicChunk(topic, rows, sender if message.reply else None, message.ref))

    def receiveMsg_SupervisorIdle(self, message: SupervisorIdle, sender: Any) -> None:
        """A dedicated supervisor released its topics: let it exit unless chunks are on their way."""
        key = self._key_of(sender)
        if key is None:
            return
        if self.shutting_down or self.forwarded.get(key, 0) != message.received:
            self.send(sender, SupervisorStay())
            return
        self.released_stats.update(message.released)
        for topic in self.placement.drop(key):
            self.placements.pop(topic, None)
        self.leaving.append((key, self.supervisors.pop(key)))
        self.forwarded.pop(key, None)
        for token in [t for t, g in self.gathers.items() if g.gone(key)]:
            self._finish(token)
        self.send(sender, ActorExitRequest())

    # ------------------------------------------------------------------ supervision
    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """Restart a topic supervisor, or the ProcessStatus actor, that died."""
        if message.childAddress == self.process_status:
            if not self.shutting_down:
                log.warning("ProcessStatus exited; restarting it (it reloads from its adapter)")
                self._start_process_status()
                for address in self.supervisors.values():
                    self.send(address, ProcessStatusMoved(self.process_status))
            return
        for entry in self.leaving:
            if entry[1] == message.childAddress:  # a supervisor that exited idle: its slot is free
                self.leaving.remove(entry)
                self.placement.exited(entry[0])
                return
        key = self._key_of(message.childAddress)
        if key is None:
            return
        del self.supervisors[key]
        for gather in self.gathers.values():
            gather.gone(key)
        self._finish_ready()
        if not self.shutting_down:
            topics = tuple(sorted(self.placement.topics.get(key, ())))
            log.warning("topic supervisor %s exited; restarting", key)
            self.send(self._supervisor(key), HostTopics(topics))

    # ------------------------------------------------------------------ gathering
    def _gather(
        self, kind: str, reply_to: Any, ref: int, timeout: float, request: Any, detail: bool = True
    ) -> int:
        token = next(self.tokens)
        self.gathers[token] = Gather(kind, reply_to, ref, set(self.supervisors), detail=detail)
        for address in self.supervisors.values():
            self.send(address, request(token))
        self.wakeupAfter(timedelta(seconds=max(timeout, 0.0)), token)
        self._finish_ready()
        return token

    def _finish_ready(self) -> None:
        for token in [t for t, g in self.gathers.items() if not g.waiting]:
            self._finish(token)

    def _finish(self, token: int) -> None:
        gather = self.gathers.pop(token, None)
        if gather is None:
            return
        unanswered = sorted(t for key in gather.waiting for t in self.placement.topics.get(key, ()))
        if gather.kind == "stats":
            stats = self._stats(gather.results, gather.detail)
            stats["unanswered"] = unanswered
            self.send(gather.reply_to, StatsReply(stats, gather.ref))
        elif gather.kind == "flush":
            pending = dict.fromkeys(unanswered, 1)
            broken = {t: str(e) for errors in gather.results.values() for t, e in errors.items()}
            done = not gather.waiting and not broken
            self.send(gather.reply_to, FlushReply(done, pending, gather.ref, broken))
        elif gather.kind == "shutdown-flush":
            self._gather("shutdown-spill", gather.reply_to, gather.ref, 5.0, TopicSpillRequest)
        elif gather.kind == "shutdown-spill":
            rows = sum(r for r, _ in gather.results.values())
            items = tuple(item for _, i in gather.results.values() for item in i)
            self.shutdown_reply = (gather.reply_to, gather.ref, rows)
            self.send(self.process_status, ProcessStatusSync(items, token))
            self._after(5.0, "status-sync")

    def receiveMsg_ProcessStatusSynced(self, message: ProcessStatusSynced, sender: Any) -> None:
        """The final process status is stored: the node may stop."""
        self._shutdown_ready()

    def _shutdown_ready(self) -> None:
        if self.shutdown_reply is not None:
            reply_to, ref, rows = self.shutdown_reply
            self.shutdown_reply = None
            self.send(reply_to, ShutdownReady(rows, ref))

    def _stats(self, results: dict[str, Any], detail: bool) -> dict[str, Any]:
        """Per-topic counters (with ``detail``) and their summary, from each supervisor's reply."""
        topics: dict[str, Any] = {}
        pids: dict[str, int] = {}
        summaries = [summarize(self.released_stats)] if self.released_stats else []
        if detail:
            topics.update(self.released_stats)
        for topic_stats, summary, pid in results.values():
            summaries.append(summary)
            for topic, lanes in topic_stats.items():
                topics[topic] = _added(self.released_stats.get(topic), lanes)
                pids[topic] = pid
        merged = merge_summaries(summaries)
        merged["topics"] = len(self.placement.keys.keys() | self.released_stats.keys())
        stats: dict[str, Any] = {
            "topics": dict(sorted(topics.items())),
            "supervisor_pids": dict(sorted(pids.items())),
            "summary": merged,
            "supervisors": len(self.supervisors),
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
            "security": security.rejections(),
        }
        if self.node is not None:
            stats["cluster"] = {
                "node": self.node,
                "leader": self.leader,
                "members": len(self.members or ()),
                "refused": self.refused,
            }
        return stats

    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Heartbeats, and requests that timed out: answer with what arrived."""
        payload = message.payload
        if isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[0], str):
            what, generation = payload
            if generation != self.generation or self.config is None:
                return  # a timer of a configuration that failed
            if what == "heartbeat":
                self._on_heartbeat_timer()
            elif what == "owner":
                self._check_owner()
            elif what == "ready":
                if self.waiting_for - {"watermarks", "process_status"}:
                    log.warning("node %s: no membership from the leader yet; starting alone", self.node)
                elif self.refused is not None:
                    log.error("node %s: starting alone, refused by the leader: %s", self.node, self.refused)
                self._ready("membership")
            elif what == "process-status" and self.process_status is not None:
                settings = self.config.process_status
                self.send(self.process_status, ProcessStatusStart(settings.adapter, dict(settings.options)))
            elif what == "status-sync":
                self._shutdown_ready()  # ProcessStatus did not confirm in time
        else:
            self._finish(payload)

    def _check_owner(self) -> None:
        """Stop the node when the process that started it is gone (the node's processes run
        detached from it: nothing else would stop them, and they would keep the admin port)."""
        assert self.owner is not None
        if lifeline.alive(self.owner):
            self._after(OWNER_CHECK_EVERY, "owner")
            return
        log.warning(
            "node %s: the process that started it (pid %d) is gone; stopping", self.node, self.owner[0]
        )
        self.shutting_down = True
        lifeline.stop_node_processes(self.owner_group)

    def _on_heartbeat_timer(self) -> None:
        assert self.config is not None
        if self.shutting_down:
            return
        settings = self.config.cluster
        stale = time.monotonic() - self.membership_at > 3 * settings.heartbeat_timeout
        if self.leader is not None and stale:
            self._find_registry()  # the leader restarted, or never answered: look again
        self._heartbeat()
        self._after(settings.heartbeat_interval, "heartbeat")

    def receiveMsg_StatsRequest(self, message: StatsRequest, sender: Any) -> None:
        """Gather counters from every supervisor: per topic, or a summary on a node with many."""
        detail = message.detail
        if detail is None:
            detail = len(self.placement.keys) <= DETAIL_TOPICS
        self._gather(
            "stats", sender, message.ref, 10.0, lambda token: TopicStatsRequest(token, detail), detail
        )

    def receiveMsg_TopicStatsReply(self, message: TopicStatsReply, sender: Any) -> None:
        """One supervisor's counters, for all its topics."""
        self._arrived(message.token, sender, (message.topics, message.summary, message.pid))

    def receiveMsg_FlushRequest(self, message: FlushRequest, sender: Any) -> None:
        """Answer once every topic has settled what it accepted so far."""
        self._gather(
            "flush",
            sender,
            message.ref,
            message.timeout,
            lambda token: TopicFlushRequest(token, True),
        )

    def receiveMsg_TopicFlushed(self, message: TopicFlushed, sender: Any) -> None:
        """One supervisor has settled its topics (``message.errors``: those that cannot)."""
        self._arrived(message.token, sender, dict(message.errors))

    def receiveMsg_ShutdownRequest(self, message: ShutdownRequest, sender: Any) -> None:
        """Flush within the timeout, then spill what is left to disk."""
        self.shutting_down = True
        self._gather(
            "shutdown-flush",
            sender,
            message.ref,
            message.timeout,
            lambda token: TopicFlushRequest(token, True),
        )

    def receiveMsg_TopicSpilled(self, message: TopicSpilled, sender: Any) -> None:
        """One supervisor has synced its topics' logs and stopped its workers."""
        self._arrived(message.token, sender, (message.rows, message.items))

    def _arrived(self, token: int, sender: Any, value: Any) -> None:
        gather = self.gathers.get(token)
        key = self._key_of(sender)
        if gather is None or key is None:
            return
        if gather.arrived(key, value):
            self._finish(token)

    def receiveMsg_RouteCheck(self, message: RouteCheck, sender: Any) -> None:
        """Tell a client whether its cached route to a topic is still alive."""
        key = self.placement.keys.get(message.topic)
        current = (
            key is not None
            and self.supervisors.get(key) == message.address
            and not self.shutting_down
        )
        self.send(sender, RouteStatus(message.topic, current, message.ref))

    def receiveMsg_LastProcessedRequest(self, message: LastProcessedRequest, sender: Any) -> None:
        """Forward to ProcessStatus, which answers the caller."""
        self.send(self.process_status, attrs.evolve(message, reply_to=sender))

    def receiveMsg_ProcessStatusInfoRequest(self, message: ProcessStatusInfoRequest, sender: Any) -> None:
        """Forward to ProcessStatus, which answers the caller."""
        self.send(self.process_status, attrs.evolve(message, reply_to=sender))

    def receiveMsg_ProcessStatusReset(self, message: ProcessStatusReset, sender: Any) -> None:
        """Forward to ProcessStatus, which answers the caller."""
        self.send(self.process_status, attrs.evolve(message, reply_to=sender))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """The actor system is stopping."""
        self.shutting_down = True

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("RootSupervisor ignored %r", type(message).__name__)


def _added(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
    """A topic's counters now, added to those it had when its dedicated supervisor exited."""
    if not before:
        return now
    return {
        name: {
            **lane,
            **{key: lane.get(key, 0) + (before.get(name) or {}).get(key, 0) for key in COUNTER_NAMES},
        }
        for name, lane in now.items()
    }
