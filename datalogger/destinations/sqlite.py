"""SQLite: a table per topic in one database file, the embedded default.

Options:

``path`` (required)
    The database file. Created, with its directory, if missing.
``table`` (``"{topic}"``)
    Table name; ``{topic}`` is replaced by the topic.
``timeout`` (``30.0``)
    Seconds to wait for a lock held by another writer.
``auto_migrate`` (``true``)
    Add a column for a key the table lacks. With ``false`` such a row is
    rejected (dead-lettered) with the reason.

Tables are created on first use with a column per key of the rows (a table is
never created without a column: an empty row waits, retried, until a row with
keys has created the table, then it is stored as a row of column defaults).
Identifiers are always double-quoted (a ``"`` in a key is doubled), so neither
a topic nor a key can inject SQL. A row is rejected on its own, with the
reason, for an empty key or one holding NUL, two keys SQLite takes for one
column (it ignores case), or an integer outside 64 bits; a row the database
refuses (a ``CHECK`` or ``NOT NULL`` constraint, a trigger's ``RAISE``, a
``STRICT`` column type) makes the chunk fail with a permanent error, and the
framework finds that row by splitting the chunk.

Values: ``None``, numbers, text and bytes as they are (``bool`` as 0/1);
``Decimal`` and ``UUID`` as their text; ``datetime``, ``date`` and ``time`` as
ISO 8601 text; ``timedelta`` as seconds (REAL); dicts and lists as JSON text
(see :mod:`datalogger.destinations._values`).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from ..exceptions import DataLoggerError, PermanentError
from ._values import to_json
from .base import Destination, Rows

__all__ = ["SqliteDestination", "quote_identifier"]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
#: Errors about the rows (constraints, triggers, types): permanent, isolated by the framework.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)
#: Errors saying the table we remembered changed under us: forget it and try once more.
_STALE = ("no such table", "has no column named")


def quote_identifier(name: str) -> str:
    """``name`` double-quoted for SQL (a ``"`` in it doubled).

    Raises:
        PermanentError: the name is empty or holds a NUL character.
    """
    if not name or "\x00" in name:
        raise PermanentError(f"{name!r} cannot be a table or column name in SQLite")
    return '"' + name.replace('"', '""') + '"'


def _key_problem(row: dict[Any, Any]) -> str | None:
    seen: dict[str, str] = {}
    for key in row:
        if not isinstance(key, str) or not key:
            return f"key {key!r} cannot be a column name (empty)"
        if "\x00" in key:
            return f"key {key!r} cannot be a column name (it holds NUL)"
        folded = key.casefold()
        if folded in seen:
            return f"keys {seen[folded]!r} and {key!r} are one column in SQLite (it ignores case)"
        seen[folded] = key
    return None


def _value(value: Any) -> Any:
    """The value as SQLite stores it (see the module docstring)."""
    if value is None or isinstance(value, (float, str, bytes)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise OverflowError(f"integer {value} is outside SQLite's 64-bit range")
        return value
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return to_json(value)


def _runs(rows: Rows) -> Iterator[tuple[tuple[str, ...], Rows]]:
    """Consecutive rows with the same keys, in order."""
    run: Rows = []
    keys: tuple[str, ...] | None = None
    for row in rows:
        these = tuple(row)
        if these != keys and run:
            yield keys or (), run
            run = []
        keys = these
        run.append(row)
    if run:
        yield keys or (), run


class SqliteDestination(Destination):
    """Writes each topic to its own table of one SQLite file."""

    def __init__(
        self,
        *,
        path: str,
        table: str = "{topic}",
        timeout: float = 30.0,
        auto_migrate: bool = True,
    ) -> None:
        self.path = os.path.abspath(path)
        self.table = table
        self.timeout = timeout
        self.auto_migrate = bool(auto_migrate)
        self._conn: sqlite3.Connection | None = None
        self._columns: dict[str, dict[str, str]] = {}  # table -> casefolded name -> name
        self._checked: dict[tuple[Any, ...], str | None] = {}  # keys -> problem

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def send_data(self, topic: str, data: Rows) -> int:
        """Insert the rows in one transaction; return how many were written.

        Raises:
            PermanentError: rows rejected before writing are named with their
                reasons; when the database refused the chunk, the other rows
                are named ``unsure`` and the framework finds the bad ones.
            DataLoggerError: only empty rows and no table yet (retried).
            sqlite3.OperationalError: the database is locked or cannot be written (retried).
        """
        table = quote_identifier(self.table.replace("{topic}", topic))
        bad: list[Any] = []
        reasons: list[str] = []
        values: list[tuple[dict[str, Any], list[Any]]] = []
        for row in data:
            problem = self._keys_problem(row)
            converted: list[Any] = []
            if problem is None:
                try:
                    converted = [_value(value) for value in row.values()]
                except OverflowError as exc:
                    problem = str(exc)
            if problem is None:
                values.append((row, converted))
            else:
                bad.append(row)
                reasons.append(problem)
        written = 0
        if values:
            try:
                written, refused = self._write_retrying(table, values)
            except _ROW_ERRORS as exc:
                raise PermanentError(
                    f"SQLite refused rows for {table}: {exc}",
                    rows=bad,
                    reasons=reasons,
                    unsure=[row for row, _ in values],
                ) from exc
            for row, reason in refused:
                bad.append(row)
                reasons.append(reason)
        if bad:
            raise PermanentError(
                f"{len(bad)} of {len(data)} rows rejected for {table}: {reasons[0]}",
                rows=bad,
                reasons=reasons,
            )
        return written

    def _keys_problem(self, row: Any) -> str | None:
        if not isinstance(row, dict):
            return f"a row is a {type(row).__name__}, not a dict"
        keys = tuple(row)
        try:
            return self._checked[keys]
        except KeyError:
            if len(self._checked) >= 4096:
                self._checked.clear()
            problem = self._checked[keys] = _key_problem(row)
            return problem

    def _write_retrying(
        self, table: str, values: list[tuple[dict[str, Any], list[Any]]]
    ) -> tuple[int, list[tuple[Any, str]]]:
        for attempt in (1, 2):
            try:
                return self._write(table, values)
            except sqlite3.OperationalError as exc:
                self._columns.pop(table, None)
                if attempt == 1 and any(text in str(exc) for text in _STALE):
                    continue  # dropped or altered by someone else: look again
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(
        self, table: str, values: list[tuple[dict[str, Any], list[Any]]]
    ) -> tuple[int, list[tuple[Any, str]]]:
        """One transaction: make the table fit, insert; return (written, refused rows)."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = self._table_columns(conn, table, values)
            refused: list[tuple[Any, str]] = []
            writable: Rows = []
            converted: dict[int, list[Any]] = {}
            for row, row_values in values:
                missing = [key for key in row if key.casefold() not in columns]
                if missing and not self.auto_migrate:
                    refused.append(
                        (row, f"no column {missing[0]!r} in {table} and auto_migrate is false")
                    )
                    continue
                for key in missing:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {quote_identifier(key)}")
                    columns[key.casefold()] = key
                writable.append(row)
                converted[id(row)] = row_values
            for keys, run in _runs(writable):
                if not keys:
                    for _ in run:
                        conn.execute(f"INSERT INTO {table} DEFAULT VALUES")
                    continue
                names = ", ".join(quote_identifier(columns[key.casefold()]) for key in keys)
                marks = ", ".join("?" for _ in keys)
                conn.executemany(
                    f"INSERT INTO {table} ({names}) VALUES ({marks})",
                    [converted[id(row)] for row in run],
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._columns.pop(table, None)
            raise
        return len(writable), refused

    def _table_columns(
        self, conn: sqlite3.Connection, table: str, values: list[tuple[dict[str, Any], list[Any]]]
    ) -> dict[str, str]:
        """The table's columns (casefolded name -> name), creating the table if missing."""
        known = self._columns.get(table)
        if known is None:
            found = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if not found:
                keys = list(dict.fromkeys(key for row, _ in values for key in row))
                if not keys:
                    raise DataLoggerError(
                        f"table {table} does not exist yet: an empty row is stored once a row "
                        "with keys has created it"
                    )
                by_fold: dict[str, str] = {}
                for key in keys:
                    by_fold.setdefault(key.casefold(), key)
                cols = ", ".join(quote_identifier(key) for key in by_fold.values())
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
                found = list(by_fold.values())
            known = {name.casefold(): name for name in found}
            self._columns[table] = known
        return known

    def close(self) -> None:
        """Close the database connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
