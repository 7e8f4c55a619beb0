"""How rows become COPY data for :mod:`datalogger.destinations.postgres`.

Rows are grouped by their keys (one COPY per key set, so a missing key takes
the column's default). For each group, :func:`plan` looks once at the Python
types of each column's values: values are adapted only where they need it
(JSON columns; dicts, tuples and lists bound for other columns), and the
group goes in binary COPY when every value has exactly the Python type of its
column, which spares the server from parsing text (timestamps above all).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from ..delivery import Attempt
from ..isolation import deliver_isolating
from ._values import json_default

try:  # psycopg's binary COPY row formatter: C with psycopg[binary]; not public, so optional
    from psycopg._copy_base import format_row_binary as _format_row_binary
except ImportError:  # pragma: no cover - a psycopg without it: Copy.write_row does the work
    _format_row_binary = None
from .base import Rows

__all__ = [
    "BINARY_SIGNATURE",
    "BINARY_TRAILER",
    "FLUSH_BYTES",
    "ROW_ERRORS",
    "Report",
    "adapt",
    "copy_rows",
    "group",
    "isolate",
    "merge",
    "plan",
    "stage_name",
]

#: Errors caused by the rows themselves: the rows are isolated and rejected. Besides
#: bad values and constraints, what a trigger or function raises for a row
#: (``RAISE EXCEPTION``, ``ASSERT``: SQLSTATE class P0, and 09000).
ROW_ERRORS = (
    psycopg.DataError,
    psycopg.IntegrityError,
    pg_errors.DatatypeMismatch,
    pg_errors.PlpgsqlError,
    pg_errors.RaiseException,
    pg_errors.NoDataFound,
    pg_errors.TooManyRows,
    pg_errors.AssertFailure,
    pg_errors.TriggeredActionException,
)


BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""The start of binary COPY data: signature, flags and header extension length."""
BINARY_TRAILER = b"\xff\xff"
"""The end of binary COPY data."""
FLUSH_BYTES = 128 * 1024
"""Binary COPY data is sent in pieces of about this size, so the server works meanwhile."""


@attrs.define
class Report:
    """What one delivery attempt did: rows written, rows rejected and why."""

    written: int = 0
    bad: list[Any] = attrs.field(factory=list)
    reasons: list[str] = attrs.field(factory=list)
    """The reason of each of ``bad``."""
    reason: str | None = None
    """The first reason (for the error message)."""

    def reject(self, row: Any, reason: str) -> None:
        """Record ``row`` as bad, with its reason."""
        self.bad.append(row)
        self.reasons.append(reason)
        if self.reason is None:
            self.reason = reason


#: SQL type (as ``format_type`` spells it) -> (psycopg's name, Python type sent in binary).
_BINARY: dict[str, tuple[str, type]] = {
    "bigint": ("int8", int),
    "double precision": ("float8", float),
    "text": ("text", str),
    "boolean": ("bool", bool),
    "timestamp with time zone": ("timestamptz", dt.datetime),
    "jsonb": ("jsonb", object),
    "json": ("json", object),
}
_NONE = type(None)
_JSON_LIKE = (dict, tuple, list)
_TZINFO = attrgetter("tzinfo")


def stage_name(schema: str, table: str, columns: Sequence[tuple[str, str]]) -> str:
    """The name of the temporary staging table for these columns of ``schema.table``."""
    digest = hashlib.blake2b(repr((schema, table, columns)).encode(), digest_size=8)
    return f"_datalogger_stage_{digest.hexdigest()}"


def group(rows: Rows) -> dict[frozenset[str], Rows]:
    """``rows`` grouped by their set of keys, in order of first appearance."""
    by_keys: dict[tuple[str, ...], Rows] = {}
    for row in rows:
        by_keys.setdefault(tuple(row), []).append(row)
    return merge(by_keys, rows)


def merge(by_keys: Mapping[tuple[str, ...], Rows], rows: Rows) -> dict[frozenset[str], Rows]:
    """Groups of rows by ordered keys merged by set of keys, each in the order of ``rows``."""
    if len(by_keys) == 1:
        ((keys, group),) = by_keys.items()
        return {frozenset(keys): group}
    groups: dict[frozenset[str], Rows] = {}
    for keys, group in by_keys.items():
        groups.setdefault(frozenset(keys), []).extend(group)
    if len(groups) < len(by_keys):  # same keys in another order: keep the chunk order
        order = {id(row): index for index, row in enumerate(rows)}
        for group in groups.values():
            group.sort(key=lambda row: order[id(row)])
    return groups


def plan(
    rows: Rows, names: Sequence[str], types: Mapping[str, str], binary: bool
) -> tuple[list[Callable[[Any], Any] | None], list[str] | None]:
    """How to send each column: a per-value adapter (or ``None``), and binary types.

    Values are adapted only where needed: JSON columns, and dicts, tuples and
    lists bound for other columns. The binary types are ``None`` unless
    ``binary`` and every value has exactly the Python type of its column.
    """
    adapters: list[Callable[[Any], Any] | None] = []
    binary_types: list[str] | None = [] if binary else None
    for name in names:
        sql_type = types[name]
        values = list(map(itemgetter(name), rows))
        seen = set(map(type, values))
        seen.discard(_NONE)
        if sql_type.startswith("json"):
            adapters.append(_to_json)
        elif any(issubclass(kind, _JSON_LIKE) for kind in seen):
            adapters.append(functools.partial(adapt, sql_type=sql_type))
            binary_types = None
        else:
            adapters.append(None)
        if binary_types is None:
            continue
        pg_type, py_type = _BINARY.get(sql_type, ("", _NONE))
        if (py_type is not object and (seen - {py_type})) or not pg_type:
            binary_types = None
        elif py_type is dt.datetime and None in set(map(_TZINFO, filter(None, values))):
            binary_types = None  # a naive datetime: let the server apply its time zone
        else:
            binary_types.append(pg_type)
    return adapters, binary_types


def copy_rows(
    cur: psycopg.Cursor[Any],
    statement: Any,
    names: Sequence[str],
    adapters: Sequence[Callable[[Any], Any] | None],
    binary_types: list[str] | None,
    rows: Rows,
) -> None:
    """COPY ``rows`` (``names`` of each) with ``statement``, in binary if ``binary_types``.

    In binary, each row goes straight to psycopg's row formatter (C, with
    ``psycopg[binary]``) into one buffer, sent every :data:`FLUSH_BYTES`:
    the same bytes as ``Copy.write_row``, without its two Python calls per row.
    """
    with cur.copy(statement) as copy:
        if binary_types is not None:
            copy.set_types(binary_types)
        values = _row_values(names, adapters)
        transformer = getattr(getattr(copy, "formatter", None), "transformer", None)
        if binary_types is not None and _format_row_binary is not None and transformer is not None:
            _write_binary(copy, transformer, values, rows)
            return
        write_row = copy.write_row
        for row in rows:
            write_row(values(row))


def _row_values(
    names: Sequence[str], adapters: Sequence[Callable[[Any], Any] | None]
) -> Callable[[Any], Sequence[Any]]:
    """The function giving a row's values in ``names`` order, adapted where needed."""
    if any(adapters):
        pairs = list(zip(names, adapters, strict=True))

        def adapted(row: Any) -> list[Any]:
            return [row[n] if adapt is None else adapt(row[n]) for n, adapt in pairs]

        return adapted
    if len(names) == 1:
        name = names[0]

        def one(row: Any) -> tuple[Any]:
            return (row[name],)

        return one
    return itemgetter(*names)


def _write_binary(
    copy: psycopg.Copy, transformer: Any, values: Callable[[Any], Sequence[Any]], rows: Rows
) -> None:
    """Format ``rows`` with psycopg's binary row formatter and write the COPY data in pieces."""
    format_row = _format_row_binary
    assert format_row is not None
    buffer = bytearray(BINARY_SIGNATURE)
    for row in rows:
        format_row(values(row), transformer, buffer)
        if len(buffer) >= FLUSH_BYTES:
            copy.write(buffer)
            buffer = bytearray()
    buffer += BINARY_TRAILER
    copy.write(buffer)


def _to_json(value: Any) -> Any:
    return None if value is None else Jsonb(value, dumps=_json_dumps)


def adapt(value: Any, sql_type: str) -> Any:
    """Wrap JSON-like values (and anything bound for a json column) as ``Jsonb``."""
    if value is None:
        return None
    if sql_type.startswith("json") or isinstance(value, (dict, tuple)):
        return Jsonb(value, dumps=_json_dumps)
    if isinstance(value, list) and not sql_type.endswith("]"):
        return Jsonb(value, dumps=_json_dumps)
    return value


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=json_default)


def isolate(
    conn: psycopg.Connection[Any], write: Callable[[Rows], int], rows: Rows, report: Report
) -> int:
    """Write ``rows`` in a savepoint; on a data error, find the failing rows by bisection.

    The parts are tried as :mod:`datalogger.isolation` tries them (largest
    first, within the same budget), each in a savepoint of the caller's
    transaction. A row that fails alone is recorded in ``report`` with its
    error. Returns the number of rows written.
    """

    def attempt(part: Rows) -> Attempt:
        try:
            with conn.transaction():
                return Attempt(ok=True, result=write(part))
        except ROW_ERRORS as exc:
            return Attempt(ok=False, error=exc, permanent=True)
        except psycopg.ProgrammingError as exc:
            if exc.sqlstate is not None:  # from the server: not about one value
                raise
            return Attempt(ok=False, error=exc, permanent=True)  # "cannot adapt type"

    outcome = deliver_isolating(attempt, rows)
    for index in sorted(outcome.dead):
        report.reject(rows[index], outcome.dead[index])
    return sum(outcome.results)
