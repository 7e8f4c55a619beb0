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

The fan-out policy lives in :mod:`datalogger.fanout` (:class:`Outbox` and
:class:`Fanout`), plain classes testable without an actor system.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    DeadEnvelope,
    PoisonMessage,
)

from ..exceptions import InvalidTopic
from ..fanout import MAX_BATCH, PEER_QUEUE, PEERS, Fanout, Outbox, Send
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
    "PEERS",
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
TRANSMITS_IN_PROGRESS = 1024
"""Transmits the PubSub actor's process may have in progress (Thespian's default is 20)."""


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
