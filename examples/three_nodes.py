"""Three datalogger nodes in one Thespian convention, on this machine.

Starts a leader and two members with `datalogger run` (one has the
``influxdb`` capability), logs from every node, shows where each topic is
delivered from, and stops them. Everything listens on 127.0.0.1.

    python examples/three_nodes.py [--rows 200] [--dir /tmp/three-nodes]

The destinations are JSONL files, so no server is needed; the ``special``
destination requires the ``influxdb`` capability, so only the third node runs
its workers (a stand-in for a real InfluxDB destination). The members of a
convention share one secret: the example makes one (``<dir>/secret``), names
it in every node's ``[security]`` table and connects with it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datalogger
from datalogger.keyfiles import generate_secret

CONFIG = """\
data_dir = "{data_dir}"

[security]
secret_file = "{secret}"

[destinations.files]
type = "jsonl"
directory = "{out}/files"

[destinations.special]
type = "jsonl"
directory = "{out}/special"
requires = ["influxdb"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_node(
    base: Path, name: str, port: int, leader: int | None, capabilities: list[str]
) -> subprocess.Popen[str]:
    config = base / f"{name}.toml"
    config.write_text(CONFIG.format(data_dir=base / name, out=base / "out", secret=base / "secret"))
    cmd = [sys.executable, "-m", "datalogger", "run", "--config", str(config), "--admin-port", str(port)]
    if leader is not None:
        cmd += ["--leader", f"127.0.0.1:{leader}"]
    for capability in capabilities:
        cmd += ["--capability", capability]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "running on" in line:
            return proc
    raise SystemExit(f"node {name} did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="rows per topic per node")
    parser.add_argument("--dir", default=None, help="working directory (default: a temp dir)")
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="three-nodes-"))
    base.mkdir(parents=True, exist_ok=True)
    secret = generate_secret(base / "secret")  # one secret for the whole convention (mode 0600)
    ports = [free_port(), free_port(), free_port()]
    procs = [start_node(base, "leader", ports[0], None, [])]
    procs.append(start_node(base, "member1", ports[1], ports[0], []))
    procs.append(start_node(base, "member2", ports[2], ports[0], ["influxdb"]))
    handles = [datalogger.connect(port, make_default=False, secret_file=secret) for port in ports]
    try:
        deadline = time.time() + 20
        while len(handles[0].nodes()) < 3 and time.time() < deadline:
            time.sleep(0.2)
        topics = [f"sensor{i}" for i in range(6)]
        for n, handle in enumerate(handles):
            for topic in topics:
                handle.log(topic, [{"node": n, "topic": topic, "i": i} for i in range(args.rows)])
        for handle in handles:
            handle.flush(timeout=60)
        print("members and what each delivers:")
        for member in handles[0].nodes():
            caps = ",".join(member["capabilities"]) or "-"
            print(f"  {member['node']} [{caps}]: {' '.join(member['holds']) or '-'}")
        for destination in ("files", "special"):
            total = 0
            for topic in topics:
                path = base / "out" / destination / f"{topic}.jsonl"
                total += sum(1 for _ in path.open()) if path.exists() else 0
            print(f"{destination}: {total} rows (expected {len(handles) * len(topics) * args.rows})")
        print(json.dumps({"ok": True, "dir": str(base)}))
    finally:
        for handle in reversed(handles):
            try:
                handle.shutdown(timeout=5)
            except datalogger.DataLoggerError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
