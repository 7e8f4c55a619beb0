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
  InfluxDB); field values of other types, or with no float value
  (``Decimal('sNaN')``); times with no finite value in the precision's units;
  strings that are not valid Unicode (lone surrogates).
* Tabs and carriage returns in names are written raw: InfluxDB 1.x stores them
  verbatim, while ``influxdb_client`` writes ``\\t``/``\\r`` which it stores as
  two characters.

:func:`encode_rows` and :func:`rows_encoder` take the fast path of
:mod:`datalogger._line_shapes`: one generated function per set of row keys
encodes runs of such rows in one pass; :func:`encode_row` (value by value) is
the generic path it falls back to for a row it does not take as it is. Both
give the same text.
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
from typing import TYPE_CHECKING, Any

from .destinations._values import to_json
from .exceptions import InvalidData

if TYPE_CHECKING:
    from ._line_shapes import RowsEncoder

__all__ = [
    "PRECISIONS",
    "ROW_ERRORS",
    "LineProtocolError",
    "encode_point",
    "encode_row",
    "encode_rows",
    "encode_rows_detailed",
    "join_lines",
    "normalize_precision",
    "rows_encoder",
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
        return _float(_to_float(value, f"field {key!r}"))
    if isinstance(value, str):
        return '"' + str(value).translate(_ESCAPE_STRING) + '"'
    if isinstance(value, timedelta):
        return _float(value.total_seconds())
    text = _as_text(value)
    if text is not None:
        return '"' + text.translate(_ESCAPE_STRING) + '"'
    raise LineProtocolError(f"field {key!r} has unsupported type {type(value).__name__}")


def _to_float(value: Any, what: str) -> float:
    """``float(value)``; a value with no float (``Decimal('sNaN')``) is a LineProtocolError."""
    try:
        return float(value)
    except (ValueError, OverflowError) as exc:
        raise LineProtocolError(f"{what}: {value!r} has no float value ({exc})") from exc


def _as_text(value: Any) -> str | None:
    """The text of a value InfluxDB has no type for (see the module docstring), or None."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (list, tuple, dict)):
        try:
            return to_json(value)
        except (ValueError, RecursionError) as exc:  # a circular or too deeply nested value
            raise LineProtocolError(f"{type(value).__name__} value has no JSON text: {exc}") from exc
    return None


def _tag_text(value: Any) -> str:
    """The text of a tag value (not None): ``str`` as it is, the others as for fields."""
    return value if type(value) is str else (_as_text(value) or str(value))


def _tags(tags: Iterable[tuple[Any, Any]]) -> str:
    parts = []
    for key, value in sorted([(str(k), v) for k, v in tags], key=_FIRST):
        if value is None:
            continue
        text = _tag_text(value)
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
        if not math.isfinite(value) or not math.isfinite(value * units):
            raise LineProtocolError(f"time {value!r} is not finite in units of {precision}")
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
        return to_timestamp(_to_float(value, "time"), precision)
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
    lines, good, bad = rows_encoder(measurement, tag_keys, time_key, precision).encode(rows)
    _body, refused = join_lines(lines)
    if refused:  # rare: lines with lone surrogates
        out = set(refused)
        bad = bad + [good[i] for i in refused]
        lines = [line for i, line in enumerate(lines) if i not in out]
        good = [row for i, row in enumerate(good) if i not in out]
    return lines, good, bad


def rows_encoder(
    measurement: str,
    tag_keys: Iterable[str] = (),
    time_key: str | None = "time",
    precision: str = "ns",
) -> RowsEncoder:
    """The encoder of rows into ``measurement`` with these settings (see :func:`encode_rows`).

    It is made once per setting and kept (64 at most), and it compiles each
    set of row keys it meets into a function that encodes such rows in one
    pass. Its :meth:`~datalogger._line_shapes.RowsEncoder.encode` does not
    check the lines for lone surrogates: :func:`join_lines` does, building the
    request body.

    Raises:
        LineProtocolError: the measurement itself is invalid.
        ValueError: an unknown precision.
    """
    from ._line_shapes import cached_encoder  # it imports this module's rules

    tags = tag_keys if isinstance(tag_keys, frozenset) else frozenset(tag_keys)
    return cached_encoder(str(measurement), tags, time_key, normalize_precision(precision))


#: What encoding a malformed row can raise: the row is rejected, the others go on.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    LineProtocolError,
    AttributeError,
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
)


def encode_row(
    row: Mapping[Any, Any],
    measurement: str,
    tag_set: frozenset[Any],
    time_key: str | None,
    precision: str,
) -> str:
    """One row as one line by the rules above, value by value (the generic path).

    ``measurement`` is already escaped and ``precision`` canonical; the line
    is not checked for lone surrogates.

    Raises:
        LineProtocolError: and the others of :data:`ROW_ERRORS`: the row cannot be encoded.
    """
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
    line = f"{measurement}{_tags(tags)} {_fields(fields)}"
    ts = to_timestamp(stamp, precision)
    return line if ts is None else f"{line} {ts}"


def join_lines(lines: list[str]) -> tuple[bytes, list[int]]:
    """The body of a write request: ``lines`` joined by newlines, in UTF-8.

    Returns:
        ``(body, refused)``: ``refused`` holds the indices of the lines left
        out of ``body`` because they are not valid Unicode (lone surrogates).
    """
    try:
        return "\n".join(lines).encode("utf-8"), []
    except UnicodeEncodeError:
        refused = [i for i, line in enumerate(lines) if not _encodable(line)]
        out = set(refused)
        kept = "\n".join(line for i, line in enumerate(lines) if i not in out)
        return kept.encode("utf-8"), refused


def _encodable(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
