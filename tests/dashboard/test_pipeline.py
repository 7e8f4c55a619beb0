"""Pipeline rows: stats(), dead letters and the health rule; the narrow text of `datalogger status`."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from datalogger import cli
from datalogger.dashboard.pipeline import pipeline_view, render_narrow
from datalogger.deadletters import DeadLetterSummary
from datalogger.health import check_health

NOW = 1_000_000.0


def lane(**values: Any) -> dict[str, Any]:
    base = {
        "received": 10,
        "replayed": 0,
        "delivered": 10,
        "failed": 0,
        "retried": 0,
        "dead_lettered": 0,
        "spilled": 0,
        "dropped": 0,
        "restarts": 0,
        "buffered": 0,
        "wal_only_rows": 0,
        "wal_bytes": 2048,
        "logged_seq": 7,
        "settled_seq": 7,
        "failing_since": None,
        "last_error": None,
    }
    return {**base, **values}


def letters(topic: str, destination: str, count: int) -> DeadLetterSummary:
    return DeadLetterSummary(topic, destination, count, count * 3, NOW - 50, NOW - 10, "boom")


def stats() -> dict[str, Any]:
    return {
        "topics": {
            "green": {
                "db": lane(),
                "files": lane(failing_since=NOW - 5, last_error="ConnectionError: refused",
                              delivered=4, logged_seq=9, settled_seq=6),
            },
            "red": {"db": lane(failing_since=NOW - 120, last_error="OSError: disk full", delivered=0)},
        },
        "rejected": 2,
    }


def states(view: dict[str, Any]) -> dict[str, str]:
    return {f"{r['topic']}/{r['destination']}": r["state"] for r in view["lanes"]}


def test_states_follow_the_health_rule() -> None:
    summary = [letters("blue", "db", 2)]
    view = pipeline_view(stats(), summary, 60, NOW)
    assert states(view) == {
        "blue/db": "unhealthy",  # dead letters of a topic not active since the start
        "green/db": "ok",
        "green/files": "failing",  # failing, but not yet for longer than the threshold
        "red/db": "unhealthy",  # failing for longer
    }
    # the problems are exactly `datalogger health`'s, and they are on the rows they concern
    assert view["problems"] == check_health(stats(), summary, 60, NOW)
    assert not view["healthy"]
    rows = {f"{r['topic']}/{r['destination']}": r for r in view["lanes"]}
    assert rows["red/db"]["problems"] == [view["problems"][0]]
    assert rows["blue/db"]["dead_letters"] == 2 and rows["blue/db"]["dead_letter_rows"] == 6
    assert rows["green/files"]["lag"] == 3
    assert rows["green/files"]["failing_for"] == 5
    assert rows["green/db"]["wal_bytes"] == 2048
    assert view["rejected"] == 2 and view["dead_letters_checked"]
    # a longer threshold: the long failure is only "failing"; no dead letters known: none checked
    longer = pipeline_view(stats(), None, 600, NOW)
    assert states(longer)["red/db"] == "failing" and longer["healthy"]
    assert not longer["dead_letters_checked"]


def test_newer_counters_are_shown_when_present_and_their_absence_is_fine() -> None:
    plain = pipeline_view({"topics": {"t": {"d": lane()}}}, [], 60, NOW)
    assert "wal_corrupt_records" not in plain["lanes"][0]
    assert plain["client"] is None
    newer = {
        "topics": {"t": {"d": lane(wal_corrupt_records=3)}},
        "client": {"queued": 5, "spooled": 7, "sent": 100, "dropped": 1, "errors": 0,
                   "last_error": None, "unknown": "x"},
    }
    view = pipeline_view(newer, [], 60, NOW)
    assert view["lanes"][0]["wal_corrupt_records"] == 3
    assert view["client"] == {"queued": 5, "spooled": 7, "sent": 100, "dropped": 1, "errors": 0,
                              "last_error": None}
    # an older node: no sequence numbers, so no lag; odd values count as 0
    old = pipeline_view({"topics": {"t": {"d": {"delivered": "x", "received": 3}}}}, None, 60, NOW)
    assert old["lanes"][0]["lag"] is None
    assert old["lanes"][0]["delivered"] == 0 and old["lanes"][0]["received"] == 3
    text = render_narrow(view, 80)
    assert "wal corrupt records 3" in text and "spooled 7" in text


@pytest.mark.parametrize("width", [40, 60, 80])
def test_narrow_layout_fits_the_width_and_says_everything(width: int) -> None:
    view = pipeline_view(stats(), [letters("blue", "db", 2)], 60, NOW)
    text = render_narrow(view, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "red -> db  [UNHEALTHY for 120s]" in lines
    assert "green -> files  [FAILING for 5s]" in lines
    assert "green -> db  [ok]" in lines
    words = " ".join(text.split())
    assert "last error: OSError: disk full" in words
    assert "dead letters on disk 2 (6 rows)" in words
    assert "lag 3" in words and "delivered 4" in words
    assert lines[-1] == "rejected calls: 2"


class FakeHandle:
    """Only for cmd_status' layout choice: stats() of a node, close()."""

    def stats(self) -> dict[str, Any]:
        return stats()

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("width", "terminal", "wide"), [(200, True, True), (100, True, False), (200, False, False)]
)
def test_status_is_a_table_on_a_wide_terminal_only(
    monkeypatch: pytest.MonkeyPatch, width: int, terminal: bool, wide: bool
) -> None:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    monkeypatch.setattr(cli, "console", console)
    monkeypatch.setattr("datalogger.system.connect", lambda *a, **k: FakeHandle())
    assert cli.main(["status", "--admin-port", "1"]) == 0
    text = out.getvalue()
    assert ("datalogger status" in text) is wide  # the table's title
    assert ("red -> db  [FAILING for" in text) is not wide
    assert "rejected calls: 2" in text
    if not wide:
        assert max(len(line) for line in text.splitlines()) <= width


def test_a_node_with_too_many_topics_to_detail_shows_their_sums_and_the_failing_ones() -> None:
    """Beyond the topics stats() details by default, status and the dashboard show one summed
    row per destination, unhealthy when the node names topics failing now."""
    stats = {
        "topics": {},
        "summary": {
            "topics": 10_000,
            "destinations": {"db": lane(received=1_000_000, delivered=999_000), "files": lane()},
            "failing": [f"sensor.{i}" for i in range(12)],
        },
    }
    view = pipeline_view(stats, None, 60.0, NOW)
    rows = {(row["topic"], row["destination"]): row for row in view["lanes"]}
    assert set(rows) == {("(10000 topics)", "db"), ("(10000 topics)", "files")}
    assert rows[("(10000 topics)", "db")]["received"] == 1_000_000
    assert not view["healthy"]
    assert "sensor.0" in view["problems"][0] and "2 more" in view["problems"][0]
    assert all(row["state"] == "unhealthy" for row in rows.values())
    text = render_narrow(view, 80)
    assert "(10000 topics)" in text and "sensor.0" in text
    stats["summary"]["failing"] = []
    assert pipeline_view(stats, None, 60.0, NOW)["healthy"]
