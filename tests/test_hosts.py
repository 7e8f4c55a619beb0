"""Several hosts for real: nodes in network namespaces on a private network (tests/netns.py).

One bed for the module. Its hosts, all on 10.8.0.0/24:

* ``l`` 10.8.0.11 leads a convention with the defaults (no ``allowed_members``);
  ``a`` 10.8.0.12 (capability ``gpu``) and ``b`` 10.8.0.13 join it with the
  defaults too (no ``--bind``): the cluster the first tests share;
* ``c`` 10.8.0.14 is a client host: the CLI and ``connect()`` run there;
* ``n1`` 10.8.0.1, ``n2`` 10.8.0.2, ``n3`` 10.8.0.3 run docs/security.md's
  WireGuard example as written, and a stranger it refuses.

Every node is a ``datalogger run`` inside its host, on admin port 1900 (each host
has its own ports). Rows go to JSONL files on the shared filesystem.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Bed, Host, NetnsNode, bed_or_skip, nodes_of, wait_nodes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
LEADER = "10.8.0.11"


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    bed_or_skip()
    made = Bed()
    try:
        for name, octet in (("l", 11), ("a", 12), ("b", 13), ("c", 14), ("n1", 1), ("n2", 2), ("n3", 3)):
            made.add(name, octet)
        yield made
    finally:
        made.close()


def config(path: Path, out: Path, extra: str = "") -> Path:
    """A node's TOML: its own data_dir, JSONL destinations ``f`` (anywhere) and ``g`` (``gpu`` only)."""
    path.write_text(
        f'data_dir = "{path.with_suffix("")}"\n{extra}\n'
        "[cluster]\nheartbeat_interval = 0.3\nheartbeat_timeout = 1.5\n"
        f'[destinations.f]\ntype = "jsonl"\ndirectory = "{out / "f"}"\n'
        f'[destinations.g]\ntype = "jsonl"\ndirectory = "{out / "g"}"\nrequires = ["gpu"]\n'
    )
    return path


@pytest.fixture(scope="module")
def cluster(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The leader ``l`` and members ``a`` (gpu) and ``b``, all on their defaults."""
    tmp = tmp_path_factory.mktemp("hosts")
    out = tmp / "out"
    leader = NetnsNode(bed.hosts["l"], config(tmp / "l.toml", out), "--bind", LEADER).start()
    members = [
        NetnsNode(
            bed.hosts["a"], config(tmp / "a.toml", out), "--leader", f"{LEADER}:1900", "--capability", "gpu"
        ),
        NetnsNode(bed.hosts["b"], config(tmp / "b.toml", out), "--leader", f"{LEADER}:1900"),
    ]
    for member in members:
        member.start(wait=False)
    started = [leader, *members]
    try:
        for member in members:
            member.wait_running()
        wait_nodes(bed.hosts["c"], LEADER, lambda m: len(m) == 3, "3 members")
        yield {"out": out, "tmp": tmp, "leader": leader, "a": members[0], "b": members[1]}
    finally:
        for node in reversed(started):
            node.stop()


def jsonl_ids(directory: Path) -> list[str]:
    """Every ``id`` in the JSONL files of ``directory``."""
    ids: list[str] = []
    for path in sorted(directory.glob("*.jsonl")):
        with open(path) as lines:
            ids.extend(json.loads(line)["id"] for line in lines if line.strip())
    return ids


# --------------------------------------------------------------------------- defaults, placement


def test_defaults_bind_each_member_to_its_address_towards_the_leader(cluster: dict[str, Any]) -> None:
    assert "running on 10.8.0.11:1900" in cluster["leader"].output()
    assert "running on 10.8.0.12:1900" in cluster["a"].output()  # no --bind: its address towards l
    assert "running on 10.8.0.13:1900" in cluster["b"].output()
    assert "refused" not in cluster["leader"].output()  # the leader admitted itself and its network
    listening = cluster["a"].host.run("ss", "-Hltn").stdout
    addresses = {line.split()[3].rpartition(":")[0] for line in listening.splitlines()}
    assert addresses == {"10.8.0.12"}, f"a node listens beside its bind address: {listening}"


def test_capability_placement_across_hosts(bed: Bed, cluster: dict[str, Any]) -> None:
    client = bed.hosts["c"]
    rows = "".join(json.dumps({"id": f"p{t}-{i}"}) + "\n" for t in range(4) for i in range(5))
    for t in range(4):  # logged on a member, from another host
        mine = "".join(line + "\n" for line in rows.splitlines() if line.startswith(f'{{"id": "p{t}-'))
        result = client.datalogger("log", f"p{t}", "--host", "10.8.0.13", input=mine)
        assert result.returncode == 0, result.stdout + result.stderr

    def placed(members: list[dict[str, Any]]) -> bool:
        holds = {m["node"]: m["holds"] for m in members}
        return sum(p.startswith("p") and p.endswith("/g") for p in holds.get("10.8.0.12:1900", [])) == 4

    members = wait_nodes(client, LEADER, placed, "the 4 gpu workers on 10.8.0.12", 20)
    for member in members:
        gpu_pairs = [p for p in member["holds"] if p.endswith("/g")]
        if member["node"] != "10.8.0.12:1900":
            assert gpu_pairs == [], f"{member['node']} runs gpu workers without the capability"
    out = cluster["out"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len([i for i in jsonl_ids(out / "g") if i.startswith("p")]) < 20:
        time.sleep(0.2)
    assert sorted(i for i in jsonl_ids(out / "g") if i.startswith("p")) == sorted(
        f"p{t}-{i}" for t in range(4) for i in range(5)
    )
    assert sorted(i for i in jsonl_ids(out / "f") if i.startswith("p")) == sorted(
        f"p{t}-{i}" for t in range(4) for i in range(5)
    )


# --------------------------------------------------------------------------- clients on another host


def test_cli_and_connect_from_another_host(bed: Bed, cluster: dict[str, Any]) -> None:
    client = bed.hosts["c"]
    lines = "".join(json.dumps({"id": f"cli-{i}"}) + "\n" for i in range(3))
    logged = client.datalogger("log", "greet", "--host", LEADER, input=lines)
    assert logged.returncode == 0 and "logged 3 rows to greet" in logged.stdout, logged.stdout + logged.stderr

    code = (
        "import datalogger\n"
        f"dl = datalogger.connect(1900, host='{LEADER}')\n"
        "seq = dl.log('greet', [{'id': 'py-1'}, {'id': 'py-2'}])\n"
        "dl.flush(timeout=30)\n"
        "print('seq', seq)\n"
        "dl.close()\n"
    )
    python = client.python(code)
    assert python.returncode == 0 and re.search(r"^seq \d+$", python.stdout, re.M), (
        python.stdout + python.stderr
    )

    status = client.datalogger("status", "--host", LEADER, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    greet = json.loads(status.stdout)["topics"]["greet"]
    assert greet["f"]["received"] == 5 and greet["f"]["delivered"] == 5

    # an explicit --bind (this host's own address), against a member
    bound = client.datalogger("status", "--host", "10.8.0.13", "--bind", "10.8.0.14", "--json")
    assert bound.returncode == 0 and json.loads(bound.stdout)["cluster"]["node"] == "10.8.0.13:1900", (
        bound.stdout + bound.stderr
    )

    nodes = client.datalogger("nodes", "--host", LEADER)
    assert nodes.returncode == 0, nodes.stdout + nodes.stderr
    for address in ("10.8.0.11:1900", "10.8.0.12:1900", "10.8.0.13:1900"):
        assert address in nodes.stdout

    health = client.datalogger("health", "--host", LEADER)
    assert health.returncode == 0 and health.stdout.startswith("healthy"), health.stdout + health.stderr

    assert sorted(i for i in jsonl_ids(cluster["out"] / "f") if i.startswith(("cli-", "py-"))) == [
        "cli-0",
        "cli-1",
        "cli-2",
        "py-1",
        "py-2",
    ]


def test_a_client_on_a_host_with_no_node_is_told_so(bed: Bed) -> None:
    result = bed.hosts["c"].datalogger("status", "--host", "10.8.0.99", timeout=30)
    assert result.returncode == 2 and "no datalogger node is listening on 10.8.0.99:1900" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- a member cut off


def test_member_cut_off_and_restored_while_rows_flow(bed: Bed, cluster: dict[str, Any]) -> None:
    tmp: Path = cluster["tmp"]
    acked, stop = tmp / "acked.txt", tmp / "stop"
    client = bed.hosts["c"]
    logger = client.popen(
        sys.executable, "-m", "tests.netns_logger", LEADER, str(acked), str(stop), log=tmp / "logger.log"
    )
    try:

        def acknowledged() -> int:
            return sum(1 for _ in open(acked)) if acked.exists() else 0

        deadline = time.monotonic() + 20
        while acknowledged() < 400:
            assert logger.poll() is None and time.monotonic() < deadline, (tmp / "logger.log").read_text()
            time.sleep(0.05)
        bed.cut("a")
        cut_at, before_cut = time.monotonic(), acknowledged()
        members = wait_nodes(
            client,
            LEADER,
            lambda m: {x["node"] for x in m} == {"10.8.0.11:1900", "10.8.0.13:1900"},
            "10.8.0.12 dropped",
            15,
        )
        dropped_after = time.monotonic() - cut_at
        during_cut = acknowledged() - before_cut
        bed.restore("a")
        wait_nodes(
            client,
            LEADER,
            lambda m: any(
                x["node"] == "10.8.0.12:1900" and any(p.endswith("/g") for p in x["holds"]) for x in m
            ),
            "10.8.0.12 back, delivering the gpu destination",
            30,
        )
        more = acknowledged()
        deadline = time.monotonic() + 10
        while acknowledged() < more + 400:  # rows flow after the restore too
            assert time.monotonic() < deadline, (tmp / "logger.log").read_text()
            time.sleep(0.05)
    finally:
        stop.write_text("")
        try:
            logger.wait(timeout=90)
        except subprocess.TimeoutExpired:
            logger.kill()
    report = json.loads((tmp / "logger.log").read_text().strip().splitlines()[-1])
    assert report["flush"] == "ok", report
    assert dropped_after < 10, "the cut member was not dropped within seconds"
    assert during_cut > 0, f"no row was acknowledged while the member was cut off: {members}"
    ids = {line.strip() for line in open(acked) if line.strip()}
    assert len(ids) >= 1200
    for destination in ("f", "g"):
        delivered = [i for i in jsonl_ids(cluster["out"] / destination) if i.startswith("t")]
        missing = ids - set(delivered)
        assert not missing, (
            f"{len(missing)} acknowledged rows never reached {destination}: {sorted(missing)[:5]}"
        )


# --------------------------------------------------------------------------- docs/security.md as written


def security_example() -> tuple[list[str], str]:
    """The ``datalogger run`` commands and ``node1.toml`` of docs/security.md's WireGuard example."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text[text.index("### WireGuard between two nodes") : text.index("### A tunnel made by SSH")]
    commands = re.findall(r"^\$ (datalogger run [^#\n]*?)\s*(?:#.*)?$", section, re.M)
    toml = re.search(r"`node1.toml`:\n\n```toml\n(.*?)```", section, re.S)
    assert len(commands) == 2 and toml, "docs/security.md's WireGuard example changed shape"
    return commands, toml.group(1)


def test_security_example_runs_as_written_and_refuses_a_stranger(bed: Bed, tmp_path: Path) -> None:
    commands, node1_toml = security_example()
    assert commands[0] == "datalogger run --config node1.toml --bind 10.8.0.1"
    hosts: list[Host] = [bed.hosts["n1"], bed.hosts["n2"], bed.hosts["n3"]]
    for i in (1, 2, 3):
        text = node1_toml.replace("/var/lib/datalogger", str(tmp_path / f"node{i}"))
        if i > 1:  # node2.toml "is the same without the [cluster] table"
            text = re.sub(r"^\[cluster\]\n(?:(?!\[).*\n)*", "", text, flags=re.M)
        (tmp_path / f"node{i}.toml").write_text(text)
    stranger_command = commands[1].replace("node2.toml", "node3.toml")
    nodes = []
    try:
        for host, command in zip(hosts, [*commands, stranger_command], strict=True):
            argv = command.split()[1:]
            node = NetnsNode(host, tmp_path / argv[2], *argv[3:], cwd=tmp_path)
            nodes.append(node.start())
        n1, n2, n3 = nodes
        assert "running on 10.8.0.1:1900" in n1.output() and "running on 10.8.0.2:1900" in n2.output()
        client = bed.hosts["c"]
        members = wait_nodes(client, "10.8.0.1", lambda m: len(m) == 2, "node1 and node2", 20)
        assert {m["node"] for m in members} == {"10.8.0.1:1900", "10.8.0.2:1900"}
        # the stranger at 10.8.0.3 is refused, and says so: in its log, nodes and health
        deadline = time.monotonic() + 15
        while "is refused by the leader 10.8.0.1:1900" not in n3.output():
            assert time.monotonic() < deadline, n3.output()
            time.sleep(0.2)
        assert "not in cluster.allowed_members" in n3.output()
        assert "refused node 10.8.0.3:1900" in n1.output()
        assert "refused" not in n2.output() and "10.8.0.1:1900: not in" not in n1.output()
        refused = client.datalogger("nodes", "--host", "10.8.0.3")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "refused" in refused.stdout and "is refused by its leader" in refused.stderr
        health = client.datalogger("health", "--host", "10.8.0.3")
        assert health.returncode == 1 and "refused by its leader" in health.stdout, health.stdout
        assert {m["node"] for m in nodes_of(client, "10.8.0.1")} == {"10.8.0.1:1900", "10.8.0.2:1900"}
        # the two admitted nodes work together; the stranger delivers its own rows alone
        for host in ("10.8.0.2", "10.8.0.3"):
            result = client.datalogger("log", "green", "--host", host, input='{"id": "x"}\n')
            assert result.returncode == 0, result.stdout + result.stderr
        # and a node is stopped from another host
        stopped = client.datalogger("shutdown", "--host", "10.8.0.3")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert n3.proc is not None and n3.proc.wait(timeout=20) == 0
        assert n3.host.pids() == [], "the stopped node left processes in its host"
    finally:
        for node in reversed(nodes):
            node.stop()
    import sqlite3

    total = 0
    for i in (1, 2, 3):
        db = tmp_path / f"node{i}" / "rows.db"
        if db.exists():
            with sqlite3.connect(db) as conn:
                total += conn.execute('SELECT count(*) FROM "green"').fetchone()[0]
    assert total == 2
