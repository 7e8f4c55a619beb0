"""A bounded-memory FIFO of chunks on disk: the queue of the client spool.

A client with a ``spool_dir`` (:mod:`datalogger.client_spool`) pushes here
the chunks it cannot hand to a node, and pops them back, in order, once a
node takes them. (Inside a node there is no such queue: a lane over its
memory bound reads its chunks back from the topic's write-ahead log.)

Layout in the queue's directory: segments ``<index:020d>.spill`` of records
``{"seq": int, "rows": list[dict]}`` framed as in :mod:`datalogger.records`,
and a ``cursor`` file (msgpack ``{"segment": int, "offset": int}``) giving
the read position. The cursor is replaced atomically (tmp file +
``os.replace``) by every :meth:`SpoolQueue.pop`; segments read to the end are
deleted afterwards.

Crash semantics: a pop is committed when :meth:`SpoolQueue.pop` returns.
Reopening the directory after a crash yields exactly the chunks not yet
popped; a chunk whose pop was interrupted comes out again (at least once).
A push is on disk as soon as it returns (a process crash loses nothing); the
``fsync`` policy decides what a power failure can lose, as for the WAL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any

from .exceptions import ConfigError
from .records import FsyncPolicy, RecordFile, atomic_write_bytes, check_fsync_policy, read_frames
from .validation import pack, unpack

__all__ = ["DEFAULT_SPOOL_SEGMENT_BYTES", "SpoolQueue"]

log = logging.getLogger("datalogger.spool_queue")

#: Default size at which a new segment is started.
DEFAULT_SPOOL_SEGMENT_BYTES = 8 * 1024 * 1024
_SUFFIX = ".spill"  # the name of earlier builds, kept so that spools written then are read
_CURSOR = "cursor"

Rows = list[dict[str, Any]]


class SpoolQueue:
    """A FIFO of ``(seq, rows)`` chunks kept on disk (see the module docstring).

    Opening repairs a torn tail of the last segment and resumes at the saved
    read position.

    Args:
        directory: the queue's own directory (created if missing).
        segment_bytes: size at which a new segment is started.
        fsync: ``"always"``, ``"interval"`` or ``"never"``: when pushes and the
            cursor are fsync'd (``"never"`` also skips fsyncing the cursor).
        fsync_interval: seconds between fsyncs for ``"interval"``.

    Raises:
        ConfigError: ``fsync`` is not a valid policy or ``segment_bytes`` < 1.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_bytes: int = DEFAULT_SPOOL_SEGMENT_BYTES,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 0.2,
    ) -> None:
        if segment_bytes < 1:
            raise ConfigError(f"segment_bytes must be at least 1, not {segment_bytes}")
        self._policy = check_fsync_policy(fsync)
        self._interval = fsync_interval
        self._segment_bytes = segment_bytes
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._closed = False
        self._writer: RecordFile | None = None
        self._chunks = 0
        self._rows = 0
        self._recover()

    @property
    def path(self) -> Path:
        """The queue's directory."""
        return self._dir

    def __len__(self) -> int:
        """Chunks waiting."""
        return self._chunks

    @property
    def rows(self) -> int:
        """Rows waiting (over all chunks)."""
        return self._rows

    @property
    def bytes_on_disk(self) -> int:
        """Total size of the segments (consumed parts of the first one included)."""
        total = 0
        for index in self._segments:
            if self._writer is not None and index == self._segments[-1]:
                total += self._writer.size
            else:
                total += self._segment(index).stat().st_size
        return total

    def push(self, seq: int, rows: Rows) -> None:
        """Add a chunk at the end of the queue.

        Raises:
            InvalidData: the rows cannot be serialised with msgpack.
            OSError: the write failed (nothing was added).
        """
        self._writable().append({"seq": seq, "rows": rows})
        self._chunks += 1
        self._rows += len(rows)

    def pop(self, max_rows: int) -> list[tuple[int, Rows]]:
        """Remove and return whole chunks from the front, in order, up to ``max_rows`` rows.

        At least one chunk is returned if the queue is not empty, even one of
        more than ``max_rows`` rows. The pop is committed (the cursor saved)
        before this returns.
        """
        taken, rows, consumed, read = self._select(max_rows)
        if not taken:
            return taken
        self._read = read
        self._chunks -= len(taken)
        self._rows -= rows
        if self._chunks <= 0:
            # Everything is consumed: drop all segments, start afresh after them.
            self._chunks = self._rows = 0
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            consumed = list(self._segments)
            self._read = (self._segments[-1] + 1, 0)
        self._save_cursor()
        for index in consumed:
            self._segments.remove(index)
            self._segment(index).unlink(missing_ok=True)
        return taken

    def peek(self, max_rows: int) -> list[tuple[int, Rows]]:
        """The chunks :meth:`pop` would return now, without removing them.

        For a consumer that commits only once it has handed the chunks on:
        ``peek``, hand on, then ``pop`` the same ``max_rows``.
        """
        return self._select(max_rows)[0]

    def _select(self, max_rows: int) -> tuple[list[tuple[int, Rows]], int, list[int], tuple[int, int]]:
        """(chunks, rows, segments fully read, read position after them) from the front."""
        if self._closed:
            raise ValueError(f"spool queue {os.fspath(self._dir)!r} is closed")
        taken: list[tuple[int, Rows]] = []
        rows = 0
        consumed: list[int] = []
        read = self._read
        with closing(self._frames()) as frames:
            for index, end, seq, chunk in frames:
                if taken and rows + len(chunk) > max_rows:
                    break
                taken.append((seq, chunk))
                rows += len(chunk)
                consumed = [i for i in self._segments if i < index]
                read = (index, end)
                if rows >= max_rows:
                    break
        return taken, rows, consumed, read

    def sync(self, *, force: bool = False) -> None:
        """Apply the fsync policy to pushes now (call periodically with ``"interval"``)."""
        if self._writer is not None:
            self._writer.sync(force=force)

    def close(self) -> None:
        """fsync pending pushes (unless the policy is ``"never"``) and close. Idempotent."""
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> SpoolQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SpoolQueue({os.fspath(self._dir)!r}, chunks={self._chunks}, rows={self._rows})"

    def _frames(self) -> Generator[tuple[int, int, int, Rows], None, None]:
        """Yield ``(segment, end, seq, rows)`` from the read position to the end."""
        index, offset = self._read
        for segment in [i for i in self._segments if i >= index]:
            start = offset if segment == index else 0
            path = self._segment(segment)
            end = start
            for _offset, end, record in read_frames(path, start):
                yield segment, end, int(record["seq"]), record["rows"]
            size = path.stat().st_size
            if end < size and segment != self._segments[-1]:
                log.warning(
                    "%s: skipping %d bytes of a corrupt record and what follows it",
                    path,
                    size - end,
                )

    def _writable(self) -> RecordFile:
        if self._closed:
            raise ValueError(f"spool queue {os.fspath(self._dir)!r} is closed")
        writer = self._writer
        if writer is None or writer.size >= self._segment_bytes:
            if writer is not None:
                writer.close()
            index = self._segments[-1] + 1 if self._segments else self._read[0]
            self._writer = writer = self._open(index)
            self._segments.append(index)
        return writer

    def _open(self, index: int) -> RecordFile:
        return RecordFile(self._segment(index), fsync=self._policy, fsync_interval=self._interval)

    def _segment(self, index: int) -> Path:
        return self._dir / f"{index:020d}{_SUFFIX}"

    def _save_cursor(self) -> None:
        index, offset = self._read
        atomic_write_bytes(
            self._dir / _CURSOR,
            pack({"segment": index, "offset": offset}),
            durable=self._policy != "never",
        )

    def _load_cursor(self) -> tuple[int, int]:
        path = self._dir / _CURSOR
        try:
            cursor = unpack(path.read_bytes())
            return int(cursor["segment"]), int(cursor["offset"])
        except FileNotFoundError:
            return 0, 0
        except Exception as exc:  # corrupt cursor: re-deliver rather than lose
            log.warning("%s: unreadable cursor (%s); reading from the start", path, exc)
            return 0, 0

    def _recover(self) -> None:
        (self._dir / (_CURSOR + ".tmp")).unlink(missing_ok=True)
        saved = index, offset = self._load_cursor()
        segments = []
        for entry in self._dir.iterdir():
            stem = entry.name[: -len(_SUFFIX)]
            if entry.name.endswith(_SUFFIX) and stem.isdigit():
                if int(stem) < index:
                    entry.unlink()  # consumed; the crash came before its deletion
                else:
                    segments.append(int(stem))
        self._segments = sorted(segments)
        if self._segments:
            self._writer = self._open(self._segments[-1])
        if index not in self._segments:
            # Its segment is gone: resume at the next one there is.
            index = self._segments[0] if self._segments else index
            offset = 0
        elif offset > self._segment(index).stat().st_size:
            log.warning(
                "%s: the cursor points past the end of the segment (lost in a power "
                "failure?); resuming at its end",
                self._segment(index),
            )
            offset = self._segment(index).stat().st_size
        self._read = (index, offset)
        if self._read != saved:
            self._save_cursor()  # or pushes made before the next pop could be skipped
        for _index, _end, _seq, rows in self._frames():
            self._chunks += 1
            self._rows += len(rows)
