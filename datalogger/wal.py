"""Per-topic write-ahead log: every chunk is on disk, with a sequence number, before delivery.

Layout: ``<directory>/<topic>/<first_seq:020d>.wal``, segments of records
``{"seq": int, "ts": float, "rows": list[dict]}`` framed as in
:mod:`datalogger.records`. Sequence numbers start at 1 and grow by one per
chunk; only the last ("active") segment is written to. When it has reached
``segment_bytes`` the next append starts a new segment (a group written by
:meth:`WriteAheadLog.append_many` always lands in one segment, so a segment can
overshoot a little).

What each ``fsync`` policy can lose (every append is handed to the operating
system before it returns, so a *process crash* never loses an appended chunk):

- ``"always"``: each append, or each group of :meth:`WriteAheadLog.append_many`,
  is fsync'd before it returns. A *power failure* (or kernel crash) loses
  nothing that was acknowledged, on a disk that honours flushes.
- ``"interval"`` (default): fsync at most every ``fsync_interval`` seconds, on
  an append or on :meth:`WriteAheadLog.sync`, which the owner calls
  periodically. A power failure can lose the chunks appended since the last
  fsync: about the last interval's worth, or more if ``sync`` is not called
  while idle.
- ``"never"``: the operating system writes the pages back when it likes
  (on Linux typically within ~30 s). A power failure can lose that much.

After a power failure the lost chunks' sequence numbers are handed out again
to new chunks: whoever keeps delivery positions must not have persisted them
past the log's end (or must compare with :attr:`WriteAheadLog.next_seq` on start).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .exceptions import ConfigError
from .records import FsyncPolicy, RecordFile, check_fsync_policy, read_frames
from .validation import validate_topic

__all__ = ["DEFAULT_SEGMENT_BYTES", "WriteAheadLog"]

log = logging.getLogger("datalogger.wal")

#: Default size at which a new segment is started.
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_SUFFIX = ".wal"

Rows = list[dict[str, Any]]


class WriteAheadLog:
    """The write-ahead log of one topic (see the module docstring).

    Opening repairs a torn tail of the last segment and continues the sequence
    after the highest one found.

    Args:
        directory: the WAL root; the topic's segments go in ``<directory>/<topic>/``.
        topic: the topic name.
        fsync: ``"always"``, ``"interval"`` or ``"never"`` (see the module docstring).
        segment_bytes: size at which a new segment is started.
        fsync_interval: seconds between fsyncs for ``"interval"``.

    Raises:
        InvalidTopic: ``topic`` is not a valid topic name.
        ConfigError: ``fsync`` is not a valid policy or ``segment_bytes`` < 1.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        topic: str,
        fsync: FsyncPolicy = "interval",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync_interval: float = 0.2,
    ) -> None:
        self._topic = validate_topic(topic)
        self._policy = check_fsync_policy(fsync)
        self._interval = fsync_interval
        if segment_bytes < 1:
            raise ConfigError(f"segment_bytes must be at least 1, not {segment_bytes}")
        self._segment_bytes = segment_bytes
        self._dir = Path(directory) / topic
        self._dir.mkdir(parents=True, exist_ok=True)
        self._segments = self._list_segments()
        self._active: RecordFile | None = None
        self._closed = False
        self._next_seq = 1
        if self._segments:
            last = self._segments[-1]
            self._active = self._open(last)
            self._next_seq = last
            for _offset, _end, record in read_frames(self._path(last)):
                self._next_seq = max(self._next_seq, int(record["seq"]) + 1)

    @property
    def topic(self) -> str:
        """The topic this log belongs to."""
        return self._topic

    @property
    def path(self) -> Path:
        """The directory holding this topic's segments."""
        return self._dir

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended chunk will get."""
        return self._next_seq

    @property
    def last_seq(self) -> int:
        """The sequence number of the last appended chunk (0 if none)."""
        return self._next_seq - 1

    @property
    def bytes_on_disk(self) -> int:
        """Total size of the topic's segments."""
        total = 0
        for first in self._segments:
            if self._active is not None and first == self._segments[-1]:
                total += self._active.size
            else:
                try:
                    total += self._path(first).stat().st_size
                except FileNotFoundError:  # pragma: no cover - removed behind our back
                    pass
        return total

    @property
    def segments(self) -> list[Path]:
        """Paths of the segments, oldest first."""
        return [self._path(first) for first in self._segments]

    def append(self, rows: Rows) -> int:
        """Write one chunk; return its sequence number.

        Raises:
            InvalidData: the rows cannot be serialised with msgpack.
            OSError: the write failed (nothing was appended).
        """
        return self.append_many([rows])[0]

    def append_many(self, chunks: list[Rows]) -> list[int]:
        """Write several chunks with one write and at most one fsync (group commit).

        Returns their sequence numbers, in order. Either all are appended or
        none (an ``InvalidData`` or ``OSError`` leaves the log unchanged).
        """
        if not chunks:
            return []
        active = self._writable()
        now = time.time()
        seqs = list(range(self._next_seq, self._next_seq + len(chunks)))
        active.append_many(
            {"seq": seq, "ts": now, "rows": rows} for seq, rows in zip(seqs, chunks, strict=True)
        )
        self._next_seq = seqs[-1] + 1
        return seqs

    def read_from(self, after_seq: int = 0) -> Iterator[tuple[int, Rows]]:
        """Yield ``(seq, rows)`` for every chunk with ``seq > after_seq``, in order.

        Reading stops at a torn or corrupt record within a segment and goes on
        with the next segment. Chunks appended while iterating may or may not
        be yielded.
        """
        segments = list(self._segments)
        for index, first in enumerate(segments):
            following = segments[index + 1] if index + 1 < len(segments) else None
            if following is not None and following - 1 <= after_seq:
                continue  # every record in it is < following <= after_seq + 1
            try:
                for _offset, _end, record in read_frames(self._path(first)):
                    seq = int(record["seq"])
                    if seq > after_seq:
                        yield seq, record["rows"]
            except FileNotFoundError:
                continue  # removed by remove_through before we opened it

    def remove_through(self, seq: int) -> int:
        """Delete the segments whose chunks all have sequence numbers <= ``seq``.

        The active (last) segment is never deleted. Returns how many were.
        """
        removed = 0
        while len(self._segments) > 1 and self._segments[1] - 1 <= seq:
            first = self._segments.pop(0)
            try:
                self._path(first).unlink()
            except FileNotFoundError:  # pragma: no cover - removed behind our back
                pass
            removed += 1
        return removed

    def sync(self, *, force: bool = False) -> None:
        """Apply the fsync policy now (call periodically with ``"interval"``).

        With ``force``, fsync whatever the policy.
        """
        if self._active is not None:
            self._active.sync(force=force)

    def close(self) -> None:
        """fsync (unless the policy is ``"never"``) and close. Idempotent."""
        self._closed = True
        if self._active is not None:
            self._active.close()
            self._active = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"WriteAheadLog({os.fspath(self._dir)!r}, next_seq={self._next_seq}, "
            f"segments={len(self._segments)})"
        )

    def _writable(self) -> RecordFile:
        if self._closed:
            raise ValueError(f"write-ahead log of topic {self._topic!r} is closed")
        active = self._active
        if active is None or active.size >= self._segment_bytes:
            if active is not None:
                active.close()
            self._active = active = self._open(self._next_seq)
            self._segments.append(self._next_seq)
        return active

    def _open(self, first: int) -> RecordFile:
        return RecordFile(self._path(first), fsync=self._policy, fsync_interval=self._interval)

    def _path(self, first: int) -> Path:
        return self._dir / f"{first:020d}{_SUFFIX}"

    def _list_segments(self) -> list[int]:
        firsts = []
        for entry in self._dir.iterdir():
            stem = entry.name[: -len(_SUFFIX)]
            if entry.name.endswith(_SUFFIX) and stem.isdigit():
                firsts.append(int(stem))
            elif entry.name.endswith(_SUFFIX):
                log.warning("%s: ignoring a file not named like a WAL segment", entry)
        return sorted(firsts)
