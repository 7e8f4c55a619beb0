"""Counters of dropped frames, shared by every process of a node.

A frame can be refused in any process of a node: the admin, any actor, the
process that started it. The counters live in an anonymous shared memory map
made before the node's processes are forked, so each of them adds to the same
numbers and ``stats()``, asked of any actor, sees the node's total. Besides
the count per reason, the last few peers (by host) are kept, with their count,
the last reason and when it happened: that is what ``datalogger nodes`` shows
as refused.
"""

from __future__ import annotations

import mmap
import struct
import time
from contextlib import contextmanager
from typing import Any

__all__ = ["REASONS", "Rejections"]

#: Why a frame is dropped; the index is stored in shared memory.
REASONS = (
    "truncated",
    "unsigned",
    "unknown secret",
    "previous secret expired",
    "bad signature",
    "forbidden class",
    "oversize",
    "no secret",
    "signed",
    "malformed",
)
PEERS = 16
"""Peers remembered (the least recent is forgotten first)."""

_HEAD = struct.Struct(f"<Q{len(REASONS)}Q")
_PEER = struct.Struct("<64sQdB")


class Rejections:
    """Counts per reason, and the last peers refused, in memory shared across ``fork``."""

    def __init__(self) -> None:
        import multiprocessing

        self._memory = mmap.mmap(-1, _HEAD.size + PEERS * _PEER.size)
        self._lock = multiprocessing.get_context("fork").Lock()

    @staticmethod
    def empty() -> dict[str, Any]:
        """What :meth:`snapshot` returns when nothing was ever refused."""
        return {"rejected_frames": 0, "rejected_by_reason": {}, "refused_peers": []}

    @contextmanager
    def _locked(self) -> Any:
        # a process killed while holding the lock must not wedge the others: go on unlocked
        got = self._lock.acquire(timeout=0.2)
        try:
            yield
        finally:
            if got:
                self._lock.release()

    def record(self, host: str, reason: str) -> None:
        """Count one frame refused from ``host`` for ``reason`` (one of :data:`REASONS`)."""
        index = REASONS.index(reason) if reason in REASONS else 0
        key = host.encode("utf-8", "replace")[:64]
        with self._locked():
            head = list(_HEAD.unpack_from(self._memory, 0))
            head[0] += 1
            head[1 + index] += 1
            _HEAD.pack_into(self._memory, 0, *head)
            slots = [_PEER.unpack_from(self._memory, self._slot(i)) for i in range(PEERS)]
            match = next((i for i, slot in enumerate(slots) if slot[0].rstrip(b"\0") == key), None)
            if match is None:
                match = min(range(PEERS), key=lambda i: slots[i][2])
                count = 0
            else:
                count = slots[match][1]
            _PEER.pack_into(self._memory, self._slot(match), key, count + 1, time.time(), index)

    @staticmethod
    def _slot(index: int) -> int:
        return _HEAD.size + index * _PEER.size

    def snapshot(self) -> dict[str, Any]:
        """``{"rejected_frames": n, "rejected_by_reason": {reason: n}, "refused_peers": [...]}``.

        Each refused peer is ``{"peer": host, "frames": n, "last_reason": reason,
        "last_at": epoch seconds}``, most recent first.
        """
        with self._locked():
            head = _HEAD.unpack_from(self._memory, 0)
            slots = [_PEER.unpack_from(self._memory, self._slot(i)) for i in range(PEERS)]
        peers = [
            {
                "peer": key.rstrip(b"\0").decode("utf-8", "replace"),
                "frames": count,
                "last_reason": REASONS[reason],
                "last_at": at,
            }
            for key, count, at, reason in slots
            if count
        ]
        peers.sort(key=lambda p: -p["last_at"])
        return {
            "rejected_frames": head[0],
            "rejected_by_reason": {REASONS[i]: n for i, n in enumerate(head[1:]) if n},
            "refused_peers": peers,
        }
