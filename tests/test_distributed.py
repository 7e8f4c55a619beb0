"""Distributed nodes: three nodes of a multiprocTCPBase convention on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import datalogger
from tests.conftest import free_port, kill_node
from tests.services import influxdb_or_skip, postgres_dsn_or_skip, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Node:
    """A `datalogger run` process and the handle to talk to it."""

    def __init__(self, config: Path, port: int, leader: int | None, capabilities: tuple[str, ...]) -> None:
        self.config, self.port, self.leader, self.capabilities = config, port, leader, capabilities
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> Node:
        cmd = [
            sys.executable,
            "-m",
            "datalogger",
            "run",
            "--config",
            str(self.config),
            "--admin-port",
            str(self.port),
        ]
        if self.leader is not None:
            cmd += ["--leader", f"127.0.0.1:{self.leader}"]
        for capability in self.capabilities:
            cmd += ["--capability", capability]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "running on" in line:
                break
        else:
            raise AssertionError("node did not start:\n" + "".join(self.output))
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()  # type: ignore[union-attr,arg-type]
        return self

    def handle(self) -> datalogger.DataLogger:
        return datalogger.connect(self.port, make_default=False)

    def kill(self) -> None:
        """SIGKILL the node's every process, Thespian's detached admin and actors included."""
        assert self.proc is not None
        assert kill_node(self.port, self.proc) >= 3

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.handle().shutdown(timeout=2)
            self.proc.wait(timeout=20)
        except Exception:
            self.kill()


@pytest.fixture
def pg_table():
    import psycopg

    dsn = postgres_dsn_or_skip()
    schema = unique_name("dist")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}"."rows" (id text, topic text, node bigint, n bigint)')
    yield dsn, schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def count_rows(dsn: str, schema: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        total, distinct = conn.execute(
            f'SELECT count(*), count(DISTINCT id) FROM "{schema}"."rows"'
        ).fetchone()
    return int(total), int(distinct)


def ids_in(dsn: str, schema: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(f'SELECT id FROM "{schema}"."rows"')}


def write_config(tmp_path: Path, name: str, dsn: str, schema: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'data_dir = "{tmp_path / name}"\n{extra}\n'
        f'[destinations.pg]\ntype = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\ntable = "rows"\n'
        "auto_create = false\nretry = { max_attempts = 1000, max_delay = 1.0 }\n"
    )
    return path


@pytest.fixture
def nodes():
    started: list[Node] = []
    yield started
    for node in reversed(started):
        node.stop()


def start_cluster(
    tmp_path: Path,
    nodes: list[Node],
    dsn: str,
    schema: str,
    extra: str = "",
    capabilities: tuple[tuple[str, ...], ...] = ((), (), ()),
) -> list[Node]:
    leader_port = free_port()
    leader = Node(
        write_config(tmp_path, "n0", dsn, schema, extra), leader_port, None, capabilities[0]
    ).start()
    nodes.append(leader)
    for i in (1, 2):
        member = Node(
            write_config(tmp_path, f"n{i}", dsn, schema, extra), free_port(), leader_port, capabilities[i]
        )
        nodes.append(member.start())
    wait_members(leader, 3)
    return nodes


def wait_nodes(
    handle: datalogger.DataLogger, ready: Any, what: str, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Poll ``handle.nodes()`` until ``ready(members)``; fail naming ``what`` was awaited."""
    deadline = time.time() + timeout
    members: list[dict[str, Any]] = []
    while time.time() < deadline:
        members = handle.nodes()
        if ready(members):
            return members
        time.sleep(0.2)
    raise AssertionError(f"expected {what}, have {members}")


def wait_members(node: Node, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    return wait_nodes(node.handle(), lambda members: len(members) == count, f"{count} members", timeout)


def log_rows(handle: datalogger.DataLogger, node: int, topics: int, chunks: int, size: int) -> set[str]:
    ids = set()
    for c in range(chunks):
        for t in range(topics):
            rows = [
                {"id": f"{node}-{t}-{c}-{i}", "topic": f"t{t}", "node": node, "n": i} for i in range(size)
            ]
            handle.log(f"t{t}", rows)
            ids.update(r["id"] for r in rows)
    return ids


def test_every_node_logs_to_20_topics_and_every_row_lands_once(tmp_path, nodes, pg_table):
    dsn, schema = pg_table
    start_cluster(tmp_path, nodes, dsn, schema)
    handles = [node.handle() for node in nodes]
    expected: set[str] = set()
    for i, handle in enumerate(handles):
        expected |= log_rows(handle, i, topics=20, chunks=3, size=100)
    for handle in handles:
        handle.flush(timeout=60)
    assert count_rows(dsn, schema) == (len(expected), len(expected)) == (18_000, 18_000)
    holds = {m["node"]: m["holds"] for m in handles[0].nodes()}
    assert len(holds) == 3
    assert sum(1 for pairs in holds.values() if pairs) >= 2, f"topics were not spread: {holds}"
    pairs = [p for ps in holds.values() for p in ps]
    assert len(pairs) == len(set(pairs)) == 20, "each topic/destination has exactly one owner"


def test_placement_by_capability_puts_influxdb_only_on_its_node(tmp_path, nodes, pg_table):
    host, http_port, _ = influxdb_or_skip()
    dsn, schema = pg_table
    database = unique_name("dist")
    extra = ""
    influx = (
        f'\n[destinations.influx]\ntype = "influxdb"\ndatabase = "{database}"\nhost = "{host}"\n'
        f'http_port = {http_port}\nrequires = ["influxdb"]\n'
    )
    start_cluster(tmp_path, nodes, dsn, schema, extra, capabilities=((), (), ("influxdb",)))
    for node in nodes:
        with open(node.config, "a") as handle:
            handle.write(influx)
    # the config is read at start: restart the three nodes with the InfluxDB destination
    for node in reversed(nodes):
        node.stop()
    for node in nodes:
        node.start()
    wait_members(nodes[0], 3)
    admin = nodes[0].handle()
    admin_influx = datalogger.start(  # a local handle just to reach InfluxDB's query API
        {
            "data_dir": str(tmp_path / "q"),
            "destinations": {
                "i": {"type": "influxdb", "database": database, "host": host, "http_port": http_port}
            },
        },
        base="simpleSystemBase",
        make_default=False,
    )
    try:
        admin_influx.destination("i").post_query(f'CREATE DATABASE "{database}"')
        handles = [node.handle() for node in nodes]
        base = time.time_ns()
        for i, handle in enumerate(handles):
            for t in range(6):
                rows = [{"node": i, "v": float(j), "n": j, "time": base + i * 1000 + j} for j in range(50)]
                handle.log(f"m{t}", rows)
        for handle in handles:
            handle.flush(timeout=60)
        influx_node = f"127.0.0.1:{nodes[2].port}"
        # Placement reports reach the registry after the rows: give them a moment.
        def influx_placed(found: list[dict[str, Any]]) -> bool:
            return any(m["node"] == influx_node and sum(p.endswith("/influx") for p in m["holds"]) == 6
                       for m in found)

        placed = wait_nodes(admin, influx_placed, f"6 InfluxDB workers on {influx_node}", 15)
        members = {m["node"]: m for m in placed}
        for node, member in members.items():
            influx_pairs = [p for p in member["holds"] if p.endswith("/influx")]
            if node == influx_node:
                assert len(influx_pairs) == 6 and member["capabilities"] == ["influxdb"]
            else:
                assert influx_pairs == [], f"{node} runs InfluxDB workers without the capability"
        total = 0
        for t in range(6):
            series = admin_influx.destination("i").query(f'SELECT count("v") FROM "m{t}"')
            total += series[0]["values"][0][1]
        assert total == 3 * 6 * 50
    finally:
        admin_influx.destination("i").post_query(f'DROP DATABASE "{database}"')
        admin_influx.shutdown()


def test_member_killed_mid_stream_loses_no_acknowledged_row_and_rejoins(tmp_path, nodes, pg_table):
    dsn, schema = pg_table
    start_cluster(tmp_path, nodes, dsn, schema)
    sender = nodes[0].handle()
    victim = nodes[1]
    victim_node = f"127.0.0.1:{victim.port}"
    acknowledged: set[str] = set()
    for c in range(40):
        for t in range(20):
            rows = [{"id": f"a-{t}-{c}-{i}", "topic": f"t{t}", "node": 0, "n": i} for i in range(25)]
            sender.log(f"t{t}", rows)
            acknowledged.update(r["id"] for r in rows)
        if c == 10:
            victim.kill()
            killed_at = time.time()
    members = wait_members(nodes[0], 2, timeout=15)
    assert victim_node not in {m["node"] for m in members}
    assert time.time() - killed_at < 15, "the dead member was not noticed within seconds"
    sender.flush(timeout=90)
    _, distinct = count_rows(dsn, schema)
    assert acknowledged <= ids_in(dsn, schema)
    assert distinct == len(acknowledged)
    # the member comes back, rejoins and takes work again
    victim.start()
    members = wait_members(nodes[0], 3)
    deadline = time.time() + 15
    while time.time() < deadline:
        holds = {m["node"]: m["holds"] for m in sender.nodes()}
        if holds.get(victim_node):
            break
        time.sleep(0.3)
    assert holds.get(victim_node), f"the restarted member took no work: {holds}"
    more = log_rows(sender, 9, topics=20, chunks=1, size=10)
    sender.flush(timeout=60)
    assert more <= ids_in(dsn, schema)


def test_a_system_not_on_the_allow_list_cannot_join(tmp_path, nodes, pg_table):
    dsn, schema = pg_table
    leader_port, member_port, stranger_port = free_port(), free_port(), free_port()
    extra = f'[cluster]\nallowed_members = ["127.0.0.1:{leader_port}", "127.0.0.1:{member_port}"]\n'
    leader = Node(write_config(tmp_path, "n0", dsn, schema, extra), leader_port, None, ()).start()
    nodes.append(leader)
    nodes.append(Node(write_config(tmp_path, "n1", dsn, schema), member_port, leader_port, ()).start())
    stranger = Node(write_config(tmp_path, "n2", dsn, schema), stranger_port, leader_port, ("influxdb",))
    nodes.append(stranger.start())
    members = wait_members(leader, 2)
    time.sleep(3)  # give the stranger every chance to register
    names = {m["node"] for m in leader.handle().nodes()}
    assert names == {f"127.0.0.1:{leader_port}", f"127.0.0.1:{member_port}"}, members
    stranger_handle = stranger.handle()
    stranger_handle.log("t0", [{"id": "s-1", "topic": "t0", "node": 2, "n": 1}])
    stranger_handle.flush(timeout=30)  # it can still deliver its own data, on its own
    leader_handle = leader.handle()
    leader_handle.log("t1", [{"id": "l-1", "topic": "t1", "node": 0, "n": 1}])
    leader_handle.flush(timeout=30)
    holds = {m["node"]: m["holds"] for m in leader_handle.nodes()}
    assert f"127.0.0.1:{stranger_port}" not in holds, "the stranger was given work"


def test_cluster_scope_reaches_subscribers_on_both_nodes_and_stores_once(tmp_path, nodes):
    import sqlite3
    from wsgiref.util import setup_testing_defaults

    from datalogger.analytics import AnalyticsWSGIMiddleware

    db = tmp_path / "requests.db"
    configs = []
    for i in range(2):
        path = tmp_path / f"p{i}.toml"
        path.write_text(
            f'data_dir = "{tmp_path / f"p{i}"}"\n[destinations.db]\ntype = "sqlite"\npath = "{db}"\n'
        )
        configs.append(path)
    leader = Node(configs[0], free_port(), None, ()).start()
    nodes.append(leader)
    nodes.append(Node(configs[1], free_port(), leader.port, ()).start())
    wait_members(leader, 2)
    time.sleep(1.5)  # a heartbeat round: each PubSub learns its peer
    handles = [node.handle() for node in nodes]
    subscriptions = [h.subscribe("requests") for h in handles]

    class ClusterScope:
        """The handle as the middleware sees it, broadcasting to every node."""

        def __init__(self, handle: datalogger.DataLogger) -> None:
            self.handle = handle
            self.log = handle.log

        def broadcast(self, event: Any) -> None:
            self.handle.broadcast(event, scope="cluster")

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = AnalyticsWSGIMiddleware(app, ClusterScope(handles[0]))
    for i in range(100):
        environ: dict[str, Any] = {"PATH_INFO": f"/page/{i % 7}"}
        setup_testing_defaults(environ)
        body = wrapped(environ, lambda status, headers, exc_info=None: None)
        list(body)
        getattr(body, "close", lambda: None)()
    handles[0].flush(timeout=30)
    orders = []
    for sub in subscriptions:
        received = []
        deadline = time.time() + 20
        while len(received) < 100 and time.time() < deadline:
            event = sub.get(timeout=1.0)
            if event is not None:
                received.append(event)
        assert len(received) == 100
        assert len({e.request_id for e in received}) == 100
        orders.append([e.request_id for e in received])
        sub.unsubscribe()
    assert orders[0] == orders[1], "the other node's subscriber got the events in another order"
    with sqlite3.connect(db) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchone()
    assert (total, distinct) == (100, 100), "a request was stored once per node"


def test_no_member_with_the_capability_keeps_chunks_until_one_joins(tmp_path, nodes):
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "leader"}"\n[destinations.gpu]\ntype = "jsonl"\n'
        f'directory = "{out}"\nrequires = ["gpu"]\n'
    )
    leader = Node(config, free_port(), None, ()).start()
    nodes.append(leader)
    handle = leader.handle()
    for i in range(5):
        handle.log("frames", [{"i": i * 10 + j} for j in range(10)])
    time.sleep(0.5)
    stats = handle.stats()["topics"]["frames"]["gpu"]
    assert "no member has the capabilities gpu" in stats["last_error"]
    assert stats["buffered"] == 50 and stats["delivered"] == 0
    assert not (out / "frames.jsonl").exists()
    member_config = tmp_path / "m.toml"
    member_config.write_text(config.read_text().replace(str(tmp_path / "leader"), str(tmp_path / "member")))
    nodes.append(Node(member_config, free_port(), leader.port, ("gpu",)).start())
    handle.flush(timeout=30)
    with open(out / "frames.jsonl") as lines:
        assert sorted(json.loads(line)["i"] for line in lines) == list(range(50))
