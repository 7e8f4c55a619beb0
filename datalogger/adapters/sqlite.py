"""A process-status adapter storing the status in an SQLite file (the embedded default).

Options:

``path`` (required)
    The database file. Its directory must exist; the file is created if
    missing. ``":memory:"`` works but keeps nothing after a crash.
``table`` (default ``"datalogger_process_status"``)
    The table, created if missing, with columns
    ``(entity TEXT PRIMARY KEY, timestamp INTEGER NOT NULL, updated_at TEXT)``.
``timeout`` (default ``5.0``)
    Seconds to wait for a lock held by another connection.

The database is switched to WAL journal mode, so readers never block the writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import ConfigError, DataLoggerError
from .base import Item, StorageAdapter, check_options, validate_identifier, validate_item

__all__ = ["DEFAULT_TABLE", "SqliteAdapter"]

#: The table used when the ``table`` option is not given.
DEFAULT_TABLE = "datalogger_process_status"

_OPTIONS = ("path", "table", "timeout")
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class SqliteAdapter(StorageAdapter):
    """Keeps ``entity -> timestamp`` in one SQLite table, one row per entity."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.table = DEFAULT_TABLE
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def start(self, options: Mapping[str, Any]) -> None:
        """Open (or create) the database and the table; see the module docstring for options.

        Raises:
            ConfigError: ``path`` is missing or its directory does not exist,
                ``table`` is not an identifier, or the table has other columns.
            DataLoggerError: SQLite cannot open the file.
        """
        opts = check_options(options, _OPTIONS, "sqlite adapter")
        path = opts.get("path")
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ConfigError("sqlite adapter: option 'path' (the database file) is required")
        if path != ":memory:":
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise ConfigError(
                    f"sqlite adapter: option 'path': directory {directory!r} does not exist"
                )
        table = validate_identifier(opts.get("table", DEFAULT_TABLE), "table")
        timeout = opts.get("timeout", 5.0)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ConfigError(f"sqlite adapter: option 'timeout' must be >= 0, got {timeout!r}")
        self.close()
        self.path, self.table = path, table
        try:
            conn = sqlite3.connect(
                path, timeout=float(timeout), isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise DataLoggerError(f"sqlite adapter: cannot open {path!r}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{table}" ('
                "entity TEXT PRIMARY KEY, timestamp INTEGER NOT NULL, updated_at TEXT)"
            )
            conn.execute(f'SELECT entity, timestamp, updated_at FROM "{table}" LIMIT 0')
        except sqlite3.OperationalError as exc:
            conn.close()
            if "no such column" in str(exc):
                raise ConfigError(
                    f"sqlite adapter: table {table!r} in {path!r} exists but lacks the "
                    f"columns (entity, timestamp, updated_at): {exc}"
                ) from exc
            raise DataLoggerError(f"sqlite adapter: cannot prepare {path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            conn.close()
            raise DataLoggerError(f"sqlite adapter: cannot prepare {path!r}: {exc}") from exc
        self._conn = conn

    def item_processed(self, item: Item) -> None:
        """Upsert the item's timestamp for its entity (the given value is stored as is)."""
        self.item_processed_many([item])

    def item_processed_many(self, items: Iterable[Item]) -> None:
        """Upsert several items in one transaction (for equal entities the last one wins)."""
        latest = dict(validate_item(item) for item in items)
        if not latest:
            return
        sql = (
            f'INSERT INTO "{self.table}" (entity, timestamp, updated_at) VALUES (?, ?, {_NOW}) '
            "ON CONFLICT (entity) DO UPDATE SET "
            "timestamp = excluded.timestamp, updated_at = excluded.updated_at"
        )
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(sql, latest.items())
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise DataLoggerError(
                    f"sqlite adapter: cannot write to {self.path!r}: {exc}"
                ) from exc

    def load(self) -> list[Item]:
        """Every stored item, sorted by entity."""
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    f'SELECT entity, timestamp FROM "{self.table}" ORDER BY entity'
                ).fetchall()
            except sqlite3.Error as exc:
                raise DataLoggerError(f"sqlite adapter: cannot read {self.path!r}: {exc}") from exc
        return [(str(entity), int(timestamp)) for entity, timestamp in rows]

    def reset(self) -> None:
        """Delete every row of the table."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(f'DELETE FROM "{self.table}"')
            except sqlite3.Error as exc:
                raise DataLoggerError(f"sqlite adapter: cannot reset {self.path!r}: {exc}") from exc

    def close(self) -> None:
        """Close the database connection (safe to call more than once)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataLoggerError("sqlite adapter: not started, or already closed")
        return self._conn

    def __repr__(self) -> str:
        """``SqliteAdapter(path=..., table=...)``."""
        return f"SqliteAdapter(path={self.path!r}, table={self.table!r})"
