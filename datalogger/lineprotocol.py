"""A fast, pure-Python encoder for the InfluxDB line protocol.

One row becomes one line::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

The output matches ``influxdb_client.Point(...).to_line_protocol()`` for the
same data (tags and fields sorted by key, the same escaping and number
formats), except where that would lose or corrupt data; then the row is
rejected instead:

* Measurement: ``,`` and space are escaped with a backslash.
* Tag keys, tag values and field keys: ``,``, ``=`` and space are escaped.
* String field values are double-quoted; ``"`` and ``\\`` are escaped.
  A newline inside a string field is kept as is: InfluxDB stores it verbatim
  and the line stays one line (the parser tracks the quotes).
* Integers get the ``i`` suffix (``bool`` is not an integer: it is written as
  ``true``/``false``); integers outside the signed 64-bit range are rejected.
* Floats are written with ``repr`` (shortest exact round-trip), a trailing
  ``.0`` trimmed. ``Decimal`` and other real numbers are converted to float.
* Values InfluxDB has no type for are written as strings: ``datetime``,
  ``date`` and ``time`` in ISO 8601, ``UUID`` as its text, ``bytes`` in base64,
  lists and dicts as JSON text (nested values as in
  :mod:`datalogger.destinations._values`); ``timedelta`` as a float of seconds.
  The same goes for tag values.
* ``None`` values and NaN/infinite floats are skipped: the key is left out of
  the line, as InfluxDB has no null. ``None`` or ``""`` tag values are left out
  too (InfluxDB has no empty tags).
* Rejected (:class:`LineProtocolError`): a row with no field left; a newline
  in the measurement, a tag key/value or a field key (InfluxDB would split the
  line; ``influxdb_client`` writes ``\\n``, which InfluxDB 1.x stores as a
  literal backslash and ``n``); any of those ending in a backslash (it would
  escape the separator after it); an empty measurement, tag key or field key;
  a measurement starting with ``#`` (a comment line, silently dropped by
  InfluxDB); field values of other types; strings that are not valid Unicode
  (lone surrogates).
* Tabs and carriage returns in names are written raw: InfluxDB 1.x stores them
  verbatim, while ``influxdb_client`` writes ``\\t``/``\\r`` which it stores as
  two characters.
"""

from __future__ import annotations

import base64
import math
import numbers
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any

from .destinations._values import to_json
from .exceptions import InvalidData

__all__ = [
    "PRECISIONS",
    "LineProtocolError",
    "encode_point",
    "encode_rows",
    "encode_rows_detailed",
    "normalize_precision",
    "to_timestamp",
]

#: Units per second of each precision name.
PRECISIONS: dict[str, int] = {"ns": 10**9, "us": 10**6, "ms": 10**3, "s": 1}
_PRECISION_ALIASES = {"n": "ns", "u": "us", "µs": "us"}

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ESCAPE_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_ESCAPE_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_ESCAPE_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})
_FIRST = itemgetter(0)


class LineProtocolError(InvalidData):
    """A row or point that cannot be written as a line of line protocol."""


def normalize_precision(precision: str) -> str:
    """Return the canonical name (``ns``, ``us``, ``ms`` or ``s``) of ``precision``.

    Raises:
        ValueError: an unknown precision.
    """
    name = _PRECISION_ALIASES.get(precision, precision)
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of ns, us, ms, s; got {precision!r}")
    return name


def _check_name(name: str, what: str) -> None:
    if not name:
        raise LineProtocolError(f"empty {what}")
    if "\n" in name:
        raise LineProtocolError(f"{what} {name!r} contains a newline")
    if name[-1] == "\\":
        raise LineProtocolError(f"{what} {name!r} ends with a backslash")


@lru_cache(maxsize=1024)
def _measurement(name: str) -> str:
    _check_name(name, "measurement")
    if name[0] == "#":
        raise LineProtocolError(f"measurement {name!r} starts with '#' (a comment line)")
    return name.translate(_ESCAPE_MEASUREMENT)


@lru_cache(maxsize=4096)
def _key(name: str) -> str:
    _check_name(name, "key")
    return name.translate(_ESCAPE_KEY)


def _tag_value(value: str) -> str:
    if "\n" in value:
        raise LineProtocolError(f"tag value {value!r} contains a newline")
    if value[-1] == "\\":
        raise LineProtocolError(f"tag value {value!r} ends with a backslash")
    return value.translate(_ESCAPE_KEY)


def _float(value: float) -> str | None:
    if not math.isfinite(value):
        return None
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _int(value: int) -> str:
    if value < _INT_MIN or value > _INT_MAX:
        raise LineProtocolError(f"integer {value} is outside the signed 64-bit range")
    return f"{value}i"


def _field_value(key: str, value: Any) -> str | None:
    """The encoded value, or None when the field is to be skipped."""
    kind = type(value)
    if kind is float:
        return _float(value)
    if kind is int:
        return _int(value)
    if kind is str:
        return '"' + value.translate(_ESCAPE_STRING) + '"'
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return None
    # Subclasses and other numeric types (IntEnum, Decimal, numpy scalars).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return _int(int(value))
    if isinstance(value, (numbers.Real, Decimal)):
        return _float(float(value))
    if isinstance(value, str):
        return '"' + str(value).translate(_ESCAPE_STRING) + '"'
    if isinstance(value, timedelta):
        return _float(value.total_seconds())
    text = _as_text(value)
    if text is not None:
        return '"' + text.translate(_ESCAPE_STRING) + '"'
    raise LineProtocolError(f"field {key!r} has unsupported type {type(value).__name__}")


def _as_text(value: Any) -> str | None:
    """The text of a value InfluxDB has no type for (see the module docstring), or None."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (list, tuple, dict)):
        return to_json(value)
    return None


def _tags(tags: Iterable[tuple[Any, Any]]) -> str:
    parts = []
    for key, value in sorted([(str(k), v) for k, v in tags], key=_FIRST):
        if value is None:
            continue
        text = value if type(value) is str else (_as_text(value) or str(value))
        if not text:
            continue
        parts.append(f",{_key(key)}={_tag_value(text)}")
    return "".join(parts)


def _fields(fields: Iterable[tuple[Any, Any]]) -> str:
    parts = []
    for key, value in sorted([(str(k), v) for k, v in fields], key=_FIRST):
        encoded = _field_value(key, value)
        if encoded is not None:
            parts.append(f"{_key(key)}={encoded}")
    if not parts:
        raise LineProtocolError("no field with a value (None, NaN and inf are skipped)")
    return ",".join(parts)


def encode_point(
    measurement: str,
    tags: Mapping[Any, Any],
    fields: Mapping[Any, Any],
    timestamp: int | None = None,
) -> str:
    """Encode one point as one line of line protocol (no trailing newline).

    Args:
        measurement: the measurement name.
        tags: tag keys and values; values are converted with ``str``.
        fields: field keys and values (int, float, bool, str; None skipped).
        timestamp: the time in the units of the write's precision, or None
            for the server's time.

    Raises:
        LineProtocolError: the point cannot be written (see the module doc).
    """
    line = f"{_measurement(str(measurement))}{_tags(tags.items())} {_fields(fields.items())}"
    if timestamp is not None:
        if type(timestamp) is not int and (
            isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Integral)
        ):
            raise LineProtocolError(f"timestamp {timestamp!r} is not an integer")
        line = f"{line} {int(timestamp)}"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LineProtocolError(f"not valid Unicode: {exc}") from exc
    return line


def to_timestamp(value: Any, precision: str = "ns") -> int | None:
    """Convert a row's time value to an integer in units of ``precision``.

    ``int`` is taken as already in ``precision`` units; ``float`` as seconds
    since the epoch (rounded to the nearest unit); ``datetime`` (naive = UTC)
    and ISO 8601 strings are converted exactly (rounded down). None gives None
    (the server's time).

    Raises:
        LineProtocolError: any other value.
    """
    if value is None:
        return None
    units = PRECISIONS[precision]
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is float:
        if not math.isfinite(value):
            raise LineProtocolError(f"time {value!r} is not finite")
        return round(value * units)
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise LineProtocolError(f"time {value!r} is not an ISO 8601 date") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta: timedelta = value - _EPOCH
        nanos = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        return nanos // (10**9 // units)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return to_timestamp(float(value), precision)
    raise LineProtocolError(f"time {value!r} is not an int, float, datetime or ISO string")


def encode_rows(
    rows: Iterable[Mapping[str, Any]],
    measurement: str,
    tag_keys: Iterable[str] = (),
    time_key: str | None = "time",
    precision: str = "ns",
) -> tuple[str, list[Any]]:
    """Encode rows (dicts) as line protocol, one line per row.

    Keys in ``tag_keys`` become tags, ``time_key`` the timestamp (absent or
    None: the server's time), every other key a field.

    Returns:
        ``(text, bad_rows)``: the lines of the good rows joined by ``"\\n"``
        and the rows that cannot be encoded (see :func:`encode_point`).

    Raises:
        LineProtocolError: the measurement itself is invalid (every row is bad).
    """
    lines, _good, bad = encode_rows_detailed(rows, measurement, tag_keys, time_key, precision)
    return "\n".join(lines), bad


def encode_rows_detailed(
    rows: Iterable[Mapping[str, Any]],
    measurement: str,
    tag_keys: Iterable[str] = (),
    time_key: str | None = "time",
    precision: str = "ns",
) -> tuple[list[str], list[Any], list[Any]]:
    """Like :func:`encode_rows`, but return ``(lines, good_rows, bad_rows)``.

    ``lines[i]`` is the line of ``good_rows[i]``, so a destination can tell
    which rows a server rejected.
    """
    precision = normalize_precision(precision)
    tag_set = frozenset(tag_keys)
    meas = _measurement(str(measurement))
    lines: list[str] = []
    good: list[Any] = []
    bad: list[Any] = []
    for row in rows:
        try:
            tags = []
            fields = []
            stamp: Any = None
            for key, value in row.items():
                if key == time_key:
                    stamp = value
                elif key in tag_set:
                    tags.append((key, value))
                else:
                    fields.append((key, value))
            line = f"{meas}{_tags(tags)} {_fields(fields)}"
            ts = to_timestamp(stamp, precision)
            lines.append(line if ts is None else f"{line} {ts}")
            good.append(row)
        except (LineProtocolError, AttributeError, TypeError):
            bad.append(row)
    try:
        "\n".join(lines).encode("utf-8")
    except UnicodeEncodeError:  # rare: find the lines with lone surrogates
        keep = [_encodable(line) for line in lines]
        bad = bad + [row for row, ok in zip(good, keep, strict=True) if not ok]
        lines = [line for line, ok in zip(lines, keep, strict=True) if ok]
        good = [row for row, ok in zip(good, keep, strict=True) if ok]
    return lines, good, bad


def _encodable(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
