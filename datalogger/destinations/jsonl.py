"""JSONL: a file of JSON lines per topic in a directory.

Options:

``directory`` (required)
    Where the files go: ``<directory>/<topic>.jsonl``. Created if missing.
``fsync`` (``false``)
    ``true`` to fsync each chunk before reporting it delivered.

Topic names cannot hold a path separator (``[A-Za-z0-9_.:-]`` only, and not
``.`` or ``..``), so a file can never land outside ``directory``. A topic
longer than 200 characters gets a file named by
:func:`datalogger.names.file_name` (its first 183 characters, ``~`` and a
hash), so every topic fits the 255-byte limit of a file name.

It takes any data, not only rows: each item logged is one line, its JSON
text. Values JSON has no type for are written as
:mod:`datalogger.destinations._values` says (datetimes in ISO 8601, ``Decimal``
and ``UUID`` as strings, ``bytes`` in base64, ``timedelta`` in seconds).
"""

from __future__ import annotations

import os
from typing import Any

from ..names import file_name
from ..validation import validate_topic
from ._values import to_json
from .base import Destination

__all__ = ["JsonlDestination"]


class JsonlDestination(Destination):
    """Appends each chunk's items as JSON lines to ``<directory>/<topic>.jsonl``."""

    takes_any_data = True

    def __init__(self, *, directory: str, fsync: bool = False) -> None:
        self.directory = os.path.abspath(directory)
        self.fsync = fsync

    def path_for(self, topic: str) -> str:
        """The file a topic is written to."""
        return os.path.join(self.directory, file_name(validate_topic(topic)) + ".jsonl")

    def send_data(self, topic: str, data: list[Any]) -> int:
        """Append the items; return how many were written."""
        text = "".join(to_json(item) + "\n" for item in data)
        os.makedirs(self.directory, exist_ok=True)
        with open(self.path_for(topic), "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        return len(data)
