"""Ship Python log records to datalogger with a :class:`logging.Handler`.

::

    import logging
    import datalogger
    from datalogger.logging import DataLoggerHandler

    datalogger.start("datalogger.toml")
    logging.getLogger().addHandler(DataLoggerHandler(topic="logs"))
    logging.getLogger("app").warning("disk %d%% full", 91, extra={"disk": "/var"})

Each record becomes one row of the topic::

    {"time": datetime(..., tzinfo=UTC), "level": "WARNING", "logger": "app",
     "message": "disk 91% full", "module": "main", "lineno": 7, "process": 4242,
     "thread": "MainThread", "disk": "/var"}

plus ``exc_info`` (the formatted traceback) when the record carries one, and
every ``extra`` field msgpack can serialise (others are left out).

The handler never blocks the logging thread and never raises into it: each row
is put on the handle's bounded in-process queue (as ``DataLogger.log_nowait``
does) and sent by the handle's background thread, which keeps the rows while
the node is away, in memory and in ``spool_dir`` if set (see
:mod:`datalogger.batching`). A record that cannot be shipped (no handle yet, the
queue full, a bad field) is counted in :attr:`DataLoggerHandler.dropped` (and in
the handle's ``stats()["client"]``), unexpected failures also in
:attr:`DataLoggerHandler.errors`, and warned about at most once a minute.
Records of datalogger's own loggers (``datalogger*``) are ignored, so the
library cannot feed itself.

The handler can connect by itself, which suits ``logging.config.dictConfig``::

    "handlers": {"datalogger": {"class": "datalogger.logging.DataLoggerHandler",
                                "topic": "logs", "connect": {"admin_port": 1900}}}
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .batching import LazyRow
from .validation import pack, validate_topic

__all__ = ["DEFAULT_FIELDS", "FIELD_GETTERS", "DataLoggerHandler"]

#: Row field -> how it is read from a :class:`logging.LogRecord`.
FIELD_GETTERS: dict[str, Any] = {
    "time": lambda r: datetime.fromtimestamp(r.created, tz=UTC),
    "level": lambda r: r.levelname,
    "levelno": lambda r: r.levelno,
    "logger": lambda r: r.name,
    "message": lambda r: r.getMessage(),
    "module": lambda r: r.module,
    "funcName": lambda r: r.funcName,
    "filename": lambda r: r.filename,
    "pathname": lambda r: r.pathname,
    "lineno": lambda r: r.lineno,
    "process": lambda r: r.process,
    "processName": lambda r: r.processName,
    "thread": lambda r: r.threadName,
    "thread_id": lambda r: r.thread,
}

#: The fields shipped by default.
DEFAULT_FIELDS = ("time", "level", "logger", "message", "module", "lineno", "process", "thread")

#: Attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}

_formatter = logging.Formatter()
_PLAIN_RECORD_SIZE = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_WARN_EVERY = 60.0
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_warnings = logging.getLogger("datalogger.logging")


class DataLoggerHandler(logging.Handler):
    """A logging handler that ships records as rows to a datalogger topic.

    Args:
        topic: the topic the rows are logged to.
        handle: a :class:`~datalogger.DataLogger`; ``None`` uses ``connect``
            if given, else :func:`datalogger.get_default`, looked up on each
            record until there is one, so the handler can be installed before
            the node is started.
        level: the handler's level.
        fields: which of :data:`FIELD_GETTERS` each row holds.
        exclude: logger-name prefixes whose records are ignored (datalogger's
            own loggers always are).
        connect: keyword arguments of :func:`datalogger.connect`: the handler
            connects on its first record (``require_node=False``,
            ``make_default=False`` unless given) and closes that handle in
            :meth:`close`.

    Raises:
        InvalidTopic: ``topic`` is not a valid topic name.
        ValueError: an unknown field name, or both ``handle`` and ``connect``.
    """

    def __init__(
        self,
        topic: str = "logs",
        handle: Any = None,
        level: int | str = logging.NOTSET,
        fields: Iterable[str] = DEFAULT_FIELDS,
        exclude: Iterable[str] = (),
        connect: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(level)
        self.topic = validate_topic(topic)
        if handle is not None and connect is not None:
            raise ValueError("give DataLoggerHandler a handle or connect options, not both")
        self.datalogger = handle
        """The handle given (or connected), or None (the default instance)."""
        self.fields = tuple(fields)
        unknown = [name for name in self.fields if name not in FIELD_GETTERS]
        if unknown:
            raise ValueError(
                f"unknown log fields {unknown}; known: {', '.join(sorted(FIELD_GETTERS))}"
            )
        self.exclude = ("datalogger", *exclude)
        self.shipped = 0
        """Records queued for the node."""
        self.dropped = 0
        """Records that could not be shipped."""
        self.errors = 0
        """Records dropped because of an unexpected error (a subset of ``dropped``)."""
        self.last_error: str | None = None
        """The last unexpected error, as text."""
        self._busy: set[int] = set()
        """Threads shipping a record now (a record logged meanwhile is not shipped)."""
        self._connect = dict(connect) if connect is not None else None
        self._owned = False
        self._getters = tuple((name, FIELD_GETTERS[name]) for name in self.fields)
        self._default_fields = self.fields == DEFAULT_FIELDS
        self._put: Callable[[str, Any], Any] | None = None
        self._put_of: Any = None
        self._lazy = False
        self._warned_drops = 0
        self._last_warning = -_WARN_EVERY

    def make_row(self, record: logging.LogRecord) -> dict[str, Any]:
        """The row shipped for ``record``."""
        return self._row(record, record.getMessage())

    def _lazy_row(self, record: logging.LogRecord) -> dict[str, Any]:
        """The row of a record queued by :meth:`emit` (its message was made there)."""
        return self._row(record, record.__dict__["_datalogger_message"])

    def _row(self, record: logging.LogRecord, message: str) -> dict[str, Any]:
        if self._default_fields:  # the common case, without a call per field
            row = {
                "time": datetime.fromtimestamp(record.created, tz=UTC),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                "module": record.module,
                "lineno": record.lineno,
                "process": record.process,
                "thread": record.threadName,
            }
        else:
            row = {name: getter(record) for name, getter in self._getters}
            if "message" in row:
                row["message"] = message
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            row["exc_info"] = record.exc_text
        if record.stack_info:
            row["stack_info"] = record.stack_info
        attributes = record.__dict__
        if len(attributes) > _PLAIN_RECORD_SIZE:  # beyond a plain record: extras, or "message"
            for key in attributes.keys() - _STANDARD_ATTRS:
                if key in row or key.startswith("_"):
                    continue
                value = attributes[key]
                if type(value) not in _PLAIN_TYPES:
                    try:
                        pack(value)
                    except Exception:  # not serialisable: left out, as documented
                        continue
                row[key] = value
        return row

    def _target(self) -> Any:
        if self.datalogger is not None:
            return self.datalogger
        if self._connect is not None:
            import datalogger

            options = {"make_default": False, "require_node": False, **self._connect}
            self.datalogger = datalogger.connect(**options)
            self._owned = True
            return self.datalogger
        from .exceptions import NotRunning
        from .system import get_default

        try:
            return get_default()
        except NotRunning:
            return None

    def _putter(self, target: Any) -> Callable[[str, Any], Any]:
        if self._put_of is not target:
            sender = getattr(target, "_sender", None)
            # a DataLogger: straight onto its queue (the rows are built by datalogger itself)
            self._put = sender().put_one if sender is not None else target.log_nowait
            self._lazy = sender is not None
            self._put_of = target
        assert self._put is not None
        return self._put

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` as a row; never blocks, never raises."""
        if record.name.startswith(self.exclude):
            return
        busy, me = self._busy, threading.get_ident()
        if me in busy:  # a record logged while shipping one
            self.dropped += 1
            return
        busy.add(me)
        try:
            target = self.datalogger or self._target()
            if target is None:
                self.dropped += 1
                return
            put = self._put if target is self._put_of and self._put is not None else self._putter(target)
            if self._lazy:
                # Only what must be fixed now is done here (the message, from arguments that
                # may change; a traceback, not kept alive); the handle's sender builds the row.
                record.__dict__["_datalogger_message"] = record.getMessage()
                if record.exc_info and not record.exc_text:
                    record.exc_text = _formatter.formatException(record.exc_info)
                row: Any = LazyRow(self._lazy_row, record)
            else:
                row = self.make_row(record)
            if put(self.topic, row) is False:
                self.dropped += 1  # the handle's queue is full (it counts and warns too)
            else:
                self.shipped += 1
        except Exception as exc:
            self.dropped += 1
            self.errors += 1
            try:
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception:
                self.last_error = type(exc).__name__
        finally:
            busy.discard(me)
        if self.dropped != self._warned_drops:
            self._warn()

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning < _WARN_EVERY:
            return
        new, self._warned_drops, self._last_warning = self.dropped - self._warned_drops, self.dropped, now
        _warnings.warning(
            "DataLoggerHandler: %d records not shipped to topic %s (%d in all; last error: %s)",
            new, self.topic, self.dropped, self.last_error or "no datalogger handle, or its queue full",
        )

    def close(self) -> None:
        """Close the handler, and the handle it connected itself (sending what it queued)."""
        try:
            if self._owned and self.datalogger is not None:
                self.datalogger.close()
                self.datalogger = None
                self._owned = False
        finally:
            super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        """Count instead of printing to stderr (``emit`` handles its own errors)."""
        self.errors += 1
