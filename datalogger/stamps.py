"""The time of ``log()``, written into rows that lack a time, for destinations that need one.

InfluxDB stores one point per series and timestamp: points without a time that
the server stamps on arrival collapse into one when they arrive together. A
destination that needs a time says so (:meth:`Destination.log_time`: the row
key and its unit); its rows without that key get the time the chunk was
logged, in that unit, made unique per row:

* The TopicSupervisor gives each chunk a log time in nanoseconds
  (:class:`LogClock`), kept in the write-ahead log with the chunk. Two chunks'
  times are at least as far apart as the first one has rows, in the coarsest
  unit any destination of the topic asks for.
* Row ``i`` of a chunk logged at ``t`` gets ``t // unit + i``
  (:func:`stamp_rows`). So no two rows of a topic get the same stamp, and a
  chunk replayed from the log after a crash gets the same stamps again (an
  InfluxDB point written twice is overwritten, not doubled).

Rows logged faster than one per unit get stamps that run ahead of the clock
(with ``precision = "s"``, a chunk of 1,000 rows spans 1,000 seconds): use a
fine unit (the default ``ns``) or give rows a time of your own.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["UNIT_NS", "LogClock", "stamp_rows"]

#: Nanoseconds per unit.
UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


class LogClock:
    """Hands out log times (ns) for chunks, spaced so that per-row stamps never collide.

    Args:
        step_ns: nanoseconds per row to keep between chunks: the coarsest unit
            asked for by a destination of the topic.
    """

    def __init__(self, step_ns: int) -> None:
        self.step_ns = step_ns
        self.next_ns = 0

    def restore(self, logged_ns: int, rows: int) -> None:
        """Continue after a chunk of ``rows`` rows logged at ``logged_ns`` (read from the log)."""
        self.next_ns = max(self.next_ns, logged_ns + max(rows, 1) * self.step_ns)

    def take(self, rows: int) -> int:
        """The log time of a new chunk of ``rows`` rows: now, or later if needed to stay unique."""
        logged = max(time.time_ns(), self.next_ns)
        self.next_ns = logged + max(rows, 1) * self.step_ns
        return logged


def stamp_rows(rows: list[Any], key: str, unit: str, logged_ns: int) -> list[Any]:
    """``rows`` with ``key`` set to ``logged_ns // unit + i`` in each row ``i`` lacking it.

    Rows that have the key (not None) are kept as they are; the others are
    copied, never changed in place.
    """
    base = logged_ns // UNIT_NS[unit]
    out = rows
    for index, row in enumerate(rows):
        if isinstance(row, dict) and row.get(key) is None:
            if out is rows:
                out = list(rows)
            out[index] = {**row, key: base + index}
    return out
