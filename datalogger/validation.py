"""Checks on what callers hand to datalogger: topic names and data."""

from __future__ import annotations

import re
from typing import Any

import msgpack

from .exceptions import InvalidData, InvalidTopic

__all__ = [
    "MAX_TOPIC_LENGTH",
    "TOPIC_PATTERN",
    "normalize_rows",
    "pack",
    "unpack",
    "validate_topic",
]

#: Topic names: 1 to 255 characters from this set. They are safe in file names
#: and, once quoted, in SQL identifiers.
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
MAX_TOPIC_LENGTH = 255


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name, else raise :class:`InvalidTopic`."""
    if not isinstance(topic, str):
        raise InvalidTopic(f"topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise InvalidTopic("topic must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(
            f"topic is {len(topic)} characters long; the limit is {MAX_TOPIC_LENGTH}"
        )
    if not TOPIC_PATTERN.match(topic):
        bad = sorted({c for c in topic if not re.match(r"[A-Za-z0-9_.:-]", c)})
        raise InvalidTopic(
            f"topic {topic!r} has characters outside [A-Za-z0-9_.:-]: {''.join(bad)!r}"
        )
    if topic in (".", ".."):
        raise InvalidTopic(f"topic {topic!r} is reserved")
    return topic


def pack(data: Any) -> bytes:
    """Serialise with msgpack (timezone-aware datetimes allowed), as everything on disk is."""
    return msgpack.packb(data, use_bin_type=True, datetime=True)


def unpack(blob: bytes) -> Any:
    """Inverse of :func:`pack`."""
    return msgpack.unpackb(blob, raw=False, timestamp=3, strict_map_key=False)


def normalize_rows(data: object) -> list[dict[str, Any]]:
    """Turn one row or a list of rows into a list of rows, checking each.

    Raises:
        InvalidData: ``data`` is not a dict or a non-empty list of dicts, a key
            is not a str, or a value cannot be serialised with msgpack.
    """
    if isinstance(data, dict):
        rows: list[Any] = [data]
    elif isinstance(data, (list, tuple)):
        rows = list(data)
        if not rows:
            raise InvalidData("data is an empty list: log at least one row")
    else:
        raise InvalidData(f"data must be a row (dict) or a list of rows, not {type(data).__name__}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidData(f"row {index} is a {type(row).__name__}, not a dict")
        for key in row:
            if not isinstance(key, str):
                raise InvalidData(f"row {index} has a key {key!r} that is not a str")
    try:
        pack(rows)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidData(f"data cannot be serialised with msgpack: {exc}") from exc
    return rows
