"""The line protocol encoder, checked against influxdb_client.Point.

Where the two legitimately differ the strategies leave the data out and a
unit test pins our behaviour instead:

* newlines in names/tag values: Point writes ``\\n``, which InfluxDB 1.x stores
  as a backslash and an ``n``; we reject the row;
* tabs and carriage returns in names/tag values: Point writes ``\\t``/``\\r``
  (stored as two characters by 1.x); we write them raw (stored verbatim);
* names or tag values ending in a backslash, empty names, measurements starting
  with ``#``: Point writes a broken or commented-out line; we reject the row;
* lone surrogates: not encodable as UTF-8 at all; we reject the row;
* integers outside int64: Point writes them and the server refuses the whole
  request; we reject the row;
* a point whose every field is skipped: Point returns ``""``; we reject it;
* datetimes at precisions coarser than ns: Point divides floats (may be off by
  one); we divide integers (exact).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from datalogger import InvalidData
from datalogger._line_shapes import RowsEncoder
from datalogger.lineprotocol import (
    LineProtocolError,
    encode_point,
    encode_rows,
    encode_rows_detailed,
    normalize_precision,
    to_timestamp,
)

_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\n\r\t")
# Names use the characters that need escaping often.
_name_chars = st.one_of(_chars, st.sampled_from([",", "=", " ", '"', "\\", "é"]))
names = st.text(_name_chars, min_size=1, max_size=12).filter(lambda s: not s.endswith("\\"))
measurements = names.filter(lambda s: not s.startswith("#"))
tag_values = st.one_of(st.none(), st.just(""), names)
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.one_of(_chars, st.sampled_from(['"', "\\", "\n", "\t", "\r"])), max_size=20),
)
timestamps = st.one_of(st.none(), st.integers(min_value=-(2**62), max_value=2**62))


def _point(
    measurement: str,
    tags: dict[str, Any],
    fields: dict[str, Any],
    time: Any = None,
    precision: Any = WritePrecision.NS,
) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    if time is not None:
        point.time(time, write_precision=precision)
    return str(point.to_line_protocol())


@settings(max_examples=300, deadline=None)
@given(
    measurements,
    st.dictionaries(names, tag_values, max_size=4),
    st.dictionaries(names, field_values, max_size=5),
    timestamps,
)
def test_encode_point_matches_influxdb_client(
    measurement: str, tags: dict[str, Any], fields: dict[str, Any], ts: int | None
) -> None:
    expected = _point(measurement, tags, fields, ts)
    if expected == "":
        with pytest.raises(LineProtocolError):
            encode_point(measurement, tags, fields, ts)
    else:
        assert encode_point(measurement, tags, fields, ts) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.one_of(st.none(), st.timezones()),
    ),
    st.dictionaries(names, field_values.filter(lambda v: v is not None), min_size=1, max_size=3),
)
def test_datetimes_match_influxdb_client_at_ns(when: datetime, fields: dict[str, Any]) -> None:
    expected = _point("m", {}, fields, when)
    lines, bad = encode_rows([{**fields, "@t": when}], "m", (), "@t", "ns")
    if expected == "":
        assert bad
    else:
        assert lines == expected


def test_escaping_and_types() -> None:
    line = encode_point(
        "cpu load,x",
        {"host name": "a,b=c", "empty": "", "none": None},
        {"f=1": 1.0, "i": 3, "b": True, "s": 'say "hi"\\', "nan": math.nan, "n": None},
        1234,
    )
    assert line == (
        'cpu\\ load\\,x,host\\ name=a\\,b\\=c b=true,f\\=1=1,i=3i,s="say \\"hi\\"\\\\" 1234'
    )


def test_bool_is_not_int_and_floats_round_trip() -> None:
    assert encode_point("m", {}, {"v": False}) == "m v=false"
    assert encode_point("m", {}, {"v": 0.1 + 0.2}) == "m v=0.30000000000000004"
    assert encode_point("m", {}, {"v": 1e300}) == "m v=1e+300"
    assert encode_point("m", {}, {"v": Decimal("2.5")}) == "m v=2.5"


def test_newline_in_string_field_is_kept_raw() -> None:
    assert encode_point("m", {}, {"s": "a\nb"}) == 'm s="a\nb"'


def test_tabs_in_names_are_written_raw() -> None:
    assert encode_point("m\tx", {"t": "a\tb\rc"}, {"f": 1}) == "m\tx,t=a\tb\rc f=1i"


@pytest.mark.parametrize(
    ("measurement", "tags", "fields"),
    [
        ("m", {"t": "a\nb"}, {"f": 1}),  # newline in a tag value
        ("m", {"t\n": "a"}, {"f": 1}),  # newline in a tag key
        ("m\n", {}, {"f": 1}),  # newline in the measurement
        ("m", {}, {"f\n": 1}),  # newline in a field key
        ("m", {"t": "a\\"}, {"f": 1}),  # trailing backslash escapes the separator
        ("m", {}, {"f\\": 1}),
        ("m\\", {}, {"f": 1}),
        ("#m", {}, {"f": 1}),  # a comment line
        ("", {}, {"f": 1}),
        ("m", {"": "x"}, {"f": 1}),
        ("m", {}, {"": 1}),
        ("m", {}, {"f": 2**63}),  # beyond int64
        ("m", {}, {"f": object()}),  # unsupported type
        ("m", {}, {"f": None, "g": math.inf}),  # no field left
        ("m", {}, {}),
        ("m", {}, {"s": "\ud800"}),  # lone surrogate
    ],
)
def test_rejected_points(measurement: str, tags: dict, fields: dict[str, Any]) -> None:
    with pytest.raises(LineProtocolError):
        encode_point(measurement, tags, fields)
    assert issubclass(LineProtocolError, InvalidData)


def test_encode_rows_splits_bad_rows_and_keeps_order() -> None:
    rows = [
        {"time": 1, "host": "a", "v": 1},
        {"time": 2, "host": "a\nb", "v": 2},
        {"time": 3, "host": "b", "v": None},
        {"time": 4, "host": "c", "s": "\udc80"},
        {"time": 5, "v": 5.5, "host": None},
        "not a dict",
    ]
    text, bad = encode_rows(rows, "m", ["host"], "time", "ns")  # type: ignore[arg-type]
    assert text == "m,host=a v=1i 1\nm v=5.5 5"
    assert bad == [rows[1], rows[2], rows[5], rows[3]]
    lines, good, _ = encode_rows_detailed(rows, "m", ["host"], "time")  # type: ignore[arg-type]
    assert good == [rows[0], rows[4]] and len(lines) == 2


def test_missing_time_means_server_time() -> None:
    text, bad = encode_rows([{"v": 1}, {"time": None, "v": 2}], "m")
    assert (text, bad) == ("m v=1i\nm v=2i", [])
    text, _ = encode_rows([{"time": 7, "v": 1}], "m", time_key=None)
    assert text == "m time=7i,v=1i"


def test_time_conversions() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    seconds = 1714979289
    assert to_timestamp(when, "ns") == seconds * 10**9 + 123456000
    assert to_timestamp(when, "us") == seconds * 10**6 + 123456
    assert to_timestamp(when, "ms") == seconds * 10**3 + 123
    assert to_timestamp(when, "s") == seconds
    assert to_timestamp(when.replace(tzinfo=None), "s") == seconds  # naive = UTC
    eastern = when.astimezone(timezone(timedelta(hours=-5)))
    assert to_timestamp(eastern, "us") == to_timestamp(when, "us")
    assert to_timestamp("2024-05-06T07:08:09.123456Z", "ms") == seconds * 10**3 + 123
    assert to_timestamp(1.5, "ms") == 1500  # float = seconds
    assert to_timestamp(1.5, "s") == 2  # rounded to the nearest unit
    assert to_timestamp(42, "s") == 42  # int = already in precision units
    for bad in (True, "yesterday", math.nan, [1]):
        with pytest.raises(LineProtocolError):
            to_timestamp(bad, "ns")


def test_precision_names() -> None:
    assert normalize_precision("n") == "ns"
    assert normalize_precision("ms") == "ms"
    with pytest.raises(ValueError, match="precision"):
        normalize_precision("h")


def test_values_influxdb_has_no_type_for_are_written_as_documented() -> None:
    import base64
    import uuid
    from datetime import date, time

    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    fields = {
        "at": when,
        "day": date(2024, 5, 6),
        "clock": time(7, 8, 9),
        "took": timedelta(seconds=1.5),
        "id": uuid.UUID(int=1),
        "blob": b"\x00\xff",
        "nested": {"a": [1, {"d": date(2024, 1, 2)}]},
    }
    line = encode_point("m", {"day": date(2024, 5, 6)}, fields)
    assert line == (
        'm,day=2024-05-06 at="2024-05-06T07:08:09+00:00",blob="'
        + base64.b64encode(b"\x00\xff").decode()
        + '",clock="07:08:09",day="2024-05-06",id="00000000-0000-0000-0000-000000000001",'
        'nested="{\\"a\\":[1,{\\"d\\":\\"2024-01-02\\"}]}",took=1.5'
    )


# -- whole chunks, every type the destination takes, against influxdb_client.Point ---------

_json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.text(_chars, max_size=5),
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(_chars, max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
#: Every value type ``log()`` carries to the InfluxDB destination (docs/destinations/influxdb.md).
any_values = st.one_of(
    field_values,
    st.integers(min_value=2**63, max_value=2**64),  # beyond int64: the row is rejected
    st.decimals(allow_nan=True, allow_infinity=True),  # as float; sNaN has none: rejected
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    st.times(timezones=st.one_of(st.none(), st.just(UTC))),
    st.timedeltas(),
    st.uuids(),
    st.binary(max_size=8),
    _json_values.filter(lambda v: isinstance(v, (list, dict))),
)
tag_any = st.one_of(tag_values, any_values.filter(lambda v: not isinstance(v, str)))
row_times = st.one_of(
    st.none(),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.one_of(st.none(), st.timezones()),
    ),
)


def _documented_field(value: Any) -> Any:
    """A field value as docs/destinations/influxdb.md says it is written, for ``Point``."""
    import base64
    import json
    import uuid
    from datetime import date, time

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return float(value)  # ValueError for sNaN: the row is rejected
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return json.dumps(value, separators=(",", ":"))


def _documented_tag(value: Any) -> Any:
    """A tag value as documented: its text (``str()`` of numbers), None and ``""`` left out."""
    if value is None or isinstance(value, str):
        return value
    converted = _documented_field(value) if not isinstance(value, (int, float, Decimal)) else None
    if isinstance(value, timedelta):
        converted = None  # a tag keeps the timedelta's own text
    return (converted if isinstance(converted, str) else "") or str(value)


@st.composite
def chunks(draw: st.DrawFn) -> tuple[str, list[str], list[dict[str, Any]]]:
    """A measurement, tag keys and rows of one to three shapes (sets of keys), interleaved."""
    tag_keys = draw(st.lists(names.filter(lambda k: k != "time"), max_size=3, unique=True))
    field_keys = draw(
        st.lists(
            names.filter(lambda k: k != "time" and k not in tag_keys), min_size=1, max_size=4, unique=True
        )
    )
    pool = [*tag_keys, *field_keys, "time"]
    shapes = draw(st.lists(st.lists(st.sampled_from(pool), min_size=1, unique=True), min_size=1, max_size=3))
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        row: dict[str, Any] = {}
        for key in draw(st.sampled_from(shapes)):
            strategy = row_times if key == "time" else tag_any if key in tag_keys else any_values
            row[key] = draw(strategy)
        rows.append(row)
    return draw(measurements), tag_keys, rows


def _expected_line(measurement: str, tag_keys: list[str], row: dict[str, Any]) -> str | None:
    """Point's line for ``row`` with the documented conversions, or None: the row is rejected."""
    fields = {k: v for k, v in row.items() if k != "time" and k not in tag_keys}
    if any(type(v) is int and not -(2**63) <= v < 2**63 for v in fields.values()):
        return None  # Point writes it; the server would refuse the whole request
    try:
        converted = {k: _documented_field(v) for k, v in fields.items()}
    except ValueError:
        return None
    tags = {k: _documented_tag(row[k]) for k in tag_keys if k in row}
    return _point(measurement, tags, converted, row.get("time")) or None


@settings(max_examples=200, deadline=None)
@given(chunks())
def test_rows_of_every_type_match_influxdb_client(chunk: tuple[str, list[str], list[dict[str, Any]]]) -> None:
    measurement, tag_keys, rows = chunk
    expected = [_expected_line(measurement, tag_keys, row) for row in rows]
    want = (
        [line for line in expected if line is not None],
        [row for row, line in zip(rows, expected, strict=True) if line is not None],
        [row for row, line in zip(rows, expected, strict=True) if line is None],
    )
    assert encode_rows_detailed(rows, measurement, tag_keys, "time", "ns") == want
    # the compiled shapes (a set of keys is compiled once met often; here at once)
    compiled = RowsEncoder(measurement, tag_keys, "time", "ns", compile_after=1)
    assert compiled.encode(rows) == want
    assert compiled.encode(rows) == want


def test_rows_with_values_that_have_no_number_are_rejected_not_raised() -> None:
    rows: list[dict[str, Any]] = [
        {"v": Decimal("sNaN")},  # float() raises ValueError
        {"v": 1, "time": 1e300},  # finite seconds, infinite nanoseconds
        {"v": 2, "time": Decimal("sNaN")},
        {"v": 3},
    ]
    lines, good, bad = encode_rows_detailed(rows, "m")
    assert (lines, good, bad) == (["m v=3i"], [rows[3]], rows[:3])
    with pytest.raises(LineProtocolError, match="has no float value"):
        encode_point("m", {}, {"v": Decimal("sNaN")})
    with pytest.raises(LineProtocolError, match="not finite in units of ns"):
        to_timestamp(1e300, "ns")
