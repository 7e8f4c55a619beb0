"""Row-level isolation by bisection (datalogger.isolation), without actors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from datalogger.delivery import Attempt, classify_permanent
from datalogger.exceptions import PermanentError
from datalogger.isolation import RowIsolation, deliver_isolating, isolation_budget


class Destination:
    """Refuses, as a whole, any list holding a row marked bad."""

    def __init__(self) -> None:
        self.calls = 0
        self.stored: list[dict[str, Any]] = []

    def send(self, rows: list[dict[str, Any]]) -> Attempt:
        self.calls += 1
        bad = [row for row in rows if row.get("bad")]
        if bad:
            return Attempt(ok=False, error=PermanentError(f"row {bad[0]['n']} is bad"), permanent=True)
        self.stored.extend(rows)
        return Attempt(ok=True, result=len(rows))


def rows(n: int, bad: set[int]) -> list[dict[str, Any]]:
    return [{"n": i, **({"bad": True} if i in bad else {})} for i in range(n)]


def test_one_bad_row_costs_about_two_log2_n_attempts() -> None:
    dest = Destination()
    group = rows(1000, {637})
    outcome = deliver_isolating(dest.send, group)
    assert outcome.dead == {637: "PermanentError: row 637 is bad"}
    assert sorted(r["n"] for r in dest.stored) == [n for n in range(1000) if n != 637]
    assert outcome.delivered == [n for n in range(1000) if n != 637]
    assert dest.calls <= 2 * math.ceil(math.log2(1000)) + 1


def test_each_bad_row_gets_its_own_error() -> None:
    dest = Destination()
    bad = {3, 500, 501, 999}
    outcome = deliver_isolating(dest.send, rows(1000, bad))
    assert outcome.dead == {n: f"PermanentError: row {n} is bad" for n in bad}
    assert len(dest.stored) == 1000 - len(bad)
    assert outcome.attempts <= 4 * 2 * math.ceil(math.log2(1000)) + 1


def test_rows_the_destination_names_are_not_bisected() -> None:
    group = rows(100, set())
    calls = []

    def send(part: list[dict[str, Any]]) -> Attempt:
        calls.append(len(part))
        error = PermanentError("two bad", rows=[part[5], part[7]], reasons=["five", "seven"])
        return classify_permanent(part, error)

    outcome = deliver_isolating(send, group)
    assert calls == [100]
    assert outcome.dead == {5: "five", 7: "seven"}
    assert len(outcome.delivered) == 98


def test_unsure_rows_are_bisected_and_the_rest_counts_as_stored() -> None:
    group = rows(64, {40})
    sent: list[list[int]] = []

    def send(part: list[dict[str, Any]]) -> Attempt:
        sent.append([row["n"] for row in part])
        if any(row.get("bad") for row in part):
            if len(part) == 64:  # a batch refused without saying which line: 32..63 unsure
                return classify_permanent(part, PermanentError("batch refused", unsure=part[32:]))
            return Attempt(ok=False, error=PermanentError("bad"), permanent=True)
        return Attempt(ok=True)

    outcome = deliver_isolating(send, group)
    assert list(outcome.dead) == [40]
    assert len(outcome.delivered) == 63
    assert all(n >= 32 for part in sent[1:] for n in part)  # 0..31 were never sent again


def test_a_group_where_every_row_is_bad_stops_early() -> None:
    dest = Destination()
    group = rows(30_000, set(range(30_000)))
    outcome = deliver_isolating(dest.send, group)
    assert len(outcome.dead) == 30_000 and not outcome.delivered
    assert outcome.attempts <= 2 * math.ceil(math.log2(30_000)) + 8
    reasons = set(outcome.dead.values())
    assert any("not isolated: no row went through" in reason for reason in reasons)


def test_clustered_bad_rows_stay_within_the_budget_and_the_bulk_is_delivered() -> None:
    dest = Destination()
    bad = set(range(1000))
    outcome = deliver_isolating(dest.send, rows(30_000, bad))
    assert outcome.attempts <= isolation_budget(30_000) + 1
    assert bad <= set(outcome.dead)
    assert len(outcome.delivered) >= 28_000  # the good bulk went through
    assert set(outcome.delivered) | set(outcome.dead) == set(range(30_000))


def test_an_error_not_about_rows_is_not_bisected() -> None:
    calls = []

    def send(part: list[dict[str, Any]]) -> Attempt:
        calls.append(len(part))
        return Attempt(ok=False, error=RuntimeError("no such table"), permanent=True, isolate=False)

    outcome = deliver_isolating(send, rows(50, set()))
    assert calls == [50]
    assert len(outcome.dead) == 50


def test_a_transient_failure_returns_what_is_left() -> None:
    dest = Destination()
    failing = {"on": False}

    def send(part: list[dict[str, Any]]) -> Attempt:
        if failing["on"]:
            return Attempt(ok=False, error=ConnectionError("down"))
        attempt = dest.send(part)
        failing["on"] = not attempt.ok and len(part) < 100  # the server goes down mid-way
        return attempt

    outcome = deliver_isolating(send, rows(100, {10}))
    assert isinstance(outcome.transient, ConnectionError)
    assert set(outcome.pending) | set(outcome.delivered) | set(outcome.dead) == set(range(100))
    assert 10 in outcome.pending or 10 in outcome.dead


def test_the_state_machine_one_step_at_a_time() -> None:
    isolation = RowIsolation(4)
    isolation.start(Attempt(ok=False, error=PermanentError("x"), permanent=True))
    assert isolation.next_part() == [0, 1]
    isolation.record(Attempt(ok=True))
    assert isolation.next_part() == [2, 3]
    isolation.record(Attempt(ok=False, error=PermanentError("y"), permanent=True))
    assert isolation.next_part() == [2]
    isolation.record(Attempt(ok=True))
    assert isolation.next_part() == [3]
    isolation.abandon("gave up after retries")
    assert isolation.next_part() is None and isolation.done
    assert isolation.delivered == [0, 1, 2] and isolation.dead == {3: "gave up after retries"}
    with pytest.raises(RuntimeError):
        isolation.record(Attempt(ok=True))


def test_copied_rows_are_matched_by_value() -> None:
    group = rows(10, set())
    error = PermanentError("bad", rows=[dict(group[4]), dict(group[4])])
    attempt = classify_permanent(group, error)
    assert attempt.bad == ((4, "PermanentError: bad"),)  # the same row twice counts once


def test_32_bad_rows_scattered_anywhere_are_each_isolated() -> None:
    import random

    bad = set(random.Random(7).sample(range(30_000), 32))
    dest = Destination()
    outcome = deliver_isolating(dest.send, rows(30_000, bad))
    assert set(outcome.dead) == bad
    assert all("not isolated" not in reason for reason in outcome.dead.values())
    assert outcome.attempts <= isolation_budget(30_000)
