"""Which TopicSupervisor hosts a topic: dedicated ones first, then a shared pool.

A topic gets a supervisor of its own (key ``"topic:<name>"``) while fewer than
``dedicated`` topics have one, and always when ``isolate`` names it. Further
topics go to one of ``shared`` pool supervisors (key ``"pool:<i>"``), chosen
by a stable hash of the name (BLAKE2, not Python's per-process salted
``hash()``), so a topic lands on the same pool supervisor in every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

__all__ = ["TopicPlacement", "pool_slot"]


def pool_slot(topic: str, slots: int) -> int:
    """The pool supervisor of ``topic`` among ``slots``: the same in every process and run."""
    digest = hashlib.blake2b(topic.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % slots


class TopicPlacement:
    """Topic -> supervisor key, with the dedicated keys counted."""

    def __init__(self, dedicated: int, shared: int, isolated: Callable[[str], bool]) -> None:
        self.dedicated = dedicated
        self.shared = max(1, shared)
        self.isolated = isolated
        self.keys: dict[str, str] = {}
        """Topic -> the key of its supervisor."""
        self.topics: dict[str, set[str]] = {}
        """Key -> its topics."""
        self._dedicated_count = 0
        self._leaving: dict[str, int] = {}
        """Dedicated keys dropped whose process has not exited yet (how many times)."""

    def key(self, topic: str) -> str:
        """The supervisor key of ``topic``, placing it on first use."""
        key = self.keys.get(topic)
        if key is not None:
            return key
        if self.isolated(topic) or self._dedicated_count < self.dedicated:
            key = f"topic:{topic}"
            if not self.isolated(topic):
                self._dedicated_count += 1
        else:
            key = f"pool:{pool_slot(topic, self.shared)}"
        self.keys[topic] = key
        self.topics.setdefault(key, set()).add(topic)
        return key

    def drop(self, key: str) -> set[str]:
        """Supervisor ``key`` exits (idle): forget its topics and return them.

        Its slot stays taken until :meth:`exited`: until its processes are gone.
        """
        topics = self.topics.pop(key, set())
        for topic in topics:
            if self.keys.get(topic) == key:
                del self.keys[topic]
        if key.startswith("topic:") and not any(self.isolated(t) for t in topics):
            self._leaving[key] = self._leaving.get(key, 0) + 1
        return topics

    def exited(self, key: str) -> None:
        """The processes of supervisor ``key``, dropped before, are gone: its slot is free."""
        if self._leaving.get(key):
            self._leaving[key] -= 1
            self._dedicated_count -= 1

    @staticmethod
    def is_shared(key: str) -> bool:
        """True for a pool supervisor's key."""
        return key.startswith("pool:")
