"""stats() counters under a mix of successes, retries and dead letters (multiprocTCPBase)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import mixed_workload
from tests.dests import rows_in


@pytest.fixture
def mixed(tmp_path: Path, start_node: Any) -> tuple[Any, float, float]:
    before = time.time()
    dl = start_node(mixed_workload.config(tmp_path))
    mixed_workload.run(dl)
    return dl, before, time.time()


def test_counters_are_exact(mixed: Any, tmp_path: Path) -> None:
    dl, _, _ = mixed
    stats = dl.stats()
    assert stats["rejected"] == 0
    assert set(stats["topics"]) == {"green", "red"}
    for (topic, destination), expected in mixed_workload.EXPECTED.items():
        lane = stats["topics"][topic][destination]
        got = {name: lane[name] for name in expected}
        assert got == expected, (topic, destination)
        others = (lane["buffered"], lane["spilled"], lane["dropped"], lane["restarts"])
        assert others == (0, 0, 0, 0)
    # what the destinations really stored agrees with the counters
    assert sorted(r["n"] for r in rows_in(str(tmp_path / "flaky"), "green")) == list(range(15))
    stored = sorted(r["n"] for r in rows_in(str(tmp_path / "switch"), "green"))
    assert stored == [*range(11), 12, 14]
    assert rows_in(str(tmp_path / "switch"), "red") == []


def test_last_error_its_time_and_failing_state(mixed: Any) -> None:
    dl, before, after = mixed
    topics = dl.stats()["topics"]
    flaky = topics["green"]["flaky"]
    assert flaky["last_error"] == "ConnectionError: attempt 2 refused"
    assert before <= flaky["last_error_at"] <= flaky["last_success_at"] <= after
    assert flaky["failing_since"] is None, "it recovered"
    down = topics["red"]["switch"]
    assert down["last_error"] == "ConnectionError: destination is down"
    assert before <= down["failing_since"] <= down["last_error_at"] <= after
    assert down["last_success_at"] is None
    assert topics["green"]["switch"]["last_error"] == "PermanentError: 2 rows rejected"


def test_latency_quantiles_present_and_ordered(mixed: Any) -> None:
    dl, before, after = mixed
    for destinations in dl.stats()["topics"].values():
        for lane in destinations.values():
            assert lane["latency_p50"] is not None and lane["latency_p99"] is not None
            assert 0 <= lane["latency_p50"] <= lane["latency_p99"] <= after - before
    # red's chunk to flaky waited 0.05 s then 0.1 s (the retry policy) before it was delivered
    assert dl.stats()["topics"]["red"]["flaky"]["latency_p50"] >= 0.15


def test_failed_counts_every_failed_attempt(mixed: Any) -> None:
    dl, _, _ = mixed
    topics = dl.stats()["topics"]
    assert topics["red"]["switch"]["failed"] == mixed_workload.SWITCH_ATTEMPTS  # all 3 failed
    assert topics["green"]["switch"]["failed"] == 1  # the attempt that rejected 2 rows
    assert topics["green"]["flaky"]["failed"] == 2
