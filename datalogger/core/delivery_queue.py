"""The delivery state machine, as a plain class: jobs, attempts, retries, dead letters, settling.

A :class:`DeliveryQueue` owns the jobs on their way to a destination (a chunk
or batch of one topic, or one key's data of a DataBuffer). Its owner takes the
next job with :meth:`DeliveryQueue.next_job`, makes one attempt of
:meth:`DeliveryJob.sending` (in its own process or a SendActor) and hands the
:class:`~datalogger.delivery.Attempt` back to :meth:`DeliveryQueue.outcome`.
The queue decides the rest:

* a success settles the job (after the owner's ``delivered`` hook);
* a transient failure waits ``RetryPolicy.decide`` seconds on a timer (the
  injected ``schedule``, never a sleep), while later jobs go on;
* a permanent failure isolates the bad rows (:class:`~datalogger.isolation.RowIsolation`),
  one part per attempt, parts going first in the queue;
* rows that cannot be delivered go to the owner's ``dead_letter`` hook (after
  ``tell_error``, once per job); a letter that cannot be written is written
  again ``LETTER_RETRY`` seconds later, the verdicts kept;
* every job ends in exactly one ``settled`` call.

The clocks are injected (``now`` for durations, ``wall`` for dead-letter
times), so the whole machine runs in unit tests with fake ones.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs

from ..delivery import Attempt, describe
from ..isolation import RowIsolation
from ..retry import RetryPolicy

__all__ = [
    "LETTER_RETRY",
    "DeliveryHooks",
    "DeliveryJob",
    "DeliveryQueue",
    "DeliveryTimer",
    "summary",
]

LETTER_RETRY = 5.0
"""Seconds before a dead letter that could not be written is written again."""


@attrs.frozen
class DeliveryTimer:
    """The payload of a timer of a :class:`DeliveryQueue` (retry an attempt, or a letter)."""

    kind: str
    """``"retry"``: the job's next attempt is due; ``"letter"``: write its dead letter again."""
    job: int
    """The job's id."""


@attrs.define
class DeliveryJob:
    """Rows of one topic (or key) on their way to the destination."""

    id: int
    topic: Any
    """The topic (for a DataBuffer: the key)."""
    seqs: tuple[int, ...]
    rows: list[Any]
    attempt: int = 0
    """Attempts of what is sent now: the whole group, or the part being isolated."""
    first_at: float = 0.0
    """Wall-clock time of the very first attempt (for the dead letter)."""
    started: float = 0.0
    """``now()`` of the first attempt of what is sent now (for the retry policy)."""
    began: float = 0.0
    """``now()`` of the very first attempt (for the latency)."""
    attempts: int = 0
    """Attempts in all, parts included."""
    isolation: RowIsolation | None = None
    """Set once the group failed permanently: which rows fail on their own."""
    part: list[int] | None = None
    """While isolating: the indices of the rows sent now."""
    error: BaseException | None = None
    """The last error (passed to ``tell_error``)."""
    told: bool = False
    """``tell_error`` was called (a dead letter written again does not call it again)."""

    def sending(self) -> list[Any]:
        """The rows of the next attempt."""
        if self.part is None:
            return self.rows
        return [self.rows[index] for index in self.part]


class DeliveryHooks(Protocol):
    """What the owner of a :class:`DeliveryQueue` does at each step (no Thespian here)."""

    def delivered(self, job: DeliveryJob, result: Any, rows: list[Any]) -> str | None:
        """``rows`` of ``job`` went through with ``result``; return a problem to report, if any."""

    def retrying(self, job: DeliveryJob, error: BaseException, delay: float) -> None:
        """An attempt of ``job`` failed with ``error``; the next one is in ``delay`` seconds."""

    def tell_error(self, job: DeliveryJob, error: BaseException | str, rows: list[Any]) -> None:
        """``rows`` of ``job`` are given up (called once per job, before its first letter)."""

    def dead_letter(
        self, job: DeliveryJob, rows: list[Any], errors: list[str], reason: str, now: float
    ) -> bool:
        """Write ``rows`` (each with its error) as a dead letter; False if it could not be written."""

    def settled(self, job: DeliveryJob, delivered: int, dead: int, error: str | None) -> None:
        """``job`` is done: ``delivered`` rows went through, ``dead`` were dead-lettered."""


Schedule = Callable[[float, DeliveryTimer], None]


class DeliveryQueue:
    """Jobs, attempts, retry timers, row isolation, dead-lettering and settling.

    Args:
        policy: the retry policy (tenacity's stop, wait and retry).
        hooks: what to do when rows are delivered, retried, given up or settled.
        schedule: ``schedule(delay, timer)`` must call :meth:`on_timer` with
            ``timer`` after ``delay`` seconds.
        now: a monotonic clock (seconds).
        wall: the wall clock (seconds since the epoch), for dead letters.
        ordered: while a job of a topic waits for its retry, later jobs of that
            topic wait too (a DataBuffer key's data is handed over in order).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        hooks: DeliveryHooks,
        schedule: Schedule,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        ordered: bool = False,
    ) -> None:
        self.policy = policy
        self.hooks = hooks
        self._schedule = schedule
        self._now = now
        self._wall = wall
        self.ready: deque[DeliveryJob] = deque()
        """Jobs whose next attempt may go now, in order."""
        self.waiting: dict[int, DeliveryJob] = {}
        """Jobs waiting on a timer (a retry, or a letter written again)."""
        self.ordered = ordered
        self.final = False
        """Set by :meth:`last_attempts`: a transient failure is given up, not retried."""
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        """Jobs not settled and not being attempted: ready or waiting."""
        return len(self.ready) + len(self.waiting)

    def jobs(self) -> Iterator[DeliveryJob]:
        """The jobs ready, then those waiting."""
        yield from self.ready
        yield from self.waiting.values()

    # ------------------------------------------------------------------ jobs in and out
    def add(self, topic: str, seqs: tuple[int, ...], rows: list[Any]) -> DeliveryJob:
        """Queue a new job at the end."""
        job = DeliveryJob(next(self._ids), topic, seqs, rows)
        self.ready.append(job)
        return job

    def next_job(self) -> DeliveryJob | None:
        """The job to attempt now (its attempt counted), or None when none is ready.

        The owner must hand the outcome of that attempt to :meth:`outcome`.
        """
        if not self.ready:
            return None
        if self.ordered and self.waiting:
            blocked = {job.topic for job in self.waiting.values()}
            job = next((job for job in self.ready if job.topic not in blocked), None)
            if job is None:
                return None
            self.ready.remove(job)
        else:
            job = self.ready.popleft()
        job.attempt += 1
        job.attempts += 1
        if job.attempt == 1:
            job.started = self._now()
        if job.attempts == 1:
            job.first_at = self._wall()
            job.began = job.started
        return job

    def on_timer(self, timer: DeliveryTimer) -> None:
        """A timer set through ``schedule`` went off: its job is ready again, or its letter retried."""
        job = self.waiting.pop(timer.job, None)
        if job is None:
            return
        if timer.kind == "retry":
            self.ready.appendleft(job)
        elif job.isolation is not None:
            self._isolate(job)  # every row is judged: this writes the letter again

    def last_attempts(self) -> None:
        """Before the owner stops: every job is ready now and gets no retry after a failure."""
        self.final = True
        for job_id in sorted(self.waiting, reverse=True):
            self.ready.appendleft(self.waiting.pop(job_id))

    # ------------------------------------------------------------------ outcomes
    def outcome(self, job: DeliveryJob, attempt: Attempt) -> None:
        """The attempt of ``job`` last taken with :meth:`next_job` ended with ``attempt``."""
        sent = job.sending()
        if attempt.ok:
            problem = self.hooks.delivered(job, attempt.result, sent)
            if job.isolation is None:
                self.hooks.settled(job, len(job.rows), 0, problem)
                return
            job.isolation.record(attempt)
            self._isolate(job)
            return
        error = attempt.error or RuntimeError("unknown failure")
        job.error = error
        if not attempt.permanent and not self.policy.retryable(error):
            attempt = attrs.evolve(attempt, permanent=True)  # the policy says: not transient
        if attempt.permanent:
            if job.isolation is None:
                job.isolation = RowIsolation(len(job.rows))
                job.isolation.start(attempt)
            else:
                job.isolation.record(attempt)
            self._isolate(job)
            return
        decision = self.policy.decide(job.attempt, error, job.started, self._now())
        if decision.retry and not self.final:
            self.waiting[job.id] = job
            self._schedule(decision.delay, DeliveryTimer("retry", job.id))
            self.hooks.retrying(job, error, decision.delay)
            return
        if job.isolation is None:  # a transient error that outlived its retries: all rows
            self._give_up(job, dict.fromkeys(range(len(job.rows)), describe(error)), error)
            return
        job.isolation.abandon(describe(error))
        self._isolate(job)

    def _isolate(self, job: DeliveryJob) -> None:
        """Queue the next part of an isolating job first, or settle it when every row is judged."""
        assert job.isolation is not None
        part = job.isolation.next_part()
        if part is not None:
            job.part = part
            job.attempt = 0
            self.ready.appendleft(job)
            return
        job.part = None
        dead = job.isolation.dead
        if not dead:
            self.hooks.settled(job, len(job.rows), 0, None)
            return
        self._give_up(job, dead, job.error or summary([dead[index] for index in sorted(dead)]))

    def _give_up(self, job: DeliveryJob, dead: dict[int, str], error: BaseException | str) -> None:
        """Dead-letter the rows ``dead`` names (index -> reason); the others were delivered."""
        indices = sorted(dead)
        bad = [job.rows[index] for index in indices]
        errors = [dead[index] for index in indices]
        if not job.told:
            job.told = True
            self.hooks.tell_error(job, error, bad)
        reason = summary(errors)
        if not self.hooks.dead_letter(job, bad, errors, reason, self._wall()):
            # Keep the verdicts: only the writing of the letter is tried again.
            if job.isolation is None:
                job.isolation = RowIsolation(len(job.rows))
                job.isolation.dead.update(dead)
                job.isolation.delivered.extend(i for i in range(len(job.rows)) if i not in dead)
            job.part = None
            self.waiting[job.id] = job
            self._schedule(LETTER_RETRY, DeliveryTimer("letter", job.id))
            return
        self.hooks.settled(job, len(job.rows) - len(bad), len(bad), reason)

    def latency(self, job: DeliveryJob) -> float:
        """Seconds since the first attempt of ``job``."""
        return self._now() - job.began if job.began else 0.0


def summary(errors: list[str]) -> str:
    """One reason for a dead letter: the first row's error, and how many rows had others."""
    first = errors[0] if errors else "rejected"
    others = sum(1 for error in errors if error != first)
    if others:
        return f"{first} (and {others} rows with other errors)"
    return first
