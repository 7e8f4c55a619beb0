"""VictoriaMetrics and vmagent for the benchmarks: servers, rows, counts.

VictoriaMetrics (Debian package ``victoria-metrics``) accepts the InfluxDB line
protocol on ``/write`` and ``/api/v2/write`` and stores each field of a line as
the series ``<measurement>_<field>``, in milliseconds. The shared server of
``.ci/start-victoriametrics`` (127.0.0.1:18428) serves the cases that only
write; a case that stops the server starts a :class:`PrivateVictoriaMetrics`
with the same scripts, on its own port and data dir. The same package ships
``vmagent``, a shipper with an on-disk queue: :class:`VmAgent`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ._common import free_port, wait_until

VM_HOST = os.environ.get("DATALOGGER_TEST_VICTORIAMETRICS_HOST", "127.0.0.1")
VM_PORT = int(os.environ.get("DATALOGGER_TEST_VICTORIAMETRICS_PORT", "18428"))
VM_URL = f"http://{VM_HOST}:{VM_PORT}"
"""The shared VictoriaMetrics of ``.ci/start-victoriametrics``."""
CI = Path(__file__).resolve().parents[1] / ".ci"
BASE_MS = 1_767_225_600_000
"""2026-01-01 in ms: the first row's timestamp (VictoriaMetrics keeps 100 years here)."""

Row = dict[str, Any]


def metric_rows(count: int, offset: int = 0) -> list[Row]:
    """Rows for VictoriaMetrics: a tag (``sensor``), two fields and a distinct ms timestamp."""
    return [
        {"sensor": f"s{i % 16}", "value": i * 0.25, "i": i, "time": BASE_MS + i}
        for i in range(offset, offset + count)
    ]


def vm_destination(url: str = VM_URL, **extra: Any) -> dict[str, Any]:
    """Our InfluxDB destination with ``protocol = "v2"`` writing to VictoriaMetrics at ``url``."""
    return {
        "type": "influxdb",
        "protocol": "v2",
        "url": url,
        "org": "bench",
        "bucket": "bench",
        "precision": "ms",
        "tags": ["sensor"],
        "time_key": "time",
        **extra,
    }


def _get(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        data: bytes = answer.read()
    return data


def healthy(url: str) -> bool:
    """True when ``url``'s ``/health`` answers 200 (VictoriaMetrics and vmagent alike)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _window(first: int | None, count: int | None) -> tuple[str, str]:
    """(range, evaluation time) of a query covering rows ``first .. first + count - 1``."""
    if first is None or count is None:
        return "400d", str(BASE_MS // 1000 + 200 * 86_400)
    last_ms = BASE_MS + first + count - 1
    return f"{count}ms", f"{last_ms / 1000:.3f}"


def vm_count(
    url: str, measurement: str, first: int | None = None, count: int | None = None, field: str = "i"
) -> int:
    """Samples of ``<measurement>_<field>`` stored (one per row), counted by the server.

    With ``first`` and ``count``, only the rows ``i = first .. first + count - 1``
    (their timestamps) are counted. Flushes the server's in-memory buffers
    first, so every acknowledged write is counted; the query cache is off on the
    servers of the ``.ci`` scripts and ``nocache=1`` asks for it anyway (the
    rows are back-filled).
    """
    _get(f"{url}/internal/force_flush")
    window, at = _window(first, count)
    query = urllib.parse.urlencode(
        {
            "query": f'sum(count_over_time({{__name__="{measurement}_{field}"}}[{window}]))',
            "time": at,
            "nocache": "1",
        }
    )
    answer = json.loads(_get(f"{url}/api/v1/query?{query}"))
    result = answer["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def vm_distinct(
    url: str, measurement: str, first: int, count: int, field: str = "i"
) -> tuple[int, int]:
    """``(samples, distinct timestamps)`` of rows ``first .. first + count - 1`` of
    ``<measurement>_<field>``, read with ``/api/v1/export``.

    Rows have distinct timestamps, so the second figure is the distinct rows
    stored and the difference the duplicates.
    """
    _get(f"{url}/internal/force_flush")
    low, high = BASE_MS + first, BASE_MS + first + count - 1
    query = urllib.parse.urlencode(
        {
            "match[]": f'{{__name__="{measurement}_{field}"}}',
            "start": f"{low / 1000:.3f}",
            "end": f"{high / 1000:.3f}",
        }
    )
    total, stamps = 0, set()
    for line in _get(f"{url}/api/v1/export?{query}", timeout=300).splitlines():
        if line.strip():
            inside = [t for t in json.loads(line)["timestamps"] if low <= t <= high]
            total += len(inside)
            stamps.update(inside)
    return total, len(stamps)


def wait_count(
    url: str,
    measurement: str,
    expected: int,
    timeout: float,
    step: float = 0.1,
    first: int | None = None,
) -> int:
    """Poll :func:`vm_count` (of the ``expected`` rows from ``first`` when given) until it
    reaches ``expected`` or ``timeout``; return the last count."""
    found = 0

    def done() -> bool:
        nonlocal found
        found = vm_count(url, measurement, first, expected if first is not None else None)
        return found >= expected

    wait_until(done, timeout, step)
    return found


def require_binary(name: str) -> str:
    """Path of ``name`` (``victoria-metrics`` or ``vmagent``), or RuntimeError naming the package."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: apt-get install victoria-metrics (or .ci/start-victoriametrics)"
        )
    return path


class PrivateVictoriaMetrics:
    """A VictoriaMetrics server of this benchmark only, on a free port and a temp dir."""

    def __init__(self) -> None:
        require_binary("victoria-metrics")
        self._tmp = tempfile.TemporaryDirectory(prefix="dl-bench-vm-")
        self.directory = Path(self._tmp.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._script("start-victoriametrics", str(self.port), str(self.directory))

    def _script(self, name: str, *args: str) -> None:
        subprocess.run(["bash", str(CI / name), *args], check=True, timeout=120, capture_output=True)

    def stop(self) -> None:
        """SIGTERM the server and wait for its exit (data kept)."""
        self._script("restart-victoriametrics", "stop", str(self.directory))

    def start(self) -> None:
        """Start it again on the same port and data; returns once it answers."""
        self._script("restart-victoriametrics", "start", str(self.directory))

    def close(self) -> None:
        """Stop the server and delete its data."""
        try:
            self.stop()
        finally:
            self._tmp.cleanup()


class VmAgent:
    """``vmagent`` on a free port, forwarding to ``remote_url`` (a VictoriaMetrics base URL).

    Its persistent queue lives in a temp dir (``-remoteWrite.tmpDataPath``): what
    it accepted and could not send yet is kept on disk while the storage is down.
    It runs in its own session, so its process group is its own (for PSS).
    """

    def __init__(self, remote_url: str) -> None:
        binary = require_binary("vmagent")
        self._tmp = tempfile.TemporaryDirectory(prefix="dl-bench-vmagent-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.queue_dir = Path(self._tmp.name) / "queue"
        self._log = open(Path(self._tmp.name) / "vmagent.log", "wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-remoteWrite.url={remote_url}/api/v1/write",
                f"-remoteWrite.tmpDataPath={self.queue_dir}",
                "-loggerLevel=WARN",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_until(lambda: healthy(self.url), 30.0, 0.1):
            self.close()
            raise RuntimeError(f"vmagent did not answer on {self.url}")

    def queue_bytes(self) -> int:
        """Bytes in vmagent's on-disk queue directory now."""
        total = 0
        for root, _dirs, files in os.walk(self.queue_dir):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    continue
        return total

    def close(self) -> None:
        """SIGTERM vmagent, wait for it, delete its queue."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        self._tmp.cleanup()
