"""The plain logic of a DataBuffer partition, without actors.

:class:`Partition` holds one partition's keys. Per key, values wait in a
:class:`~datalogger.batcher.Batcher` until ``interval`` (+ jitter) seconds
after the key's first insert, or until ``max_size`` values are in. A flush
calls the user's ``handle_flush`` at once; if it raises, the flush is retried
after the delay the :class:`~datalogger.retry.RetryPolicy` gives, on a timer
(the BufferActor's ``wakeupAfter``), never a sleep: other keys go on
meanwhile, while later flushes of the same key wait their turn, so a key's data
is handed over in insert order. When the retries are used up, ``handle_error``
is called and the data is written to the dead letters (if ``dead_letter_dir``
is set). Every outcome is counted.

When ``handle_flush`` raises :class:`~datalogger.exceptions.PermanentError`
(or an error the retry policy does not retry), the values at fault are found
as the delivery core finds bad rows (:func:`~datalogger.isolation.deliver_isolating`):
the others are flushed, and only those go to ``handle_error`` and the dead
letters, each with its own error.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .batcher import Batcher
from .deadletters import DeadLetterStore
from .delivery import Attempt, classify_permanent, describe
from .exceptions import InvalidData, PermanentError
from .isolation import deliver_isolating
from .messages import BufferSyncFlushed
from .retry import RetryPolicy
from .validation import pack

if TYPE_CHECKING:
    from .buffer import DataBuffer

__all__ = [
    "COUNTERS",
    "FlushJob",
    "KeyBatcher",
    "Partition",
    "as_rows",
    "partition_for",
    "safe_key_name",
    "short_repr",
]

log = logging.getLogger("datalogger.buffer")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _key_bytes(key: Any) -> bytes:
    try:
        return pack(key)
    except (TypeError, ValueError, OverflowError):
        return repr(key).encode("utf-8", "backslashreplace")


def partition_for(key: Any, partitions: int) -> int:
    """The partition (``0 <= n < partitions``) that holds ``key``.

    ``zlib.crc32`` of the key's msgpack bytes (its ``repr`` when msgpack cannot
    encode it), so the answer is the same in every process and every run, unlike
    Python's salted ``hash()``. Keys equal in Python but encoded differently
    (``1`` and ``1.0``) may land on different partitions: use keys of one type.
    """
    return zlib.crc32(_key_bytes(key)) % partitions


def safe_key_name(key: Any) -> str:
    """A name for ``key`` that is a valid topic (dead-letter file names use it).

    Strings made of ``[A-Za-z0-9_.:-]`` are kept as they are; anything else
    (other strings, other types) is turned into such a string with a crc32
    suffix, so that different keys keep different names.
    """
    text = key if isinstance(key, str) else repr(key)
    safe = _UNSAFE.sub("_", text)[:200]
    if isinstance(key, str) and safe == text and safe not in ("", ".", ".."):
        return safe
    return f"{safe or 'key'}-{zlib.crc32(_key_bytes(key)):08x}"


COUNTERS = (
    "inserted",
    "flushed",
    "flushed_values",
    "errors",
    "retried",
    "failed",
    "failed_values",
    "dead_lettered",
    "lost",
    "slow",
    "error_handler_failed",
)
"""The counters a partition keeps (see docs/buffer.md)."""


class KeyBatcher(Batcher):
    """A :class:`Batcher` whose values can be looked at without taking them."""

    def peek(self) -> list[Any]:
        """The values buffered now, in insert order."""
        return list(self._batch.rows)


@attrs.define
class FlushJob:
    """One key's data on its way to ``handle_flush``."""

    id: int
    key: Any
    data: list[Any]
    attempt: int = 0
    first_at: float = 0.0
    started: float = 0.0
    waiting: bool = False
    """True while a retry timer is pending."""


@attrs.define
class _Waiter:
    token: int
    reply_to: Any
    pending: set[int]
    results: list[Any] = attrs.Factory(list)
    failed: int = 0


Schedule = Callable[[float, Any], None]
Send = Callable[[Any, Any], None]


class Partition:
    """Buffers, flushes, retries and counters of one partition.

    Args:
        buffer: the user's DataBuffer object (the actor's copy).
        index: this partition's number.
        schedule: ``schedule(delay, payload)`` must call :meth:`on_timer` with
            ``payload`` after ``delay`` seconds.
        send: ``send(address, message)`` delivers a reply.
    """

    def __init__(self, buffer: DataBuffer, index: int, schedule: Schedule, send: Send) -> None:
        self.buffer = buffer
        self.index = index
        self.policy = RetryPolicy(buffer.retry)
        self.dead_letters = (
            DeadLetterStore(buffer.dead_letter_dir) if buffer.dead_letter_dir else None
        )
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._schedule = schedule
        self._send = send
        self._buffers: dict[Any, tuple[int, KeyBatcher]] = {}
        self._jobs: dict[Any, deque[FlushJob]] = {}
        self._by_id: dict[int, FlushJob] = {}
        self._waiters: list[_Waiter] = []
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ data in
    def insert(self, key: Any, values: list[Any]) -> None:
        """Buffer ``values`` for ``key``; flush whenever ``max_size`` values are in."""
        self.counters["inserted"] += len(values)
        position = 0
        while position < len(values):
            entry = self._buffers.get(key)
            if entry is None:
                entry = (
                    next(self._ids),
                    KeyBatcher(self.buffer.max_size, self.buffer.interval, self.buffer.jitter),
                )
                self._buffers[key] = entry
            batcher_id, batcher = entry
            room = max(1, self.buffer.max_size - len(batcher))
            part = values[position : position + room]
            position += len(part)
            batch, delay = batcher.add(0, part)
            if delay is not None:
                self._schedule(delay, ("flush", key, batcher_id, batcher.generation))
            if batch is not None:
                del self._buffers[key]
                self._submit(key, batch.rows)

    def flush(self, key: Any = None) -> None:
        """Flush ``key`` (None: every key) now."""
        for flushed in self._take(key):
            self._run(flushed)

    def sync_flush(self, token: int, reply_to: Any, key: Any = None) -> None:
        """Flush like :meth:`flush`; send :class:`BufferSyncFlushed` once that data is settled."""
        taken = self._take(key)
        pending = {
            job.id for k, queue in self._jobs.items() if key is None or k == key for job in queue
        }
        waiter = _Waiter(token, reply_to, pending)
        self._waiters.append(waiter)
        for flushed in taken:
            self._run(flushed)
        self._check_waiters()

    def on_timer(self, payload: Any) -> None:
        """A timer set through ``schedule`` went off."""
        kind = payload[0]
        if kind == "flush":
            _, key, batcher_id, generation = payload
            entry = self._buffers.get(key)
            if entry is None or entry[0] != batcher_id:
                return  # stale: that batch was flushed for size, or by a flush request
            batch = entry[1].due(generation)
            if batch is not None:
                del self._buffers[key]
                self._submit(key, batch.rows)
        elif kind == "retry":
            job = self._by_id.get(payload[1])
            if job is not None and job.waiting:
                job.waiting = False
                self._run(job.key)

    def close(self) -> None:
        """Last flush before the actor stops: one attempt each, no retry, then handle_error."""
        self._take(None)
        for key in list(self._jobs):
            queue = self._jobs.pop(key)
            for job in queue:
                job.waiting = False
                self._attempt(job, final=True)
        self._check_waiters()

    # ------------------------------------------------------------------ reports
    def dump(self, key: Any = None) -> dict[Any, list[Any]]:
        """Key -> values held: those waiting for a retry, then those buffered."""
        held: dict[Any, list[Any]] = {}
        for k, queue in self._jobs.items():
            if key is None or k == key:
                held[k] = [value for job in queue for value in job.data]
        for k, (_, batcher) in self._buffers.items():
            if key is None or k == key:
                held.setdefault(k, []).extend(batcher.peek())
        return held

    def size(self, key: Any = None) -> int:
        """Values held for ``key`` (None: every key)."""
        return self._retrying(key) + sum(
            len(batcher) for k, (_, batcher) in self._buffers.items() if key is None or k == key
        )

    def _retrying(self, key: Any = None) -> int:
        return sum(
            len(job.data)
            for k, queue in self._jobs.items()
            if key is None or k == key
            for job in queue
        )

    def info(self) -> dict[str, Any]:
        """Partition index, keys held, sizes, settings and counters."""
        keys = list(self._jobs) + [key for key in self._buffers if key not in self._jobs]
        retrying = self._retrying()
        retry = {
            name: (value if value is None or isinstance(value, (int, float)) else repr(value))
            for name, value in attrs.asdict(self.buffer.retry, recurse=False).items()
        }
        return {
            "partition": self.index,
            "keys": keys,
            "size": self.size(),
            "buffered": self.size() - retrying,
            "retrying": retrying,
            "settings": {
                "class": f"{type(self.buffer).__module__}:{type(self.buffer).__qualname__}",
                "partitions": self.buffer.partitions,
                "interval": self.buffer.interval,
                "jitter": self.buffer.jitter,
                "max_size": self.buffer.max_size,
                "flush_timeout": self.buffer.flush_timeout,
                "retry": retry,
                "dead_letter_dir": self.buffer.dead_letter_dir,
            },
            **self.counters,
        }

    # ------------------------------------------------------------------ flushing
    def _take(self, key: Any) -> list[Any]:
        """Move buffered values into flush jobs (not run yet); return the keys concerned."""
        keys = [k for k in self._buffers if key is None or k == key]
        for k in keys:
            _, batcher = self._buffers.pop(k)
            batch = batcher.take()
            if batch is not None:
                self._enqueue(k, batch.rows)
        return keys

    def _enqueue(self, key: Any, data: list[Any]) -> None:
        job = FlushJob(next(self._ids), key, data)
        self._by_id[job.id] = job
        self._jobs.setdefault(key, deque()).append(job)

    def _submit(self, key: Any, data: list[Any]) -> None:
        self._enqueue(key, data)
        self._run(key)

    def _run(self, key: Any) -> None:
        """Attempt ``key``'s jobs in order until one waits for a retry."""
        queue = self._jobs.get(key)
        while queue and not queue[0].waiting:
            if not self._attempt(queue[0]):
                break
            queue.popleft()
        if queue is not None and not queue:
            del self._jobs[key]
        self._check_waiters()

    def _attempt(self, job: FlushJob, final: bool = False) -> bool:
        """Call handle_flush once; True when the job is settled, False when a retry waits."""
        job.attempt += 1
        if job.attempt == 1:
            job.first_at = time.time()
            job.started = time.monotonic()
        began = time.monotonic()
        attempt = self._call(job.key, job.data)
        self._check_slow(job, began)
        if attempt.ok:
            self.counters["flushed"] += 1
            self.counters["flushed_values"] += len(job.data)
            self._settled(job, ok=True, result=attempt.result)
            return True
        error = attempt.error or RuntimeError("handle_flush failed")
        self.counters["errors"] += 1
        if attempt.permanent or not self.policy.retryable(error):
            return self._isolate(job, attempt, final)
        decision = self.policy.decide(job.attempt, error, job.started)
        if decision.retry and not final:
            job.waiting = True
            self.counters["retried"] += 1
            log.info(
                "%s: flush of key %s failed (attempt %d: %s); retrying in %.2fs",
                type(self.buffer).__name__,
                short_repr(job.key),
                job.attempt,
                describe(error),
                decision.delay,
            )
            self._schedule(decision.delay, ("retry", job.id))
            return False
        self._give_up(job, error)
        return True

    def _call(self, key: Any, data: list[Any]) -> Attempt:
        """One call of handle_flush, its exception turned into an :class:`Attempt`."""
        try:
            result = self.buffer.handle_flush(key, list(data), self.buffer.flush_meta)
        except PermanentError as exc:
            return classify_permanent(data, exc)
        except Exception as exc:
            return Attempt(ok=False, error=exc, permanent=not self.policy.retryable(exc))
        return Attempt(ok=True, result=result)

    def _isolate(self, job: FlushJob, first: Attempt, final: bool) -> bool:
        """A permanent failure: flush what goes, give up only the values that fail alone."""
        outcome = deliver_isolating(
            lambda part: self._call(job.key, part), job.data, first=first
        )
        if outcome.delivered:
            self.counters["flushed"] += len(outcome.results)
            self.counters["flushed_values"] += len(outcome.delivered)
        results = list(outcome.results)
        if outcome.dead:
            dead = sorted(outcome.dead)
            self._give_up_values(
                job, [job.data[i] for i in dead], [outcome.dead[i] for i in dead]
            )
        transient = outcome.transient or RuntimeError("handle_flush failed")
        decision = self.policy.decide(job.attempt, transient, job.started)
        if outcome.pending and decision.retry and not final:
            # a transient failure while isolating: the values not judged yet are retried
            job.data = [job.data[i] for i in outcome.pending]
            job.waiting = True
            self.counters["retried"] += 1
            self._schedule(decision.delay, ("retry", job.id))
            return False
        if outcome.pending:
            self._give_up_values(
                job, [job.data[i] for i in outcome.pending],
                [describe(transient)] * len(outcome.pending),
            )
        self._settled(job, ok=not outcome.dead and not outcome.pending,
                      result=results[0] if len(results) == 1 else results)
        return True

    def _check_slow(self, job: FlushJob, began: float) -> None:
        limit = self.buffer.flush_timeout
        elapsed = time.monotonic() - began
        if limit is not None and elapsed > limit:
            self.counters["slow"] += 1
            log.warning(
                "%s: handle_flush for key %s took %.2fs (flush_timeout %.2fs)",
                type(self.buffer).__name__,
                short_repr(job.key),
                elapsed,
                limit,
            )

    def _give_up(self, job: FlushJob, error: BaseException) -> None:
        self._give_up_values(job, list(job.data), [describe(error)] * len(job.data))
        self._settled(job, ok=False)

    def _give_up_values(self, job: FlushJob, values: list[Any], errors: list[str]) -> None:
        """handle_error, then the dead letters (if configured), for ``values`` of ``job``."""
        name = type(self.buffer).__name__
        self.counters["failed"] += 1
        self.counters["failed_values"] += len(values)
        try:
            self.buffer.handle_error(job.key, list(values), self.buffer.flush_meta)
        except Exception as exc:
            self.counters["error_handler_failed"] += 1
            log.error(
                "%s: handle_error for key %s raised %s", name, short_repr(job.key), describe(exc)
            )
        if self.dead_letters is not None:
            self._dead_letter(job, values, errors)

    def _dead_letter(self, job: FlushJob, values: list[Any], errors: list[str]) -> None:
        assert self.dead_letters is not None
        name = type(self.buffer).__name__
        topic = safe_key_name(job.key)
        reason = f"key {short_repr(job.key)}: {errors[0] if errors else 'failed'}"
        rows = as_rows(values)
        for attempt_rows in (rows, [{"value": repr(value)} for value in values]):
            try:
                self.dead_letters.add(
                    topic, name, attempt_rows, reason, job.attempt, job.first_at, time.time(),
                    errors=errors,
                )
            except InvalidData:
                continue  # not msgpack-serialisable: store the values' repr instead
            except Exception as exc:
                log.error(
                    "%s: cannot write dead letter for key %s: %s",
                    name,
                    short_repr(job.key),
                    describe(exc),
                )
                break
            self.counters["dead_lettered"] += len(values)
            return
        self.counters["lost"] += len(values)

    def _settled(self, job: FlushJob, ok: bool, result: Any = None) -> None:
        self._by_id.pop(job.id, None)
        for waiter in self._waiters:
            if job.id in waiter.pending:
                waiter.pending.discard(job.id)
                if ok:
                    waiter.results.append(result)
                else:
                    waiter.failed += 1

    def _check_waiters(self) -> None:
        done = [waiter for waiter in self._waiters if not waiter.pending]
        if not done:
            return
        self._waiters = [waiter for waiter in self._waiters if waiter.pending]
        for waiter in done:
            self._send(
                waiter.reply_to,
                BufferSyncFlushed(waiter.token, self.index, waiter.results, waiter.failed),
            )


def as_rows(values: list[Any]) -> list[dict[str, Any]]:
    """The values as dead-letter rows: dicts with str keys as they are, else ``{"value": v}``."""
    if all(isinstance(value, dict) and all(isinstance(k, str) for k in value) for value in values):
        return list(values)
    return [{"value": value} for value in values]


def short_repr(key: Any) -> str:
    """``repr(key)``, cut to 80 characters, for log lines."""
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."
