"""Every promised type survives log() -> write-ahead log -> replay -> destination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.testing import CapturingDestination
from datalogger.validation import normalize_data, pack, unpack
from datalogger.wal import WriteAheadLog
from tests.conftest import recorder
from tests.integration.test_types import AWARE, ROW


def test_each_type_survives_the_log_as_it_was(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "t") as wal:
        wal.append([ROW])
    with WriteAheadLog(tmp_path, "t") as wal:
        ((_seq, (row,)),) = list(wal.read_from(0))
    assert row == ROW  # the aware datetime as the same instant
    assert row["aware"].utcoffset().total_seconds() == 0  # in UTC
    assert row["naive"].tzinfo is None and row["clock_tz"].tzinfo is not None
    assert unpack(pack((1, 2))) == [1, 2]  # a tuple comes back as a list


@pytest.mark.parametrize("value", [{1, 2}, object(), 2**64, {"nested": {1j}}])
def test_what_msgpack_cannot_hold_is_refused_at_log(value: Any) -> None:
    with pytest.raises(datalogger.InvalidData, match="cannot be serialised"):
        normalize_data({"v": value})


def test_a_chunk_replayed_from_the_log_after_a_restart_keeps_every_type(
    tmp_path: Path, start_node: Any
) -> None:
    state = tmp_path / "state"
    down = tmp_path / "down"
    (down / "down").parent.mkdir()
    (down / "down").touch()
    first = start_node(
        {
            "data_dir": str(state),
            "destinations": {"d": recorder(down, "Switchable", retry={"max_attempts": 100})},
        },
        base="simpleSystemBase",
    )
    first.log("typed", ROW)
    assert first.shutdown(timeout=0.5) == 1  # not delivered: it waits in the log
    CapturingDestination.captured.clear()
    second = start_node(
        {"data_dir": str(state), "destinations": {"d": {"type": "memory"}}},
        base="simpleSystemBase",
    )
    second.flush(timeout=10)
    assert CapturingDestination.captured["typed"] == [ROW]
    assert CapturingDestination.captured["typed"][0]["aware"] == AWARE
    assert second.stats()["topics"]["typed"]["d"]["replayed"] == 1
