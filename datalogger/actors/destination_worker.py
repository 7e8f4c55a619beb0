"""DestinationWorker: sends the chunks of a supervisor's topics to one destination.

It is created by a TopicSupervisor and receives :class:`StartWorker` first.
One worker serves every topic of its supervisor: each chunk arrives with its
topic as :class:`DeliverChunk` (``send_data(topic, rows)`` gets that topic,
and a buffer never merges rows of two topics); each ends in exactly one
:class:`ChunkSettled` back to the supervisor, after delivery or after the
rows were written to the dead-letter store. Between attempts a failed chunk
waits on a ``wakeupAfter`` timer, never a sleep, and later chunks go on.

A group the destination rejects with a permanent error is isolated row by row
(:class:`~datalogger.isolation.RowIsolation`): its parts are sent one attempt
per message, the good rows are delivered and only the rows that fail on their
own are dead-lettered, each with its own error.

With ``send_async`` every attempt runs in its own short-lived SendActor.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from datetime import timedelta
from typing import Any

import attrs
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from ..batcher import Batcher
from ..config import DestinationSpec
from ..deadletters import DeadLetterStore
from ..delivery import Attempt, DestinationHost, describe
from ..isolation import RowIsolation
from ..messages import (
    AttemptFailed,
    ChunkSettled,
    DeliverChunk,
    DeliverChunks,
    SendChunk,
    SendOutcome,
    StartWorker,
    WorkerFlush,
    WorkerTick,
)
from ..placement import capability_check
from ..retry import RetryPolicy
from .send_actor import SendActor

log = logging.getLogger("datalogger.worker")

SEND_EXIT_GRACE = 2.0
"""Seconds a SendActor that exited may still have its outcome in transit."""
PARENT_CHECK_EVERY = 2.0
"""Seconds between checks that the process that started this worker is still alive."""


@attrs.define
class Job:
    """A chunk (or a batch of chunks) of one topic on its way to the destination."""

    id: int
    topic: str
    seqs: tuple[int, ...]
    rows: list[Any]
    attempt: int = 0
    """Attempts of what is sent now: the whole group, or the part being isolated."""
    first_at: float = 0.0
    started: float = 0.0
    """``time.monotonic()`` of the first attempt of what is sent now (for the retry policy)."""
    began: float = 0.0
    """``time.monotonic()`` of the very first attempt (for the latency)."""
    attempts: int = 0
    """Attempts in all, parts included."""
    isolation: RowIsolation | None = None
    """Set once the group failed permanently: which rows fail on their own."""
    part: list[int] | None = None
    """While isolating: the indices of the rows sent now."""
    error: BaseException | None = None
    """The last error (passed to ``on_error``)."""
    told: bool = False
    """``on_error`` was called (a dead letter written again does not call it again)."""

    def sending(self) -> list[Any]:
        """The rows of the next attempt."""
        if self.part is None:
            return self.rows
        return [self.rows[index] for index in self.part]


class DestinationWorker(ActorTypeDispatcher):
    """One destination, for every topic of its supervisor."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        """Placement: the node named in the requirements, with every capability required."""
        return capability_check(capabilities, requirements)

    def __init__(self) -> None:
        super().__init__()
        self.spec: DestinationSpec | None = None
        self.supervisor: Any = None
        self.host: DestinationHost | None = None
        self.policy: RetryPolicy | None = None
        self.dead_letters: DeadLetterStore | None = None
        self.batchers: dict[str, Batcher] = {}
        """Topic -> its buffer (with ``buffer``): rows of two topics are never merged."""
        self.queue: deque[Job] = deque()
        self.waiting: dict[int, Job] = {}
        self.senders: dict[int, tuple[Any, Job]] = {}
        self.exited: set[int] = set()
        self.ticking = False
        self.ids = itertools.count(1)
        self.parent_pid = os.getppid()

    # ------------------------------------------------------------------ setup
    def receiveMsg_StartWorker(self, message: StartWorker, sender: Any) -> None:
        """Take up the destination ``message.spec``.

        All or nothing: the parts are built first and taken up together. A
        second StartWorker (or Thespian's retry) changes nothing; one that
        cannot be taken up is logged and this worker exits, so that its
        supervisor starts a new one and hands it the chunks again.
        """
        if self.spec is not None:
            return
        try:
            host = DestinationHost(message.spec)
            policy = RetryPolicy(message.spec.retry)
            dead_letters = DeadLetterStore(os.path.join(message.data_dir, "dead_letters"))
        except Exception as exc:
            log.error("worker for %s cannot start: %s", message.spec.name, describe(exc))
            self.send(self.myAddress, ActorExitRequest())
            return
        self.spec, self.supervisor = message.spec, sender
        self.host, self.policy, self.dead_letters = host, policy, dead_letters
        self.wakeupAfter(timedelta(seconds=PARENT_CHECK_EVERY), ("parent", 0))

    # ------------------------------------------------------------------ intake
    def _batcher(self, topic: str) -> Batcher | None:
        assert self.spec is not None
        buffer = self.spec.buffer
        if buffer is None:
            return None
        batcher = self.batchers.get(topic)
        if batcher is None:
            batcher = self.batchers[topic] = Batcher(buffer.max_size, buffer.interval, buffer.jitter)
        return batcher

    def receiveMsg_DeliverChunk(self, message: DeliverChunk, sender: Any) -> None:
        """Queue a chunk, or add it to its topic's buffer."""
        batcher = self._batcher(message.topic)
        if batcher is None:
            self._enqueue(message.topic, (message.seq,), message.rows)
            return
        batch, delay = batcher.add(message.seq, message.rows)
        if batch is not None:
            self._enqueue(message.topic, tuple(batch.seqs), batch.rows)
        if delay is not None:
            self.wakeupAfter(timedelta(seconds=delay), ("flush", (message.topic, batcher.generation)))

    def receiveMsg_DeliverChunks(self, message: DeliverChunks, sender: Any) -> None:
        """Chunks of a topic that waited while this worker was busy: one job (or into the buffer)."""
        if self.spec is not None and self.spec.buffer is not None:
            for seq, rows in message.chunks:
                self.receiveMsg_DeliverChunk(DeliverChunk(message.topic, seq, rows), sender)
            return
        seqs = tuple(seq for seq, _ in message.chunks)
        self._enqueue(message.topic, seqs, [row for _, rows in message.chunks for row in rows])

    def receiveMsg_WorkerFlush(self, message: WorkerFlush, sender: Any) -> None:
        """Send buffered rows now."""
        for topic, batcher in list(self.batchers.items()):
            batch = batcher.take()
            if batch is not None:
                self._enqueue(topic, tuple(batch.seqs), batch.rows)

    def _enqueue(self, topic: str, seqs: tuple[int, ...], rows: list[dict[str, Any]]) -> None:
        self.queue.append(Job(next(self.ids), topic, seqs, rows))
        assert self.spec is not None
        if not self.spec.send_async and not self.ticking and len(self.queue) == 1:
            self._send_head()  # nothing waits: send now, no round trip through a tick
        else:
            self._pump()

    def _pump(self) -> None:
        assert self.spec is not None
        if self.spec.send_async:
            while self.queue and len(self.senders) < self.spec.max_in_flight:
                self._spawn(self.queue.popleft())
        elif self.queue and not self.ticking:
            self.ticking = True
            self.send(self.myAddress, WorkerTick())

    # ------------------------------------------------------------------ sync sends
    def receiveMsg_WorkerTick(self, message: WorkerTick, sender: Any) -> None:
        """Send the chunk at the head of the queue."""
        self.ticking = False
        self._send_head()

    def _send_head(self) -> None:
        if not self.queue or self.host is None:
            return
        job = self.queue.popleft()
        self._begin(job)
        attempt = self.host.send(job.sending(), job.topic)
        if not attempt.ok and not attempt.permanent:
            self.host.restart()
        self._outcome(job, attempt)
        self._pump()

    def _begin(self, job: Job) -> None:
        job.attempt += 1
        job.attempts += 1
        if job.attempt == 1:
            job.started = time.monotonic()
        if job.attempts == 1:
            job.first_at = time.time()
            job.began = job.started

    # ------------------------------------------------------------------ async sends
    def _spawn(self, job: Job) -> None:
        assert self.spec is not None
        self._begin(job)
        address = self.createActor(SendActor)
        self.senders[job.id] = (address, job)
        self.send(address, SendChunk(self.spec, job.topic, job.id, job.sending()))

    def receiveMsg_SendOutcome(self, message: SendOutcome, sender: Any) -> None:
        """A SendActor reports its attempt."""
        entry = self.senders.pop(message.token, None)
        self.exited.discard(message.token)
        if entry is None:
            return
        _, job = entry
        error: BaseException | None = None
        if isinstance(message.error, BaseException):
            error = message.error
        elif message.error is not None:
            error = RuntimeError(f"{message.error_type}: {message.error}")
        self._outcome(
            job,
            Attempt(
                ok=message.ok,
                result=message.result,
                error=error,
                permanent=message.permanent,
                bad=message.bad,
                unsure=message.unsure,
                isolate=message.isolate,
            ),
        )
        self._pump()

    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender: Any) -> None:
        """A SendActor exited; if its outcome never comes, it crashed."""
        for token, (address, _) in self.senders.items():
            if address == message.childAddress:
                self.exited.add(token)
                self.wakeupAfter(timedelta(seconds=SEND_EXIT_GRACE), ("exited", token))
                return

    # ------------------------------------------------------------------ outcomes
    def _outcome(self, job: Job, attempt: Attempt) -> None:
        assert self.host is not None and self.policy is not None and self.spec is not None
        sent = job.sending()
        if attempt.ok:
            problem = self.host.on_success(attempt.result, sent, job.topic)
            if job.isolation is None:
                self._settle(job, delivered=len(job.rows), dead=0, error=problem)
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
        decision = self.policy.decide(job.attempt, error, job.started)
        if decision.retry:
            self.waiting[job.id] = job
            self.wakeupAfter(timedelta(seconds=decision.delay), ("retry", job.id))
            self.send(
                self.supervisor,
                AttemptFailed(
                    job.topic, self.spec.name, job.seqs, job.attempt, describe(error), decision.delay
                ),
            )
            return
        if job.isolation is None:  # a transient error that outlived its retries: all rows
            self._give_up(job, dict.fromkeys(range(len(job.rows)), describe(error)), error)
            return
        job.isolation.abandon(describe(error))
        self._isolate(job)

    def _isolate(self, job: Job) -> None:
        """Queue the next part of an isolating job first, or settle it when every row is judged."""
        assert job.isolation is not None
        part = job.isolation.next_part()
        if part is not None:
            job.part = part
            job.attempt = 0
            self.queue.appendleft(job)
            return
        job.part = None
        dead = job.isolation.dead
        if not dead:
            self._settle(job, delivered=len(job.rows), dead=0, error=None)
            return
        self._give_up(job, dead, job.error or _summary([dead[index] for index in sorted(dead)]))

    def _give_up(self, job: Job, dead: dict[int, str], error: BaseException | str) -> None:
        """Dead-letter the rows ``dead`` names (index -> reason); the others were delivered."""
        assert self.host is not None and self.spec is not None and self.dead_letters is not None
        indices = sorted(dead)
        bad = [job.rows[index] for index in indices]
        errors = [dead[index] for index in indices]
        if not job.told:
            job.told = True
            self.host.on_error(error, bad, job.topic)
        reason = _summary(errors)
        try:
            self.dead_letters.add(
                job.topic,
                self.spec.name,
                bad,
                reason,
                job.attempts,
                job.first_at,
                time.time(),
                errors=errors,
            )
        except Exception as exc:
            log.error(
                "cannot write dead letter for %s/%s: %s", job.topic, self.spec.name, describe(exc)
            )
            # Keep the verdicts: only the writing of the letter is tried again.
            if job.isolation is None:
                job.isolation = RowIsolation(len(job.rows))
                job.isolation.dead.update(dead)
                job.isolation.delivered.extend(i for i in range(len(job.rows)) if i not in dead)
            job.part = None
            self.waiting[job.id] = job
            self.wakeupAfter(timedelta(seconds=5), ("letter", job.id))
            return
        self._settle(job, delivered=len(job.rows) - len(bad), dead=len(bad), error=reason)

    def _settle(self, job: Job, delivered: int, dead: int, error: str | None) -> None:
        assert self.spec is not None
        latency = time.monotonic() - job.began if job.began else 0.0
        self.send(
            self.supervisor,
            ChunkSettled(job.topic, self.spec.name, job.seqs, delivered, dead, job.attempts, latency, error),
        )

    # ------------------------------------------------------------------ timers
    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Retry timers, buffer timers, SendActor exit checks and the parent check."""
        kind, value = message.payload
        if kind == "parent":
            self._check_parent()
        elif kind == "retry":
            job = self.waiting.pop(value, None)
            if job is not None:
                self.queue.appendleft(job)
                self._pump()
        elif kind == "letter":
            job = self.waiting.pop(value, None)
            if job is not None and job.isolation is not None:
                self._isolate(job)  # every row is judged: this writes the letter again
                self._pump()
        elif kind == "flush":
            topic, generation = value
            batcher = self.batchers.get(topic)
            batch = batcher.due(generation) if batcher is not None else None
            if batch is not None:
                self._enqueue(topic, tuple(batch.seqs), batch.rows)
        elif kind == "exited" and value in self.exited:
            self.exited.discard(value)
            entry = self.senders.pop(value, None)
            if entry is not None:
                crash = RuntimeError(f"SendActor for topic {entry[1].topic} exited without reporting")
                self._outcome(entry[1], Attempt(ok=False, error=crash))
                self._pump()

    def _check_parent(self) -> None:
        """Exit if the process that forked this worker is gone (it was killed with SIGKILL).

        Thespian tells a parent when a child dies, not a child when its parent dies: an
        orphaned worker would live on beside the one the restarted supervisor starts. Its
        unsettled chunks are in the topic's write-ahead log, which the new supervisor replays.
        """
        if os.getppid() != self.parent_pid:
            log.warning("worker %s: its supervisor's process is gone; exiting",
                        self.spec.name if self.spec else "?")
            self.send(self.myAddress, ActorExitRequest())
            return
        self.wakeupAfter(timedelta(seconds=PARENT_CHECK_EVERY), ("parent", 0))

    # ------------------------------------------------------------------ shutdown
    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """Close the destination."""
        if self.host is not None:
            self.host.close()

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("DestinationWorker ignored %r", type(message).__name__)


def _summary(errors: list[str]) -> str:
    """One reason for a dead letter: the first row's error, and how many rows had others."""
    first = errors[0] if errors else "rejected"
    others = sum(1 for error in errors if error != first)
    if others:
        return f"{first} (and {others} rows with other errors)"
    return first
