"""Live events: broadcast them to subscribers, or subscribe to them.

The request analytics middleware calls ``handle.broadcast(event)`` for each
request; this module is what that does. A node runs one
:class:`~datalogger.actors.pubsub.PubSub` actor, created on first use under
the global name :data:`PUBSUB_NAME`::

    import datalogger
    from datalogger import pubsub

    dl = datalogger.start()
    with pubsub.subscribe(dl, "requests") as sub:
        ...                                   # requests happen, broadcast by the middleware
        for event in sub.iter(timeout=1.0):   # RequestLog events, until 1 s of silence
            print(event.method, event.path, event.status_code)

Pubsub is for watching live, not for storing: the middleware logs each request
exactly once to its topic, independently of how many subscribers (on how many
nodes) see it, so storage never multiplies with the fan-out (phoenix_analytics
issue #46). A subscriber sees only events broadcast after it subscribed, and
may miss events when it falls ``max_pending`` events behind (they are dropped
for it alone, and counted in :func:`stats`); no subscriber can delay another.

Actors subscribe with :func:`subscribe_actor` (see there).
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from thespian.actors import ActorSystem

from .actors.pubsub import MAX_BATCH, SCOPES, PubSub
from .exceptions import DataLoggerError, DeliveryTimeout, InvalidInput, NotRunning
from .messages import (
    PubSubAck,
    PubSubBroadcast,
    PubSubEvents,
    PubSubStats,
    PubSubStatsReply,
    PubSubSubscribe,
    PubSubSubscribed,
    PubSubUnsubscribe,
    RequestSent,
)
from .validation import validate_topic

__all__ = [
    "PUBSUB_NAME",
    "Subscription",
    "broadcast",
    "name",
    "stats",
    "subscribe",
    "subscribe_actor",
    "unsubscribe_actor",
]

log = logging.getLogger("datalogger.pubsub")

PUBSUB_NAME = "datalogger-pubsub"
"""The global name of every node's PubSub actor."""

_LISTEN_SLICE = 0.05
_addresses: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_addresses_lock = threading.Lock()


def name() -> str:
    """The global name of the PubSub actor: ``"datalogger-pubsub"``."""
    return PUBSUB_NAME


def _system_of(handle_or_system: Any) -> tuple[ActorSystem, Any]:
    """The Thespian system behind a DataLogger handle (or the system itself) and its lock."""
    system = getattr(handle_or_system, "_system", handle_or_system)
    if getattr(handle_or_system, "_closed", False) or getattr(system, "_systemBase", 1) is None:
        raise NotRunning("this datalogger handle has been shut down")
    if not hasattr(system, "tell") or not hasattr(system, "createActor"):
        raise InvalidInput(
            f"expected a DataLogger handle or an ActorSystem, not {type(handle_or_system).__name__}"
        )
    return system, getattr(handle_or_system, "_lock", None)


def _single_process(system: Any) -> bool:
    """True for ``simpleSystemBase``, which delivers only inside the caller's own calls."""
    return "simpleSystemBase" in type(getattr(system, "_systemBase", None)).__module__


def _pubsub_address(system: Any, lock: Any = None) -> Any:
    """The node's PubSub actor, created on first use (cached per system).

    ``lock`` is the handle's lock, held by the caller or taken here around the
    ``createActor`` round trip.
    """
    with _addresses_lock:
        address = _addresses.get(system)
    if address is None:
        if lock is None:
            address = system.createActor(PubSub, globalName=PUBSUB_NAME)
        else:
            with lock:
                address = system.createActor(PubSub, globalName=PUBSUB_NAME)
        with _addresses_lock:
            _addresses[system] = address
    return address


def broadcast(
    handle_or_system: Any, event: Any, topic: str = "requests", scope: str = "local"
) -> None:
    """Send ``event`` to every subscriber of ``topic``.

    With a :class:`~datalogger.DataLogger` this is :meth:`DataLogger.broadcast`:
    a queue put, sent by the handle's background thread, that never waits for
    the node. With an ``ActorSystem`` it returns as soon as the PubSub actor
    has the event (one ``tell``). It never waits for subscribers. Nothing is
    stored: log the event separately.

    Args:
        handle_or_system: a :class:`~datalogger.DataLogger` or a Thespian ``ActorSystem``.
        event: any picklable object (a :class:`~datalogger.analytics.RequestLog`).
        topic: the pubsub topic.
        scope: ``"local"``: subscribers of this node. ``"cluster"``: also the
            subscribers of the other live members of the node's convention (the
            event crosses the network once per member).

    Raises:
        InvalidInput: ``scope`` is unknown or ``handle_or_system`` is neither.
        InvalidTopic: ``topic`` is malformed.
        NotRunning: the handle was shut down.
    """
    queue_event = getattr(handle_or_system, "_sender", None) and getattr(handle_or_system, "broadcast", None)
    if queue_event is not None:  # a DataLogger: a queue put, sent by its background thread
        if getattr(handle_or_system, "_closed", False):
            raise NotRunning("this datalogger handle has been shut down")
        queue_event(event, topic=topic, scope=scope)
        return
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    topic = validate_topic(topic)
    system, lock = _system_of(handle_or_system)
    message = PubSubBroadcast(topic, event, scope)
    address = _pubsub_address(system, lock)
    if lock is None:
        system.tell(address, message)
        return
    with lock:  # a DataLogger's endpoint serves one thread at a time
        system.tell(address, message)


def stats(handle_or_system: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The PubSub actor's counters (see :class:`~datalogger.messages.PubSubStatsReply`).

    ``{"topics": {topic: {"broadcast": events, "subscribers": n}},
    "subscribers": [{"topic", "address", "max_pending", "window", "batch",
    "in_flight", "queued", "pending", "delivered", "dropped"}, ...], "peers": [...],
    "removed": n}``: per subscriber, ``delivered`` events were sent to it,
    ``in_flight`` of them not yet acknowledged, ``queued`` wait in its queue
    (``pending`` is both), and ``dropped`` were dropped because it was
    ``max_pending`` behind. The PubSub actor never waits on a subscriber, so
    this answers within a second whatever they do.

    Raises:
        DeliveryTimeout: no answer within ``timeout`` seconds.
    """
    system, lock = _system_of(handle_or_system)
    address = _pubsub_address(system, lock)
    if _single_process(system):
        with lock or threading.Lock():
            reply = system.ask(address, PubSubStats(), timeout)
    else:
        with system.private() as ctx:
            reply = ctx.ask(address, PubSubStats(), timeout)
            while reply is not None and not isinstance(reply, PubSubStatsReply):
                reply = ctx.listen(timeout)
    if reply is None:
        raise DeliveryTimeout(f"no answer from the PubSub actor within {timeout:g}s")
    return dict(reply.stats)


def subscribe(
    handle_or_system: Any,
    topic: str = "requests",
    callback: Callable[[Any], object] | None = None,
    max_pending: int = 1000,
    timeout: float = 10.0,
) -> Subscription:
    """Subscribe code outside the actor system to ``topic``; see :class:`Subscription`.

    Returns once the PubSub actor has confirmed: every event broadcast after
    that reaches the subscription (unless dropped: it fell ``max_pending`` behind).

    Raises:
        InvalidInput: ``max_pending`` is below 1.
        InvalidTopic: ``topic`` is malformed.
        DataLoggerError: the node runs on ``simpleSystemBase`` (single-threaded:
            subscribe an actor there instead, see :func:`subscribe_actor`).
        DeliveryTimeout: the PubSub actor did not confirm within ``timeout``.
    """
    return Subscription(handle_or_system, topic, callback, max_pending, timeout)


class Subscription:
    """A live subscription for code outside the actor system.

    A background thread owns a private Thespian endpoint (``system.private()``),
    listens on it without pause and puts events on a queue. Take them with
    :meth:`get` or :meth:`iter`, or pass ``callback``: it is then called with
    each event on the subscription's own dispatch thread (never while the
    endpoint is kept from listening, so a slow callback cannot stall the PubSub
    actor's transport). An exception in the callback is logged and counted in
    :attr:`errors`.

    Events arrive in batches (:class:`~datalogger.messages.PubSubEvents`), each
    said received at once so the next follows without waiting for the reader,
    and are acknowledged as they are consumed (taken from the queue, or the
    callback returned). At most ``max_pending`` events wait unacknowledged
    (here, or in this subscription's queue in the PubSub actor); beyond that
    the PubSub actor drops events for this subscription only, and counts them.

    Use it as a context manager, or call :meth:`unsubscribe`.
    """

    def __init__(
        self,
        handle_or_system: Any,
        topic: str = "requests",
        callback: Callable[[Any], object] | None = None,
        max_pending: int = 1000,
        timeout: float = 10.0,
    ) -> None:
        if int(max_pending) < 1:
            raise InvalidInput(f"max_pending must be at least 1, not {max_pending}")
        self.topic = validate_topic(topic)
        self.max_pending = int(max_pending)
        self.callback = callback
        #: Events received from the PubSub actor.
        self.received = 0
        #: Exceptions raised by the callback.
        self.errors = 0
        self._system, lock = _system_of(handle_or_system)
        if _single_process(self._system):
            raise DataLoggerError(
                "a Subscription needs a multiprocTCPBase node: simpleSystemBase delivers "
                "messages only inside the caller's own calls (subscribe an actor instead)"
            )
        self._address = _pubsub_address(self._system, lock)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._ack_every = 1  # until the PubSub actor tells its window
        self._unacked = 0
        self._received_seq = 0  # the last PubSubEvents taken in, not yet said
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._listener = threading.Thread(
            target=self._listen,
            args=(timeout,),
            name=f"datalogger-pubsub-{self.topic}",
            daemon=True,
        )
        self._dispatcher: threading.Thread | None = None
        self._listener.start()
        self._ready.wait(timeout + 5.0)
        if self._failure is not None or not self._ready.is_set():
            self._stop.set()
            failure = self._failure
            if isinstance(failure, DataLoggerError):
                raise failure
            raise DeliveryTimeout(
                f"the PubSub actor did not confirm the subscription within {timeout:g}s"
            ) from failure
        if callback is not None:
            self._dispatcher = threading.Thread(
                target=self._dispatch, name=f"datalogger-pubsub-{self.topic}-callback", daemon=True
            )
            self._dispatcher.start()

    # ------------------------------------------------------------------ listener thread
    def _listen(self, timeout: float) -> None:
        try:
            with self._system.private() as ctx:
                if not self._confirm(ctx, timeout):
                    return
                try:
                    while not self._stop.is_set():
                        message = ctx.listen(_LISTEN_SLICE)
                        self._take(message)
                        self._send_acks(ctx, idle=message is None)
                finally:
                    ctx.tell(self._address, PubSubUnsubscribe(self.topic))
        except Exception as exc:  # the endpoint failed: nothing more will arrive
            if self._ready.is_set():
                log.warning("pubsub subscription %r ended: %s", self.topic, exc)
            else:
                self._failure = exc
                self._ready.set()

    def _confirm(self, ctx: Any, timeout: float) -> bool:
        # this endpoint is read without pause: the PubSub actor may send well ahead
        subscribe = PubSubSubscribe(self.topic, None, self.max_pending, None, MAX_BATCH)
        reply = ctx.ask(self._address, subscribe, timeout)
        while reply is not None and not isinstance(reply, PubSubSubscribed):
            self._take(reply)
            reply = ctx.listen(timeout)
        if isinstance(reply, PubSubSubscribed):
            # acknowledge well before the PubSub actor's window for us closes
            self._ack_every = max(1, int(reply.window) // 4)
        if reply is None:
            self._failure = DeliveryTimeout(
                f"the PubSub actor did not confirm the subscription within {timeout:g}s"
            )
        self._ready.set()
        return reply is not None

    def _take(self, message: Any) -> None:
        """Queue the events of a message from the PubSub actor (others are ignored)."""
        if isinstance(message, PubSubEvents) and message.topic == self.topic:
            self.received += len(message.events)
            for event in message.events:
                self._queue.put(event)
            self._received_seq = message.seq
        elif isinstance(message, RequestSent) and message.topic == self.topic:
            self.received += 1
            self._queue.put(message.event)

    def _send_acks(self, ctx: Any, idle: bool) -> None:
        # a batch taken in is said at once (the PubSub actor then sends the next one);
        # consumed events every quarter of the window, or when idle
        with self._lock:
            count, received = self._unacked, self._received_seq
            if not received and (count == 0 or (count < self._ack_every and not idle)):
                return
            self._unacked, self._received_seq = 0, 0
        ctx.tell(self._address, PubSubAck(count, self.topic, None, received))

    def _consumed(self) -> None:
        with self._lock:
            self._unacked += 1

    # ------------------------------------------------------------------ callback thread
    def _dispatch(self) -> None:
        callback = self.callback
        assert callback is not None
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=_LISTEN_SLICE)
            except queue.Empty:
                continue
            try:
                callback(event)
            except Exception:
                self.errors += 1
                log.exception("pubsub callback for %r failed", self.topic)
            finally:
                self._consumed()

    # ------------------------------------------------------------------ public
    @property
    def closed(self) -> bool:
        """True once :meth:`unsubscribe` was called or the endpoint failed."""
        return self._stop.is_set() or not self._listener.is_alive()

    def get(self, timeout: float | None = None) -> Any:
        """The next event, waiting up to ``timeout`` seconds (None: forever); None on timeout.

        Raises:
            InvalidInput: the subscription delivers to a callback.
        """
        if self.callback is not None:
            raise InvalidInput("this subscription delivers its events to its callback")
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self._consumed()
        return event

    def iter(self, timeout: float = 1.0) -> Iterator[Any]:
        """Yield events until none arrives for ``timeout`` seconds.

        Raises:
            InvalidInput: the subscription delivers to a callback.
        """
        while True:
            event = self.get(timeout)
            if event is None:
                return
            yield event

    def unsubscribe(self, timeout: float = 5.0) -> None:
        """Leave the topic and stop the threads (idempotent). Undelivered events are discarded."""
        self._stop.set()
        for thread in (self._listener, self._dispatcher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Subscription topic={self.topic!r} {state} received={self.received}>"


def subscribe_actor(actor: Any, topic: str = "requests", max_pending: int = 1000, batch: int = 1) -> None:
    """Subscribe an actor (call from inside one of its handlers) to ``topic``.

    The actor then receives :class:`~datalogger.messages.PubSubSubscribed`, and
    its events: with ``batch=1`` (the default) one
    :class:`~datalogger.messages.RequestSent` per event; with more,
    :class:`~datalogger.messages.PubSubEvents` of up to ``batch`` events each
    (at most 1,000). It must acknowledge what it consumed with
    :class:`~datalogger.messages.PubSubAck`: the PubSub actor sends the next
    message once (part of) the previous one is acknowledged, keeps the events
    broadcast meanwhile in this subscriber's queue, and drops (and counts)
    those past ``max_pending`` events unacknowledged. An actor that never
    acknowledges gets one message::

        class Watcher(ActorTypeDispatcher):
            def receiveMsg_str(self, message, sender):
                if message == "start":
                    pubsub.subscribe_actor(self, "requests", max_pending=1000, batch=500)

            def receiveMsg_PubSubEvents(self, message, sender):
                for event in message.events:
                    handle(event)
                self.send(sender, PubSubAck(len(message.events), message.topic))

    One event per message gets one event per round trip between the actors (a
    few hundred a second); batches get everything broadcast meanwhile in each
    round trip. A slow actor only falls behind itself: it never delays the
    other subscribers nor the PubSub actor. An actor that exits or dies is
    removed on the next message sent to it.

    Raises:
        InvalidInput: ``max_pending`` or ``batch`` is below 1.
        InvalidTopic: ``topic`` is malformed.
    """
    if int(max_pending) < 1 or int(batch) < 1:
        raise InvalidInput(f"max_pending and batch must be at least 1, not {max_pending} and {batch}")
    subscribe = PubSubSubscribe(validate_topic(topic), actor.myAddress, int(max_pending), None, int(batch))
    actor.send(actor.createActor(PubSub, globalName=PUBSUB_NAME), subscribe)


def unsubscribe_actor(actor: Any, topic: str = "requests") -> None:
    """Unsubscribe an actor (call from inside one of its handlers) from ``topic``."""
    address = actor.createActor(PubSub, globalName=PUBSUB_NAME)
    actor.send(address, PubSubUnsubscribe(validate_topic(topic), actor.myAddress))
