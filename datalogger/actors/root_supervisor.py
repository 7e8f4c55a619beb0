"""RootSupervisor: the router of a node.

Created once per node under the global name :data:`ROOT_NAME`. It checks every
:class:`~datalogger.messages.Log`, spawns a TopicSupervisor for a topic the
first time it is logged, and forwards chunks to it. Because an actor handles
one message at a time, two callers logging a new topic at once cannot create
two supervisors or lose a chunk. It answers node-wide requests (flush, stats,
shutdown) by gathering from every topic.
"""

from __future__ import annotations

import itertools
import logging
import os
from datetime import timedelta
from typing import Any

import attrs
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from ..config import Config
from ..exceptions import DataLoggerError, InvalidTopic
from ..messages import (
    ConfigureNode,
    FlushReply,
    FlushRequest,
    Log,
    LogRejected,
    NodeReady,
    ShutdownReady,
    ShutdownRequest,
    StartTopic,
    StatsReply,
    StatsRequest,
    TopicChunk,
    TopicFlushed,
    TopicFlushRequest,
    TopicSpilled,
    TopicSpillRequest,
    TopicStatsReply,
    TopicStatsRequest,
)
from ..validation import TOPIC_PATTERN, normalize_rows, validate_topic
from .topic_supervisor import TopicSupervisor

log = logging.getLogger("datalogger.root")

ROOT_NAME = "datalogger-root"
"""The global name of every node's RootSupervisor."""


@attrs.define
class Gather:
    """A node-wide request waiting for an answer from each topic."""

    kind: str
    reply_to: Any
    ref: int
    waiting: set[str]
    results: dict[str, Any] = attrs.field(factory=dict)
    then: Any = None
    """For shutdown: the timeout of the spill phase after the flush phase."""


class RootSupervisor(ActorTypeDispatcher):
    """Routes chunks to topic supervisors and answers node-wide requests."""

    def __init__(self) -> None:
        super().__init__()
        self.config: Config | None = None
        self.topics: dict[str, Any] = {}
        self.gathers: dict[int, Gather] = {}
        self.tokens = itertools.count(1)
        self.rejected = 0
        self.last_rejection: str | None = None
        self.shutting_down = False

    # ------------------------------------------------------------------ setup
    def receiveMsg_ConfigureNode(self, message: ConfigureNode, sender: Any) -> None:
        """Take the configuration; start topics that have spilled data waiting."""
        if self.config is None:
            self.config = message.config
            os.makedirs(message.config.data_dir, exist_ok=True)
            for topic in self._topics_on_disk(message.config):
                self._topic(topic)
        self.send(sender, NodeReady(tuple(sorted(self.topics))))

    @staticmethod
    def _topics_on_disk(config: Config) -> set[str]:
        found: set[str] = set()
        spill_root = os.path.join(config.data_dir, "spill")
        for spec in config.destinations:
            directory = os.path.join(spill_root, spec.name)
            if os.path.isdir(directory):
                found.update(
                    name
                    for name in os.listdir(directory)
                    if TOPIC_PATTERN.match(name) and os.listdir(os.path.join(directory, name))
                )
        return {t for t in found if config.destinations_for(t)}

    def _topic(self, topic: str) -> Any:
        address = self.topics.get(topic)
        if address is None:
            assert self.config is not None
            address = self.createActor(TopicSupervisor)
            self.topics[topic] = address
            self.send(address, StartTopic(topic, self.config))
        return address

    # ------------------------------------------------------------------ logging
    def receiveMsg_Log(self, message: Log, sender: Any) -> None:
        """Check a chunk and forward it to its topic's supervisor."""
        try:
            if self.config is None:
                raise DataLoggerError(
                    "this node has no configuration yet (start it with datalogger.start)"
                )
            if self.shutting_down:
                raise DataLoggerError("the node is shutting down")
            topic = validate_topic(message.topic)
            rows = normalize_rows(message.data)
            if not self.config.destinations_for(topic):
                raise InvalidTopic(f"no destination takes topic {topic!r} (check the prefixes)")
        except DataLoggerError as exc:
            self.rejected += 1
            self.last_rejection = str(exc)
            name = "NotRunning" if type(exc) is DataLoggerError else type(exc).__name__
            if message.reply:
                self.send(sender, LogRejected(name, str(exc), message.ref))
            else:
                log.warning("rejected a Log message: %s", exc)
            return
        self.send(
            self._topic(topic),
            TopicChunk(topic, rows, sender if message.reply else None, message.ref),
        )

    # ------------------------------------------------------------------ supervision
    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """Restart a topic supervisor that died."""
        for topic, address in list(self.topics.items()):
            if address == message.childAddress:
                del self.topics[topic]
                for gather in self.gathers.values():
                    gather.waiting.discard(topic)
                self._finish_ready()
                if not self.shutting_down:
                    log.warning("topic supervisor %s exited; restarting", topic)
                    self._topic(topic)
                return

    # ------------------------------------------------------------------ gathering
    def _gather(self, kind: str, reply_to: Any, ref: int, timeout: float, request: Any) -> int:
        token = next(self.tokens)
        self.gathers[token] = Gather(kind, reply_to, ref, set(self.topics))
        for address in self.topics.values():
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
        if gather.kind == "stats":
            self.send(gather.reply_to, StatsReply(self._stats(gather.results), gather.ref))
        elif gather.kind == "flush":
            pending = {topic: 1 for topic in gather.waiting}
            self.send(gather.reply_to, FlushReply(not gather.waiting, pending, gather.ref))
        elif gather.kind == "shutdown-flush":
            self._gather("shutdown-spill", gather.reply_to, gather.ref, 5.0, TopicSpillRequest)
        elif gather.kind == "shutdown-spill":
            self.send(gather.reply_to, ShutdownReady(sum(gather.results.values()), gather.ref))

    def _stats(self, results: dict[str, Any]) -> dict[str, Any]:
        return {
            "topics": dict(sorted(results.items())),
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
        }

    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """A gather timed out: answer with what arrived."""
        self._finish(message.payload)

    def receiveMsg_StatsRequest(self, message: StatsRequest, sender: Any) -> None:
        """Gather counters from every topic."""
        self._gather("stats", sender, message.ref, 10.0, TopicStatsRequest)

    def receiveMsg_TopicStatsReply(self, message: TopicStatsReply, sender: Any) -> None:
        """One topic's counters."""
        self._arrived(message.token, message.topic, message.stats)

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
        """One topic has settled."""
        self._arrived(message.token, message.topic, True)

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
        """One topic has written its unsettled chunks to disk."""
        self._arrived(message.token, message.topic, message.rows)

    def _arrived(self, token: int, topic: str, value: Any) -> None:
        gather = self.gathers.get(token)
        if gather is None:
            return
        gather.results[topic] = value
        gather.waiting.discard(topic)
        if not gather.waiting:
            self._finish(token)

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """The actor system is stopping."""
        self.shutting_down = True

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("RootSupervisor ignored %r", type(message).__name__)
