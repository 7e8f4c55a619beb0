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
