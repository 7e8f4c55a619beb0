"""Row-level isolation: find the rows of a failed group that fail on their own.

When a destination rejects a group of rows as a whole with a permanent error
(and does not name the rows at fault), the group is sent again in halves,
then halves of the failing halves, down to single rows. A row that fails
alone is bad and dead-lettered with its own error; every part that goes
through is delivered. One bad row among ``n`` costs about ``2·log2(n)`` extra
attempts.

:class:`RowIsolation` is the plain state machine: it says which part to send
next and takes the outcome of each attempt. The delivery core
(:class:`~datalogger.core.delivery_queue.DeliveryQueue`, behind the
DestinationWorker and the DataBuffer partitions) runs it one attempt at a time,
and :func:`deliver_isolating` runs it in a loop (``datalogger replay``).

How it stays cheap when many rows are bad:

* The largest pending part is tried first, so the good bulk of a group is
  delivered early even when the bad rows are clustered. Until a first part
  has gone through, every other attempt takes the smallest part instead (a
  dive towards single rows), so that a group with many bad rows finds its
  good ones soon too.
* Rows the destination is unsure of (``PermanentError(unsure=...)``) are tried
  again together first when they are fewer than were sent, then split.
* If no row at all was delivered after ``2·ceil(log2(n)) + 4`` attempts, the
  rows are taken to be bad as a whole (a destination that refuses every row):
  the parts left are dead-lettered as they are.
* At most :func:`isolation_budget` attempts are made per group; the parts left
  then are dead-lettered as they are, with a reason saying so.

Parts dead-lettered without being isolated keep every row they hold, good
ones too, each with the reason; ``datalogger replay`` sends them again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from .delivery import Attempt, describe

__all__ = [
    "ISOLATED_ROWS",
    "IsolationResult",
    "RowIsolation",
    "deliver_isolating",
    "isolation_budget",
]

ISOLATED_ROWS = 32
"""Bad rows a group can hold and still have every one isolated within the budget."""


def isolation_budget(rows: int) -> int:
    """Most attempts spent isolating the bad rows of a group of ``rows`` rows."""
    return 8 + 2 * max(1, math.ceil(math.log2(max(rows, 2)))) * ISOLATED_ROWS


def _hopeless_after(rows: int) -> int:
    """Attempts without a single delivered row after which the group counts as all bad."""
    return 4 + 2 * max(1, math.ceil(math.log2(max(rows, 2))))


@attrs.frozen
class IsolationResult:
    """What :func:`deliver_isolating` did with a group of rows."""

    delivered: list[int]
    """Indices of the rows stored."""
    dead: dict[int, str]
    """Index -> reason of each row that failed (or was not isolated)."""
    attempts: int
    """Calls made, the first included."""
    results: list[Any] = attrs.field(factory=list)
    """What each successful call returned."""
    transient: BaseException | None = None
    """Set when a call failed transiently: the rows not settled are in ``pending``."""
    pending: list[int] = attrs.field(factory=list)
    """Indices of the rows neither delivered nor dead (after a transient failure)."""


class RowIsolation:
    """Bisects a group of ``size`` rows (by index) until each failing row is found alone.

    Call :meth:`start` with the group's failed attempt, then, while
    :meth:`next_part` returns a part, send those rows and pass the outcome to
    :meth:`record` (or :meth:`abandon` the part after its transient errors
    outlived their retries). :attr:`delivered` and :attr:`dead` hold the verdicts.

    Args:
        size: rows in the group.
        budget: most attempts (default :func:`isolation_budget`).
    """

    def __init__(self, size: int, budget: int | None = None) -> None:
        self.size = size
        self.budget = isolation_budget(size) if budget is None else budget
        self.hopeless_after = _hopeless_after(size)
        self.attempts = 0
        self.delivered: list[int] = []
        self.dead: dict[int, str] = {}
        self._parts: list[list[int]] = []
        self._current: list[int] | None = None
        self._last_reason = "rejected"

    @property
    def done(self) -> bool:
        """True when every row is delivered or dead."""
        return self._current is None and not self._parts

    def start(self, attempt: Attempt) -> None:
        """The whole group failed with ``attempt`` (permanent): begin isolating."""
        self._current = list(range(self.size))
        self.record(attempt, counted=False)

    def next_part(self) -> list[int] | None:
        """Indices of the rows to send next (see the module docstring), or None when done."""
        if self._current is not None:
            return self._current
        if not self._parts:
            return None
        if self.attempts >= self.budget:
            self._stop(f"not isolated: the budget of {self.budget} attempts is spent")
            return None
        if not self.delivered and self.attempts >= self.hopeless_after:
            self._stop(f"not isolated: no row went through in {self.attempts} attempts")
            return None
        if not self.delivered and self.attempts % 2 == 0:
            chosen = min(self._parts, key=lambda part: (len(part), part[0]))
        else:
            chosen = min(self._parts, key=lambda part: (-len(part), part[0]))
        self._parts.remove(chosen)
        self._current = chosen
        return chosen

    def record(self, attempt: Attempt, *, counted: bool = True) -> None:
        """The outcome of sending the current part (a transient failure is an error here)."""
        part = self._current
        if part is None:
            raise RuntimeError("RowIsolation.record without a part to record")
        self._current = None
        if counted:
            self.attempts += 1
        if attempt.ok:
            self.delivered.extend(part)
            return
        if not attempt.permanent:
            raise RuntimeError("RowIsolation.record takes permanent failures: retry transient ones")
        reason = describe(attempt.error) if attempt.error is not None else "rejected"
        self._last_reason = reason
        if attempt.bad is None and not attempt.unsure:
            self._split(part, reason, attempt.isolate)
            return
        named = dict(attempt.bad or ())
        unsure = set(attempt.unsure)
        suspects = []
        for local, index in enumerate(part):
            if local in named:
                self.dead[index] = named[local]
            elif local in unsure:
                suspects.append(index)
            else:
                self.delivered.append(index)
        if len(suspects) == 1 or len(suspects) == len(part):
            self._split(suspects, reason, True)
        elif suspects:  # fewer than were sent: try them again together before splitting
            self._parts.append(suspects)

    def abandon(self, reason: str) -> None:
        """Give the current part up as it is (its transient errors outlived their retries)."""
        part, self._current = self._current, None
        for index in part or ():
            self.dead[index] = reason

    def _split(self, part: list[int], reason: str, isolate: bool) -> None:
        if len(part) == 1 or not isolate:
            for index in part:
                self.dead[index] = reason
            return
        half = len(part) // 2
        self._parts.extend((part[:half], part[half:]))

    def _stop(self, why: str) -> None:
        reason = self._last_reason
        for part in self._parts:
            for index in part:
                self.dead[index] = f"{reason} ({why})"
        self._parts = []


def deliver_isolating(
    send: Callable[[list[Any]], Attempt],
    rows: list[Any],
    *,
    first: Attempt | None = None,
    budget: int | None = None,
) -> IsolationResult:
    """Send ``rows``; on a permanent failure, isolate the failing rows by bisection.

    ``send(part)`` makes one attempt. A transient failure ends the run: the
    rows not yet settled are returned in ``pending`` with the error in
    ``transient`` (the caller retries them later, or gives them up).

    Args:
        send: one attempt on a list of rows.
        rows: the group.
        first: the outcome of an attempt on the whole group already made.
        budget: most attempts while isolating (default :func:`isolation_budget`).
    """
    attempt = first if first is not None else send(rows)
    calls = 0 if first is not None else 1
    if attempt.ok:
        return IsolationResult(list(range(len(rows))), {}, calls, [attempt.result])
    if not attempt.permanent:
        return IsolationResult([], {}, calls, transient=attempt.error, pending=list(range(len(rows))))
    isolation = RowIsolation(len(rows), budget)
    isolation.start(attempt)
    results: list[Any] = []
    while (part := isolation.next_part()) is not None:
        attempt = send([rows[i] for i in part])
        calls += 1
        if not attempt.ok and not attempt.permanent:
            settled = set(isolation.delivered) | set(isolation.dead)
            pending = [i for i in range(len(rows)) if i not in settled]
            return IsolationResult(
                sorted(isolation.delivered), dict(isolation.dead), calls, results,
                transient=attempt.error, pending=pending,
            )
        if attempt.ok:
            results.append(attempt.result)
        isolation.record(attempt)
    return IsolationResult(sorted(isolation.delivered), dict(isolation.dead), calls, results)
