"""A start that fails says so: a clear reason, a non-zero exit, and no process left behind.

Each case runs ``datalogger run`` as a user would, then checks that no process
of that node survives (Thespian's admin and actors detach into their own
session, so a failed start used to leave them running), and ``start()`` from
Python raises with the same reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import datalogger
from datalogger.exceptions import DataLoggerError
from tests.conftest import free_port
from tests.services import postgres_dsn_or_skip, redis_url_or_skip

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


def write_config(tmp_path: Path, data_dir: Path | str, extra: str = "") -> Path:
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n{extra}\n'
        f'[destinations.f]\ntype = "jsonl"\ndirectory = "{tmp_path / "out"}"\n'
    )
    return config


def node_processes(port: int) -> list[psutil.Process]:
    """Processes of a node on ``port`` (its forks share the ``--admin-port`` command line)."""
    marker = f"--admin-port {port}"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def run_fails(config: Path, port: int, *extra: str, prefix: tuple[str, ...] = ()) -> str:
    """``datalogger run`` must exit non-zero, leave no process, and return what it said."""
    result = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "datalogger",
            "run",
            "--config",
            str(config),
            "--admin-port",
            str(port),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=ENV,
    )
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "running on" not in said, said
    assert "Traceback" not in said, said
    deadline = time.monotonic() + 5
    while node_processes(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node_processes(port) == [], f"processes left behind: {node_processes(port)}"
    return said


@pytest.fixture
def no_new_children() -> Iterator[None]:
    """The test must leave no child process of this process (a failed start() cleans up)."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        if not new:
            return
        time.sleep(0.1)
    raise AssertionError(f"a failed start left processes: {new}")


# --------------------------------------------------------------------------- data_dir


def test_data_dir_under_a_file(tmp_path: Path, no_new_children: None) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = write_config(tmp_path, blocker / "data")
    said = run_fails(config, free_port())
    assert f"data_dir {blocker / 'data'} cannot be created: Not a directory" in said
    with pytest.raises(DataLoggerError, match="cannot be created: Not a directory"):
        datalogger.start(config, admin_port=free_port(), make_default=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_data_dir_on_a_read_only_mount(tmp_path: Path) -> None:
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    config = write_config(tmp_path, mountpoint)
    # a read-only tmpfs in a mount namespace of the node's own: nothing outside it changes
    port = free_port()
    script = f'mount -t tmpfs -o ro tmpfs "{mountpoint}" && exec "$@"'
    said = run_fails(
        config, port, prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh")
    )
    assert f"data_dir {mountpoint} is not writable: Read-only file system" in said


def test_data_dir_checked_again_by_the_node(tmp_path: Path) -> None:
    """The RootSupervisor checks too (a ConfigureNode sent by other code), and stays unconfigured."""
    from thespian.actors import ActorSystem

    from datalogger.actors.root_supervisor import RootSupervisor
    from datalogger.config import load_config
    from datalogger.messages import ConfigureNode, NodeReady, NodeStartFailed

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    system = ActorSystem("simpleSystemBase", transientUnique=True)
    try:
        root = system.createActor(RootSupervisor)
        bad = load_config(
            {
                "data_dir": str(blocker / "d"),
                "destinations": {"f": {"type": "jsonl", "directory": str(tmp_path)}},
            }
        )
        answer = system.ask(root, ConfigureNode(bad), 10)
        assert isinstance(answer, NodeStartFailed) and "Not a directory" in answer.reason
        good = load_config(
            {
                "data_dir": str(tmp_path / "d"),
                "destinations": {"f": {"type": "jsonl", "directory": str(tmp_path)}},
            }
        )
        assert isinstance(system.ask(root, ConfigureNode(good), 10), NodeReady)
    finally:
        system.shutdown()


# --------------------------------------------------------------------------- adapters


def test_process_status_adapter_whose_postgres_is_down(tmp_path: Path, no_new_children: None) -> None:
    postgres_dsn_or_skip()  # psycopg and a server exist; this one points at a closed port
    dead = f"postgresql://postgres:secret-pw@127.0.0.1:{free_port()}/test"
    extra = f'[process_status]\nadapter = "postgres"\noptions = {{ dsn = "{dead}" }}\n'
    config = write_config(tmp_path, tmp_path / "data", extra)
    said = run_fails(config, free_port())
    assert "the process-status adapter 'postgres' did not start" in said, said
    assert "secret-pw" not in said
    with pytest.raises(DataLoggerError, match="process-status adapter 'postgres' did not start"):
        datalogger.start(config, admin_port=free_port(), make_default=False)


def test_process_status_adapter_whose_redis_is_down(tmp_path: Path) -> None:
    redis_url_or_skip()
    extra = (
        f'[process_status]\nadapter = "redis"\noptions = {{ url = "redis://127.0.0.1:{free_port()}/0" }}\n'
    )
    said = run_fails(write_config(tmp_path, tmp_path / "data", extra), free_port())
    assert "the process-status adapter 'redis' did not start" in said, said


# --------------------------------------------------------------------------- ports


def test_admin_port_in_use(tmp_path: Path, no_new_children: None) -> None:
    config = write_config(tmp_path, tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        said = run_fails(config, port)
        assert f"admin port 127.0.0.1:{port} is already in use" in said
        with pytest.raises(DataLoggerError, match="already in use"):
            datalogger.start(config, admin_port=port, make_default=False)


def test_metrics_port_in_use(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        metrics = taken.getsockname()[1]
        said = run_fails(config, free_port(), "--metrics-port", str(metrics))
        assert f"metrics port 127.0.0.1:{metrics} is already in use" in said


def test_bind_to_an_address_of_another_host_is_refused(tmp_path: Path) -> None:
    said = run_fails(write_config(tmp_path, tmp_path / "data"), free_port(), "--bind", "192.0.2.1")
    assert "bind must be one address of this host" in said


# --------------------------------------------------------------------------- the environment


def test_thespian_base_ipaddr_does_not_move_a_node(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "data")
    port = free_port()
    env = {**ENV, "THESPIAN_BASE_IPADDR": "127.0.0.1"}
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datalogger",
            "run",
            "--config",
            str(config),
            "--admin-port",
            str(port),
            "--bind",
            "127.0.0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert node.stdout is not None
        first = node.stdout.readline()
        assert f"running on 127.0.0.2:{port}" in first, first + node.stdout.read()
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in node_processes(port)
            for c in p.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert ("127.0.0.2", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.2"}, f"a socket listens elsewhere: {listening}"
        log = subprocess.run(
            [
                sys.executable,
                "-m",
                "datalogger",
                "log",
                "t",
                "--host",
                "127.0.0.2",
                "--admin-port",
                str(port),
            ],
            input='{"id": 1}\n',
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert log.returncode == 0 and "logged 1 rows" in log.stdout, log.stdout + log.stderr
        assert "THESPIAN_BASE_IPADDR" not in os.environ
    finally:
        node.terminate()
        node.wait(timeout=30)
    deadline = time.monotonic() + 10
    while node_processes(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node_processes(port) == []
    assert (tmp_path / "out" / "t.jsonl").read_text().count("\n") == 1


def test_start_sets_no_environment_variable(tmp_path: Path) -> None:
    before = dict(os.environ)
    handle = datalogger.start(
        {
            "data_dir": str(tmp_path / "d"),
            "destinations": {"f": {"type": "jsonl", "directory": str(tmp_path)}},
        },
        admin_port=free_port(),
        make_default=False,
    )
    try:
        assert dict(os.environ) == before
    finally:
        handle.shutdown(timeout=2)
