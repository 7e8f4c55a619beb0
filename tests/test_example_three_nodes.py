"""The three-node example runs and every row arrives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_three_nodes_example(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "three_nodes.py"), "--rows", "20", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "DATALOGGER_SECRET_FILE"},  # its own secret
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "files: 360 rows (expected 360)" in out
    assert "special: 360 rows (expected 360)" in out
    members = re.findall(r"^  (127\.0\.0\.1:\d+) \[([^\]]*)\]: (.*)$", out, re.M)
    assert len(members) == 3
    for _, caps, holds in members:
        if caps != "influxdb":
            assert "/special" not in holds, "a node without the capability runs the special destination"
    assert json.loads(out.strip().splitlines()[-1])["ok"] is True
