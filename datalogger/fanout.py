"""The PubSub actor's fan-out policy, without the actor: who gets which event, and when.

:class:`Fanout` keeps the subscribers of every topic and the other members'
PubSub actors (peers), each with an :class:`Outbox`: the events waiting for
it, bounded, and what went. One message is on its way to an address at a
time (see :mod:`datalogger.actors.pubsub` for why). Its methods return the
``(address, message)`` pairs to send; :class:`~datalogger.actors.pubsub.PubSub`
sends them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from .messages import PubSubBroadcasts, PubSubEvents, RequestSent

__all__ = ["MAX_BATCH", "PEERS", "PEER_QUEUE", "Fanout", "Outbox", "Subscriber"]

MAX_BATCH = 1000
"""Most events in one :class:`~datalogger.messages.PubSubEvents` (or forwarded to a peer)."""
PEER_QUEUE = 10_000
"""Bound of the queue of broadcasts waiting to go to one other member's PubSub."""
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
