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

import functools
import logging
import math
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ..exceptions import ConfigError, DataLoggerError, PermanentError
from ..redaction import redact
from . import _pg_copy as cp
from . import _pg_schema as pg
from .base import Destination, Rows

__all__ = ["PostgresDestination", "PostgresUnavailable", "mask_dsn"]

mask_dsn = pg.mask_dsn

log = logging.getLogger(__name__)

_ROW_ERRORS = cp.ROW_ERRORS
#: Errors saying the table we remembered changed under us: forget it, retry once.
_STALE_ERRORS = (pg_errors.UndefinedTable, pg_errors.UndefinedColumn, pg_errors.InvalidSchemaName)
#: Errors of a first, savepoint-free attempt after which the chunk is written
#: again the careful way (text COPY, bad rows isolated in savepoints).
_RETRY_CAREFULLY = (
    *_ROW_ERRORS,
    psycopg.ProgrammingError,
    TypeError,
    ValueError,
    OverflowError,
    struct.error,
)
#: Errors from a concurrent CREATE of the same schema or table: harmless.
_RACE_ERRORS = (pg_errors.UniqueViolation, pg_errors.DuplicateTable, pg_errors.DuplicateSchema)


class PostgresUnavailable(DataLoggerError):
    """PostgreSQL could not be reached or dropped the connection: the chunk is retried."""


class PostgresDestination(Destination):
    """Store each topic's rows in a PostgreSQL table, created on first use.

    Args:
        dsn: a libpq connection string or URI. When given, ``host``, ``port``,
            ``user`` and ``dbname`` are ignored; ``password``, if given, is added.
        host: used when ``dsn`` is ``None``, as are the four below.
        port: the server's port.
        user: the role to connect as.
        password: its password (added to ``dsn`` when that has none).
        dbname: the database.
        schema: schema name; may contain ``{topic}``.
        table: table name; may contain ``{topic}``. Besides ``{topic}`` both may
            hold letters, digits and ``_``. The topic is filled in as it is and
            the name always quoted; a name longer than 63 bytes is shortened
            with a hash (:mod:`datalogger.names`).
        columns: column name -> SQL type for new tables; ``None`` infers the
            types from the first chunk.
        auto_create: create missing schemas and tables.
        auto_migrate: add a column for a key the table lacks; with ``False``
            such a row is rejected (dead-lettered) with the reason.
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
        auto_migrate: bool = True,
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
        self._auto_migrate = bool(auto_migrate)
        self._conflict_key = pg.check_conflict_key(conflict_key, self._columns)
        if not connect_timeout or connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0 seconds, not {connect_timeout!r}")
        self._connect_timeout = max(2, math.ceil(connect_timeout))
        self._application_name = application_name or f"datalogger-{uuid.uuid4().hex[:12]}"
        self._conn: psycopg.Connection[Any] | None = None
        self._tables: dict[tuple[str, str], dict[str, str]] = {}
        self._checked: dict[tuple[Any, ...], str | None] = {}  # key set -> problem
        self._statements: dict[tuple[Any, ...], tuple[str, ...]] = {}  # this connection's SQL text
        self._stages: set[str] = set()  # staging tables made on this connection

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
            PermanentError: some rows were rejected (``rows`` lists them, each
                with its reason in ``reasons``; the others were written).
            PostgresUnavailable: the server is unreachable; retry later.
            DataLoggerError: only empty rows and no table yet: retried until a
                row with keys has created the table.
            ConfigError: the table is missing with ``auto_create`` off, or
                the server refused the statements (privileges, a bad type).
        """
        schema = pg.target_name("schema", self._schema, topic)
        table = pg.target_name("table", self._table, topic)
        rows = list(data)
        report = cp.Report()
        good: dict[tuple[Any, ...], Rows] = {}  # rows by their keys, in order
        for row in rows:
            if not isinstance(row, dict):
                report.reject(row, f"row is a {type(row).__name__}, not a dict")
                continue
            keys = tuple(row)
            problem = self._row_problem(keys, row)
            if problem is not None:
                report.reject(row, problem)
            elif keys in good:
                good[keys].append(row)
            else:
                good[keys] = [row]
        if good:
            delivered = self._deliver_retrying(schema, table, good, rows)
            report.written = delivered.written
            for row, why in zip(delivered.bad, delivered.reasons, strict=True):
                report.reject(row, why)
        if report.bad:
            position = {id(row): index for index, row in enumerate(rows)}
            order = sorted(range(len(report.bad)), key=lambda i: position[id(report.bad[i])])
            reason = self._scrub(report.reason or "rejected")[:1000]
            raise PermanentError(
                f'{len(report.bad)} of {len(rows)} rows rejected by "{schema}"."{table}": {reason}',
                rows=[report.bad[i] for i in order],  # in chunk order
                reasons=[self._scrub(report.reasons[i])[:1000] for i in order],
            )
        return report.written

    def close(self) -> None:
        """Close the connection; the next :meth:`send_data` opens a new one."""
        conn, self._conn = self._conn, None
        self._tables.clear()
        self._statements.clear()
        self._stages.clear()
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

    def _deliver_retrying(
        self, schema: str, table: str, by_keys: Mapping[tuple[str, ...], Rows], chunk: Rows
    ) -> cp.Report:
        """Deliver, reconnecting once if a kept connection turned out broken."""
        for attempt in (1, 2):
            conn, reused = self._connect()
            try:
                return self._deliver(conn, schema, table, by_keys, chunk)
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
                self._stages.clear()
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
        return redact(str(text), [self._secret] if self._secret else ())

    # -- writing -------------------------------------------------------------

    def _row_problem(self, keys: tuple[Any, ...], row: dict[Any, Any]) -> str | None:
        """Why ``row`` (with ``keys``) can never be written, checked before touching the database.

        Column names are checked once per distinct key set.
        """
        try:
            problem = self._checked[keys]
        except KeyError:
            problem = next(filter(None, map(pg.column_name_problem, keys)), None)
            if len(self._checked) >= _MAX_CACHED:
                self._checked.clear()
            self._checked[keys] = problem
        if problem is not None:
            return problem
        for name in self._conflict_key:
            if row.get(name) is None:
                return f"row has no value for the conflict_key column {name!r}"
        return None

    def _deliver(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        by_keys: Mapping[tuple[str, ...], Rows],
        chunk: Rows,
    ) -> cp.Report:
        """Make sure the table fits the rows, then write them, isolating bad rows.

        ``by_keys`` holds the rows of ``chunk`` to write, grouped by their keys.

        The first attempt is one transaction (a lone COPY needs no BEGIN); only
        when it fails on the data are the rows written again in savepoints.
        """
        rows = [row for group in by_keys.values() for row in group]
        names = list(dict.fromkeys(name for keys in by_keys for name in keys))
        types = self._ensure_table(conn, schema, table, rows, names)
        report = cp.Report()
        fitting: dict[tuple[str, ...], Rows] = {}
        for keys, group in by_keys.items():
            unknown = [name for name in keys if name not in types]
            if not unknown:
                fitting[keys] = group
                continue
            why = "auto_migrate is false" if not self._auto_migrate else "it could not be added"
            for row in group:
                report.reject(row, f'no column {unknown[0]!r} in "{schema}"."{table}" ({why})')
        if not fitting:
            return report
        writable = [row for group in fitting.values() for row in group]
        if len(fitting) > 1:  # back in chunk order
            position = {id(row): index for index, row in enumerate(chunk)}
            writable.sort(key=lambda row: position[id(row)])
        groups = cp.merge(fitting, writable)
        if self._conflict_key:
            self._make_stages(conn, schema, table, types, groups)
        try:
            report.written = self._write(conn, schema, table, types, groups, fast=True)
            return report
        except _RETRY_CAREFULLY as exc:
            if isinstance(exc, psycopg.Error) and exc.sqlstate is not None:
                if not isinstance(exc, _ROW_ERRORS):  # from the server: not about a value
                    raise
            log.debug('retrying "%s"."%s" row by row: %s', schema, table, self._scrub(exc))

        def write(part: Rows) -> int:
            return self._write(conn, schema, table, types, cp.group(part), fast=False)

        with conn.transaction():
            report.written = cp.isolate(conn, write, writable, report)
        return report

    def _ensure_table(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        rows: Rows,
        names: Sequence[str],
    ) -> dict[str, str]:
        """Column name -> type of the table, creating it and new columns if allowed.

        What was learnt is kept per table: a steady-state chunk asks nothing;
        an unknown column makes it look at the catalog again.
        """
        key = (schema, table)
        types = self._tables.get(key)
        if types is not None and any(name not in types for name in names):
            types = None  # a new column: maybe added by someone else
        if types is None:
            types = pg.load_columns(conn, schema, table)
        if types is None:
            if not self._auto_create:
                raise ConfigError(
                    f'table "{schema}"."{table}" does not exist and auto_create is false'
                )
            wanted = self._columns or pg.infer_columns(rows, names)
            if not wanted:  # never a table without columns
                raise DataLoggerError(
                    f'table "{schema}"."{table}" does not exist yet: an empty row is stored '
                    "once a row with keys has created it"
                )
            try:
                with conn.transaction():
                    pg.create_schema(conn, schema)
                    pg.create_table(conn, schema, table, wanted, self._conflict_key)
            except _RACE_ERRORS:
                log.debug('"%s"."%s" was created concurrently', schema, table)
            types = pg.load_columns(conn, schema, table) or dict(wanted)
            log.info('created table "%s"."%s" with columns %s', schema, table, types)
        missing = [name for name in names if name not in types]
        if missing and self._auto_migrate:
            added = pg.infer_columns(rows, missing)
            try:
                with conn.transaction():
                    pg.add_columns(conn, schema, table, added)
            except pg_errors.InsufficientPrivilege as exc:
                # The rows with these keys are rejected (with the reason); the others go.
                log.warning('cannot add columns to "%s"."%s": %s', schema, table, self._scrub(exc))
            else:
                types = pg.load_columns(conn, schema, table) or {**types, **added}
                log.info('added columns %s to "%s"."%s"', added, schema, table)
        self._tables[key] = types
        return types

    def _sql(
        self,
        conn: psycopg.Connection[Any],
        key: tuple[Any, ...],
        make: Callable[[], Sequence[sql.Composable]],
    ) -> tuple[str, ...]:
        """The SQL text of the statements ``make()`` returns, composed once per connection."""
        texts = self._statements.get(key)
        if texts is None:
            if len(self._statements) >= _MAX_CACHED:
                self._statements.clear()
            texts = self._statements[key] = tuple(part.as_string(conn) for part in make())
        return texts

    def _staged(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        types: Mapping[str, str],
        names: Sequence[str],
    ) -> tuple[str, tuple[str, ...]]:
        """The staging table of ``names`` and its statements (create, copy, binary copy, insert)."""
        stage = cp.stage_name(schema, table, [(name, types[name]) for name in names])
        key = ("stage", schema, table, stage)
        make = functools.partial(pg.staged_insert, schema, table, names, self._conflict_key, stage)
        return stage, self._sql(conn, key, make)

    def _make_stages(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        types: Mapping[str, str],
        groups: Mapping[frozenset[str], Rows],
    ) -> None:
        """Create, outside any transaction, the staging tables not made yet on this connection."""
        for keys in groups:
            names = [name for name in types if name in keys]
            if not names:
                continue
            stage, texts = self._staged(conn, schema, table, types, names)
            if stage not in self._stages:
                conn.execute(texts[0])
                self._stages.add(stage)

    def _write(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        types: Mapping[str, str],
        groups: Mapping[frozenset[str], Rows],
        fast: bool,
    ) -> int:
        """COPY ``groups``, one COPY per set of keys so missing keys get the column default.

        With ``fast`` the groups go in one transaction of their own (none for
        a lone COPY) and in binary when every value suits its column;
        otherwise text COPYs run in the caller's transaction.
        """
        if fast and (len(groups) > 1 or self._conflict_key or frozenset() in groups):
            with conn.transaction():
                return self._write_groups(conn, schema, table, types, groups, fast)
        return self._write_groups(conn, schema, table, types, groups, fast)

    def _write_groups(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        table: str,
        types: Mapping[str, str],
        groups: Mapping[frozenset[str], Rows],
        fast: bool,
    ) -> int:
        written = 0
        with conn.cursor() as cur:
            for keys, group in groups.items():
                names = [name for name in types if name in keys]
                if not names:  # empty rows: every column takes its default
                    for _ in group:
                        cur.execute(pg.default_row(schema, table))
                    written += len(group)
                    continue
                adapters, binary = cp.plan(group, names, types, fast)
                if not self._conflict_key:
                    in_binary = binary is not None
                    (statement,) = self._sql(
                        conn,
                        ("copy", schema, table, tuple(names), in_binary),
                        lambda: (pg.copy_statement(schema, table, names, in_binary),),  # noqa: B023
                    )
                    cp.copy_rows(cur, statement, names, adapters, binary, group)
                    written += len(group)
                    continue
                stage, (_, copy, copy_binary, insert) = self._staged(
                    conn, schema, table, types, names
                )
                cp.copy_rows(
                    cur, copy if binary is None else copy_binary, names, adapters, binary, group
                )
                cur.execute(insert)
                written += max(cur.rowcount, 0)
                if not fast:  # more parts follow in this transaction: empty the stage
                    cur.execute(f'delete from pg_temp."{stage}"')
        return written


#: Bound of the per-destination caches of key sets and statements.
_MAX_CACHED = 4096
