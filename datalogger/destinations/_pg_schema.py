"""Options, names, column types and DDL for :mod:`datalogger.destinations.postgres`.

Everything here is plain functions over psycopg connections and ``psycopg.sql``
objects: identifiers always go through :class:`psycopg.sql.Identifier`, so a
topic or a row key can never become SQL. Only the column *types* of the
``columns`` option are SQL text, and they come from the operator's configuration.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..exceptions import ConfigError
from ..names import sql_identifier
from ..redaction import redact

__all__ = [
    "IDENTIFIER",
    "add_columns",
    "check_columns",
    "check_conflict_key",
    "check_template",
    "column_name_problem",
    "conninfo",
    "copy_statement",
    "create_schema",
    "create_table",
    "default_row",
    "infer_columns",
    "infer_type",
    "load_columns",
    "mask_dsn",
    "staged_insert",
    "target_name",
]


#: What the fixed part of a schema or table template may hold (besides ``{topic}``).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TEMPLATE_TEXT = re.compile(r"[A-Za-z0-9_]*")

#: PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated by the server.
_MAX_NAME_BYTES = 63

#: Python type -> SQL type for inference; order matters (bool before int,
#: datetime before date). Naive datetimes and times are told apart below.
_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "bigint"),
    (float, "double precision"),
    (str, "text"),
    (dt.datetime, "timestamptz"),
    (dt.date, "date"),
    (dt.time, "time"),
    (dt.timedelta, "interval"),
    (Decimal, "numeric"),
    (uuid.UUID, "uuid"),
    ((bytes, bytearray, memoryview), "bytea"),
    ((dict, list, tuple), "jsonb"),
)


def mask_dsn(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***``.

    Works for URIs (``postgresql://user:secret@host/db``, ``?password=secret``)
    and for key/value strings (``host=h password=secret``).
    """
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    return redact(dsn, [str(password)] if password else ())  # wherever the patterns miss it


def _fill(template: str, topic: str) -> str:
    return template.format(topic=topic)


def check_template(option: str, template: object) -> str:
    """Check a ``schema``/``table`` template at configuration time.

    Raises:
        ConfigError: it is not a str, uses a field other than ``{topic}``, or
            holds other characters than letters, digits and ``_`` (or, filled
            with a sample topic, is not a valid identifier of at most 63 bytes).
    """
    if not isinstance(template, str):
        raise ConfigError(f"{option} must be a str, not {type(template).__name__}")
    try:
        sample = _fill(template, "topic")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{option} {template!r} may only contain the placeholder {{topic}}: {exc!r}"
        ) from exc
    fixed = template.replace("{topic}", "")
    if not _TEMPLATE_TEXT.fullmatch(fixed) or not IDENTIFIER.fullmatch(sample):
        raise ConfigError(
            f"{option} {template!r}: besides {{topic}} it may hold letters, digits and _ "
            f"and must give an identifier of at most 63 characters (it gives {sample!r})"
        )
    return template


def target_name(option: str, template: str, topic: str) -> str:
    """The schema or table name for ``topic``: the template with the topic as it is.

    The name is always quoted, so every topic character is kept (``metrics.cpu``
    is the table ``"metrics.cpu"``); a name longer than PostgreSQL's 63 bytes
    is shortened with a hash (:func:`datalogger.names.sql_identifier`), so two
    long topics never share a table.
    """
    del option  # the same rule for schemas and tables
    return sql_identifier(_fill(template, topic))


def column_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a column name, or ``None`` when it can (it is quoted)."""
    if not isinstance(name, str) or not name:
        return f"column name {name!r} is not a non-empty str"
    if "\x00" in name:
        return f"column name {name!r} contains a NUL character"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return f"column name {name[:20]!r}... is longer than {_MAX_NAME_BYTES} bytes"
    return None


def infer_type(values: Iterable[Any]) -> str:
    """The SQL type for a column holding ``values``.

    The type most of the non-null values have wins (ties: the first seen);
    ints mixed with floats give ``double precision``; only nulls give ``text``.
    """
    counts: Counter[str] = Counter()
    for value in values:
        if value is None:
            continue
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            counts["timestamp"] += 1
            continue
        if type(value) is dt.time and value.tzinfo is not None:
            counts["timetz"] += 1
            continue
        for py_type, sql_type in _TYPES:
            if isinstance(value, py_type):
                counts[sql_type] += 1
                break
        else:
            counts["text"] += 1
    if not counts:
        return "text"
    if set(counts) == {"bigint", "double precision"}:
        return "double precision"
    return counts.most_common(1)[0][0]


def infer_columns(rows: Sequence[Mapping[str, Any]], names: Iterable[str]) -> dict[str, str]:
    """Infer the SQL type of each of ``names`` from the values in ``rows``."""
    return {name: infer_type(row.get(name) for row in rows) for name in names}


def load_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str] | None:
    """The columns of ``schema.table`` as name -> SQL type, or ``None`` if it does not exist."""
    cur = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod)"
        " from pg_attribute a"
        " join pg_class c on c.oid = a.attrelid"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')"
        " and a.attnum > 0 and not a.attisdropped"
        " order by a.attnum",
        (schema, table),
    )
    found = {str(name): str(type_) for name, type_ in cur.fetchall()}
    return found or None


def create_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create ``schema`` unless it exists (checked first: needs no privilege if it does)."""
    cur = conn.execute("select 1 from pg_namespace where nspname = %s", (schema,))
    if cur.fetchone() is None:
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))


def create_table(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: Mapping[str, str],
    conflict_key: Sequence[str] | None,
) -> None:
    """``CREATE TABLE IF NOT EXISTS``, with a ``UNIQUE`` constraint on ``conflict_key``."""
    parts = [
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_))
        for name, type_ in columns.items()
    ]
    if conflict_key:
        parts.append(sql.SQL("unique ({})").format(_names(conflict_key)))
    conn.execute(
        sql.SQL("create table if not exists {} ({})").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(parts)
        )
    )


def add_columns(
    conn: psycopg.Connection[Any], schema: str, table: str, columns: Mapping[str, str]
) -> None:
    """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` for each of ``columns``."""
    adds = [
        sql.SQL("add column if not exists {} {}").format(sql.Identifier(name), sql.SQL(type_))
        for name, type_ in columns.items()
    ]
    conn.execute(
        sql.SQL("alter table {} {}").format(sql.Identifier(schema, table), sql.SQL(", ").join(adds))
    )


def copy_statement(
    schema: str, table: str, names: Sequence[str], binary: bool = False
) -> sql.Composed:
    """``COPY schema.table (names) FROM STDIN``, in text or binary format."""
    return sql.SQL("copy {} ({}) from stdin{}").format(
        sql.Identifier(schema, table), _names(names), _FORMAT[binary]
    )


_FORMAT = {False: sql.SQL(""), True: sql.SQL(" (format binary)")}


def default_row(schema: str, table: str) -> sql.Composed:
    """``INSERT ... DEFAULT VALUES``: the statement for an empty row."""
    return sql.SQL("insert into {} default values").format(sql.Identifier(schema, table))


def staged_insert(
    schema: str, table: str, names: Sequence[str], conflict_key: Sequence[str], stage: str
) -> tuple[sql.Composed, sql.Composed, sql.Composed, sql.Composed]:
    """The statements of an idempotent write through the temporary table ``stage``.

    Returns:
        ``(create stage, copy into stage, binary copy into stage, insert ...
        on conflict do nothing)``. The stage is created once per connection
        (``on commit delete rows`` empties it after each transaction) with
        only ``names``, without constraints, so the target's defaults and
        constraints apply at the ``INSERT``.
    """
    target = sql.Identifier(schema, table)
    staged = sql.Identifier("pg_temp", stage)
    cols = _names(names)
    create = sql.SQL(
        "create temp table if not exists {} on commit delete rows as select {} from {} with no data"
    ).format(sql.Identifier(stage), cols, target)
    copy = sql.SQL("copy {} ({}) from stdin").format(staged, cols)
    copy_binary = sql.SQL("copy {} ({}) from stdin (format binary)").format(staged, cols)
    insert = sql.SQL("insert into {} ({}) select {} from {} on conflict ({}) do nothing").format(
        target, cols, cols, staged, _names(conflict_key)
    )
    return create, copy, copy_binary, insert


def _names(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def conninfo(
    dsn: str | None,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    dbname: str | None,
) -> str:
    """The libpq connection string: ``dsn`` (plus ``password``), or built from the parts.

    Raises:
        ConfigError: ``dsn`` is not a valid connection string (the message masks it).
    """
    extra: dict[str, Any] = {"password": password} if password is not None else {}
    if dsn is None:
        extra.update(host=host, port=port)
        extra.update({k: v for k, v in (("user", user), ("dbname", dbname)) if v is not None})
    elif not isinstance(dsn, str):
        raise ConfigError(f"dsn must be a str, not {type(dsn).__name__}")
    try:
        return make_conninfo(dsn or "", **extra)
    except psycopg.Error:
        # not "from exc": psycopg's message may quote the password
        raise ConfigError(f"dsn {mask_dsn(dsn or '')!r} is not a valid connection string") from None


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Check the ``columns`` option (name -> one SQL type); ``{}`` when not given."""
    if columns is None:
        return {}
    if not isinstance(columns, Mapping) or not columns:
        raise ConfigError("columns must be a non-empty table of column name -> SQL type")
    for name, type_ in columns.items():
        problem = column_name_problem(name)
        if problem is not None:
            raise ConfigError(f"columns: {problem}")
        if not isinstance(type_, str) or not type_.strip() or ";" in type_ or "--" in type_:
            raise ConfigError(f"columns: the type of {name!r} must be one SQL type, not {type_!r}")
    return dict(columns)


def check_conflict_key(key: Sequence[str] | None, columns: Mapping[str, str]) -> tuple[str, ...]:
    """Check the ``conflict_key`` option against ``columns``; ``()`` when not given."""
    if key is None:
        return ()
    if isinstance(key, str) or not key:
        raise ConfigError(f"conflict_key must be a non-empty list of column names, not {key!r}")
    for name in key:
        problem = column_name_problem(name)
        if problem is not None:
            raise ConfigError(f"conflict_key: {problem}")
        if columns and name not in columns:
            raise ConfigError(f"conflict_key column {name!r} is not in columns")
    return tuple(key)
