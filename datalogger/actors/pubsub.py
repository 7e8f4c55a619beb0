"""PubSub: live fan-out of broadcast events to subscribers, one actor per node.

Created on first use under the global name ``"datalogger-pubsub"``
(:data:`datalogger.pubsub.PUBSUB_NAME`). Subscribers, actors or external
endpoints, send :class:`~datalogger.messages.PubSubSubscribe`; each
:class:`~datalogger.messages.PubSubBroadcast` then reaches every subscriber of
its topic as a :class:`~datalogger.messages.RequestSent`.

Flow control is credit based. A subscriber may hold at most ``max_pending``
events it has not acknowledged with :class:`~datalogger.messages.PubSubAck`;
beyond that, events are dropped for that subscriber only, and counted. A slow
subscriber therefore never delays the others, and never grows this actor's
transmit queue beyond its credit.

Subscribers that are gone are removed: this actor handles the node's dead
letters (``handleDeadLetters``) and drops a subscriber whose
:class:`~datalogger.messages.RequestSent` comes back in a ``DeadEnvelope``
(the subscriber actor exited, was killed, or its external endpoint closed).

The fan-out policy lives in :class:`Fanout`, a plain class testable without an
actor system.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import attrs
from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    DeadEnvelope,
)

from ..exceptions import InvalidTopic
from ..messages import (
    PubSubAck,
    PubSubBroadcast,
    PubSubPeers,
    PubSubStats,
    PubSubStatsReply,
    PubSubSubscribe,
    PubSubSubscribed,
    PubSubUnsubscribe,
    RequestSent,
)
from ..validation import validate_topic

__all__ = ["SCOPES", "Fanout", "PubSub", "Subscriber"]

log = logging.getLogger("datalogger.pubsub")

SCOPES = ("local", "cluster")
"""The broadcast scopes: this node's subscribers, or every convention member's."""


@attrs.define
class Subscriber:
    """One subscription: an address listening to one topic, with its credit."""

    topic: str
    """The topic subscribed to."""
    address: Any
    """Where events go (Thespian addresses compare with ``==`` but are not hashable)."""
    max_pending: int
    """Most unacknowledged events before events are dropped for this subscriber."""
    pending: int = 0
    """Events sent and not yet acknowledged."""
    delivered: int = 0
    """Events sent to this subscriber."""
    dropped: int = 0
    """Events not sent because ``pending`` had reached ``max_pending``."""


class Fanout:
    """Who gets which event: the PubSub actor's bookkeeping, without the actor."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []
        self.broadcasts: dict[str, int] = {}
        #: Subscribers removed because they were found dead.
        self.removed = 0

    def _find(self, topic: str, address: Any) -> Subscriber | None:
        for sub in self.subscribers:
            if sub.topic == topic and sub.address == address:
                return sub
        return None

    def of_topic(self, topic: str) -> Iterator[Subscriber]:
        """The subscribers of ``topic``, in subscription order."""
        return (sub for sub in self.subscribers if sub.topic == topic)

    def subscribe(self, topic: str, address: Any, max_pending: int) -> int:
        """Add (or update the credit of) a subscription; return the topic's subscriber count."""
        limit = max(1, int(max_pending))
        sub = self._find(topic, address)
        if sub is None:
            self.subscribers.append(Subscriber(topic, address, limit))
        else:
            sub.max_pending = limit
        return sum(1 for _ in self.of_topic(topic))

    def unsubscribe(self, topic: str, address: Any) -> bool:
        """Remove one subscription; False when there was none."""
        sub = self._find(topic, address)
        if sub is None:
            return False
        self.subscribers.remove(sub)
        return True

    def remove_address(self, address: Any) -> int:
        """Remove every subscription of a dead ``address``; return how many there were."""
        before = len(self.subscribers)
        self.subscribers = [sub for sub in self.subscribers if sub.address != address]
        gone = before - len(self.subscribers)
        self.removed += gone
        return gone

    def publish(self, topic: str) -> list[Any]:
        """Count one event of ``topic``; return the addresses it must be sent to.

        A subscriber without credit left is skipped and its ``dropped`` counted.
        """
        self.broadcasts[topic] = self.broadcasts.get(topic, 0) + 1
        targets: list[Any] = []
        for sub in self.of_topic(topic):
            if sub.pending >= sub.max_pending:
                sub.dropped += 1
                continue
            sub.pending += 1
            sub.delivered += 1
            targets.append(sub.address)
        return targets

    def ack(self, topic: str, address: Any, count: int) -> None:
        """Give ``count`` events of credit back to a subscriber (unknown ones are ignored)."""
        sub = self._find(topic, address)
        if sub is not None:
            sub.pending = max(0, sub.pending - max(0, int(count)))

    def stats(self) -> dict[str, Any]:
        """Counters: see :class:`~datalogger.messages.PubSubStatsReply`."""
        topics = sorted(set(self.broadcasts) | {sub.topic for sub in self.subscribers})
        return {
            "topics": {
                topic: {
                    "broadcast": self.broadcasts.get(topic, 0),
                    "subscribers": sum(1 for _ in self.of_topic(topic)),
                }
                for topic in topics
            },
            "subscribers": [
                {
                    "topic": sub.topic,
                    "address": str(sub.address),
                    "max_pending": sub.max_pending,
                    "pending": sub.pending,
                    "delivered": sub.delivered,
                    "dropped": sub.dropped,
                }
                for sub in self.subscribers
            ],
            "removed": self.removed,
        }


class PubSub(ActorTypeDispatcher):
    """Fans broadcast events out to subscribers (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.fanout = Fanout()
        self._handling_dead_letters = False
        self.peers: tuple[Any, ...] = ()

    def _started(self) -> None:
        if not self._handling_dead_letters:
            self._handling_dead_letters = True
            self.handleDeadLetters(True)

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        """Register for dead letters on the first message, then dispatch by type."""
        self._started()
        return super().receiveMessage(message, sender)

    # ------------------------------------------------------------------ subscribers
    def receiveMsg_PubSubSubscribe(self, message: PubSubSubscribe, sender: Any) -> None:
        """Add a subscriber and confirm with :class:`PubSubSubscribed`."""
        try:
            topic = validate_topic(message.topic)
        except InvalidTopic as exc:
            log.warning("PubSub ignored a subscription: %s", exc)
            return
        address = sender if message.subscriber is None else message.subscriber
        count = self.fanout.subscribe(topic, address, message.max_pending)
        self.send(sender, PubSubSubscribed(topic, count))

    def receiveMsg_PubSubUnsubscribe(self, message: PubSubUnsubscribe, sender: Any) -> None:
        """Remove a subscriber."""
        address = sender if message.subscriber is None else message.subscriber
        self.fanout.unsubscribe(message.topic, address)

    def receiveMsg_PubSubAck(self, message: PubSubAck, sender: Any) -> None:
        """Give credit back to a subscriber."""
        address = sender if message.subscriber is None else message.subscriber
        self.fanout.ack(message.topic, address, message.count)

    # ------------------------------------------------------------------ events
    def receiveMsg_PubSubBroadcast(self, message: PubSubBroadcast, sender: Any) -> None:
        """Send the event to every subscriber of its topic that has credit left."""
        if message.scope == "cluster":
            for peer in self._peers():
                self.send(peer, PubSubBroadcast(message.topic, message.event, "local"))
        elif message.scope != "local":
            log.warning("PubSub: unknown scope %r, broadcasting locally", message.scope)
        for address in self.fanout.publish(message.topic):
            self.send(address, RequestSent(message.event, message.topic))

    def _peers(self) -> list[Any]:
        """PubSub actors of the other convention members, for ``scope="cluster"``.

        The RootSupervisor sends them (:class:`PubSubPeers`) whenever the
        membership changes. Peers re-broadcast with ``scope="local"``, so an
        event crosses the network once per member and never loops.
        """
        return list(self.peers)

    def receiveMsg_PubSubPeers(self, message: PubSubPeers, sender: Any) -> None:
        """The PubSub actors of the other live members."""
        self.peers = tuple(message.peers)

    # ------------------------------------------------------------------ liveness
    def receiveMsg_DeadEnvelope(self, message: DeadEnvelope, sender: Any) -> None:
        """A message to a dead address came back: forget that subscriber."""
        gone = self.fanout.remove_address(message.deadAddress)
        if gone:
            log.info("PubSub removed dead subscriber %s", message.deadAddress)

    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """An exited actor cannot receive events: forget it if it subscribed."""
        self.fanout.remove_address(message.childAddress)

    def receiveMsg_PubSubStats(self, message: PubSubStats, sender: Any) -> None:
        """Answer with the counters."""
        self.send(sender, PubSubStatsReply(self.fanout.stats()))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """The node is stopping: nothing to persist (events are live only)."""

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("PubSub ignored %r", type(message).__name__)
