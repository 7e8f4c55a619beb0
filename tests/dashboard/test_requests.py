"""The dashboard's requests: one row per request from history and live, the same numbers as
`datalogger analytics`, and history read from the real SQLite and PostgreSQL destinations."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from datalogger.analytics import RequestLog, format_ms, render_summary, summarize
from datalogger.config import load_config
from datalogger.dashboard.requests import (
    HistorySource,
    RequestStore,
    analytics_view,
    history_source,
    series,
)
from datalogger.destinations.sqlite import SqliteDestination
from datalogger.exceptions import ConfigError, DataLoggerError
from tests.services import postgres_dsn_or_skip, unique_name

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(i: int, minutes_ago: float, path: str = "/", status: int = 200) -> RequestLog:
    return RequestLog.create(
        method="GET",
        path=path,
        status_code=status,
        duration_ms=float(i % 17 + 1),
        user_agent="Mozilla/5.0 (iPhone) Mobile" if i % 4 == 0 else "Mozilla/5.0 (X11)",
        ip="192.0.2.1",
        salt="s",
        referer="https://ref.example/" if i % 5 == 0 else None,
        session_id=f"session{i:010d}",
        session_page_views=1,
        inserted_at=NOW - timedelta(minutes=minutes_ago),
    )


def events(count: int = 90) -> list[RequestLog]:
    paths = ["/", "/a", "/b", "/<b>x</b>"]
    return [event(i, minutes_ago=i * 0.5, path=paths[i % 4], status=404 if i % 9 == 0 else 200)
            for i in range(count)]


def test_history_and_live_count_each_request_once() -> None:
    everything = events()
    stored = [e.to_row() for e in everything[:60]]
    for row in stored:  # as the SQLite destination gives them back: ISO text
        row["inserted_at"] = row["inserted_at"].isoformat()
    reads: list[datetime | None] = []

    def load(since: datetime | None) -> list[dict[str, Any]]:
        reads.append(since)
        return [dict(row) for row in stored]

    store = RequestStore(HistorySource(load, "test"))
    for live in everything[40:]:  # 20 of them are also in the history
        store.add_event(live)
    store.load_history(NOW - timedelta(hours=1), NOW.timestamp())
    store.load_history(NOW - timedelta(minutes=5), NOW.timestamp())  # reads back to the hour
    assert reads == [NOW - timedelta(hours=1)] * 2
    assert len(store) == 90 and store.live_received == 50 and store.history_reads == 2
    assert store.covers(NOW - timedelta(minutes=30)) and not store.covers(NOW - timedelta(hours=2))
    view = analytics_view(store.rows_since(None), "all", NOW)
    assert view["requests"] == 90
    assert view["p99"] == format_ms(summarize([e.to_row() for e in everything]).p99_ms)


def test_a_failing_history_read_is_kept_and_nothing_breaks() -> None:
    def load(since: datetime | None) -> list[dict[str, Any]]:
        raise DataLoggerError("cannot read table 'requests'")

    store = RequestStore(HistorySource(load, "test"))
    store.load_history(None, 0.0)
    assert store.history_error == "cannot read table 'requests'"
    assert store.history_loaded_at is None and len(store) == 0


def test_max_rows_keeps_the_newest_and_says_which_windows_are_incomplete() -> None:
    store = RequestStore(None, max_rows=30)
    for e in events(90):  # newest first: minutes ago 0, 0.5, ... 44.5
        store.add_event(e)
    assert len(store) == 30
    kept = store.rows_since(None)
    assert max(NOW - r["inserted_at"] for r in kept) == timedelta(minutes=14.5)
    assert store.complete(NOW - timedelta(minutes=14.5))
    assert not store.complete(NOW - timedelta(minutes=15))
    assert not store.complete(None)
    store.forget_before(NOW - timedelta(minutes=10))
    assert len(store) == 21 and store.complete(None)


def test_the_page_numbers_are_those_of_datalogger_analytics() -> None:
    rows = [e.to_row() for e in events()]
    for window, minutes in (("15m", 15), ("1h", 60), ("all", None)):
        since = NOW - timedelta(minutes=minutes) if minutes else None
        view = analytics_view(list(rows), window, NOW)
        summary = summarize(rows, now=NOW, since=since)
        assert view["requests"] == summary.requests
        assert (view["p50_ms"], view["p95_ms"], view["p99_ms"]) == (
            summary.p50_ms, summary.p95_ms, summary.p99_ms
        )
        assert view["top_paths"] == summary.top_paths
        assert view["status_classes"] == sorted(summary.status_classes.items())
        assert view["devices"] == list(summary.devices.items())
        assert view["top_referers"] == summary.top_referers
        printed = io.StringIO()
        Console(file=printed, width=200).print(render_summary(summary))
        for text in (view["p50"], view["p95"], view["p99"]):
            assert text in printed.getvalue()
    assert analytics_view(rows, "15m", NOW)["requests"] == 31  # 0, 0.5, ... 15 minutes ago


def test_series_is_summarize_per_bucket() -> None:
    rows = [e.to_row() for e in events()]
    start = NOW - timedelta(minutes=15)
    out = series([r for r in rows if r["inserted_at"] >= start], start, NOW)
    assert out["step"] == 15 and len(out["t"]) == 60
    assert out["t"][0] == start.timestamp()
    assert sum(rate * out["step"] for rate in out["rps"]) == pytest.approx(31)
    for index, begin in enumerate(out["t"]):
        inside = [r for r in rows if begin <= r["inserted_at"].timestamp() < begin + 15]
        if index == 59:
            inside += [r for r in rows if r["inserted_at"] == NOW]
        expected = summarize(inside)
        assert out["rps"][index] == expected.requests / 15
        assert (out["p50"][index], out["p99"][index]) == (expected.p50_ms, expected.p99_ms)
    empty = series([], None, NOW)
    assert set(empty["p50"]) == {None} and sum(empty["rps"]) == 0


def test_history_from_the_sqlite_destination(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    config = load_config(
        {
            "destinations": {
                "files": {"type": "jsonl", "directory": str(tmp_path / "out")},
                "db": {"type": "sqlite", "path": str(db), "table": "t_{topic}"},
            }
        }
    )
    source = history_source(config, "requests")
    assert source is not None and source.description == "SQLite destination 'db', table 't_requests'"
    destination = SqliteDestination(path=str(db), table="t_{topic}")
    destination.send_data("requests", [e.to_row() for e in events()])
    destination.close()
    rows = source.load(NOW - timedelta(minutes=15))
    assert len(rows) == 31 and all(isinstance(r["inserted_at"], datetime) for r in rows)
    with pytest.raises(ConfigError, match="'files' is not a SQLite or PostgreSQL destination"):
        history_source(config, "requests", "files")
    only_files = load_config({"destinations": {"f": {"type": "jsonl", "directory": str(tmp_path)}}})
    assert history_source(only_files, "requests") is None


@pytest.mark.integration
def test_history_from_the_postgres_destination() -> None:
    psycopg = pytest.importorskip("psycopg")
    from datalogger.destinations.postgres import PostgresDestination

    dsn = postgres_dsn_or_skip()
    schema = unique_name("dash")
    config = load_config(
        {"destinations": {"pg": {"type": "postgres", "dsn": dsn, "schema": schema}}}
    )
    destination = PostgresDestination(dsn=dsn, schema=schema)
    try:
        destination.send_data("requests", [e.to_row() for e in events()])
        source = history_source(config, "requests")
        assert source is not None
        assert source.description == f"PostgreSQL destination 'pg', table {schema}.requests"
        assert dsn not in source.description
        rows = source.load(NOW - timedelta(minutes=15))  # a parameter of a fixed query
        assert len(rows) == 31
        view = analytics_view(rows, "15m", NOW)
        assert view["requests"] == 31
        assert view["top_paths"] == summarize(rows, now=NOW, since=NOW - timedelta(minutes=15)).top_paths
    finally:
        destination.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
