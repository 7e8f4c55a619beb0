"""The core: the actor tree, log(), routing, isolation, supervision, bad input."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from thespian.actors import ActorSystem

import datalogger
from datalogger.messages import Log
from tests.conftest import BASES, recorder
from tests.dests import read_lines, rows_in


def two_destinations(tmp_path: Path) -> dict:
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "db": {"type": "sqlite", "path": str(tmp_path / "out.db")},
            "files": {"type": "jsonl", "directory": str(tmp_path / "jsonl")},
        },
    }


def count_sqlite(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


@pytest.mark.parametrize("base", BASES)
def test_two_topics_two_destinations_deliver_every_row(tmp_path, start_node, base):
    dl = start_node(two_destinations(tmp_path), base=base)
    for i in range(50):
        dl.log("green", [{"id": i * 10 + j, "colour": "green"} for j in range(10)])
        dl.log("red", [{"id": i * 7 + j, "colour": "red"} for j in range(7)])
    dl.log("red", {"id": -1, "colour": "red"})  # a single row is a chunk too
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db", "green") == 500
    assert count_sqlite(tmp_path / "out.db", "red") == 351
    assert count_lines(tmp_path / "jsonl" / "green.jsonl") == 500
    assert count_lines(tmp_path / "jsonl" / "red.jsonl") == 351
    stats = dl.stats()
    assert stats["topics"]["green"]["db"]["received"] == 500
    assert stats["topics"]["green"]["db"]["delivered"] == 500
    assert stats["topics"]["red"]["files"]["delivered"] == 351
    assert stats["topics"]["red"]["files"]["failed"] == 0


def test_slow_topic_does_not_delay_another(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "destinations": {"rec": recorder(out, slow_topic="red", delay=5.0)},
        }
    )
    dl.log("red", [{"n": 1}])
    time.sleep(0.2)  # red's worker is now inside its 5 s send
    t0 = time.time()
    dl.log("green", [{"n": 2}])
    deadline = time.time() + 4
    while not rows_in(str(out), "green") and time.time() < deadline:
        time.sleep(0.02)
    green = read_lines(str(out / "green.jsonl"))
    assert green, "green was not delivered while red was slow"
    assert green[0]["at"] - t0 < 1.0
    assert not rows_in(str(out), "red")  # red is still sleeping
    dl.flush(timeout=20)
    assert len(rows_in(str(out), "red")) == 1


@pytest.mark.parametrize("base", BASES)
def test_send_async_calls_on_success_and_on_error(tmp_path, start_node, base):
    out = tmp_path / "out"
    dest = recorder(out, "Callbacks", send_async=True, retry={"max_attempts": 1})
    dl = start_node({"data_dir": str(tmp_path / "state"), "destinations": {"cb": dest}}, base=base)
    dl.log("green", [{"n": 1}, {"n": 2}])
    dl.log("green", [{"n": 3, "fail": True}])
    dl.flush(timeout=30)
    calls = read_lines(str(out / "callbacks.jsonl"))
    success = [c for c in calls if c["kind"] == "success"]
    failure = [c for c in calls if c["kind"] == "error"]
    assert len(success) == 1 and len(failure) == 1
    assert success[0]["topic"] == "green"
    assert success[0]["data"] == [{"n": 1}, {"n": 2}]
    assert success[0]["result"]["stored"] == 2
    assert failure[0]["topic"] == "green"
    assert failure[0]["data"] == [{"n": 3, "fail": True}]
    assert failure[0]["type"] == "PermanentError"
    assert "row marked fail" in failure[0]["reason"]
    if base == "multiprocTCPBase":
        # each chunk was sent from its own short-lived SendActor process
        assert success[0]["result"]["pid"] != os.getpid()


def test_send_async_crash_of_send_actor_calls_on_error(tmp_path, start_node):
    out = tmp_path / "out"
    dest = recorder(out, "CrashOnMarker", send_async=True, retry={"max_attempts": 2, "initial_delay": 0.1})
    dl = start_node({"data_dir": str(tmp_path / "state"), "destinations": {"c": dest}})
    dl.log("green", [{"crash": True, "n": 1}])
    dl.flush(timeout=30)
    # the first SendActor died; the retry in a new SendActor delivered the chunk
    assert rows_in(str(out), "green") == [{"crash": True, "n": 1}]
    stats = dl.stats()["topics"]["green"]["c"]
    assert stats["failed"] == 1 and stats["delivered"] == 1
    assert "exited without reporting" in stats["last_error"]


def test_destination_that_raises_is_restarted_and_later_chunks_arrive(tmp_path, start_node):
    out = tmp_path / "out"
    dest = recorder(out, "RaisesOnce", retry={"initial_delay": 0.05})
    dl = start_node({"data_dir": str(tmp_path / "state"), "destinations": {"r": dest}})
    dl.log("green", [{"n": 0, "boom": True}])
    for i in range(1, 20):
        dl.log("green", [{"n": i}])
    dl.flush(timeout=30)
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == list(range(20))
    assert dl.stats()["topics"]["green"]["r"]["failed"] == 1


def test_killed_worker_is_restarted_and_its_chunk_delivered_again(tmp_path, start_node):
    out = tmp_path / "out"
    dest = recorder(out, "Pid", slow_topic="green", delay=1.0)
    dl = start_node({"data_dir": str(tmp_path / "state"), "destinations": {"p": dest}})
    dl.log("green", [{"n": 0}])
    dl.flush(timeout=30)
    pid = int((out / "green.pid").read_text())
    assert pid != os.getpid()
    dl.log("green", [{"n": 1}])  # the worker is now sleeping inside send_data with this chunk
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    for i in range(2, 5):
        dl.log("green", [{"n": i}])
    dl.flush(timeout=30)
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == [0, 1, 2, 3, 4]
    assert int((out / "green.pid").read_text()) != pid
    assert dl.stats()["topics"]["green"]["p"]["restarts"] == 1


def test_worker_process_crash_inside_send_data_loses_nothing(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(
        {"data_dir": str(tmp_path / "state"), "destinations": {"c": recorder(out, "CrashOnMarker")}}
    )
    dl.log("green", [{"n": 0, "crash": True}])
    for i in range(1, 10):
        dl.log("green", [{"n": i}])
    dl.flush(timeout=30)
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == list(range(10))


@pytest.mark.parametrize("base", BASES)
def test_prefix_routing(tmp_path, start_node, base):
    out = tmp_path / "out"
    config = {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "metrics": recorder(out / "metrics", prefix="metrics."),
            "audit": recorder(out / "audit", prefix="audit."),
            "everything": recorder(out / "all"),
        },
    }
    dl = start_node(config, base=base)
    dl.log("metrics.cpu", [{"v": 1}])
    dl.log("audit.login", [{"user": "ann"}])
    dl.log("other", [{"x": 1}])
    dl.flush(timeout=30)
    assert rows_in(str(out / "metrics"), "metrics.cpu") == [{"v": 1}]
    assert rows_in(str(out / "metrics"), "audit.login") == []
    assert rows_in(str(out / "audit"), "audit.login") == [{"user": "ann"}]
    assert rows_in(str(out / "audit"), "metrics.cpu") == []
    for topic in ("metrics.cpu", "audit.login", "other"):
        assert len(rows_in(str(out / "all"), topic)) == 1


def test_topic_no_destination_takes_is_refused(tmp_path, start_node):
    dl = start_node(
        {
            "data_dir": str(tmp_path / "s"),
            "destinations": {"m": recorder(tmp_path / "o", prefix="metrics.")},
        },
        base="simpleSystemBase",
    )
    with pytest.raises(datalogger.InvalidTopic, match="no destination takes topic 'other'"):
        dl.log("other", [{"x": 1}])


class Unserialisable:
    pass


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    ("topic", "data", "error", "match"),
    [
        ("", [{"a": 1}], datalogger.InvalidTopic, "must not be empty"),
        ("a" * 256, [{"a": 1}], datalogger.InvalidTopic, "256 characters"),
        ("bad topic/../x", [{"a": 1}], datalogger.InvalidTopic, "outside"),
        (42, [{"a": 1}], datalogger.InvalidTopic, "must be a str"),
        ("green", "just a string", datalogger.InvalidData, "must be a row"),
        ("green", [], datalogger.InvalidData, "empty list"),
        ("green", [{"a": 1}, 5], datalogger.InvalidData, "row 1 is a int"),
        ("green", [{1: "a"}], datalogger.InvalidData, "not a str"),
        ("green", [{"a": Unserialisable()}], datalogger.InvalidData, "cannot be serialised"),
    ],
)
def test_bad_input_raises_clear_error_and_system_keeps_working(
    tmp_path, start_node, base, topic, data, error, match
):
    dl = start_node(two_destinations(tmp_path), base=base)
    dl.log("green", [{"id": 1}])
    with pytest.raises(error, match=match):
        dl.log(topic, data)
    dl.log("green", [{"id": 2}])
    dl.log("red", [{"id": 3}])
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db", "green") == 2
    assert count_sqlite(tmp_path / "out.db", "red") == 1


def test_bad_log_message_told_directly_is_counted_not_fatal(tmp_path, start_node):
    dl = start_node(two_destinations(tmp_path))
    system = ActorSystem("multiprocTCPBase", {"Admin Port": dl.admin_port}, transientUnique=True)
    system.tell(dl.router, Log("green", [{"id": 1}]))
    system.tell(dl.router, Log("no good/", [{"id": 1}]))
    system.tell(dl.router, Log("green", [{"id": object.__name__, "x": [1, 2]}]))
    # tells from another endpoint are not ordered with this handle's requests: wait for them
    deadline = time.time() + 20
    while time.time() < deadline:
        topic = dl.stats()["topics"].get("green", {})
        if topic.get("db", {}).get("received") == 2 and dl.stats()["rejected"] == 1:
            break
        time.sleep(0.05)
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db", "green") == 2
    stats = dl.stats()
    assert stats["rejected"] == 1
    assert "outside" in stats["last_rejection"]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"destinations": {"x": {"type": "nosuch"}}}, "unknown destination type 'nosuch'"),
        (
            {"destinations": {"x": {"type": "sqlite", "path": "a.db", "pth": 1}}},
            "unknown option 'pth'",
        ),
        ({"destinations": {"x": {"type": "sqlite"}}}, "missing required option 'path'"),
        (
            {"destinations": {"x": {"type": "tests.dests:NeedsOption"}}},
            "missing required option 'url'",
        ),
        ({"destinations": {"x": {"path": "a.db"}}}, "missing required option 'type'"),
        ({"destinations": {}}, "no destinations"),
        (
            {"destinations": {"x": {"type": "sqlite", "path": "a", "overflow": "x"}}},
            "overflow must be one of",
        ),
        (
            {"destinations": {"x": {"type": "sqlite", "path": "a", "retry": {"tries": 3}}}},
            "unknown option 'tries'",
        ),
        (
            {"destinations": {"x": {"type": "sqlite", "path": "a"}}, "bogus": 1},
            "unknown top-level option 'bogus'",
        ),
        (
            {"destinations": {"bad name": {"type": "sqlite", "path": "a"}}},
            "destination name 'bad name'",
        ),
    ],
)
def test_malformed_config_is_named_at_start(config, match):
    with pytest.raises(datalogger.ConfigError, match=match):
        datalogger.start(config, base="simpleSystemBase")


def test_toml_config_file(tmp_path, start_node):
    path = tmp_path / "datalogger.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "state"}"\n'
        f'[destinations.db]\ntype = "sqlite"\npath = "{tmp_path / "t.db"}"\n'
    )
    dl = start_node(str(path), base="simpleSystemBase")
    dl.log("green", [{"a": 1}])
    dl.flush()
    assert count_sqlite(tmp_path / "t.db", "green") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[destinations\n")
    with pytest.raises(datalogger.ConfigError, match="not valid TOML"):
        datalogger.start(str(bad), base="simpleSystemBase")


@pytest.mark.parametrize("base", BASES)
def test_tell_log_to_router_and_module_level_log(tmp_path, start_node, base):
    dl = start_node(two_destinations(tmp_path), base=base)
    ActorSystem().tell(dl.router, Log("green", [{"id": 1}, {"id": 2}]))
    assert datalogger.get_default() is dl
    datalogger.log("green", {"id": 3})
    deadline = time.time() + 20
    while dl.stats()["topics"]["green"]["db"]["received"] < 3 and time.time() < deadline:
        time.sleep(0.05)
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db", "green") == 3


def test_two_callers_logging_a_new_topic_at_once_lose_nothing(tmp_path, start_node):
    import threading

    dl = start_node(two_destinations(tmp_path))
    other = datalogger.connect(dl.admin_port, make_default=False)
    barrier = threading.Barrier(2)

    def burst(handle: datalogger.DataLogger, base: int) -> None:
        barrier.wait()
        for i in range(20):
            handle.log(f"fresh{i}", [{"id": base + i}])

    threads = [threading.Thread(target=burst, args=(h, b)) for h, b in ((dl, 0), (other, 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dl.flush(timeout=30)
    for i in range(20):
        assert count_sqlite(tmp_path / "out.db", f"fresh{i}") == 2
    other.close()


def test_connect_from_a_second_process(tmp_path, start_node):
    import subprocess
    import sys

    dl = start_node(two_destinations(tmp_path))
    script = (
        "import datalogger\n"
        f"h = datalogger.connect({dl.admin_port})\n"
        "print(h.log('green', [{'id': 1}, {'id': 2}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db", "green") == 2


def test_connect_to_nothing_raises_not_running(start_node):
    from tests.conftest import free_port

    with pytest.raises(datalogger.NotRunning, match="no datalogger node"):
        datalogger.connect(free_port())


def test_admin_port_binds_to_loopback_only(tmp_path, start_node):
    import psutil

    dl = start_node(two_destinations(tmp_path))
    listening = [
        c
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == dl.admin_port
    ]
    assert listening, "nothing listens on the admin port"
    assert all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_module_level_log_without_a_node_raises():
    if datalogger.system._default is not None:
        pytest.skip("a default node is running in this process")
    with pytest.raises(datalogger.NotRunning):
        datalogger.log("green", {"a": 1})


@pytest.mark.parametrize("base", BASES)
def test_log_nowait_queues_locally_and_flush_delivers(tmp_path, start_node, base):
    dl = start_node(two_destinations(tmp_path), base=base)
    for i in range(2500):
        dl.log_nowait("green", {"id": i})
    with pytest.raises(datalogger.InvalidTopic):
        dl.log_nowait("bad topic", {"id": 1})
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db", "green") == 2500
    assert dl.stats()["client"]["sent"] == 2500


def test_linger_merges_chunks_logged_back_to_back_into_one_send(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "destinations": {"rec": recorder(out, linger=1.0)},
        }
    )
    dl.log("merged", [{"n": 0}])  # the first chunk after a quiet spell goes at once
    deadline = time.time() + 5
    while not read_lines(str(out / "merged.jsonl")) and time.time() < deadline:
        time.sleep(0.02)
    assert len(read_lines(str(out / "merged.jsonl"))) == 1
    for n in range(1, 6):
        dl.log("merged", [{"n": n}])
    deadline = time.time() + 5
    while len(read_lines(str(out / "merged.jsonl"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    sends = read_lines(str(out / "merged.jsonl"))
    assert [[row["n"] for row in send["rows"]] for send in sends] == [[0], [1, 2, 3, 4, 5]]


def test_flush_does_not_wait_out_a_long_linger(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "destinations": {"rec": recorder(out, linger=60.0)},
        }
    )
    dl.log("lingering", [{"n": 1}])
    dl.log("lingering", [{"n": 2}])  # held back: the first hand-over was just now
    started = time.monotonic()
    dl.flush(timeout=10)
    assert time.monotonic() - started < 10
    assert [row["n"] for row in rows_in(str(out), "lingering")] == [1, 2]
