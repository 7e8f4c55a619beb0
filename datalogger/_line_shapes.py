"""The fast path of :mod:`datalogger.lineprotocol`: encoders compiled per set of row keys.

Rows logged together mostly share one set of keys, and the same keys give the
same line layout every time: which keys are tags, fields and the time, their
order in the line (sorted) and their escaped text. So for each set of keys met
often (:data:`COMPILE_AFTER` rows), a :class:`RowsEncoder` generates one small
Python function once (a *shape*), which encodes a run of such rows in one loop:

* the escaped ``,key=`` of every tag and field is a constant;
* values of the type the first row had (``str``, ``int``, ``float`` or
  ``bool``) and ``None`` are written inline (``None`` and NaN/infinite floats
  leave their key out); other types go through the generic per-value rule of
  :mod:`datalogger.lineprotocol`, called from the generated code;
* tag values already seen are looked up in a cache of their escaped
  ``,key=value`` text;
* the line is one f-string.

A row the shape does not take as it is ends the run: a row with other keys
(the next run uses its own shape), and a row the rules reject or treat
specially (an integer beyond 64 bits, a tag value with a newline, no field
left). :func:`datalogger.lineprotocol.encode_row`, the generic path, then
writes or rejects that one row; so both paths give the same lines and the same
verdicts, and the property tests hold them to ``influxdb_client.Point``.

The generated source holds only names it makes itself (``v0``, ``F1``...):
keys, tag values and the measurement reach it as constants in its namespace,
never as text of the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from .lineprotocol import (
    _ESCAPE_KEY,
    ROW_ERRORS,
    _field_value,
    _key,
    _measurement,
    _tag_text,
    encode_row,
    to_timestamp,
)

__all__ = ["RowsEncoder", "cached_encoder"]

COMPILE_AFTER = 64
"""Rows of one set of keys encoded the generic way before that set is compiled: compiling
costs about as much as encoding a few hundred rows, so a set of keys met only now and then
never is."""
MAX_SHAPES = 256
"""Sets of keys whose shape an encoder keeps; past that it forgets them all and starts over."""
MAX_KEYS = 200
"""Rows with more keys than this are encoded by the generic path."""
MAX_TAG_TEXTS = 4096
"""Escaped tag values an encoder keeps per tag key."""

#: A compiled shape: encodes ``rows[i:]`` while they fit, returns where it stopped.
Shape = Callable[[list[Any], int, list[str], list[Any]], int]

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1

#: Python type -> the branch of a field's code for it (``{v}`` the value, ``{k}`` the slot).
#: Only the branch of the type the first row had is generated, then the one for None;
#: other types go through ``SLOW<k>``, the generic rule.
_FIELD_BRANCHES: dict[type, str] = {
    float: (
        "if type({v}) is float:\n"
        "    if -INF < {v} < INF:\n"
        "        r = repr({v})\n"
        "        f{k} = f'{{F{k}}}{{r[:-2]}}' if r[-2:] == '.0' else F{k} + r\n"
        "    else:\n"
        "        f{k} = ''\n"
    ),
    int: (
        "if type({v}) is int:\n"
        f"    if not {_INT_MIN} <= {{v}} <= {_INT_MAX}:\n"
        "        return i\n"
        "    f{k} = f'{{F{k}}}{{{v}}}i'\n"
    ),
    str: "if type({v}) is str:\n    f{k} = F{k} + QT + {v}.replace(BS, BS2).replace(QT, EQT) + QT\n",
    bool: "if type({v}) is bool:\n    f{k} = F{k} + ('true' if {v} else 'false')\n",
}
_FIELD_NONE = "if {v} is None:\n    f{k} = ''\n"
_FIELD_OTHER = "f{k} = SLOW{k}({v})\nif f{k} is None:\n    return i\n"
_TAG = (
    "if type({v}) is str:\n"
    "    t{k} = TEXTS{k}.get({v})\n"
    "    if t{k} is None:\n"
    "        t{k} = TAG{k}({v})\n"
    "        if t{k} is None:\n"
    "            return i\n"
    "elif {v} is None:\n"
    "    t{k} = ''\n"
    "else:\n"
    "    t{k} = TAG{k}({v})\n"
    "    if t{k} is None:\n"
    "        return i\n"
)
_TIME = (
    "if type({v}) is int:\n"
    "    ts = f' {{{v}}}'\n"
    "elif {v} is None:\n"
    "    ts = ''\n"
    "else:\n"
    "    ts = TIME({v})\n"
    "    if ts is None:\n"
    "        return i\n"
)


class RowsEncoder:
    """Encodes rows (dicts) as lines of line protocol for one measurement and one setting.

    Use :func:`datalogger.lineprotocol.rows_encoder` to get one (it keeps them).

    Args:
        measurement: the measurement name (not escaped).
        tag_keys: the keys written as tags.
        time_key: the key of the timestamp, or None.
        precision: canonical precision (``ns``, ``us``, ``ms`` or ``s``).
        compile_after: rows of a set of keys met before it is compiled
            (:data:`COMPILE_AFTER`).

    Raises:
        LineProtocolError: the measurement is invalid.
    """

    def __init__(
        self,
        measurement: str,
        tag_keys: Iterable[Any],
        time_key: str | None,
        precision: str,
        compile_after: int = COMPILE_AFTER,
    ) -> None:
        self.measurement = _measurement(measurement)
        self.tag_set = frozenset(tag_keys)
        self.time_key = time_key
        self.precision = precision
        self.compile_after = compile_after
        self._shapes: dict[frozenset[Any], Shape | None] = {}
        self._seen: dict[frozenset[Any], int] = {}  # rows met of each set of keys not compiled yet
        self._tag_texts: dict[str, tuple[dict[str, str], Callable[[Any], str | None]]] = {}

    def encode(self, rows: Iterable[Any]) -> tuple[list[str], list[Any], list[Any]]:
        """``(lines, good_rows, bad_rows)``; ``lines[i]`` is the line of ``good_rows[i]``.

        The lines are not checked for lone surrogates
        (:func:`datalogger.lineprotocol.join_lines` does that).
        """
        todo = rows if type(rows) is list else list(rows)
        lines: list[str] = []
        good: list[Any] = []
        bad: list[Any] = []
        i, count = 0, len(todo)
        while i < count:
            row = todo[i]
            if type(row) is dict:
                shape = self._shape(row)
                if shape is not None:
                    stop = shape(todo, i, lines, good)
                    if stop > i:
                        i = stop
                        continue
            try:
                line = encode_row(row, self.measurement, self.tag_set, self.time_key, self.precision)
            except ROW_ERRORS:
                bad.append(row)
            else:
                lines.append(line)
                good.append(row)
            i += 1
        return lines, good, bad

    def _shape(self, row: dict[Any, Any]) -> Shape | None:
        """The compiled shape of ``row``'s keys; None while they were met too seldom, or never."""
        keys = frozenset(row)
        try:
            return self._shapes[keys]
        except KeyError:
            pass
        seen = self._seen.get(keys, 0) + 1
        if seen < self.compile_after:
            if len(self._seen) >= MAX_SHAPES * 16:
                self._seen.clear()
            self._seen[keys] = seen
            return None
        self._seen.pop(keys, None)
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        shape = self._shapes[keys] = self._compile(row)
        return shape

    def _compile(self, row: dict[Any, Any]) -> Shape | None:
        """The shape of ``row``'s keys, or None when only the generic path can encode them."""
        keys = list(row)
        if len(keys) > MAX_KEYS or any(type(key) is not str for key in keys):
            return None
        time_key = self.time_key if self.time_key in row else None
        tags = sorted(k for k in keys if k in self.tag_set and k != time_key)
        fields = sorted(k for k in keys if k not in self.tag_set and k != time_key)
        if not fields:
            return None  # the generic path says why the row is refused
        try:
            field_keys = [_key(k) for k in fields]
            for key in tags:
                _key(key)
        except ROW_ERRORS:
            return None  # the generic path rejects such rows (unless their value is None)
        names: dict[str, Any] = {
            "INF": float("inf"), "QT": '"', "EQT": '\\"', "BS": "\\", "BS2": "\\\\",
            "M": self.measurement,
        }
        ordered = [*tags, *fields, *([time_key] if time_key is not None else [])]
        body: list[str] = []
        for slot, key in enumerate(ordered):
            names[f"K{slot}"] = key
        for slot, key in enumerate(tags):
            names[f"TEXTS{slot}"], names[f"TAG{slot}"] = self._tag_texts_of(key)
            body.append(_TAG.format(v=f"v{slot}", k=slot))
        for index, key in enumerate(fields):
            slot = len(tags) + index
            names[f"F{slot}"] = f",{field_keys[index]}="
            names[f"SLOW{slot}"] = _slow_field(key, f",{field_keys[index]}=")
            body.append(_field_code(slot, type(row[key])))
        if time_key is not None:
            names["TIME"] = _time_text(self.precision)
            body.append(_TIME.format(v=f"v{len(ordered) - 1}"))
        field_slots = range(len(tags), len(tags) + len(fields))
        body.append("f = f'" + "".join(f"{{f{slot}}}" for slot in field_slots) + "'\n")
        body.append("if not f:\n    return i\n")
        line = "{M}" + "".join(f"{{t{slot}}}" for slot in range(len(tags))) + " {f[1:]}"
        body.append(f"add_line(f'{line}{'{ts}' if time_key is not None else ''}')\n")
        source = _function(len(ordered), body)
        namespace = dict(names)
        exec(compile(source, f"<line protocol shape of {len(ordered)} keys>", "exec"), namespace)
        shape: Shape = namespace["encode_run"]
        return shape

    def _tag_texts_of(self, key: str) -> tuple[dict[str, str], Callable[[Any], str | None]]:
        """The cache of ``,key=value`` texts of tag ``key``, and the function that fills it."""
        found = self._tag_texts.get(key)
        if found is None:
            found = self._tag_texts[key] = _tag_texts(key)
        return found


def _field_code(slot: int, first: type) -> str:
    """The code that sets ``f<slot>`` from ``v<slot>``: inline for ``first`` and None."""
    branches = [_FIELD_NONE] if first not in _FIELD_BRANCHES else [_FIELD_BRANCHES[first], _FIELD_NONE]
    code = "el".join(branch.format(v=f"v{slot}", k=slot) for branch in branches)
    return code + "else:\n" + _indent(_FIELD_OTHER.format(v=f"v{slot}", k=slot))


def _function(count: int, body: list[str]) -> str:
    """The source of ``encode_run`` for rows of ``count`` keys, around ``body``."""
    fetch = "".join(f"v{slot} = row[K{slot}]\n" for slot in range(count))
    return (
        "def encode_run(rows, i, lines, good):\n"
        "    add_line = lines.append\n"
        "    add_good = good.append\n"
        "    count = len(rows)\n"
        "    while i < count:\n"
        "        row = rows[i]\n"
        f"        if type(row) is not dict or len(row) != {count}:\n"
        "            return i\n"
        "        try:\n"
        + _indent(fetch, 12)
        + "        except KeyError:\n"
        "            return i\n"
        + _indent("".join(body), 8)
        + "        add_good(row)\n"
        "        i += 1\n"
        "    return count\n"
    )


def _indent(code: str, spaces: int = 4) -> str:
    pad = " " * spaces
    return "".join(pad + line + "\n" for line in code.splitlines())


def _tag_texts(key: str) -> tuple[dict[str, str], Callable[[Any], str | None]]:
    """A cache of tag ``key``'s ``,key=value`` texts, and the function that makes (and keeps) one.

    The function returns ``""`` for a value left out (empty text) and None for
    a value the rules refuse (newline, trailing backslash).
    """
    prefix = f",{_key(key)}="
    texts: dict[str, str] = {}
    numbers: dict[tuple[type, int], str] = {}  # int and bool values: (type, value) keys

    def tag_text(value: Any) -> str | None:
        kind = type(value)
        if kind is int or kind is bool:  # not float: -0.0 == 0.0 but their texts differ
            made = numbers.get((kind, value))
            if made is not None:
                return made
        try:
            text = _tag_text(value)
        except ROW_ERRORS:
            return None
        if not text:
            made = ""
        elif "\n" in text or text[-1] == "\\":
            return None
        else:
            made = prefix + text.translate(_ESCAPE_KEY)
        if kind is str:  # the generated code looks str values up in ``texts`` itself
            if len(texts) >= MAX_TAG_TEXTS:
                texts.clear()
            texts[value] = made
        elif kind is int or kind is bool:
            if len(numbers) >= MAX_TAG_TEXTS:
                numbers.clear()
            numbers[(kind, value)] = made
        return made

    return texts, tag_text


def _slow_field(key: str, prefix: str) -> Callable[[Any], str | None]:
    """The generic rule for a field value of another type: its ``,key=value``, ``""`` or None."""

    def field_text(value: Any) -> str | None:
        try:
            encoded = _field_value(key, value)
        except ROW_ERRORS:
            return None
        return "" if encoded is None else prefix + encoded

    return field_text


def _time_text(precision: str) -> Callable[[Any], str | None]:
    """``" <timestamp>"`` of a time value that is not an int, or None if it has none."""

    def time_text(value: Any) -> str | None:
        try:
            stamp = to_timestamp(value, precision)
        except ROW_ERRORS:
            return None
        return "" if stamp is None else f" {stamp}"

    return time_text


@lru_cache(maxsize=64)
def cached_encoder(
    measurement: str, tag_keys: frozenset[Any], time_key: str | None, precision: str
) -> RowsEncoder:
    """The :class:`RowsEncoder` of these settings, made once (64 kept)."""
    return RowsEncoder(measurement, tag_keys, time_key, precision)

