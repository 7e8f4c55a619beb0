"""Durability: the write-ahead log, acknowledgements, ProcessStatus, crash recovery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from datalogger.wal import WriteAheadLog
from tests.conftest import free_port, kill_node, recorder
from tests.dests import rows_in


def sqlite_ids(path: Path, table: str) -> list[int]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return [r[0] for r in conn.execute(f'SELECT id FROM "{table}"')]
        except sqlite3.OperationalError:
            return []


def test_log_returns_after_the_chunk_is_in_the_write_ahead_log(tmp_path, start_node):
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    cfg = {
        "data_dir": str(tmp_path / "state"),
        "destinations": {"d": recorder(out, "Switchable", retry={"max_attempts": 1000})},
    }
    dl = start_node(cfg, base="simpleSystemBase")
    seqs = [dl.log("green", [{"n": i}]) for i in range(3)]
    assert seqs == [1, 2, 3]
    wal = WriteAheadLog(tmp_path / "state" / "wal", "green")
    assert [(seq, rows) for seq, rows in wal.read_from(0)] == [
        (1, [{"n": 0}]),
        (2, [{"n": 1}]),
        (3, [{"n": 2}]),
    ]
    wal.close()


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_every_fsync_policy_delivers(tmp_path, start_node, fsync):
    dl = start_node(
        {
            "data_dir": str(tmp_path / "s"),
            "wal": {"fsync": fsync},
            "destinations": {"db": {"type": "sqlite", "path": str(tmp_path / "o.db")}},
        }
    )
    for i in range(20):
        dl.log("green", [{"id": i}])
    dl.flush(timeout=30)
    assert sorted(sqlite_ids(tmp_path / "o.db", "green")) == list(range(20))


def test_process_status_records_the_last_chunk_per_destination(tmp_path, start_node):
    dl = start_node(
        {
            "data_dir": str(tmp_path / "s"),
            "destinations": {
                "db": {"type": "sqlite", "path": str(tmp_path / "o.db")},
                "files": {"type": "jsonl", "directory": str(tmp_path / "j")},
            },
        }
    )
    last = 0
    for i in range(10):
        last = dl.log("green", [{"id": i}])
    dl.flush(timeout=30)
    deadline = time.time() + 10
    while dl.last_processed("green/db") != last and time.time() < deadline:
        time.sleep(0.05)
    assert dl.last_processed("green/db") == last
    assert dl.last_processed("green/files") == last
    assert dl.processed("green/db", last) is True
    assert dl.processed("green/db", last + 1) is False
    assert dl.last_processed("nosuch/db") is None
    dl.reset()
    assert dl.last_processed("green/db") is None


def test_killed_process_status_reloads_from_its_adapter(tmp_path, start_node):
    dl = start_node(
        {
            "data_dir": str(tmp_path / "s"),
            "destinations": {"db": {"type": "sqlite", "path": str(tmp_path / "o.db")}},
        }
    )
    last = 0
    for i in range(5):
        last = dl.log("green", [{"id": i}])
    dl.flush(timeout=30)
    deadline = time.time() + 10
    while dl.last_processed("green/db") != last and time.time() < deadline:
        time.sleep(0.05)
    info = dl.process_status_info()
    assert info["adapter"] == "sqlite" and info["entities"] == 1
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            new = dl.process_status_info(timeout=1.0)
        except Exception:
            new = info
        if new["pid"] != info["pid"]:
            break
        time.sleep(0.1)
    assert new["pid"] != info["pid"], "ProcessStatus was not restarted"
    assert dl.last_processed("green/db") == last  # reloaded from the SQLite adapter
    dl.log("green", [{"id": 99}])
    dl.flush(timeout=30)
    assert len(sqlite_ids(tmp_path / "o.db", "green")) == 6


def test_normal_restart_sends_no_duplicates(tmp_path, start_node):
    out = tmp_path / "out"
    cfg = {"data_dir": str(tmp_path / "s"), "destinations": {"d": recorder(out)}}
    dl = start_node(cfg)
    for i in range(10):
        dl.log("green", [{"n": i}])
    dl.flush(timeout=30)
    assert dl.shutdown() == 0
    dl2 = start_node(cfg)
    dl2.log("green", [{"n": 10}])
    dl2.flush(timeout=30)
    assert [r["n"] for r in rows_in(str(out), "green")] == list(range(11))
    assert dl2.stats()["topics"]["green"]["d"]["replayed"] == 0


def test_unacknowledged_chunks_are_replayed_in_order_before_new_data(tmp_path, start_node):
    state = tmp_path / "s"
    wal = WriteAheadLog(state / "wal", "green")
    for i in range(5):
        wal.append([{"n": i}])
    wal.close()
    out = tmp_path / "out"
    dl = start_node({"data_dir": str(state), "destinations": {"d": recorder(out)}})
    dl.log("green", [{"n": 5}])
    dl.flush(timeout=30)
    assert [r["n"] for r in rows_in(str(out), "green")] == [0, 1, 2, 3, 4, 5]
    assert dl.stats()["topics"]["green"]["d"]["replayed"] == 5


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "garbage"])
def test_torn_or_corrupt_wal_tail_is_truncated_and_the_rest_delivered(tmp_path, start_node, caplog, damage):
    state = tmp_path / "s"
    wal = WriteAheadLog(state / "wal", "green")
    for i in range(4):
        wal.append([{"n": i, "pad": "x" * 50}])
    wal.close()
    segment = sorted((state / "wal" / "green").iterdir())[0]
    data = segment.read_bytes()
    if damage == "truncate":
        segment.write_bytes(data[:-20])  # the last record loses its end
    elif damage == "corrupt":
        segment.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])  # CRC mismatch
    else:
        segment.write_bytes(data + b"\x00\x00\x01\x00garbage")  # a torn header and payload
    out = tmp_path / "out"
    dl = start_node({"data_dir": str(state), "destinations": {"d": recorder(out)}})
    dl.flush(timeout=30)
    expected = [0, 1, 2, 3] if damage == "garbage" else [0, 1, 2]
    assert [r["n"] for r in rows_in(str(out), "green")] == expected
    dl.log("green", [{"n": 10}])
    dl.flush(timeout=30)
    assert [r["n"] for r in rows_in(str(out), "green")] == [*expected, 10]


def test_sigkill_worker_while_50000_rows_stream_loses_nothing_acknowledged(tmp_path, start_node):
    db = tmp_path / "o.db"
    pids = tmp_path / "pids"
    dl = start_node(
        {
            "data_dir": str(tmp_path / "s"),
            "destinations": {"db": {"type": "tests.dests:PidSqlite", "path": str(db), "pid_dir": str(pids)}},
        }
    )
    acknowledged: list[int] = []
    for chunk in range(50):
        rows = [{"id": chunk * 1000 + i} for i in range(1000)]
        dl.log("green", rows)
        acknowledged.extend(r["id"] for r in rows)
        if chunk == 20:
            os.kill(int((pids / "green.pid").read_text()), signal.SIGKILL)
    dl.flush(timeout=60)
    stored = set(sqlite_ids(db, "green"))
    assert set(acknowledged) <= stored
    assert len(acknowledged) == 50_000
    assert dl.stats()["topics"]["green"]["db"]["restarts"] == 1


def run_node(config: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "datalogger", "run", "--config", str(config), "--admin-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "running on" in line:
            break
    else:
        raise AssertionError("node did not start:\n" + "".join(seen))
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


def write_config(tmp_path: Path, destination: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'data_dir = "{tmp_path / "state"}"\n\n[destinations.db]\n{destination}\n')
    return path


def stream_and_kill(tmp_path: Path, config: Path, total_chunks: int = 60) -> list[int]:
    import datalogger

    port = free_port()
    node = run_node(config, port)
    acknowledged: list[int] = []
    try:
        dl = datalogger.connect(port, make_default=False)
        for chunk in range(total_chunks):
            rows = [{"id": chunk * 500 + i, "v": chunk} for i in range(500)]
            dl.log("green", rows)
            acknowledged.extend(r["id"] for r in rows)
            if chunk == total_chunks // 2:
                assert kill_node(port, node) >= 3
                break
    finally:
        if node.poll() is None:
            kill_node(port, node)
    # start again on the same data dir: the log replays what was not acknowledged
    port = free_port()
    node = run_node(config, port)
    try:
        dl = datalogger.connect(port, make_default=False)
        dl.flush(timeout=60)
        dl.shutdown()
    finally:
        if node.poll() is None:
            node.wait(timeout=30)
    return acknowledged


def test_sigkill_of_the_whole_node_then_restart_loses_nothing_acknowledged(tmp_path):
    db = tmp_path / "o.db"
    config = write_config(tmp_path, f'type = "sqlite"\npath = "{db}"')
    acknowledged = stream_and_kill(tmp_path, config)
    assert len(acknowledged) > 10_000
    assert set(acknowledged) <= set(sqlite_ids(db, "green"))


@pytest.mark.integration
def test_sigkill_of_the_whole_node_with_conflict_key_is_exactly_once(tmp_path):
    import psycopg

    from tests.services import postgres_dsn_or_skip, unique_name

    dsn = postgres_dsn_or_skip()
    schema = unique_name("crash")
    config = write_config(
        tmp_path,
        f'type = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\ntable = "{{topic}}"\nconflict_key = ["id"]',
    )
    try:
        acknowledged = stream_and_kill(tmp_path, config)
        with psycopg.connect(dsn) as conn:
            count, distinct = conn.execute(
                f'SELECT count(*), count(DISTINCT id) FROM "{schema}"."green"'
            ).fetchone()
            stored = {r[0] for r in conn.execute(f'SELECT id FROM "{schema}"."green"')}
        assert set(acknowledged) <= stored
        assert count == distinct, "a replay wrote a duplicate"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_sigkill_topic_supervisor_restarts_and_replays_from_the_log(tmp_path, start_node):
    db = tmp_path / "o.db"
    dl = start_node({"data_dir": str(tmp_path / "s"),
                     "destinations": {"db": {"type": "sqlite", "path": str(db)}}})
    acknowledged: list[int] = []
    for chunk in range(20):
        rows = [{"id": chunk * 100 + i} for i in range(100)]
        dl.log("green", rows)  # after the first, sent straight to the topic's supervisor
        acknowledged.extend(r["id"] for r in rows)
        if chunk == 10:
            supervisor = psutil.Process(dl.stats()["supervisor_pids"]["green"])
            old_workers = supervisor.children()
            assert old_workers, "the topic's supervisor has no worker process"
            supervisor.send_signal(signal.SIGKILL)
    dl.flush(timeout=60)
    assert set(acknowledged) <= set(sqlite_ids(db, "green"))
    # The killed supervisor's worker notices that its parent is gone and exits.
    _, alive = psutil.wait_procs(old_workers, timeout=15)
    assert not alive, f"orphaned worker processes still running: {[p.pid for p in alive]}"
