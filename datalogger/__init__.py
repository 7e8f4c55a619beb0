"""datalogger: buffered, batched, retried delivery of data chunks over a Thespian actor core."""

from __future__ import annotations

from .buffer import DataBuffer
from .destinations.base import Destination
from .exceptions import (
    Backpressure,
    ConfigError,
    DataLoggerError,
    DeliveryTimeout,
    InvalidData,
    InvalidInput,
    InvalidTopic,
    NotRunning,
    PermanentError,
    StorageError,
)
from .messages import Log
from .system import DataLogger, connect, get_default, log, start

__version__ = "0.1.0"

__all__ = [
    "Backpressure",
    "ConfigError",
    "DataBuffer",
    "DataLogger",
    "DataLoggerError",
    "DeliveryTimeout",
    "Destination",
    "InvalidData",
    "InvalidInput",
    "InvalidTopic",
    "Log",
    "NotRunning",
    "PermanentError",
    "StorageError",
    "connect",
    "get_default",
    "log",
    "start",
]
