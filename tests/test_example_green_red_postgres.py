"""examples/green_red_postgres.py runs against the real PostgreSQL and fills two schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.services import postgres_dsn_or_skip, unique_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "green_red_postgres.py"


def test_green_red_example_fills_one_schema_per_topic() -> None:
    dsn = postgres_dsn_or_skip()
    prefix = unique_name("ex") + "_"
    try:
        for _ in range(2):  # a second run adds no rows: id is the conflict key
            done = subprocess.run(
                [sys.executable, str(EXAMPLE), "--dsn", dsn, "--schema-prefix", prefix],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                "logged 300 green rows and 100 red rows",
                f"{prefix}green.readings: 300 rows",
                f"{prefix}red.readings: 100 rows",
            ]
        with psycopg.connect(dsn) as conn:
            alarms = conn.execute(f'SELECT count(*) FROM "{prefix}red".readings WHERE alarm')
            assert alarms.fetchone() == (15,)  # ids 0, 7, ..., 98
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for topic in ("green", "red"):
                conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}{topic}" CASCADE')
