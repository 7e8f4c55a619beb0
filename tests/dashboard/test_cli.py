"""`datalogger dashboard` and `datalogger status` against a running node, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.analytics import RequestLog
from tests.conftest import free_port, kill_node

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def write_toml(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    config = {
        "data_dir": str(tmp_path / "state"),
        "destinations": {"db": {"type": "sqlite", "path": str(tmp_path / "app.db")}},
        "dashboard": {"refresh": 0.2, "window": "5m"},
    }
    toml = tmp_path / "node.toml"
    toml.write_text(
        f'data_dir = "{config["data_dir"]}"\n\n'
        f'[destinations.db]\ntype = "sqlite"\npath = "{tmp_path / "app.db"}"\n\n'
        '[dashboard]\nrefresh = 0.2\nwindow = "5m"\n'
    )
    return config, toml


def datalogger_command(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "datalogger", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def first_snapshot(url: str, deadline: float, ready: Any = bool) -> dict[str, Any]:
    """Follow the event stream until a snapshot satisfies ``ready``."""
    with urllib.request.urlopen(url, timeout=20) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        event = None
        while time.monotonic() < deadline:
            line = stream.readline().decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                snapshot = json.loads(line[6:])
                if ready(snapshot):
                    return snapshot
    raise AssertionError("no snapshot in time")


def run_node(toml: Path, admin: int) -> subprocess.Popen[str]:
    """``datalogger run`` in its own process, once it listens."""
    node = datalogger_command("run", "--config", str(toml), "--admin-port", str(admin))
    assert node.stdout is not None
    for line in node.stdout:
        if "running on" in line:
            return node
    raise AssertionError(f"the node did not start: {node.stderr.read() if node.stderr else ''}")


def test_dashboard_command_serves_a_running_node(tmp_path: Path) -> None:
    _, toml = write_toml(tmp_path)
    admin = free_port()
    node = run_node(toml, admin)
    proc = datalogger_command(
        "dashboard", "--config", str(toml), "--admin-port", str(admin), "--port", "0",
        "--allow-actions",
    )
    try:
        dl = datalogger.connect(admin, make_default=False)
        dl.log("green", [{"id": 1}, {"id": 2}, {"id": 3}])
        dl.flush()
        assert proc.stdout is not None
        headline = proc.stdout.readline()
        token_line = proc.stdout.readline()
        assert headline.startswith(f"dashboard of node 127.0.0.1:{admin} on http://127.0.0.1:"), headline
        url = headline.split(" on ", 1)[1].strip()
        token = token_line.removeprefix("actions token: ").strip()
        assert len(token) >= 30

        with urllib.request.urlopen(url, timeout=20) as page:
            assert b"<title>datalogger dashboard</title>" in page.read()
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        rebound = urllib.request.Request(url + "snapshot.json", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=20)
        assert refused.value.code == 400

        # a request broadcast and logged on the node reaches the page live, from another process
        event = RequestLog.create(method="GET", path="/live", status_code=201, duration_ms=2.5,
                                  session_id="s" * 20, session_page_views=1)
        dl.broadcast(event)
        dl.log("requests", event.to_row())
        deadline = time.monotonic() + 30
        snapshot = first_snapshot(
            url + "events?window=5m", deadline, lambda s: s["analytics"]["requests"] == 1
        )
        assert snapshot["window"] == "5m" and snapshot["actions"] is True
        assert snapshot["analytics"]["top_paths"] == [["/live", 1]]
        assert snapshot["analytics"]["p50"] == "2.5 ms"
        lanes = {f"{r['topic']}/{r['destination']}": r for r in snapshot["pipeline"]["lanes"]}
        assert lanes["green/db"]["delivered"] == dl.stats()["topics"]["green"]["db"]["delivered"] == 3
        assert snapshot["pipeline"]["dead_letters_checked"] is True
        dl.close()

        # the token shuts the node down; the page says at once that the node is gone
        shutdown = urllib.request.Request(
            url + "actions/shutdown", method="POST", headers={"X-Datalogger-Token": token}
        )
        with urllib.request.urlopen(shutdown, timeout=30) as answer:
            assert json.load(answer) == {"spilled_rows": 0}
        assert node.wait(timeout=30) == 0
        started = time.monotonic()
        with urllib.request.urlopen(url + "snapshot.json", timeout=20) as answer:
            assert "listen" in json.load(answer)["pipeline"]["node_error"]
        assert time.monotonic() - started < 5, "a stopped node is noticed at once"

        # the node comes back on its port: the page follows it again, live requests too
        node = run_node(toml, admin)
        again = datalogger.connect(admin, make_default=False)
        again.log("blue", [{"id": 1}])
        later = RequestLog.create(method="GET", path="/again", status_code=200, duration_ms=1.0,
                                  session_id="t" * 20, session_page_views=1)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            again.broadcast(later)  # until the dashboard has subscribed again
            with urllib.request.urlopen(url + "snapshot.json?window=5m", timeout=20) as answer:
                snapshot = json.load(answer)
            if snapshot["analytics"]["live"]["received"] >= 2 and snapshot["pipeline"]["lanes"]:
                break
            time.sleep(0.5)
        assert snapshot["pipeline"]["node_error"] is None
        assert [lane["topic"] for lane in snapshot["pipeline"]["lanes"]] == ["blue"]
        assert "/again" in dict(snapshot["analytics"]["top_paths"])
        again.shutdown()
        assert node.wait(timeout=30) == 0

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        for process in (proc, node):
            if process.poll() is None:
                process.kill()
                process.wait()
        kill_node(admin)


def test_dashboard_command_without_a_node_says_so() -> None:
    proc = datalogger_command("dashboard", "--admin-port", str(free_port()), "--port", "0")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no node answers on 127.0.0.1:" in err


def test_status_prints_narrow_text_into_a_pipe(tmp_path: Path, start_node: Any) -> None:
    config, _ = write_toml(tmp_path)
    admin = free_port()
    dl: datalogger.DataLogger = start_node(config, admin_port=admin)
    dl.log("green", [{"id": 1}, {"id": 2}])
    dl.flush()
    env = {**os.environ, "COLUMNS": "80"}
    proc = datalogger_command("status", "--admin-port", str(admin), env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert "green -> db  [ok]" in lines
    assert max(len(line) for line in lines) <= 80
    assert "delivered 2" in out and "lag 0" in out
    assert "┃" not in out and "│" not in out  # no table squeezed into a pipe
    as_json = datalogger_command("status", "--admin-port", str(admin), "--json")
    out, _ = as_json.communicate(timeout=60)
    assert json.loads(out)["topics"]["green"]["db"]["delivered"] == 2
