"""Request analytics end to end, on a real multiprocTCPBase node with SQLite storage.

1,000 requests go through the WSGI middleware and 1,000 through the ASGI
middleware; a Subscription watches them live. Then the SQLite table, the live
events and the summary must all agree, and the ``datalogger analytics`` command
must report the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import attrs
import pytest

import datalogger
from datalogger import pubsub
from datalogger.analytics import (
    AnalyticsASGIMiddleware,
    AnalyticsWSGIMiddleware,
    RequestLog,
    load_rows_sqlite,
    percentile,
    summarize,
)
from datalogger.analytics import cli as analytics_cli

pytestmark = pytest.mark.timeout(180)

N = 1000
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1"
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PubSubHandle:
    """What the middleware needs: ``log`` and ``broadcast`` on a DataLogger."""

    def __init__(self, dl: datalogger.DataLogger) -> None:
        self.dl = dl

    def log(self, topic: str, data: Any) -> int:
        return self.dl.log(topic, data)

    def broadcast(self, event: RequestLog) -> None:
        pubsub.broadcast(self.dl, event)


def status_for(i: int) -> int:
    return 404 if i % 10 == 9 else 200


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    i = int(environ["PATH_INFO"].rsplit("/", 1)[1])
    code = status_for(i)
    start_response(
        f"{code} {'OK' if code == 200 else 'Not Found'}", [("Content-Type", "text/plain")]
    )
    return [b"hello"]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    i = int(scope["path"].rsplit("/", 1)[1])
    await send({"type": "http.response.start", "status": status_for(i), "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def run_wsgi(app: Any) -> None:
    for i in range(N):
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"] = f"/wsgi/{i % 7}/{i}"
        environ["HTTP_USER_AGENT"] = IPHONE if i % 4 == 0 else DESKTOP
        environ["REMOTE_ADDR"] = "198.51.100.7"
        if i % 5 == 0:
            environ["HTTP_REFERER"] = "https://example.com/"
        body = app(environ, lambda status, headers, exc_info=None: None)
        b"".join(body)
        body.close()


async def run_asgi(app: Any) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    for i in range(N):
        scope = {
            "type": "http",
            "method": "POST",
            "path": f"/asgi/{i % 3}/{i}",
            "scheme": "http",
            "headers": [(b"user-agent", DESKTOP.encode())],
            "client": ("203.0.113.50", 40000),
        }
        await app(scope, receive, send)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the 2,000 requests once; yield what the test checks."""
    base: Path = tmp_path_factory.mktemp("e2e")
    db = base / "analytics.db"
    dl = datalogger.start(
        {
            "data_dir": str(base / "state"),
            "destinations": {"db": {"type": "sqlite", "path": str(db)}},
        },
        admin_port=free_port(),
        make_default=False,
    )
    try:
        handle: Any = dl if hasattr(dl, "broadcast") else PubSubHandle(dl)
        wsgi = AnalyticsWSGIMiddleware(wsgi_app, handle, ip_salt="e2e")
        asgi = AnalyticsASGIMiddleware(asgi_app, handle, ip_salt="e2e")
        with pubsub.subscribe(dl, "requests", max_pending=5000) as sub:
            run_wsgi(wsgi)
            asyncio.run(run_asgi(asgi))
            dl.flush(timeout=60)
            events = list(sub.iter(timeout=2.0))
        yield {
            "db": db,
            "events": events,
            "rows": load_rows_sqlite(db, "requests"),
            "errors": wsgi.errors + asgi.errors,
        }
    finally:
        dl.shutdown()


def by_run(items: Iterable[Any], path_of: Any) -> dict[str, list[Any]]:
    runs: dict[str, list[Any]] = {"wsgi": [], "asgi": []}
    for item in items:
        runs[path_of(item).split("/")[1]].append(item)
    return runs


def test_middleware_made_no_errors(recorded: dict[str, Any]) -> None:
    assert recorded["errors"] == 0


def test_subscriber_got_every_request_of_each_middleware_once(recorded: dict[str, Any]) -> None:
    events: list[RequestLog] = recorded["events"]
    assert all(isinstance(e, RequestLog) for e in events)
    runs = by_run(events, lambda e: e.path)
    assert len(runs["wsgi"]) == N
    assert len(runs["asgi"]) == N
    assert len({e.request_id for e in events}) == 2 * N


def test_sqlite_holds_one_row_per_request_with_the_right_fields(recorded: dict[str, Any]) -> None:
    rows: list[dict[str, Any]] = recorded["rows"]
    names = {field.name for field in attrs.fields(RequestLog)}
    assert all(set(row) == names for row in rows)
    runs = by_run(rows, lambda r: r["path"])
    assert len(runs["wsgi"]) == N
    assert len(runs["asgi"]) == N
    # rows and live events describe the same requests, field for field
    stored = {RequestLog.from_row(dict(row)) for row in rows}
    assert stored == set(recorded["events"])
    wsgi_rows = runs["wsgi"]
    assert {r["method"] for r in wsgi_rows} == {"GET"}
    assert {r["method"] for r in runs["asgi"]} == {"POST"}
    assert Counter(r["status_code"] for r in wsgi_rows) == {200: 900, 404: 100}
    assert Counter(r["device_type"] for r in wsgi_rows) == {"mobile": 250, "desktop": 750}
    assert sum(1 for r in wsgi_rows if r["referer"] == "https://example.com/") == 200
    assert len({r["remote_ip"] for r in wsgi_rows}) == 1
    assert all("198.51.100.7" not in str(r.values()) for r in wsgi_rows)


def test_summary_matches_the_rows(recorded: dict[str, Any]) -> None:
    rows: list[dict[str, Any]] = recorded["rows"]
    summary = summarize(rows)
    assert summary.requests == 2 * N
    assert summary.status_classes == {"2xx": 1800, "4xx": 200}
    assert summary.devices == {"desktop": 1750, "mobile": 250}
    assert summary.top_referers == [("https://example.com/", 200)]
    durations = sorted(float(r["duration_ms"]) for r in rows)
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms) == (
        percentile(durations, 50),
        percentile(durations, 95),
        percentile(durations, 99),
    )
    paths = Counter(r["path"] for r in rows)
    assert summary.top_paths == sorted(paths.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert summary.since == min(r["inserted_at"] for r in rows)
    # the live events summarise to the same numbers
    live = summarize([e.to_row() for e in recorded["events"]], now=summary.until)
    assert attrs.evolve(live, since=summary.since) == summary


def analytics_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="datalogger")
    analytics_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["analytics", *argv])


def test_cli_prints_the_summary(
    recorded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert analytics_cli.run(analytics_args("--db", str(recorded["db"]), "--since", "1h")) == 0
    out = capsys.readouterr().out
    assert "2000" in out
    assert "4xx" in out and "1800" in out
    assert "https://example.com/" in out


def test_cli_reports_errors(
    recorded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert analytics_cli.run(analytics_args("--db", str(tmp_path / "missing.db"))) == 1
    assert "no SQLite database" in capsys.readouterr().err
    assert analytics_cli.run(analytics_args("--db", str(recorded["db"]), "--since", "soon")) == 2
    assert "not a duration" in capsys.readouterr().err
    assert analytics_cli.run(analytics_args("--db", str(recorded["db"]), "--table", "nope")) == 1
