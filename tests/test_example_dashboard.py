"""examples/dashboard_app.py runs: its site is recorded, and its mounted dashboard counts the requests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from datalogger.analytics import load_rows_sqlite
from tests.conftest import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dashboard_app.py"


@pytest.mark.timeout(120)
def test_example_self_test_counts_on_its_dashboard(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLE), "--requests", "20", "--port", "0"]
    result = subprocess.run(
        [*command, "--admin-port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    assert "answered 20 requests" in result.stdout
    assert "the dashboard counts 20 requests" in result.stdout
    rows = load_rows_sqlite(tmp_path / "datalogger-demo" / "datalogger.db", "requests")
    # the site's requests only: the dashboard's own (its snapshot.json) are not recorded
    assert sorted(r["path"] for r in rows) == sorted(["/", "/about", "/products", "/missing"] * 5)
