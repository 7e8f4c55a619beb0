"""Checks on what callers hand to datalogger (topic names and data), and its serialisation.

Everything datalogger keeps on disk (the write-ahead log, spill files, dead
letters) is msgpack, written by :func:`pack` and read by :func:`unpack`.
Besides msgpack's own types, these Python values survive the round trip,
as msgpack extension types (nested in lists and dicts too):

========================  ====  =============================================
Python value              code  stored as
========================  ====  =============================================
aware ``datetime``        -1    msgpack's timestamp; read back in UTC (the
                                same instant, ``==`` the original)
naive ``datetime``        1     ISO 8601 text, read back naive
``date``                  2     ISO 8601 text
``time`` (naive or aware) 3     ISO 8601 text, offset kept
``timedelta``             4     msgpack array ``[days, seconds, microseconds]``
``Decimal``               5     its exact text (``"1.10"``, ``"NaN"``)
``UUID``                  6     its 16 bytes
========================  ====  =============================================

``tuple`` is read back as ``list``, as msgpack has one array type.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from decimal import Decimal
from typing import Any

import msgpack

from .exceptions import InvalidData, InvalidTopic

__all__ = [
    "MAX_TOPIC_LENGTH",
    "TOPIC_PATTERN",
    "normalize_data",
    "normalize_rows",
    "pack",
    "require_rows",
    "rows_problem",
    "unpack",
    "validate_topic",
]

#: Topic names: 1 to 255 characters from this set. They are safe in file names
#: and, once quoted, in SQL identifiers.
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
MAX_TOPIC_LENGTH = 255

_NAIVE_DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID = 1, 2, 3, 4, 5, 6


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


def _default(value: Any) -> Any:
    """msgpack's hook for the types it does not know (see the module docstring)."""
    if isinstance(value, dt.datetime):  # naive: aware ones are msgpack timestamps
        return msgpack.ExtType(_NAIVE_DATETIME, value.isoformat().encode())
    if isinstance(value, dt.date):
        return msgpack.ExtType(_DATE, value.isoformat().encode())
    if isinstance(value, dt.time):
        return msgpack.ExtType(_TIME, value.isoformat().encode())
    if isinstance(value, dt.timedelta):
        parts = [value.days, value.seconds, value.microseconds]
        return msgpack.ExtType(_TIMEDELTA, msgpack.packb(parts))
    if isinstance(value, Decimal):
        return msgpack.ExtType(_DECIMAL, str(value).encode())
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_UUID, value.bytes)
    raise TypeError(f"cannot serialize {type(value).__name__} object {value!r:.80}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _NAIVE_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == _DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _TIME:
        return dt.time.fromisoformat(data.decode())
    if code == _TIMEDELTA:
        days, seconds, micros = msgpack.unpackb(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _UUID:
        return uuid.UUID(bytes=data)
    return msgpack.ExtType(code, data)


_packers = threading.local()


def pack(data: Any) -> bytes:
    """Serialise with msgpack and the extension types above, as everything on disk is."""
    packer = getattr(_packers, "packer", None)
    if packer is None:  # one per thread: a Packer is not thread-safe, and costly to make
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, datetime=True, default=_default)
    result: bytes = packer.pack(data)
    return result


def unpack(blob: bytes) -> Any:
    """Inverse of :func:`pack`."""
    return msgpack.unpackb(
        blob, raw=False, timestamp=3, strict_map_key=False, ext_hook=_ext_hook
    )


def _as_items(data: object) -> list[Any]:
    if isinstance(data, dict):
        return [data]
    if isinstance(data, (list, tuple)):
        items = list(data)
        if not items:
            raise InvalidData("data is an empty list: log at least one item")
        return items
    return [data]


def _check_keys(items: list[Any]) -> None:
    for index, item in enumerate(items):
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise InvalidData(f"row {index} has a key {key!r} that is not a str")


def _check_serialisable(items: list[Any]) -> None:
    try:
        pack(items)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidData(f"data cannot be serialised with msgpack: {exc}") from exc


def rows_problem(items: list[Any]) -> str | None:
    """Why ``items`` is not a list of rows (dicts), or ``None`` when it is."""
    for index, item in enumerate(items):
        if type(item) is not dict and not isinstance(item, dict):
            return f"row {index} is a {type(item).__name__}, not a dict"
    return None


def require_rows(items: list[Any], topic: str) -> list[dict[str, Any]]:
    """``items`` if they are rows, for a topic whose destinations store rows only.

    Raises:
        InvalidData: naming the first item that is not a dict.
    """
    problem = rows_problem(items)
    if problem is not None:
        raise InvalidData(
            f"data must be a row (dict) or a list of rows for topic {topic!r}, whose "
            f"destinations store rows: {problem}"
        )
    return items


def normalize_data(data: object) -> list[Any]:
    """Turn what a caller logs into the items of one chunk, checking them.

    A dict is one row, a list or tuple holds the chunk's items, anything
    else is one item. Every item must be serialisable (see the module
    docstring) and every dict among them must have str keys. Whether items
    other than rows are allowed depends on the topic's destinations: see
    :func:`rows_problem`.

    Raises:
        InvalidData: an empty list, a dict key that is not a str, or a value
            that cannot be serialised.
    """
    items = _as_items(data)
    _check_keys(items)
    _check_serialisable(items)
    return items


def normalize_rows(data: object) -> list[dict[str, Any]]:
    """Turn one row or a list of rows into a list of rows, checking each.

    Raises:
        InvalidData: ``data`` is not a dict or a non-empty list of dicts, a key
            is not a str, or a value cannot be serialised with msgpack.
    """
    if not isinstance(data, (dict, list, tuple)):
        raise InvalidData(f"data must be a row (dict) or a list of rows, not {type(data).__name__}")
    items = _as_items(data)
    problem = rows_problem(items)
    if problem is not None:
        raise InvalidData(problem)
    _check_keys(items)
    _check_serialisable(items)
    return items
