"""Record framing shared by every file datalogger writes (WAL, spill, dead letters).

Each record is::

    +----------------------+----------------------+------------------+
    | payload length (u32) | CRC32 of payload     | msgpack payload  |
    | big-endian, 4 bytes  | big-endian, 4 bytes  | length bytes     |
    +----------------------+----------------------+------------------+

Records are only ever appended, so a crash can leave at most one torn record at
the end of a file. :func:`read_records` stops at the first record that is short
or fails its CRC or cannot be decoded, and :func:`repair` cuts such a tail off.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

import msgpack

from .exceptions import ConfigError, InvalidData
from .validation import pack, unpack

__all__ = [
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "FsyncPolicy",
    "RecordFile",
    "atomic_write_bytes",
    "check_fsync_policy",
    "encode_record",
    "fsync_directory",
    "read_frames",
    "read_records",
    "repair",
]

log = logging.getLogger("datalogger.records")

#: When the bytes written reach stable storage: see :class:`RecordFile`.
FsyncPolicy = Literal["always", "interval", "never"]

_HEADER = struct.Struct(">II")
#: Bytes of the length + CRC header in front of every payload.
HEADER_SIZE = _HEADER.size
#: Largest payload a record can hold (the length field is an unsigned 32-bit int).
MAX_PAYLOAD = 2**32 - 1

_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def check_fsync_policy(policy: object) -> FsyncPolicy:
    """Return ``policy`` if it is a valid :data:`FsyncPolicy`, else raise :class:`ConfigError`."""
    if policy not in get_args(FsyncPolicy):
        raise ConfigError(f"fsync must be one of 'always', 'interval', 'never', not {policy!r}")
    return policy  # type: ignore[return-value]


def encode_record(obj: Any) -> bytes:
    """Return the framed bytes (header + msgpack payload) of one record.

    Raises:
        InvalidData: ``obj`` cannot be serialised with msgpack, or is too large.
    """
    try:
        payload = pack(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidData(f"record cannot be serialised with msgpack: {exc}") from exc
    if len(payload) > MAX_PAYLOAD:
        raise InvalidData(f"record of {len(payload)} bytes exceeds the {MAX_PAYLOAD} byte limit")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(path: str | os.PathLike[str], start: int = 0) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(offset, end, obj)`` for each complete, valid record from byte ``start``.

    ``end`` is the offset just past the record (where the next one begins).
    Reading stops, without an error, at the first torn or corrupt record and at
    the end of the file as it was when reading began.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = start
        handle.seek(offset)
        while offset + HEADER_SIZE <= size:
            length, crc = _HEADER.unpack(handle.read(HEADER_SIZE))
            end = offset + HEADER_SIZE + length
            if end > size:
                return
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                obj = unpack(payload)
            except _DECODE_ERRORS:
                return
            yield offset, end, obj
            offset = end


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield ``(offset, obj)`` for each complete, valid record of the file at ``path``.

    Stops at the first torn or corrupt record (short header, short payload,
    CRC mismatch, undecodable msgpack).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    for offset, _end, obj in read_frames(path):
        yield offset, obj


def repair(path: str | os.PathLike[str]) -> int:
    """Truncate a torn or corrupt tail off the file at ``path``; return the bytes dropped.

    A WARNING naming the file and the byte count is logged when bytes are
    dropped. A missing file is left alone (0 is returned). Corruption never
    raises; only a failure to access the file does (``OSError``).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    valid_end = 0
    for _offset, end, _obj in read_frames(path):
        valid_end = end
    dropped = size - valid_end
    if dropped > 0:
        with open(path, "r+b") as handle:
            handle.truncate(valid_end)
            os.fsync(handle.fileno())
        log.warning(
            "%s: dropped %d bytes of a torn or corrupt tail (kept %d bytes of valid records)",
            os.fspath(path),
            dropped,
            valid_end,
        )
    return dropped


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that files created, renamed or deleted in it stay so."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:  # pragma: no cover - platform dependent
        log.debug("cannot open directory %s to fsync it: %s", os.fspath(path), exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - some filesystems refuse
        log.debug("cannot fsync directory %s: %s", os.fspath(path), exc)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace the file at ``path`` with ``data`` atomically (tmp file + ``os.replace``).

    Readers see either the old or the new content, never a mix. With
    ``durable`` the tmp file and the directory are fsync'd, so the new content
    also survives a power failure.
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.replace(tmp, target)
    if durable:
        fsync_directory(target.parent)


class RecordFile:
    """A file of records, opened for appending.

    A torn or corrupt tail left by an earlier crash is cut off (see
    :func:`repair`) when the file is opened, so new records always follow valid
    ones. Every append is written to the operating system at once (a process
    crash loses nothing that was appended); ``fsync`` says when it also goes to
    stable storage (what survives a power failure):

    - ``"always"``: fsync after each :meth:`append` / :meth:`append_many`.
    - ``"interval"``: fsync when at least ``fsync_interval`` seconds have passed
      since the last fsync; checked on each append and on :meth:`sync`, so the
      owner should call :meth:`sync` periodically.
    - ``"never"``: leave it to the operating system.

    Args:
        path: the file; created if missing (its directory must exist).
        fsync: the policy above.
        fsync_interval: seconds, for ``"interval"``.

    Raises:
        ConfigError: ``fsync`` is not one of the three policies.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 0.2,
    ) -> None:
        self._policy = check_fsync_policy(fsync)
        self._interval = fsync_interval
        self._path = Path(path)
        existed = self._path.exists()
        if existed:
            repair(self._path)
        self._file = open(self._path, "ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size
        self._dirty = False
        self._last_sync = time.monotonic()
        if not existed and self._policy != "never":
            fsync_directory(self._path.parent)

    @property
    def path(self) -> Path:
        """The file's path."""
        return self._path

    @property
    def size(self) -> int:
        """Bytes in the file (all valid records)."""
        return self._size

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._file.closed

    def append(self, obj: Any) -> int:
        """Append one record; return the bytes written (header included).

        Raises:
            InvalidData: ``obj`` cannot be serialised with msgpack.
            OSError: the write failed (the file is left as it was).
        """
        return self._write(encode_record(obj))

    def append_many(self, objs: Iterable[Any]) -> int:
        """Append several records with one write and at most one fsync (group commit).

        Returns the bytes written. Nothing is written if any object cannot be
        serialised.
        """
        return self._write(b"".join(encode_record(obj) for obj in objs))

    def sync(self, *, force: bool = False) -> None:
        """Apply the fsync policy now (``"interval"``: fsync if the interval has passed).

        With ``force``, fsync unwritten appends whatever the policy.
        """
        if force:
            self._fsync()
        else:
            self._apply_policy()

    def close(self) -> None:
        """fsync pending appends (unless the policy is ``"never"``) and close. Idempotent."""
        if self._file.closed:
            return
        try:
            if self._policy != "never":
                self._fsync()
        finally:
            self._file.close()

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordFile({os.fspath(self._path)!r}, fsync={self._policy!r}, size={self._size})"

    def _write(self, data: bytes) -> int:
        if not data:
            return 0
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                count = self._file.write(view[written:])
                written += count or 0
        except BaseException:
            # Leave no torn record behind: cut the file back to its last valid record.
            try:
                os.ftruncate(self._file.fileno(), self._size)
            except OSError:  # pragma: no cover - repaired on the next open instead
                log.exception("%s: cannot truncate a failed write", os.fspath(self._path))
            raise
        self._size += written
        self._dirty = True
        self._apply_policy()
        return written

    def _apply_policy(self) -> None:
        if self._policy == "always":
            self._fsync()
        elif self._policy == "interval" and time.monotonic() - self._last_sync >= self._interval:
            self._fsync()

    def _fsync(self) -> None:
        if self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False
        self._last_sync = time.monotonic()
