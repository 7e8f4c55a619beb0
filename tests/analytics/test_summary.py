"""Summaries of request rows, and reading the rows back from SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from datalogger.analytics import (
    RequestLog,
    load_rows_postgres,
    load_rows_sqlite,
    parse_since,
    percentile,
    render_summary,
    summarize,
)
from datalogger.exceptions import DataLoggerError
from tests.services import postgres_dsn_or_skip, unique_name

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148"
TABLET = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148"

# Twenty requests, one a minute from BASE. Durations are 1..20 ms, shuffled.
DURATIONS = [1, 8, 15, 2, 9, 16, 3, 10, 17, 4, 11, 18, 5, 12, 19, 6, 13, 20, 7, 14]
PATHS = ["/"] * 8 + ["/a"] * 5 + ["/b"] * 3 + ["/c"] * 4
STATUSES = [200] * 14 + [301, 301, 404, 404, 404, 503]
AGENTS = [DESKTOP, PHONE, DESKTOP, TABLET] * 5
REFERERS = [None] * 10 + ["https://a.test/"] * 6 + ["https://b.test/"] * 4


def events() -> list[RequestLog]:
    return [
        RequestLog.create(
            method="GET",
            path=PATHS[i],
            status_code=STATUSES[i],
            duration_ms=DURATIONS[i],
            user_agent=AGENTS[i],
            ip=f"192.0.2.{i}",
            salt="s",
            referer=REFERERS[i],
            session_id=f"session{i % 3:012d}",
            session_page_views=i // 3 + 1,
            inserted_at=BASE + timedelta(minutes=i),
        )
        for i in range(20)
    ]


def rows() -> list[dict[str, Any]]:
    return [event.to_row() for event in events()]


def test_summarize_matches_hand_computed_values() -> None:
    now = BASE + timedelta(hours=1)
    summary = summarize(rows(), now=now)
    assert summary.requests == 20
    assert summary.top_paths == [("/", 8), ("/a", 5), ("/c", 4), ("/b", 3)]
    assert summary.status_classes == {"2xx": 14, "3xx": 2, "4xx": 3, "5xx": 1}
    # nearest rank on 1..20: p50 -> rank 10, p95 -> rank 19, p99 -> rank 20
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms) == (10.0, 19.0, 20.0)
    assert summary.devices == {"desktop": 10, "mobile": 5, "tablet": 5}
    assert summary.top_referers == [("https://a.test/", 6), ("https://b.test/", 4)]
    assert summary.since == BASE
    assert summary.until == now


def test_summarize_since_window() -> None:
    summary = summarize(rows(), since=BASE + timedelta(minutes=10))
    # requests 10..19: durations 11 18 5 12 19 6 13 20 7 14 -> sorted 5 6 7 11 12 13 14 18 19 20
    assert summary.requests == 10
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms) == (12.0, 20.0, 20.0)
    assert summary.top_paths == [("/c", 4), ("/a", 3), ("/b", 3)]
    assert summary.status_classes == {"2xx": 4, "3xx": 2, "4xx": 3, "5xx": 1}
    assert summary.since == BASE + timedelta(minutes=10)


def test_summarize_empty_and_top_ten() -> None:
    empty = summarize([])
    assert empty.requests == 0
    assert (empty.p50_ms, empty.p95_ms, empty.p99_ms) == (None, None, None)
    assert empty.since is None and empty.top_paths == []
    many = [{"path": f"/p{n:02d}", "status_code": 200, "duration_ms": 1.0} for n in range(15)]
    many += [{"path": "/p14", "status_code": 999}]
    summary = summarize(many)
    assert len(summary.top_paths) == 10
    assert summary.top_paths[0] == ("/p14", 2)
    assert summary.top_paths[1:3] == [("/p00", 1), ("/p01", 1)]  # ties by path
    assert summary.status_classes == {"2xx": 15, "other": 1}
    assert summary.devices == {"desktop": 16}  # no device_type, no user agent
    assert summary.p99_ms == 1.0  # the row without a duration is left out


def test_percentile_nearest_rank() -> None:
    ten = [float(n) for n in range(1, 11)]
    assert [percentile(ten, p) for p in (10, 50, 90, 95, 99, 100)] == [1, 5, 9, 10, 10, 10]
    assert percentile([42.0], 50) == 42.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(ten, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        (" 1H30m ", timedelta(hours=1, minutes=30)),
    ],
)
def test_parse_since(text: str, expected: timedelta) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1", "1y", "-1h", "1.5h", "1 h", "0m", "abc", None])
def test_parse_since_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_since(text)


def test_render_summary() -> None:
    console = Console(record=True, width=120, color_system=None)
    console.print(render_summary(summarize(rows())))
    text = console.export_text()
    for expected in (
        "Top paths",
        "/a",
        "2xx",
        "14",
        "tablet",
        "https://a.test/",
        "10.0 ms",
        "19.0 ms",
        "20.0 ms",
    ):
        assert expected in text
    console.print(render_summary(summarize([])))
    assert "-" in console.export_text()


# ----------------------------------------------------------------------------- SQLite

COLUMNS = (
    "request_id TEXT, method TEXT, path TEXT, status_code INTEGER, duration_ms REAL,"
    " user_agent TEXT, remote_ip TEXT, referer TEXT, device_type TEXT, session_id TEXT,"
    " session_page_views INTEGER"
)


def write_sqlite(path: Path, table: str) -> list[RequestLog]:
    written = events()
    with sqlite3.connect(path) as conn:
        conn.execute(f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, {COLUMNS}, inserted_at)')
        for i, event in enumerate(written):
            row = event.to_row()
            # half as ISO strings, half as epoch seconds, as a destination may store them
            stamp: Any = row["inserted_at"].isoformat() if i % 2 else row["inserted_at"].timestamp()
            row["inserted_at"] = stamp
            names = ", ".join(row)
            marks = ", ".join(f":{name}" for name in row)
            conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', row)
    conn.close()
    return written


def test_load_rows_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "data.sqlite3"
    written = write_sqlite(db, "requests")
    loaded = load_rows_sqlite(db)
    assert [RequestLog.from_row(row) for row in loaded] == written
    assert all(row["inserted_at"].tzinfo is not None for row in loaded)
    recent = load_rows_sqlite(str(db), since=BASE + timedelta(minutes=15))
    assert [row["path"] for row in recent] == PATHS[15:]
    assert summarize(loaded, now=BASE) == summarize(rows(), now=BASE)


def test_load_rows_sqlite_other_table_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "web data.sqlite3"
    write_sqlite(db, "web.requests")
    assert len(load_rows_sqlite(db, table="web.requests")) == 20
    with pytest.raises(DataLoggerError, match="nope"):
        load_rows_sqlite(db, table="nope")
    with pytest.raises(DataLoggerError, match="no SQLite database"):
        load_rows_sqlite(tmp_path / "missing.sqlite3")


# ------------------------------------------------------------------------- PostgreSQL

PG_COLUMNS = (
    "id bigserial primary key, request_id text, method text, path text, status_code integer,"
    " duration_ms double precision, user_agent text, remote_ip text, referer text,"
    " device_type text, session_id text, session_page_views integer, inserted_at {kind}"
)


@pytest.fixture
def pg_schema() -> Any:
    psycopg = pytest.importorskip("psycopg")
    dsn = postgres_dsn_or_skip()
    schema = unique_name("analytics")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield dsn, schema
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def write_postgres(dsn: str, schema: str, table: str, kind: str) -> list[RequestLog]:
    import psycopg

    written = events()
    with psycopg.connect(dsn) as conn:
        conn.execute(f'CREATE TABLE "{schema}"."{table}" ({PG_COLUMNS.format(kind=kind)})')
        for event in written:
            row = event.to_row()
            if kind == "text":
                row["inserted_at"] = row["inserted_at"].isoformat()
            names = ", ".join(row)
            marks = ", ".join(f"%({name})s" for name in row)
            conn.execute(f'INSERT INTO "{schema}"."{table}" ({names}) VALUES ({marks})', row)
    return written


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["timestamptz", "text"])
def test_load_rows_postgres(pg_schema: tuple[str, str], kind: str) -> None:
    dsn, schema = pg_schema
    written = write_postgres(dsn, schema, "requests", kind)
    loaded = load_rows_postgres(dsn, schema=schema)
    assert sorted((RequestLog.from_row(row) for row in loaded), key=lambda e: e.inserted_at) == (
        written
    )
    recent = load_rows_postgres(dsn, schema, "requests", since=BASE + timedelta(minutes=15))
    assert sorted(row["path"] for row in recent) == sorted(PATHS[15:])
    assert summarize(loaded).p95_ms == 19.0


@pytest.mark.integration
def test_load_rows_postgres_missing_table_hides_password(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    secret_dsn = dsn.replace("postgres@", "postgres:hunter2@", 1)
    with pytest.raises(DataLoggerError) as caught:
        load_rows_postgres(secret_dsn, schema=schema, table="absent")
    assert "absent" in str(caught.value)
    assert "hunter2" not in str(caught.value)
