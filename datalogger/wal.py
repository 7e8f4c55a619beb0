"""Per-topic write-ahead log: every chunk is on disk, with a sequence number, before delivery.

Layout: ``<directory>/<topic>/<first_seq:020d>.wal``, segments of records
``{"seq": int, "ts": float, "tn": int, "rows": list[dict]}`` (``ts`` and ``tn``:
when the chunk was logged, in seconds and in nanoseconds) framed as in
:mod:`datalogger.records`. A topic longer than 200 characters gets a directory
named by :func:`datalogger.names.file_name`, with a ``topic`` file holding its
full name. Sequence numbers start at 1 and grow by one per chunk; only the last
("active") segment is written to. When it has reached ``segment_bytes`` the
next append starts a new segment (a group written by
:meth:`WriteAheadLog.append_many` always lands in one segment, so a segment can
overshoot a little). Once every chunk is settled, :meth:`remove_through` rolls
the active segment too: an empty segment named after the next sequence number
takes its place, so delivered data never holds the disk.

Damage: a corrupt record is skipped, reading goes on at the next valid one
(see :mod:`datalogger.records`), and each damaged region is logged as an ERROR
once and counted in :attr:`WriteAheadLog.corrupt_records`. A torn record at
the end of the active segment (a crash in the middle of a write) is cut off
with a WARNING and not counted.

Faults of the disk (full, read-only, a missing permission) raise
:class:`~datalogger.exceptions.StorageError` naming the path and the
operating system's error; nothing is appended then, and the next call tries
again.

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

import errno
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .exceptions import ConfigError, StorageError
from .names import file_name, write_topic_file
from .records import Damage, FsyncPolicy, RecordFile, check_fsync_policy, read_frames
from .validation import validate_topic

__all__ = ["DEFAULT_SEGMENT_BYTES", "WalReader", "WriteAheadLog", "storage_error", "topic_directory"]

log = logging.getLogger("datalogger.wal")

#: Default size at which a new segment is started.
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_SUFFIX = ".wal"

Rows = list[Any]


def _logged_ns(record: dict[str, Any]) -> int:
    """A record's log time in ns (records of older versions have only ``ts``)."""
    tn = record.get("tn")
    return int(tn) if tn is not None else int(float(record.get("ts", 0.0)) * 1e9)


def topic_directory(directory: str | os.PathLike[str], topic: str) -> Path:
    """The directory of ``topic``'s segments under the WAL root ``directory``."""
    return Path(directory) / file_name(topic)


def storage_error(what: str, path: str | os.PathLike[str], exc: OSError) -> StorageError:
    """A :class:`StorageError` naming ``what`` failed, the path and the OS error."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    return StorageError(f"{what}: {os.fspath(path)}: {reason}" + (f" ({code})" if code else ""))


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
        StorageError: the directory or the active segment cannot be opened.
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
        self._dir = topic_directory(directory, topic)
        self._damage: set[tuple[str, int]] = set()
        self._segments: list[int] = []
        self._active: RecordFile | None = None
        self._closed = False
        self._next_seq = 1
        self._last_logged: tuple[int, int] | None = None
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            write_topic_file(self._dir, topic)
            self._segments = self._list_segments()
            if self._segments:
                last = self._segments[-1]
                self._active = self._open(last)
                self._next_seq = last
                for _offset, _end, record in read_frames(self._path(last), on_damage=self._damaged):
                    self._next_seq = max(self._next_seq, int(record["seq"]) + 1)
                    self._last_logged = (_logged_ns(record), len(record["rows"]))
        except OSError as exc:
            if self._active is not None:
                self._active.close()
            raise storage_error(f"write-ahead log of topic {topic!r}", self._dir, exc) from exc

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
    def last_logged(self) -> tuple[int, int] | None:
        """``(logged_ns, rows)`` of the last chunk appended (None when the log is empty)."""
        return self._last_logged

    @property
    def corrupt_records(self) -> int:
        """Damaged regions found in the segments since this log was opened (each once)."""
        return len(self._damage)

    @property
    def segments(self) -> list[Path]:
        """Paths of the segments, oldest first."""
        return [self._path(first) for first in self._segments]

    def append(self, rows: Rows, logged_ns: int | None = None) -> int:
        """Write one chunk; return its sequence number.

        ``logged_ns`` is the chunk's log time in nanoseconds (default: now).

        Raises:
            InvalidData: the rows cannot be serialised with msgpack.
            StorageError: the write failed (nothing was appended).
        """
        return self.append_many([rows], None if logged_ns is None else [logged_ns])[0]

    def append_many(self, chunks: list[Rows], logged_ns: list[int] | None = None) -> list[int]:
        """Write several chunks with one write and at most one fsync (group commit).

        Returns their sequence numbers, in order. Either all are appended or
        none (an ``InvalidData`` or ``StorageError`` leaves the log unchanged).
        ``logged_ns`` gives each chunk's log time in nanoseconds (default: now).
        """
        if not chunks:
            return []
        now = time.time_ns()
        times = logged_ns if logged_ns is not None else [now] * len(chunks)
        seqs = list(range(self._next_seq, self._next_seq + len(chunks)))
        records = [
            {"seq": seq, "ts": tn / 1e9, "tn": tn, "rows": rows}
            for seq, tn, rows in zip(seqs, times, chunks, strict=True)
        ]
        try:
            active = self._writable()
            active.append_many(records)
        except OSError as exc:
            path = self._active.path if self._active is not None else self._dir
            raise storage_error(f"write-ahead log of topic {self._topic!r}", path, exc) from exc
        self._next_seq = seqs[-1] + 1
        self._last_logged = (times[-1], len(chunks[-1]))
        return seqs

    def read_from(self, after_seq: int = 0) -> Iterator[tuple[int, Rows]]:
        """Yield ``(seq, rows)`` for every chunk with ``seq > after_seq``, in order.

        See :meth:`chunks_from`.
        """
        for seq, _logged, rows in self.chunks_from(after_seq):
            yield seq, rows

    def chunks_from(self, after_seq: int = 0) -> Iterator[tuple[int, int, Rows]]:
        """Yield ``(seq, logged_ns, rows)`` for every chunk with ``seq > after_seq``, in order.

        A corrupt record is skipped (and counted, see :attr:`corrupt_records`);
        reading goes on with the next valid record. Chunks appended while
        iterating may or may not be yielded.
        """
        segments = list(self._segments)
        for index, first in enumerate(segments):
            following = segments[index + 1] if index + 1 < len(segments) else None
            if following is not None and following - 1 <= after_seq:
                continue  # every record in it is < following <= after_seq + 1
            try:
                frames = read_frames(self._path(first), on_damage=self._damaged)
                for _offset, _end, record in frames:
                    seq = int(record["seq"])
                    if seq > after_seq:
                        yield seq, _logged_ns(record), record["rows"]
            except FileNotFoundError:
                continue  # removed by remove_through before we opened it

    def chunks_at(
        self, after_seq: int, position: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, int, Rows, tuple[int, int]]]:
        """As :meth:`chunks_from`, each chunk with the position just past its record.

        ``position`` (a ``(segment, offset)`` yielded earlier, with every chunk
        before it numbered ``<= after_seq``) lets reading resume there instead of
        parsing the segment from its start. A position whose segment is gone is
        ignored.
        """
        segments = list(self._segments)
        start_segment, start_offset = position if position is not None else (0, 0)
        if start_segment not in segments:
            start_segment, start_offset = 0, 0
        for index, first in enumerate(segments):
            if first < start_segment:
                continue
            following = segments[index + 1] if index + 1 < len(segments) else None
            if following is not None and following - 1 <= after_seq:
                continue  # every record in it is < following <= after_seq + 1
            offset = start_offset if first == start_segment else 0
            try:
                frames = read_frames(self._path(first), offset, on_damage=self._damaged)
                for _offset, end, record in frames:
                    seq = int(record["seq"])
                    if seq > after_seq:
                        yield seq, _logged_ns(record), record["rows"], (first, end)
            except FileNotFoundError:
                continue  # removed by remove_through before we opened it

    def remove_through(self, seq: int) -> int:
        """Delete the segments whose chunks all have sequence numbers <= ``seq``.

        When that is every chunk (``seq >= last_seq``), the active segment is
        rolled and deleted too, unless it is empty: an empty segment named after
        :attr:`next_seq` takes its place, so the numbering goes on after a
        restart. Returns how many segments were deleted.
        """
        removed = 0
        while len(self._segments) > 1 and self._segments[1] - 1 <= seq:
            first = self._segments.pop(0)
            self._unlink(first)
            removed += 1
        if seq >= self.last_seq and self._segments and not self._closed:
            removed += self._roll()
        return removed

    def _roll(self) -> int:
        """Replace the (settled) active segment by an empty one; return 1 if one was deleted."""
        last = self._segments[-1]
        if last == self._next_seq and (self._active is None or self._active.size == 0):
            return 0  # already an empty segment named after the next chunk
        old, self._active = self._active, None
        if old is not None:
            try:
                old.close()
            except OSError as exc:  # its content is settled: only the deletion matters
                log.debug("%s: closing a settled segment: %s", old.path, exc)
        try:
            self._active = self._open(self._next_seq)
            self._segments = [self._next_seq]
        except OSError as exc:
            # No room even for an empty file: delete anyway, the space matters more.
            # The next append creates the segment; numbering restarts only if the
            # node restarts before that (safe: settled marks are clamped to the log).
            log.warning("topic %s: cannot start an empty segment: %s", self._topic, exc)
            self._segments = []
        if last != self._next_seq:
            self._unlink(last)
            return 1
        return 0

    def _unlink(self, first: int) -> None:
        try:
            self._path(first).unlink()
        except FileNotFoundError:  # pragma: no cover - removed behind our back
            pass
        except OSError as exc:
            log.warning("topic %s: cannot delete the settled segment %s: %s",
                        self._topic, self._path(first), exc)

    def sync(self, *, force: bool = False) -> None:
        """Apply the fsync policy now (call periodically with ``"interval"``).

        With ``force``, fsync whatever the policy.

        Raises:
            StorageError: the fsync failed.
        """
        if self._active is not None:
            try:
                self._active.sync(force=force)
            except OSError as exc:
                raise storage_error(
                    f"write-ahead log of topic {self._topic!r}: fsync", self._active.path, exc
                ) from exc

    def close(self) -> None:
        """fsync (unless the policy is ``"never"``) and close. Idempotent.

        A failing fsync is logged, not raised: what was appended is in the
        operating system's hands.
        """
        self._closed = True
        active, self._active = self._active, None
        if active is not None:
            try:
                active.close()
            except OSError as exc:
                log.error("topic %s: closing %s: %s", self._topic, active.path, exc)

    def release_handle(self) -> None:
        """Close the active segment's file until the next append, which opens it again.

        Unlike :meth:`close` the log stays usable: a node with many topics keeps only
        the recently used ones open (see ``datalogger.core.handles``). Call
        :meth:`sync` first if the policy wants the data on disk.
        """
        active, self._active = self._active, None
        if active is not None:
            try:
                active.close()
            except OSError as exc:
                log.error("topic %s: closing %s: %s", self._topic, active.path, exc)

    @property
    def has_handle(self) -> bool:
        """True while the active segment's file is open."""
        return self._active is not None

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
        if active is None and self._segments and self._segments[-1] <= self._next_seq:
            # the handle was released: append to the last segment again
            self._active = active = self._open(self._segments[-1])
        if active is None or active.size >= self._segment_bytes:
            if active is not None:
                self._active = None
                active.close()
            self._active = active = self._open(self._next_seq)
            if not self._segments or self._segments[-1] != self._next_seq:
                self._segments.append(self._next_seq)
        return active

    def _open(self, first: int) -> RecordFile:
        return RecordFile(
            self._path(first),
            fsync=self._policy,
            fsync_interval=self._interval,
            on_damage=self._damaged,
        )

    def _damaged(self, damage: Damage) -> None:
        """Count and log each damaged region once; a torn tail is only a warning."""
        if damage.torn:
            log.warning("topic %s: %s", self._topic, damage.describe())
            return
        key = (damage.path, damage.offset)
        if key not in self._damage:
            self._damage.add(key)
            log.error("topic %s: write-ahead log damaged: %s", self._topic, damage.describe())

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


class WalReader:
    """Reads chunks of one log back, in order, resuming where the last read stopped.

    A lane over its memory bound keeps only the sequence numbers of its chunks;
    this reads their rows back from the log when there is room again. Each reader
    keeps its own position, so reading forward never parses a segment twice.
    """

    def __init__(self, wal: WriteAheadLog) -> None:
        self._wal = wal
        self._position: tuple[int, int] | None = None
        self._position_seq = 0
        """Every chunk before ``_position`` is numbered ``<= _position_seq``."""

    def read(self, seqs: list[int]) -> list[tuple[int, int, Rows]]:
        """``(seq, logged_ns, rows)`` of the chunks numbered ``seqs`` (ascending), in order.

        A chunk the log no longer holds (a damaged record, already counted and
        logged by the log) is missing from the answer.

        Raises:
            StorageError: a segment cannot be read.
        """
        if not seqs:
            return []
        wanted = set(seqs)
        after = seqs[0] - 1
        position = self._position if self._position_seq <= after else None
        found: list[tuple[int, int, Rows]] = []
        try:
            for seq, logged_ns, rows, end in self._wal.chunks_at(after, position):
                if seq > seqs[-1]:
                    break
                self._position, self._position_seq = end, seq
                if seq in wanted:
                    found.append((seq, logged_ns, rows))
        except OSError as exc:
            what = f"write-ahead log of topic {self._wal.topic!r}: read"
            raise storage_error(what, self._wal.path, exc) from exc
        return found
