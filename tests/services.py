"""Finding the real servers the integration tests use.

Each ``*_or_skip`` helper returns connection details for a live server on
loopback. When the server is absent the test is skipped with the reason, unless
``DATALOGGER_REQUIRE_SERVICES=1`` (set by ``.ci/run``), in which case it fails:
CI must never pass by skipping the real-server tests.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid

import pytest

POSTGRES_DSN = os.environ.get(
    "DATALOGGER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("DATALOGGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
INFLUXDB_HOST = os.environ.get("DATALOGGER_TEST_INFLUXDB_HOST", "127.0.0.1")
INFLUXDB_HTTP_PORT = int(os.environ.get("DATALOGGER_TEST_INFLUXDB_HTTP_PORT", "18086"))
INFLUXDB_UDP_PORT = int(os.environ.get("DATALOGGER_TEST_INFLUXDB_UDP_PORT", "18089"))
VICTORIAMETRICS_HOST = os.environ.get("DATALOGGER_TEST_VICTORIAMETRICS_HOST", "127.0.0.1")
VICTORIAMETRICS_PORT = int(os.environ.get("DATALOGGER_TEST_VICTORIAMETRICS_PORT", "18428"))


def services_required() -> bool:
    """True when absent servers must fail tests instead of skipping them."""
    return os.environ.get("DATALOGGER_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip (or, when services are required, fail) the current test with ``reason``."""
    if services_required():
        pytest.fail(f"DATALOGGER_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def postgres_dsn_or_skip() -> str:
    """DSN of the test PostgreSQL server."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install 'datalogger[postgres]')")
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_DSN}: {exc}")
    return POSTGRES_DSN


def redis_url_or_skip() -> str:
    """URL of the test Redis server."""
    try:
        import redis
    except ImportError:
        unavailable("redis-py is not installed (pip install 'datalogger[redis]')")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        unavailable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


def influxdb_or_skip() -> tuple[str, int, int]:
    """(host, http_port, udp_port) of the test InfluxDB 1.x server."""
    if not port_open(INFLUXDB_HOST, INFLUXDB_HTTP_PORT):
        unavailable(
            f"InfluxDB is not listening on {INFLUXDB_HOST}:{INFLUXDB_HTTP_PORT} "
            "(start it with .ci/start-influxdb)"
        )
    return INFLUXDB_HOST, INFLUXDB_HTTP_PORT, INFLUXDB_UDP_PORT


CHROMIUM = os.environ.get("DATALOGGER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DATALOGGER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


def chromium_or_skip() -> tuple[str, str]:
    """(browser, driver) paths of Debian's ``chromium`` and ``chromium-driver``.

    Never a downloaded browser: ``.ci/run`` installs both packages when missing.
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[test]')")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            unavailable(f"{path} is missing (apt-get install -y {package})")
    return CHROMIUM, CHROMEDRIVER


def victoriametrics_or_skip() -> str:
    """Base URL (``http://host:port``) of the test VictoriaMetrics server.

    VictoriaMetrics accepts the InfluxDB line protocol on ``/write`` and
    ``/api/v2/write``: the InfluxDB destination's ``protocol = "v2"`` is tested on it.
    """
    url = f"http://{VICTORIAMETRICS_HOST}:{VICTORIAMETRICS_PORT}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as answer:
            healthy = answer.status == 200
    except OSError as exc:
        unavailable(
            f"VictoriaMetrics is not reachable at {url}: {exc} "
            "(start it with .ci/start-victoriametrics)"
        )
    if not healthy:
        unavailable(f"VictoriaMetrics at {url} does not answer /health with 200")
    return url


def unique_name(prefix: str = "t") -> str:
    """A fresh identifier-safe name for a schema, table, database or topic."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
