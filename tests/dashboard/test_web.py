"""The dashboard's web layer, in process (httpx over ASGI) against a real node.

Read-only by default; actions only with the token, in a header, from the same origin; strict
headers on every response; windows from a fixed list; the page under a mount prefix.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import datalogger
import datalogger.dashboard
from datalogger.dashboard import Dashboard
from datalogger.dashboard.web import TOKEN_HEADER, build_app
from datalogger.deadletters import DeadLetterStore

TOKEN = "s3cret-token-for-tests"


def node_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {"db": {"type": "sqlite", "path": str(tmp_path / "app.db")}},
        "dashboard": {"window": "15m"},
    }


@pytest.fixture
def node(tmp_path: Path, start_node: Any) -> datalogger.DataLogger:
    dl: datalogger.DataLogger = start_node(node_config(tmp_path), base="simpleSystemBase")
    dl.log("green", [{"id": 1}, {"id": 2}])
    dl.flush()
    return dl


def client(app: Any, host: str = "127.0.0.1:8050") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def get(app: Any, path: str, **kwargs: Any) -> httpx.Response:
    async with client(app) as c:
        return await c.get(path, **kwargs)


async def post(app: Any, path: str, host: str = "127.0.0.1:8050", **kwargs: Any) -> httpx.Response:
    async with client(app, host) as c:
        return await c.post(path, **kwargs)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def read_only(node: datalogger.DataLogger) -> AsyncIterator[Any]:
    app = datalogger.dashboard.app(node)
    yield app
    app.state.dashboard.close()


@pytest.mark.anyio
async def test_page_and_snapshot_carry_strict_headers(read_only: Any, node: Any) -> None:
    page = await get(read_only, "/")
    assert page.status_code == 200 and "<title>datalogger dashboard</title>" in page.text
    script = await get(read_only, "/static/dashboard.js")
    assert script.status_code == 200 and "textContent" in script.text
    assert "innerHTML" not in script.text
    assert (await get(read_only, "/static/uPlot.iife.min.js")).status_code == 200
    for response in (page, script):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    snapshot = (await get(read_only, "/snapshot.json")).json()
    assert snapshot["window"] == "15m" and snapshot["actions"] is False
    lanes = {f"{r['topic']}/{r['destination']}": r for r in snapshot["pipeline"]["lanes"]}
    assert lanes["green/db"]["delivered"] == node.stats()["topics"]["green"]["db"]["delivered"] == 2
    # simpleSystemBase cannot follow pubsub: the page says so instead of failing
    assert snapshot["analytics"]["live"]["subscribed"] is False
    assert "simpleSystemBase" in snapshot["analytics"]["live"]["error"]


@pytest.mark.anyio
async def test_windows_come_from_a_fixed_list(read_only: Any) -> None:
    for window in ("5m", "1w", "all"):
        body = (await get(read_only, "/snapshot.json", params={"window": window})).json()
        assert body["window"] == window
    for hostile in ("1h'; DROP TABLE requests; --", "2h", "", "1h\x00"):
        response = await get(read_only, "/snapshot.json", params={"window": hostile})
        if hostile == "":
            assert response.json()["window"] == "15m"  # no window: the opening one
        else:
            assert response.status_code == 400, hostile
            assert "window must be one of" in response.json()["error"]
    assert (await get(read_only, "/events", params={"window": "2h"})).status_code == 400


@pytest.mark.anyio
async def test_read_only_has_no_actions(read_only: Any, node: Any) -> None:
    for path in ("/actions/shutdown", "/actions/replay"):
        response = await post(read_only, path, headers={TOKEN_HEADER: TOKEN})
        assert response.status_code in (404, 405)
    assert read_only.state.dashboard.token is None
    assert node.stats()["topics"]["green"]["db"]["delivered"] == 2  # still running


@pytest.mark.anyio
async def test_actions_need_the_token_in_a_header_from_the_same_origin(
    tmp_path: Path, node: Any
) -> None:
    store = DeadLetterStore(tmp_path / "state" / "dead_letters")
    store.add("blue", "db", [{"id": 7}, {"id": 8}], "boom", 5, time.time(), time.time())
    app = datalogger.dashboard.app(node, allow_actions=True, token=TOKEN)
    body = {"topic": "blue", "destination": "db"}
    try:
        snapshot = (await get(app, "/snapshot.json")).json()
        assert snapshot["actions"] is True
        blue = next(r for r in snapshot["pipeline"]["lanes"] if r["topic"] == "blue")
        assert blue["state"] == "unhealthy" and blue["dead_letters"] == 1
        refused = [
            {"json": body},  # no token
            {"json": body, "headers": {TOKEN_HEADER: TOKEN[:-1]}},  # a wrong one
            {"json": body, "headers": {TOKEN_HEADER: TOKEN + "x"}},
            {"json": body, "headers": {"Cookie": f"{TOKEN_HEADER}={TOKEN}"}},  # no cookie either
            {"json": body, "params": {"token": TOKEN}},
            {"json": body, "headers": {TOKEN_HEADER: TOKEN, "Origin": "http://evil.example"}},
        ]
        for kwargs in refused:
            response = await post(app, "/actions/replay", **kwargs)
            assert response.status_code == 403, kwargs
        assert store.summary()[0].letters == 1  # nothing was replayed
        assert (await get(app, "/actions/replay")).status_code == 405  # never by GET
        bad = await post(app, "/actions/replay", headers={TOKEN_HEADER: TOKEN},
                         json={"topic": "../etc", "destination": "db"})
        assert bad.status_code == 400 and "topic" in bad.json()["error"]

        done = await post(app, "/actions/replay", json=body,
                          headers={TOKEN_HEADER: TOKEN, "Origin": "http://127.0.0.1:8050"})
        assert done.status_code == 200, done.text
        assert done.json()["delivered_rows"] == 2 and done.json()["failed_letters"] == 0
        assert store.summary() == []
        with sqlite3.connect(tmp_path / "app.db") as conn:
            assert conn.execute('SELECT id FROM "blue" ORDER BY id').fetchall() == [(7,), (8,)]

        stopped = await post(app, "/actions/shutdown", headers={TOKEN_HEADER: TOKEN})
        assert stopped.status_code == 200 and stopped.json() == {"spilled_rows": 0}
        with pytest.raises(datalogger.NotRunning):
            node.stats()
        after = (await get(app, "/snapshot.json")).json()
        assert "shut down" in after["pipeline"]["node_error"]
    finally:
        app.state.dashboard.close()


@pytest.mark.anyio
async def test_mounted_under_a_prefix(node: Any) -> None:
    dashboard = Dashboard(node, subscribe=False)
    site = Starlette(routes=[Mount("/admin/datalogger", app=build_app(dashboard))])
    page = await get(site, "/admin/datalogger/")
    assert page.status_code == 200
    assert 'src="static/dashboard.js"' in page.text  # relative: works under any prefix
    assert (await get(site, "/admin/datalogger/static/dashboard.css")).status_code == 200
    snapshot = await get(site, "/admin/datalogger/snapshot.json", params={"window": "1h"})
    assert snapshot.json()["window"] == "1h"
    assert (await get(site, "/static/dashboard.js")).status_code == 404


@pytest.mark.anyio
async def test_host_names_are_checked_when_asked(node: Any) -> None:
    app = build_app(Dashboard(node, subscribe=False), allowed_hosts=["127.0.0.1", "localhost"])
    async with client(app, "127.0.0.1:8050") as ok:
        assert (await ok.get("/")).status_code == 200
    async with client(app, "rebound.evil.example:8050") as rebound:
        response = await rebound.get("/snapshot.json")
        assert response.status_code == 400
        assert "node" not in response.text


def test_snapshot_of_a_topic_name_and_paths_is_plain_data(node: Any) -> None:
    """The page gets JSON; the script writes it with textContent (see test_browser)."""
    dashboard = Dashboard(node, subscribe=False)
    dashboard.store.add_event(
        {"request_id": "r1", "path": "/<script>x</script>", "status_code": 200,
         "duration_ms": 1.0, "inserted_at": time.time()}
    )
    snapshot = dashboard.snapshot("5m")
    text = json.dumps(snapshot)
    assert "/<script>x</script>" in text
    assert snapshot["analytics"]["top_paths"] == [("/<script>x</script>", 1)]


def test_the_wheel_carries_every_static_file() -> None:
    """package-data lists the page, its script and uPlot with its licence: offline, no CDN."""
    import fnmatch
    import tomllib

    from datalogger.dashboard.web import STATIC_DIR

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["datalogger"]
    files = sorted(p.relative_to(STATIC_DIR.parent.parent).as_posix() for p in STATIC_DIR.iterdir())
    assert {"dashboard/static/uPlot.iife.min.js", "dashboard/static/uPlot.LICENSE"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
    page = (STATIC_DIR / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
