"""The compiled encoders (datalogger._line_shapes) against the generic path, row by row.

tests/test_lineprotocol.py holds both to ``influxdb_client.Point``; here the
compiled path must give exactly the lines and verdicts of
:func:`datalogger.lineprotocol.encode_row` applied to each row, for hostile
input too: rows that are not dicts, keys that are not strings or cannot be
written, values of every kind, shapes that change from row to row.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datalogger import _line_shapes
from datalogger.lineprotocol import (
    ROW_ERRORS,
    encode_row,
    encode_rows_detailed,
    join_lines,
    rows_encoder,
)


class Level(enum.IntEnum):
    LOW = 1


class Text(str):
    pass


def generic(
    rows: list[Any], measurement: str, tags: frozenset[str], time_key: str | None, precision: str
) -> tuple[list[str], list[Any], list[Any]]:
    """What the generic path makes of each row on its own."""
    escaped = rows_encoder(measurement, tags, time_key, precision).measurement
    lines, good, bad = [], [], []
    for row in rows:
        try:
            line = encode_row(row, escaped, tags, time_key, precision)
        except ROW_ERRORS:
            bad.append(row)
        else:
            lines.append(line)
            good.append(row)
    return lines, good, bad


#: Keys: mostly ones that can be written (some need escaping), a few that cannot.
keys = st.sampled_from(["a", "b", "t", "u", "time", "x y", "k=,", "é"] * 3 + ["", "n\n", "e\\"])
hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(),
    st.text(max_size=6),  # newlines, quotes, backslashes, lone surrogates
    st.sampled_from(["", "a\\", "x\ny", 'q"q', "s p,c=e", "\ud800", "ok"]),
    st.sampled_from(
        [
            Decimal("2.50"),
            Decimal("NaN"),
            Decimal("sNaN"),
            Decimal("-Infinity"),
            Level.LOW,
            Text("sub class"),
            datetime(2024, 5, 6, tzinfo=UTC),
            datetime(2024, 5, 6),
            "2024-05-06T07:08:09Z",
            1e300,
            timedelta(seconds=1.5),
            b"\x00",
            b"",
            [1, {"d": datetime(2024, 1, 2)}],
            {"k": [1, 2]},
            object(),
        ]
    ),
)
#: Values of the kinds written inline, with the strings that need escaping or are refused.
common_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.sampled_from(["", "a\\", "x\ny", 'q"q', "s p,c=e", "\ud800", "ok", "ok"]),
)
plausible_rows = st.dictionaries(
    st.sampled_from(["a", "b", "t", "u", "time", "x y", "k=,"]),
    st.one_of(common_values, common_values, hostile_values),
    min_size=1,
    max_size=5,
)
hostile_rows = st.one_of(
    plausible_rows,
    plausible_rows,
    st.dictionaries(keys, hostile_values, max_size=5),
    st.dictionaries(keys, hostile_values, max_size=5).map(OrderedDict),
    st.sampled_from(["not a dict", None, [("a", 1)], {1: 2}, {"a": 1, 2: 3}, {None: 1}]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(hostile_rows, max_size=12),
    st.lists(st.sampled_from(["t", "u", "x y", "", "a"]), max_size=3),
    st.sampled_from(["time", None, "a"]),
    st.sampled_from(["ns", "ms", "s"]),
)
def test_compiled_path_matches_the_generic_path(
    rows: list[Any], tags: list[str], time_key: str | None, precision: str
) -> None:
    tag_set = frozenset(tags)
    encoder = _line_shapes.RowsEncoder("m e,a", tag_set, time_key, precision, compile_after=1)
    assert encoder.encode(rows) == generic(rows, "m e,a", tag_set, time_key, precision)
    assert encoder.encode(rows) == generic(rows, "m e,a", tag_set, time_key, precision)  # warm


def test_shapes_change_within_a_chunk_and_the_order_is_kept() -> None:
    rows: list[Any] = [
        {"t": "a", "v": 1.5, "time": 1},
        {"t": "b", "v": 2.0, "time": 2},
        {"v": 3, "time": 3},  # no tag: another shape
        {"time": 4, "v": 4.25, "t": "c"},  # the first shape's keys in another order
        {"t": "d", "v": math.nan, "w": None, "time": 5},  # no field left: rejected
        "not a row",
        {"t": "e", "v": 2**63, "time": 6},  # beyond int64: rejected by the generic path
        {"t": "f", "v": True, "time": 7},  # a bool where a float was: same shape
    ]
    lines, good, bad = _line_shapes.RowsEncoder("m", ["t"], "time", "ns", compile_after=1).encode(rows)
    assert lines == [
        "m,t=a v=1.5 1",
        "m,t=b v=2 2",
        "m v=3i 3",
        "m,t=c v=4.25 4",
        "m,t=f v=true 7",
    ]
    assert good == [rows[i] for i in (0, 1, 2, 3, 7)]
    assert bad == [rows[i] for i in (4, 5, 6)]


def test_tag_texts_are_cached_by_type_and_value() -> None:
    # 1, 1.0 and True are equal dict keys, as are 0.0 and -0.0; their tag texts differ.
    rows = [{"t": v, "v": 0} for v in (1, 1.0, True, "1", 0.0, -0.0, False, 0)] * 2
    lines, _, _ = _line_shapes.RowsEncoder("m", ["t"], None, "ns", compile_after=1).encode(rows)
    texts = ["1", "1.0", "True", "1", "0.0", "-0.0", "False", "0"]
    assert lines == [f"m,t={text} v=0i" for text in texts] * 2


def test_a_bad_tag_value_is_rejected_every_time_it_is_seen() -> None:
    rows = [{"t": "a\nb", "v": 1}, {"t": "ok", "v": 2}, {"t": "a\nb", "v": 3}]
    lines, _, bad = _line_shapes.RowsEncoder("m", ["t"], None, "ns", compile_after=1).encode(rows)
    assert lines == ["m,t=ok v=2i"] and bad == [rows[0], rows[2]]


def test_only_sets_of_keys_met_often_are_compiled() -> None:
    # A key set costs a compile (as much as encoding hundreds of rows): rare ones never pay it.
    encoder = _line_shapes.RowsEncoder("m", (), None, "ns", compile_after=3)
    rare = [{f"k{i}": i} for i in range(50)]
    often = [{"a": i, "b": 0.5} for i in range(5)]
    lines, _, bad = encoder.encode(rare + often)
    assert not bad and lines[-1] == "m a=4i,b=0.5" and len(lines) == 55
    assert list(encoder._shapes) == [frozenset({"a", "b"})]


def test_shapes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_line_shapes, "MAX_SHAPES", 4)
    encoder = _line_shapes.RowsEncoder("m", (), None, "ns", compile_after=1)
    rows = [{f"k{i}": i} for i in range(10)] * 2
    lines, _, bad = encoder.encode(rows)
    assert lines == [f"m k{i}={i}i" for i in range(10)] * 2 and not bad
    assert len(encoder._shapes) <= 4


def test_rows_with_many_keys_use_the_generic_path() -> None:
    row = {f"f{i:03}": i for i in range(_line_shapes.MAX_KEYS + 1)}
    lines, _, bad = rows_encoder("m").encode([row])
    assert not bad and lines[0].startswith("m f000=0i,f001=1i,")
    assert lines == generic([row], "m", frozenset(), "time", "ns")[0]


def test_keys_are_never_part_of_the_generated_source() -> None:
    # A key that is Python code stays a key: it is escaped text in the line.
    key = "'); import os; os._exit(1) #"
    encoder = _line_shapes.RowsEncoder("m", [key], None, "ns", compile_after=1)
    lines, _, bad = encoder.encode([{key: key, "v{0}": "{0}"}])
    assert next(iter(encoder._shapes.values())) is not None  # it was compiled
    assert not bad
    escaped = "');\\ import\\ os;\\ os._exit(1)\\ #"
    assert lines == [f'm,{escaped}={escaped} v{{0}}="{{0}}"']


def test_join_lines_leaves_out_lines_that_are_not_unicode() -> None:
    assert join_lines(["a v=1i", "b v=2i"]) == (b"a v=1i\nb v=2i", [])
    body, refused = join_lines(["a v=1i", 'b s="\ud800"', "c v=3i"])
    assert (body, refused) == (b"a v=1i\nc v=3i", [1])
    lines, _, bad = encode_rows_detailed([{"v": 1}, {"s": "\udc80"}], "m")
    assert lines == ["m v=1i"] and bad == [{"s": "\udc80"}]


def test_the_destinations_encoder_compiles_a_steady_stream() -> None:
    rows = [{"sensor": f"s{i % 4}", "value": i / 4, "i": i, "time": i} for i in range(200)]
    encoder = rows_encoder("steady_stream", ["sensor"], "time", "ms")
    lines, good, bad = encoder.encode(rows)
    assert len(lines) == 200 and good == rows and not bad
    assert encoder._shapes[frozenset(rows[0])] is not None
    assert lines == generic(rows, "steady_stream", frozenset({"sensor"}), "time", "ms")[0]
