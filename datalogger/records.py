"""Record framing shared by every file datalogger writes (WAL, spill, dead letters).

Each record (format version 2) is::

    +-------------+---------+----------------+---------------------+-----------------+
    | marker      | version | payload length | CRC32 of the length | msgpack payload |
    | F5 44 4C    | 02      | u32 big-endian | and of the payload  | length bytes    |
    +-------------+---------+----------------+---------------------+-----------------+

The marker lets a reader find the next record after a damaged one: reading
*resynchronises* on the next marker whose record is whole and passes its
CRC, instead of dropping the rest of the file. Because the CRC covers the
length too, a flipped bit in a length is caught, not taken for the end of the
file. Every damaged region is reported (:class:`Damage`): to the ``on_damage``
callback of the reader, or else as a WARNING of the ``datalogger.records``
logger.

Files written before version 2 hold records without marker and version
(``length u32, CRC32 of the payload u32, payload``); they are still read. A
damaged version-1 record cannot be skipped over (there is no marker to find
the next one): reading stops there, as it always did, and the damage is
reported. New records are always written in version 2, also when appended to
an old file.

Records are only ever appended, so a crash can leave at most one torn record at
the end of a file: a record cut short, which :func:`repair` cuts off. A damaged
region that ends the file but is not cut short (a whole record failing its
CRC) is counted as corruption, not as a torn write.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, get_args

import attrs
import msgpack

from .exceptions import ConfigError, InvalidData
from .validation import pack, unpack

__all__ = [
    "HEADER_SIZE",
    "MARKER",
    "MAX_PAYLOAD",
    "Damage",
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

#: The bytes every version-2 record starts with: a marker and the version.
MARKER = b"\xf5DL\x02"
_HEADER = struct.Struct(">4sII")
_V1_HEADER = struct.Struct(">II")
#: Bytes of the marker + version + length + CRC header in front of every payload.
HEADER_SIZE = _HEADER.size
#: Largest payload a record can hold (the length field is an unsigned 32-bit int).
MAX_PAYLOAD = 2**32 - 1
_SCAN_BLOCK = 1 << 16

_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


@attrs.frozen
class Damage:
    """A damaged region of a record file, skipped by a reader."""

    path: str
    """The file."""
    offset: int
    """Where the damage starts."""
    length: int
    """Bytes skipped (up to the next valid record, or the end of the file)."""
    torn: bool
    """True for a record cut short at the end of the file: what a crash in the
    middle of a write leaves, not corruption."""

    def describe(self) -> str:
        """One line for the log."""
        if self.torn:
            return f"{self.path}: a torn record at byte {self.offset} ({self.length} bytes)"
        return (
            f"{self.path}: corrupt record at byte {self.offset}: {self.length} bytes skipped"
            " (the data in them is lost)"
        )


OnDamage = Callable[[Damage], None]


def _log_damage(damage: Damage) -> None:
    log.warning("%s", damage.describe())


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
    length = len(payload).to_bytes(4, "big")
    return MARKER + length + zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "big") + payload


_SHORT = object()
"""Parse result: the record runs past the end of the file."""


def _parse(handle: IO[bytes], offset: int, size: int) -> tuple[int, Any] | object | None:
    """The record at ``offset``: ``(end, obj)``, :data:`_SHORT`, or None if it is damaged."""
    handle.seek(offset)
    head = handle.read(4)
    if head == MARKER:
        if offset + HEADER_SIZE > size:
            return _SHORT
        raw_length = handle.read(4)
        crc = int.from_bytes(handle.read(4), "big")
        length = int.from_bytes(raw_length, "big")
        end = offset + HEADER_SIZE + length
        if end > size:
            return _SHORT
        payload = handle.read(length)
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(raw_length)) != crc:
            return None
    else:
        if offset + _V1_HEADER.size > size:
            return _SHORT
        handle.seek(offset)
        length, crc = _V1_HEADER.unpack(handle.read(_V1_HEADER.size))
        end = offset + _V1_HEADER.size + length
        if end > size:
            return _SHORT
        payload = handle.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return None
    try:
        return end, unpack(payload)
    except _DECODE_ERRORS:
        return None


def _next_record(handle: IO[bytes], start: int, size: int) -> int | None:
    """The offset of the next whole, valid version-2 record at or after ``start``."""
    position = start
    while position + HEADER_SIZE <= size:
        handle.seek(position)
        block = handle.read(min(_SCAN_BLOCK, size - position))
        found = block.find(MARKER)
        if found < 0:
            position += max(1, len(block) - len(MARKER) + 1)
            continue
        candidate = position + found
        parsed = _parse(handle, candidate, size)
        if isinstance(parsed, tuple):
            return candidate
        position = candidate + 1
    return None


def read_frames(
    path: str | os.PathLike[str], start: int = 0, on_damage: OnDamage | None = None
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(offset, end, obj)`` for each complete, valid record from byte ``start``.

    ``end`` is the offset just past the record (where the next one begins).
    A damaged record is skipped: reading goes on at the next valid record,
    and the damage is passed to ``on_damage`` (default: logged as a WARNING).
    Reading ends at the end of the file as it was when reading began.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    report = on_damage or _log_damage
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = start
        while offset < size:
            parsed = _parse(handle, offset, size)
            if isinstance(parsed, tuple):
                end, obj = parsed
                yield offset, end, obj
                offset = end
                continue
            following = _next_record(handle, offset + 1, size)
            if following is None:
                report(Damage(os.fspath(path), offset, size - offset, torn=parsed is _SHORT))
                return
            report(Damage(os.fspath(path), offset, following - offset, torn=False))
            offset = following


def read_records(
    path: str | os.PathLike[str], on_damage: OnDamage | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(offset, obj)`` for each complete, valid record of the file at ``path``.

    Damaged records are skipped and reported as in :func:`read_frames`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    for offset, _end, obj in read_frames(path, on_damage=on_damage):
        yield offset, obj


def repair(path: str | os.PathLike[str], on_damage: OnDamage | None = None) -> int:
    """Truncate a torn or corrupt tail off the file at ``path``; return the bytes dropped.

    Only what follows the last valid record goes: damage between valid records
    stays (readers skip it). Every damaged region is reported to ``on_damage``
    (default: logged). A WARNING naming the file and the byte count is logged
    when bytes are dropped. A missing file is left alone (0 is returned).
    Corruption never raises; only a failure to access the file does (``OSError``).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    valid_end = 0
    for _offset, end, _obj in read_frames(path, on_damage=on_damage):
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

    An append that fails (a full disk, an I/O error), in its write or in its
    fsync, is taken back: the file is cut back to its last valid record and
    the error raised, so a failed append never leaves a record behind.

    Args:
        path: the file; created if missing (its directory must exist).
        fsync: the policy above.
        fsync_interval: seconds, for ``"interval"``.
        on_damage: told of each damaged region found when the file is opened
            (default: logged).

    Raises:
        ConfigError: ``fsync`` is not one of the three policies.
        OSError: the file cannot be opened or created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 0.2,
        on_damage: OnDamage | None = None,
    ) -> None:
        self._policy = check_fsync_policy(fsync)
        self._interval = fsync_interval
        self._path = Path(path)
        existed = self._path.exists()
        if existed:
            repair(self._path, on_damage)
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
        try:
            self._apply_policy()
        except OSError:
            # The fsync failed: these bytes may never reach the disk. Take them back, so
            # that the caller's "failed" is the truth.
            try:
                os.ftruncate(self._file.fileno(), self._size - written)
                self._size -= written
            except OSError:  # pragma: no cover - repaired on the next open instead
                log.exception("%s: cannot truncate after a failed fsync", os.fspath(self._path))
            raise
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
