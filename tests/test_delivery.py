"""Buffering and retry through the actor tree: retries, dead letters, replay,
destination buffers, bounded memory with spill/block/drop_oldest, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import datalogger
from datalogger.deadletters import DeadLetterStore
from tests.conftest import recorder
from tests.dests import read_lines, rows_in

FAST_RETRY = {"initial_delay": 0.05, "max_delay": 0.2, "jitter": 0.0}


def config(tmp_path: Path, **dest: object) -> dict:
    return {"data_dir": str(tmp_path / "state"), "destinations": {"d": dest}}


def write_toml(tmp_path: Path, out: Path) -> Path:
    path = tmp_path / "datalogger.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "state"}"\n\n[destinations.d]\ntype = "tests.dests:Switchable"\n'
        f'directory = "{out}"\nretry = {{ max_attempts = 2, initial_delay = 0.05 }}\n'
    )
    return path


def test_fails_three_times_then_every_row_delivered_exactly_once(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(config(tmp_path, **recorder(out, "Flaky", failures=3, retry=FAST_RETRY)))
    dl.log("green", [{"n": i} for i in range(1000)])
    dl.flush(timeout=30)
    rows = rows_in(str(out), "green")
    assert sorted(r["n"] for r in rows) == list(range(1000))
    assert len(read_lines(str(out / "green.attempts"))) == 4
    stats = dl.stats()["topics"]["green"]["d"]
    assert stats["retried"] == 3 and stats["delivered"] == 1000 and stats["dead_lettered"] == 0


def test_permanently_failing_rows_go_to_dead_letters_and_replay_delivers_them(tmp_path, start_node):
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    toml = write_toml(tmp_path, out)
    dl = start_node(str(toml))
    for i in range(5):
        dl.log("green", [{"n": i * 10 + j} for j in range(10)])
    dl.log("red", [{"n": 1}, {"n": 2, "bad": True}])
    dl.flush(timeout=30)
    stats = dl.stats()["topics"]
    assert stats["green"]["d"]["dead_lettered"] == 50
    assert stats["red"]["d"]["dead_lettered"] == 2  # down: both rows, good and bad
    store = DeadLetterStore(tmp_path / "state" / "dead_letters")
    assert store.total_rows() == 52
    summary = {s.topic: (s.letters, s.rows) for s in store.summary()}
    assert set(summary) == {"green", "red"}
    assert summary["red"] == (1, 2)
    green_letters, green_rows = summary["green"]
    # One letter per hand-over: chunks logged back to back may go merged (linger).
    assert green_rows == 50 and 1 <= green_letters <= 5
    kept = sorted(row["n"] for letter in store.letters(topic="green") for row in letter.rows)
    assert kept == list(range(50))

    listing = subprocess.run(
        [sys.executable, "-m", "datalogger", "dead-letters", "list", "--config", str(toml)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert listing.returncode == 0, listing.stderr
    assert "ConnectionError: destination is down" in listing.stdout
    assert "52 rows" in listing.stdout
    green_line = next(line for line in listing.stdout.splitlines() if "green" in line)
    assert f" {green_letters} " in green_line and " 50 " in green_line

    (out / "down").unlink()
    replay = subprocess.run(
        [sys.executable, "-m", "datalogger", "replay", "--config", str(toml), "--topic", "green"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == list(range(50))
    assert list(store.letters(topic="green")) == []
    assert list(store.letters(topic="red")), "other topics' letters are left alone"


def test_bad_rows_are_dead_lettered_while_good_rows_land(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(config(tmp_path, **recorder(out, "Switchable")))
    dl.log("green", [{"n": 1}, {"n": 2, "bad": True}, {"n": 3}])
    dl.flush(timeout=30)
    assert [r["n"] for r in rows_in(str(out), "green")] == [1, 3]
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters())
    assert [row["n"] for letter in letters for row in letter.rows] == [2]
    assert letters[0].attempts == 1 and "rejected" in letters[0].reason
    stats = dl.stats()["topics"]["green"]["d"]
    assert stats["delivered"] == 2 and stats["dead_lettered"] == 1 and stats["retried"] == 0


def test_destination_buffer_flushes_on_interval(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(config(tmp_path, **recorder(out, buffer={"max_size": 1000, "interval": 0.5})))
    t0 = time.time()
    for i in range(3):
        dl.log("green", [{"n": i * 10 + j} for j in range(10)])
    deadline = time.time() + 10
    while not rows_in(str(out), "green") and time.time() < deadline:
        time.sleep(0.02)
    chunks = read_lines(str(out / "green.jsonl"))
    assert len(chunks) == 1 and len(chunks[0]["rows"]) == 30, "the three chunks went as one batch"
    assert chunks[0]["at"] - t0 >= 0.4, "flushed before the interval"


def test_destination_buffer_flushes_when_full(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(config(tmp_path, **recorder(out, buffer={"max_size": 100, "interval": 60})))
    for i in range(4):
        dl.log("green", [{"n": i * 25 + j} for j in range(25)])
    deadline = time.time() + 10
    while not rows_in(str(out), "green") and time.time() < deadline:
        time.sleep(0.02)
    chunks = read_lines(str(out / "green.jsonl"))
    assert len(chunks) == 1 and len(chunks[0]["rows"]) == 100
    dl.log("green", [{"n": 100}])  # the stale 60 s timer of the first batch does not matter
    dl.flush(timeout=10)  # flush() empties buffers at once
    assert len(rows_in(str(out), "green")) == 101


def test_retry_waits_do_not_delay_another_topic(tmp_path, start_node):
    out = tmp_path / "out"
    out.mkdir()
    (out / "red.down").touch()
    retry = {"initial_delay": 2.0, "max_attempts": 100, "jitter": 0.0}
    dl = start_node(config(tmp_path, **recorder(out, "Switchable", retry=retry)))
    dl.log("red", [{"n": 1}])
    time.sleep(0.3)  # red failed once and waits 2 s for its retry
    t0 = time.time()
    dl.log("green", [{"n": 1}])
    deadline = time.time() + 5
    while not rows_in(str(out), "green") and time.time() < deadline:
        time.sleep(0.02)
    assert read_lines(str(out / "green.jsonl"))[0]["at"] - t0 < 1.0
    (out / "red.down").unlink()
    dl.flush(timeout=30)
    assert rows_in(str(out), "red") == [{"n": 1}]


def test_new_data_flows_while_a_chunk_waits_for_its_retry(tmp_path, start_node):
    out = tmp_path / "out"
    dl = start_node(
        config(
            tmp_path,
            **recorder(out, "Flaky", failures=1, retry={"initial_delay": 2.0, "jitter": 0.0}),
        )
    )
    dl.log("green", [{"n": 0}])
    time.sleep(0.3)
    dl.log("green", [{"n": 1}])
    deadline = time.time() + 1.5
    while not rows_in(str(out), "green") and time.time() < deadline:
        time.sleep(0.02)
    assert rows_in(str(out), "green") == [{"n": 1}], "the second chunk did not wait for the first"
    dl.flush(timeout=30)
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == [0, 1]


def node_rss(handle: datalogger.DataLogger) -> int:
    me = psutil.Process()
    return sum(p.memory_info().rss for p in me.children(recursive=True) if p.is_running())


def test_outage_memory_is_bounded_and_spilled_rows_all_arrive(tmp_path, start_node):
    """A destination down while 200,000 rows are logged: the node's processes
    stay under 400 MB resident in all (measured about 150 MB), and every row
    arrives after recovery."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    retry = {"max_attempts": 10_000, "initial_delay": 0.2, "max_delay": 0.5}
    dl = start_node(config(tmp_path, **recorder(out, "Switchable", retry=retry, max_buffered_rows=10_000)))
    payload = "x" * 100
    peak = 0
    for i in range(200):
        dl.log("green", [{"n": i * 1000 + j, "p": payload} for j in range(1000)])
        if i % 20 == 0:
            peak = max(peak, node_rss(dl))
    peak = max(peak, node_rss(dl))
    stats = dl.stats()["topics"]["green"]["d"]
    assert stats["spilled"] >= 180_000
    assert stats["wal_only_rows"] >= 180_000  # held only in the write-ahead log, not in memory
    assert peak < 400 * 1024 * 1024, f"node RSS peaked at {peak / 2**20:.0f} MB"
    (out / "down").unlink()
    dl.flush(timeout=120)
    rows = rows_in(str(out), "green")
    assert len(rows) == 200_000
    assert len({r["n"] for r in rows}) == 200_000


def test_overflow_block_raises_backpressure(tmp_path, start_node):
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    dl = start_node(
        config(
            tmp_path,
            **recorder(
                out,
                "Switchable",
                overflow="block",
                max_buffered_rows=100,
                block_timeout=0.5,
                retry={"max_attempts": 1000},
            ),
        )
    )
    dl.log("green", [{"n": i} for i in range(100)])
    with pytest.raises(datalogger.Backpressure, match="stayed full"):
        dl.log("green", [{"n": 100}])
    (out / "down").unlink()
    dl.flush(timeout=30)
    dl.log("green", [{"n": 101}])
    dl.flush(timeout=30)
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == [*range(100), 101]


def test_overflow_drop_oldest_counts_what_it_drops(tmp_path, start_node):
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    dl = start_node(
        config(
            tmp_path,
            **recorder(
                out,
                "Switchable",
                overflow="drop_oldest",
                max_buffered_rows=100,
                retry={"max_attempts": 1000, "initial_delay": 0.05},
            ),
        )
    )
    for i in range(5):
        dl.log("green", [{"chunk": i} for _ in range(100)])
    assert dl.stats()["topics"]["green"]["d"]["dropped"] == 300
    (out / "down").unlink()
    dl.flush(timeout=30)
    assert sorted({r["chunk"] for r in rows_in(str(out), "green")}) == [0, 4]


def test_shutdown_spills_undelivered_rows_and_next_start_delivers_them(tmp_path, start_node):
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    cfg = config(tmp_path, **recorder(out, "Switchable", retry={"max_attempts": 1000, "initial_delay": 0.05}))
    dl = start_node(cfg)
    for i in range(5):
        dl.log("green", [{"n": i * 1000 + j} for j in range(1000)])
    assert dl.shutdown(timeout=1.0) == 5000
    assert not rows_in(str(out), "green")
    (out / "down").unlink()
    dl2 = start_node(cfg)
    dl2.flush(timeout=30)
    assert sorted(r["n"] for r in rows_in(str(out), "green")) == list(range(5000))
    assert dl2.stats()["topics"]["green"]["d"]["buffered"] == 0
