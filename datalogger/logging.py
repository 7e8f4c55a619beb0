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

The handler never blocks the logging thread and never raises into it: rows go
through ``DataLogger.log_nowait`` (a bounded in-process queue); a record that
cannot be shipped (no node started yet, node shut down, queue full, a bad
field) is counted in :attr:`DataLoggerHandler.dropped` and, for unexpected
failures, :attr:`DataLoggerHandler.errors`. Records of datalogger's own
loggers (``datalogger*``) are ignored, so the library cannot feed itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

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


class DataLoggerHandler(logging.Handler):
    """A logging handler that ships records as rows to a datalogger topic.

    Args:
        topic: the topic the rows are logged to.
        handle: a :class:`~datalogger.DataLogger`; ``None`` uses
            :func:`datalogger.get_default`, looked up on every record, so the
            handler can be installed before the node is started.
        level: the handler's level.
        fields: which of :data:`FIELD_GETTERS` each row holds.
        exclude: logger-name prefixes whose records are ignored (datalogger's
            own loggers always are).

    Raises:
        InvalidTopic: ``topic`` is not a valid topic name.
        ValueError: an unknown field name.
    """

    def __init__(
        self,
        topic: str = "logs",
        handle: Any = None,
        level: int | str = logging.NOTSET,
        fields: Iterable[str] = DEFAULT_FIELDS,
        exclude: Iterable[str] = (),
    ) -> None:
        super().__init__(level)
        self.topic = validate_topic(topic)
        self.datalogger = handle
        """The handle given, or None (the default instance)."""
        self.fields = tuple(fields)
        unknown = [name for name in self.fields if name not in FIELD_GETTERS]
        if unknown:
            raise ValueError(
                f"unknown log fields {unknown}; known: {', '.join(sorted(FIELD_GETTERS))}"
            )
        self.exclude = ("datalogger", *exclude)
        self.shipped = 0
        """Records handed to ``log_nowait``."""
        self.dropped = 0
        """Records that could not be shipped."""
        self.errors = 0
        """Records dropped because of an unexpected error (a subset of ``dropped``)."""
        self.last_error: str | None = None
        """The last unexpected error, as text."""
        self._busy = threading.local()

    def make_row(self, record: logging.LogRecord) -> dict[str, Any]:
        """The row shipped for ``record``."""
        row = {name: FIELD_GETTERS[name](record) for name in self.fields}
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            row["exc_info"] = record.exc_text
        if record.stack_info:
            row["stack_info"] = record.stack_info
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in row or key.startswith("_"):
                continue
            try:
                pack(value)
            except Exception:  # not serialisable: left out, as documented
                continue
            row[key] = value
        return row

    def _target(self) -> Any:
        if self.datalogger is not None:
            return self.datalogger
        from .exceptions import NotRunning
        from .system import get_default

        try:
            return get_default()
        except NotRunning:
            return None

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` as a row; never blocks, never raises."""
        if record.name.startswith(self.exclude):
            return
        if getattr(self._busy, "active", False):  # a record logged while shipping one
            self.dropped += 1
            return
        self._busy.active = True
        try:
            target = self._target()
            if target is None:
                self.dropped += 1
                return
            target.log_nowait(self.topic, self.make_row(record))
            self.shipped += 1
        except Exception as exc:
            self.dropped += 1
            self.errors += 1
            try:
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception:
                self.last_error = type(exc).__name__
        finally:
            self._busy.active = False

    def handleError(self, record: logging.LogRecord) -> None:
        """Count instead of printing to stderr (``emit`` handles its own errors)."""
        self.errors += 1
