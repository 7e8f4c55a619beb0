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
as for a destination (:class:`~datalogger.isolation.RowIsolation`): the others
are flushed, and only those go to ``handle_error`` and the dead letters, each
with its own error.

Jobs, attempts, retry timers, isolation, dead-lettering and settling are the
delivery core's (:class:`~datalogger.core.delivery_queue.DeliveryQueue`, the
same state machine as a DestinationWorker's); this module adds the per-key
buffers, the counters, the user's hooks and the sync-flush waiters.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .batcher import Batcher
from .core.delivery_queue import DeliveryJob, DeliveryQueue, DeliveryTimer
from .deadletters import DeadLetterStore
from .delivery import Attempt, classify_permanent, describe
from .exceptions import InvalidData, PermanentError
from .messages import BufferSyncFlushed
from .retry import RetryPolicy
from .validation import pack

if TYPE_CHECKING:
    from .buffer import DataBuffer

__all__ = [
    "COUNTERS",
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
        self.delivery = DeliveryQueue(self.policy, self, self._schedule_delivery, ordered=True)
        """The flush jobs: attempts, retries, isolation, dead letters, settling."""
        self._results: dict[int, list[Any]] = {}
        """Job id -> what its successful ``handle_flush`` calls returned."""
        self._waiters: list[_Waiter] = []
        self._ids = itertools.count(1)

    def _schedule_delivery(self, delay: float, timer: DeliveryTimer) -> None:
        self._schedule(delay, (timer.kind, timer))

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
        self._take(key)
        self._run()

    def sync_flush(self, token: int, reply_to: Any, key: Any = None) -> None:
        """Flush like :meth:`flush`; send :class:`BufferSyncFlushed` once that data is settled."""
        self._take(key)
        pending = {job.id for job in self.delivery.jobs() if key is None or job.topic == key}
        self._waiters.append(_Waiter(token, reply_to, pending))
        self._run()

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
        elif isinstance(payload[1], DeliveryTimer):
            self.delivery.on_timer(payload[1])
            self._run()

    def close(self) -> None:
        """Last flush before the actor stops: one attempt each, no retry, then handle_error."""
        self._take(None)
        self.delivery.last_attempts()
        self._run()

    # ------------------------------------------------------------------ reports
    def dump(self, key: Any = None) -> dict[Any, list[Any]]:
        """Key -> values held: those waiting for a retry, then those buffered."""
        held: dict[Any, list[Any]] = {}
        for job in sorted(self.delivery.jobs(), key=lambda job: job.id):
            if key is None or job.topic == key:
                held.setdefault(job.topic, []).extend(_unsettled(job))
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
            len(_unsettled(job)) for job in self.delivery.jobs() if key is None or job.topic == key
        )

    def info(self) -> dict[str, Any]:
        """Partition index, keys held, sizes, settings and counters."""
        retrying_keys = list(dict.fromkeys(job.topic for job in self.delivery.jobs()))
        keys = retrying_keys + [key for key in self._buffers if key not in retrying_keys]
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
        self.delivery.add(key, (), data)

    def _submit(self, key: Any, data: list[Any]) -> None:
        self._enqueue(key, data)
        self._run()

    def _run(self) -> None:
        """Call handle_flush for every job ready (a key's in order) until each settles or waits."""
        while (job := self.delivery.next_job()) is not None:
            began = time.monotonic()
            attempt = self._call(job.topic, job.sending())
            self._check_slow(job, began)
            if not attempt.ok and job.isolation is None:
                self.counters["errors"] += 1
            self.delivery.outcome(job, attempt)
        self._check_waiters()

    # ------------------------------------------------------------------ delivery hooks
    def delivered(self, job: DeliveryJob, result: Any, rows: list[Any]) -> str | None:
        """A handle_flush call went through: count it, keep its result for a sync flush."""
        self.counters["flushed"] += 1
        self.counters["flushed_values"] += len(rows)
        self._results.setdefault(job.id, []).append(result)
        return None

    def retrying(self, job: DeliveryJob, error: BaseException, delay: float) -> None:
        """Count and log a retry."""
        self.counters["retried"] += 1
        log.info(
            "%s: flush of key %s failed (attempt %d: %s); retrying in %.2fs",
            type(self.buffer).__name__,
            short_repr(job.topic),
            job.attempt,
            describe(error),
            delay,
        )

    def tell_error(self, job: DeliveryJob, error: BaseException | str, rows: list[Any]) -> None:
        """Call handle_error for the values given up."""
        self.counters["failed"] += 1
        self.counters["failed_values"] += len(rows)
        try:
            self.buffer.handle_error(job.topic, list(rows), self.buffer.flush_meta)
        except Exception as exc:
            self.counters["error_handler_failed"] += 1
            log.error(
                "%s: handle_error for key %s raised %s",
                type(self.buffer).__name__,
                short_repr(job.topic),
                describe(exc),
            )

    def dead_letter(
        self, job: DeliveryJob, rows: list[Any], errors: list[str], reason: str, now: float
    ) -> bool:
        """Write the dead letter, if ``dead_letter_dir`` is set (values it cannot write count as lost)."""
        if self.dead_letters is not None:
            self._dead_letter(job, rows, errors, now)
        return True

    def settled(self, job: DeliveryJob, delivered: int, dead: int, error: str | None) -> None:
        """Tell the sync-flush waiters."""
        results = self._results.pop(job.id, [])
        ok = dead == 0
        result = results[0] if len(results) == 1 else results
        for waiter in self._waiters:
            if job.id in waiter.pending:
                waiter.pending.discard(job.id)
                if ok:
                    waiter.results.append(result)
                else:
                    waiter.failed += 1

    def _call(self, key: Any, data: list[Any]) -> Attempt:
        """One call of handle_flush, its exception turned into an :class:`Attempt`."""
        try:
            result = self.buffer.handle_flush(key, list(data), self.buffer.flush_meta)
        except PermanentError as exc:
            return classify_permanent(data, exc)
        except Exception as exc:
            return Attempt(ok=False, error=exc, permanent=not self.policy.retryable(exc))
        return Attempt(ok=True, result=result)

    def _check_slow(self, job: DeliveryJob, began: float) -> None:
        limit = self.buffer.flush_timeout
        elapsed = time.monotonic() - began
        if limit is not None and elapsed > limit:
            self.counters["slow"] += 1
            log.warning(
                "%s: handle_flush for key %s took %.2fs (flush_timeout %.2fs)",
                type(self.buffer).__name__,
                short_repr(job.topic),
                elapsed,
                limit,
            )

    def _dead_letter(self, job: DeliveryJob, values: list[Any], errors: list[str], now: float) -> None:
        assert self.dead_letters is not None
        name = type(self.buffer).__name__
        topic = safe_key_name(job.topic)
        reason = f"key {short_repr(job.topic)}: {errors[0] if errors else 'failed'}"
        rows = as_rows(values)
        for attempt_rows in (rows, [{"value": repr(value)} for value in values]):
            try:
                self.dead_letters.add(
                    topic, name, attempt_rows, reason, job.attempts, job.first_at, now,
                    errors=errors,
                )
            except InvalidData:
                continue  # not msgpack-serialisable: store the values' repr instead
            except Exception as exc:
                log.error(
                    "%s: cannot write dead letter for key %s: %s",
                    name,
                    short_repr(job.topic),
                    describe(exc),
                )
                break
            self.counters["dead_lettered"] += len(values)
            return
        self.counters["lost"] += len(values)

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


def _unsettled(job: DeliveryJob) -> list[Any]:
    """The values of ``job`` not yet flushed nor given up."""
    if job.isolation is None:
        return list(job.rows)
    judged = set(job.isolation.delivered) | set(job.isolation.dead)
    return [value for index, value in enumerate(job.rows) if index not in judged]


def as_rows(values: list[Any]) -> list[dict[str, Any]]:
    """The values as dead-letter rows: dicts with str keys as they are, else ``{"value": v}``."""
    if all(isinstance(value, dict) and all(isinstance(k, str) for k in value) for value in values):
        return list(values)
    return [{"value": value} for value in values]


def short_repr(key: Any) -> str:
    """``repr(key)``, cut to 80 characters, for log lines."""
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."
