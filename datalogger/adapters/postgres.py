"""A process-status adapter storing the status in a PostgreSQL table (psycopg 3).

Options:

``dsn``
    A libpq connection string or URL (``postgresql://user:pw@host:5432/db``).
``host``, ``port``, ``user``, ``password``, ``dbname``
    Connection parameters; they override the same ones in ``dsn``. With
    neither, libpq's defaults (``PGHOST``, ...) apply.
``table`` (default ``"datalogger_process_status"``)
    The table, optionally ``schema.table``; created if missing as
    ``(entity text primary key, timestamp bigint, updated_at timestamptz)``.
``connect_timeout`` (default ``5``)
    Seconds allowed to connect.

Writes are upserts (``INSERT ... ON CONFLICT``). A broken connection (server
restart, terminated backend) is reopened and the statement retried once.
Passwords never appear in messages or in the ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..exceptions import ConfigError, DataLoggerError
from .base import (
    Item,
    StorageAdapter,
    check_options,
    mentions_secret,
    redact,
    secrets_in,
    validate_identifier,
    validate_item,
)

__all__ = ["DEFAULT_TABLE", "PostgresAdapter"]

#: The table used when the ``table`` option is not given.
DEFAULT_TABLE = "datalogger_process_status"

_CONNECT_KEYS = ("host", "port", "user", "password", "dbname")
_OPTIONS = ("dsn", *_CONNECT_KEYS, "table", "connect_timeout")
_T = TypeVar("_T")


class PostgresAdapter(StorageAdapter):
    """Keeps ``entity -> timestamp`` in one PostgreSQL table, one row per entity."""

    def __init__(self) -> None:
        self.table = DEFAULT_TABLE
        self._table_id = sql.Identifier(DEFAULT_TABLE)
        self._conninfo = ""
        self._connect_timeout: float = 5
        self._secrets: set[str] = set()
        self._where = "unconfigured"
        self._conn: psycopg.Connection[Any] | None = None
        self._started = False

    def start(self, options: Mapping[str, Any]) -> None:
        """Connect, then create the table if missing; see the module docstring for options.

        Raises:
            ConfigError: a bad option, or the table exists with other columns.
            DataLoggerError: the server cannot be reached or refuses the login.
        """
        opts = check_options(options, _OPTIONS, "postgres adapter")
        self._secrets = secrets_in(opts)
        self.close()
        self._started = False
        self._conninfo = self._build_conninfo(opts)
        self._connect_timeout = _timeout(opts.get("connect_timeout", 5))
        parts = str(opts.get("table", DEFAULT_TABLE)).split(".")
        if len(parts) > 2:
            raise ConfigError(f"option 'table': {opts.get('table')!r} is not [schema.]table")
        for part in parts:
            validate_identifier(part, "table")
        self.table = ".".join(parts)
        self._table_id = sql.Identifier(*parts)
        self._started = True
        self._execute("cannot create the table", self._create_table)

    def _build_conninfo(self, opts: Mapping[str, Any]) -> str:
        dsn = opts.get("dsn", "")
        if not isinstance(dsn, str):
            raise ConfigError("postgres adapter: option 'dsn' must be a string")
        params = {key: opts[key] for key in _CONNECT_KEYS if opts.get(key) is not None}
        try:
            conninfo = make_conninfo(dsn, **params)
            info = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            self._raise(ConfigError, "invalid connection options", exc)
        if info.get("password"):
            self._secrets.add(str(info["password"]))
        self._where = "{}:{}/{}".format(
            info.get("host", "<default>"), info.get("port", 5432), info.get("dbname", "<default>")
        )
        return conninfo

    def _create_table(self, conn: psycopg.Connection[Any]) -> None:
        create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} "
            '(entity text PRIMARY KEY, "timestamp" bigint, updated_at timestamptz)'
        ).format(self._table_id)
        try:
            conn.execute(create)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            pass  # created at the same moment by another adapter
        check = sql.SQL('SELECT entity, "timestamp", updated_at FROM {} LIMIT 0')
        try:
            conn.execute(check.format(self._table_id))
        except psycopg.errors.UndefinedColumn as exc:
            self._raise(
                ConfigError,
                f"table {self.table!r} exists but lacks the columns "
                "(entity, timestamp, updated_at)",
                exc,
            )

    def item_processed(self, item: Item) -> None:
        """Upsert the item's timestamp for its entity (the given value is stored as is)."""
        entity, timestamp = validate_item(item)
        query = sql.SQL(
            'INSERT INTO {} (entity, "timestamp", updated_at) VALUES (%s, %s, now()) '
            'ON CONFLICT (entity) DO UPDATE SET "timestamp" = EXCLUDED."timestamp", '
            "updated_at = EXCLUDED.updated_at"
        ).format(self._table_id)
        self._execute("cannot write", lambda conn: conn.execute(query, (entity, timestamp)))

    def item_processed_many(self, items: Iterable[Item]) -> None:
        """Upsert several items in one statement (for equal entities the last one wins)."""
        latest = dict(validate_item(item) for item in items)
        if not latest:
            return
        query = sql.SQL(
            'INSERT INTO {} (entity, "timestamp", updated_at) '
            "SELECT e, ts, now() FROM unnest(%s::text[], %s::bigint[]) AS u(e, ts) "
            'ON CONFLICT (entity) DO UPDATE SET "timestamp" = EXCLUDED."timestamp", '
            "updated_at = EXCLUDED.updated_at"
        ).format(self._table_id)
        params = (list(latest), list(latest.values()))
        self._execute("cannot write", lambda conn: conn.execute(query, params))

    def load(self) -> list[Item]:
        """Every stored item, sorted by entity (rows with a NULL timestamp are skipped)."""
        query = sql.SQL(
            'SELECT entity, "timestamp" FROM {} WHERE "timestamp" IS NOT NULL ORDER BY entity'
        ).format(self._table_id)
        rows = self._execute("cannot read", lambda conn: conn.execute(query).fetchall())
        return [(str(entity), int(timestamp)) for entity, timestamp in rows]

    def reset(self) -> None:
        """Delete every row of the table."""
        query = sql.SQL("DELETE FROM {}").format(self._table_id)
        self._execute("cannot reset", lambda conn: conn.execute(query))

    def close(self) -> None:
        """Close the connection (safe to call more than once)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _connect(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self.close()
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self._connect_timeout)),
                application_name="datalogger",
            )
        except psycopg.Error as exc:
            self._raise(DataLoggerError, "cannot connect", exc)
        self._conn = conn
        return conn

    def _execute(self, what: str, action: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``action`` on a live connection, reconnecting once if the connection broke."""
        if not self._started:
            raise DataLoggerError("postgres adapter: not started")
        for attempt in (1, 2):
            conn = self._connect()
            try:
                return action(conn)
            except psycopg.OperationalError as exc:
                if attempt == 1 and (conn.closed or conn.broken):
                    self.close()
                    continue
                self._raise(DataLoggerError, what, exc)
            except psycopg.Error as exc:
                self._raise(DataLoggerError, what, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, kind: type[DataLoggerError], what: str, exc: BaseException) -> NoReturn:
        """Raise ``kind`` for ``exc`` with passwords masked; drop the cause if it holds one."""
        text = redact(f"{type(exc).__name__}: {exc}".strip(), self._secrets)
        error = kind(f"postgres adapter ({self._where}, table {self.table!r}): {what}: {text}")
        if mentions_secret(exc, self._secrets):
            raise error from None
        raise error from exc

    def __repr__(self) -> str:
        """``PostgresAdapter(host:port/dbname, table=...)``, without the password."""
        return f"PostgresAdapter({self._where}, table={self.table!r})"


def _timeout(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"postgres adapter: option 'connect_timeout' must be > 0, got {value!r}")
    return float(value)
