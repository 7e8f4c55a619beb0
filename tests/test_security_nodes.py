"""Signed frames against running nodes: a hostile local user, a member with another secret,
and the ways a client finds a node's secret (see docs/security.md)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import thespian
from thespian.system.transport.streamBuffer import toSendBuffer

import datalogger
from datalogger import keyfiles, security
from datalogger.exceptions import SecurityError
from datalogger.logging import DataLoggerHandler
from tests.conftest import free_port, kill_node
from tests.security_helpers import Exploit
from tests.test_distributed import Node, wait_members, wait_nodes
from tests.test_metrics import scrape

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(thespian.__file__).resolve().parents[1]

ATTACK = '''
"""Run by another Unix user with the system Python and a plain Thespian."""
import pickle, socket, sys
from thespian.system.transport.streamBuffer import toSendBuffer

marker, ports = sys.argv[1], sys.argv[2:]

class Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch " + marker,))

for port in ports:
    frame = toSendBuffer((None, Exploit()))  # framed exactly as Thespian frames a message
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as sock:
        sock.sendall(frame)
        sock.settimeout(5)
        try:
            answer = sock.recv(100)
        except OSError as exc:
            answer = repr(exc).encode()
    print(port, "refused" if b"ACK+DATAERR" in answer else answer)
'''


class RunNode:
    """``datalogger run`` in a subprocess, its output kept."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.port = free_port()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datalogger", "run", "--config", str(config), "--admin-port",
             str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
            env={**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "running on" in line:
                break
        else:
            raise AssertionError("node did not start:\n" + "".join(self.output))
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_node(self.port, self.proc)


@pytest.fixture
def run_node() -> Iterator[Any]:
    started: list[RunNode] = []

    def start(config: Path, *args: str, **kwargs: Any) -> RunNode:
        node = RunNode(config, *args, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``datalogger ARGS`` as a user runs it (``env`` replaces the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "datalogger", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(ROOT), "COLUMNS": "250"},
    )  # fmt: skip


def without_secret_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != keyfiles.SECRET_ENV}


def listening_ports(admin_port: int, but_not: int) -> set[int]:
    """The admin and actor ports of the node on ``admin_port`` (its processes share its command
    line), without those of process ``but_not`` (``datalogger run`` itself: its own client socket,
    which it reads only when it talks to the node, and the metrics endpoint)."""
    ports: dict[int, set[int]] = {}
    for process in psutil.process_iter(["cmdline"]):
        if f"--admin-port {admin_port}" in " ".join(process.info["cmdline"] or []):
            try:
                connections = process.net_connections("tcp")
            except psutil.Error:
                continue
            ports[process.pid] = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    return set().union(*ports.values()) - ports.get(but_not, set())


# --------------------------------------------------------------------------- a hostile local user


@pytest.fixture
def hostile_user() -> Iterator[tuple[str, Path]]:
    """A fresh Unix user, and a directory it can read holding a plain copy of Thespian."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user for the attack needs root (CI runs as root)")
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no system Python at /usr/bin/python3")
    name = f"dlhostile{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="datalogger-hostile-"))
    home.chmod(0o755)
    shutil.copytree(Path(thespian.__file__).parent, home / "thespian")
    (home / "attack.py").write_text(ATTACK)
    try:
        yield name, home
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def attack(user: str, home: Path, marker: Path, ports: list[int]) -> str:
    result = subprocess.run(
        ["/usr/bin/python3", str(home / "attack.py"), str(marker), *map(str, ports)],
        user=user, cwd=home, env={"PYTHONPATH": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_attack_runs_code_in_a_plain_thespian_system(
    hostile_user: tuple[str, Path], tmp_path: Path
) -> None:
    """The control: without datalogger's hook, the same pickle runs as root in the admin."""
    user, home = hostile_user
    port, marker = free_port(), tmp_path / "control-marker"
    script = (
        "import sys, time\nfrom thespian.actors import ActorSystem\n"
        f"s = ActorSystem('multiprocTCPBase', {{'Admin Port': {port}}}, "
        "logDefs={'version': 1, 'root': {'level': 'ERROR'}})\nprint('up', flush=True)\n"
        "sys.stdin.read()\ns.shutdown()\n"
    )
    plain = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert plain.stdout is not None and plain.stdout.readline().strip() == "up"
        attack(user, home, marker, [port])
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists() and marker.stat().st_uid == 0  # the hostile user's code ran as root
    finally:
        plain.communicate("", timeout=60)


def test_another_user_cannot_run_code_in_a_node(
    hostile_user: tuple[str, Path], tmp_path: Path, run_node: Any
) -> None:
    user, home = hostile_user
    config = tmp_path / "node.toml"
    db = tmp_path / "out.db"
    config.write_text(
        f'data_dir = "{tmp_path / "state"}"\n[destinations.db]\ntype = "sqlite"\npath = "{db}"\n'
    )
    metrics_port = free_port()
    node = run_node(config, "--metrics-port", str(metrics_port))
    with datalogger.connect(node.port, make_default=False) as dl:
        attack_a_node(user, home, tmp_path, node, dl, db, metrics_port)
    node.stop()
    output = "".join(node.output)
    assert "WARNING datalogger.security: dropped a frame from 127.0.0.1:" in output
    assert "(unsigned: no datalogger signature)" in output


def attack_a_node(
    user: str, home: Path, tmp_path: Path, node: RunNode, dl: Any, db: Path, metrics_port: int
) -> None:
    dl.log("green", [{"id": 1}])
    ports = sorted(listening_ports(node.port, but_not=node.proc.pid))
    assert node.port in ports and len(ports) >= 4  # the admin and actors (root, topic, worker...)
    marker = tmp_path / "marker"

    answers = attack(user, home, marker, ports)

    assert answers.count("refused") == len(ports), answers  # every frame answered ACK+DATAERR
    time.sleep(1.0)
    assert not marker.exists()
    for i in range(2, 12):  # the node keeps serving
        dl.log("green", [{"id": i}])
    dl.flush(timeout=30)
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "green"').fetchone() == (11,)
    counted = dl.stats()["security"]
    assert counted["rejected_frames"] == len(ports)
    assert counted["rejected_by_reason"] == {"unsigned": len(ports)}
    assert counted["refused_peers"][0]["peer"] == "127.0.0.1"
    samples = scrape(metrics_port)
    assert samples[("datalogger_rejected_frames_total", (("reason", "unsigned"),))] == len(ports)

    # the same pickle signed with the node's own secret: still refused, by the allow list
    frame = toSendBuffer((None, Exploit(str(marker))), security.SERIALIZER.dumps)
    for port in (node.port, ports[-1]):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(frame)
            sock.recv(100)
    time.sleep(1.0)
    assert not marker.exists()
    # garbage without a length, and a frame announced at 1 TB: cut off before anything is kept
    for port, garbage in ((node.port, b"x" * 60), (ports[-1], b"1099511627776>" + b"x" * 1000)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(garbage)
            sock.recv(100)
    counted = dl.stats()["security"]
    assert counted["rejected_by_reason"] == {
        "unsigned": len(ports),
        "forbidden class": 2,
        "malformed": 1,
        "oversize": 1,
    }

    # the hostile user cannot read the node's secret, and is told so
    status = subprocess.run(
        ["/usr/bin/python3", "-m", "datalogger", "status", "--admin-port", str(node.port)],
        user=user, cwd=home, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": f"{ROOT}:{SITE_PACKAGES}", "PATH": "/usr/bin:/bin",
             keyfiles.SECRET_ENV: os.environ[keyfiles.SECRET_ENV], "COLUMNS": "250"},
    )  # fmt: skip
    assert status.returncode == 2
    assert "cannot read the secret file" in status.stderr and "permission denied" in status.stderr


# --------------------------------------------------------------------------- conventions


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in reversed(started):
        node.stop()


def test_a_member_with_another_secret_cannot_join_and_the_leader_shows_the_refusal(
    tmp_path: Path, nodes: list[Node]
) -> None:
    out = tmp_path / "out"
    config = tmp_path / "leader.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "leader"}"\n[destinations.gpu]\ntype = "jsonl"\n'
        f'directory = "{out}"\nrequires = ["gpu"]\n'
    )
    leader = Node(config, free_port(), None, ()).start()
    nodes.append(leader)
    with leader.handle() as handle:
        refuse_then_admit(tmp_path, nodes, leader, handle, config, out)


def refuse_then_admit(
    tmp_path: Path, nodes: list[Node], leader: Node, handle: Any, config: Path, out: Path
) -> None:
    handle.log("frames", [{"i": i} for i in range(10)])

    other = keyfiles.generate_secret(tmp_path / "other-secret")
    intruder = tmp_path / "intruder.toml"
    intruder.write_text(
        config.read_text().replace(str(tmp_path / "leader"), str(tmp_path / "intruder"))
        + f'[security]\nsecret_file = "{other}"\n'
    )
    started = time.monotonic()
    refused = cli("run", "--config", str(intruder), "--admin-port", str(free_port()),
                  "--leader", f"127.0.0.1:{leader.port}", "--capability", "gpu")  # fmt: skip
    assert refused.returncode == 2 and time.monotonic() - started < 30
    assert f"cannot talk to the node on 127.0.0.1:{leader.port}" in refused.stderr
    assert "secret is not this process's secret" in refused.stderr
    assert len(handle.nodes()) == 1
    shown = cli("nodes", "--admin-port", str(leader.port))
    assert shown.returncode == 0, shown.stderr
    assert "refused 127.0.0.1: 1 frames dropped" in shown.stderr and "unknown secret" in shown.stderr
    assert not (out / "frames.jsonl").exists()

    member_config = tmp_path / "member.toml"
    member_config.write_text(config.read_text().replace(str(tmp_path / "leader"), str(tmp_path / "member")))
    nodes.append(Node(member_config, free_port(), leader.port, ("gpu",)).start())
    wait_members(leader, 2)
    handle.flush(timeout=30)  # delivered by the member's worker: only it has "gpu"
    lines = (out / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 10
    assert wait_nodes(handle, lambda m: any("frames/gpu" in n["holds"] for n in m), "placement")


# --------------------------------------------------------------------------- finding the secret


def test_clients_find_the_secret_in_the_data_dir_a_named_file_or_the_environment(
    tmp_path: Path, run_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    gc.collect()  # handles an earlier test dropped without closing them
    assert not security._in_use(), "a handle of an earlier test is still open in this process"
    home = tmp_path / "home"  # the node runs here with the default data_dir, .datalogger
    home.mkdir()
    db = tmp_path / "out.db"
    config = home / "node.toml"
    config.write_text(f'[destinations.db]\ntype = "sqlite"\npath = "{db}"\n')
    node = run_node(config, env=without_secret_env(), cwd=home)
    secret = home / ".datalogger" / "secret"
    assert (secret.stat().st_mode & 0o777) == 0o600
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    client_config = tmp_path / "client.toml"
    client_config.write_text(f'data_dir = "{home / ".datalogger"}"\n{config.read_text()}')
    port = str(node.port)

    plain = without_secret_env()
    for args, env, cwd in (
        ((), plain, home),  # the default data_dir, relative to where the command runs
        (("--secret-file", str(secret)), plain, elsewhere),
        (("--config", str(client_config)), plain, elsewhere),
        ((), {**plain, keyfiles.SECRET_ENV: str(secret)}, elsewhere),
    ):
        status = cli("status", "--json", "--admin-port", port, *args, env=env, cwd=cwd)
        assert status.returncode == 0, (args, status.stderr)
        assert '"signing": true' in status.stdout

    missing = cli("status", "--admin-port", port, env=plain, cwd=elsewhere)
    assert missing.returncode == 2
    assert f"the secret file {elsewhere}/.datalogger/secret (in the data_dir) does not exist" in " ".join(
        missing.stderr.split()
    )
    wrong = cli("log", "green", "--admin-port", port, "--secret-file",
                keyfiles.generate_secret(tmp_path / "wrong"), env=plain, cwd=elsewhere)  # fmt: skip
    assert wrong.returncode == 2 and "secret is not this process's secret" in " ".join(wrong.stderr.split())

    monkeypatch.delenv(keyfiles.SECRET_ENV)
    for kwargs in ({"data_dir": home / ".datalogger"}, {"secret_file": secret}, {"config": client_config}):
        with datalogger.connect(node.port, make_default=False, **kwargs) as handle:
            handle.log("green", [{"via": str(sorted(kwargs))}])
    monkeypatch.setenv(keyfiles.SECRET_ENV, str(secret))
    logger = logging.getLogger(f"security-test-{uuid.uuid4().hex}")  # untouched by other tests
    logger.setLevel(logging.INFO)
    logger.propagate = False
    shipping = DataLoggerHandler(topic="app_logs")  # ships through the default handle
    logger.addHandler(shipping)
    with datalogger.connect(node.port) as handle:
        assert datalogger.get_default() is handle
        logger.warning("shipped with the secret from the environment")
        handle.flush(timeout=30)
    logger.removeHandler(shipping)
    assert shipping.shipped == 1 and shipping.dropped == 0, shipping.last_error
    monkeypatch.delenv(keyfiles.SECRET_ENV)
    with pytest.raises(SecurityError, match="does not exist"):
        datalogger.connect(node.port, data_dir=elsewhere, make_default=False)
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "green"').fetchone() == (3,)
        assert conn.execute('SELECT message FROM "app_logs"').fetchall() == [
            ("shipped with the secret from the environment",)
        ]


def test_a_node_with_signing_off_warns_and_needs_clients_told_so(
    tmp_path: Path, run_node: Any
) -> None:
    config = tmp_path / "unsigned.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "state"}"\n[security]\nsign = false\n'
        f'[destinations.rec]\ntype = "tests.dests:Recorder"\ndirectory = "{tmp_path / "out"}"\n'
    )
    node = run_node(config)
    assert "security.sign = false: frames are NOT signed" in "".join(node.output)
    signed = cli("status", "--admin-port", str(node.port))
    assert signed.returncode == 2 and "does not sign its frames" in " ".join(signed.stderr.split())
    told = cli("status", "--json", "--admin-port", str(node.port), "--config", str(config))
    assert told.returncode == 0, told.stderr
    assert '"signing": false' in told.stdout
    # unsigned frames are taken, but the allow list still stands
    marker = tmp_path / "marker"
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(toSendBuffer((None, Exploit(str(marker)))))
        assert b"ACK+DATAERR" in sock.recv(100)
    time.sleep(1.0)
    assert not marker.exists()


def test_rotation_accepts_the_old_secret_during_the_grace_and_refuses_it_after(
    tmp_path: Path, run_node: Any
) -> None:
    old = keyfiles.generate_secret(tmp_path / "old")
    results = {}
    for name, started_ago in (("rotating", 60.0), ("rotated", 7200.0)):
        new = Path(keyfiles.generate_secret(tmp_path / f"new-{name}"))
        os.utime(new, (time.time() - started_ago, time.time() - started_ago))
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f'data_dir = "{tmp_path / name}"\n[security]\nsecret_file = "{new}"\n'
            f'previous_secret_file = "{old}"\nprevious_secret_grace = 3600.0\n'
            f'[destinations.rec]\ntype = "tests.dests:Recorder"\ndirectory = "{tmp_path / "out"}"\n'
        )
        node = run_node(config)
        results[name] = (
            cli("status", "--admin-port", str(node.port), "--secret-file", old),  # not updated yet
            cli("status", "--admin-port", str(node.port), "--config", str(config)),  # both files
        )
    (old_client, both), (old_client_late, both_late) = results["rotating"], results["rotated"]
    assert old_client.returncode == 0 and both.returncode == 0, old_client.stderr + both.stderr
    assert both_late.returncode == 0, both_late.stderr
    assert old_client_late.returncode == 2
    assert "secret is not this process's secret" in " ".join(old_client_late.stderr.split())
