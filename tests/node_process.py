"""A node run by ``datalogger run`` in a subprocess, which tests kill and start again.

The destination is a JSONL directory, so a test reads what was stored from the
files, the way a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import free_port, kill_node

ROOT = Path(__file__).resolve().parent.parent


class NodeProcess:
    """``datalogger run`` on a fixed admin port, with a JSONL destination under ``directory``."""

    def __init__(self, directory: Path, port: int | None = None, extra: str = "") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.out = directory / "out"
        self.config = directory / "node.toml"
        self.config.write_text(
            f'data_dir = "{directory / "state"}"\n{extra}\n'
            f'[destinations.files]\ntype = "jsonl"\ndirectory = "{self.out}"\n'
        )
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> NodeProcess:
        """Start the node and wait until it says it runs."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datalogger", "run", "--config", str(self.config),
             "--admin-port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "running on" in line:
                break
        else:
            raise AssertionError("the node did not start:\n" + "".join(self.output))
        stream = self.proc.stdout
        threading.Thread(target=lambda: self.output.extend(stream), daemon=True).start()
        return self

    def processes(self) -> list[psutil.Process]:
        """The node's processes (Thespian's admin and actors run detached from ``datalogger run``)."""
        marker = f"--admin-port {self.port}"
        found = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if marker in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def kill(self) -> None:
        """SIGKILL every process of the node."""
        assert kill_node(self.port, self.proc) >= 3

    def kill_run_process(self) -> None:
        """SIGKILL the ``datalogger run`` process only."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop the node if it runs: a clean shutdown, else SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            for process in self.processes():
                process.kill()
            return
        try:
            import datalogger

            datalogger.connect(self.port, make_default=False).shutdown(timeout=2)
            self.proc.wait(timeout=20)
        except Exception:
            kill_node(self.port, self.proc)

    def rows(self, topic: str) -> list[dict[str, Any]]:
        """The rows stored for ``topic`` so far."""
        path = self.out / f"{topic}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll until ``predicate()`` is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
