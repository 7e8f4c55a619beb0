"""Shared fixtures: nodes on either actor system base, free ports, tmp dirs."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import datalogger
from datalogger.keyfiles import SECRET_ENV, generate_secret

BASES = ["simpleSystemBase", "multiprocTCPBase"]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SESSION_SECRET: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    """One secret file for every node and client of the session, named by DATALOGGER_SECRET_FILE.

    Members of a convention share one secret, and a test's ``connect()`` or CLI
    call needs the secret of the node it talks to. Set before collection, so
    modules that copy ``os.environ`` for their subprocesses carry it too. Tests
    of the other ways to find a secret remove it with ``monkeypatch.delenv``.
    """
    import tempfile

    directory = tempfile.mkdtemp(prefix="datalogger-secret-")
    _SESSION_SECRET.update(directory=directory, previous=os.environ.get(SECRET_ENV))
    os.environ[SECRET_ENV] = generate_secret(os.path.join(directory, "secret"))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's secret."""
    import shutil

    if "directory" in _SESSION_SECRET:
        shutil.rmtree(_SESSION_SECRET["directory"], ignore_errors=True)
        if _SESSION_SECRET["previous"] is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = _SESSION_SECRET["previous"]


@pytest.fixture
def start_node() -> Iterator[Callable[..., datalogger.DataLogger]]:
    """``start_node(config, base=...)`` starts a node that is shut down after the test."""
    handles: list[datalogger.DataLogger] = []

    def start(config: Any, base: str = "multiprocTCPBase", **kwargs: Any) -> datalogger.DataLogger:
        if base == "multiprocTCPBase":
            kwargs.setdefault("admin_port", free_port())
        handle = datalogger.start(config, base=base, **kwargs)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        try:
            handle.shutdown(timeout=2.0)
        except Exception:
            pass


def recorder(directory: Any, cls: str = "Recorder", **options: Any) -> dict[str, Any]:
    """A destination table for one of the test destinations in tests/dests.py."""
    return {"type": f"tests.dests:{cls}", "directory": str(directory), **options}


def kill_node(port: int, proc: Any = None) -> int:
    """SIGKILL every process of the node on ``port``: the ``datalogger run`` process,
    and Thespian's admin and actor processes, which run detached from it (they are
    forked from one another and share its command line). Returns how many were killed."""
    import signal

    import psutil

    marker = f"--admin-port {port}"
    victims = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if marker in cmdline and "datalogger" in cmdline:
            victims.append(process)
    if proc is not None:
        try:
            root = psutil.Process(proc.pid)
            victims.extend([root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            pass
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    if proc is not None:
        proc.wait(timeout=10)
    return len({p.pid for p in victims})
