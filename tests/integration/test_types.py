"""Every promised type survives log() -> write-ahead log -> destination, on multiprocTCPBase,
and each built-in destination writes it the way its page says; rows without a time are
InfluxDB points of their own."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from tests.integration.test_influxdb_tree import database as database
from tests.integration.test_influxdb_tree import influx_config
from tests.integration.test_influxdb_tree import server as server
from tests.integration.test_postgres_tree import StartNode
from tests.integration.test_postgres_tree import dsn as dsn
from tests.integration.test_postgres_tree import schemas as schemas
from tests.services import unique_name

pytestmark = pytest.mark.integration

PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE = timezone(timedelta(hours=-5))
UID = UUID("12345678-1234-5678-1234-567812345678")
AWARE = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=MINUS_FIVE)
ROW: dict[str, Any] = {
    "i": 7,
    "f": 0.25,
    "b": True,
    "s": "text é",
    "dec": Decimal("12345678901234567890.123456789"),
    "uid": UID,
    "day": date(2024, 5, 6),
    "clock": time(7, 8, 9, 123456),
    "clock_tz": time(7, 8, 9, tzinfo=PLUS_TWO),
    "took": timedelta(days=1, seconds=2, microseconds=3),
    "naive": datetime(2024, 5, 6, 7, 8, 9, 123456),
    "aware": AWARE,
    "blob": b"\x00\xffbin",
    "nested": {"list": [1, "two", {"d": Decimal("1.5"), "when": date(2024, 1, 1)}], "u": UID},
}
#: The nested value as JSON text holds it (datalogger.destinations._values).
NESTED_JSON = {"list": [1, "two", {"d": "1.5", "when": "2024-01-01"}], "u": str(UID)}


def test_every_type_round_trips_to_postgres(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    schema = unique_name("types")
    schemas.append(schema)
    cfg = {
        "data_dir": str(tmp_path / "state"),
        "destinations": {"pg": {"type": "postgres", "dsn": dsn, "schema": schema, "table": "t"}},
    }
    dl = start_node(cfg)
    dl.log("types", ROW)
    dl.flush(timeout=30)
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(sql.SQL("select * from {}").format(sql.Identifier(schema, "t")))
        names = [column.name for column in cur.description or ()]
        (values,) = cur.fetchall()
        types = dict(
            conn.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = %s and table_name = 't'",
                (schema,),
            ).fetchall()
        )
    got = dict(zip(names, values, strict=True))
    assert got == {**ROW, "nested": NESTED_JSON}
    assert got["aware"].utcoffset() is not None and got["naive"].tzinfo is None
    assert types["dec"] == "numeric" and types["uid"] == "uuid" and types["took"] == "interval"
    assert types["naive"] == "timestamp without time zone"
    assert types["aware"] == "timestamp with time zone"
    assert types["clock_tz"] == "time with time zone" and types["blob"] == "bytea"


def test_every_type_round_trips_to_sqlite_and_jsonl(tmp_path: Path, start_node: StartNode) -> None:
    cfg = {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "lite": {"type": "sqlite", "path": str(tmp_path / "data.db")},
            "files": {"type": "jsonl", "directory": str(tmp_path / "jsonl")},
        },
    }
    dl = start_node(cfg)
    dl.log("types", ROW)
    dl.flush(timeout=30)
    with sqlite3.connect(tmp_path / "data.db") as conn:
        cur = conn.execute('select * from "types"')
        names = [column[0] for column in cur.description]
        got = dict(zip(names, cur.fetchone(), strict=True))
    text = {
        "dec": "12345678901234567890.123456789",
        "uid": str(UID),
        "day": "2024-05-06",
        "clock": "07:08:09.123456",
        "clock_tz": "07:08:09+02:00",
        "naive": "2024-05-06T07:08:09.123456",
    }
    # an aware datetime is the same instant (its offset is kept, unless replayed from the log)
    assert datetime.fromisoformat(got.pop("aware")) == AWARE
    without_aware = {key: value for key, value in ROW.items() if key != "aware"}
    assert got == {
        **without_aware,
        **text,
        "b": 1,
        "took": 86402.000003,
        "nested": json.dumps(NESTED_JSON, separators=(",", ":")),
    }
    # read back as the page says
    assert Decimal(got["dec"]) == ROW["dec"] and UUID(got["uid"]) == UID
    assert timedelta(seconds=got["took"]) == ROW["took"]
    (line,) = (tmp_path / "jsonl" / "types.jsonl").read_text().splitlines()
    written = json.loads(line)
    assert datetime.fromisoformat(written.pop("aware")) == AWARE
    assert written == {
        **without_aware,
        **text,
        "took": 86402.000003,
        "blob": base64.b64encode(ROW["blob"]).decode(),
        "nested": NESTED_JSON,
    }


def test_every_type_round_trips_to_influxdb(
    tmp_path: Path, start_node: StartNode, server: tuple[str, int, int], database: str
) -> None:
    dl = start_node(influx_config(tmp_path, server, database, tags=["day"]))
    before = datetime.now(UTC)
    dl.log("types", ROW)
    dl.flush(timeout=30)
    influx = dl.destination("influx")
    (series,) = influx.query('SELECT * FROM "types"')
    got = dict(zip(series["columns"], series["values"][0], strict=True))
    stamped = datetime.fromisoformat(got.pop("time").replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= stamped <= datetime.now(UTC)  # the time of log()
    assert datetime.fromisoformat(got.pop("aware")) == AWARE
    assert float(got.pop("dec")) == float(ROW["dec"])
    assert got == {
        "i": 7,
        "f": 0.25,
        "b": True,
        "s": "text é",
        "uid": str(UID),
        "day": "2024-05-06",  # a tag
        "clock": "07:08:09.123456",
        "clock_tz": "07:08:09+02:00",
        "took": 86402.000003,
        "naive": "2024-05-06T07:08:09.123456",
        "blob": base64.b64encode(ROW["blob"]).decode(),
        "nested": json.dumps(NESTED_JSON, separators=(",", ":")),
    }


def test_10000_rows_without_a_time_are_10000_points(
    tmp_path: Path, start_node: StartNode, server: tuple[str, int, int], database: str
) -> None:
    dl = start_node(influx_config(tmp_path, server, database, precision="us"))
    for chunk in range(10):
        dl.log("stamped", [{"host": "h1", "v": chunk * 1000 + i} for i in range(1000)])
    dl.flush(timeout=60)
    influx = dl.destination("influx")
    (series,) = influx.query('SELECT count("v") FROM "stamped"')
    assert series["values"][0][1] == 10_000
    (first,) = influx.query('SELECT first("v"), last("v") FROM "stamped"')
    assert first["values"][0][1:] == [0, 9999]  # in the order they were logged
