"""Runs examples/data_buffer_example.py as a user would, on both actor system bases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "data_buffer_example.py"


@pytest.mark.parametrize("base", ["multiprocTCPBase", "simpleSystemBase"])
def test_data_buffer_example(base: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--base", base, "--interval", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "buffered {'mykey': ['myval1', 'myval2']}",
        "handle_flush key='mykey' data=['myval1', 'myval2']",
        "after the interval: 0 values buffered",
        "handle_flush key='otherkey' data=['a', 'b', 'c']",
        "sync_flush returned ['ok']",
        "flushed 2 times over 4 partitions",
    ]
