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

Jobs, attempts, retry timers, isolation, dead letters and settling are the
plain :class:`~datalogger.core.delivery_queue.DeliveryQueue`'s (the same one a
DataBuffer partition runs); this actor takes chunks in, makes the attempts it
asks for and sends what its :class:`WorkerHooks` report.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, ChildActorExited, WakeupMessage

from ..batcher import Batcher
from ..config import DestinationSpec
from ..core.delivery_queue import DeliveryJob, DeliveryQueue, DeliveryTimer
from ..deadletters import DeadLetterStore
from ..delivery import Attempt, DestinationHost, describe
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


class WorkerHooks:
    """What the worker's :class:`DeliveryQueue` does at each step: the destination's
    ``on_success`` / ``on_error``, the dead letters, and the reports to the supervisor."""

    def __init__(
        self,
        spec: DestinationSpec,
        host: DestinationHost,
        dead_letters: DeadLetterStore,
        report: Callable[[Any], None],
    ) -> None:
        self.spec = spec
        self.host = host
        self.dead_letters = dead_letters
        self.report = report
        """Sends a message to the supervisor."""
        self.queue: DeliveryQueue | None = None
        """The queue these hooks serve (for the latency of a settled job)."""

    def delivered(self, job: DeliveryJob, result: Any, rows: list[Any]) -> str | None:
        """Call ``on_success``."""
        return self.host.on_success(result, rows, job.topic)

    def retrying(self, job: DeliveryJob, error: BaseException, delay: float) -> None:
        """Tell the supervisor (its status shows the failing destination)."""
        self.report(
            AttemptFailed(job.topic, self.spec.name, job.seqs, job.attempt, describe(error), delay)
        )

    def tell_error(self, job: DeliveryJob, error: BaseException | str, rows: list[Any]) -> None:
        """Call ``on_error``."""
        self.host.on_error(error, rows, job.topic)

    def dead_letter(
        self, job: DeliveryJob, rows: list[Any], errors: list[str], reason: str, now: float
    ) -> bool:
        """Write the dead letter; False (logged) if it cannot be written."""
        try:
            self.dead_letters.add(
                job.topic, self.spec.name, rows, reason, job.attempts, job.first_at, now,
                errors=errors,
            )
        except Exception as exc:
            log.error(
                "cannot write dead letter for %s/%s: %s", job.topic, self.spec.name, describe(exc)
            )
            return False
        return True

    def settled(self, job: DeliveryJob, delivered: int, dead: int, error: str | None) -> None:
        """Send :class:`ChunkSettled` to the supervisor."""
        latency = self.queue.latency(job) if self.queue is not None else 0.0
        self.report(
            ChunkSettled(
                job.topic, self.spec.name, job.seqs, delivered, dead, job.attempts, latency, error
            )
        )


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
        self.delivery: DeliveryQueue | None = None
        """Jobs, attempts, retries, dead letters and settling (the plain delivery core)."""
        self.batchers: dict[str, Batcher] = {}
        """Topic -> its buffer (with ``buffer``): rows of two topics are never merged."""
        self.senders: dict[int, tuple[Any, DeliveryJob]] = {}
        self.exited: set[int] = set()
        self.ticking = False
        self.tokens = itertools.count(1)
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
        self.spec, self.supervisor, self.host = message.spec, sender, host
        hooks = WorkerHooks(message.spec, host, dead_letters, self._report)
        self.delivery = hooks.queue = DeliveryQueue(policy, hooks, self._schedule)
        self.wakeupAfter(timedelta(seconds=PARENT_CHECK_EVERY), ("parent", 0))

    def _report(self, message: Any) -> None:
        self.send(self.supervisor, message)

    def _schedule(self, delay: float, timer: DeliveryTimer) -> None:
        self.wakeupAfter(timedelta(seconds=delay), timer)

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
        assert self.spec is not None and self.delivery is not None
        self.delivery.add(topic, seqs, rows)
        if not self.spec.send_async and not self.ticking and len(self.delivery.ready) == 1:
            self._send_head()  # nothing waits: send now, no round trip through a tick
        else:
            self._pump()

    def _pump(self) -> None:
        assert self.spec is not None and self.delivery is not None
        if self.spec.send_async:
            while len(self.senders) < self.spec.max_in_flight:
                job = self.delivery.next_job()
                if job is None:
                    break
                self._spawn(job)
        elif self.delivery.ready and not self.ticking:
            self.ticking = True
            self.send(self.myAddress, WorkerTick())

    # ------------------------------------------------------------------ sync sends
    def receiveMsg_WorkerTick(self, message: WorkerTick, sender: Any) -> None:
        """Send the chunk at the head of the queue."""
        self.ticking = False
        self._send_head()

    def _send_head(self) -> None:
        if self.host is None or self.delivery is None:
            return
        job = self.delivery.next_job()
        if job is None:
            return
        attempt = self.host.send(job.sending(), job.topic)
        if not attempt.ok and not attempt.permanent:
            self.host.restart()
        self.delivery.outcome(job, attempt)
        self._pump()

    # ------------------------------------------------------------------ async sends
    def _spawn(self, job: DeliveryJob) -> None:
        assert self.spec is not None
        token = next(self.tokens)
        address = self.createActor(SendActor)
        self.senders[token] = (address, job)
        self.send(address, SendChunk(self.spec, job.topic, token, job.sending()))

    def receiveMsg_SendOutcome(self, message: SendOutcome, sender: Any) -> None:
        """A SendActor reports its attempt."""
        entry = self.senders.pop(message.token, None)
        self.exited.discard(message.token)
        if entry is None or self.delivery is None:
            return
        _, job = entry
        error: BaseException | None = None
        if isinstance(message.error, BaseException):
            error = message.error
        elif message.error is not None:
            error = RuntimeError(f"{message.error_type}: {message.error}")
        self.delivery.outcome(
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

    # ------------------------------------------------------------------ timers
    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Retry timers, buffer timers, SendActor exit checks and the parent check."""
        if isinstance(message.payload, DeliveryTimer):
            if self.delivery is not None:
                self.delivery.on_timer(message.payload)
                self._pump()
            return
        kind, value = message.payload
        if kind == "parent":
            self._check_parent()
        elif kind == "flush":
            topic, generation = value
            batcher = self.batchers.get(topic)
            batch = batcher.due(generation) if batcher is not None else None
            if batch is not None:
                self._enqueue(topic, tuple(batch.seqs), batch.rows)
        elif kind == "exited" and value in self.exited:
            self.exited.discard(value)
            entry = self.senders.pop(value, None)
            if entry is not None and self.delivery is not None:
                crash = RuntimeError(f"SendActor for topic {entry[1].topic} exited without reporting")
                self.delivery.outcome(entry[1], Attempt(ok=False, error=crash))
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

