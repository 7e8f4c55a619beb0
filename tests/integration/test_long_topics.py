"""Every topic that passes validation works with every built-in destination (multiprocTCPBase)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from datalogger.deadletters import DeadLetterStore
from datalogger.names import file_name, sql_identifier
from datalogger.testing import read_captured
from tests.integration.test_influxdb_tree import database as database
from tests.integration.test_influxdb_tree import server as server
from tests.integration.test_postgres_tree import StartNode, count_rows, scalar
from tests.integration.test_postgres_tree import dsn as dsn
from tests.integration.test_postgres_tree import schemas as schemas
from tests.services import unique_name

pytestmark = pytest.mark.integration

#: Lengths at the edges: one character, PostgreSQL's 63 bytes and one more, the file-name
#: threshold, the longest topic; and a twin of the longest that differs only at its end.
TOPICS = ["a", "b" * 63, "c" * 64, "d" * 200, "e" * 255, "e" * 254 + "f"]


def test_topics_of_1_to_255_characters_reach_every_built_in_destination(
    tmp_path: Path,
    start_node: StartNode,
    dsn: str,
    schemas: list[str],
    server: tuple[str, int, int],
    database: str,
) -> None:
    schema = unique_name("long")
    schemas.append(schema)
    host, http_port, _ = server
    out = tmp_path / "out"
    dl = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "destinations": {
                "pg": {"type": "postgres", "dsn": dsn, "schema": schema},
                "lite": {"type": "sqlite", "path": str(out / "data.db")},
                "files": {"type": "jsonl", "directory": str(out / "jsonl")},
                "influx": {
                    "type": "influxdb",
                    "database": database,
                    "host": host,
                    "http_port": http_port,
                },
                "console": {"type": "console", "stream": "stderr"},
                # a tiny memory bound: chunks are read back from the log (directories named after the topic)
                "memory": {"type": "memory", "directory": str(out / "memory"), "max_buffered_rows": 1},
            },
        }
    )
    for n, topic in enumerate(TOPICS):
        for chunk in range(3):
            dl.log(topic, [{"n": n, "chunk": chunk, "i": i} for i in range(2)])
    dl.flush(timeout=60)

    stats = dl.stats()["topics"]
    for topic in TOPICS:
        for destination in ("pg", "lite", "files", "influx", "console", "memory"):
            lane = stats[topic][destination]
            assert (lane["delivered"], lane["dead_lettered"]) == (6, 0), (len(topic), destination)
    assert list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters()) == []

    twins = TOPICS[-2:]
    # PostgreSQL: names beyond 63 bytes are shortened with a hash; the twins get two tables
    tables = {sql_identifier(topic) for topic in TOPICS}
    assert len(tables) == len(TOPICS)
    for n, topic in enumerate(TOPICS):
        assert count_rows(dsn, schema, sql_identifier(topic)) == 6
        query = sql.SQL("select min(n), max(n) from {}").format(
            sql.Identifier(schema, sql_identifier(topic))
        )
        assert scalar(dsn, query) == n
    # SQLite: any length, one table per topic
    with sqlite3.connect(out / "data.db") as conn:
        for n, topic in enumerate(TOPICS):
            found = conn.execute(f'select distinct n from "{topic}"').fetchall()
            assert found == [(n,)]
    # JSONL: files named by file_name(), the twins in two files
    files = sorted(p.name for p in (out / "jsonl").iterdir())
    assert files == sorted(file_name(topic) + ".jsonl" for topic in TOPICS)
    assert all(len(name.encode()) <= 255 for name in files)
    for n, topic in enumerate(twins, start=len(TOPICS) - 2):
        lines = (out / "jsonl" / (file_name(topic) + ".jsonl")).read_text().splitlines()
        assert {json.loads(line)["n"] for line in lines} == {n}
    # memory: read back by topic
    for n, topic in enumerate(TOPICS):
        assert {row["n"] for row in read_captured(str(out / "memory"), topic)} == {n}
    # InfluxDB: a measurement per topic
    influx = dl.destination("influx")
    for topic in TOPICS:
        series: Any = influx.query(f'SELECT count("i") FROM "{topic}"')
        assert series[0]["values"][0][1] == 6
    # the write-ahead log's directories: short enough, distinct, each telling its topic
    wal = [p for p in (tmp_path / "state" / "wal").iterdir()]
    assert sorted(p.name for p in wal) == sorted(file_name(topic) for topic in TOPICS)
