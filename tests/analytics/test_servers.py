"""The middleware in real servers over real HTTP: uvicorn (ASGI) and gunicorn (WSGI, 2 workers).

The node is ``datalogger run`` (multiprocTCPBase), killed with SIGKILL and
started again on the same admin port while requests keep coming. The apps are
in ``tests/analytics/server_apps.py``; they connect lazily, each worker
process on its own.
"""

from __future__ import annotations

import http.cookiejar
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalogger._thespian import port_open
from tests.conftest import free_port
from tests.node_process import ROOT, NodeProcess, wait_for

pytestmark = pytest.mark.slow

SERVERS = {
    "uvicorn": lambda port: [
        sys.executable, "-m", "uvicorn", "tests.analytics.server_apps:asgi",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ],
    "gunicorn": lambda port: [
        sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning", "tests.analytics.server_apps:wsgi",
    ],
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path).start()
    yield process
    process.stop()


def serve(kind: str, admin_port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server of ``kind`` for the node on ``admin_port``; (process, base URL)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATALOGGER_TEST_ADMIN_PORT": str(admin_port)}
    proc = subprocess.Popen(SERVERS[kind](port), cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:  # the port opens before gunicorn's workers have booted
        try:
            with urllib.request.urlopen(base + "/warm-up", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    if not wait_for(lambda: port_open("127.0.0.1", port, timeout=0.2) and answers(), 30):
        proc.kill()
        raise AssertionError(f"{kind} did not start")
    return proc, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()  # a clean stop: the middleware's handles send what they hold
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


class Client:
    """A browser-like client: one session cookie, sequential requests, each one timed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.latencies: list[float] = []
        self.pids: list[int] = []
        self.errors: list[str] = []

    def get(self, path: str) -> None:
        started = time.perf_counter()
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                self.pids.append(int(response.read()))
        except Exception as exc:  # counted: a request must never fail because of the node
            self.errors.append(f"{path}: {exc}")
        self.latencies.append(time.perf_counter() - started)


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_requests_during_a_node_restart_are_fast_and_all_stored(node: NodeProcess, kind: str) -> None:
    server, base = serve(kind, node.port)
    client = Client(base)
    stop_requests = threading.Event()
    count = 0

    def requests() -> None:
        nonlocal count
        while not stop_requests.is_set():
            client.get(f"/r/{count}")
            count += 1
            time.sleep(0.005)

    thread = threading.Thread(target=requests, daemon=True)
    try:
        thread.start()
        assert wait_for(lambda: len(node.rows("requests")) >= 20, 15), node.output
        node.kill()
        down_from = count
        time.sleep(1.5)  # requests keep coming while the node is away
        node.start()
        down_until = count
        time.sleep(0.5)
        stop_requests.set()
        thread.join(10)
        assert down_until - down_from > 20  # the outage really saw requests
        assert not client.errors
        assert max(client.latencies) < 1.0, f"slowest request: {max(client.latencies):.2f}s"
        expected = {f"/r/{i}" for i in range(count)}
        stored = lambda: {row["path"] for row in node.rows("requests")}  # noqa: E731
        assert wait_for(lambda: expected <= stored(), 20), sorted(expected - stored())[:10]
    finally:
        stop_requests.set()
        stop(server)


def test_two_gunicorn_workers_count_one_session_correctly(node: NodeProcess) -> None:
    server, base = serve("gunicorn", node.port)
    try:
        client = Client(base)
        for i in range(60):
            busy = None
            if i % 3 == 1:  # one worker busy with another visitor: this request goes to the other
                busy = threading.Thread(target=Client(base).get, args=("/busy",))
                busy.start()
                time.sleep(0.05)
            client.get(f"/s/{i}")
            if busy is not None:
                busy.join()
        assert not client.errors
        assert len(set(client.pids)) == 2, "both workers should have served the session"
        stored = lambda: [r for r in node.rows("requests") if r["path"].startswith("/s/")]  # noqa: E731
        assert wait_for(lambda: len(stored()) == 60, 20)
        rows = sorted(stored(), key=lambda r: int(r["path"].rsplit("/", 1)[1]))
        assert len({r["session_id"] for r in rows}) == 1
        assert [r["session_page_views"] for r in rows] == list(range(1, 61))
    finally:
        stop(server)
