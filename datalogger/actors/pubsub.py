"""PubSub: live fan-out of broadcast events to subscribers, one actor per node.

Created on first use under the global name ``"datalogger-pubsub"``
(:data:`datalogger.pubsub.PUBSUB_NAME`). Subscribers, actors or external
endpoints, send :class:`~datalogger.messages.PubSubSubscribe`; each
:class:`~datalogger.messages.PubSubBroadcast` (or
:class:`~datalogger.messages.PubSubBroadcasts`) then reaches every subscriber
of its topic, as one :class:`~datalogger.messages.RequestSent` per event, or,
for a subscriber that asked for batches, as
:class:`~datalogger.messages.PubSubEvents` of many events each.

No subscriber can slow the others, nor this actor. Every subscriber has an
:class:`Outbox` of its own: its events wait there, up to ``max_pending``
events not yet acknowledged (:class:`~datalogger.messages.PubSubAck`), sent or
waiting; past that bound, events are dropped for that subscriber only, and
counted. One message is on its way to a subscriber at a time: the next goes
once the subscriber has acknowledged (part of) the previous one, carrying
every event that waits (up to its batch). This matters twice with Thespian:

- an actor busy in a handler does not take its messages in, and Thespian lets
  a process have a limited number of transmits in progress, queueing the
  others behind them whatever their destination: transmits piling up towards
  a slow subscriber would hold every other subscriber's events back (and this
  actor's answers, such as ``PubSubStats``). One at a time, a slow subscriber
  holds one transmit.
- Thespian's TCP transport sends one message at a time to an address and
  may start a newer transmit before older ones that wait for that address
  (seen: event 439 delivered before 438). One at a time keeps each
  subscriber's events in order.

So a subscriber of one :class:`~datalogger.messages.RequestSent` per event gets
one event per round trip (a few hundred a second), and one that takes
batches gets everything broadcast meanwhile in each round trip. Cluster
broadcasts go to the other members' PubSub actors through an outbox each too,
in batches, so a member that is cut off cannot hold the local subscribers back.

Subscribers that are gone are removed: this actor handles the node's dead
letters (``handleDeadLetters``) and drops a subscriber whose message comes back
in a ``DeadEnvelope`` (the subscriber actor exited, was killed, or its
external endpoint closed).

The fan-out policy lives in :class:`Outbox` and :class:`Fanout`, plain
classes testable without an actor system.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
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
    PubSubEvents,
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
    "MAX_BATCH",
    "PEER_QUEUE",
    "SCOPES",
    "TRANSMITS_IN_PROGRESS",
    "Fanout",
    "Outbox",
    "PubSub",
]

log = logging.getLogger("datalogger.pubsub")

SCOPES = ("local", "cluster")
"""The broadcast scopes: this node's subscribers, or every convention member's."""
MAX_BATCH = 1000
"""Most events in one :class:`~datalogger.messages.PubSubEvents` (or forwarded to a peer)."""
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
    """What waits to go to one address, and what went: one message on its way at a time.

    Items are events, or for a peer's outbox (``topic`` None) ``(topic, event)`` pairs.
    """

    address: Any
    """Where messages go (Thespian addresses compare with ``==`` but are not hashable)."""
    bound: int
    """Most events sent and not acknowledged, plus queued, before events are dropped."""
    topic: str | None = None
    """The subscribed topic; None: a peer's outbox, forwarding every topic."""
    batch: int = 1
    """Most events in one message; 1: one :class:`~datalogger.messages.RequestSent` each."""
    window: int | None = None
    """Most events sent and not yet acknowledged; None: ``bound``."""
    queue: deque[Any] = attrs.field(factory=deque)
    """Events waiting to be sent, oldest first."""
    in_flight: int = 0
    """Events sent and not yet acknowledged."""
    delivered: int = 0
    """Events sent."""
    dropped: int = 0
    """Events dropped because ``bound`` was reached."""
    acked: int = 0
    """Events acknowledged."""
    seq: int = 0
    """Messages sent (the ``seq`` of the last one)."""
    arrived: int = 0
    """The ``seq`` of the last message known to have arrived."""
    last_start: int = 0
    """Events sent before the last message (its first event's index)."""

    @property
    def limit(self) -> int:
        """The window in effect."""
        return max(1, min(self.bound, self.window or self.bound))

    def offer(self, item: Any) -> None:
        """Take an event: queue it, or drop it (counted) when ``bound`` events are pending."""
        if self.in_flight + len(self.queue) < self.bound:
            self.queue.append(item)
        else:
            self.dropped += 1

    def pump(self) -> list[Send]:
        """The next message to send now: none while the last one is not known to have arrived."""
        if self.arrived < self.seq or not self.queue:
            return []
        room = min(self.batch, self.limit - self.in_flight, len(self.queue))
        if room <= 0:
            return []
        queue = self.queue
        self.seq += 1
        if self.topic is None:  # a peer: a run of one topic, forwarded as a local broadcast
            topic = queue[0][0]
            events: list[Any] = []
            while queue and len(events) < room and queue[0][0] == topic:
                events.append(queue.popleft()[1])
            message: Any = PubSubBroadcasts(topic, tuple(events), "local", ack=True)
        else:
            events = [queue.popleft() for _ in range(room)]
            if self.batch == 1:
                message = RequestSent(events[0], self.topic)
            else:
                message = PubSubEvents(tuple(events), self.topic, self.seq)
        self.last_start = self.delivered
        self.in_flight += len(events)
        self.delivered += len(events)
        return [(self.address, message)]

    def ack(self, count: int, received: int = 0) -> list[Send]:
        """``count`` events were consumed (message ``received`` arrived): return what goes now."""
        consumed = min(self.in_flight, max(0, int(count)))
        self.in_flight -= consumed
        self.acked += consumed
        if self.acked > self.last_start:  # part of the last message was consumed: it arrived
            self.arrived = self.seq
        elif 0 < int(received) <= self.seq:
            self.arrived = max(self.arrived, int(received))
        return self.pump()

    def stats(self) -> dict[str, Any]:
        """Its counters (see :func:`datalogger.pubsub.stats`)."""
        return {
            "max_pending": self.bound,
            "window": self.limit,
            "batch": self.batch,
            "in_flight": self.in_flight,
            "queued": len(self.queue),
            "pending": self.in_flight + len(self.queue),
            "delivered": self.delivered,
            "dropped": self.dropped,
        }


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

    def __init__(self) -> None:
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

    def subscribe(
        self, topic: str, address: Any, max_pending: int, window: int | None = None, batch: int = 1
    ) -> Outbox:
        """Add a subscription (or update its bound, window and batch); return its outbox.

        ``batch`` is capped at :data:`MAX_BATCH`; the window at ``max_pending``.
        """
        bound = max(1, int(max_pending))
        ahead = max(1, min(bound, int(window))) if window else None
        size = max(1, min(MAX_BATCH, int(batch or 1)))
        sub = self._find(topic, address)
        if sub is None:
            sub = Subscriber(topic, Outbox(address, bound, topic, size, ahead))
            self.subscribers.append(sub)
        else:
            sub.outbox.bound, sub.outbox.window, sub.outbox.batch = bound, ahead, size
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

    def publish(self, topic: str, events: Sequence[Any], cluster: bool = False) -> list[Send]:
        """Count events of ``topic``; return what to send now (the rest is queued or dropped).

        With ``cluster``, the events also go to every peer's outbox, forwarded
        as a local broadcast there that the peer acknowledges.
        """
        self.broadcasts[topic] = self.broadcasts.get(topic, 0) + len(events)
        sends: list[Send] = []
        outboxes = [sub.outbox for sub in self.of_topic(topic)]
        if cluster:
            for peer in self.peers:
                for event in events:
                    peer.offer((topic, event))
                sends.extend(peer.pump())
        for outbox in outboxes:
            for event in events:
                outbox.offer(event)
            sends.extend(outbox.pump())
        return sends

    def ack(self, topic: str, address: Any, count: int, received: int = 0) -> list[Send]:
        """A subscriber (or, on :data:`PEERS`, a peer) consumed ``count`` events: what goes now."""
        if topic == PEERS:
            for peer in self.peers:
                if peer.address == address:
                    return peer.ack(count)
            return []
        sub = self._find(topic, address)
        return [] if sub is None else sub.outbox.ack(count, received)

    def set_peers(self, addresses: tuple[Any, ...]) -> None:
        """The PubSub actors of the other live members; a peer kept keeps its queue."""
        kept = [peer for peer in self.peers if peer.address in addresses]
        known = [peer.address for peer in kept]
        added = [Outbox(a, PEER_QUEUE, None, MAX_BATCH) for a in addresses if a not in known]
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
                {"topic": sub.topic, "address": str(sub.address), **sub.outbox.stats()}
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
        batch = getattr(message, "batch", 1)  # absent from a subscriber of an older version
        outbox = self.fanout.subscribe(topic, address, message.max_pending, message.window, batch)
        count = sum(1 for _ in self.fanout.of_topic(topic))
        self.send(sender, PubSubSubscribed(topic, count, outbox.limit, outbox.batch))

    def receiveMsg_PubSubUnsubscribe(self, message: PubSubUnsubscribe, sender: Any) -> None:
        """Remove a subscriber."""
        address = sender if message.subscriber is None else message.subscriber
        self.fanout.unsubscribe(message.topic, address)

    def receiveMsg_PubSubAck(self, message: PubSubAck, sender: Any) -> None:
        """A subscriber (or a peer) consumed events: send it what waits in its queue."""
        address = sender if message.subscriber is None else message.subscriber
        received = getattr(message, "received", 0)
        self._send_all(self.fanout.ack(message.topic, address, message.count, received))

    def receiveMsg_PoisonMessage(self, message: PoisonMessage, sender: Any) -> None:
        """A subscriber's handler failed on an event twice: count it consumed, go on."""
        returned = message.poisonMessage
        if isinstance(returned, RequestSent):
            self._send_all(self.fanout.ack(returned.topic, sender, 1))
        elif isinstance(returned, PubSubEvents):
            self._send_all(self.fanout.ack(returned.topic, sender, len(returned.events), returned.seq))
        elif isinstance(returned, PubSubBroadcast):
            self._send_all(self.fanout.ack(PEERS, sender, 1))
        elif isinstance(returned, PubSubBroadcasts):
            self._send_all(self.fanout.ack(PEERS, sender, len(returned.events)))

    # ------------------------------------------------------------------ events
    def receiveMsg_PubSubBroadcast(self, message: PubSubBroadcast, sender: Any) -> None:
        """Send the event to every subscriber of its topic (and, for the cluster, to every peer)."""
        if message.scope not in SCOPES:
            log.warning("PubSub: unknown scope %r, broadcasting locally", message.scope)
        self._send_all(self.fanout.publish(message.topic, (message.event,), message.scope == "cluster"))
        if message.ack:  # forwarded by a peer: it may send the next one
            self.send(sender, PubSubAck(1, PEERS))

    def receiveMsg_PubSubBroadcasts(self, message: PubSubBroadcasts, sender: Any) -> None:
        """Several events of one topic: each goes out as if broadcast alone, in order."""
        if message.scope not in SCOPES:
            log.warning("PubSub: unknown scope %r, broadcasting locally", message.scope)
        events = tuple(message.events)
        self._send_all(self.fanout.publish(message.topic, events, message.scope == "cluster"))
        if getattr(message, "ack", False):  # forwarded by a peer: it may send the next batch
            self.send(sender, PubSubAck(len(events), PEERS))

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
