"""The one exception hierarchy of datalogger.

Every error that datalogger raises into a caller is a :class:`DataLoggerError`.
Errors from libraries underneath (psycopg, influxdb-client, Thespian) are
translated at the boundary with ``raise ... from exc`` so the cause is kept.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Backpressure",
    "ConfigError",
    "DataLoggerError",
    "DeliveryTimeout",
    "InvalidData",
    "InvalidInput",
    "InvalidTopic",
    "NotRunning",
    "PermanentError",
    "SecurityError",
    "StorageError",
]


class DataLoggerError(Exception):
    """Base class of every error datalogger raises."""


class InvalidInput(DataLoggerError, ValueError):
    """A call was given something it cannot take (a bad topic or bad data)."""


class InvalidTopic(InvalidInput):
    """The topic is not a valid topic name, or no destination takes it."""


class InvalidData(InvalidInput):
    """The data is not a row (dict) or a list of rows, or cannot be serialised."""


class ConfigError(DataLoggerError, ValueError):
    """The configuration is malformed: the message names the option at fault."""


class DeliveryTimeout(DataLoggerError, TimeoutError):
    """The node did not answer in time (``log()``, ``flush()`` or ``stats()``)."""


class Backpressure(DataLoggerError):
    """A destination with ``overflow = "block"`` stayed full for longer than the timeout."""


class NotRunning(DataLoggerError):
    """No datalogger node is running where one was expected."""


class StorageError(DataLoggerError, OSError):
    """datalogger's own files cannot be written: a full or read-only disk, a missing permission.

    The message names the path and the operating system's error. Nothing of
    the call that raised it was kept; once the fault is gone the next call
    works, with no restart.
    """
class SecurityError(DataLoggerError):
    """Frames cannot be signed or checked: a secret file is missing, unreadable or
    open to other users, or frame signing cannot be installed (see docs/security.md)."""


class PermanentError(DataLoggerError):
    """Raised by a destination for data that will never be accepted.

    Such data is not retried. The framework finds the rows at fault and
    dead-letters only those, each with its own reason; the other rows of
    the chunk count as delivered (``on_error`` is called with the rows
    dead-lettered).

    Args:
        message: what is wrong with the data.
        rows: the rows that were rejected; the other rows of the chunk were
            stored. ``None`` (the default) means the chunk failed as a whole
            and the destination does not know which rows are at fault: the
            framework sends it again in halves, and halves of those, until
            each failing row is found alone (see docs/concepts.md).
        reasons: for each of ``rows``, why it was rejected (default: ``message``).
        unsure: rows that failed together with good ones, when the
            destination cannot tell which of them are bad (a batch the server
            refused as a whole): the framework tries them again in halves.
            The rows in neither list were stored.
    """

    def __init__(
        self,
        message: str,
        rows: list[Any] | None = None,
        reasons: list[str] | None = None,
        unsure: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.rows = rows
        self.reasons = reasons
        self.unsure = unsure
