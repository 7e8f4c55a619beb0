"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

ENV = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def cli(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datalogger", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        env=ENV,
    )


def test_demo_logs_green_and_red_and_shows_what_landed(tmp_path):
    result = cli("demo", "--dir", str(tmp_path / "demo"), "--chunks", "4", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every row arrived" in result.stdout
    with sqlite3.connect(tmp_path / "demo" / "datalogger.db") as conn:
        assert conn.execute('SELECT count(*) FROM "green"').fetchone()[0] == 1200
        assert conn.execute('SELECT count(*) FROM "red"').fetchone()[0] == 800
    lines = (tmp_path / "demo" / "jsonl" / "red.jsonl").read_text().splitlines()
    assert len(lines) == 800


def test_run_log_status_shutdown(tmp_path):
    db = tmp_path / "out.db"
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "state"}"\n[destinations.db]\ntype = "sqlite"\npath = "{db}"\n'
    )
    port = str(free_port())
    node = subprocess.Popen(
        [sys.executable, "-m", "datalogger", "run", "--config", str(config), "--admin-port", port],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        assert node.stdout is not None
        for line in node.stdout:
            if "running on" in line:
                break
        rows = "".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(2500))
        logged = cli("log", "green", "--admin-port", port, "--batch", "1000", input=rows)
        assert logged.returncode == 0, logged.stderr
        assert "logged 2500 rows to green" in logged.stdout
        source = tmp_path / "rows.jsonl"
        source.write_text('{"id": 1}\n\n{"id": 2}\n')
        assert cli("log", "red", "--file", str(source), "--admin-port", port).returncode == 0
        bad = cli("log", "red", "--admin-port", port, input='{"id": 1}\nnot json\n')
        assert bad.returncode == 2 and "line 2 is not valid JSON" in bad.stderr
        bad_topic = cli("log", "no/good", "--admin-port", port, input='{"id": 1}\n')
        assert bad_topic.returncode == 2 and "outside" in bad_topic.stderr
        status = cli("status", "--json", "--admin-port", port)
        assert status.returncode == 0, status.stderr
        stats = json.loads(status.stdout)
        assert stats["topics"]["green"]["db"]["received"] == 2500
        table = cli("status", "--admin-port", port)
        assert "green" in table.stdout and "2500" in table.stdout
        stopped = cli("shutdown", "--admin-port", port)
        assert stopped.returncode == 0, stopped.stderr
        assert node.wait(timeout=30) == 0
    finally:
        if node.poll() is None:
            node.kill()
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "green"').fetchone()[0] == 2500
        assert conn.execute('SELECT count(*) FROM "red"').fetchone()[0] == 2


def test_commands_against_no_node_fail_clearly():
    result = cli("status", "--admin-port", str(free_port()))
    assert result.returncode == 2
    assert "no datalogger node is listening" in result.stderr


def test_bad_config_is_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[destinations.db]\ntype = "sqlite"\npth = "x"\n')
    result = cli("run", "--config", str(config), "--admin-port", str(free_port()))
    assert result.returncode == 2
    assert "unknown option 'pth'" in result.stderr
