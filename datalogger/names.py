"""Names derived from topics (and destination names): file names and SQL identifiers.

A topic may be up to 255 characters long, but a file name may not be longer
than 255 bytes (with a suffix such as ``.jsonl`` or ``.dl.lock`` added) and
PostgreSQL cuts identifiers at 63 bytes without a word. So every name datalogger
derives from a topic goes through this module, which shortens long names
deterministically:

* :func:`file_name`: a name of at most :data:`FILE_NAME_KEEP` (200) characters is
  used as it is; a longer one becomes its first 183 characters, ``~`` and 16 hex
  digits of its BLAKE2b hash (200 characters in all). Every file or directory
  named after a topic uses it: the write-ahead log's directory, spill
  directories, dead-letter files and their locks, JSONL files. Up to 55 bytes
  of suffix fit under the 255-byte limit.
* :func:`sql_identifier`: a name of at most 63 bytes is used as it is; a longer
  one becomes its first 46 bytes, ``~`` and the same 16 hex digits (63 bytes).

``~`` is not a topic character, so a shortened name never equals the name of
another topic, and two long topics that differ anywhere (the last character
too) get different hashes. The hash is 64 bits: two topics sharing one by
chance is about as likely as 2**-64 per pair. A directory named after a
shortened topic holds a ``topic`` file with the full name, so tools can list
topics from disk (:func:`write_topic_file`, :func:`topic_from_dir`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .validation import TOPIC_PATTERN

__all__ = [
    "FILE_NAME_KEEP",
    "SQL_NAME_BYTES",
    "TOPIC_FILE",
    "file_name",
    "name_hash",
    "sql_identifier",
    "topic_from_dir",
    "write_topic_file",
]

#: Longest file name kept as it is; longer ones are shortened to this length.
FILE_NAME_KEEP = 200
#: PostgreSQL's NAMEDATALEN - 1: the longest identifier it keeps whole.
SQL_NAME_BYTES = 63
#: Name of the file, in a directory named after a shortened topic, holding the topic.
TOPIC_FILE = "topic"
_HASH_DIGITS = 16
_MARK = "~"


def name_hash(name: str) -> str:
    """16 hex digits of the BLAKE2b hash of ``name`` (UTF-8)."""
    return hashlib.blake2b(name.encode("utf-8"), digest_size=_HASH_DIGITS // 2).hexdigest()


def _shorten(name: str, limit: int) -> str:
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    keep = encoded[: limit - _HASH_DIGITS - len(_MARK)].decode("utf-8", "ignore")
    return f"{keep}{_MARK}{name_hash(name)}"


def file_name(name: str) -> str:
    """The file or directory name for a topic or destination name (see the module docstring)."""
    return _shorten(name, FILE_NAME_KEEP)


def sql_identifier(name: str) -> str:
    """``name`` if it fits PostgreSQL's 63 bytes, else its shortened form (module docstring)."""
    return _shorten(name, SQL_NAME_BYTES)


def write_topic_file(directory: str | os.PathLike[str], topic: str) -> None:
    """Record ``topic`` in ``directory`` when its name was shortened (nothing to do otherwise)."""
    if file_name(topic) == topic:
        return
    path = Path(directory) / TOPIC_FILE
    try:
        if path.read_text(encoding="utf-8") == topic:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_name(TOPIC_FILE + ".tmp")
    tmp.write_text(topic, encoding="utf-8")
    os.replace(tmp, path)


def topic_from_dir(directory: str | os.PathLike[str]) -> str | None:
    """The topic a directory written by datalogger belongs to, or ``None`` if it is not one.

    A plain directory name is the topic; a shortened one holds a ``topic`` file
    whose content must shorten back to the directory's name.
    """
    path = Path(directory)
    name = path.name
    if _MARK not in name:
        return name if TOPIC_PATTERN.match(name) and name not in (".", "..") else None
    try:
        topic = (path / TOPIC_FILE).read_text(encoding="utf-8")
    except OSError:
        return None
    if TOPIC_PATTERN.match(topic) and file_name(topic) == name:
        return topic
    return None
