"""Case ``pubsub``: events/s reaching a prompt subscriber, alone and beside a slow one.

A ``multiprocTCPBase`` node; ``dl.broadcast()`` of N small events back to back
(a queue put each; the handle's sender batches them to the PubSub actor), to
actor subscribers (:class:`bench.actors.PubSubWatcher`) of a fresh topic per
variant and round:

- ``per_event``: one ``RequestSent`` per event, each acknowledged before the
  next is sent (the protocol docs/pubsub.md first showed): the baseline;
- ``batched``: ``PubSubEvents`` of up to 500 events, acknowledged per batch;
- ``batched_beside_slow``: the same, with a subscriber of the same topic that
  takes 0.1 s per event (one at a time, ``max_pending=100``) beside it;
- ``subscription``: ``pubsub.subscribe(dl, topic)`` read with ``iter()`` in
  this process.

Per round: events/s from the first broadcast to the last event's arrival, and
how late the last event came after the last ``broadcast()`` returned. The
broadcasts take microseconds each, so events/s is what the path to the
subscriber sustains. ``per_event`` gets a tenth of the events (it is that
much slower); its events/s is comparable all the same. Rounds
alternate the variants. Targets: batched / per_event events/s at least 5,
the prompt subscriber beside a slow one at least 0.8 of alone, and its last
event within 0.5 s of the last broadcast (the issue's case).
"""

from __future__ import annotations

import time
from typing import Any

from datalogger import pubsub

from ._common import Metrics, Mode, Result, Target, alternate, medians_of, ratio, wait_until
from ._node import node, unique
from .actors import PubSubWatcher

BATCH = 500
SLOW_SECONDS = 0.1


def _watch(dl: Any, topic: str, max_pending: int, batch: int, delay: float = 0.0) -> Any:
    system = dl._system
    watcher = system.createActor(PubSubWatcher)
    with system.private() as ctx:
        if ctx.ask(watcher, ("start", topic, max_pending, batch, delay), 10.0) != "subscribed":
            raise RuntimeError("the bench subscriber was not confirmed")
    return watcher


def _count(dl: Any, watcher: Any) -> tuple[int, float, bool]:
    with dl._system.private() as ctx:
        answer = ctx.ask(watcher, "count", 10.0)
    if not isinstance(answer, tuple):
        raise RuntimeError("the bench subscriber did not answer")
    return answer


def _stop(dl: Any, topic: str, watchers: list[Any]) -> None:
    from thespian.actors import ActorExitRequest

    from datalogger.messages import PubSubUnsubscribe

    address = pubsub._pubsub_address(dl._system)
    for watcher in watchers:
        dl._system.tell(address, PubSubUnsubscribe(topic, watcher))
        dl._system.tell(watcher, ActorExitRequest())


def _broadcast(dl: Any, topic: str, count: int) -> tuple[float, float]:
    started = time.time()
    for i in range(count):
        dl.broadcast({"i": i, "method": "GET", "path": f"/item/{i}", "status": 200, "ms": 1.5}, topic=topic)
    return started, time.time()


def _metrics(count: int, started: float, returned: float, last: float) -> Metrics:
    return {
        "events_per_s": count / max(last - started, 1e-6),
        "late_s": last - returned,
        "broadcast_us": (returned - started) / count * 1e6,
    }


def _actor_variant(dl: Any, count: int, batch: int, beside_slow: bool) -> Any:
    def measure(r: int) -> Metrics:
        topic = unique("bench_pubsub")
        watchers = []
        if beside_slow:
            watchers.append(_watch(dl, topic, 100, 1, SLOW_SECONDS))
        prompt = _watch(dl, topic, count, batch)
        watchers.append(prompt)
        try:
            started, returned = _broadcast(dl, topic, count)
            if not wait_until(lambda: _count(dl, prompt)[0] >= count, 120.0, 0.02):
                raise RuntimeError(f"the prompt subscriber got {_count(dl, prompt)[0]} of {count} events")
            got, last, in_order = _count(dl, prompt)
            if got != count or not in_order:
                raise RuntimeError(f"the prompt subscriber got {got} events, in order: {in_order}")
            return _metrics(count, started, returned, last)
        finally:
            _stop(dl, topic, watchers)

    return measure


def _subscription_variant(dl: Any, count: int) -> Any:
    def measure(r: int) -> Metrics:
        topic = unique("bench_pubsub")
        with pubsub.subscribe(dl, topic, max_pending=count) as sub:
            started, returned = _broadcast(dl, topic, count)
            received = [sub.get(60.0) for _ in range(count)]
            last = time.time()
        if [event and event["i"] for event in received] != list(range(count)):
            raise RuntimeError("the subscription missed events or got them out of order")
        return _metrics(count, started, returned, last)

    return measure


def run(mode: Mode) -> Result:
    """Alternate the variants; targets: batched >= 5x per_event, beside a slow one >= 0.8x alone."""
    count = int(mode.pick(50_000, 20_000, 600))
    baseline_count = max(100, count // 10)
    rounds = mode.rounds_or(5, 3, 1)
    result = Result("pubsub", mode.name, {"events": count, "per_event_events": baseline_count,
                                          "batch": BATCH, "rounds": rounds,
                                          "slow_seconds_per_event": SLOW_SECONDS})
    result.notes.append("events are 5-key dicts; subscribers are actors of the node (their own processes), "
                        "the subscription a thread of the benchmark's process")
    with node({"m": {"type": "memory"}}) as dl:
        result.per_round = alternate(rounds, {
            "per_event": _actor_variant(dl, baseline_count, 1, False),
            "batched": _actor_variant(dl, count, BATCH, False),
            "batched_beside_slow": _actor_variant(dl, count, BATCH, True),
            "subscription": _subscription_variant(dl, count),
        })
        result.verified["events delivered in order to the prompt subscribers"] = (
            count * 3 + baseline_count) * rounds
    result.medians = medians_of(result.per_round)
    medians = result.medians
    batched_vs_baseline = ratio(medians["batched"]["events_per_s"], medians["per_event"]["events_per_s"])
    beside_vs_alone = ratio(
        medians["batched_beside_slow"]["events_per_s"], medians["batched"]["events_per_s"]
    )
    result.ratios["batched/per_event events/s"] = batched_vs_baseline
    result.ratios["subscription/per_event events/s"] = ratio(
        medians["subscription"]["events_per_s"], medians["per_event"]["events_per_s"]
    )
    result.ratios["beside a slow one/alone events/s"] = beside_vs_alone
    result.targets.append(Target("batched/per_event events/s", batched_vs_baseline, ">=", 5.0))
    result.targets.append(Target("beside a slow one/alone events/s", beside_vs_alone, ">=", 0.8))
    late = medians["batched_beside_slow"]["late_s"]
    result.targets.append(Target("late_s beside a slow one", late, "<=", 0.5))
    return result
