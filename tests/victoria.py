"""Reading VictoriaMetrics back, and private VictoriaMetrics servers for tests that stop one.

VictoriaMetrics stores each field of a line as its own series named
``<measurement>_<field>``, with the tags as labels, timestamps in milliseconds
and numeric values only. Written samples become searchable within a second or
two (VictoriaMetrics buffers them in memory; a sample near the current time
takes longest): :func:`export` flushes and polls until it sees what it expects.

The shared server of ``.ci/start-victoriametrics`` must never be stopped by a
test: :class:`PrivateVictoriaMetrics` starts one of the test's own (own port,
own data dir) with the same scripts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.services import unavailable

CI = Path(__file__).resolve().parents[1] / ".ci"


def _get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        data: bytes = answer.read()
    return data


def force_flush(url: str) -> None:
    """Make every sample written so far visible to searches."""
    _get(f"{url}/internal/force_flush")


def export(url: str, selector: str, expect: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every series matching ``selector`` (``{__name__=~"m_.*"}``) with all its raw samples.

    Polls until the series hold at least ``expect`` samples or ``timeout``
    seconds have passed (``expect=0``: one read).

    Returns:
        Dicts with ``metric`` (labels, ``__name__`` included), ``values`` and
        ``timestamps`` (ms), sorted by series name and labels.
    """
    query = urllib.parse.urlencode({"match[]": selector})
    deadline = time.monotonic() + timeout
    while True:
        force_flush(url)
        lines = _get(f"{url}/api/v1/export?{query}").decode().splitlines()
        series = [json.loads(line) for line in lines if line.strip()]
        found = sum(len(s["values"]) for s in series)
        if found >= expect or time.monotonic() > deadline:
            return sorted(series, key=lambda s: sorted(s["metric"].items()))
        time.sleep(0.2)


def samples(url: str, measurement: str, expect: int = 0, timeout: float = 15.0) -> int:
    """Samples stored in every series of ``measurement`` (one per field of each point),
    once at least ``expect`` are there or ``timeout`` has passed."""
    series = export(url, f'{{__name__=~"{measurement}_.*"}}', expect, timeout)
    return sum(len(s["values"]) for s in series)


def series_of(
    url: str, measurement: str, field: str, expect: int = 1
) -> list[tuple[int, float, dict[str, str]]]:
    """``(timestamp ms, value, tags)`` of every sample of ``<measurement>_<field>``, by time,
    once at least ``expect`` samples are there (or 15 s have passed)."""
    out = []
    for one in export(url, f'{{__name__="{measurement}_{field}"}}', expect):
        tags = {k: v for k, v in one["metric"].items() if k != "__name__"}
        out.extend((t, v, tags) for t, v in zip(one["timestamps"], one["values"], strict=True))
    return sorted(out, key=lambda s: (s[0], s[1]))


def write_counters(url: str, samples_at_least: int = 0, timeout: float = 15.0) -> tuple[int, int]:
    """``(write requests, samples inserted)`` the server has counted on its line-protocol
    endpoints (``/write`` and ``/api/v2/write``), once it has counted at least
    ``samples_at_least`` samples (its ``/metrics`` page lags by a second or two)."""
    deadline = time.monotonic() + timeout
    while True:
        requests = inserted = 0
        for line in _get(f"{url}/metrics").decode().splitlines():
            if line.startswith('vm_http_requests_total{path="/influx/write"'):
                requests = int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith('vm_rows_inserted_total{type="influx"}'):
                inserted = int(float(line.rsplit(" ", 1)[1]))
        if inserted >= samples_at_least or time.monotonic() > deadline:
            return requests, inserted
        time.sleep(0.2)


class PrivateVictoriaMetrics:
    """A VictoriaMetrics server of one test, on ``port`` with its data in ``directory``.

    Started and stopped with ``.ci/start-victoriametrics`` and
    ``.ci/restart-victoriametrics``; :meth:`close` stops it for good.
    """

    def __init__(self, port: int, directory: Path) -> None:
        if shutil.which("victoria-metrics") is None:
            unavailable(
                "the victoria-metrics binary is not installed (Debian package victoria-metrics; "
                ".ci/start-victoriametrics installs it)"
            )
        self.port, self.directory = port, directory
        self.url = f"http://127.0.0.1:{port}"
        self._script(CI / "start-victoriametrics", str(port), str(directory))

    def _script(self, script: Path, *args: str) -> None:
        subprocess.run(["bash", str(script), *args], check=True, timeout=90, capture_output=True)

    def stop(self) -> None:
        """SIGTERM the server and wait until it has exited (its data is kept)."""
        self._script(CI / "restart-victoriametrics", "stop", str(self.directory))

    def start(self) -> None:
        """Start the server again on the same port and data, and wait until it answers."""
        self._script(CI / "restart-victoriametrics", "start", str(self.directory))

    def close(self) -> None:
        """Stop the server (a no-op when it is stopped)."""
        self.stop()
