"""Faults of the disk under the write-ahead log heal, on multiprocTCPBase: a full disk, a
read-only one at a topic's start, damaged records in the newest and an older segment."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger import wal as wal_module
from datalogger.health import run_health
from datalogger.records import read_frames
from tests.conftest import recorder
from tests.dests import rows_in
from tests.fsfaults import tmpfs

RETRY_FOREVER = {"max_attempts": 100_000, "initial_delay": 0.05, "max_delay": 0.1}


def config(tmp_path: Path, **wal: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "state"),
        "wal": wal,
        "destinations": {"d": recorder(tmp_path / "out", "Switchable", retry=RETRY_FOREVER)},
    }


def chunk(n: int) -> list[dict[str, Any]]:
    return [{"n": n, "i": i, "pad": "x" * 200} for i in range(40)]


def fill(dl: datalogger.DataLogger, topic: str, start: int) -> tuple[int, datalogger.StorageError]:
    """Log chunks until the disk is full; return the next chunk number and the error."""
    n = start
    while True:
        began = time.monotonic()
        try:
            dl.log(topic, chunk(n))
        except datalogger.StorageError as exc:
            assert time.monotonic() - began < 5, "StorageError must come at once, not on a timeout"
            return n, exc
        n += 1
        assert n - start < 10_000, "the disk never filled"


def health(dl: datalogger.DataLogger) -> tuple[int, str]:
    out = io.StringIO()
    assert dl.admin_port is not None
    code = run_health(
        admin_port=dl.admin_port, host="127.0.0.1", failing_after=60, data_dir=None, out=out
    )
    return code, out.getvalue()


def test_a_full_disk_raises_storage_error_at_once_and_heals_also_after_a_restart(
    tmp_path: Path, start_node: Any
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()  # the destination is down: chunks stay in the log
    with tmpfs(tmp_path / "state" / "wal", size="1m"):
        dl = start_node(config(tmp_path))
        full, error = fill(dl, "full", 0)
        assert "No space left on device (ENOSPC)" in str(error)
        assert str(tmp_path / "state" / "wal" / "full") in str(error)
        (out / "down").unlink()
        dl.flush(timeout=60)
        assert sorted({row["n"] for row in rows_in(str(out), "full")}) == list(range(full))
        dl.log("full", chunk(full))  # the delivered data no longer holds the disk: works
        dl.flush(timeout=30)

        # full again, then a restart while it is full
        (out / "down").touch()
        again, _ = fill(dl, "full", full + 1)
        dl.shutdown(timeout=0.5)
        (out / "down").unlink()
        restarted = start_node(config(tmp_path))
        restarted.flush(timeout=60)
        delivered = sorted({row["n"] for row in rows_in(str(out), "full")})
        assert delivered == list(range(again))
        restarted.log("full", chunk(again))
        restarted.flush(timeout=30)
        assert restarted.stats()["topics"]["full"]["d"]["wal_bytes"] < 100_000


def test_a_read_only_log_directory_at_start_is_reported_then_heals_without_a_restart(
    tmp_path: Path, start_node: Any
) -> None:
    out = tmp_path / "out"
    with tmpfs(tmp_path / "state" / "wal", read_only=True) as disk:
        dl = start_node(config(tmp_path))
        with pytest.raises(datalogger.StorageError, match=r"Read-only file system \(EROFS\)"):
            dl.log("ro", chunk(1))
        with pytest.raises(datalogger.StorageError, match=r"flush: topic ro: .*EROFS"):
            dl.flush(timeout=30)  # at once, naming the topic, not a timeout
        lane = dl.stats()["topics"]["ro"]["d"]
        assert "EROFS" in lane["wal_error"]
        code, text = health(dl)
        assert code == 1 and "ro: its write-ahead log cannot be written" in text

        disk.remount(writable=True)
        assert dl.log("ro", chunk(2)) == 1  # the next log() opens the log: no restart
        dl.flush(timeout=30)
        assert [row["n"] for row in rows_in(str(out), "ro")] == [2] * 40
        assert dl.stats()["topics"]["ro"]["d"]["wal_error"] is None
        assert health(dl)[0] == 0


def flip_in_second_record(segment: Path) -> None:
    (_first, second, _end), *_rest = list(read_frames(segment))
    data = bytearray(segment.read_bytes())
    data[second + 40] ^= 0x20
    segment.write_bytes(bytes(data))


@pytest.mark.parametrize("base", ["multiprocTCPBase", "simpleSystemBase"])
def test_damaged_records_lose_only_their_chunks_and_are_counted_logged_and_unhealthy(
    tmp_path: Path, start_node: Any, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    dl = start_node(config(tmp_path, segment_bytes=30_000), base=base)
    for n in range(31):
        dl.log("damaged", chunk(n))
    dl.shutdown(timeout=0.5)
    segments = sorted((tmp_path / "state" / "wal" / "damaged").glob("*.wal"))
    assert len(segments) >= 3 and len(list(read_frames(segments[-1]))) >= 3
    flip_in_second_record(segments[0])
    flip_in_second_record(segments[-1])
    lost = {1, int(segments[-1].stem)}  # the second chunk of each segment

    (out / "down").unlink()
    logged: list[str] = []
    real = wal_module.log.error

    def error(message: str, *args: Any) -> None:
        logged.append(message % args)
        real(message, *args)

    # the node sets up logging anew when it starts: listen on the module's logger itself
    monkeypatch.setattr(wal_module.log, "error", error)
    dl = start_node(config(tmp_path, segment_bytes=30_000), base=base)
    dl.flush(timeout=60)
    delivered = sorted({row["n"] for row in rows_in(str(out), "damaged")})
    assert delivered == [n for n in range(31) if n not in lost]
    assert dl.stats()["topics"]["damaged"]["d"]["wal_corrupt_records"] == 2
    if base == "simpleSystemBase":  # in this process: the log can be read here
        damage = [text for text in logged if "write-ahead log damaged" in text]
        assert any(str(segments[0]) in text for text in damage), damage
        assert any(str(segments[-1]) in text for text in damage)
    else:  # a separate node: ask it the way an operator would
        code, text = health(dl)
        assert code == 1 and "damaged: 2 damaged record(s) in its write-ahead log" in text
