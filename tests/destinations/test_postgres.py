"""PostgresDestination against the real test server: rows are counted with psycopg."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import re
import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from datalogger import ConfigError, DataLoggerError, PermanentError
from datalogger.destinations import _pg_copy, _pg_schema
from datalogger.destinations.postgres import PostgresDestination, mask_dsn
from tests.services import postgres_dsn_or_skip, unique_name

pytestmark = pytest.mark.integration

Make = Callable[..., PostgresDestination]


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


@pytest.fixture
def admin(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schemas(admin: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Schemas the test creates; dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        admin.execute(
            psycopg.sql.SQL("drop schema if exists {} cascade").format(psycopg.sql.Identifier(name))
        )


@pytest.fixture
def make(dsn: str) -> Iterator[Make]:
    """Build destinations on the test server; closed afterwards."""
    made: list[PostgresDestination] = []

    def _make(**options: Any) -> PostgresDestination:
        options.setdefault("dsn", dsn)
        dest = PostgresDestination(**options)
        made.append(dest)
        return dest

    yield _make
    for dest in made:
        dest.close()


def fetch(admin: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return admin.execute(query).fetchall()


def count(admin: psycopg.Connection[Any], schema: str, table: str) -> int:
    return int(fetch(admin, f'select count(*) from "{schema}"."{table}"')[0][0])


def column_types(admin: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str]:
    return dict(
        admin.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = %s and table_name = %s",
            (schema, table),
        ).fetchall()
    )


def test_green_and_red_topics_land_in_their_own_schemas(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    green, red = unique_name("green"), unique_name("red")
    schemas += [green, red]
    dest = make(schema="{topic}", table="readings")

    assert dest.send_data(green, [{"n": 1}, {"n": 2}, {"n": 3}]) == 3
    assert dest.send_data(red, [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]) == 4

    assert count(admin, green, "readings") == 3
    assert count(admin, red, "readings") == 4


def test_explicit_columns_are_used_and_defaults_apply(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(
        schema=schema,
        columns={"id": "integer not null", "name": "varchar(8)", "at": "timestamptz default now()"},
    )

    dest.send_data("t", [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])

    assert column_types(admin, schema, "t") == {
        "id": "integer",
        "name": "character varying",
        "at": "timestamp with time zone",
    }
    rows = fetch(admin, f'select id, name, at is not null from "{schema}".t order by id')
    assert rows == [(1, "one", True), (2, "two", True)]


def test_types_are_inferred_and_new_columns_added(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(schema=schema, table="m")
    at = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)

    dest.send_data(
        "x",
        [
            {"i": 1, "f": 0.5, "b": True, "s": "a", "at": at, "doc": {"k": [1, 2]}, "none": None},
            {"i": 2, "f": 1, "b": False, "s": "b", "at": at, "doc": [1, "x"], "none": None},
        ],
    )
    dest.send_data("x", [{"i": 3, "extra": "new"}])

    assert column_types(admin, schema, "m") == {
        "i": "bigint",
        "f": "double precision",
        "b": "boolean",
        "s": "text",
        "at": "timestamp with time zone",
        "doc": "jsonb",
        "none": "text",
        "extra": "text",
    }
    rows = fetch(admin, f'select i, f, at, doc, extra from "{schema}".m order by i')
    assert rows == [
        (1, 0.5, at, {"k": [1, 2]}, None),
        (2, 1.0, at, [1, "x"], None),
        (3, None, None, None, "new"),
    ]


def test_conflict_key_makes_a_replayed_chunk_add_nothing(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(schema=schema, table="k", conflict_key=["id"])
    chunk = [{"id": i, "v": i * 10} for i in range(50)]

    assert dest.send_data("x", chunk) == 50
    assert dest.send_data("x", chunk) == 0
    assert dest.send_data("x", [*chunk[40:], {"id": 50, "v": 500}]) == 1

    assert count(admin, schema, "k") == 51


def test_a_10000_row_chunk(make: Make, admin: psycopg.Connection[Any], schemas: list[str]) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(schema=schema, table="big")
    chunk = [{"id": i, "value": i / 3, "label": f"row {i}"} for i in range(10_000)]

    assert dest.send_data("x", chunk) == 10_000

    assert fetch(admin, f'select count(*), sum(id) from "{schema}".big') == [
        (10_000, sum(range(10_000)))
    ]


@pytest.mark.parametrize("conflict_key", [None, ["id"]], ids=["copy", "staged"])
def test_bad_rows_are_isolated_and_the_rest_written(
    make: Make,
    admin: psycopg.Connection[Any],
    schemas: list[str],
    conflict_key: list[str] | None,
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(
        schema=schema,
        table="d",
        columns={"id": "bigint not null", "value": "bigint", "label": "varchar(10)"},
        conflict_key=conflict_key,
    )
    chunk: list[dict[str, Any]] = [{"id": i, "value": i, "label": f"r{i}"} for i in range(100)]
    chunk[10]["value"] = "not a number"
    chunk[50]["id"] = None
    chunk[90]["label"] = "far too long for ten"

    with pytest.raises(PermanentError) as caught:
        dest.send_data("x", chunk)

    assert caught.value.rows == [chunk[10], chunk[50], chunk[90]]
    assert "3 of 100 rows" in str(caught.value)
    ids = [row[0] for row in fetch(admin, f'select id from "{schema}".d order by id')]
    assert ids == [i for i in range(100) if i not in (10, 50, 90)]


def test_a_chunk_of_only_bad_rows_names_each_with_its_reason(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(schema=schema, table="d", columns={"n": "integer"})
    chunk = [{"n": "a"}, {"n": "b"}]

    with pytest.raises(PermanentError) as caught:
        dest.send_data("x", chunk)

    assert caught.value.rows == chunk
    assert caught.value.reasons is not None
    assert ['"a"' in caught.value.reasons[0], '"b"' in caught.value.reasons[1]] == [True, True]
    assert count(admin, schema, "d") == 0


def test_a_topic_built_to_inject_sql_is_only_a_quoted_name(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    admin.execute(f'create schema "{schema}"')
    admin.execute(f'create table "{schema}".y (n int)')
    dest = make(schema=schema)
    topic = f'x";drop table "{schema}".y;--'  # not a valid topic: log() refuses it; still safe

    dest.send_data(topic, [{"n": 1}])

    tables = fetch(admin, f"select tablename from pg_tables where schemaname = '{schema}'")
    assert sorted(tables) == sorted([("y",), (topic,)])


def test_topics_are_quoted_as_they_are_and_long_ones_shortened(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    from datalogger.names import sql_identifier

    uid = unique_name("")
    schema = f"Sch{uid}"
    schemas.append(schema)
    dest = make(schema=schema, table="T_{topic}")

    dest.send_data(f"{uid}a-b.c:d", [{"select": 1, "from": "x"}])
    dest.send_data(f"{uid}a_b_c_d", [{"select": 2}])  # no longer the same table
    one, two = "t" * 254 + "1", "t" * 254 + "2"
    dest.send_data(one, [{"n": 1}])
    dest.send_data(two, [{"n": 2}, {"n": 3}])

    assert count(admin, schema, f"T_{uid}a-b.c:d") == 1
    assert count(admin, schema, f"T_{uid}a_b_c_d") == 1
    assert count(admin, schema, sql_identifier("T_" + one)) == 1
    assert count(admin, schema, sql_identifier("T_" + two)) == 2


def test_reconnects_after_the_backend_is_terminated(
    make: Make,
    admin: psycopg.Connection[Any],
    schemas: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    app = unique_name("datalogger")
    dest = make(schema=schema, table="r", application_name=app)
    dest.send_data("x", [{"n": 1}])

    killed = fetch(
        admin,
        f"select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{app}'",
    )
    assert killed == [(True,)]
    with caplog.at_level(logging.WARNING, logger="datalogger.destinations.postgres"):
        dest.send_data("x", [{"n": 2}])

    assert "reconnecting" in caplog.text

    assert count(admin, schema, "r") == 2


def test_close_ends_the_session_and_the_next_send_reconnects(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    app = unique_name("datalogger")
    query = f"select count(*) from pg_stat_activity where application_name = '{app}'"
    dest = make(schema=schema, table="r", application_name=app)
    dest.send_data("x", [{"n": 1}])
    assert fetch(admin, query) == [(1,)]

    dest.close()
    dest.close()
    assert fetch(admin, query) == [(0,)]
    dest.send_data("x", [{"n": 2}])
    assert count(admin, schema, "r") == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("style", ["dsn", "keywords"])
def test_an_unreachable_server_is_transient_and_never_shows_the_password(style: str) -> None:
    port = _free_port()
    if style == "dsn":
        options: dict[str, Any] = {"dsn": f"postgresql://app:s3cr3t-pw@127.0.0.1:{port}/db"}
    else:
        options = {"port": port, "user": "app", "password": "s3cr3t-pw", "dbname": "db"}
    dest = PostgresDestination(**options, connect_timeout=2)

    with pytest.raises(DataLoggerError) as caught:
        dest.send_data("x", [{"n": 1}])

    assert not isinstance(caught.value, PermanentError)
    assert str(port) in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in repr(dest)


def test_missing_table_without_auto_create_is_a_config_error(make: Make) -> None:
    dest = make(schema=unique_name("s"), auto_create=False)

    with pytest.raises(ConfigError, match="does not exist and auto_create is false"):
        dest.send_data("x", [{"n": 1}])


def test_unknown_columns_without_auto_migrate_reject_those_rows(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    admin.execute(f'create schema "{schema}"')
    admin.execute(f'create table "{schema}".x (n int)')
    dest = make(schema=schema, auto_migrate=False)

    with pytest.raises(PermanentError, match="no column 'm'") as caught:
        dest.send_data("x", [{"n": 1}, {"n": 2, "m": 3}])

    assert caught.value.rows == [{"n": 2, "m": 3}]
    assert caught.value.reasons == [f'no column \'m\' in "{schema}"."x" (auto_migrate is false)']
    assert count(admin, schema, "x") == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": "{nope}"}, "only contain the placeholder"),
        ({"table": "my table"}, "may hold letters, digits and _"),
        ({"schema": "9x"}, "may hold letters, digits and _"),
        ({"table": "x" * 64}, "may hold letters, digits and _"),
        ({"columns": {"id": "int; drop table x"}}, "must be one SQL type"),
        ({"columns": {"id": "int"}, "conflict_key": ["other"]}, "not in columns"),
        ({"conflict_key": "id"}, "non-empty list"),
        ({"connect_timeout": 0}, "connect_timeout"),
    ],
)
def test_bad_options_raise_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PostgresDestination(**options)


def test_an_invalid_dsn_is_refused_without_showing_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresDestination(dsn="host=h password=s3cr3t-pw nonsense")
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u@h/db?password=pw&sslmode=off", "postgres://u@h/db?password=***&sslmode=off"),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password = 'p w' dbname=d", "host=h password = *** dbname=d"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_type_inference_rules() -> None:
    assert _pg_schema.infer_type([1, 2.5, None]) == "double precision"
    assert _pg_schema.infer_type([True, False]) == "boolean"
    assert _pg_schema.infer_type([None, None]) == "text"
    assert _pg_schema.infer_type(["a", 1, 2]) == "bigint"
    assert _pg_schema.infer_type([dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]) == "timestamptz"
    assert _pg_schema.infer_type([dt.datetime(2024, 1, 1)]) == "timestamp"
    assert _pg_schema.infer_type([dt.time(1, 2, tzinfo=dt.UTC)]) == "timetz"
    assert _pg_schema.infer_type([{"a": 1}, [1]]) == "jsonb"


def test_values_psycopg_cannot_send_are_rejected_alone(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("s")
    schemas.append(schema)
    dest = make(schema=schema, table="v", columns={"n": "bigint", "s": "text"})
    odd = {"n": 2, "s": object()}
    with_nul = {"n": 3, "s": "a\x00b"}

    with pytest.raises(PermanentError) as caught:
        dest.send_data("x", [{"n": 1, "s": "ok"}, odd, with_nul, {"n": 4, "s": "ok"}])

    assert caught.value.rows == [odd, with_nul]
    assert fetch(admin, f'select n from "{schema}".v order by n') == [(1,), (4,)]


DOC = Path(__file__).parents[2] / "docs" / "destinations" / "postgres.md"


def test_the_documented_toml_example_builds_a_destination() -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert block is not None
    table = tomllib.loads(block.group(1))["destinations"]["db"]
    assert table.pop("type") == "postgres"
    table.pop("retry")

    dest = PostgresDestination(**table)

    assert "secret" not in repr(dest)
    assert "datalogger:***@127.0.0.1" in repr(dest)


def test_the_documented_options_match_the_signature() -> None:
    options = DOC.read_text().split("## Options")[1].split("\n#")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", options, re.MULTILINE))
    parameters = inspect.signature(PostgresDestination).parameters
    assert set(rows) == set(parameters)
    for name, parameter in parameters.items():
        if parameter.default is not None and name != "application_name":
            assert rows[name].strip() == f"`{json.dumps(parameter.default)}`", name


# ---- the fast write path: binary and text COPY, caches


def test_binary_and_text_copies_store_the_same_values(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("bin")
    schemas.append(schema)
    dest = make(schema=schema, table="t")
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    plain = [{"i": 1, "f": 1.5, "s": "a", "b": True, "ts": aware, "j": {"k": [1, 2]}}]  # binary-able
    mixed = [{"i": 2, "f": 2.5, "s": "b", "b": False, "ts": aware, "j": {"k": "x"}, "extra": None}]
    assert dest.send_data("t", plain) == 1
    assert dest.send_data("t", mixed) == 1
    rows = fetch(admin, f'select i, f, s, b, ts, j from "{schema}"."t" order by i')
    assert rows == [(1, 1.5, "a", True, aware, {"k": [1, 2]}), (2, 2.5, "b", False, aware, {"k": "x"})]


@pytest.mark.parametrize("conflict_key", [None, ["i"]], ids=["copy", "staged"])
def test_binary_copy_data_sent_in_pieces_stores_every_row_exactly(
    make: Make,
    admin: psycopg.Connection[Any],
    schemas: list[str],
    monkeypatch: pytest.MonkeyPatch,
    conflict_key: list[str] | None,
) -> None:
    # Binary rows go straight to psycopg's row formatter, the data sent every FLUSH_BYTES:
    # with a tiny FLUSH_BYTES a chunk is many pieces, NULLs and JSON included.
    formatted: list[int] = []
    format_row = _pg_copy._format_row_binary
    assert format_row is not None, "this psycopg has no binary row formatter: Copy.write_row is used"

    def counting(row: Any, transformer: Any, out: bytearray) -> None:
        formatted.append(1)
        format_row(row, transformer, out)

    monkeypatch.setattr(_pg_copy, "_format_row_binary", counting)
    monkeypatch.setattr(_pg_copy, "FLUSH_BYTES", 100)
    schema = unique_name("pieces")
    schemas.append(schema)
    dest = make(schema=schema, table="t", conflict_key=conflict_key)
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    chunk = [
        {"i": i, "f": i / 3, "s": f"é {i}" if i % 5 else None, "b": i % 2 == 0,
         "ts": aware + dt.timedelta(seconds=i), "j": {"k": [i, "x"]} if i % 7 else None}
        for i in range(500)
    ]
    assert dest.send_data("t", chunk) == 500
    assert len(formatted) == 500  # every row went through the formatter, none through write_row
    got = fetch(admin, f'select i, f, s, b, ts, j from "{schema}"."t" order by i')
    assert got == [(r["i"], r["f"], r["s"], r["b"], r["ts"], r["j"]) for r in chunk]


def test_int_too_large_for_an_integer_column_is_rejected_not_mangled(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("ovf")
    schemas.append(schema)
    dest = make(schema=schema, table="t", columns={"id": "bigint", "small": "integer"})
    with pytest.raises(PermanentError) as caught:
        dest.send_data("t", [{"id": 1, "small": 5}, {"id": 2, "small": 2**40}])
    assert caught.value.rows == [{"id": 2, "small": 2**40}]
    assert fetch(admin, f'select id, small from "{schema}"."t"') == [(1, 5)]


def test_a_column_added_by_someone_else_is_found_without_auto_create(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("add")
    schemas.append(schema)
    admin.execute(f'create schema "{schema}"')
    admin.execute(f'create table "{schema}"."t" (id bigint)')
    dest = make(schema=schema, table="t", auto_create=False)
    assert dest.send_data("t", [{"id": 1}]) == 1
    admin.execute(f'alter table "{schema}"."t" add column note text')
    assert dest.send_data("t", [{"id": 2, "note": "later"}]) == 1
    assert fetch(admin, f'select id, note from "{schema}"."t" order by id') == [(1, None), (2, "later")]


def test_conflict_key_still_works_after_a_reconnect(
    make: Make, admin: psycopg.Connection[Any], schemas: list[str]
) -> None:
    schema = unique_name("rc")
    schemas.append(schema)
    app = unique_name("app")
    dest = make(schema=schema, table="k", conflict_key=["id"], application_name=app)
    chunk = [{"id": i, "v": i} for i in range(20)]
    assert dest.send_data("k", chunk) == 20
    admin.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
        [app],
    )
    assert dest.send_data("k", [*chunk, {"id": 20, "v": 20}]) == 1
    assert count(admin, schema, "k") == 21
