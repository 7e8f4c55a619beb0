"""log() takes any serialisable data for destinations that take any data, rows elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.messages import Log, LogRejected


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "files": {"type": "jsonl", "directory": str(tmp_path / "out"), "prefix": "any."},
            "db": {"type": "sqlite", "path": str(tmp_path / "data.db"), "prefix": "rows."},
            "both": {"type": "jsonl", "directory": str(tmp_path / "both"), "prefix": "rows."},
        },
    }


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_any_value_goes_to_a_destination_that_takes_any_data(
    tmp_path: Path, start_node: Any
) -> None:
    dl = start_node(config(tmp_path))
    dl.log("any.notes", "a line")
    dl.log("any.notes", 42)
    dl.log("any.notes", [1, "two", None])  # three items
    dl.log("any.notes", [[1, 2]])  # one item, a list
    dl.log("any.notes", {"a": 1})
    dl.log_nowait("any.notes", "queued")
    dl.flush(timeout=30)
    assert lines(tmp_path / "out" / "any.notes.jsonl") == [
        "a line", 42, 1, "two", None, [1, 2], {"a": 1}, "queued",
    ]


def test_a_topic_with_a_table_destination_takes_rows_only(tmp_path: Path, start_node: Any) -> None:
    dl = start_node(config(tmp_path))
    with pytest.raises(datalogger.InvalidData, match=r"must be a row \(dict\) or a list of rows"):
        dl.log("rows.t", "a line")
    with pytest.raises(datalogger.InvalidData, match="row 1 is a int"):
        dl.log("rows.t", [{"a": 1}, 2])
    with pytest.raises(datalogger.InvalidData, match="row 0 is a str"):
        dl.log_nowait("rows.t", "queued")
    assert dl.log("rows.t", {"a": 1}) >= 1  # the topic's route is now known to the handle
    # a handle without the configuration: the node refuses, by the router or the route
    other = datalogger.connect(dl.admin_port, make_default=False)
    try:
        with pytest.raises(datalogger.InvalidData, match="row 0 is a str"):
            other.log("rows.t", "a line")
        other.log("rows.t", {"a": 2})  # learns the direct route
        with pytest.raises(datalogger.InvalidData, match="row 0 is a list"):
            other.log("rows.t", [[1]])
    finally:
        other.close()
    # a Log message from anywhere
    reply = dl._system.ask(dl.router, Log("rows.t", ["x"], True, 7), 10)
    assert isinstance(reply, LogRejected) and reply.error == "InvalidData"
    dl.flush(timeout=30)
    assert dl.stats()["topics"]["rows.t"]["db"]["delivered"] == 2
