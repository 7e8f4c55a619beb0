"""examples/influx_sensor_logger.py runs against the real InfluxDB 1.x and prints its query."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.services import influxdb_or_skip, unique_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "influx_sensor_logger.py"


def influx_post(host: str, port: int, query: str) -> None:
    body = urllib.parse.urlencode({"q": query}).encode()
    with urllib.request.urlopen(f"http://{host}:{port}/query", data=body, timeout=10) as response:
        assert response.status == 200


def test_sensor_example_writes_tagged_points_and_queries_them() -> None:
    host, http_port, _udp = influxdb_or_skip()
    database = unique_name("sensors")
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--host", host, "--port", str(http_port),
             "--database", database, "--readings", "20"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines() == [
            "logged 60 readings from 3 sensors",
            "s1 (kitchen): 20 readings, mean 22.00 C",
            "s2 (kitchen): 20 readings, mean 23.00 C",
            "s3 (cellar): 20 readings, mean 13.00 C",
        ]
    finally:
        influx_post(host, http_port, f'DROP DATABASE "{database}"')
