"""Bad rows found by the delivery core for a destination that does not name them, through the
whole tree: synchronous sends and send_async (each part in its own SendActor)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from datalogger.deadletters import DeadLetterStore
from tests.conftest import recorder
from tests.dests import read_lines, rows_in


@pytest.mark.parametrize("send_async", [False, True])
def test_only_the_rows_that_fail_alone_are_dead_lettered(
    tmp_path: Path, start_node: Any, send_async: bool
) -> None:
    out = tmp_path / "out"
    dest = recorder(out, "RefusesMarked", send_async=send_async, retry={"max_attempts": 2})
    dl = start_node({"data_dir": str(tmp_path / "state"), "destinations": {"d": dest}})
    bad = {17, 555, 1999}
    for chunk in range(20):
        dl.log("t", [{"n": n, "bad": n in bad} for n in range(chunk * 100, chunk * 100 + 100)])
    dl.flush(timeout=60)

    assert sorted(row["n"] for row in rows_in(str(out), "t")) == [
        n for n in range(2000) if n not in bad
    ]
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters("t"))
    dead = {
        row["n"]: error
        for letter in letters
        for row, error in zip(letter.rows, letter.row_errors(), strict=True)
    }
    assert dead == {n: f"PermanentError: row {n} refused" for n in bad}
    lane = dl.stats()["topics"]["t"]["d"]
    assert (lane["delivered"], lane["dead_lettered"]) == (1997, 3)
    calls = len(read_lines(str(out / "t.calls")))
    groups = 20  # at most one group per chunk
    assert calls <= groups + len(bad) * (2 * math.ceil(math.log2(2000)) + 2)
