"""The dashboard in a real headless browser (Debian's chromium, driven by Selenium).

One browser session on the example app of ``examples/dashboard_app.py`` (the
dashboard mounted under ``/dashboard``): 200 requests go through the analytics
middleware and the page counts them to 200 without a reload; hostile paths and
referers show as text, never as markup; a destination goes down and its row
turns red; the page's numbers equal ``datalogger analytics`` and ``stats()``;
a screenshot is kept in ``tests/artifacts/dashboard.png`` (and, with
``DATALOGGER_DOCS_SCREENSHOT=1``, in ``docs/img/dashboard.png``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

import datalogger
from datalogger.analytics import cli as analytics_cli
from datalogger.analytics import format_ms, load_rows_sqlite, parse_since, summarize
from tests.services import chromium_or_skip

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
WINDOW = "15m"
XSS_PATH = "/<img src=x onerror=window.__xss=1>"
XSS_REFERER = "https://evil.example/<script>window.__xss=2</script>"
XSS_TOPIC = "<img src=x onerror=window.__xss=3>"
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Safari/604.1",
]
REFERERS = ["https://news.example/", "https://search.example/?q=datalogger", None]


def example() -> ModuleType:
    """examples/dashboard_app.py, imported from its path."""
    path = ROOT / "examples" / "dashboard_app.py"
    spec = importlib.util.spec_from_file_location("dashboard_app_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def browser() -> Any:
    """A headless chromium (the system's: no browser download) with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="datalogger-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(service=Service(driver), options=options)
    web.profile_dir = profile  # type: ignore[attr-defined]
    return web


def request(base: str, path: str, agent: str, referer: str | None) -> int:
    headers = {"User-Agent": agent}
    if referer:
        headers["Referer"] = referer
    url = base + urllib.parse.quote(path, safe="/")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def table(web: Any, table_id: str) -> list[tuple[str, str]]:
    """(name, count) rows of one of the page's count tables, as text."""
    rows = web.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))"
        ".map(tr => Array.from(tr.cells).map(td => td.textContent));",
        table_id,
    )
    return [(r[0], r[1]) for r in rows if len(r) == 2]


def lane(web: Any, name: str) -> dict[str, Any] | None:
    """The pipeline row ``topic/destination``: its state, cells and background colour."""
    return web.execute_script(
        "const tr = Array.from(document.querySelectorAll('#lanes tbody tr'))"
        "  .find(r => r.dataset.lane === arguments[0]);"
        "if (!tr) return null;"
        "return {state: tr.dataset.state, cells: Array.from(tr.cells).map(td => td.textContent),"
        "        background: getComputedStyle(tr).backgroundColor};",
        name,
    )


def text(web: Any, element_id: str) -> str:
    return str(web.execute_script("return document.getElementById(arguments[0]).textContent", element_id))


def cli_analytics(db: Path) -> str:
    """What ``datalogger analytics --db DB --since 15m`` prints."""
    out = io.StringIO()
    args = argparse.Namespace(db=str(db), dsn=None, table="requests", schema="public", since=WINDOW)
    assert analytics_cli.run(args, console=Console(file=out, width=200)) == 0
    return out.getvalue()


def plant_hostile_dead_letter(data_dir: Path) -> None:
    """A dead letter whose record names a topic with markup, as a local user who can write
    the data directory could leave (the store checks file names, not what records say)."""
    from datalogger.records import RecordFile

    folder = data_dir / "dead_letters" / "db"
    folder.mkdir(parents=True)
    now = time.time()
    record = {
        "id": "f" * 32, "topic": XSS_TOPIC, "destination": "db", "rows": [{"x": 1}],
        "reason": "<b>not bold</b>", "attempts": 1,
        "first_attempt_at": now, "last_attempt_at": now, "created_at": now,
    }
    with RecordFile(folder / "planted.dl", fsync="always") as file:
        file.append(record)


def test_dashboard_in_a_real_browser(tmp_path: Path, start_node: Any) -> None:
    switch = tmp_path / "switch"
    switch.mkdir()
    db = tmp_path / "app.db"
    dl: datalogger.DataLogger = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "health_failing_after": 1.0,
            "destinations": {
                "db": {"type": "sqlite", "path": str(db)},
                "orders": {
                    "type": "tests.dests:Switchable",
                    "directory": str(switch),
                    "prefix": "orders.",
                    "retry": {"max_attempts": 1000, "initial_delay": 0.2, "max_delay": 0.5},
                },
            },
            "dashboard": {"refresh": 0.3, "window": WINDOW},
        }
    )
    dl.log("orders.eu", [{"order": 1}])
    plant_hostile_dead_letter(tmp_path / "state")
    web = browser()
    served = serve(example().build_app(dl))
    base = next(served)
    try:
        # the mount prefix without its slash is redirected, and the page follows the stream
        web.get(base + "/dashboard")
        assert web.current_url == base + "/dashboard/"
        wait_for(lambda: text(web, "connection") == "live", 20, "the event stream")
        web.execute_script("window.__sameDocument = 'yes';")
        assert text(web, "requests") == "0"

        # 200 requests through the middleware, 2 of them with markup in the path or referer
        statuses = [request(base, XSS_PATH, AGENTS[0], XSS_REFERER) for _ in range(2)]
        paths = ["/", "/about", "/products", "/missing"]
        for i in range(198):
            statuses.append(request(base, paths[i % 4], AGENTS[i % 3], REFERERS[i % 3]))
        assert len(statuses) == 200
        wait_for(lambda: text(web, "requests") == "200", 30, "the page to count 200 requests")
        assert web.execute_script("return window.__sameDocument") == "yes", "the page reloaded"
        assert web.execute_script("return window.__xss") is None, "markup from a request ran"
        assert (XSS_PATH, "2") in table(web, "top-paths")
        assert (XSS_REFERER, "2") in table(web, "top-referers")
        assert not web.find_elements("css selector", "#top-paths img, #top-referers script")
        planted = lane(web, f"{XSS_TOPIC}/db")  # a topic name with markup: text, and red
        assert planted is not None and planted["cells"][0] == XSS_TOPIC, planted
        assert planted["state"] == "unhealthy" and planted["cells"][8] == "1 (1 rows)"
        assert not web.find_elements("css selector", "#lanes img, #problems img, #problems b")

        # the page's numbers are those of `datalogger analytics` and of stats()
        dl.flush(timeout=30)
        stats = dl.stats()["topics"]
        flushed = time.time()
        wait_for(
            lambda: float(web.execute_script("return document.body.dataset.generatedAt")) > flushed + 0.5,
            10,
            "a snapshot made after the flush",
        )
        now = datetime.now(UTC)
        since = now - parse_since(WINDOW)
        summary = summarize(load_rows_sqlite(db, "requests", since), now=now, since=since)
        assert summary.requests == 200
        page = {name: text(web, name) for name in ("requests", "p50", "p95", "p99")}
        assert page == {
            "requests": "200",
            "p50": format_ms(summary.p50_ms),
            "p95": format_ms(summary.p95_ms),
            "p99": format_ms(summary.p99_ms),
        }
        printed = cli_analytics(db)
        overview = re.search(r"│\s*(\d+)\s*│\s*([\d.]+ ms)\s*│\s*([\d.]+ ms)\s*│\s*([\d.]+ ms)\s*│", printed)
        assert overview is not None, printed
        assert list(overview.groups()) == [page["requests"], page["p50"], page["p95"], page["p99"]]
        assert table(web, "top-paths") == [(p, str(n)) for p, n in summary.top_paths]
        assert table(web, "status-classes") == [(c, str(n)) for c, n in summary.status_classes.items()]
        assert table(web, "devices") == [(d, str(n)) for d, n in summary.devices.items()]
        assert table(web, "top-referers") == [(r, str(n)) for r, n in summary.top_referers]
        for path, count in summary.top_paths:
            if path != XSS_PATH:  # rich wraps the long one over lines
                assert re.search(rf"│ {re.escape(path)}\s*│\s*{count} │", printed), path
        requests_db = lane(web, "requests/db")
        assert requests_db is not None
        cells = requests_db["cells"]
        counters = stats["requests"]["db"]
        assert (cells[3], cells[4], cells[5], cells[6]) == (
            str(counters["received"]),
            str(counters["delivered"]),
            str(counters["failed"]),
            str(counters["retried"]),
        )
        assert counters["delivered"] == 200
        assert cells[9] == str(counters["logged_seq"] - counters["settled_seq"]) == "0"

        # a destination goes down: its row turns red once `datalogger health` would fail
        (switch / "down").touch()
        dl.log("orders.us", [{"order": 2}])
        red = wait_for(
            lambda: (row := lane(web, "orders.us/orders")) and row["state"] == "unhealthy" and row,
            30,
            "the failing destination's row to turn red",
        )
        assert red["background"] == "rgb(254, 226, 226)", red
        assert "destination is down" in red["cells"][13]
        assert lane(web, "orders.us/db")["state"] == "ok"  # type: ignore[index]
        assert lane(web, "orders.eu/orders")["state"] == "ok"  # type: ignore[index]
        assert text(web, "health").startswith("unhealthy")

        # nothing on the page broke the Content-Security-Policy or failed to load
        severe = [e for e in web.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe

        ARTIFACTS.mkdir(exist_ok=True)
        for _ in range(2):  # the height depends on the width the page is laid out in
            height = int(web.execute_script("return document.documentElement.scrollHeight"))
            web.set_window_size(1400, min(height + 140, 2400))
            time.sleep(0.3)
        shot = ARTIFACTS / "dashboard.png"
        assert web.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("DATALOGGER_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(shot, DOCS_SCREENSHOT)
    finally:
        web.quit()
        shutil.rmtree(web.profile_dir, ignore_errors=True)
        for _ in served:
            pass
        (switch / "down").unlink(missing_ok=True)
