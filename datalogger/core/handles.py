"""Bound the write-ahead-log files a supervisor keeps open: a least-recently-used set.

A supervisor hosting thousands of topics must not hold one open file per topic.
:class:`HandleLRU` remembers which topics used their log last; when more than
``limit`` are open, it names the least recently used ones, whose supervisor
closes their file (the next append opens it again).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["HandleLRU"]


class HandleLRU:
    """The topics whose log file is open, least recently used first."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._open: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, topic: object) -> bool:
        return topic in self._open

    def used(self, topic: str) -> list[str]:
        """``topic`` used its file; return the topics whose file to close now (oldest first)."""
        self._open[topic] = None
        self._open.move_to_end(topic)
        evicted = []
        while len(self._open) > self.limit:
            oldest, _ = self._open.popitem(last=False)
            evicted.append(oldest)
        return evicted

    def clear(self) -> list[str]:
        """Every topic whose file is open (all to be closed now); the set is emptied."""
        topics = list(self._open)
        self._open.clear()
        return topics

    def forget(self, topic: str) -> None:
        """``topic``'s file was closed by other means (the topic was released)."""
        self._open.pop(topic, None)
