"""A test bed of hosts on a private network, made of Linux network namespaces.

Each host is a network namespace with one interface (``eth0``, an address of
``10.8.0.0/24``) whose veth peer is plugged into a bridge in a "switch"
namespace of its own: the root namespace is not touched. The filesystem is
shared, so nodes in different hosts can write files the test reads.
:meth:`Bed.cut` unplugs a host (its switch port goes down) and
:meth:`Bed.restore` plugs it back, as a pulled cable would.

Needs root and ``ip netns``: :func:`bed_or_skip` skips with the reason
without them, and fails instead when ``DATALOGGER_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[1]
SUBNET = "10.8.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def bed_or_skip() -> None:
    """Skip (or fail under ``DATALOGGER_REQUIRE_SERVICES=1``) unless network namespaces can be made."""
    if os.geteuid() != 0:
        unavailable("the multi-host test bed needs root (it creates network namespaces)")
    if shutil.which("ip") is None:
        unavailable("the multi-host test bed needs `ip` (iproute2)")
    probe = f"dlprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        unavailable(f"`ip netns add` does not work here: {made.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


class Host:
    """A network namespace with one address on the bed's network."""

    def __init__(self, bed: Bed, name: str, address: str) -> None:
        self.bed, self.name, self.address = bed, name, address
        self.netns = f"{bed.prefix}{name}"
        self.port = f"{bed.prefix}{name}s"  # the switch side of its cable

    def command(self, *args: str) -> list[str]:
        """``args`` to run inside this host."""
        return ["ip", "netns", "exec", self.netns, *args]

    def run(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host and wait for it."""
        return subprocess.run(
            self.command(*args), input=input, capture_output=True, text=True, timeout=timeout, env=env()
        )

    def datalogger(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``datalogger ARGS`` inside this host."""
        return self.run(sys.executable, "-m", "datalogger", *args, input=input, timeout=timeout)

    def python(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run Python ``code`` inside this host."""
        return self.run(sys.executable, "-c", code, timeout=timeout)

    def popen(
        self, *args: str, log: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a command inside this host, its output going to ``log``."""
        with open(log, "ab") as out:
            return subprocess.Popen(
                self.command(*args), stdout=out, stderr=subprocess.STDOUT, env={**env(), **(extra_env or {})}
            )

    def pids(self) -> list[int]:
        """Processes running inside this host."""
        listed = _ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]


class Bed:
    """Hosts on one private network (see the module docstring); :meth:`close` removes it all."""

    def __init__(self) -> None:
        self.prefix = f"dl{uuid.uuid4().hex[:5]}"
        self.switch = f"{self.prefix}sw"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, name: str, last_octet: int) -> Host:
        """A new host ``name`` at ``10.8.0.<last_octet>``."""
        host = Host(self, name, f"{SUBNET}.{last_octet}")
        inside = f"{self.prefix}{name}e"
        _ip("netns", "add", host.netns)
        _ip("link", "add", inside, "type", "veth", "peer", "name", host.port)
        _ip("link", "set", inside, "netns", host.netns)
        _ip("link", "set", host.port, "netns", self.switch)
        _ip("-n", host.netns, "link", "set", inside, "name", "eth0")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        _ip("-n", self.switch, "link", "set", host.port, "up")
        self.hosts[name] = host
        return host

    def cut(self, name: str) -> None:
        """Unplug a host: its switch port goes down."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def restore(self, name: str) -> None:
        """Plug a host back in."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def kill_all(self) -> None:
        """SIGKILL every process still running in a host of the bed."""
        for host in self.hosts.values():
            for pid in host.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        """Kill what runs in the bed and delete its namespaces (and with them the veth pairs)."""
        self.kill_all()
        for host in self.hosts.values():
            _ip("netns", "del", host.netns, check=False)
        _ip("netns", "del", self.switch, check=False)


def env() -> dict[str, str]:
    """The environment of the processes the bed runs: this checkout's code."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class NetnsNode:
    """A ``datalogger run`` inside a host of the bed."""

    def __init__(self, host: Host, config: Path, *args: str, cwd: Path | None = None) -> None:
        self.host, self.config, self.args, self.cwd = host, config, args, cwd
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 30.0) -> NetnsNode:
        """Start the node; with ``wait``, return once it says it runs (fail if it exits)."""
        self.log.write_text("")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.host.command(
                    sys.executable, "-m", "datalogger", "run", "--config", str(self.config), *self.args
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env(),
                cwd=self.cwd,
            )
        if wait:
            self.wait_running(timeout)
        return self

    def wait_running(self, timeout: float = 30.0) -> None:
        """Return once the node says it runs; fail if it exits or takes longer than ``timeout``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while "running on" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"node in {self.host.name} did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        """What the node printed and logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Shut the node down through its own admin; kill its processes if that fails."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def nodes_of(client: Host, host: str) -> list[dict[str, Any]]:
    """``datalogger nodes --json`` asked from ``client`` of the node on ``host``."""
    result = client.datalogger("nodes", "--host", host, "--json", timeout=30)
    if not result.stdout.strip().startswith("["):
        raise AssertionError(f"datalogger nodes failed: {result.stdout}{result.stderr}")
    return list(json.loads(result.stdout))


def wait_nodes(client: Host, host: str, ready: Any, what: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Poll ``datalogger nodes`` until ``ready(members)``; fail naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    members: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            members = nodes_of(client, host)
        except AssertionError:
            members = []
        if ready(members):
            return members
        time.sleep(0.2)
    raise AssertionError(f"expected {what}, have {members}")
