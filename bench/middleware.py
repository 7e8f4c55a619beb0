"""Case ``middleware``: what the analytics middleware adds to a request, through real servers.

The same small application is served bare and wrapped in
``DataLoggerMiddleware(app, connect={...})`` (``publish=True``: every request
is logged and broadcast) by uvicorn (ASGI, one worker) and gunicorn (WSGI, one
sync worker), each in its own process, against a ``multiprocTCPBase`` node with
a JSONL destination. A client in this process times requests over HTTP on
127.0.0.1: sequential requests (uvicorn over one kept-alive connection;
gunicorn's sync worker closes each connection), and, for throughput, 8
connections at once. Rounds alternate bare and wrapped, so drift in the
machine's speed hits both alike.

Per round: p50 and p99 of the sequential latencies and requests/s of the
concurrent phase; the report gives medians over rounds, the latency the
middleware adds (wrapped - bare) and the ratio to the bare app. Afterwards
every request of the wrapped apps is counted in the destination. Target: less
than 1 ms added at p99 on both servers.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from datalogger._thespian import port_open
from datalogger.analytics import percentile

from ._common import Metrics, Mode, Result, Target, alternate, free_port, medians_of, ratio, wait_until
from ._node import node

TARGET_ADDED_P99_MS = 1.0
ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 8


def _server(kind: str, app: str, port: int, admin_port: int, secret_file: str) -> subprocess.Popen[bytes]:
    if kind == "uvicorn":
        command = ["-m", "uvicorn", f"bench.web_apps:{app}", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning", "--no-access-log"]
    else:
        command = ["-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
                   "--log-level", "warning", f"bench.web_apps:{app}"]
    # The wrapped apps connect as any client does: with the node's secret (<data_dir>/secret).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATALOGGER_BENCH_ADMIN_PORT": str(admin_port),
           "DATALOGGER_SECRET_FILE": secret_file}
    proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env)
    if not wait_until(lambda: port_open("127.0.0.1", port, timeout=0.2), 30):
        proc.kill()
        raise RuntimeError(f"{kind} serving {app} did not start")
    return proc


class _Client:
    """Sequential GETs to one server, reusing the connection while the server keeps it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> None:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("GET", path, headers={"User-Agent": "bench"})
                response = self.conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status}")
                if response.will_close:
                    self.conn.close()
                    self.conn = None
                return
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _sequential(port: int, count: int, prefix: str) -> list[float]:
    client = _Client(port)
    latencies = []
    try:
        for i in range(count):
            started = time.perf_counter()
            client.get(f"/{prefix}/{i}")
            latencies.append((time.perf_counter() - started) * 1000.0)
    finally:
        client.close()
    return latencies


def _concurrent(port: int, seconds: float, prefix: str) -> tuple[float, int]:
    done = [0] * CONCURRENCY
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        client = _Client(port)
        try:
            while time.perf_counter() < stop:
                client.get(f"/{prefix}/c{index}-{done[index]}")
                done[index] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started), sum(done)


def run(mode: Mode) -> Result:
    """Alternate bare and wrapped apps on uvicorn and gunicorn; target: < 1 ms added at p99."""
    count = int(mode.pick(2000, 500, 50))
    seconds = float(mode.pick(3.0, 1.5, 0.3))
    rounds = mode.rounds_or(5, 3, 1)
    result = Result("middleware", mode.name, {
        "sequential_requests": count, "concurrent_seconds": seconds, "connections": CONCURRENCY,
        "rounds": rounds, "publish": True,
    })
    result.notes.append("uvicorn: one worker, keep-alive; gunicorn: one sync worker, a connection "
                        "per request; the client runs in the benchmark's process on the same host")
    with tempfile.TemporaryDirectory(prefix="dl-bench-web-") as out:
        with node({"files": {"type": "jsonl", "directory": out}}) as dl:
            assert dl.admin_port is not None
            servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
            logged: dict[str, int] = {}
            try:
                for kind, apps in (("uvicorn", ("asgi_bare", "asgi_datalogger")),
                                   ("gunicorn", ("wsgi_bare", "wsgi_datalogger"))):
                    for app in apps:
                        port = free_port()
                        servers[f"{kind}_{app.split('_', 1)[1]}"] = (
                            _server(kind, app, port, dl.admin_port,
                                    os.environ.get("DATALOGGER_SECRET_FILE")
                                    or os.path.join(dl.config.data_dir, "secret")), port
                        )
                for name, (_, port) in servers.items():  # warm up: imports, connect, first topic
                    _sequential(port, min(50, count), "warm")
                    logged[name] = min(50, count) if name.endswith("datalogger") else 0

                def variant(name: str) -> Any:
                    def measure(r: int) -> Metrics:
                        port = servers[name][1]
                        latencies = sorted(_sequential(port, count, f"r{r}"))
                        per_second, done = _concurrent(port, seconds, f"c{r}")
                        if name.endswith("datalogger"):
                            logged[name] += count + done
                        return {
                            "p50_ms": percentile(latencies, 50) or 0.0,
                            "p99_ms": percentile(latencies, 99) or 0.0,
                            "requests_per_s": per_second,
                        }
                    return measure

                result.per_round = alternate(rounds, {name: variant(name) for name in servers})
            finally:
                for proc, _ in servers.values():
                    proc.terminate()  # the wrapped apps close their handles: rows are sent
                for proc, _ in servers.values():
                    proc.wait(30)
            dl.flush(60.0)
        stored = 0
        for path in Path(out).glob("*.jsonl"):
            with open(path, encoding="utf-8") as handle:
                stored += sum(1 for _ in handle)
    expected = sum(logged.values())
    result.verified["requests stored"] = stored
    if stored < expected:
        raise RuntimeError(f"the destination holds {stored} requests of {expected}")
    result.medians = medians_of(result.per_round)
    for kind in ("uvicorn", "gunicorn"):
        bare, wrapped = result.medians[f"{kind}_bare"], result.medians[f"{kind}_datalogger"]
        added_p50 = wrapped["p50_ms"] - bare["p50_ms"]
        added_p99 = wrapped["p99_ms"] - bare["p99_ms"]
        result.ratios[f"{kind} added p50 ms"] = added_p50
        result.ratios[f"{kind} added p99 ms"] = added_p99
        result.ratios[f"{kind} p50 wrapped/bare"] = ratio(wrapped["p50_ms"], bare["p50_ms"])
        result.ratios[f"{kind} p99 wrapped/bare"] = ratio(wrapped["p99_ms"], bare["p99_ms"])
        result.ratios[f"{kind} requests/s wrapped/bare ({CONCURRENCY} connections)"] = ratio(
            wrapped["requests_per_s"], bare["requests_per_s"]
        )
        result.targets.append(Target(f"{kind} added p99 ms", added_p99, "<=", TARGET_ADDED_P99_MS))
    result.extra["p99_spread_ms"] = {
        name: [round(r["p99_ms"], 3) for r in rounds_] for name, rounds_ in result.per_round.items()
    }
    result.extra["median_of_p50_ms"] = {
        name: round(statistics.median(r["p50_ms"] for r in rounds_), 3)
        for name, rounds_ in result.per_round.items()
    }
    return result
