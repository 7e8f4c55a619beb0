"""DataBuffer: per-key buffers, flushed by your code after an interval or when full.

A port of Elixir's ``data_buffer``. Subclass :class:`DataBuffer`, write
``handle_flush``, start it on a node, insert values under any key::

    import datalogger
    from datalogger.buffer import DataBuffer

    class Buffer(DataBuffer):          # in an importable module, not in __main__
        partitions = 4
        interval = 10.0

        def handle_flush(self, key, data, meta=None):
            ...                        # write ``data`` (a list, in insert order) somewhere

    with datalogger.start(config) as dl:
        buf = Buffer().start(dl)
        buf.insert("mykey", "myval1")
        buf.insert("mykey", "myval2")
        buf.sync_flush()               # handle_flush("mykey", ["myval1", "myval2"], None)
        buf.stop()

Keys are spread over ``partitions`` BufferActors by a stable hash
(:func:`partition_for`); each actor calls ``handle_flush`` on its own copy of
the buffer object, in its own process on ``multiprocTCPBase``. That is why the
class must be importable by module path (:func:`buffer_class_path`).
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from thespian.actors import ActorExitRequest, ActorSystem

from .buffer_partition import partition_for, short_repr
from .config import RetrySettings
from .exceptions import ConfigError, DataLoggerError, DeliveryTimeout, InvalidInput, NotRunning
from .messages import (
    BufferDumpReply,
    BufferDumpRequest,
    BufferFlush,
    BufferInfoReply,
    BufferInfoRequest,
    BufferInsert,
    BufferSizeReply,
    BufferSizeRequest,
    BufferStart,
    BufferStarted,
    BufferSyncFlush,
    BufferSyncFlushed,
)

__all__ = [
    "DataBuffer",
    "buffer_class_path",
]

log = logging.getLogger("datalogger.buffer")

_tokens = itertools.count(1)
_RUNTIME_ATTRIBUTES = frozenset({"_system", "_addresses", "_lock", "_in_process"})


class _Default(enum.Enum):
    TOKEN = 0


DEFAULT = _Default.TOKEN
"""Marks a constructor argument left out: the class attribute of that name applies."""


# --------------------------------------------------------------------------- helpers


def buffer_class_path(cls: type, in_process: bool = False) -> str:
    """``"module:qualname"`` of a DataBuffer subclass, as the BufferActors import it.

    Args:
        cls: the class.
        in_process: True on ``simpleSystemBase``, where the actors run in this
            process and a class of ``__main__`` can be found.

    Raises:
        ConfigError: the class cannot be imported by path: it is defined inside a
            function, or in ``__main__`` while the actors run in other processes.
    """
    module, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname:
        raise ConfigError(
            f"{qualname} is defined inside a function: BufferActors cannot import it; "
            "define the DataBuffer subclass at the top level of a module"
        )
    if module == "__main__" and not in_process:
        raise ConfigError(
            f"{qualname} is defined in __main__: the BufferActors run in other processes "
            "(multiprocTCPBase) and cannot import it; move the class into a module and "
            "import it from there (or use simpleSystemBase)"
        )
    return f"{module}:{qualname}"


def _retry_settings(value: Any) -> RetrySettings:
    if value is None:
        return RetrySettings()
    if isinstance(value, RetrySettings):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"retry must be a dict or a RetrySettings, not {type(value).__name__}")
    known = [field.name for field in attrs.fields(RetrySettings)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(
            f"retry: unknown option {unknown[0]!r}; known options: {', '.join(known)}"
        )
    return RetrySettings(**value)


def _number(name: str, value: Any, *, positive: bool, integer: bool = False) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
    ):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}, not {value!r}")
    return value


# --------------------------------------------------------------------------- the class


class DataBuffer:
    """Per-key buffers flushed through :meth:`handle_flush`; subclass it.

    Class attributes give the defaults; constructor arguments override them.

    Args:
        partitions: how many BufferActors share the keys.
        interval: seconds from a key's first insert to its flush.
        jitter: up to this many random seconds added to ``interval``.
        max_size: values that make a key flush at once.
        flush_timeout: seconds a ``handle_flush`` call may take before it is
            reported (logged and counted as ``slow``; it is not interrupted).
            None: never reported.
        flush_meta: passed to ``handle_flush`` and ``handle_error`` as ``meta``.
        retry: a :class:`~datalogger.config.RetrySettings` or a dict of its fields:
            how a failing ``handle_flush`` is retried.
        dead_letter_dir: where data that still fails after the retries is written
            (a :class:`~datalogger.deadletters.DeadLetterStore`); None: nowhere.

    Raises:
        ConfigError: an argument is out of range.
    """

    partitions: int = 1
    interval: float = 5.0
    jitter: float = 0.0
    max_size: int = 5000
    flush_timeout: float | None = 5.0
    flush_meta: Any = None
    retry: Any = None
    dead_letter_dir: str | None = None

    def __init__(
        self,
        *,
        partitions: int | _Default = DEFAULT,
        interval: float | _Default = DEFAULT,
        jitter: float | _Default = DEFAULT,
        max_size: int | _Default = DEFAULT,
        flush_timeout: float | _Default | None = DEFAULT,
        flush_meta: Any = DEFAULT,
        retry: RetrySettings | Mapping[str, Any] | _Default | None = DEFAULT,
        dead_letter_dir: str | os.PathLike[str] | _Default | None = DEFAULT,
    ) -> None:
        def pick(name: str, value: Any) -> Any:
            return getattr(type(self), name) if value is DEFAULT else value

        self.partitions = _number(
            "partitions", pick("partitions", partitions), positive=True, integer=True
        )
        self.interval = float(_number("interval", pick("interval", interval), positive=True))
        self.jitter = float(_number("jitter", pick("jitter", jitter), positive=False))
        self.max_size = _number("max_size", pick("max_size", max_size), positive=True, integer=True)
        timeout = pick("flush_timeout", flush_timeout)
        self.flush_timeout = (
            None if timeout is None else float(_number("flush_timeout", timeout, positive=True))
        )
        self.flush_meta = pick("flush_meta", flush_meta)
        self.retry = _retry_settings(pick("retry", retry))
        directory = pick("dead_letter_dir", dead_letter_dir)
        self.dead_letter_dir = None if directory is None else os.path.abspath(os.fspath(directory))
        self._system: Any = None
        self._addresses: list[Any] = []
        self._lock: Any = threading.Lock()
        self._in_process = False

    # ------------------------------------------------------------------ user hooks
    def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
        """Write ``data`` (the key's values, in insert order) somewhere; override it.

        Runs inside a BufferActor. Return anything: :meth:`sync_flush` hands it
        back. Raise to have the flush retried (see ``retry``); raise
        :class:`~datalogger.exceptions.PermanentError` to skip the retries.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement handle_flush")

    def handle_error(self, key: Any, data: list[Any], meta: Any = None) -> None:
        """Called with data whose flush failed after every retry; override it.

        The data is written to ``dead_letter_dir`` after this returns (if set).
        The default logs a warning.
        """
        log.warning(
            "%s: giving up on %d values of key %s", type(self).__name__, len(data), short_repr(key)
        )

    def on_start(self) -> None:
        """Called in each BufferActor once its copy of the buffer is made: open connections here."""

    def on_stop(self) -> None:
        """Called in each BufferActor after its last flush, when it stops."""

    # ------------------------------------------------------------------ lifecycle
    def start(self, target: Any, timeout: float = 30.0) -> DataBuffer:
        """Create the BufferActors on a node; return ``self``.

        Args:
            target: a :class:`~datalogger.DataLogger` handle, or a Thespian ActorSystem.
            timeout: seconds to wait for the actors to load the class.

        Raises:
            ConfigError: the class cannot be imported by the actors.
            NotRunning: the handle or actor system has been shut down.
            DataLoggerError: the buffer is already started, or the actors did not start.
        """
        if self._addresses:
            raise DataLoggerError(f"{type(self).__name__} is already started")
        system = getattr(target, "_system", target)
        if system is None or getattr(target, "_closed", False):
            raise NotRunning("the datalogger handle has been shut down")
        if not isinstance(system, ActorSystem):
            raise InvalidInput(
                f"start() takes a DataLogger or an ActorSystem, not {type(target).__name__}"
            )
        base = getattr(system, "_systemBase", None)
        if base is None:
            raise NotRunning("the actor system has been shut down")
        in_process = type(base).__module__.endswith("simpleSystemBase")
        path = buffer_class_path(type(self), in_process)
        from .actors.buffer_actor import BufferActor  # here: the actor module imports this one

        handle_lock = getattr(target, "_lock", None)
        self._lock = handle_lock if handle_lock is not None else threading.Lock()
        self._system, self._in_process = system, in_process
        state = self.__getstate__()
        try:
            with self._lock:
                for _ in range(self.partitions):  # one by one: _abandon() stops those made
                    self._addresses.append(system.createActor(BufferActor))
            token = next(_tokens)
            replies = self._gather(
                [
                    BufferStart(path, state, index, self.partitions, token)
                    for index in range(self.partitions)
                ],
                token,
                BufferStarted,
                timeout,
            )
        except Exception as exc:
            self._abandon()
            if isinstance(exc, DataLoggerError):
                raise
            raise DataLoggerError(f"the BufferActors did not start: {exc}") from exc
        errors = [reply.error for reply in replies if reply.error]
        if errors:
            self._abandon()
            raise ConfigError(f"the BufferActors could not take up {path}: {errors[0]}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Flush everything (waiting up to ``timeout``), then stop the BufferActors.

        What is still being retried then gets one last attempt, then goes to
        ``handle_error`` and the dead letters. Does nothing if not started.
        """
        if not self._addresses:
            return
        if getattr(self._system, "_systemBase", None) is not None:
            try:
                self.sync_flush(timeout=timeout)
            except DeliveryTimeout:
                log.warning("%s.stop: flush not finished after %gs", type(self).__name__, timeout)
        self._abandon()

    def _abandon(self) -> None:
        addresses, self._addresses = self._addresses, []
        if getattr(self._system, "_systemBase", None) is None:
            return
        with self._lock:
            for address in addresses:
                self._system.tell(address, ActorExitRequest())

    def __enter__(self) -> DataBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __getstate__(self) -> dict[str, Any]:
        """Everything the BufferActors' copies get: the settings and your own attributes."""
        return {
            name: value for name, value in vars(self).items() if name not in _RUNTIME_ATTRIBUTES
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(partitions={self.partitions}, interval={self.interval:g}, "
            f"max_size={self.max_size}, started={bool(self._addresses)})"
        )

    # ------------------------------------------------------------------ data in
    def insert(self, key: Any, value: Any) -> None:
        """Add ``value`` to ``key``'s buffer (non-blocking).

        Raises:
            InvalidInput: ``key`` is None or unhashable.
            NotRunning: the buffer is not started.
        """
        self.insert_batch(key, [value])

    def insert_batch(self, key: Any, values: Iterable[Any]) -> None:
        """Add several values to ``key``'s buffer, in order (non-blocking).

        Raises:
            InvalidInput: ``key`` is None or unhashable.
            NotRunning: the buffer is not started.
        """
        address = self._address_for(key)
        items = list(values)
        if items:
            self._tell(address, BufferInsert(key, items))

    def flush(self, key: Any = None) -> None:
        """Flush ``key`` (None: every key) now, without waiting for the result."""
        if key is None:
            for address in self._running():
                self._tell(address, BufferFlush(None))
        else:
            self._tell(self._address_for(key), BufferFlush(key))

    # ------------------------------------------------------------------ requests
    def sync_flush(self, key: Any = None, timeout: float = 30.0) -> list[Any]:
        """Flush ``key`` (None: every key) and wait until that data is settled.

        Waits for retries too, and for data already waiting on a retry.

        Returns:
            The results of the ``handle_flush`` calls that succeeded, one per
            flushed key (keys that ended in ``handle_error`` give none).

        Raises:
            DeliveryTimeout: not settled within ``timeout`` seconds.
        """
        token = next(_tokens)
        replies = self._ask_partitions(
            key, lambda: BufferSyncFlush(token, key), token, BufferSyncFlushed, timeout
        )
        return [result for reply in replies for result in reply.results]

    def dump(self, key: Any = None, timeout: float = 10.0) -> dict[Any, list[Any]]:
        """Everything held now (waiting for the interval or for a retry), by key.

        Data waiting for a retry comes before newer buffered values of its key.
        """
        token = next(_tokens)
        replies = self._ask_partitions(
            key, lambda: BufferDumpRequest(token, key), token, BufferDumpReply, timeout
        )
        merged: dict[Any, list[Any]] = {}
        for reply in replies:
            merged.update(reply.data)
        return merged

    def size(self, key: Any = None, timeout: float = 10.0) -> int:
        """How many values are held for ``key`` (None: for every key)."""
        token = next(_tokens)
        replies = self._ask_partitions(
            key, lambda: BufferSizeRequest(token, key), token, BufferSizeReply, timeout
        )
        return sum(reply.size for reply in replies)

    def info(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """One dict per partition, in partition order.

        ``{"partition": n, "keys": [...], "size": values held, "buffered": values
        waiting for their interval, "retrying": values waiting for a retry,
        "settings": {...}, "inserted", "flushed", "flushed_values", "errors",
        "retried", "failed", "failed_values", "dead_lettered", "lost", "slow",
        "error_handler_failed"}`` (counters since the actor started; see docs/buffer.md).
        """
        token = next(_tokens)
        replies = self._ask_partitions(
            None, lambda: BufferInfoRequest(token), token, BufferInfoReply, timeout
        )
        return [reply.info for reply in replies]

    # ------------------------------------------------------------------ plumbing
    def _running(self) -> list[Any]:
        if not self._addresses:
            raise NotRunning(f"{type(self).__name__} is not started: call start() first")
        return self._addresses

    def _address_for(self, key: Any) -> Any:
        addresses = self._running()
        if key is None:
            raise InvalidInput("None cannot be a DataBuffer key (it means 'every key')")
        try:
            hash(key)
        except TypeError as exc:
            raise InvalidInput(f"a DataBuffer key must be hashable: {exc}") from exc
        return addresses[partition_for(key, len(addresses))]

    def _tell(self, address: Any, message: Any) -> None:
        with self._lock:
            self._system.tell(address, message)

    def _ask_partitions(
        self, key: Any, make: Any, token: int, reply_type: type, timeout: float
    ) -> list[Any]:
        if key is None:
            messages = [make() for _ in self._running()]
        else:
            self._address_for(key)
            index = partition_for(key, len(self._addresses))
            messages = [make() if i == index else None for i in range(len(self._addresses))]
        return self._gather(messages, token, reply_type, timeout)

    def _gather(
        self, messages: list[Any], token: int, reply_type: type, timeout: float
    ) -> list[Any]:
        """Send ``messages[i]`` to partition i (None: skip it); return the replies by partition."""
        wanted = {i for i, message in enumerate(messages) if message is not None}
        replies: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        with self._lock:
            for index in sorted(wanted):
                self._system.tell(self._addresses[index], messages[index])
            while len(replies) < len(wanted):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(wanted - set(replies))
                    raise DeliveryTimeout(
                        f"{type(self).__name__}: no answer from partitions {missing} "
                        f"within {timeout:g}s"
                    )
                # In one process (simpleSystemBase) listen() runs every timer due within
                # its timeout before it returns a reply: keep it short there.
                wait = min(remaining, 0.05) if self._in_process else remaining
                reply = self._system.listen(wait)
                if isinstance(reply, reply_type) and getattr(reply, "token", None) == token:
                    replies[getattr(reply, "partition", 0)] = reply
                elif reply is None and self._in_process:
                    time.sleep(min(0.01, max(0.0, remaining)))
        return [replies[index] for index in sorted(replies)]
