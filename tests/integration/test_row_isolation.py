"""Bad rows through the whole tree on multiprocTCPBase: only they are dead-lettered, each with
its own error, in PostgreSQL, SQLite and InfluxDB; schemas grow with the rows."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from datalogger.config import load_config
from datalogger.deadletters import DeadLetterStore
from datalogger.replay import replay
from tests.integration.test_influxdb_tree import database, influx_config, server  # noqa: F401
from tests.integration.test_postgres_tree import (
    StartNode,
    config,
    count_rows,
    lane,
    scalar,
)
from tests.integration.test_postgres_tree import dsn as dsn
from tests.integration.test_postgres_tree import schemas as schemas
from tests.services import unique_name

pytestmark = pytest.mark.integration


def dead_rows(state: Path, topic: str) -> list[tuple[dict[str, Any], str]]:
    """Every dead-lettered row of ``topic`` with its own error."""
    letters = DeadLetterStore(state / "dead_letters").letters(topic)
    return [pair for letter in letters for pair in zip(letter.rows, letter.row_errors(), strict=True)]


def quiet_replay(cfg: dict[str, Any]) -> Any:
    return replay(load_config(cfg), console=Console(file=open("/dev/null", "w")))


# -- PostgreSQL ----------------------------------------------------------------


def test_a_trigger_rejecting_10_of_30000_rows_dead_letters_exactly_those(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    schema = unique_name("trig")
    schemas.append(schema)
    table = sql.Identifier(schema, "readings")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("create table {} (id bigint, v double precision)").format(table))
        conn.execute(
            sql.SQL(
                "create function {}() returns trigger language plpgsql as $$ begin "
                "if new.id % 3000 = 1234 then raise exception 'id % is refused', new.id; end if; "
                "return new; end $$"
            ).format(sql.Identifier(schema, "refuse"))
        )
        conn.execute(
            sql.SQL("create trigger refuse before insert on {} for each row execute function {}()")
            .format(table, sql.Identifier(schema, "refuse"))
        )
    cfg = config(tmp_path, dsn=dsn, schema=schema, table="readings")
    dl = start_node(cfg)
    for chunk in range(300):
        dl.log("trig", [{"id": chunk * 100 + i, "v": i * 0.5} for i in range(100)])
    dl.flush(timeout=120)

    bad = {n for n in range(30_000) if n % 3000 == 1234}
    assert len(bad) == 10
    assert count_rows(dsn, schema, "readings") == 29_990
    dead = dead_rows(tmp_path / "state", "trig")
    assert sorted(row["id"] for row, _ in dead) == sorted(bad)
    assert all(f"id {row['id']} is refused" in error for row, error in dead)  # its own error
    stats = lane(dl, "trig")
    assert (stats["delivered"], stats["dead_lettered"]) == (29_990, 10)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop trigger refuse on {}").format(table))
    result = quiet_replay(cfg)
    assert (result.delivered_rows, result.failed_letters) == (10, 0)
    assert count_rows(dsn, schema, "readings") == 30_000
    assert dead_rows(tmp_path / "state", "trig") == []


def test_an_empty_first_row_then_new_keys_grow_the_table(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    schema = unique_name("evolve")
    schemas.append(schema)
    dl = start_node(
        config(tmp_path, dsn=dsn, schema=schema, table="t", retry={"initial_delay": 0.1})
    )
    dl.log("evolve", {})
    dl.log("evolve", {"a": 1})
    dl.log("evolve", [{"a": 2, "b": "x"}, {}])
    dl.log("evolve", {"c": 1.5})
    dl.flush(timeout=60)

    assert count_rows(dsn, schema, "t") == 5
    columns = scalar(
        dsn,
        "select array_agg(column_name::text order by ordinal_position) from "
        "information_schema.columns where table_schema = %s and table_name = 't'",
        (schema,),
    )
    assert columns == ["a", "b", "c"]
    assert dead_rows(tmp_path / "state", "evolve") == []
    assert lane(dl, "evolve")["delivered"] == 5


def test_without_auto_migrate_a_new_key_is_dead_lettered_with_the_reason(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    schema = unique_name("fixed")
    schemas.append(schema)
    dl = start_node(config(tmp_path, dsn=dsn, schema=schema, table="t", auto_migrate=False))
    dl.log("fixed", [{"a": 1}, {"a": 2}])
    dl.log("fixed", [{"a": 3}, {"a": 4, "extra": True}, {"a": "five"}])
    dl.flush(timeout=60)
    assert count_rows(dsn, schema, "t") == 3
    dead = dead_rows(tmp_path / "state", "fixed")
    assert [row for row, _ in dead] == [{"a": 4, "extra": True}, {"a": "five"}]
    assert "no column 'extra'" in dead[0][1] and "auto_migrate is false" in dead[0][1]
    assert "invalid input syntax for type bigint" in dead[1][1]


# -- SQLite ----------------------------------------------------------------------


def test_sqlite_isolates_bad_keys_and_refused_rows_and_stores_empty_rows(
    tmp_path: Path, start_node: StartNode
) -> None:
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as conn:
        conn.execute('create table "keys" (n integer, v real check (v >= 0))')
        conn.execute(
            'create trigger refuse before insert on "keys" when new.n % 1000 = 7 '
            "begin select raise(abort, 'seven is refused'); end"
        )
    cfg = {
        "data_dir": str(tmp_path / "state"),
        "destinations": {"db": {"type": "sqlite", "path": str(path)}},
    }
    dl = start_node(cfg)
    bad_keys: list[dict[str, Any]] = []
    expected_stored = 0
    for chunk in range(30):
        rows: list[dict[str, Any]] = [{"n": chunk * 100 + i, "v": float(i)} for i in range(100)]
        if chunk % 10 == 3:
            bad_keys += [{"n": -chunk, "": 1}, {"n": -chunk - 1000, "x\x00y": 2}]
            rows[50:50] = bad_keys[-2:]
            rows.insert(10, {})  # stored as a row of defaults
            expected_stored += 1
        if chunk == 12:
            rows[20]["v"] = -1.0  # the CHECK constraint refuses it
        dl.log("keys", rows)
    dl.flush(timeout=60)

    refused = {n for n in range(3000) if n % 1000 == 7} | {1220}
    expected_stored += 3000 - len(refused)
    with sqlite3.connect(path) as conn:
        assert conn.execute('select count(*) from "keys"').fetchone()[0] == expected_stored
        assert conn.execute('select count(*) from "keys" where n is null').fetchone()[0] == 3
    dead = dead_rows(tmp_path / "state", "keys")
    assert len(dead) == len(bad_keys) + len(refused)
    assert sorted(row["n"] for row, _ in dead if "n" in row and row["n"] >= 0) == sorted(refused)
    errors = {row["n"]: error for row, error in dead}
    assert "seven is refused" in errors[7] and "CHECK constraint failed" in errors[1220]
    assert all("cannot be a column name" in errors[row["n"]] for row in bad_keys)
    assert lane(dl, "keys", "db")["dead_lettered"] == len(dead)

    with sqlite3.connect(path) as conn:
        conn.execute("drop trigger refuse")
    result = quiet_replay(cfg)
    assert result.delivered_rows == 3  # the trigger's rows; -1.0 and the bad keys fail again
    remaining = dead_rows(tmp_path / "state", "keys")
    assert sorted(str(row) for row, _ in remaining) == sorted(
        str(row) for row in [*bad_keys, {"n": 1220, "v": -1.0}]
    )


# -- InfluxDB --------------------------------------------------------------------


def test_influxdb_lines_the_server_refuses_are_isolated(
    tmp_path: Path,
    start_node: StartNode,
    server: tuple[str, int, int],  # noqa: F811
    database: str,  # noqa: F811
) -> None:
    dl = start_node(influx_config(tmp_path, server, database))
    influx = dl.destination("influx")
    influx.post_query(
        f'CREATE RETENTION POLICY "hour" ON "{database}" DURATION 1h REPLICATION 1 DEFAULT'
    )
    now_ns = time.time_ns()
    dl.log("lines", {"time": now_ns, "v": 0.5, "host": "h"})  # v is a float field from now on
    dl.flush(timeout=30)
    conflicts, too_old = {105, 777, 1999}, {42, 1500}
    for chunk in range(20):
        rows = []
        for i in range(chunk * 100, chunk * 100 + 100):
            row: dict[str, Any] = {"time": now_ns + 1 + i, "host": f"h{i % 3}", "v": i * 0.5}
            if i in conflicts:
                row["v"] = f"text {i}"  # a field type conflict
            if i in too_old:
                row["time"] = 946_684_800 * 10**9 + i  # year 2000: beyond the retention policy
            rows.append(row)
        dl.log("lines", rows)
    dl.flush(timeout=120)

    dead = dead_rows(tmp_path / "state", "lines")
    by_time = {row["time"]: error for row, error in dead}
    assert len(dead) == len(conflicts) + len(too_old)
    for i in conflicts:
        assert "field type conflict" in by_time[now_ns + 1 + i]
    for i in too_old:
        assert "beyond retention policy" in by_time[946_684_800 * 10**9 + i]
    series = influx.query('SELECT count("v") FROM "lines"')
    assert series[0]["values"][0][1] == 1 + 2000 - len(conflicts) - len(too_old)
    stats = dl.stats()["topics"]["lines"]["influx"]
    assert stats["dead_lettered"] == len(dead)


def test_sqlite_an_empty_first_row_then_new_keys_grow_the_table(
    tmp_path: Path, start_node: StartNode
) -> None:
    path = tmp_path / "data.db"
    dl = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "destinations": {
                "db": {"type": "sqlite", "path": str(path), "retry": {"initial_delay": 0.1}}
            },
        }
    )
    dl.log("evolve", {})
    dl.log("evolve", {"a": 1})
    dl.log("evolve", [{"a": 2, "b": "x"}, {}])
    dl.log("evolve", {"c": 1.5})
    dl.flush(timeout=60)
    with sqlite3.connect(path) as conn:
        assert conn.execute('select count(*) from "evolve"').fetchone()[0] == 5
        columns = [row[1] for row in conn.execute('pragma table_info("evolve")')]
    assert columns == ["a", "b", "c"]
    assert dead_rows(tmp_path / "state", "evolve") == []
