"""The delivery core (:class:`DeliveryQueue`) with fake clocks, without an actor system."""

from __future__ import annotations

from typing import Any

from datalogger.config import RetrySettings
from datalogger.core.delivery_queue import DeliveryJob, DeliveryQueue, DeliveryTimer
from datalogger.delivery import Attempt
from datalogger.exceptions import PermanentError
from datalogger.retry import RetryPolicy


class Clock:
    """A fake clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """Hooks that record every call; dead letters fail while ``letters_fail`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.letters: list[tuple[list[Any], list[str], str]] = []
        self.letters_fail = False

    def delivered(self, job: DeliveryJob, result: Any, rows: list[Any]) -> str | None:
        self.calls.append(("delivered", job.topic, list(rows)))
        return None

    def retrying(self, job: DeliveryJob, error: BaseException, delay: float) -> None:
        self.calls.append(("retrying", job.attempt, delay))

    def tell_error(self, job: DeliveryJob, error: BaseException | str, rows: list[Any]) -> None:
        self.calls.append(("tell_error", list(rows)))

    def dead_letter(
        self, job: DeliveryJob, rows: list[Any], errors: list[str], reason: str, now: float
    ) -> bool:
        if self.letters_fail:
            return False
        self.letters.append((list(rows), list(errors), reason))
        return True

    def settled(self, job: DeliveryJob, delivered: int, dead: int, error: str | None) -> None:
        self.calls.append(("settled", job.seqs, delivered, dead, job.attempts))


class Harness:
    """A queue, its hooks, a fake clock and the timers it asked for."""

    def __init__(self, **retry: Any) -> None:
        settings = RetrySettings(**{"initial_delay": 1.0, "multiplier": 2.0, "jitter": 0.0, **retry})
        self.clock = Clock()
        self.hooks = Recorder()
        self.timers: list[tuple[float, DeliveryTimer]] = []
        self.queue = DeliveryQueue(
            RetryPolicy(settings), self.hooks, self._schedule, now=self.clock, wall=self.clock
        )

    def _schedule(self, delay: float, timer: DeliveryTimer) -> None:
        self.timers.append((self.clock.t + delay, timer))

    def advance(self, seconds: float) -> None:
        """Move the clock and fire the timers that are due."""
        self.clock.t += seconds
        due = [timer for at, timer in self.timers if at <= self.clock.t]
        self.timers = [(at, timer) for at, timer in self.timers if at > self.clock.t]
        for timer in due:
            self.queue.on_timer(timer)

    def run(self, send: Any) -> None:
        """Attempt every ready job with ``send(rows) -> Attempt``."""
        while (job := self.queue.next_job()) is not None:
            self.queue.outcome(job, send(job.sending()))


def test_a_success_settles_the_job_once() -> None:
    h = Harness()
    h.queue.add("t", (1, 2), [{"a": 1}, {"a": 2}])
    h.run(lambda rows: Attempt(ok=True))
    assert h.hooks.calls == [
        ("delivered", "t", [{"a": 1}, {"a": 2}]),
        ("settled", (1, 2), 2, 0, 1),
    ]
    assert len(h.queue) == 0


def test_a_transient_failure_waits_on_a_timer_while_later_jobs_go_on() -> None:
    h = Harness(max_attempts=3)
    h.queue.add("t", (1,), ["x"])
    h.queue.add("t", (2,), ["y"])
    h.run(lambda rows: Attempt(ok=rows != ["x"], error=None if rows != ["x"] else OSError("down")))
    assert ("retrying", 1, 1.0) in h.hooks.calls
    assert ("settled", (2,), 1, 0, 1) in h.hooks.calls  # the later job did not wait
    assert [t.kind for _, t in h.timers] == ["retry"] and len(h.queue) == 1
    h.advance(0.5)
    assert h.queue.next_job() is None  # not due yet
    h.advance(0.5)
    h.run(lambda rows: Attempt(ok=False, error=OSError("down")))
    assert ("retrying", 2, 2.0) in h.hooks.calls  # exponential back-off from the policy
    h.advance(2.0)
    h.run(lambda rows: Attempt(ok=False, error=OSError("still down")))
    assert h.hooks.letters == [(["x"], ["OSError: still down"], "OSError: still down")]
    assert h.hooks.calls[-2:] == [("tell_error", ["x"]), ("settled", (1,), 0, 1, 3)]
    assert len(h.queue) == 0


def test_a_permanent_failure_isolates_the_bad_row_and_delivers_the_rest() -> None:
    h = Harness()
    rows = [{"n": n} for n in range(8)]
    h.queue.add("t", (7,), rows)

    def send(part: list[Any]) -> Attempt:
        if {"n": 5} in part:
            return Attempt(ok=False, error=PermanentError("n=5 refused"), permanent=True)
        return Attempt(ok=True)

    h.run(send)
    delivered = [row for call in h.hooks.calls if call[0] == "delivered" for row in call[2]]
    assert sorted(r["n"] for r in delivered) == [0, 1, 2, 3, 4, 6, 7]
    assert h.hooks.letters == [([{"n": 5}], ["PermanentError: n=5 refused"], "PermanentError: n=5 refused")]
    settled = [call for call in h.hooks.calls if call[0] == "settled"]
    assert len(settled) == 1 and settled[0][2:4] == (7, 1)
    assert not h.timers


def test_an_error_the_policy_does_not_retry_counts_as_permanent() -> None:
    h = Harness(max_attempts=5)
    h.queue.add("t", (1,), ["only"])
    h.run(lambda rows: Attempt(ok=False, error=PermanentError("no")))
    assert not h.timers
    assert h.hooks.calls[-1] == ("settled", (1,), 0, 1, 1)


def test_a_letter_that_cannot_be_written_is_written_again_with_on_error_called_once() -> None:
    h = Harness(max_attempts=1)
    h.hooks.letters_fail = True
    h.queue.add("t", (1,), ["r"])
    h.run(lambda rows: Attempt(ok=False, error=OSError("down")))
    assert [t.kind for _, t in h.timers] == ["letter"]
    assert not any(call[0] == "settled" for call in h.hooks.calls)
    h.advance(5.0)  # still failing: scheduled again
    assert [t.kind for _, t in h.timers] == ["letter"]
    h.hooks.letters_fail = False
    h.advance(5.0)
    assert h.hooks.letters == [(["r"], ["OSError: down"], "OSError: down")]
    assert [call[0] for call in h.hooks.calls] == ["tell_error", "settled"]
    assert h.queue.next_job() is None and len(h.queue) == 0


def test_latency_and_dead_letter_times_come_from_the_injected_clocks() -> None:
    h = Harness(max_attempts=2)
    job = h.queue.add("t", (1,), ["r"])
    h.run(lambda rows: Attempt(ok=False, error=OSError("down")))
    assert job.first_at == 100.0 and job.began == 100.0
    h.advance(1.0)
    assert h.queue.latency(job) == 1.0


def test_ordered_jobs_of_a_retrying_topic_wait_their_turn_other_topics_flow() -> None:
    h = Harness(max_attempts=3)
    h.queue.ordered = True
    h.queue.add("a", (1,), ["a1"])
    h.queue.add("a", (2,), ["a2"])
    h.queue.add("b", (3,), ["b1"])
    failing = {"a1"}
    sent: list[list[Any]] = []

    def send(rows: list[Any]) -> Attempt:
        sent.append(list(rows))
        if rows[0] in failing:
            return Attempt(ok=False, error=OSError("down"))
        return Attempt(ok=True)

    h.run(send)
    assert sent == [["a1"], ["b1"]]  # a2 waits behind a1
    failing.clear()
    h.advance(1.0)
    h.run(send)
    assert sent[2:] == [["a1"], ["a2"]]


def test_last_attempts_give_every_job_one_try_and_no_retry() -> None:
    h = Harness(max_attempts=5)
    h.queue.add("a", (1,), ["a1"])
    h.run(lambda rows: Attempt(ok=False, error=OSError("down")))
    assert len(h.queue.waiting) == 1
    h.queue.add("b", (2,), ["b1"])
    h.queue.last_attempts()
    h.run(lambda rows: Attempt(ok=rows == ["b1"], error=None if rows == ["b1"] else OSError("x")))
    assert h.hooks.letters == [(["a1"], ["OSError: x"], "OSError: x")]
    assert len(h.queue) == 0
