"""The dead-letter store: chunks a destination refused for good, or gave up on.

Layout: ``<directory>/<destination>/<topic>.dl``, one file of records per
(topic, destination), framed as in :mod:`datalogger.records`. Each file is
guarded by ``fcntl.flock`` on a sidecar ``<topic>.dl.lock`` file (shared for
reading, exclusive for writing), so that several processes can use the same
store: the node's actor appending while ``datalogger replay`` removes letters.
Additions are fsync'd before :meth:`DeadLetterStore.add` returns; removals
rewrite the file atomically (tmp file + ``os.replace``).

Topic and destination names are checked with
:func:`datalogger.validation.validate_topic` before they reach a path, so no
name can lead outside the store's directory, and go through
:func:`datalogger.names.file_name`, which shortens names longer than 200
characters with a hash: the file of a long topic is found by that name, and
the letters in it carry the full topic.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .exceptions import InvalidTopic
from .names import file_name
from .records import RecordFile, atomic_write_bytes, encode_record, read_records
from .validation import validate_topic

__all__ = ["DeadLetter", "DeadLetterStore", "DeadLetterSummary"]

_SUFFIX = ".dl"
_LOCK_SUFFIX = ".lock"


@attrs.frozen
class DeadLetter:
    """A chunk (or part of one) that could not be delivered."""

    id: str
    """Unique id (a uuid4 in hex)."""
    topic: str
    """The topic the rows were logged to."""
    destination: str
    """The destination that did not take them."""
    rows: list[dict[str, Any]]
    """The rows."""
    reason: str
    """Why they were given up on (the last error)."""
    attempts: int
    """How many delivery attempts were made."""
    first_attempt_at: float
    """When delivery was first tried (epoch seconds)."""
    last_attempt_at: float
    """When delivery was last tried (epoch seconds)."""
    created_at: float
    """When the letter was stored (epoch seconds)."""
    errors: list[str] | None = None
    """The error of each row, in the order of ``rows`` (None in letters of older versions)."""

    def row_errors(self) -> list[str]:
        """The error of each row: :attr:`errors`, or :attr:`reason` for every row."""
        if self.errors is not None and len(self.errors) == len(self.rows):
            return list(self.errors)
        return [self.reason] * len(self.rows)


@attrs.frozen
class DeadLetterSummary:
    """The dead letters of one (topic, destination)."""

    topic: str
    """The topic."""
    destination: str
    """The destination."""
    letters: int
    """How many letters there are."""
    rows: int
    """How many rows they hold in all."""
    oldest: float
    """``created_at`` of the oldest letter (epoch seconds)."""
    newest: float
    """``created_at`` of the newest letter (epoch seconds)."""
    last_reason: str
    """The reason of the newest letter."""


def _validate_destination(destination: object) -> str:
    try:
        return validate_topic(destination)
    except InvalidTopic as exc:
        raise InvalidTopic(f"invalid destination name: {exc}") from exc


class DeadLetterStore:
    """Dead letters on disk, shared safely between processes (see the module docstring).

    Args:
        directory: the store's root directory (created when the first letter is added).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)

    @property
    def path(self) -> Path:
        """The store's root directory."""
        return self._dir

    def add(
        self,
        topic: str,
        destination: str,
        rows: list[dict[str, Any]],
        reason: str,
        attempts: int,
        first_attempt_at: float,
        last_attempt_at: float,
        errors: list[str] | None = None,
    ) -> DeadLetter:
        """Store a dead letter, fsync'd before returning; return it.

        ``errors`` gives the error of each row, in order (default: ``reason`` for all).

        Raises:
            InvalidTopic: ``topic`` or ``destination`` is not a valid name.
            InvalidData: the rows cannot be serialised with msgpack.
            OSError: the store cannot be written.
        """
        path = self._file(topic, destination)
        letter = DeadLetter(
            id=uuid.uuid4().hex,
            topic=topic,
            destination=destination,
            rows=rows,
            reason=str(reason),
            attempts=int(attempts),
            first_attempt_at=float(first_attempt_at),
            last_attempt_at=float(last_attempt_at),
            created_at=time.time(),
            errors=[str(e) for e in errors] if errors is not None else None,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(path, exclusive=True), RecordFile(path, fsync="always") as file:
            file.append(attrs.asdict(letter, recurse=False))
        return letter

    def letters(
        self, topic: str | None = None, destination: str | None = None
    ) -> Iterator[DeadLetter]:
        """Yield the dead letters, optionally only those of one topic and/or destination.

        Ordered by (destination, topic), then oldest first.

        Raises:
            InvalidTopic: ``topic`` or ``destination`` is given and not a valid name.
        """
        for path in self._files(topic, destination):
            yield from self._read(path)

    def summary(self) -> list[DeadLetterSummary]:
        """One summary per (topic, destination) with letters, sorted by (destination, topic)."""
        summaries = []
        for path in self._files(None, None):
            letters = self._read(path)
            if not letters:
                continue
            newest = max(letters, key=lambda letter: letter.created_at)
            summaries.append(
                DeadLetterSummary(
                    topic=newest.topic,
                    destination=newest.destination,
                    letters=len(letters),
                    rows=sum(len(letter.rows) for letter in letters),
                    oldest=min(letter.created_at for letter in letters),
                    newest=newest.created_at,
                    last_reason=newest.reason,
                )
            )
        return summaries

    def remove(
        self,
        topic: str,
        destination: str,
        ids: set[str],
        keep: dict[str, tuple[list[Any], list[str]]] | None = None,
    ) -> int:
        """Delete the letters with these ids from one (topic, destination); return how many.

        The file is rewritten atomically, or deleted when no letter is left.
        Unknown ids are ignored. ``keep`` maps the id of a letter that was
        replayed in part to the rows (and their errors) it still holds: that
        letter stays, with only those rows.

        Raises:
            InvalidTopic: ``topic`` or ``destination`` is not a valid name.
        """
        keep = keep or {}
        path = self._file(topic, destination)
        if not path.parent.is_dir():
            return 0
        with self._locked(path, exclusive=True):
            if not path.exists():
                return 0
            records = [record for _offset, record in read_records(path)]
            kept = []
            for record in records:
                if record["id"] in keep:
                    rows, errors = keep[record["id"]]
                    kept.append({**record, "rows": rows, "errors": errors})
                elif record["id"] not in ids:
                    kept.append(record)
            removed = sum(1 for record in records if record["id"] in ids)
            if removed == 0 and not keep:
                return 0
            if kept:
                atomic_write_bytes(path, b"".join(encode_record(record) for record in kept))
            else:
                path.unlink()
        return removed

    def total_letters(self) -> int:
        """How many dead letters there are, over all topics and destinations."""
        return sum(item.letters for item in self.summary())

    def total_rows(self) -> int:
        """How many rows the dead letters hold, over all topics and destinations."""
        return sum(item.rows for item in self.summary())

    def __repr__(self) -> str:
        return f"DeadLetterStore({os.fspath(self._dir)!r})"

    def _file(self, topic: str, destination: str) -> Path:
        validate_topic(topic)
        _validate_destination(destination)
        return self._dir / file_name(destination) / f"{file_name(topic)}{_SUFFIX}"

    def _files(self, topic: str | None, destination: str | None) -> list[Path]:
        if topic is not None:
            validate_topic(topic)
        if destination is not None:
            _validate_destination(destination)
            folders = [file_name(destination)]
        elif self._dir.is_dir():
            folders = sorted(entry.name for entry in self._dir.iterdir() if entry.is_dir())
        else:
            folders = []
        files: list[Path] = []
        wanted = None if topic is None else file_name(topic)
        for name in folders:
            folder = self._dir / name
            if not _is_file_name(name) or not folder.is_dir():
                continue
            stems = sorted(
                entry.name[: -len(_SUFFIX)]
                for entry in folder.iterdir()
                if entry.name.endswith(_SUFFIX) and _is_file_name(entry.name[: -len(_SUFFIX)])
            )
            files.extend(folder / f"{stem}{_SUFFIX}" for stem in stems if wanted in (None, stem))
        return files

    def _read(self, path: Path) -> list[DeadLetter]:
        """All letters of one file, read under a shared lock (released before returning)."""
        with self._locked(path, exclusive=False):
            try:
                return [_letter(record) for _offset, record in read_records(path)]
            except FileNotFoundError:
                return []

    @contextmanager
    def _locked(self, path: Path, *, exclusive: bool) -> Iterator[None]:
        lock_path = path.with_name(path.name + _LOCK_SUFFIX)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock


def _letter(record: dict[str, Any]) -> DeadLetter:
    """Build a letter from its record, ignoring fields a later version may add."""
    return DeadLetter(
        **{
            field.name: record[field.name]
            for field in attrs.fields(DeadLetter)
            if field.name in record or field.default is attrs.NOTHING
        }
    )


def _is_file_name(name: str) -> bool:
    """A name :func:`~datalogger.names.file_name` can give: a valid name, or a shortened one."""
    plain, _, digest = name.partition("~")
    if digest and (len(digest) != 16 or not all(c in "0123456789abcdef" for c in digest)):
        return False
    try:
        validate_topic(plain)
    except InvalidTopic:
        return False
    return True
