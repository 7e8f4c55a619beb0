"""SQLite: a table per topic in one database file, the embedded default.

Options:

``path`` (required)
    The database file. Created, with its directory, if missing.
``table`` (``"{topic}"``)
    Table name; ``{topic}`` is replaced by the topic.
``timeout`` (``30.0``)
    Seconds to wait for a lock held by another writer.

Tables are created on first use with a column per key of the rows; keys that
appear later are added as columns. Identifiers are validated against the topic
rule (``[A-Za-z0-9_.:-]``, which holds no quote) and always double-quoted, so a
topic cannot inject SQL. Values: numbers, text and booleans as they are; dicts
and lists as JSON text; datetimes as ISO-8601 text.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import date, datetime
from typing import Any

from ..exceptions import PermanentError
from ..validation import TOPIC_PATTERN
from .base import Destination, Rows

__all__ = ["SqliteDestination", "quote_identifier"]


def quote_identifier(name: str) -> str:
    """Validate ``name`` and return it double-quoted for SQL."""
    if not TOPIC_PATTERN.match(name):
        raise PermanentError(f"{name!r} is not a valid table or column name for SQLite")
    return '"' + name + '"'


def _column_name(key: str) -> str:
    if not key or len(key) > 255 or '"' in key or "\x00" in key:
        raise PermanentError(f"{key!r} cannot be a column name")
    return '"' + key + '"'


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bytes)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return json.dumps(value, default=str, separators=(",", ":"))


class SqliteDestination(Destination):
    """Writes each topic to its own table of one SQLite file."""

    def __init__(self, *, path: str, table: str = "{topic}", timeout: float = 30.0) -> None:
        self.path = os.path.abspath(path)
        self.table = table
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._columns: dict[str, set[str]] = {}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _ensure_table(self, conn: sqlite3.Connection, table: str, keys: list[str]) -> None:
        known = self._columns.get(table)
        if known is None:
            quoted = quote_identifier(table)
            cols = ", ".join(_column_name(k) for k in keys)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {quoted} ({cols})")
            known = {row[1] for row in conn.execute(f"PRAGMA table_info({quoted})")}
            self._columns[table] = known
        for key in keys:
            if key not in known:
                conn.execute(
                    f"ALTER TABLE {quote_identifier(table)} ADD COLUMN {_column_name(key)}"
                )
                known.add(key)

    def send_data(self, topic: str, data: Rows) -> int:
        """Insert the rows in one transaction; return how many were written."""
        table = self.table.replace("{topic}", topic)
        keys: list[str] = []
        seen: set[str] = set()
        for row in data:
            for key in row:
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
        if not keys:
            raise PermanentError("rows have no keys: nothing to store")
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._ensure_table(conn, table, keys)
            cols = ", ".join(_column_name(k) for k in keys)
            marks = ", ".join("?" for _ in keys)
            conn.executemany(
                f"INSERT INTO {quote_identifier(table)} ({cols}) VALUES ({marks})",
                [[_value(row.get(k)) for k in keys] for row in data],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._columns.pop(table, None)
            raise
        return len(data)

    def close(self) -> None:
        """Close the database connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
