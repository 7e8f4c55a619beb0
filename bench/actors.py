"""Actors for the raw-Thespian baselines (importable: multiprocTCPBase creates them by path)."""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor


class Echo(Actor):
    """Answers every message with the message itself: the cheapest possible ``ask``."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Send ``message`` back to ``sender`` (Thespian's own messages are ignored)."""
        if isinstance(message, (dict, list, tuple, str, bytes, int)):
            self.send(sender, message)


class PubSubWatcher(Actor):
    """A pubsub subscriber for the ``pubsub`` case.

    ``("start", topic, max_pending, batch, seconds_per_event)`` subscribes it and is answered
    ``"subscribed"`` once the PubSub actor confirmed; ``"count"`` is answered with
    ``(events received, arrival time of the last one, in order)``. It takes the given time
    per event and acknowledges as docs/pubsub.md shows (each event, or each batch).
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last = 0.0
        self.in_order = True
        self.delay = 0.0
        self.reply_to: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Subscribe, take events, answer counts."""
        import time

        from datalogger import pubsub
        from datalogger.messages import PubSubAck, PubSubEvents, PubSubSubscribed, RequestSent

        if isinstance(message, tuple) and message[:1] == ("start",):
            _, topic, max_pending, batch, self.delay = message
            self.reply_to = sender
            pubsub.subscribe_actor(self, topic, max_pending=max_pending, batch=batch)
        elif isinstance(message, PubSubSubscribed):
            self.send(self.reply_to, "subscribed")
        elif message == "count":
            self.send(sender, (self.count, self.last, self.in_order))
        elif isinstance(message, (RequestSent, PubSubEvents)):
            events = message.events if isinstance(message, PubSubEvents) else (message.event,)
            self.last = time.time()
            for event in events:
                if self.delay:
                    time.sleep(self.delay)  # slow on purpose
                self.in_order = self.in_order and event["i"] == self.count
                self.count += 1
            self.send(sender, PubSubAck(len(events), message.topic))
