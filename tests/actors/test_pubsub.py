"""The PubSub actor and its client side: fan-out, credit, dead subscribers.

The fan-out policy is tested as a plain class; the rest runs on a real
``multiprocTCPBase`` node (one per module, on a free admin port). Test actors
live here: this module is importable by the actor processes.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorExitRequest, ActorTypeDispatcher

import datalogger
from datalogger import pubsub
from datalogger.analytics import RequestLog
from datalogger.exceptions import DataLoggerError, InvalidInput, InvalidTopic
from datalogger.fanout import MAX_BATCH, PEERS, Fanout, Outbox
from datalogger.messages import (
    PubSubAck,
    PubSubBroadcasts,
    PubSubEvents,
    PubSubSubscribed,
    PubSubUnsubscribe,
    RequestSent,
)
from datalogger.metrics import serve_metrics
from tests.test_metrics import scrape

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(0.05)
    return True


class Watcher(ActorTypeDispatcher):
    """Test subscriber actor: "start:<topic>" subscribes and answers its pid once confirmed."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []
        self.reply_to: Any = None

    def receiveMsg_str(self, message: str, sender: Any) -> None:
        command, _, topic = message.partition(":")
        if command == "start":
            self.reply_to = sender
            pubsub.subscribe_actor(self, topic, max_pending=50)
        elif command == "events":
            self.send(sender, list(self.events))

    def receiveMsg_PubSubSubscribed(self, message: PubSubSubscribed, sender: Any) -> None:
        self.send(self.reply_to, os.getpid())

    def receiveMsg_RequestSent(self, message: RequestSent, sender: Any) -> None:
        self.events.append(message.event)
        self.send(sender, PubSubAck(1, message.topic))


class TimedWatcher(ActorTypeDispatcher):
    """Test subscriber: "start:<topic>:<max_pending>:<seconds per event>:<batch>" subscribes
    and answers its pid once confirmed; it records (i, arrival time) of each event, taking the
    given time per event. With batch 1 it takes one RequestSent per event and acknowledges each,
    as docs/pubsub.md shows; with more, PubSubEvents acknowledged once each. "events" returns
    what it recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[int, float]] = []
        self.reply_to: Any = None
        self.delay = 0.0

    def receiveMsg_str(self, message: str, sender: Any) -> None:
        command, *args = message.split(":")
        if command == "start":
            topic, max_pending, delay, batch = args
            self.reply_to, self.delay = sender, float(delay)
            pubsub.subscribe_actor(self, topic, max_pending=int(max_pending), batch=int(batch))
        elif command == "events":
            self.send(sender, list(self.events))

    def receiveMsg_PubSubSubscribed(self, message: PubSubSubscribed, sender: Any) -> None:
        self.send(self.reply_to, os.getpid())

    def receiveMsg_RequestSent(self, message: RequestSent, sender: Any) -> None:
        arrived = time.time()
        if self.delay:
            time.sleep(self.delay)  # a subscriber slow on purpose
        self.events.append((message.event["i"], arrived))
        self.send(sender, PubSubAck(1, message.topic))

    def receiveMsg_PubSubEvents(self, message: PubSubEvents, sender: Any) -> None:
        arrived = time.time()
        for event in message.events:
            if self.delay:
                time.sleep(self.delay)
            self.events.append((event["i"], arrived))
        self.send(sender, PubSubAck(len(message.events), message.topic))


def sample_event(i: int) -> RequestLog:
    return RequestLog.create(
        method="GET",
        path=f"/item/{i}",
        status_code=200,
        duration_ms=1.5,
        session_id="s" * 20,
        session_page_views=i + 1,
        user_agent="pytest",
        ip="203.0.113.9",
        salt="test-salt",
    )


# --------------------------------------------------------------------------- Outbox, Fanout


def events_to(sends: list[tuple[Any, Any]], address: str) -> list[Any]:
    """The events sent to ``address``, whether one per message or in batches."""
    found: list[Any] = []
    for target, message in sends:
        if target == address:
            found.extend(message.events if isinstance(message, PubSubEvents) else [message.event])
    return found


def test_outbox_sends_one_message_at_a_time_queues_to_its_bound_then_drops() -> None:
    box = Outbox("sub", bound=5, topic="t")
    for i in range(7):
        box.offer(i)
    assert (list(box.queue), box.dropped) == ([0, 1, 2, 3, 4], 2)
    first = box.pump()
    assert [(target, message) for target, message in first] == [("sub", RequestSent(0, "t"))]
    assert box.pump() == []  # the first has not been acknowledged: it may not have arrived
    assert (box.in_flight, len(box.queue), box.delivered) == (1, 4, 1)
    box.offer(5)  # 1 in flight + 4 queued: at the bound
    assert box.dropped == 3
    assert box.ack(1) == [("sub", RequestSent(1, "t"))]  # the next goes once the first was consumed
    assert box.ack(-3) == [] and box.in_flight == 1  # a bogus ack changes nothing
    assert box.ack(1) == [("sub", RequestSent(2, "t"))]
    assert box.stats()["pending"] == 3 and box.stats()["delivered"] == 3


def test_outbox_in_batches_sends_what_waits_once_the_last_message_arrived() -> None:
    box = Outbox("sub", bound=100, topic="t", batch=4)
    for i in range(3):
        box.offer(i)
    [(_, first)] = box.pump()
    assert first == PubSubEvents((0, 1, 2), "t", 1)
    for i in range(3, 10):
        box.offer(i)
    assert box.pump() == []  # one message on its way at a time
    [(_, second)] = box.ack(0, received=1)  # said received (not consumed): the next may go
    assert second == PubSubEvents((3, 4, 5, 6), "t", 2)  # at most ``batch`` events
    assert box.in_flight == 7
    [(_, third)] = box.ack(4)  # part of message 2 consumed: it arrived
    assert third == PubSubEvents((7, 8, 9), "t", 3)
    assert box.ack(0, received=7) == []  # a seq never sent proves nothing
    assert (box.in_flight, box.delivered, box.dropped) == (6, 10, 0)


def test_outbox_window_bounds_what_is_sent_unacknowledged() -> None:
    box = Outbox("sub", bound=100, topic="t", batch=50, window=5)
    for i in range(20):
        box.offer(i)
    assert events_to(box.pump(), "sub") == [0, 1, 2, 3, 4]
    assert box.ack(0, received=1) == []  # said received, but 5 unacknowledged: the window is full
    assert events_to(box.ack(2), "sub") == [5, 6]


def test_fanout_sends_to_subscribers_of_the_topic_only() -> None:
    fanout = Fanout()
    fanout.subscribe("requests", "a", 10)
    fanout.subscribe("other", "b", 10)
    sends = fanout.publish("requests", ["e1"])
    assert [(target, message.event, message.topic) for target, message in sends] == [("a", "e1", "requests")]
    assert fanout.publish("nobody", ["e2"]) == []
    assert fanout.stats()["topics"]["requests"] == {"broadcast": 1, "subscribers": 1}


def test_fanout_a_slow_subscriber_queues_and_drops_alone() -> None:
    fanout = Fanout()
    fanout.subscribe("requests", "slow", 4)
    fanout.subscribe("requests", "fast", 100, batch=10)
    fast: list[Any] = []
    slow: list[Any] = []
    for i in range(10):
        sends = fanout.publish("requests", [i])
        fast += events_to(sends, "fast")
        slow += events_to(sends, "slow")
        fast_acks = fanout.ack("requests", "fast", len(events_to(sends, "fast")))
        fast += events_to(fast_acks, "fast")
    assert fast == list(range(10))  # whatever the slow one does
    assert slow == [0]  # one on its way, three queued, the rest dropped
    slow += events_to(fanout.ack("requests", "slow", 1), "slow")
    assert slow == [0, 1]
    by_address = {s["address"]: s for s in fanout.stats()["subscribers"]}
    assert by_address["slow"]["dropped"] == 6 and by_address["slow"]["delivered"] == 2
    assert by_address["slow"]["queued"] == 2 and by_address["slow"]["batch"] == 1
    assert by_address["fast"]["dropped"] == 0 and by_address["fast"]["delivered"] == 10


def test_fanout_batch_is_asked_for_capped_and_the_window_never_above_the_bound() -> None:
    fanout = Fanout()
    assert fanout.subscribe("requests", "actor", 1000).batch == 1
    assert fanout.subscribe("requests", "endpoint", 1000, batch=10**6).batch == MAX_BATCH
    assert fanout.subscribe("requests", "tiny", 3, window=64).limit == 3
    assert fanout.subscribe("requests", "plain", 50).limit == 50


def test_fanout_resubscribe_updates_bound_and_remove_address_counts() -> None:
    fanout = Fanout()
    fanout.subscribe("requests", "a", 1)
    assert fanout.subscribe("requests", "a", 5).bound == 5
    assert len(fanout.subscribers) == 1
    fanout.subscribe("other", "a", 5)
    assert fanout.remove_address("a") == 2
    assert fanout.stats()["removed"] == 2
    assert fanout.publish("requests", ["e"]) == []
    assert fanout.unsubscribe("requests", "a") is False


def test_a_batch_of_broadcasts_reaches_a_subscription_in_order(dl: datalogger.DataLogger) -> None:
    with pubsub.subscribe(dl, "t-batch") as sub:
        dl._system.tell(pubsub._pubsub_address(dl._system), PubSubBroadcasts("t-batch", tuple(range(50))))
        assert list(sub.iter(timeout=2.0)) == list(range(50))
    assert pubsub.stats(dl)["topics"]["t-batch"]["broadcast"] == 50


def test_fanout_cluster_events_go_to_each_peer_through_its_own_outbox() -> None:
    fanout = Fanout()
    fanout.set_peers(("peer-a", "peer-b"))
    first = fanout.publish("requests", [1], cluster=True)
    assert [target for target, _ in first] == ["peer-a", "peer-b"]
    assert all(m == PubSubBroadcasts("requests", (1,), "local", ack=True) for _, m in first)
    assert fanout.publish("requests", [2, 3], cluster=True) == []  # one batch on its way each: queued
    fanout.publish("other", [4], cluster=True)
    [(_, batch)] = fanout.ack(PEERS, "peer-b", 1)
    assert batch == PubSubBroadcasts("requests", (2, 3), "local", ack=True)  # a run of one topic
    assert [m.events for _, m in fanout.ack(PEERS, "peer-b", 2)] == [(4,)]
    fanout.set_peers(("peer-b",))  # peer-a left the convention; peer-b keeps its queue
    assert [s["address"] for s in fanout.stats()["peers"]] == ["peer-b"]


# --------------------------------------------------------------------------- argument checks


def test_name() -> None:
    assert pubsub.name() == pubsub.PUBSUB_NAME == "datalogger-pubsub"


def test_broadcast_rejects_unknown_scope_and_bad_topic() -> None:
    with pytest.raises(InvalidInput):
        pubsub.broadcast(object(), sample_event(0), scope="galaxy")
    with pytest.raises(InvalidTopic):
        pubsub.broadcast(object(), sample_event(0), topic="no spaces")


# --------------------------------------------------------------------------- on a real node


@pytest.fixture(scope="module")
def dl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[datalogger.DataLogger]:
    base: Path = tmp_path_factory.mktemp("pubsub")
    handle = datalogger.start(
        {"data_dir": str(base / "state"), "destinations": {"m": {"type": "memory"}}},
        admin_port=free_port(),
        make_default=False,
    )
    try:
        yield handle
    finally:
        handle.shutdown()


def subscriber_stats(dl: datalogger.DataLogger, topic: str) -> list[dict[str, Any]]:
    return [s for s in pubsub.stats(dl)["subscribers"] if s["topic"] == topic]


def test_subscription_receives_broadcast_events_in_order(dl: datalogger.DataLogger) -> None:
    events = [sample_event(i) for i in range(200)]
    with pubsub.subscribe(dl, "t-order") as sub:
        for event in events:
            pubsub.broadcast(dl, event, topic="t-order")
        received = list(sub.iter(timeout=2.0))
    assert received == events


def test_unsubscribe_leaves_the_topic(dl: datalogger.DataLogger) -> None:
    sub = pubsub.subscribe(dl, "t-leave")
    assert len(subscriber_stats(dl, "t-leave")) == 1
    sub.unsubscribe()
    assert sub.closed
    assert wait_for(lambda: not subscriber_stats(dl, "t-leave"))
    pubsub.broadcast(dl, sample_event(1), topic="t-leave")
    assert sub.received == 0


def test_callback_runs_off_the_caller_thread_and_survives_errors(
    dl: datalogger.DataLogger,
) -> None:
    seen: list[tuple[int, str]] = []

    def callback(event: RequestLog) -> None:
        seen.append((event.session_page_views, threading.current_thread().name))
        if event.session_page_views == 2:
            raise RuntimeError("callback bug")

    with pubsub.subscribe(dl, "t-callback", callback=callback) as sub:
        for i in range(5):
            pubsub.broadcast(dl, sample_event(i), topic="t-callback")
        assert wait_for(lambda: len(seen) == 5)
        with pytest.raises(InvalidInput):
            sub.get(0.1)
    assert [views for views, _ in seen] == [1, 2, 3, 4, 5]
    assert threading.current_thread().name not in {name for _, name in seen}
    assert sub.errors == 1


def test_cluster_scope_reaches_local_subscribers(dl: datalogger.DataLogger) -> None:
    event = sample_event(7)
    with pubsub.subscribe(dl, "t-cluster") as sub:
        pubsub.broadcast(dl, event, topic="t-cluster", scope="cluster")
        assert sub.get(5.0) == event


def test_slow_subscriber_does_not_delay_a_fast_one(dl: datalogger.DataLogger) -> None:
    slow_seen: list[Any] = []

    def slow(event: Any) -> None:
        time.sleep(0.05)
        slow_seen.append(event)

    with (
        pubsub.subscribe(dl, "t-slow", callback=slow, max_pending=10) as slow_sub,
        pubsub.subscribe(dl, "t-slow") as fast_sub,
    ):
        for i in range(1000):
            pubsub.broadcast(dl, {"i": i}, topic="t-slow")
        fast = list(fast_sub.iter(timeout=2.0))
        slow_consumed_when_fast_done = len(slow_seen)
        stats = {s["max_pending"]: s for s in subscriber_stats(dl, "t-slow")}
        # broadcasting is over: what was sent to the slow one all arrives
        assert wait_for(lambda: slow_sub.received == stats[10]["delivered"])
    assert [e["i"] for e in fast] == list(range(1000))
    # the slow one could not have consumed everything at 50 ms per event
    assert slow_consumed_when_fast_done < 1000
    assert stats[1000]["dropped"] == 0
    assert stats[10]["dropped"] > 0
    assert stats[10]["delivered"] + stats[10]["dropped"] == 1000


EVENTS = 1000
"""Events of the slow-subscriber test (the issue's case): broadcast back to back."""


@pytest.mark.parametrize(("slow_max_pending", "slow_batch"), [(100, 1), (1000, 1), (20, 20)])
def test_a_slow_actor_subscriber_delays_no_one(
    dl: datalogger.DataLogger, slow_max_pending: int, slow_batch: int
) -> None:
    """The issue's case: an actor taking 0.1 s per event (acknowledging each, as the docs
    show) delayed a prompt subscriber's last event by 8.2 s, and made stats() time out.

    1,000 events are broadcast back to back through the handle, as fast as
    ``dl.broadcast()`` returns (it is a queue put: the handle's sender thread
    batches them to the PubSub actor). "The last broadcast" is the moment the
    last ``broadcast()`` call returned: what a request sees. The prompt
    subscriber's last event must arrive within 0.5 s of it, so the time the
    handle's sender holds events before it sends them counts against the
    budget too. ``flush()`` is called only afterwards, to read the counters.
    The slow subscriber takes one event at a time as the docs first showed
    (``max_pending`` 100, and the default 1,000), or batches (of 20, 2 s each).
    """
    topic = f"t-slow-actor-{slow_max_pending}-{slow_batch}"
    system = dl._system
    slow, prompt = system.createActor(TimedWatcher), system.createActor(TimedWatcher)
    try:
        with system.private() as ctx:
            # the slow one: 0.1 s per event; one RequestSent per event acknowledged one by one,
            # or batches acknowledged once each
            assert isinstance(ctx.ask(slow, f"start:{topic}:{slow_max_pending}:0.1:{slow_batch}", 10.0), int)
            # the prompt one: batches of events (PubSubEvents), acknowledged per batch
            assert isinstance(ctx.ask(prompt, f"start:{topic}:{EVENTS}:0:500", 10.0), int)
        for i in range(EVENTS):  # as the analytics middleware broadcasts, as fast as it returns
            dl.broadcast({"i": i}, topic=topic)
        last_broadcast = time.time()
        with system.private() as ctx:
            assert wait_for(lambda: len(ctx.ask(prompt, "events", 5.0)) >= EVENTS, timeout=20.0)
            events = ctx.ask(prompt, "events", 5.0)
        assert [i for i, _ in events] == list(range(EVENTS)), "the prompt subscriber's events: out of order"
        late = max(arrived for _, arrived in events) - last_broadcast
        print(f"prompt subscriber: last of {EVENTS} events {late:.3f}s after the last broadcast")
        assert late < 0.5, f"the prompt subscriber's last event came {late:.2f}s after the last broadcast"
        dl.flush(timeout=30)  # every event has reached the PubSub actor (it has, see above)
        asked = time.monotonic()
        stats = {s["address"]: s for s in subscriber_stats(dl, topic)}
        assert time.monotonic() - asked < 1.0, "stats() took more than a second under load"
        slow_stats = stats[str(slow)]
        assert slow_stats["delivered"] + slow_stats["queued"] + slow_stats["dropped"] == EVENTS
        assert slow_stats["in_flight"] <= slow_batch and slow_stats["pending"] <= slow_max_pending
        # at 10 events a second it took a handful while 1,000 were broadcast: the rest
        # beyond its bound were dropped for it alone
        assert slow_stats["dropped"] >= EVENTS - slow_max_pending - 20
        assert slow_stats["dropped"] > 0 or slow_max_pending >= EVENTS
        assert stats[str(prompt)]["dropped"] == 0 and stats[str(prompt)]["delivered"] == EVENTS
        # the drops are counted per subscriber in the metrics too
        http = serve_metrics(dl.stats, 0, pubsub_fn=lambda: pubsub.stats(dl))
        try:
            samples = scrape(http.server_port)
        finally:
            http.shutdown()
            http.server_close()
        dropped = samples[
            ("datalogger_pubsub_events_dropped_total", (("subscriber", str(slow)), ("topic", topic)))
        ]
        assert dropped >= slow_stats["dropped"]
        assert samples[("datalogger_pubsub_broadcasts_total", (("topic", topic),))] == EVENTS
        with system.private() as ctx:  # what it was sent, it got one at a time, in order
            slow_events = [i for i, _ in ctx.ask(slow, "events", 5.0)]
        assert slow_events == sorted(set(slow_events)) and slow_events[:1] == [0]
    finally:  # leave no subscriber behind for the next tests (its queue would die with it)
        address = pubsub._pubsub_address(system)
        for watcher in (slow, prompt):
            system.tell(address, PubSubUnsubscribe(topic, watcher))
        assert wait_for(lambda: not subscriber_stats(dl, topic))
        system.tell(slow, ActorExitRequest())
        system.tell(prompt, ActorExitRequest())


def test_killed_subscriber_actor_is_removed_and_broadcasting_goes_on(
    dl: datalogger.DataLogger,
) -> None:
    system = dl._system
    watcher = system.createActor(Watcher)
    with system.private() as ctx:
        pid = ctx.ask(watcher, "start:t-kill", 10.0)
    assert isinstance(pid, int) and pid != os.getpid()
    removed_before = pubsub.stats(dl)["removed"]
    with pubsub.subscribe(dl, "t-kill") as sub:
        pubsub.broadcast(dl, {"n": 0}, topic="t-kill")
        assert sub.get(5.0) == {"n": 0}
        with system.private() as ctx:
            assert wait_for(lambda: ctx.ask(watcher, "events", 5.0) == [{"n": 0}])
        os.kill(pid, signal.SIGKILL)
        for n in range(1, 21):
            pubsub.broadcast(dl, {"n": n}, topic="t-kill")
        assert [e["n"] for e in sub.iter(timeout=2.0)] == list(range(1, 21))
        assert wait_for(lambda: len(subscriber_stats(dl, "t-kill")) == 1)
    assert pubsub.stats(dl)["removed"] == removed_before + 1


def test_actor_subscriber_gets_events_and_acks(dl: datalogger.DataLogger) -> None:
    system = dl._system
    watcher = system.createActor(Watcher)
    try:
        with system.private() as ctx:
            assert isinstance(ctx.ask(watcher, "start:t-actor", 10.0), int)
            for i in range(120):  # more than its max_pending of 50: acks return credit
                pubsub.broadcast(dl, {"i": i}, topic="t-actor")
                if i % 40 == 39:
                    expected = i + 1
                    assert wait_for(lambda n=expected: len(ctx.ask(watcher, "events", 5.0)) == n)
            events = ctx.ask(watcher, "events", 5.0)
        assert [e["i"] for e in events] == list(range(120))
        [stats] = subscriber_stats(dl, "t-actor")
        assert stats["dropped"] == 0
    finally:
        system.tell(watcher, ActorExitRequest())


def test_subscribe_rejects_bad_arguments(dl: datalogger.DataLogger) -> None:
    with pytest.raises(InvalidInput):
        pubsub.subscribe(dl, "requests", max_pending=0)
    with pytest.raises(InvalidTopic):
        pubsub.subscribe(dl, "bad topic")


def test_simple_system_base_serves_actor_subscribers_not_subscriptions(tmp_path: Path) -> None:
    dl = datalogger.start(
        {"data_dir": str(tmp_path), "destinations": {"m": {"type": "memory"}}},
        base="simpleSystemBase",
        make_default=False,
    )
    try:
        with pytest.raises(DataLoggerError, match="multiprocTCPBase"):
            pubsub.subscribe(dl, "requests")
        watcher = dl._system.createActor(Watcher)
        assert isinstance(dl._system.ask(watcher, "start:t-simple", 5.0), int)
        for i in range(3):
            pubsub.broadcast(dl, {"i": i}, topic="t-simple")
        assert dl._system.ask(watcher, "events", 5.0) == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert pubsub.stats(dl)["topics"]["t-simple"] == {"broadcast": 3, "subscribers": 1}
    finally:
        dl.shutdown()
