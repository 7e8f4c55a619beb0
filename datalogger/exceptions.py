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


class PermanentError(DataLoggerError):
    """Raised by a destination for data that will never be accepted.

    Such data is not retried: ``on_error`` is called and the rows go to the
    dead-letter store at once.

    Args:
        message: what is wrong with the data.
        rows: the rows that were rejected, when only part of a chunk was bad.
            ``None`` (the default) means the whole chunk. When ``rows`` is
            given, the other rows of the chunk count as delivered.
    """

    def __init__(self, message: str, rows: list[Any] | None = None) -> None:
        super().__init__(message)
        self.rows = rows
