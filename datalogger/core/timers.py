"""Many timers behind one ``wakeupAfter``: a heap of due times.

Thespian keeps an actor's pending wakeups in a list it sorts again on every
``wakeupAfter`` (with Python-level comparisons): a supervisor hosting thousands
of topics, each with its linger, fsync, status and recovery timers, would spend
its time sorting. :class:`TimerQueue` keeps them in a heap instead; the actor
asks Thespian for one wakeup at the earliest due time and, when it comes, takes
every timer that is due.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

__all__ = ["TimerQueue"]


class TimerQueue:
    """Payloads due at given times (seconds on the caller's clock)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._wakeup_at: float | None = None
        """When the wakeup the actor asked for fires (None: none pending)."""

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, now: float, seconds: float, payload: Any, grid: float = 0.0) -> float | None:
        """Add ``payload`` due ``seconds`` after ``now`` (rounded up to a multiple of ``grid``,
        so that timers set within one ``grid`` fire together).

        Returns the seconds after which the actor must ask for a wakeup, or None
        when one already pending fires early enough.
        """
        due = now + max(seconds, 0.0)
        if grid > 0:
            due = math.ceil(due / grid) * grid
        heapq.heappush(self._heap, (due, next(self._order), payload))
        if self._wakeup_at is None or due < self._wakeup_at:
            self._wakeup_at = due
            return due - now
        return None

    def due(self, now: float) -> tuple[list[Any], float | None]:
        """The wakeup came: the payloads due by ``now`` (in order), and the seconds after which
        to ask for the next wakeup (None: no timer left)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        if not self._heap:
            self._wakeup_at = None
            return out, None
        if self._wakeup_at is not None and self._wakeup_at > now and self._wakeup_at <= self._heap[0][0]:
            return out, None  # a wakeup asked for earlier still comes in time
        self._wakeup_at = self._heap[0][0]
        return out, max(0.0, self._wakeup_at - now)
