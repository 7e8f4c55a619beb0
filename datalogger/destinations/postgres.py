"""PostgreSQL destination: one table per topic, written with ``COPY`` (psycopg 3).

Configure it with ``type = "postgres"``; every option is a keyword argument of
:class:`PostgresDestination`. With ``schema = "{topic}"`` the topics ``green``
and ``red`` land in the schemas ``green`` and ``red``::

    dest = PostgresDestination(dsn="postgresql://app@127.0.0.1/db", schema="{topic}",
                               table="readings")
    dest.send_data("green", [{"sensor": 1, "value": 0.5}])

Errors are classified at this boundary: a server that cannot be reached or
drops the connection raises :class:`PostgresUnavailable` (retried by the
framework); rows the database rejects raise :class:`datalogger.PermanentError`
listing only those rows, after the other rows were written.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from ..exceptions import ConfigError, DataLoggerError, PermanentError
from . import _pg_schema as pg
from .base import Destination, Rows

__all__ = ["PostgresDestination", "PostgresUnavailable", "mask_dsn"]

mask_dsn = pg.mask_dsn

log = logging.getLogger(__name__)

#: Errors caused by the rows themselves: the rows are isolated and rejected.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, pg_errors.DatatypeMismatch)
#: Errors saying the table we remembered changed under us: forget it, retry once.
_STALE_ERRORS = (pg_errors.UndefinedTable, pg_errors.UndefinedColumn, pg_errors.InvalidSchemaName)
#: Errors from a concurrent CREATE of the same schema or table: harmless.
_RACE_ERRORS = (pg_errors.UniqueViolation, pg_errors.DuplicateTable, pg_errors.DuplicateSchema)


class PostgresUnavailable(DataLoggerError):
    """PostgreSQL could not be reached or dropped the connection: the chunk is retried."""


@attrs.define
class _Report:
    """What one delivery attempt did: rows written, rows rejected and why."""

    written: int = 0
    bad: list[Any] = attrs.field(factory=list)
    reason: str | None = None

    def reject(self, row: Any, reason: str) -> None:
        """Record ``row`` as bad; the first reason is kept for the error message."""
        self.bad.append(row)
        if self.reason is None:
            self.reason = reason


class PostgresDestination(Destination):
    """Store each topic's rows in a PostgreSQL table, created on first use.

    Args:
        dsn: a libpq connection string or URI. When given, ``host``, ``port``,
            ``user`` and ``dbname`` are ignored; ``password``, if given, is added.
        host, port, user, password, dbname: used when ``dsn`` is ``None``.
        schema: schema name; may contain ``{topic}``.
        table: table name; may contain ``{topic}``. Once filled in (with ``.``,
            ``:`` and ``-`` of the topic mapped to ``_``) both must match
            ``[A-Za-z_][A-Za-z0-9_]{0,62}``; they are always quoted.
        columns: column name -> SQL type for new tables; ``None`` infers the
            types from the first chunk.
        auto_create: create missing schemas and tables, and add columns that
            appear in later rows.
        conflict_key: columns of a unique constraint (made with the table);
            rows are inserted with ``ON CONFLICT DO NOTHING`` so a replayed
            chunk adds no duplicate. Rows without these values are rejected.
        connect_timeout: seconds to wait for a connection.
        application_name: shown in ``pg_stat_activity``; default
            ``datalogger-<random id>``.

    Raises:
        ConfigError: an option is malformed.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        host: str = "127.0.0.1",
        port: int = 5432,
        user: str | None = None,
        password: str | None = None,
        dbname: str | None = None,
        schema: str = "public",
        table: str = "{topic}",
        columns: Mapping[str, str] | None = None,
        auto_create: bool = True,
        conflict_key: Sequence[str] | None = None,
        connect_timeout: float = 5.0,
        application_name: str | None = None,
    ) -> None:
        self._conninfo = pg.conninfo(dsn, host, port, user, password, dbname)
        self._where = mask_dsn(self._conninfo)
        secret = password or conninfo_to_dict(self._conninfo).get("password")
        self._secret = str(secret) if secret else None
        self._schema = pg.check_template("schema", schema)
        self._table = pg.check_template("table", table)
        self._columns = pg.check_columns(columns)
        self._auto_create = bool(auto_create)
        self._conflict_key = pg.check_conflict_key(conflict_key, self._columns)
        if not connect_timeout or connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, not {connect_timeout!r}")
        self._connect_timeout = max(2, math.ceil(connect_timeout))
        self._application_name = application_name or f"datalogger-{uuid.uuid4().hex[:12]}"
        self._conn: psycopg.Connection[Any] | None = None
        self._tables: dict[tuple[str, str], dict[str, str]] = {}

    def __repr__(self) -> str:
        return (
            f"PostgresDestination({self._where!r}, schema={self._schema!r}, table={self._table!r})"
        )

    def send_data(self, topic: str, data: Rows) -> int:
        """Write ``data`` to the topic's table in one transaction.

        Returns:
            The number of rows inserted (with ``conflict_key``, rows already
            present are not counted).

        Raises:
            PermanentError: the topic gives no valid name, or some rows were
                rejected (``rows`` lists them; the others were written).
            PostgresUnavailable: the server is unreachable; retry later.
            ConfigError: the table is missing with ``auto_create`` off, or
                the server refused the statements (privileges, a bad type).
        """
        schema = pg.target_name("schema", self._schema, topic)
        table = pg.target_name("table", self._table, topic)
        rows = list(data)
        report = _Report()
        good = []
        for row in rows:
            problem = self._row_problem(row)
            if problem is None:
                good.append(row)
            else:
                report.reject(row, problem)
        if good:
            delivered = self._deliver_retrying(schema, table, good)
            report.written = delivered.written
            for row in delivered.bad:
                report.reject(row, delivered.reason or "rejected")
        if report.bad:
            position = {id(row): index for index, row in enumerate(rows)}
            report.bad.sort(key=lambda row: position[id(row)])  # in chunk order
            reason = self._scrub(report.reason or "rejected")[:1000]
            raise PermanentError(
                f'{len(report.bad)} of {len(rows)} rows rejected by "{schema}"."{table}": {reason}',
                rows=None if len(report.bad) == len(rows) else report.bad,
            )
        return report.written

    def close(self) -> None:
        """Close the connection; the next :meth:`send_data` opens a new one."""
        conn, self._conn = self._conn, None
        self._tables.clear()
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - closing a dead socket
                log.debug("error closing the connection to %s", self._where, exc_info=True)

    # -- connection and error classification -------------------------------

    def _connect(self) -> tuple[psycopg.Connection[Any], bool]:
        """The open connection and True, or a new one and False."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn, True
        self.close()
        try:
            self._conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name=self._application_name,
            )
        except psycopg.Error as exc:
            raise PostgresUnavailable(
                f"cannot connect to PostgreSQL at {self._where}: {self._scrub(exc)}"
            ) from exc
        return self._conn, False

    def _deliver_retrying(self, schema: str, table: str, rows: Rows) -> _Report:
        """Deliver, reconnecting once if a kept connection turned out broken."""
        for attempt in (1, 2):
            conn, reused = self._connect()
            try:
                return self._deliver(conn, schema, table, rows)
            except (psycopg.OperationalError, psycopg.InterfaceError, psycopg.InternalError) as exc:
                broken = conn.closed or conn.broken
                if broken:
                    self.close()
                if broken and reused and attempt == 1:
                    log.warning("connection to %s lost (%s); reconnecting", self._where, exc)
                    continue
                raise PostgresUnavailable(
                    f"PostgreSQL at {self._where} failed: {self._scrub(exc)}"
                ) from exc
            except _STALE_ERRORS as exc:
                self._tables.pop((schema, table), None)
                if attempt == 1:
                    continue
                raise ConfigError(
                    f'"{schema}"."{table}" changed while writing: {self._scrub(exc)}'
                ) from exc
            except psycopg.Error as exc:
                raise ConfigError(
                    f'PostgreSQL refused to write "{schema}"."{table}": {self._scrub(exc)}'
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _scrub(self, text: object) -> str:
        message = str(text)
        if self._secret:
            message = message.replace(self._secret, "***")
        return message

    # -- writing -------------------------------------------------------------

    def _row_problem(self, row: Any) -> str | None:
        """Why ``row`` can never be written, checked before touching the database."""
        if not isinstance(row, dict):
            return f"row is a {type(row).__name__}, not a dict"
        for name in row:
            problem = pg.column_name_problem(name)
            if problem is not None:
                return problem
        for name in self._conflict_key:
            if row.get(name) is None:
                return f"row has no value for the conflict_key column {name!r}"
        return None

    def _deliver(
        self, conn: psycopg.Connection[Any], schema: str, table: str, rows: Rows
    ) -> _Report:
        """Make sure the table fits ``rows``, then write them, isolating bad rows."""
        types = self._ensure_table(conn, schema, table, rows)
        report = _Report()
        writable = []
        for row in rows:
            unknown = [name for name in row if name not in types]
            if unknown:
                report.reject(row, f'no column {unknown[0]!r} in "{schema}"."{table}"')
            else:
                writable.append(row)
        if writable:

            def write(part: Rows) -> int:
                return self._write(conn, schema, table, types, part)

            with conn.transaction():
                report.written = _isolate(conn, write, writable, report)
        return report

    def _ensure_table(
        self, conn: psycopg.Connection[Any], schema: str, table: str, rows: Rows
    ) -> dict[str, str]:
        """Column name -> type of the table, creating it and new columns if allowed."""
        key = (schema, table)
        types = self._tables.get(key) or pg.load_columns(conn, schema, table)
        if types is None:
            if not self._auto_create:
                raise ConfigError(
                    f'table "{schema}"."{table}" does not exist and auto_create is false'
                )
            wanted = self._columns or pg.infer_columns(rows, _names(rows))
            try:
                with conn.transaction():
                    pg.create_schema(conn, schema)
                    pg.create_table(conn, schema, table, wanted, self._conflict_key)
            except _RACE_ERRORS:
                log.debug('"%s"."%s" was created concurrently', schema, table)
            types = pg.load_columns(conn, schema, table) or dict(wanted)
            log.info('created table "%s"."%s" with columns %s', schema, table, types)
        missing = [name for name in _names(rows) if name not in types]
        if missing and self._auto_create:
            added = pg.infer_columns(rows, missing)
            with conn.transaction():
                pg.add_columns(conn, schema, table, added)
            types = pg.load_columns(conn, schema, table) or {**types, **added}
            log.info('added columns %s to "%s"."%s"', added, schema, table)
        self._tables[key] = types
        return types

    def _write(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        types: Mapping[str, str],
        rows: Rows,
    ) -> int:
        """COPY ``rows``, one COPY per set of keys so missing keys get the column default."""
        groups: dict[frozenset[str], Rows] = {}
        for row in rows:
            groups.setdefault(frozenset(row), []).append(row)
        written = 0
        with conn.cursor() as cur:
            for keys, group in groups.items():
                names = [name for name in types if name in keys]
                if not names:  # empty rows: every column takes its default
                    for _ in group:
                        cur.execute(pg.default_row(schema, table))
                    written += len(group)
                    continue
                if not self._conflict_key:
                    _copy(cur, pg.copy_statement(schema, table, names), names, types, group)
                    written += len(group)
                    continue
                create, copy, insert, drop = pg.staged_insert(
                    schema, table, names, self._conflict_key
                )
                cur.execute(create)
                _copy(cur, copy, names, types, group)
                cur.execute(insert)
                written += max(cur.rowcount, 0)
                cur.execute(drop)
        return written


def _isolate(
    conn: psycopg.Connection[Any], write: Callable[[Rows], int], rows: Rows, report: _Report
) -> int:
    """Write ``rows`` in a savepoint; on a data error split them in two and recurse.

    A row that fails alone is recorded in ``report`` as bad. Returns the number
    of rows written.
    """
    try:
        with conn.transaction():
            return write(rows)
    except _ROW_ERRORS as exc:
        if len(rows) == 1:
            report.reject(rows[0], str(exc))
            return 0
    except psycopg.ProgrammingError as exc:
        if exc.sqlstate is not None:  # from the server: not about one value
            raise
        if len(rows) == 1:  # "cannot adapt type": a value psycopg cannot send
            report.reject(rows[0], str(exc))
            return 0
    half = len(rows) // 2
    return _isolate(conn, write, rows[:half], report) + _isolate(conn, write, rows[half:], report)


def _copy(
    cur: psycopg.Cursor[Any],
    statement: Any,
    names: Sequence[str],
    types: Mapping[str, str],
    rows: Rows,
) -> None:
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row([_adapt(row[name], types[name]) for name in names])


def _adapt(value: Any, sql_type: str) -> Any:
    """Wrap JSON-like values (and anything bound for a json column) as ``Jsonb``."""
    if value is None:
        return None
    if sql_type.startswith("json") or isinstance(value, (dict, tuple)):
        return Jsonb(value, dumps=_json_dumps)
    if isinstance(value, list) and not sql_type.endswith("]"):
        return Jsonb(value, dumps=_json_dumps)
    return value


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _names(rows: Rows) -> list[str]:
    """Every key of ``rows``, in order of first appearance."""
    return list(dict.fromkeys(name for row in rows for name in row))
