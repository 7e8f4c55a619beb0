"""The small plain classes of datalogger.core: handles, restarts, gathers, placement."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import datalogger
from datalogger.core.gather import Gather, merge_summaries, summarize
from datalogger.core.handles import HandleLRU
from datalogger.core.restarts import RestartBackoff
from datalogger.core.topic_placement import TopicPlacement, pool_slot

PACKAGE = Path(datalogger.__file__).parent


def test_handle_lru_names_the_least_recently_used_beyond_its_limit() -> None:
    lru = HandleLRU(2)
    assert lru.used("a") == [] and lru.used("b") == []
    assert lru.used("a") == []  # a is the most recent now
    assert lru.used("c") == ["b"]
    assert "b" not in lru and len(lru) == 2
    lru.forget("a")
    assert lru.used("d") == []
    assert sorted(lru.clear()) == ["c", "d"] and len(lru) == 0
    with pytest.raises(ValueError):
        HandleLRU(0)


def test_restart_backoff_delays_only_beyond_the_burst_within_the_window() -> None:
    backoff = RestartBackoff(window=10.0, burst=2, delay=1.5)
    assert [backoff.exited("w", t) for t in (0.0, 1.0)] == [0.0, 0.0]
    assert backoff.exited("w", 2.0) == 1.5
    assert backoff.exited("other", 2.0) == 0.0
    assert backoff.exited("w", 20.0) == 0.0  # the old ones left the window


def test_gather_waits_for_each_supervisor_once() -> None:
    gather = Gather("flush", "caller", 1, {"a", "b"})
    assert not gather.arrived("a", {})
    assert not gather.arrived("zzz", {})  # not asked: ignored
    assert gather.gone("b") and gather.done and gather.results == {"a": {}}


def test_summaries_sum_counters_per_destination_and_name_failing_topics() -> None:
    topics = {
        "t1": {"d": {"received": 3, "delivered": 2, "failing_since": None}},
        "t2": {"d": {"received": 5, "delivered": 5, "failing_since": 1.0}, "e": {"received": 1}},
    }
    one = summarize(topics)
    assert one["topics"] == 2 and one["failing"] == ["t2"]
    assert one["destinations"]["d"]["received"] == 8 and one["destinations"]["e"]["received"] == 1
    both = merge_summaries([one, summarize({"t3": {"d": {"delivered": 1}}})])
    assert both["topics"] == 3 and both["destinations"]["d"]["delivered"] == 8


def test_placement_dedicates_up_to_its_limit_then_shares_by_a_stable_hash() -> None:
    placement = TopicPlacement(2, 3, lambda topic: topic.startswith("vip."))
    assert placement.key("a") == "topic:a" and placement.key("b") == "topic:b"
    assert placement.key("vip.x") == "topic:vip.x"  # isolated: always its own
    assert placement.key("c") == f"pool:{pool_slot('c', 3)}"
    assert placement.key("a") == "topic:a"  # stays where it was placed
    assert pool_slot("sensor.17", 4) == pool_slot("sensor.17", 4)
    assert len({pool_slot(f"s{i}", 4) for i in range(100)}) == 4
    assert placement.drop("topic:a") == {"a"}
    assert placement.is_shared(placement.key("d"))  # a's supervisor has not exited yet
    placement.exited("topic:a")
    assert placement.key("a") == "topic:a"  # a's slot is free again
    assert placement.is_shared(placement.key("e"))


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports, absolute (relative imports resolved within datalogger)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("datalogger", *path.relative_to(PACKAGE).parent.parts))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_core_imports_no_thespian_not_even_through_the_modules_it_uses() -> None:
    todo = [p for p in (PACKAGE / "core").glob("*.py")]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            assert not module.startswith("thespian"), f"{path.relative_to(PACKAGE)} imports {module}"
            assert not module.startswith("datalogger.actors"), f"{path} imports {module}"
            if module.startswith("datalogger."):
                parts = module.split(".")[1:]
                for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"),
                                  PACKAGE.joinpath(*parts, "__init__.py")):
                    if candidate.exists() and candidate != PACKAGE / "__init__.py":
                        todo.append(candidate)
    assert PACKAGE / "core" / "topic_state.py" in seen and PACKAGE / "wal.py" in seen


def test_timer_queue_asks_for_one_wakeup_at_the_earliest_and_hands_out_what_is_due() -> None:
    from datalogger.core.timers import TimerQueue

    timers = TimerQueue()
    assert timers.add(0.0, 5.0, "late") == 5.0
    assert timers.add(0.0, 10.0, "later") is None  # the wakeup at 5 comes first
    assert timers.add(1.0, 1.0, "soon") == 1.0  # earlier than the pending one
    due, wait = timers.due(2.0)
    assert due == ["soon"] and wait == 3.0  # another at 5: a spare wakeup is harmless
    due, wait = timers.due(5.0)
    assert due == ["late"] and wait == 5.0
    assert timers.due(5.0) == ([], None)  # the spare one: nothing due, the next is asked for
    due, wait = timers.due(10.0)
    assert due == ["later"] and wait is None and len(timers) == 0
    assert timers.add(11.0, 0.0, "now") == 0.0


def test_timers_on_a_grid_fire_together() -> None:
    from datalogger.core.timers import TimerQueue

    timers = TimerQueue()
    assert timers.add(10.05, 0.2, "a", grid=0.2) == pytest.approx(0.35)
    assert timers.add(10.1, 0.2, "b", grid=0.2) is None  # due 10.4 too
    assert timers.due(10.41)[0] == ["a", "b"]
