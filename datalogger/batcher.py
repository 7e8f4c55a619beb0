"""Collecting chunks into batches, flushed when full or after an interval.

Plain logic used by the DestinationWorker (``buffer = {...}``) and by the
BufferActor behind :class:`datalogger.DataBuffer`. The owner schedules a timer
when :meth:`Batcher.add` says so, and passes the timer's generation back to
:meth:`Batcher.due`: a timer from before a size-triggered flush is stale and
is ignored.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["Batch", "Batcher"]


class Batch:
    """Rows collected from one or more chunks."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.rows: list[Any] = []


class Batcher:
    """One buffer: ``max_size`` rows or ``interval`` seconds, whichever comes first."""

    def __init__(self, max_size: int, interval: float, jitter: float = 0.0) -> None:
        self.max_size = max_size
        self.interval = interval
        self.jitter = jitter
        self.generation = 0
        self._batch = Batch()

    def __len__(self) -> int:
        return len(self._batch.rows)

    def add(self, seq: int, rows: list[Any]) -> tuple[Batch | None, float | None]:
        """Add rows. Returns (a full batch to send now or None, a timer delay to schedule or None)."""
        first = not self._batch.rows
        self._batch.seqs.append(seq)
        self._batch.rows.extend(rows)
        if len(self._batch.rows) >= self.max_size:
            return self.take(), None
        if first:
            return None, self.interval + (random.uniform(0, self.jitter) if self.jitter else 0.0)
        return None, None

    def due(self, generation: int) -> Batch | None:
        """The batch a timer of ``generation`` flushes, or None if the timer is stale."""
        if generation != self.generation or not self._batch.rows:
            return None
        return self.take()

    def take(self) -> Batch | None:
        """Remove and return the current batch (None when empty); older timers go stale."""
        if not self._batch.rows:
            return None
        batch, self._batch = self._batch, Batch()
        self.generation += 1
        return batch
