"""examples/analytics_app.py runs: it serves, records, shows requests live and summarises."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from datalogger.analytics import load_rows_sqlite

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "analytics_app.py"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(120)
def test_example_self_test_records_and_summarises(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--requests",
            "20",
            "--port",
            "0",
            "--admin-port",
            str(free_port()),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "answered 20 requests" in out
    assert out.count("live: GET /about -> 200") == 5
    assert out.count("live: GET /missing -> 404") == 5
    assert "recorded 20 requests in total; 20 seen live in this run" in out
    assert "Top paths" in out
    rows = load_rows_sqlite(tmp_path / "datalogger-demo" / "datalogger.db", "requests")
    assert sorted(r["path"] for r in rows) == sorted(["/", "/about", "/products", "/missing"] * 5)
    assert {r["user_agent"] for r in rows} == {"analytics-example"}
