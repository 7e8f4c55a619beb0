"""PubSub: live fan-out of broadcast events to subscribers, one actor per node.

Created on first use under the global name ``"datalogger-pubsub"``
(:data:`datalogger.pubsub.PUBSUB_NAME`). Subscribers, actors or external
endpoints, send :class:`~datalogger.messages.PubSubSubscribe`; each
:class:`~datalogger.messages.PubSubBroadcast` then reaches every subscriber of
its topic as a :class:`~datalogger.messages.RequestSent`.

No subscriber can slow the others, nor this actor. Every subscriber has an
:class:`Outbox` of its own: at most :data:`WINDOW` events are sent to it ahead
of its acknowledgements (:class:`~datalogger.messages.PubSubAck`), and the rest
wait in its queue, up to ``max_pending`` events in all; past that bound, events
are dropped for that subscriber only, and counted. Thespian lets an actor have
a limited number of transmits in progress and queues the others behind them,
whatever their destination: a subscriber busy in a handler does not take its
messages in, so without the window its transmits would fill that limit and
hold every other subscriber's events back (and this actor's answers, such as
``PubSubStats``). With it, a slow subscriber holds :data:`WINDOW` transmits at
most, and this actor's process allows :data:`TRANSMITS_IN_PROGRESS` of them.
Cluster broadcasts go to the other members' PubSub actors through an outbox
each too, so a member that is cut off cannot hold the local subscribers back.

Subscribers that are gone are removed: this actor handles the node's dead
letters (``handleDeadLetters``) and drops a subscriber whose
:class:`~datalogger.messages.RequestSent` comes back in a ``DeadEnvelope``
(the subscriber actor exited, was killed, or its external endpoint closed).

The fan-out policy lives in :class:`Outbox` and :class:`Fanout`, plain
classes testable without an actor system.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator
from typing import Any

import attrs
from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    DeadEnvelope,
    PoisonMessage,
)

from ..exceptions import InvalidTopic
from ..messages import (
    PubSubAck,
    PubSubBroadcast,
    PubSubBroadcasts,
    PubSubPeers,
    PubSubStats,
    PubSubStatsReply,
    PubSubSubscribe,
    PubSubSubscribed,
    PubSubUnsubscribe,
    RequestSent,
)
from ..validation import validate_topic

__all__ = [
    "MAX_WINDOW",
    "PEER_QUEUE",
    "SCOPES",
    "TRANSMITS_IN_PROGRESS",
    "WINDOW",
    "Fanout",
    "Outbox",
    "PubSub",
]

log = logging.getLogger("datalogger.pubsub")

SCOPES = ("local", "cluster")
"""The broadcast scopes: this node's subscribers, or every convention member's."""
WINDOW = 4
"""Events sent to one subscriber (or peer) ahead of its acknowledgements, unless it asks."""
MAX_WINDOW = 64
"""The most a subscriber may ask for (:class:`~datalogger.messages.PubSubSubscribe` ``window``)."""
PEER_QUEUE = 10_000
"""Bound of the queue of broadcasts waiting to go to one other member's PubSub."""
TRANSMITS_IN_PROGRESS = 1024
"""Transmits the PubSub actor's process may have in progress (Thespian's default is 20)."""
PEERS = ":peers"
"""The pseudo-topic of the outboxes towards other members' PubSub actors."""

Send = tuple[Any, Any]
"""An address and the message to send it."""


@attrs.define
class Outbox:
    """What waits to go to one address: at most ``window`` sent ahead, ``bound`` held in all."""

    address: Any
    """Where messages go (Thespian addresses compare with ``==`` but are not hashable)."""
    bound: int
    """Most messages sent and not acknowledged, plus queued, before messages are dropped."""
    window: int = WINDOW
    """Most messages sent and not yet acknowledged."""
    queue: deque[Any] = attrs.field(factory=deque)
    """Messages waiting for the window to open, oldest first."""
    in_flight: int = 0
    """Messages sent and not yet acknowledged."""
    delivered: int = 0
    """Messages sent."""
    dropped: int = 0
    """Messages dropped because ``bound`` was reached."""

    def offer(self, message: Any) -> list[Send]:
        """Take a message: return it to send now, or queue it, or drop it (counted)."""
        if self.in_flight < self.window:
            self.in_flight += 1
            self.delivered += 1
            return [(self.address, message)]
        if self.in_flight + len(self.queue) < self.bound:
            self.queue.append(message)
        else:
            self.dropped += 1
        return []

    def ack(self, count: int) -> list[Send]:
        """``count`` messages were consumed: return the queued ones that may go now."""
        self.in_flight = max(0, self.in_flight - max(0, int(count)))
        sends: list[Send] = []
        while self.queue and self.in_flight < self.window:
            self.in_flight += 1
            self.delivered += 1
            sends.append((self.address, self.queue.popleft()))
        return sends


@attrs.define
class Subscriber:
    """One subscription: an address listening to one topic, with its outbox."""

    topic: str
    """The topic subscribed to."""
    outbox: Outbox
    """Its events, on their way."""

    @property
    def address(self) -> Any:
        """Where its events go."""
        return self.outbox.address


class Fanout:
    """Who gets which event, and when: the PubSub actor's bookkeeping, without the actor."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.subscribers: list[Subscriber] = []
        self.peers: list[Outbox] = []
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

    def subscribe(self, topic: str, address: Any, max_pending: int, window: int | None = None) -> Outbox:
        """Add a subscription (or update its bound and window); return its outbox.

        The window is what the subscriber asks for, else :attr:`window`, at
        most :data:`MAX_WINDOW` and ``max_pending``.
        """
        bound = max(1, int(max_pending))
        ahead = max(1, min(MAX_WINDOW, bound, int(window) if window else self.window))
        sub = self._find(topic, address)
        if sub is None:
            sub = Subscriber(topic, Outbox(address, bound, ahead))
            self.subscribers.append(sub)
        else:
            sub.outbox.bound, sub.outbox.window = bound, ahead
        return sub.outbox

    def unsubscribe(self, topic: str, address: Any) -> bool:
        """Remove one subscription (its queued events go with it); False when there was none."""
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

    def publish(self, topic: str, event: Any, cluster: bool = False) -> list[Send]:
        """Count one event of ``topic``; return what to send now (the rest is queued or dropped).

        With ``cluster``, the event also goes to every peer's outbox, as a
        local broadcast there that the peer acknowledges.
        """
        self.broadcasts[topic] = self.broadcasts.get(topic, 0) + 1
        sends: list[Send] = []
        if cluster:
            forward = PubSubBroadcast(topic, event, "local", ack=True)
            for peer in self.peers:
                sends.extend(peer.offer(forward))
        message = RequestSent(event, topic)
        for sub in self.of_topic(topic):
            sends.extend(sub.outbox.offer(message))
        return sends

    def ack(self, topic: str, address: Any, count: int) -> list[Send]:
        """A subscriber (or, on :data:`PEERS`, a peer) consumed ``count`` events: what goes now."""
        if topic == PEERS:
            for peer in self.peers:
                if peer.address == address:
                    return peer.ack(count)
            return []
        sub = self._find(topic, address)
        return [] if sub is None else sub.outbox.ack(count)

    def set_peers(self, addresses: tuple[Any, ...]) -> None:
        """The PubSub actors of the other live members; a peer kept keeps its queue."""
        kept = [peer for peer in self.peers if peer.address in addresses]
        known = [peer.address for peer in kept]
        added = [Outbox(a, PEER_QUEUE, self.window) for a in addresses if a not in known]
        self.peers = kept + added

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
                    "max_pending": sub.outbox.bound,
                    "window": sub.outbox.window,
                    "in_flight": sub.outbox.in_flight,
                    "queued": len(sub.outbox.queue),
                    "pending": sub.outbox.in_flight + len(sub.outbox.queue),
                    "delivered": sub.outbox.delivered,
                    "dropped": sub.outbox.dropped,
                }
                for sub in self.subscribers
            ],
            "peers": [
                {
                    "address": str(peer.address),
                    "in_flight": peer.in_flight,
                    "queued": len(peer.queue),
                    "delivered": peer.delivered,
                    "dropped": peer.dropped,
                }
                for peer in self.peers
            ],
            "removed": self.removed,
        }


class PubSub(ActorTypeDispatcher):
    """Fans broadcast events out to subscribers (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.fanout = Fanout()
        self._started = False

    def _start(self) -> None:
        """On the first message: dead letters come here; in its own process, more transmits."""
        if self._started:
            return
        self._started = True
        self.handleDeadLetters(True)
        if multiprocessing.parent_process() is not None:  # a multiprocTCPBase actor process
            from thespian.system.transport import asyncTransportBase

            current = asyncTransportBase.MAX_PENDING_TRANSMITS
            asyncTransportBase.MAX_PENDING_TRANSMITS = max(current, TRANSMITS_IN_PROGRESS)

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        """Register for dead letters on the first message, then dispatch by type."""
        self._start()
        return super().receiveMessage(message, sender)

    def _send_all(self, sends: list[Send]) -> None:
        for address, message in sends:
            self.send(address, message)

    # ------------------------------------------------------------------ subscribers
    def receiveMsg_PubSubSubscribe(self, message: PubSubSubscribe, sender: Any) -> None:
        """Add a subscriber and confirm with :class:`PubSubSubscribed`."""
        try:
            topic = validate_topic(message.topic)
        except InvalidTopic as exc:
            log.warning("PubSub ignored a subscription: %s", exc)
            return
        address = sender if message.subscriber is None else message.subscriber
        outbox = self.fanout.subscribe(topic, address, message.max_pending, message.window)
        count = sum(1 for _ in self.fanout.of_topic(topic))
        self.send(sender, PubSubSubscribed(topic, count, outbox.window))

    def receiveMsg_PubSubUnsubscribe(self, message: PubSubUnsubscribe, sender: Any) -> None:
        """Remove a subscriber."""
        address = sender if message.subscriber is None else message.subscriber
        self.fanout.unsubscribe(message.topic, address)

    def receiveMsg_PubSubAck(self, message: PubSubAck, sender: Any) -> None:
        """A subscriber (or a peer) consumed events: send it what waits in its queue."""
        address = sender if message.subscriber is None else message.subscriber
        self._send_all(self.fanout.ack(message.topic, address, message.count))

    def receiveMsg_PoisonMessage(self, message: PoisonMessage, sender: Any) -> None:
        """A subscriber's handler failed on an event twice: count it consumed, go on."""
        returned = message.poisonMessage
        if isinstance(returned, RequestSent):
            self._send_all(self.fanout.ack(returned.topic, sender, 1))
        elif isinstance(returned, PubSubBroadcast):
            self._send_all(self.fanout.ack(PEERS, sender, 1))

    # ------------------------------------------------------------------ events
    def receiveMsg_PubSubBroadcast(self, message: PubSubBroadcast, sender: Any) -> None:
        """Send the event to every subscriber of its topic (and, for the cluster, to every peer)."""
        if message.scope not in SCOPES:
            log.warning("PubSub: unknown scope %r, broadcasting locally", message.scope)
        self._send_all(self.fanout.publish(message.topic, message.event, message.scope == "cluster"))
        if message.ack:  # forwarded by a peer: it may send the next one
            self.send(sender, PubSubAck(1, PEERS))

    def receiveMsg_PubSubBroadcasts(self, message: PubSubBroadcasts, sender: Any) -> None:
        """Several events of one topic: each goes out as if broadcast alone, in order."""
        if message.scope not in SCOPES:
            log.warning("PubSub: unknown scope %r, broadcasting locally", message.scope)
        for event in message.events:
            self._send_all(self.fanout.publish(message.topic, event, message.scope == "cluster"))

    def receiveMsg_PubSubPeers(self, message: PubSubPeers, sender: Any) -> None:
        """The PubSub actors of the other live members (sent by the RootSupervisor on changes).

        Peers re-broadcast with ``scope="local"``, so an event crosses the
        network once per member and never loops.
        """
        self.fanout.set_peers(tuple(message.peers))

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
